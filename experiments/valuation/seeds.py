"""Issue 17: the valuation Spearman and selection-consistency studies over several seeds.

Layout of RUNS (see experiments/valuation/spearman_v2.yaml and
experiments/valuation_consistency_seeds.yaml for the commands)::

    RUNS/spearman_v2/<dataset>/points/*/       fedsim sweep, one point per seed
    RUNS/cons/points/*/                        DP runs, epsilon 1 and 8, per seed
    RUNS/cons-nondp/points/*/                  non-DP runs (lr 0.05), per seed
    RUNS/analysis/seed<S>/<pair>/analysis.json written by ``python seeds.py analyze RUNS``
    RUNS/cons_recipe/points/*/                 the same DP runs with the quickstart's recipe
                                               (experiments/valuation_consistency_seeds_recipe.yaml)
    RUNS/analysis_recipe/seed<S>/<pair>/       ``python seeds.py analyze RUNS --recipe``

``python experiments/valuation/seeds.py analyze RUNS`` runs ``fedsim analyze`` (top 8 per
class, stratified 400-sample subset) for every seed: eps1_vs_eps8 and, where the non-DP
run exists, dp_vs_nondp (ε = 8 vs non-DP). ``python experiments/valuation/collect.py RUNS``
then calls :func:`spearman_seeds` and :func:`consistency_seeds` (the plain recipe);
``python experiments/valuation/seeds.py RUNS --recipe`` collects the recipe study alone.
Which sweeps, analyses and result folder one study uses is a :class:`Layout`.

Intervals. Spearman: a 95% t interval over the seeds, and a Fisher-z interval pooled over
clients × seeds (z = atanh ρ, standard error √(1.06 / (n − 3)) per seed, Fieller, Hartley &
Pearson 1957; the seeds' z averaged, so the pooled standard error is that over √seeds; a
ρ of ±1 is pulled to the largest |ρ| below 1 that n clients allow). The t interval is
clipped to [−1, 1] for display.
Consistency: mean ± std over seeds, paired differences of VoG / PLIS against loss /
grad_norm with a 95% t interval over seeds, and a chance reference: the same statistics
between two random selections of k per class from the same pool (and between run A's
selection and a random one).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fedsim.report.stats import t_interval

RESULTS = Path(__file__).resolve().parents[1] / "results"
SPEARMAN_OUT = RESULTS / "valuation" / "spearman_v2"
PARTS = ("quality", "informativeness", "combined")
PAIRS = {"eps1_vs_eps8": ("eps=1", "eps=8"), "dp_vs_nondp": ("DP-eps=8", "non-DP")}
K, MAX_SAMPLES, CHANCE_DRAWS = 8, 400, 500
KEEP = ("config.yaml", "summary.json", "rewards.csv", "rewards.png", "report.md")


@dataclass(frozen=True)
class Layout:
    """Where one selection-consistency study's runs, analyses and tables live.

    ``dp_sweep``, ``nondp_sweep`` and ``analysis`` are folders of RUNS (``nondp_sweep``
    ``None``: the study has no non-DP arm); ``out`` is its results folder.
    """

    dp_sweep: str
    nondp_sweep: str | None
    analysis: str
    out: Path


CONSISTENCY = RESULTS / "valuation_consistency"
#: Issue 17: plain FedAvg, uncalibrated threshold (experiments/valuation_consistency_seeds.yaml).
PLAIN = Layout("cons", "cons-nondp", "analysis", CONSISTENCY / "seeds")
#: The follow-up with the quickstart's recipe, ε 1 and 8 only
#: (experiments/valuation_consistency_seeds_recipe.yaml).
RECIPE = Layout("cons_recipe", None, "analysis_recipe", CONSISTENCY / "seeds_recipe")


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (dicts with the same keys) to the CSV file ``path``, a header first."""
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def fisher_pooled(rhos: list[float], n: int) -> tuple[float, float, float]:
    """Spearman ρ pooled over independent samples of ``n`` pairs each, with a 95% interval.

    A ρ of ±1 (infinite z) is first pulled to the largest |ρ| short of 1 that ``n`` pairs
    can give (one adjacent swap: 1 − 12 / (n (n² − 1))), so one perfect seed cannot
    dominate the mean of z.

    >>> [round(v, 3) for v in fisher_pooled([0.5, 0.5, 0.5], 10)]
    [0.5, 0.109, 0.757]
    >>> round(fisher_pooled([1.0], 10)[0], 4)
    0.9879
    """
    cap = 1 - 12 / (n * (n * n - 1))
    z = [math.atanh(max(-cap, min(cap, r))) for r in rhos]
    se = math.sqrt(1.06 / (n - 3)) / math.sqrt(len(z))
    zbar = statistics.fmean(z)
    return math.tanh(zbar), math.tanh(zbar - 1.96 * se), math.tanh(zbar + 1.96 * se)


