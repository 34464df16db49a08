"""Plots and a Markdown table of the SecProbe experiments, from their sweep.csv files.

Usage::

    python experiments/secprobe/plot.py experiments/results/secprobe

Reads ``fig9``, ``fig9_tight``, ``fig10``, ``fig10_tight`` and ``fig11`` under the
results directory (each a sweep directory with ``sweep.csv`` and ``points/*/``), writes
``fig9_accuracy_vs_p.png``, ``fig10_accuracy_vs_malicious.png``,
``fig11_accuracy_vs_epsilon.png`` and ``table.md`` there. Besides the final test accuracy
it reports the mean over the last 3 rounds (less noisy) and the share of honest clients
among the updates each rule used (``selected`` in metrics.jsonl, roles from summary.json).
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

KEPT_UNRECORDED = {"krum", "multikrum", "bulyan"}


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


def _lines(ax: Any, rows: list[dict[str, Any]], xkey: str) -> None:
    by: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        by[r["strategy"]].append((float(r[xkey]), r["last3"]))
    for name in [s for s in STRATEGY_ORDER if s in by]:
        pts = sorted(by[name])
        style = "-o" if name.startswith("secprobe") else "--."
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=name)
    ax.set_ylabel("test accuracy (mean of last 3 rounds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def table(rows: list[dict[str, Any]], xkey: str, xname: str) -> str:
    xs = sorted({float(r[xkey]) for r in rows})
    names = [s for s in STRATEGY_ORDER if any(r["strategy"] == s for r in rows)]
    head = f"| strategy | {' | '.join(f'{xname}={x:g}' for x in xs)} |"
    out = [head, "|" + "---|" * (len(xs) + 1)]
    for name in names:
        cells = []
        for x in xs:
            match = [r for r in rows if r["strategy"] == name and float(r[xkey]) == x]
            if match:
                r = match[0]
                # these runs predate recording what Krum/MultiKrum/Bulyan kept: their
                # ``selected`` lists every update handed to the rule, so no share is shown
                share = "–" if name in KEPT_UNRECORDED else f"{r['honest_used']:.2f}"
                cells.append(f"{r['last3']:.3f} ({r['final']:.3f}; {share})")
            else:
                cells.append("–")
        out.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(out)


def main(results: str) -> int:
    root = Path(results)
    md = [
        "Cells: test accuracy, mean of the last 3 of 10 rounds (final round; share of "
        "honest clients among the updates the rule used).",
        "",
    ]
    fig9 = load(root / "fig9") + load(root / "fig9_tight", tight=True)
    for r in fig9:
        r["P"] = float(r["roles.unreliable.noise_fraction"])
    fig10 = load(root / "fig10") + load(root / "fig10_tight", tight=True)
    for r in fig10:
        r["n"] = round(float(r["roles.malicious.fraction"]) * 20)
    fig11 = load(root / "fig11")
    for r in fig9:  # eps = 1 (the default) is the fig9 SecProbe point at P = 0.6
        if r["strategy"] == "secprobe" and r["P"] == 0.6:
            fig11.append({**r, "strategy.selection_epsilon": 1.0})
    for r in fig11:
        r["ε"] = float(r["strategy.selection_epsilon"])
    baselines = [r for r in fig9 if r["P"] == 0.6 and r["strategy"] in ("fedavg", "random_k")]
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
            for r in baselines:
                ax.axhline(r["last3"], ls=":", color="grey")
                ax.annotate(f"{r['strategy']} (P=0.6)", (1, r["last3"]), fontsize=8, color="grey")
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(root / png, dpi=120)
        md += [f"### {heading}", "", table(rows, xkey, xkey), ""]
    gaps = [
        f"- {r['strategy']} ({', '.join(f'{k}={r[k]}' for k in ('P', 'n', 'ε') if k in r)}): "
        f"{r['utility_gap']:.3f}"
        for rows in (fig9, fig10, fig11)
        for r in rows
        if r["strategy"].startswith("secprobe") and r["utility_gap"] is not None
    ]
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
