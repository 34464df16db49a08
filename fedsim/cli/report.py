"""``fedsim report RUN_OR_SWEEP_DIR``: write ``report.md`` (and PNG plots) into the directory."""

from __future__ import annotations

import argparse

from fedsim.cli.base import Command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", help="a run directory (metrics.jsonl) or sweep (sweep.csv)")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from fedsim.report import write_report

    out = write_report(args.directory)
    print(out)
    return 0


REPORT = Command(
    help="write report.md with PNG plots for a run or sweep directory", configure=_configure
)
