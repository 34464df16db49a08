"""``fedsim audit CONFIG``: run an experiment with privacy-audit canaries and check its ε.

The run is the configured one with ``audit.enabled: true`` (other ``audit.*`` keys as set
or by ``-o``): canary clients under central DP, canary records in ``audit.client``'s data
under DP-SGD (:mod:`fedsim.audit`). It writes the usual run directory plus ``audit.json``
and an audit section in ``report.md``, and exits 0 when the empirical lower bound is
consistent with the claimed ε, 3 when it is above it (a violation).
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``fedsim audit`` to the ``fedsim`` parser."""
    from fedsim.cli import add_config_args

    audit = sub.add_parser(
        "audit",
        help="run an experiment with audit canaries and check its epsilon empirically "
        "(exit 3 on a violation)",
    )
    add_config_args(audit)
    audit.add_argument("--out", help="run directory (default: runs/<name>, made unique)")
    audit.add_argument(
        "--overwrite", action="store_true", help="allow --out to hold an earlier run"
    )
    audit.set_defaults(handler=_cmd_audit)


def _cmd_audit(args: argparse.Namespace) -> int:
    from fedsim.cli import run_command
    from fedsim.config import load

    cfg = load(args.config, [*args.override, "audit.enabled=true"])
    return run_command(args, cfg)
