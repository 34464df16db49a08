"""Plots and a Markdown table of the SecProbe experiments, from their sweep.csv files.

Usage::

    python experiments/secprobe/plot.py experiments/results/secprobe

Reads ``fig9``, ``fig9_tight``, ``fig10``, ``fig10_tight`` and ``fig11`` under the
results directory (each a sweep directory with ``sweep.csv`` and ``points/*/``), writes
``fig9_accuracy_vs_p.png``, ``fig10_accuracy_vs_malicious.png``,
``fig11_accuracy_vs_epsilon.png`` and ``table.md`` there. Each cell is the mean ± std over
the sweep's seeds of the test accuracy averaged over the last 3 rounds (less noisy than
the final round), with the share of honest clients among the updates each rule used
(``selected`` in metrics.jsonl, roles from summary.json).
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

STRATEGY_ORDER = [
    "secprobe",
    "secprobe (tight)",
    "fedavg",
    "random_k",
    "krum",
    "multikrum",
    "median",
    "trimmed_mean",
    "bulyan",
]


def _run_stats(run_dir: Path) -> dict[str, float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    roles = {
        int(c): d["role"]
        for c, d in json.loads((run_dir / "summary.json").read_text())["clients"].items()
    }
    last = [m["test_accuracy"] for m in lines[-3:]]
    used = [c for m in lines for c in m["selected"]]
    sampled_bad = [c for m in lines for c in m["sampled"] if roles[c] != "honest"]
    sampled = [c for m in lines for c in m["sampled"]]
    util: dict[bool, list[float]] = {True: [], False: []}
    for m in lines:
        for c, d in m["clients"].items():
            if d.get("utility") is not None:
                util[roles[int(c)] == "honest"].append(d["utility"])
    gap = (
        sum(util[True]) / len(util[True]) - sum(util[False]) / len(util[False])
        if util[True] and util[False]
        else None
    )
    return {
        "utility_gap": gap,
        "final": lines[-1]["test_accuracy"],
        "last3": sum(last) / len(last),
        "honest_used": sum(roles[c] == "honest" for c in used) / max(1, len(used)),
        "honest_sampled": 1 - len(sampled_bad) / max(1, len(sampled)),
    }


def load(sweep_dir: Path, tight: bool = False) -> list[dict[str, Any]]:
    """Rows of ``sweep.csv`` with the per-run statistics added."""
    csv_path = sweep_dir / "sweep.csv"
    if not csv_path.exists():
        return []
    rows = []
    with open(csv_path) as fh:
        for row in csv.DictReader(fh):
            run_dir = sweep_dir / "points" / Path(row["run_dir"]).name
            if not (run_dir / "summary.json").exists():
                continue  # not finished (or removed to be re-run)
            out: dict[str, Any] = dict(row)
            out["strategy"] = row.get("strategy.name") or "secprobe"
            if tight:
                out["strategy"] = "secprobe (tight)"
            out.update(_run_stats(run_dir))
            rows.append(out)
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
    return mean, var**0.5


def aggregate(rows: list[dict[str, Any]], xkey: str) -> dict[str, dict[float, dict[str, Any]]]:
    """Per strategy and x: mean/std over seeds of ``last3``, mean honest share, seed count."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["strategy"], float(r[xkey]))].append(r)
    out: dict[str, dict[float, dict[str, Any]]] = defaultdict(dict)
    for (name, x), rs in groups.items():
        mean, std = _mean_std([r["last3"] for r in rs])
        out[name][x] = {
            "mean": mean,
            "std": std,
            "share": sum(r["honest_used"] for r in rs) / len(rs),
            "seeds": len(rs),
        }
    return out