def _points(sweep: Path) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for point in sorted((sweep / "points").glob("*")):
        if (point / "summary.json").is_file():
            out.append((point, json.loads((point / "summary.json").read_text())))
    return out


def _spearman_rows(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per metric: the Spearman ρ of each pay part's total reward with the clean fraction."""
    val = summary["valuation"]
    out = {val["metric"]: {p: val[f"spearman_{p}_clean"] for p in PARTS}}
    for metric, doc in val.get("by_metric", {}).items():
        out[metric] = {
            "quality": val["spearman_quality_clean"],
            "informativeness": doc["spearman_informativeness_clean"],
            "combined": doc["spearman_combined_clean"],
        }
    return out


def _auc(value: float | None) -> str:
    """Test AUC for the runs table; "—" on a multi-class task (no AUC)."""
    return "—" if value is None else f"{value:.3f}"


def spearman_seeds(runs: Path) -> str:
    """Tables of the seeded Spearman study; writes ``results/valuation/spearman_v2/``."""
    root = runs / "spearman_v2"
    if not root.is_dir():
        return ""
    rows: list[dict[str, Any]] = []
    runs_md = [
        "| dataset | seed | test accuracy | balanced accuracy | test AUC | ε DP-SGD |",
        "|---|---|---|---|---|---|",
    ]
    for sweep in sorted(p for p in root.iterdir() if p.is_dir()):
        for point, s in _points(sweep):
            dataset = (
                s.get("dataset")
                or yaml.safe_load((point / "config.yaml").read_text())["data"]["name"]
            )
            seed, final = s["seed"], s["final"]
            keep = SPEARMAN_OUT / dataset / f"seed{seed}"
            keep.mkdir(parents=True, exist_ok=True)
            for name in KEEP:
                if (point / name).is_file():
                    shutil.copy(point / name, keep / name)
            sgd = max(c["epsilon_spent"] for c in s["clients"].values())
            runs_md.append(
                f"| {dataset} | {seed} | {final['test_accuracy']:.3f} | "
                f"{final.get('test_balanced_accuracy', math.nan):.3f} | "
                f"{_auc(final.get('test_auc'))} | {sgd:.2f} |"
            )
            for metric, parts in _spearman_rows(s).items():
                for part, rho in parts.items():
                    rows.append(
                        {
                            "dataset": dataset,
                            "seed": seed,
                            "metric": metric,
                            "pay": part,
                            "spearman": rho,
                            "clients": len(s["clients"]),
                        }
                    )
    if not rows:
        return ""
    write_rows(SPEARMAN_OUT / "spearman_seeds.csv", rows)
    cells: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    for r in rows:
        cells[(r["dataset"], r["metric"], r["pay"])][r["seed"]] = r["spearman"]
    n = rows[0]["clients"]
    md = [
        "| dataset | metric | pay | ρ per seed | mean ± std | 95% t interval (seeds) "
        f"| pooled ρ, 95% Fisher-z interval (n = {n} × seeds) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (ds, metric, part), by_seed in cells.items():
        vals = [by_seed[k] for k in sorted(by_seed)]
        mean, sd, lo, hi = t_interval(vals)
        pooled, plo, phi = fisher_pooled(vals, n)
        md.append(
            f"| {ds} | {metric} | {part} | {', '.join(f'{v:+.2f}' for v in vals)} | "
            f"{mean:+.2f} ± {sd:.2f} | [{max(lo, -1):+.2f}, {min(hi, 1):+.2f}] | "
            f"{pooled:+.2f} [{plo:+.2f}, {phi:+.2f}] |"
        )
    md += [
        "",
        "Paired over seeds: combined − quality alone (does informativeness add to "
        "the quality gate?)",
        "",
        "| dataset | metric | differences per seed | mean [95% t interval] |",
        "|---|---|---|---|",
    ]
    for (ds, metric, part), by_seed in cells.items():
        if part != "combined":
            continue
        q = cells[(ds, metric, "quality")]
        d = [by_seed[k] - q[k] for k in sorted(by_seed) if k in q]
        mean, _, lo, hi = t_interval(d)
        md.append(
            f"| {ds} | {metric} | {', '.join(f'{v:+.2f}' for v in d)} | "
            f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}] |"
        )
    text = "\n".join(runs_md) + "\n\n" + "\n".join(md) + "\n"
    (SPEARMAN_OUT / "README.md").write_text(
        "# Reward vs clean fraction over seeds (generated by experiments/valuation/seeds.py)"
        "\n\n" + text
    )
    return text


