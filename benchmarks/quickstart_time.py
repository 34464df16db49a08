"""Wall time of the README's quickstart (``fedsim run experiments/quickstart.yaml``).

Times the whole process (imports, Ray, every round, shut-down) ``--repeats`` times in
fresh processes and prints the median with the run's test accuracy and ε, which must
stay those of the README (accuracy 0.82, ε 4.00 replace-one at seed 0).

Before each run it times this machine's speed at that moment: the median plain SGD step of
the default CNN on one thread (``benchmarks/dp_step.py``'s non-private arm). This VM's
speed changes by up to ~2× between hours (14.7 ms on 2026-11-30, 22–37 ms on 2026-12-01),
so quickstart times compare only at similar reference times.

Noise calibrations kept across runs (``fedsim.privacy.sigma_cache``) are cold for every run
by default (a user's first run); ``--cache warm`` lets the runs share them.

    PYTHONPATH=. python benchmarks/quickstart_time.py [--repeats 3] [--cache warm] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from benchtools import CACHE_ENV, timed_run, write_json
from dp_step import plain_step_time

ROOT = Path(__file__).resolve().parents[1]


def reference_ms() -> float:
    """This machine's speed now: ms of a plain SGD step of the CNN on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return round(plain_step_time(64, 2, 30) * 1e3, 2)
    finally:
        torch.set_num_threads(threads)


def once(out: Path, cache: Path) -> dict:
    """One timed quickstart run into ``out``, keeping noise calibrations in ``cache``."""
    reference = reference_ms()
    kept = len(list(cache.glob("sigma/*.json")))
    cmd = [sys.executable, "-m", "fedsim.cli", "run", "experiments/quickstart.yaml"]
    wall = timed_run([*cmd, "--out", str(out)], "quickstart", {CACHE_ENV: str(cache)})
    summary = json.loads((out / "summary.json").read_text())
    eps = max(c["epsilon_spent"] for c in summary["clients"].values())
    return {
        "wall_s": round(wall, 2),
        "accuracy": summary["final"]["test_accuracy"],
        "max_epsilon": round(eps, 3),
        "reference_step_ms": reference,
        "calibrations_kept_before": kept,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one run")
    parser.add_argument(
        "--cache",
        choices=("cold", "warm"),
        default="cold",
        help="cold: every run starts without kept noise calibrations (a first run on a "
        "machine); warm: the runs share them (run 1 starts cold)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory(prefix="fedsim-qs-") as tmp:
        for r in range(1 if args.quick else args.repeats):
            cache = Path(tmp) / ("cache" if args.cache == "warm" else f"cache-{r}")
            runs.append(once(Path(tmp) / f"run-{r}", cache))
            print(f"run {r + 1}: {runs[-1]}", flush=True)
    median = statistics.median(r["wall_s"] for r in runs)
    reference = statistics.median(r["reference_step_ms"] for r in runs)
    result = {
        "benchmark": "quickstart_time",
        "cache": args.cache,
        "runs": runs,
        "median_wall_s": median,
        "median_reference_step_ms": reference,
    }
    print(
        f"quickstart: median {median:.1f} s over {len(runs)} runs, {args.cache} calibration "
        "cache (target 35 s); "
        f"machine reference: plain CNN step {reference:.1f} ms (14.7 ms on 2026-11-30)"
    )
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
