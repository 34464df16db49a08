"""Collect the valuation experiments into experiments/results/valuation/ (CSV + Markdown).

fedsim sweep experiments/valuation/spearman.yaml --out RUNS/spearman
fedsim sweep experiments/valuation/table1.yaml --out RUNS/table1
fedsim sweep experiments/valuation/table1_baseline.yaml --out RUNS/table1_baseline
python experiments/valuation/collect.py RUNS

The seeded re-tests of issue 17 (Spearman over seeds, selection consistency over seeds)
are collected by experiments/valuation/seeds.py, called from here (its docstring names
the RUNS layout).
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parents[1] / "results" / "valuation"
PARTS = ("quality", "informativeness", "combined")


def _summaries(sweep: Path) -> list[tuple[Path, dict]]:
    out = []
    for point in sorted((sweep / "points").glob("*")):
        path = point / "summary.json"
        if path.exists():
            out.append((point, json.loads(path.read_text())))
    return out


def _f(x: object) -> str:
    return "—" if x is None else f"{float(x):+.2f}"  # type: ignore[arg-type]


def spearman_table(runs: Path) -> str:
    rows, lines = [], []
    for point, s in _summaries(runs / "spearman"):
        dataset = _config(point)["data"]["name"]
        val = s["valuation"]
        acc = s["final"]["test_accuracy"]
        metrics = {val["metric"]: {p: val[f"spearman_{p}_clean"] for p in PARTS}}
        metrics[val["metric"]]["valuation"] = val["spearman_valuation_clean"]
        for m, doc in val.get("by_metric", {}).items():
            metrics[m] = {
                "quality": val["spearman_quality_clean"],
                "informativeness": doc["spearman_informativeness_clean"],
                "combined": doc["spearman_combined_clean"],
                "valuation": doc["spearman_valuation_clean"],
            }
        for m, d in metrics.items():
            rows.append({"dataset": dataset, "metric": m, "test_accuracy": acc, **d})
        shutil.copy(point / "rewards.csv", OUT / f"rewards-{dataset}.csv")
        from fedsim.valuation.report import report_section

        section = report_section(point)
        if section is not None:
            (OUT / f"report-{dataset}.md").write_text(
                section.replace("rewards.png", f"rewards-{dataset}.png")
            )
            shutil.copy(point / "rewards.png", OUT / f"rewards-{dataset}.png")
        eps = [c["epsilon_total"] for c in s["clients"].values()]
        sgd = [c["epsilon_spent"] for c in s["clients"].values()]
        lines.append(
            f"{dataset}: final test accuracy {acc:.3f}; per client ε DP-SGD "
            f"{max(sgd):.2f}, ε total (DP-SGD + every release) {max(eps):.2f}"
        )
    if not rows:
        return ""
    with (OUT / "spearman.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md = [
        "| dataset | metric | quality alone | informativeness alone | combined (q×v) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['dataset']} | {r['metric']} | {_f(r['quality'])} | "
            f"{_f(r['informativeness'])} | {_f(r['combined'])} |"
        )
    return "\n".join(md) + "\n\n" + "\n".join(lines) + "\n"


def table1(runs: Path) -> str:
    rows = []
    for sweep in ("table1", "table1_baseline"):
        for point, s in _summaries(runs / sweep):
            cfg = _config(point)
            prune = cfg.get("valuation", {}).get("prune", {})
            rows.append(
                {
                    "dataset": cfg["data"]["name"],
                    "epsilon": s["dp"]["target_epsilon"],
                    "seed": s["seed"],
                    "removed_by": prune["metric"] if prune.get("enabled") else "none",
                    "test_accuracy": s["final"]["test_accuracy"],
                    "test_auc": s["final"].get("test_auc"),
                    "max_epsilon_spent": s["dp"]["max_epsilon_spent"],
                }
            )
    if not rows:
        return ""
    with (OUT / "table1.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    order = ("none", "loss", "grad_norm", "vog", "plis")
    md = ["| dataset | ε | " + " | ".join(order) + " |", "|---|---|" + "---|" * len(order)]
    keys = sorted({(r["dataset"], r["epsilon"]) for r in rows})
    drops: dict[str, list[float]] = {m: [] for m in order[1:]}
    for ds, eps in keys:
        cells = []
        acc: dict[str, float] = {}
        for m in order:
            hit = [r for r in rows if (r["dataset"], r["epsilon"], r["removed_by"]) == (ds, eps, m)]
            if not hit:
                cells.append("—")
                continue
            acc[m] = sum(r["test_accuracy"] for r in hit) / len(hit)
            aucs = [r["test_auc"] for r in hit if r["test_auc"] is not None]
            auc_text = f" (AUC {sum(aucs) / len(aucs):.3f})" if aucs else ""
            seeds = f" [{len(hit)} seeds]" if len(hit) > 1 else ""
            cells.append(f"{acc[m]:.3f}{auc_text}{seeds}")
        for m in order[1:]:
            if m in acc and "none" in acc:
                drops[m].append(acc["none"] - acc[m])
        md.append(f"| {ds} | {eps:g} | " + " | ".join(cells) + " |")
    md += [
        "",
        "Mean accuracy drop vs no removal, over the (dataset, ε) cells: "
        + ", ".join(f"{m} {sum(v) / len(v):+.3f} ({len(v)} cells)" for m, v in drops.items() if v),
    ]
    return "\n".join(md) + "\n"


def _config(point: Path) -> dict:
    return yaml.safe_load((point / "config.yaml").read_text())


def main() -> None:
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs")
    OUT.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).parent))
    import seeds

    for text in (seeds.spearman_seeds(runs), seeds.consistency_seeds(runs)):
        if text:
            print(text)
    if not any((runs / s).is_dir() for s in ("spearman", "table1", "table1_baseline")):
        return  # nothing for the one-seed tables: keep results/valuation/README.md
    parts = [
        "# Valuation experiments (generated by experiments/valuation/collect.py)",
        "",
        "## Spearman correlation of total reward with clean fraction (10 clients, 0–90% noise)",
        "",
        spearman_table(runs),
        "## Table 1: test accuracy after removing the 25% highest-scored samples",
        "",
        table1(runs),
    ]
    (OUT / "README.md").write_text("\n".join(parts))
    print((OUT / "README.md").read_text())


if __name__ == "__main__":
    main()
