"""Page faults of a DP-SGD step with glibc's default heap thresholds and with
:func:`fedsim.heap.keep_freed_heap` (what fedsim's training processes call).

Each arm runs in a fresh process (the thresholds are per process and stay once set): the
default CNN, batch 64, one thread, the DP-SGD step of ``benchmarks/dp_step.py`` (the mode
``dp.grad_sample_mode: auto`` resolves to), ``--steps`` steps after a warm-up. It reports
minor page faults, kernel (system) CPU milliseconds and wall milliseconds per step from
``getrusage``; the arms alternate ``--repeats`` times and the medians are printed.

    PYTHONPATH=. python benchmarks/page_faults.py [--steps 30] [--repeats 3] [--quick]
        [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchtools import ROOT, write_json

ARMS = ("default", "keep_freed_heap")


def child(arm: str, steps: int) -> dict[str, float]:
    """One arm in this process: per-step faults, kernel ms and wall ms."""
    import torch
    from dp_step import SHAPE, private_step

    from clients.opacus_adapter import resolve_grad_sample_mode
    from fedsim.heap import keep_freed_heap
    from fedsim.models import build_model

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    if arm == "keep_freed_heap" and not keep_freed_heap():
        raise SystemExit("keep_freed_heap() is a no-op here (not glibc)")
    mode = resolve_grad_sample_mode("auto", True, build_model("cnn", SHAPE, 2, seed=0))
    step = private_step(64, 2, mode)
    for _ in range(5):
        step()
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
        "kernel_ms_per_step": (after.ru_stime - before.ru_stime) / steps * 1e3,
        "wall_ms_per_step": wall / steps * 1e3,
    }


def run_arm(arm: str, steps: int) -> dict[str, float]:
    """:func:`child` in a fresh interpreter."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", arm, "--steps", str(steps)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the child's own folder holds dp_step
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{arm} failed:\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure both arms, print the medians and (``--json``) write them."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10 steps x 1 repeat")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.steps)))
        return {}
    steps, repeats = (10, 1) if args.quick else (args.steps, args.repeats)
    runs: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    for _ in range(repeats):
        for arm in ARMS:
            runs[arm].append(run_arm(arm, steps))
    result: dict[str, Any] = {"steps": steps, "repeats": repeats, "runs": runs}
    for arm in ARMS:
        medians = {k: statistics.median(r[k] for r in runs[arm]) for k in runs[arm][0]}
        result[arm] = medians
        print(
            f"{arm:>16}: {medians['faults_per_step']:8.0f} minor faults, "
            f"{medians['kernel_ms_per_step']:5.1f} ms kernel, "
            f"{medians['wall_ms_per_step']:5.1f} ms wall per DP-SGD step (CNN, batch 64, 1 thread)"
        )
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
