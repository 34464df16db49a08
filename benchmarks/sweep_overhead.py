"""Per-point overhead of ``fedsim sweep``: what one more point costs beyond its rounds.

Runs two sweeps of the same small config in fresh processes — 1 point and ``--points``
points (seeds 0, 1, ...) — and times each from process start to exit. With ``T_k`` the
wall time and ``R_k`` the seconds the rounds themselves took (summed over the points'
``metrics.jsonl``), the per-point overhead is the marginal cost

    ((T_k - R_k) - (T_1 - R_1)) / (k - 1)

— Flower's set-up, the server's, the actors' first messages, the run directory and
shut-down of one more point — and ``T_1 - R_1`` is what the first point pays (imports,
Ray's start, the actors' cold start).

    PYTHONPATH=. python benchmarks/sweep_overhead.py [--points 4] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml
from benchtools import timed_run, write_json

ROOT = Path(__file__).resolve().parents[1]

BASE = {
    "name": "sweep-overhead",
    "rounds": 2,
    "data": {"name": "pneumoniamnist", "num_clients": 4, "train_samples": 800},
    "model": {"name": "mlp"},
    "client": {"batch_size": 32, "lr": 0.1},
    "dp": {"noise_multiplier": 1.0, "delta": 1e-4},
    "strategy": {"name": "fedavg", "clients_per_round": 4},
}


def sweep(points: int, work: Path) -> tuple[float, float]:
    """Wall seconds of a sweep of ``points`` seeds, and the seconds of all its rounds."""
    cfg = work / f"sweep-{points}.yaml"
    grid = {"client.lr": [0.1]}  # a sweep needs a grid; the points differ by seed
    cfg.write_text(yaml.safe_dump({**BASE, "sweep": {"grid": grid, "seeds": list(range(points))}}))
    out = work / f"out-{points}"
    cmd = [sys.executable, "-m", "fedsim.cli", "sweep", str(cfg), "--out", str(out)]
    wall = timed_run(cmd, "fedsim sweep")
    rounds = 0.0
    for metrics in out.rglob("metrics.jsonl"):
        for line in metrics.read_text().splitlines():
            if line.strip():
                rounds += float(json.loads(line)["seconds"])
    return wall, rounds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="3 points")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    k = 3 if args.quick else max(2, args.points)
    with tempfile.TemporaryDirectory(prefix="fedsim-sweep-") as tmp:
        t1, r1 = sweep(1, Path(tmp))
        tk, rk = sweep(k, Path(tmp))
    first = t1 - r1
    per_point = ((tk - rk) - first) / (k - 1)
    result = {
        "benchmark": "sweep_overhead",
        "points": k,
        "one_point": {"wall_s": round(t1, 2), "rounds_s": round(r1, 2)},
        "k_points": {"wall_s": round(tk, 2), "rounds_s": round(rk, 2)},
        "first_point_overhead_s": round(first, 2),
        "per_point_overhead_s": round(per_point, 2),
    }
    print(
        f"sweep of 1 point: {t1:.1f} s ({r1:.1f} s in rounds); of {k}: {tk:.1f} s "
        f"({rk:.1f} s in rounds); first point's overhead {first:.1f} s, each further "
        f"point {per_point:.1f} s (target 3 s)"
    )
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
