"""The contract of a ``fedsim`` subcommand, and arguments several commands share.

A command is a :class:`Command` registered under its name in
:data:`fedsim.cli.commands.COMMANDS`. Building the parser calls every command's
``configure`` — so ``configure`` and the module defining it import nothing heavy (no
torch, flwr or ray): those imports go inside the handler, which runs only for the
command given. ``tests/test_contracts.py`` checks that every registered command has a
working ``--help`` and that building the parser imports none of them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

Handler = Callable[[argparse.Namespace], int]
"""Runs a parsed command; returns the exit code."""

#: A problem with the user's input (printed as one message, no traceback).
EXIT_USAGE = 2
#: A privacy audit measured more leakage than the run claims.
EXIT_VIOLATION = 3
#: The run completed, but some client rounds failed or were rejected.
EXIT_CLIENT_FAULTS = 4
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Command:
    """One ``fedsim`` subcommand.

    Parameters
    ----------
    help
        The one-line summary in ``fedsim --help``.
    configure
        Adds the command's arguments (or sub-subcommands) to its parser and sets the
        handler, ``parser.set_defaults(handler=fn)`` with ``fn(args) -> exit code``.
    description
        The longer text of ``fedsim NAME --help`` (default: none).
    runs_flower
        The handler runs Flower in this process (a simulation): :func:`fedsim.cli.main`
        then imports ``flwr`` first to quiet its console logger unless ``--verbose``.
        Other commands leave ``flwr`` unimported (it costs ~0.3 s of start-up).
    """

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    description: str | None = None
    runs_flower: bool = False


def add_config_args(
    p: argparse.ArgumentParser,
    help_config: str = "YAML experiment config",
    *,
    optional: bool = False,
) -> None:
    """Add the ``CONFIG`` positional (``optional``: may be left out), ``-o KEY=VALUE``
    overrides and ``-v``."""
    if optional:
        p.add_argument("config", nargs="?", default=None, help=help_config)
    else:
        p.add_argument("config", help=help_config)
    p.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. -o dp.epsilon=2 (repeatable)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show Flower/Ray logs")
