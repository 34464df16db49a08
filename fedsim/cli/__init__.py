"""The ``fedsim`` command line.

``fedsim run CONFIG [-o key=value ...] [--out DIR]`` runs an experiment;
``fedsim validate CONFIG`` runs only the checks and the preflight; the other commands
are listed by ``fedsim --help``. Any problem with the user's input is printed as one clear
message and exits with code 2, without a traceback.

Package layout: :mod:`~fedsim.cli.base` (the :class:`~fedsim.cli.base.Command` contract
and shared arguments), :mod:`~fedsim.cli.commands` (the registry :data:`COMMANDS`, which
imports every command explicitly) and one module per command group: :mod:`~fedsim.cli.run`
(``run``, ``validate``), :mod:`~fedsim.cli.sweep`, :mod:`~fedsim.cli.report`,
:mod:`~fedsim.cli.analyze`, :mod:`~fedsim.cli.evaluate`, :mod:`~fedsim.cli.deploy`
(``certs``, ``node``, ``superlink``, ``supernode``), :mod:`~fedsim.cli.site`
(``site check``), :mod:`~fedsim.cli.compose` and :mod:`~fedsim.cli.audit`.
The console script is :func:`entry`; tests call :func:`main` with an argument list.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from contextlib import suppress
from typing import NoReturn

from fedsim import __version__
from fedsim.cli.base import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    EXIT_VIOLATION,
    Command,
    Handler,
    add_config_args,
)
from fedsim.cli.commands import COMMANDS
from fedsim.cli.run import resolve_out_dir, run_command
from fedsim.errors import FedsimError

__all__ = [
    "COMMANDS",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "EXIT_VIOLATION",
    "Command",
    "add_config_args",
    "build_parser",
    "entry",
    "exit_now",
    "main",
    "resolve_out_dir",
    "run_command",
]


def build_parser() -> argparse.ArgumentParser:
    """The ``fedsim`` parser with one subparser per registered command, in registry order."""
    parser = argparse.ArgumentParser(
        prog="fedsim", description="Private, robust, incentivised federated simulation."
    )
    parser.add_argument("--version", action="version", version=f"fedsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        command.configure(sub.add_parser(name, help=command.help, description=command.description))
    return parser


def _setup_logging(verbose: bool, flower: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not flower:
        return  # importing flwr costs ~0.3 s: only commands that run Flower pay for it
    # Flower's logger has its own console handler (and resets its level on import):
    # keep it, quieter unless --verbose, and stop it propagating to ours (no duplicates).
    from flwr.common.logger import FLOWER_LOGGER, console_handler

    FLOWER_LOGGER.propagate = False
    console_handler.setLevel(logging.INFO if verbose else logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedsim`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "verbose", False), COMMANDS.get(args.command).runs_flower)
    try:
        handler: Handler = args.handler
        return handler(args)
    except FedsimError as exc:
        print(f"fedsim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fedsim: interrupted; completed rounds are in metrics.jsonl", file=sys.stderr)
        return EXIT_INTERRUPTED


def entry() -> None:
    """Console-script wrapper: exit with :func:`main`'s code (see :func:`exit_now`)."""
    exit_now(main())


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` without tearing the interpreter down.

    Everything a command writes is on disk when :func:`main` returns. A normal exit then
    spends its last 0.4–2.4 s (``fedsim run`` on a 2-core machine, after its final line)
    deallocating torch's, Flower's and Ray's module graphs. Instead the ``atexit``
    handlers run as they would (logging's flush and close, Ray's and MLflow's shut-down,
    ``multiprocessing``'s finalizers), the standard streams are flushed, and the process
    ends (``os._exit``). When a thread other than the main one is still running and not a
    daemon, the exit is the normal one, which waits for it (its work could be lost).
    """
    import gc
    import threading

    others = [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
    if others:
        gc.freeze()  # the final collection skips what is left (~1.8 s less after a run)
        sys.exit(code)
    import atexit
    import os

    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with suppress(OSError, ValueError):  # closed, or a pipe whose reader left
                stream.flush()
        os._exit(code)
