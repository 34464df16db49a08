"""PSREval's train-time attacker measured by *robust* accuracy, DP vs non-DP (a script).

Issue 17, §3: the paper's metric is the robust accuracy of the final model under PGD
(L∞ 8/255). For one dataset config of this folder (default Fashion-MNIST):

1. **lr per arm on validation**: non-DP and DP (ε = ``--epsilon``) each train at every lr
   of their grid (seed 0, p = 0); the lr whose final model has the highest accuracy on the
   server's validation split (carved from the training pool, disjoint from the test split)
   is kept. Both grids have the same size and spacing (×2), each around the lr used before.
2. **attacker runs**: each arm at its lr, every p of ``--fractions`` and every seed
   (the tuning run is reused as seed 0, p = 0), each followed by
   ``fedsim evaluate RUN --attacks pgd --seeds 0 --no-quantize`` (white-box PGD on the
   run's test subset: for one seed every arm and p uses the same images).
3. **tables** in ``experiments/results/psreval/robust_attacker/``: ``lr_selection.csv``,
   ``runs.csv`` (one row per run), ``results.md`` (mean ± std per arm × p; the paired,
   same-seed drop from p = 0 to each p with a 95% t-interval, and DP minus non-DP of
   that drop).

Resumable (finished runs and evaluations are skipped); ``--stop-at HH:MM`` (UTC) launches
no new run after that time and tabulates what exists.

Usage::

    PYTHONPATH=. python experiments/psreval/robust_attacker.py \\
        [--dataset fashion-mnist] [--seeds 0 1 2] [--fractions 0.0 0.4 0.2] [--stop-at 12:20]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run_psreval import _md, _write_csv, fedsim  # noqa: E402

RESULTS = HERE.parent / "results" / "psreval" / "robust_attacker"
#: ×2 grids of equal size from the lrs used before (non-DP 0.05, DP 0.5) down and up.
LR_GRID = {"nondp": [0.05, 0.1, 0.2, 0.4], "dp": [0.25, 0.5, 1.0, 2.0]}
# t_{0.975, df} for the 95% intervals (df = seeds − 1)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}


def arm_overrides(arm: str, epsilon: float) -> list[str]:
    return ["dp.enabled=false"] if arm == "nondp" else [f"dp.epsilon={epsilon}"]


def too_late(stop_at: str | None) -> bool:
    if not stop_at:
        return False
    now = dt.datetime.now(dt.UTC).strftime("%H:%M")
    return now >= stop_at


def run_once(cfg: Path, out: Path, overrides: list[str], stop_at: str | None) -> bool:
    """Train (unless finished) and evaluate (unless done); False if skipped for time."""
    if not (out / "summary.json").is_file():
        if too_late(stop_at):
            return False
        args = ["run", str(cfg), "--out", str(out), "--overwrite"]
        for o in overrides:
            args += ["-o", o]
        fedsim(*args)
    if not (out / "robustness.json").is_file():
        if too_late(stop_at):
            return False
        fedsim("evaluate", str(out), "--attacks", "pgd", "--seeds", "0", "--no-quantize")
    return True


def validation_accuracy(run_dir: Path) -> float:
    """Accuracy of the run's final model on the server's validation split."""
    from fedsim.evaluation import evaluate
    from fedsim.robustness.evaluate import load_run
    from fedsim.workload import dataset_for

    run = load_run(run_dir)
    return evaluate(run.model, dataset_for(run.cfg.data, run.cfg.seed).val).accuracy


def record(run_dir: Path, arm: str, lr: float, p: float, seed: int) -> dict[str, Any]:
    s = json.loads((run_dir / "summary.json").read_text())
    rob = json.loads((run_dir / "robustness.json").read_text())
    (pgd,) = [
        r
        for r in rob["rows"]
        if r["attack"] == "pgd" and r["mode"] == "white-box" and r["precision"] == "float"
    ]
    fin = s["final"]
    return {
        "arm": arm,
        "lr": lr,
        "p": p,
        "seed": seed,
        "epsilon_spent": s["dp"]["max_epsilon_spent"] or float("inf"),
        "clean_accuracy": fin["test_accuracy"],
        "balanced_accuracy": fin.get("test_balanced_accuracy"),
        "test_auc": fin.get("test_auc"),
        "robust_accuracy_pgd": pgd["robust_accuracy_mean"],
        "num_examples": pgd["num_examples"],
        "wall_seconds": s["wall_seconds"],
    }


def mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan")
    return m, sd


def ci(xs: list[float]) -> str:
    """mean [95% t-interval] of paired differences."""
    m, sd = mean_std(xs)
    if len(xs) < 2:
        return f"{m:+.3f} (n=1)"
    h = T975.get(len(xs) - 1, 1.96) * sd / math.sqrt(len(xs))
    return f"{m:+.3f} [{m - h:+.3f}, {m + h:+.3f}]"


def tables(rows: list[dict[str, Any]], labels: dict[str, str]) -> str:
    metrics = ["robust_accuracy_pgd", "clean_accuracy", "balanced_accuracy", "test_auc"]
    metrics = [k for k in metrics if all(r.get(k) is not None for r in rows)]
    ps = sorted({r["p"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    by = {(r["arm"], r["p"], r["seed"]): r for r in rows}
    out = []
    summary = []
    for arm in labels:
        for p in ps:
            rs = [by[(arm, p, s)] for s in seeds if (arm, p, s) in by]
            if not rs:
                continue
            row: dict[str, Any] = {"arm": labels[arm], "p": f"{p:g}", "seeds": len(rs)}
            for k in metrics:
                m, sd = mean_std([r[k] for r in rs])
                row[k] = f"{m:.3f} ± {sd:.3f}"
            summary.append(row)
    out.append("## Mean ± std over seeds\n\n" + _md(summary))
    paired = []
    for p in ps[1:]:
        for k in ("robust_accuracy_pgd", "clean_accuracy"):
            drops: dict[str, dict[int, float]] = {}
            for arm in labels:
                drops[arm] = {
                    s: by[(arm, 0.0, s)][k] - by[(arm, p, s)][k]
                    for s in seeds
                    if (arm, 0.0, s) in by and (arm, p, s) in by
                }
            row = {"metric": k, "p": f"0 → {p:g}"}
            for arm in labels:
                row[f"drop {labels[arm]}"] = ci(list(drops[arm].values()))
                row[f"per seed {labels[arm]}"] = " ".join(
                    f"{drops[arm][s]:+.3f}" for s in sorted(drops[arm])
                )
            both = sorted(set.intersection(*(set(d) for d in drops.values())))
            a, b = list(labels)
            row[f"{labels[b]} − {labels[a]}"] = (
                ci([drops[b][s] - drops[a][s] for s in both]) if both else "–"
            )
            paired.append(row)
    out.append(
        "## Paired drop from p = 0 (same seed; mean [95% t-interval]; positive = the attacker"
        " lowers it)\n\n" + _md(paired)
    )
    every = [{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    out.append("## Every run\n\n" + _md(every))
    return "\n\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--runs", default="runs/psreval-robust")
    ap.add_argument("--epsilon", type=float, default=3.4)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.0, 0.4])
    ap.add_argument("--stop-at", help="UTC HH:MM after which no new run is launched")
    args = ap.parse_args()
    config = HERE / f"{args.dataset}.yaml"
    raw = yaml.safe_load(config.read_text())
    base = {k: v for k, v in raw.items() if k != "sweep"}
    runs = Path(args.runs) / args.dataset
    labels = {"nondp": "non-DP", "dp": f"DP ε={args.epsilon:g}"}
    out = RESULTS / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / config.name
        cfg.write_text(yaml.safe_dump(base, sort_keys=False))
        # 1. lr on the validation split (seed 0, p = 0)
        chosen: dict[str, float] = {}
        sel = []
        for arm, grid in LR_GRID.items():
            for lr in grid:
                d = runs / f"{arm}-lr{lr:g}-p0.0-s0"
                ov = [
                    *arm_overrides(arm, args.epsilon),
                    f"client.lr={lr}",
                    "seed=0",
                    "roles.adversarial.data_fraction=0.0",
                ]
                if run_once(cfg, d, ov, args.stop_at):
                    s = json.loads((d / "summary.json").read_text())
                    sel.append(
                        {
                            "arm": labels[arm],
                            "lr": lr,
                            "validation_accuracy": validation_accuracy(d),
                            "test_accuracy": s["final"]["test_accuracy"],
                            "wall_seconds": s["wall_seconds"],
                        }
                    )
            cands = [r for r in sel if r["arm"] == labels[arm]]
            if len(cands) < len(grid):
                print(f"lr selection for {arm} incomplete; stopping", flush=True)
                return 1
            chosen[arm] = max(cands, key=lambda r: r["validation_accuracy"])["lr"]
            print(f"{arm}: lr {chosen[arm]} chosen on validation", flush=True)
        _write_csv(out / "lr_selection.csv", sel)
        # 2. the attacker runs, seeds-major within each p so a cut leaves whole pairs
        rows = []
        order = [0.0] + [p for p in args.fractions if p != 0.0]
        for p in order:
            for seed in args.seeds:
                for arm in LR_GRID:
                    lr = chosen[arm]
                    d = runs / f"{arm}-lr{lr:g}-p{p:.1f}-s{seed}"
                    ov = [
                        *arm_overrides(arm, args.epsilon),
                        f"client.lr={lr}",
                        f"seed={seed}",
                        f"roles.adversarial.data_fraction={p}",
                    ]
                    if run_once(cfg, d, ov, args.stop_at):
                        rows.append(record(d, arm, lr, p, seed))
                    else:
                        print(f"skipped (time) {d}", flush=True)
    _write_csv(out / "runs.csv", rows)
    for d in sorted(runs.glob("*")):  # the small files of every run
        for name in ("summary.json", "robustness.json", "config.yaml"):
            if (d / name).is_file():
                (out / "runs" / d.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(d / name, out / "runs" / d.name / name)
    (out / "results.md").write_text(
        f"# PSREval train-time attacker, robust accuracy ({args.dataset}, cnn)\n\n"
        "PGD L∞ 8/255, 10 steps, step 2/255, white-box on each final float model, "
        "on the run's test subset (same images for every arm and p of a seed).\n\n"
        "## lr chosen on the server validation split (seed 0, p = 0)\n\n"
        + _md(sel)
        + "\n\n"
        + tables(rows, labels)
        + "\n"
    )
    print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
