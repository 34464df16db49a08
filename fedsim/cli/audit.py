"""``fedsim audit CONFIG``: run an experiment with privacy-audit canaries and check its ε.

The run is the configured one with ``audit.enabled: true`` (other ``audit.*`` keys as set
or by ``-o``): canary clients under central DP, canary records in ``audit.client``'s data
under DP-SGD (:mod:`fedsim.audit`). It writes the usual run directory plus ``audit.json``
and an audit section in ``report.md``, and exits 0 when the empirical lower bound is
consistent with the claimed ε, 3 when it is above it (a violation).
"""

from __future__ import annotations

import argparse

from fedsim.cli.base import Command, add_config_args


def _configure(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--out", help="run directory (default: runs/<name>, made unique)")
    p.add_argument("--overwrite", action="store_true", help="allow --out to hold an earlier run")
    p.set_defaults(handler=_cmd_audit)


def _cmd_audit(args: argparse.Namespace) -> int:
    from fedsim.cli.run import run_command
    from fedsim.config import load

    cfg = load(args.config, [*args.override, "audit.enabled=true"])
    return run_command(args, cfg)


AUDIT = Command(
    help="run an experiment with audit canaries and check its epsilon empirically "
    "(exit 3 on a violation)",
    configure=_configure,
    runs_flower=True,
)
