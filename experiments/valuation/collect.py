"""Collect the valuation experiments into experiments/results/valuation/ (CSV + Markdown).

fedsim sweep experiments/valuation/spearman.yaml --out RUNS/spearman
fedsim sweep experiments/valuation/table1.yaml --out RUNS/table1
fedsim sweep experiments/valuation/table1_baseline.yaml --out RUNS/table1_baseline
python experiments/valuation/collect.py RUNS

The seeded re-tests of issue 17 (Spearman over seeds, selection consistency over seeds)
are collected by experiments/valuation/seeds.py, called from here (its docstring names
the RUNS layout).

Table 1 v2 (issue 17; 3 seeds, equal ε, into experiments/results/valuation/table1_v2/):
the four sweeps of experiments/valuation/table1_v2*.yaml (commands there) in RUNS, then
python experiments/valuation/collect.py --table1-v2 RUNS [NAME]   (NAME: table1_v2)
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
import yaml
from seeds import consistency_seeds, spearman_seeds, write_rows

from fedsim.report.stats import format_mean_std as _ms
from fedsim.report.stats import format_paired

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
    write_rows(OUT / "spearman.csv", rows)
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
    write_rows(OUT / "table1.csv", rows)
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


V2_DATASETS = ("pneumoniamnist", "fashion-mnist")
V2_ARMS = ("none", "loss", "grad_norm", "vog", "plis")
V2_KEEP = ("config.yaml", "summary.json", "metrics.jsonl")


def _v2_rows(runs: Path) -> list[dict]:
    """One row per run of the four Table 1 v2 sweeps (RUNS/<dataset>[-none]/)."""
    rows = []
    for ds in V2_DATASETS:
        for sweep in (runs / f"{ds}-none", runs / ds):
            for point, s in _summaries(sweep):
                prune = _config(point).get("valuation", {}).get("prune", {})
                final = s["final"]
                rows.append(
                    {
                        "dataset": ds,
                        "removed_by": prune["metric"] if prune.get("enabled") else "none",
                        "seed": s["seed"],
                        "test_accuracy": final["test_accuracy"],
                        "test_balanced_accuracy": final["test_balanced_accuracy"],
                        "test_auc": final.get("test_auc"),
                        "max_epsilon_spent": s["dp"]["max_epsilon_spent"],
                        "noise_multiplier": s["clients"]["0"]["noise_multiplier"],
                        "min_rounds_trained": min(
                            c["rounds_trained"] for c in s["clients"].values()
                        ),
                        "removed_class": (hit := _removed_class(point, prune)) and hit[0],
                        "removed_class_share": hit and hit[1],
                        "run": point.relative_to(runs).as_posix(),
                    }
                )
    return rows


def _removed_class(point: Path, prune: dict) -> tuple[str, float] | None:
    """The class the removal hit hardest and its share of the removed samples (binary
    tasks: class 0, for PneumoniaMNIST "normal", the minority), from the clients' state."""
    if not prune.get("enabled"):
        return None
    from fedsim.config import from_dict
    from fedsim.workload import client_split, dataset_for

    raw = _config(point)
    raw.pop("fedsim_version", None)
    cfg = from_dict(raw)
    removed = []
    for client in range(cfg.data.num_clients):
        state = json.loads(
            max((point / "state" / "clients" / str(client)).glob("round-*.json")).read_text()
        )
        labels = client_split(cfg, client).y
        removed.append(labels[np.asarray(state["pruned"], dtype=np.int64)])
    bundle = dataset_for(cfg.data, cfg.seed)
    counts = np.bincount(np.concatenate(removed), minlength=bundle.num_classes)
    top = 0 if bundle.num_classes == 2 else int(np.argmax(counts))
    return str(bundle.class_names[top]), float(counts[top] / counts.sum())


