"""``fedsim analyze RUN_A RUN_B``: do two runs select the same samples by a score?

Recomputes per-sample scores (VoG, PLIS, loss, grad_norm) from each run's final model on
the same samples, selects the top-k per class by each metric, and writes overlap, SSIM,
Bhattacharyya distance, Pearson/Spearman correlation and image grids to ``analysis.md``
(see :mod:`fedsim.valuation.analysis`).
"""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

from fedsim.cli.base import Command
from fedsim.config import ScoreMetric

# the config's names, not fedsim.valuation.SCORES: that registry imports torch (equal
# sets, checked by tests/test_contracts.py)
_METRICS = typing.get_args(ScoreMetric)


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a", help="first run directory (its data is scored)")
    p.add_argument("run_b", help="second run directory")
    p.add_argument(
        "-m",
        "--metric",
        action="append",
        dest="metrics",
        help=f"{' | '.join(_METRICS)} (repeatable; default: all the runs support)",
    )
    p.add_argument("-k", "--top-k", type=int, default=8, help="samples per class (default 8)")
    p.add_argument("--client", type=int, help="score only this client's data (default: pool)")
    p.add_argument("--max-samples", type=int, help="stratified subset of the pool (faster)")
    p.add_argument("--lowest", action="store_true", help="select the lowest scores instead")
    p.add_argument("--labels", nargs=2, metavar=("A", "B"), help="names of the two runs")
    p.add_argument(
        "--batch-size", type=int, default=128, help="scoring batch size (lower it for resnets)"
    )
    p.add_argument("--out", help="output directory (default: RUN_A/analysis)")
    p.add_argument("-v", "--verbose", action="store_true", help="more logging")
    p.set_defaults(handler=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    """Handler of ``fedsim analyze``."""
    from fedsim.errors import FedsimError
    from fedsim.valuation.analysis import ANALYSIS_MD, analyze_runs

    for name in ("run_a", "run_b"):
        if not Path(getattr(args, name)).is_dir():
            raise FedsimError(f"{name} {getattr(args, name)!r} is not a directory")
    if args.max_samples is not None and args.max_samples < 1:
        raise FedsimError(f"--max-samples must be >= 1; got {args.max_samples}")
    if args.batch_size < 1:
        raise FedsimError(f"--batch-size must be >= 1; got {args.batch_size}")
    out = Path(args.out) if args.out else Path(args.run_a) / "analysis"
    doc = analyze_runs(
        Path(args.run_a),
        Path(args.run_b),
        out,
        metrics=args.metrics,
        k=args.top_k,
        client=args.client,
        max_samples=args.max_samples,
        largest=not args.lowest,
        labels=tuple(args.labels) if args.labels else None,
        batch_size=args.batch_size,
    )
    for m in doc["metrics"]:
        print(
            f"{m['metric']:9s} overlap {m['overlap']}/{m['selected']}  SSIM {m['mean_ssim']:.3f}  "
            f"Bhattacharyya {m['mean_bhattacharyya']:.3f}  Pearson {m['pearson']:.3f}"
        )
    for note in doc["notes"]:
        print(f"note: {note}")
    print(f"{out / ANALYSIS_MD}")
    return 0


ANALYZE = Command(
    help="selection consistency of two runs (top-k per class by VoG/PLIS/loss/grad_norm)",
    configure=_configure,
)