def chance_reference(
    images: np.ndarray,
    labels: np.ndarray,
    selected_a: dict[int, list[int]],
    k: int,
    rng: np.random.Generator,
    draws: int = CHANCE_DRAWS,
) -> dict[str, float]:
    """Overlap, SSIM and Bhattacharyya distance of random k-per-class selections.

    ``random_*``: two independent random selections; ``a_vs_random_*``: run A's selection
    (``selected_a``, per class) against a random one. Means over ``draws`` draws, classes
    averaged as :class:`fedsim.valuation.consistency.SelectionConsistency` does.
    """
    from fedsim.valuation.consistency import bhattacharyya_distance, ssim_mean_images

    acc: dict[str, list[float]] = defaultdict(list)
    for _ in range(draws):
        per: dict[str, list[float]] = defaultdict(list)
        overlap = 0
        for c, sel in selected_a.items():
            idx = np.flatnonzero(labels == c)
            r1, r2 = rng.choice(idx, k, replace=False), rng.choice(idx, k, replace=False)
            overlap += len(np.intersect1d(r1, r2))
            per["random_ssim"].append(ssim_mean_images(images[r1], images[r2]))
            per["random_bhattacharyya"].append(bhattacharyya_distance(images[r1], images[r2]))
            a = np.asarray(sel)
            per["a_vs_random_ssim"].append(ssim_mean_images(images[a], images[r2]))
            per["a_vs_random_bhattacharyya"].append(bhattacharyya_distance(images[a], images[r2]))
        acc["random_overlap"].append(overlap)
        for key, v in per.items():
            acc[key].append(float(np.mean(v)))
    return {key: float(np.mean(v)) for key, v in acc.items()}


def _pool_images(run_a: Path) -> tuple[np.ndarray, np.ndarray]:
    from fedsim.valuation.analysis import read_run_config, scoring_pool

    pool = scoring_pool(read_run_config(run_a), None, MAX_SAMPLES)
    return pool.x, pool.y


def _runs_table(runs: Path, layout: Layout) -> list[str]:
    """One line per run: does every arm train (balanced accuracy above 0.5)?"""
    md = [
        "| run | seed | test accuracy | balanced accuracy | test AUC | ε DP-SGD |",
        "|---|---|---|---|---|---|",
    ]
    for sweep in (layout.dp_sweep, layout.nondp_sweep):
        if sweep is None:
            continue
        for point, s in _points(runs / sweep):
            final = s["final"]
            spent = [c.get("epsilon_spent") for c in s["clients"].values()]
            sgd = f"{max(spent):.2f}" if None not in spent and spent else "—"
            md.append(
                f"| {sweep}/{point.name} | {s['seed']} | {final['test_accuracy']:.3f} | "
                f"{final.get('test_balanced_accuracy', math.nan):.3f} | "
                f"{final.get('test_auc') or math.nan:.3f} | {sgd} |"
            )
    return md


