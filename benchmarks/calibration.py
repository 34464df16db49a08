"""Time of σ calibration: the search's central-limit start against the old start σ = 1.

Calibrates σ for the quickstart's distinct DP-SGD plans (clients of 826, 2,259, 621 and
387 examples, batch 64, 2 local epochs × 8 rounds, ε = 4, δ = 1e-4, replace-one; the
fourth client's 615 examples share the 621's plan) with the accountant's caches cleared
before each, as a fresh client worker does in its first round, ``--repeats`` times with
the two starts alternating in one process. Prints the median seconds of each and checks
that both return the same σ (the replayed bisection decides it, not the start).

    PYTHONPATH=. python benchmarks/calibration.py [--repeats 5] [--quick] [--json F]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchtools import CACHE_ENV, write_json

from fedsim.privacy import accounting

SIZES = (826, 2259, 621, 387)
ROUNDS, EPOCHS, BATCH = 8, 2, 64


def plans() -> list[tuple[float, int]]:
    """(sample rate, steps over the run) of each distinct quickstart client."""
    out = []
    for n in SIZES:
        schedule = accounting.dp_sgd_schedule(n, BATCH)
        out.append((schedule.sample_rate, schedule.steps_per_epoch * EPOCHS * ROUNDS))
    return out


def calibrate_all(start: Callable[..., float]) -> tuple[float, list[float]]:
    """Seconds to calibrate every plan from cold caches with ``start``, and the σ's."""
    original = accounting._starting_sigma
    accounting._starting_sigma = start  # type: ignore[assignment]
    try:
        began, sigmas = time.perf_counter(), []
        for q, steps in plans():
            accounting.clear_caches()
            sigmas.append(accounting.calibrate_noise_multiplier(4.0, 1e-4, q, steps))
        return time.perf_counter() - began, sigmas
    finally:
        accounting._starting_sigma = original  # type: ignore[assignment]
        accounting.clear_caches()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="two repeats")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    # each repeat times the search of a fresh process: no calibrations kept across them
    os.environ[CACHE_ENV] = "off"
    arms: dict[str, Callable[..., float]] = {
        "sigma_one": lambda *_: 1.0,
        "central_limit": accounting._starting_sigma,
    }
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    sigmas: dict[str, list[float]] = {}
    for _ in range(2 if args.quick else args.repeats):
        for name, start in arms.items():
            took, sigmas[name] = calibrate_all(start)
            seconds[name].append(round(took, 3))
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    same = sigmas["sigma_one"] == sigmas["central_limit"]
    result = {
        "benchmark": "calibration",
        "plans": plans(),
        "seconds": seconds,
        "median_seconds": medians,
        "sigmas": sigmas["central_limit"],
        "same_sigma": same,
    }
    print(
        f"quickstart's {len(SIZES)} calibrations: start sigma = 1 {medians['sigma_one']:.3f} s, "
        f"central-limit start {medians['central_limit']:.3f} s (medians of "
        f"{len(seconds['sigma_one'])}); same sigma: {same}"
    )
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
