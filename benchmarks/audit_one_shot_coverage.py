"""Bias and bootstrap coverage of the one-shot ε estimate on a known Gaussian mechanism.

Simulates canary statistics of a μ-GDP release — never-inserted canaries N(0, 1), inserted
ones N(μ, 1) — and prints, per μ, the true ε at δ, the median and 90th-percentile relative
error of :func:`fedsim.audit.one_shot_estimate`, and how often its percentile and basic
bootstrap intervals cover the true ε (the figures quoted in its docstring).

    PYTHONPATH=. python benchmarks/audit_one_shot_coverage.py [--runs 60] [--n 2000]
"""

from __future__ import annotations

import argparse

import numpy as np

from fedsim.audit.gaussian import gaussian_epsilon
from fedsim.audit.one_shot import one_shot_estimate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--n", type=int, default=2000, help="canaries per sample")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--mus", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--bootstrap", type=int, default=400)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"runs={args.runs} n={args.n}+{args.n} delta={args.delta} conf={args.confidence}")
    print("mu     true_eps  median_rel_err  p90_abs_rel_err  cover_percentile  cover_basic")
    for mu, seq in zip(
        args.mus, np.random.SeedSequence(args.seed).spawn(len(args.mus)), strict=True
    ):
        true = gaussian_epsilon(mu, args.delta)
        rel, cover = [], {"percentile": 0, "basic": 0}
        for run_seq in seq.spawn(args.runs):
            data_seq, boot_seq = run_seq.spawn(2)
            data = np.random.default_rng(data_seq)
            null, observed = data.normal(0.0, 1.0, args.n), data.normal(mu, 1.0, args.n)
            for interval in ("percentile", "basic"):
                est = one_shot_estimate(
                    observed,
                    null,
                    args.delta,
                    confidence=args.confidence,
                    rng=np.random.default_rng(boot_seq),
                    bootstrap=args.bootstrap,
                    interval=interval,  # type: ignore[arg-type]
                )
                cover[interval] += est.ci_low <= true <= est.ci_high
            rel.append(est.epsilon / true - 1)
        r = np.array(rel)
        print(
            f"{mu:<6g} {true:8.3f}  {np.median(r):+14.3f}  {np.quantile(np.abs(r), 0.9):15.3f}"
            f"  {cover['percentile'] / args.runs:16.2f}  {cover['basic'] / args.runs:11.2f}"
        )


if __name__ == "__main__":
    main()