def table1_v2(runs: Path, name: str = "table1_v2") -> str:
    """Table 1 v2: per dataset, every arm's mean ± std and its paired drop vs no removal
    (datasets without runs are left out), into ``OUT/name``."""
    rows = _v2_rows(runs)
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    write_rows(out / "table1_v2.csv", rows)
    for r in rows:  # the small files of every run
        src, dst = runs / r["run"], out / "sweeps" / r["run"]
        dst.mkdir(parents=True, exist_ok=True)
        for keep in V2_KEEP:
            shutil.copy(src / keep, dst / keep)
    md = []
    for ds in sorted({r["dataset"] for r in rows}, key=V2_DATASETS.index):
        by = {
            (r["removed_by"], r["seed"]): r for r in rows if r["dataset"] == ds
        }  # (arm, seed) -> row
        seeds = sorted({seed for arm, seed in by if arm == "none"})
        binary = by[("none", seeds[0])]["test_auc"] is not None
        cols = ["test_accuracy", "test_balanced_accuracy"] + (["test_auc"] if binary else [])
        names = {
            "test_accuracy": "accuracy",
            "test_balanced_accuracy": "balanced accuracy",
            "test_auc": "AUC",
        }
        md += [f"### {ds} (seeds {', '.join(map(str, seeds))})", ""]
        head = ["removed by", *(names[c] for c in cols), *(f"Δ {names[c]} vs none" for c in cols)]
        head += ["ε spent (max)", "σ", "class share of the removed"]
        md += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for arm in V2_ARMS:
            runs_ = [by[(arm, s)] for s in seeds]
            cells = [_ms([r[c] for r in runs_]) for c in cols]
            cells += [
                "–"
                if arm == "none"
                else format_paired([by[(arm, s)][c] - by[("none", s)][c] for s in seeds])
                for c in cols
            ]
            short = [
                r for r in runs_ if r["min_rounds_trained"] < _config(runs / r["run"])["rounds"]
            ]
            cells += [
                f"{max(r['max_epsilon_spent'] for r in runs_):.3f}"
                + (f" ({len(short)} runs stopped early)" if short else ""),
                f"{runs_[0]['noise_multiplier']:.4f}",
            ]
            hit = sorted({r["removed_class"] for r in runs_ if r["removed_class"]})
            shares = [r["removed_class_share"] for r in runs_]
            cells.append(f"{'/'.join(hit)} {_ms(shares)}" if hit else "–")
            md.append(f"| {arm} | " + " | ".join(cells) + " |")
        md += [
            "",
            "The paper's claim, paired per seed: (mean of VoG and PLIS) − (mean of loss and "
            "grad_norm), and each of VoG and PLIS against loss (negative: removal by VoG/PLIS "
            "hurts more):",
            "",
            "| contrast | " + " | ".join(names[c] for c in cols) + " |",
            "|---" * (len(cols) + 1) + "|",
        ]
        contrasts = {
            "(vog+plis)/2 − (loss+grad_norm)/2": (("vog", "plis"), ("loss", "grad_norm")),
            "vog − loss": (("vog",), ("loss",)),
            "plis − loss": (("plis",), ("loss",)),
            "vog − grad_norm": (("vog",), ("grad_norm",)),
            "plis − grad_norm": (("plis",), ("grad_norm",)),
        }
        for label, (a, b) in contrasts.items():
            cells = [
                format_paired(
                    [
                        statistics.fmean(by[(m, s)][c] for m in a)
                        - statistics.fmean(by[(m, s)][c] for m in b)
                        for s in seeds
                    ]
                )
                for c in cols
            ]
            md.append(f"| {label} | " + " | ".join(cells) + " |")
        md += [
            "",
            "Per seed: accuracy / balanced accuracy" + (" / AUC" if binary else "") + ".",
            "",
        ]
        md += ["| seed | " + " | ".join(V2_ARMS) + " |", "|---" * (len(V2_ARMS) + 1) + "|"]
        for s in seeds:
            md.append(
                f"| {s} | "
                + " | ".join(" / ".join(f"{by[(m, s)][c]:.3f}" for c in cols) for m in V2_ARMS)
                + " |"
            )
        md.append("")
    text = "\n".join(md)
    (out / "README.md").write_text(
        f"# Table 1 v2 (generated by experiments/valuation/collect.py --table1-v2 RUNS {name})"
        f"\n\n{text}"
    )
    return text


def _config(point: Path) -> dict:
    return yaml.safe_load((point / "config.yaml").read_text())


def main() -> None:
    if sys.argv[1:2] == ["--table1-v2"]:
        print(table1_v2(Path(sys.argv[2]), *sys.argv[3:4]))
        return
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs")
    OUT.mkdir(parents=True, exist_ok=True)
    for text in (spearman_seeds(runs), consistency_seeds(runs)):
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
