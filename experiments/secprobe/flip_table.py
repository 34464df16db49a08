"""Tables and plots of the label-flip SecProbe re-test (issue 17 §3), from its sweeps.

Usage::

    python experiments/secprobe/flip_table.py experiments/results/secprobe

Reads the sweep directories ``flip_fig9/p*``, ``flip_fig9_n60/p*`` and ``flip_fig11/p*``
under the results directory (per-run statistics from :func:`plot.load`), writes
``flip_table.md``, ``flip_fig9_accuracy_vs_p.png`` and ``flip_separation.png`` there and
prints the table.

Per arm and P, over the seeds: final and last-3-round test accuracy (mean ± std), the share
of honest clients among the updates the rule used, and SecProbe's measured utility gap ``g``
(mean over rounds of the mean validation accuracy of the honest uploads minus that of the
unreliable ones). Paired per seed: SecProbe − FedAvg and SecProbe − random K-of-M, with a
95% t interval.

The separation study reports, per selection ε, the share of (honest, unreliable) pairs of
uploads scored in the same round where the unreliable one scored at least as high (0.5: the
utility carries no signal), and compares three honest shares: the measured one; the
one the exponential mechanism predicts from the logged utilities (the logged inclusion
probabilities ``selection_probability`` of the honest uploads, summed and divided by K);
and the *two-group* prediction from ``x = ε·g/(2KΔu)`` alone — every honest upload scored
``g`` above every unreliable one — computed exactly for K draws without replacement
(:func:`two_group_share`) — with the share a perfect selection would reach,
``min(honest sampled, K)/K``.
"""

from __future__ import annotations

import json
import statistics
import sys
from functools import cache
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from plot import load
from scipy import stats

from fedsim.report.stats import format_mean_std as _ms
from fedsim.report.stats import format_paired
from fedsim.selection import participant_epsilon, utility_sensitivity

ARMS = ["secprobe", "fedavg", "random_k", "multikrum"]


@cache
def _expected_honest(n_h: int, n_u: int, draws: int, w: float) -> float:
    if draws == 0 or n_h + n_u == 0:
        return 0.0
    p = n_h * w / (n_h * w + n_u)
    out = 0.0
    if n_h:
        out += p * (1.0 + _expected_honest(n_h - 1, n_u, draws - 1, w))
    if n_u:
        out += (1.0 - p) * _expected_honest(n_h, n_u - 1, draws - 1, w)
    return out


def two_group_share(n_h: int, n_u: int, k: int, x: float) -> float:
    """Expected honest share of ``k`` exponential-mechanism draws without replacement from
    ``n_h`` honest uploads scored ``g`` above ``n_u`` unreliable ones, ``x = ε·g/(2KΔu)``
    (each honest weight ``exp(x)``, each unreliable one 1).

    >>> two_group_share(1, 1, 1, 0.0), round(two_group_share(1, 1, 1, np.log(3.0)), 6)
    (0.5, 0.75)
    """
    return _expected_honest(n_h, n_u, k, float(np.exp(min(x, 700.0)))) / k


def _separation(run_dir: Path, epsilon: float, k: int) -> dict[str, float]:
    """Per run: mean per-round gap, logged-utility and two-group predicted honest shares."""
    cfg = json.loads((run_dir / "summary.json").read_text())
    roles = {c: d["role"] for c, d in cfg["clients"].items()}
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    sens = utility_sensitivity(500, "paper", "classification")
    a = epsilon / (2 * k * sens)
    gaps, logged, grouped, ceiling = [], [], [], []
    pairs = overlapping = 0
    for m in lines:
        scored = {c: d for c, d in m["clients"].items() if d.get("utility") is not None}
        hon = [d for c, d in scored.items() if roles[c] == "honest"]
        bad = [d for c, d in scored.items() if roles[c] != "honest"]
        if not scored:
            continue
        logged.append(sum(d["selection_probability"] for d in hon) / k)
        ceiling.append(min(len(hon), k) / k)
        g = (
            statistics.fmean(d["utility"] for d in hon)
            - statistics.fmean(d["utility"] for d in bad)
            if hon and bad
            else 0.0
        )
        if hon and bad:
            gaps.append(g)
            pairs += len(hon) * len(bad)
            overlapping += sum(b["utility"] >= h["utility"] for b in bad for h in hon)
        grouped.append(two_group_share(len(hon), len(bad), k, a * g))
    return {
        "round_gap": statistics.fmean(gaps) if gaps else float("nan"),
        "pred_logged": statistics.fmean(logged) if logged else float("nan"),
        "pred_two_group": statistics.fmean(grouped) if grouped else float("nan"),
        "ceiling": statistics.fmean(ceiling) if ceiling else float("nan"),
        "overlap": overlapping / pairs if pairs else float("nan"),
        "max_selection_eps": max(
            (d.get("epsilon_selection") or 0.0) for d in cfg["clients"].values()
        ),
    }