def consistency_seeds(runs: Path, layout: Layout = PLAIN) -> str:
    """Tables of one seeded consistency study; writes them into ``layout.out``."""
    root = runs / layout.analysis
    if not root.is_dir():
        return ""
    rows: list[dict[str, Any]] = []
    for seed_dir in sorted(root.glob("seed*")):
        seed = int(seed_dir.name[4:])
        for pair in PAIRS:
            path = seed_dir / pair / "analysis.json"
            if not path.is_file():
                continue
            doc = json.loads(path.read_text())
            keep = layout.out / seed_dir.name / pair
            if keep.exists():
                shutil.rmtree(keep)
            shutil.copytree(seed_dir / pair, keep, ignore=shutil.ignore_patterns("*.npz"))
            images, labels = _pool_images(Path(doc["run_a"]))
            for m in doc["metrics"]:
                sel = {c["label"]: c["selected_a"] for c in m["classes"]}
                chance = chance_reference(
                    images, labels, sel, doc["k"], np.random.default_rng(seed)
                )
                rows.append(
                    {
                        "pair": pair,
                        "seed": seed,
                        "metric": m["metric"],
                        "overlap": m["overlap"],
                        "selected": m["selected"],
                        "ssim": m["mean_ssim"],
                        "bhattacharyya": m["mean_bhattacharyya"],
                        "pearson": m["pearson"],
                        "spearman": m["spearman"],
                        **chance,
                    }
                )
    if not rows:
        return ""
    for sweep in (layout.dp_sweep, layout.nondp_sweep):
        if sweep is None:
            continue
        for point, _ in _points(runs / sweep):
            keep = layout.out / "arms" / sweep / point.name
            keep.mkdir(parents=True, exist_ok=True)
            for name in ("config.yaml", "summary.json"):
                shutil.copy(point / name, keep / name)
    write_rows(layout.out / "consistency_seeds.csv", rows)
    stat_cols = ("overlap", "ssim", "bhattacharyya", "pearson", "spearman")
    chance_cols = (
        "random_overlap",
        "random_ssim",
        "random_bhattacharyya",
        "a_vs_random_ssim",
        "a_vs_random_bhattacharyya",
    )
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[(r["pair"], r["metric"])].append(r)
    md = [
        "| pair | metric | seeds | "
        + " | ".join(stat_cols)
        + " | chance: "
        + " | ".join(c.replace("_", " ") for c in chance_cols)
        + " |",
        "|---|---|---|" + "---|" * (len(stat_cols) + len(chance_cols)),
    ]
    for (pair, metric), rs in by.items():
        cells = []
        for col in stat_cols + chance_cols:
            mean, sd, _, _ = t_interval([float(r[col]) for r in rs])
            digits = 1 if "overlap" in col else 3
            cells.append(f"{mean:.{digits}f} ± {sd:.{digits}f}")
        md.append(f"| {pair} | {metric} | {len(rs)} | " + " | ".join(cells) + " |")
    md += [
        "",
        f"Overlap out of {rows[0]['selected']} (top {K} per class). Paired over seeds, "
        "VoG / PLIS minus loss / grad_norm (positive SSIM / overlap and negative "
        "Bhattacharyya favour VoG / PLIS):",
        "",
        "| pair | difference | overlap | SSIM | Bhattacharyya |",
        "|---|---|---|---|---|",
    ]
    for pair in PAIRS:
        for a in ("vog", "plis"):
            for b in ("loss", "grad_norm"):
                ra = {r["seed"]: r for r in by.get((pair, a), [])}
                rb = {r["seed"]: r for r in by.get((pair, b), [])}
                seeds = sorted(set(ra) & set(rb))
                if len(seeds) < 2:
                    continue
                cells = []
                for col in ("overlap", "ssim", "bhattacharyya"):
                    mean, _, lo, hi = t_interval([ra[s][col] - rb[s][col] for s in seeds])
                    d = 1 if col == "overlap" else 3
                    cells.append(f"{mean:+.{d}f} [{lo:+.{d}f}, {hi:+.{d}f}]")
                md.append(f"| {pair} | {a} − {b} | " + " | ".join(cells) + " |")
    text = "\n".join(_runs_table(runs, layout)) + "\n\n" + "\n".join(md) + "\n"
    (layout.out / "README.md").write_text(
        "# Selection consistency over seeds (generated by experiments/valuation/seeds.py)\n\n"
        "Per-seed analyses (analysis.md, image grids) in seed*/, the runs' configs and "
        "summaries in arms/; chance columns: two random "
        f"selections of {K} per class from the same {MAX_SAMPLES}-sample pool ({CHANCE_DRAWS} "
        "draws), and run A's selection vs a random one.\n\n" + text
    )
    return text


def analyze(runs: Path, layout: Layout = PLAIN) -> None:
    """``fedsim analyze`` for every seed: ε = 1 vs 8, and ε = 8 vs non-DP where present."""
    from fedsim.valuation.analysis import analyze_runs

    def by_seed(sweep: Path, key: str) -> dict[tuple[int, Any], Path]:
        out = {}
        for point in sorted((sweep / "points").glob("*")):
            if (point / "model.pt").is_file():
                cfg = yaml.safe_load((point / "config.yaml").read_text())
                out[(cfg["seed"], cfg["dp"][key])] = point
        return out

    dp = by_seed(runs / layout.dp_sweep, "epsilon")
    nondp_dir = None if layout.nondp_sweep is None else runs / layout.nondp_sweep
    nondp = by_seed(nondp_dir, "enabled") if nondp_dir is not None and nondp_dir.is_dir() else {}
    for seed in sorted({s for s, _ in dp}):
        jobs = {
            "eps1_vs_eps8": (dp.get((seed, 1.0)), dp.get((seed, 8.0))),
            "dp_vs_nondp": (dp.get((seed, 8.0)), nondp.get((seed, False))),
        }
        for pair, (a, b) in jobs.items():
            out = runs / layout.analysis / f"seed{seed}" / pair
            if a is None or b is None or (out / "analysis.json").is_file():
                continue
            analyze_runs(a, b, out, k=K, max_samples=MAX_SAMPLES, labels=PAIRS[pair])
            print(f"seed {seed} {pair}: {out}")


def main() -> None:
    """``seeds.py [analyze] RUNS [--recipe]``: analyse, or collect the tables."""
    args = sys.argv[1:]
    layout = RECIPE if "--recipe" in args else PLAIN
    args = [a for a in args if a != "--recipe"]
    if len(args) == 2 and args[0] == "analyze":
        analyze(Path(args[1]), layout)
        return
    runs = Path(args[0] if args else "runs")
    if layout is PLAIN:
        print(spearman_seeds(runs))
    print(consistency_seeds(runs, layout))


if __name__ == "__main__":
    main()