def _lines(ax: Any, rows: list[dict[str, Any]], xkey: str) -> None:
    agg = aggregate(rows, xkey)
    for name in [s for s in STRATEGY_ORDER if s in agg]:
        xs = sorted(agg[name])
        style = "-o" if name.startswith("secprobe") else "--."
        ax.errorbar(
            xs,
            [agg[name][x]["mean"] for x in xs],
            yerr=[agg[name][x]["std"] for x in xs],
            fmt=style,
            capsize=3,
            label=name,
        )
    ax.set_ylabel("test accuracy (mean of last 3 rounds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def table(rows: list[dict[str, Any]], xkey: str, xname: str) -> str:
    agg = aggregate(rows, xkey)
    xs = sorted({float(r[xkey]) for r in rows})
    names = [s for s in STRATEGY_ORDER if s in agg]
    head = f"| strategy | {' | '.join(f'{xname}={x:g}' for x in xs)} |"
    out = [head, "|" + "---|" * (len(xs) + 1)]
    for name in names:
        cells = []
        for x in xs:
            c = agg[name].get(x)
            cells.append(
                "–" if c is None else f"{c['mean']:.3f} ± {c['std']:.3f} ({c['share']:.2f})"
            )
        out.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(out)


def main(results: str) -> int:
    root = Path(results)
    md = [
        "Cells: test accuracy averaged over the last 3 of 10 rounds, mean ± std over "
        "seeds (share of honest clients among the updates the rule used).",
        "",
    ]
    fig9 = load(root / "fig9") + load(root / "fig9_tight", tight=True)
    for r in fig9:
        r["P"] = float(r["roles.unreliable.noise_fraction"])
    fig10 = load(root / "fig10") + load(root / "fig10_tight", tight=True)
    for r in fig10:
        r["n"] = round(float(r["roles.malicious.fraction"]) * 20)
    fig11 = load(root / "fig11")
    for r in fig11:
        r["ε"] = float(r["strategy.selection_epsilon"])
    at_06 = aggregate([r for r in fig9 if r["P"] == 0.6], "P")
    baselines = [(s, at_06[s][0.6]["mean"]) for s in ("fedavg", "random_k") if s in at_06]
    panels = [
        (
            "Fig. 9: accuracy vs P",
            fig9,
            "P",
            "P (fraction of an unreliable client's samples replaced by noise)",
            "Half the clients unreliable (Fashion-MNIST, 20 clients, M=10, K=5)",
            "fig9_accuracy_vs_p.png",
        ),
        (
            "Fig. 10: accuracy vs malicious clients",
            fig10,
            "n",
            "clients uploading uniform [0, 1] parameters (of 20)",
            "Random-parameter uploaders (Fashion-MNIST, M=10, K=5)",
            "fig10_accuracy_vs_malicious.png",
        ),
        (
            "Fig. 11: accuracy vs selection ε",
            fig11,
            "ε",
            "selection epsilon per round (sensitivity 1/2)",
            "SecProbe, half unreliable, P = 0.6",
            "fig11_accuracy_vs_epsilon.png",
        ),
    ]
    for heading, rows, xkey, xlabel, title, png in panels:
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        _lines(ax, rows, xkey)
        if xkey == "ε":
            ax.set_xscale("log")
            for name, acc in baselines:
                ax.axhline(acc, ls=":", color="grey")
                ax.annotate(f"{name} (P=0.6)", (0.1, acc), fontsize=8, color="grey")
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(root / png, dpi=120)
        md += [f"### {heading}", "", table(rows, xkey, xkey), ""]
    gap_runs: dict[str, list[float]] = defaultdict(list)
    for rows in (fig9, fig10, fig11):
        for r in rows:
            if r["strategy"].startswith("secprobe") and r["utility_gap"] is not None:
                where = ", ".join(f"{k}={r[k]:g}" for k in ("P", "n", "ε") if k in r)
                gap_runs[f"{r['strategy']} ({where})"].append(r["utility_gap"])
    gaps = [f"- {k}: {sum(v) / len(v):.3f} ({len(v)} runs)" for k, v in gap_runs.items()]
    md += [
        "### SecProbe: mean utility of honest minus other scored uploads",
        "",
        *sorted(set(gaps)),
        "",
    ]
    (root / "table.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