def _rows(sweep_dir: Path, k: int) -> list[dict[str, Any]]:
    rows = load(sweep_dir)
    for r in rows:
        point = sweep_dir / "points" / Path(r["run_dir"]).name
        cfg_text = (point / "config.yaml").read_text()
        r["P"] = float(sweep_dir.name.removeprefix("p"))
        r["seed"] = int(r["seed"])
        r["epsilon"] = float(r.get("strategy.selection_epsilon") or _yaml_eps(cfg_text))
        if r["strategy"] == "secprobe":
            r.update(_separation(point, r["epsilon"], k))
    return rows


def _yaml_eps(text: str) -> float:
    for line in text.splitlines():
        if line.strip().startswith("selection_epsilon:"):
            return float(line.split(":", 1)[1])
    raise ValueError("selection_epsilon missing from config.yaml")


def _paired(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> str:
    by_seed = {r["seed"]: r[key] for r in b}
    diffs = [r[key] - by_seed[r["seed"]] for r in a if r["seed"] in by_seed]
    if len(diffs) < 2:
        return "–"
    return f"{format_paired(diffs)} (n={len(diffs)})"


def fig9_table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| P | strategy | final acc | last-3 acc | honest share of used updates | "
        "utility gap g | SecProbe − FedAvg (last-3, paired 95% CI) | "
        "SecProbe − random K (last-3, paired 95% CI) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted({r["P"] for r in rows}):
        at = [r for r in rows if r["P"] == p]
        arm = {s: [r for r in at if r["strategy"] == s] for s in ARMS}
        for s in ARMS:
            g = arm[s]
            if not g:
                continue
            sec = s == "secprobe"
            out.append(
                f"| {p:g} | {s} | {_ms([r['final'] for r in g])} | {_ms([r['last3'] for r in g])} "
                f"| {_ms([r['honest_used'] for r in g], 2)} "
                f"| {_ms([r['round_gap'] for r in g]) if sec else '–'} "
                f"| {_paired(g, arm['fedavg'], 'last3') if sec else ''} "
                f"| {_paired(g, arm['random_k'], 'last3') if sec else ''} |"
            )
    return "\n".join(out)


def separation_table(rows: list[dict[str, Any]], k: int, fedavg: dict[float, list[Any]]) -> str:
    sens = utility_sensitivity(500, "paper", "classification")
    out = [
        "| P | ε per round | ε·g/(2KΔu) | utility gap g | unreliable ≥ honest (pairs) | "
        "honest share: measured | "
        "predicted from logged utilities | two-group prediction from g | "
        "perfect selection (min(honest sampled, K)/K) | last-3 acc | "
        "SecProbe − FedAvg (last-3, paired 95% CI) | ε per participant per round | "
        "max participant selection ε over the run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted({r["P"] for r in rows}):
        for eps in sorted({r["epsilon"] for r in rows if r["P"] == p}):
            g = [r for r in rows if r["P"] == p and r["epsilon"] == eps]
            x = [eps * r["round_gap"] / (2 * k * sens) for r in g]
            out.append(
                f"| {p:g} | {eps:g} | {_ms(x, 2)} | {_ms([r['round_gap'] for r in g])} "
                f"| {_ms([r['overlap'] for r in g], 2)} "
                f"| {_ms([r['honest_used'] for r in g], 2)} "
                f"| {_ms([r['pred_logged'] for r in g], 2)} "
                f"| {_ms([r['pred_two_group'] for r in g], 2)} "
                f"| {_ms([r['ceiling'] for r in g], 2)} "
                f"| {_ms([r['last3'] for r in g])} | {_paired(g, fedavg.get(p, []), 'last3')} "
                f"| {participant_epsilon(eps, sens):g} "
                f"| {max(r['max_selection_eps'] for r in g):.0f} |"
            )
    return "\n".join(out)


def _plot_fig9(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in ARMS:
        ps = sorted({r["P"] for r in rows if r["strategy"] == s})
        vals = [[r["last3"] for r in rows if r["strategy"] == s and r["P"] == p] for p in ps]
        ax.errorbar(
            ps,
            [statistics.fmean(v) for v in vals],
            yerr=[statistics.stdev(v) if len(v) > 1 else 0 for v in vals],
            fmt="-o" if s == "secprobe" else "--.",
            capsize=3,
            label=s,
        )
    ax.set_xlabel("P (fraction of an unreliable client's labels flipped)")
    ax.set_ylabel("test accuracy (mean of last 3 rounds)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def sampled_share(n: int, m: int, k: int, x: float) -> float:
    """:func:`two_group_share` averaged over the honest count among ``m`` of ``n`` clients
    sampled uniformly, half of them honest (hypergeometric)."""
    law = stats.hypergeom(n, n // 2, m)
    return sum(law.pmf(h) * two_group_share(h, m - h, k, x) for h in range(m + 1))


def _plot_separation(rows: list[dict[str, Any]], k: int, n: int, m: int, path: Path) -> None:
    sens = utility_sensitivity(500, "paper", "classification")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = np.logspace(-3, 2, 120)
    ax.plot(
        xs,
        [sampled_share(n, m, k, x) for x in xs],
        "k-",
        lw=1,
        label=f"two-group prediction (M={m} of N={n}, half honest, K={k})",
    )
    for p, marker in zip(sorted({r["P"] for r in rows}), "os^v", strict=False):
        for eps in sorted({r["epsilon"] for r in rows if r["P"] == p}):
            g = [r for r in rows if r["P"] == p and r["epsilon"] == eps]
            x = [max(eps * r["round_gap"] / (2 * k * sens), 1e-3) for r in g]
            ax.scatter(
                x,
                [r["honest_used"] for r in g],
                marker=marker,
                s=18,
                alpha=0.7,
                color=f"C{int(p * 10) % 10}",
                label=f"measured, P={p:g}"
                if eps == min(r["epsilon"] for r in rows if r["P"] == p)
                else None,
            )
    ax.set_xscale("log")
    ax.set_xlabel("ε·g/(2KΔu)  (g: the run's mean per-round utility gap; g ≤ 0 drawn at 1e-3)")
    ax.set_ylabel("honest share of used updates")
    ax.set_title("When the exponential mechanism separates (label flip, N=20)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(results: str) -> int:
    root = Path(results)
    md: list[str] = []
    fedavg: dict[float, list[Any]] = {}
    for name, k, label in (
        ("flip_fig9", 5, "N=20, M=10, K=5"),
        ("flip_fig9_n60", 15, "N=60, M=30, K=15"),
    ):
        rows = [r for d in sorted((root / name).glob("p*")) for r in _rows(d, k)]
        if not rows:
            continue
        md += [f"### Label flip, {label}: accuracy vs P", "", fig9_table(rows), ""]
        if name == "flip_fig9":
            fedavg = {
                p: [r for r in rows if r["P"] == p and r["strategy"] == "fedavg"]
                for p in {r["P"] for r in rows}
            }
            _plot_fig9(
                rows,
                root / "flip_fig9_accuracy_vs_p.png",
                f"Half the clients label-flipped (Fashion-MNIST, {label})",
            )
    sep = [r for d in sorted((root / "flip_fig11").glob("p*")) for r in _rows(d, 5)]
    if sep:
        md += [
            "### Label flip, N=20, M=10, K=5: separation vs selection ε (Δu = 1/2)",
            "",
            separation_table(sep, 5, fedavg),
            "",
        ]
        _plot_separation(sep, 5, 20, 10, root / "flip_separation.png")
    (root / "flip_table.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
