"""Write a synthetic census-like income table for the SecProbe regression experiment.

SecProbe's regression data (IPUMS US census, 600,000 records, 20 attributes after one-hot
encoding, log annual income normalised to [0, 1]) is not redistributable here, so this
script draws a table of the same shape from a fixed, documented model: 3 binary
attributes, three one-hot categoricals (race 4, education 5, marital status 3) and 5
numeric attributes in [0, 1]; the target is a log income that depends on education,
hours, age (concave), sex, insurance and an interaction, plus Gaussian noise, normalised
into [0.1, 1]. Deterministic from ``--seed``.

    python experiments/secprobe/make_income.py --rows 60000 --out experiments/secprobe/income.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def income_table(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(features (rows, 20), target (rows,))`` of the synthetic income model."""
    rng = np.random.default_rng(seed)
    sex = rng.integers(0, 2, rows)
    insured = (rng.random(rows) < 0.8).astype(int)
    difficulty = (rng.random(rows) < 0.1).astype(int)
    race = rng.choice(4, rows, p=[0.6, 0.15, 0.15, 0.1])
    education = rng.choice(5, rows, p=[0.1, 0.3, 0.25, 0.25, 0.1])
    marital = rng.choice(3, rows, p=[0.5, 0.35, 0.15])
    age = rng.beta(2.0, 2.5, rows)
    hours = np.clip(rng.normal(0.55, 0.18, rows), 0, 1)
    family = rng.beta(2.0, 4.0, rows)
    rooms = np.clip(0.5 * family + 0.5 * rng.beta(2.0, 3.0, rows), 0, 1)
    children = np.clip(family * rng.random(rows), 0, 1)
    log_income = (
        1.0
        + 0.45 * education / 4
        + 0.35 * hours
        + 0.6 * age * (1 - age)
        + 0.08 * sex
        + 0.06 * insured
        - 0.1 * difficulty
        + 0.05 * (marital == 1)
        + 0.15 * (education / 4) * hours
        + 0.05 * rooms
        + rng.normal(0.0, 0.08, rows)
    )
    onehot = [np.eye(k)[v] for k, v in ((4, race), (5, education), (3, marital))]
    features = np.column_stack(
        [sex, insured, difficulty, *onehot, age, hours, family, rooms, children]
    ).astype(np.float64)
    # normalised into [0.1, 1] as the paper normalises log income into [0, 1] (0.1: relative
    # errors stay finite)
    low, high = np.quantile(log_income, [0.001, 0.999])
    target = 0.1 + 0.9 * np.clip((log_income - low) / (high - low), 0.0, 1.0)
    return features, target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("income.npz"))
    args = parser.parse_args()
    features, target = income_table(args.rows, args.seed)
    np.savez_compressed(args.out, features=features, target=target)
    print(
        f"{args.out}: {features.shape[0]} rows, {features.shape[1]} features, "
        f"target {target.min():.3f}..{target.max():.3f}"
    )


if __name__ == "__main__":
    main()
