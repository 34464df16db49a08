"""Label skew of the quickstart's Dirichlet partitions, per seed, without training (issue 17).

Usage::

    python experiments/recipe/skew.py 0 1 2 ... [--config experiments/quickstart.yaml]

For each seed: the largest client's share of the training pool, its pneumonia fraction,
its share of the update mass (weight ``n_i / N`` × its DP-SGD steps per round,
``local_epochs × ceil(n_i / batch_size)``), and the mass-weighted pneumonia prior. Used to
pick tuning seeds (outside 0–9) whose partitions are as skewed as seed 1's.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from fedsim.config.io import load
from fedsim.workload import dataset_for, partitions_for


def skew(config: str, seed: int) -> tuple[float, float, float, float]:
    """(largest share, its positive fraction, its update mass, mass-weighted prior)."""
    cfg = load(config, [f"seed={seed}"])
    y = dataset_for(cfg.data, seed).train.y
    parts = partitions_for(cfg.data, seed)
    n = np.array([len(p) for p in parts], dtype=float)
    pos = np.array([float(np.mean(y[p] == 1)) for p in parts])
    steps = np.array([cfg.client.local_epochs * math.ceil(k / cfg.client.batch_size) for k in n])
    mass = n / n.sum() * steps
    mass /= mass.sum()
    big = int(np.argmax(n))
    return n[big] / n.sum(), pos[big], mass[big], float(mass @ pos)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("seeds", type=int, nargs="+")
    ap.add_argument("--config", default="experiments/quickstart.yaml")
    args = ap.parse_args()
    print(
        "| seed | largest client's share | its pneumonia fraction | its update mass | "
        "mass-weighted prior |"
    )
    print("|---|---|---|---|---|")
    for s in args.seeds:
        share, frac, mass, prior = skew(args.config, s)
        print(f"| {s} | {share:.2f} | {frac:.2f} | {mass:.2f} | {prior:.3f} |")


if __name__ == "__main__":
    main()
