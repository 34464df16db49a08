"""``fedsim report RUN_OR_SWEEP_DIR``: write ``report.md`` (and PNG plots) into the directory."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add the ``report`` subcommand to the ``fedsim`` parser's subparsers."""
    parser = sub.add_parser(
        "report", help="write report.md with PNG plots for a run or sweep directory"
    )
    parser.add_argument("directory", help="a run directory (metrics.jsonl) or sweep (sweep.csv)")
    parser.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from fedsim.report import write_report

    out = write_report(args.directory)
    print(out)
    return 0
