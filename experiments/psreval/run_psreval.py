"""Run the federated PSREval study and write its tables (a script, not a test).

For each dataset config in this folder: every point of its ``sweep`` grid (DP at each
ε × attacker fraction p) plus the same fractions without DP, each as a normal
``fedsim run`` (resumable: finished points are skipped). Then one ``fedsim evaluate`` per
p = 0 model (seed 0), with transfer attacks from each of the other p = 0 models (non-DP
and DP at every ε). Tables go to ``experiments/results/psreval/`` (``.../resnet9/`` with
``--model resnet9``):

- ``attacker.csv``: final test accuracy per (dataset, privacy, p, seed), drop vs p = 0;
- ``robustness.csv``: every robustness row (model × precision × attack × mode);
- ``int8.csv``: model size and clean accuracy before/after int8;
- ``results.md``: all of them as Markdown, with accuracy by p (mean ± std over seeds).

The attacker's effect on PGD *robust* accuracy, DP vs non-DP with lrs tuned per arm on the
validation split and several seeds, is measured by ``robust_attacker.py`` beside this file.

Usage::

    PYTHONPATH=. python experiments/psreval/run_psreval.py [--runs DIR] [--datasets ...] \\
        [--model cnn|resnet9] [--epsilons ...] [--fractions ...] [--seeds ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results" / "psreval"


def _slug(privacy: str, p: float, seed: int = 0) -> str:
    return f"{privacy}-p{p:.1f}" + (f"-s{seed}" if seed else "")


# lr 0.5 suits clipped DP-SGD; without clipping it diverged (PneumoniaMNIST stuck at the
# majority class), so non-DP runs use lr 0.05 (0.81 on PneumoniaMNIST at p = 0).
NONDP_OVERRIDES = ["dp.enabled=false", "client.lr=0.05"]
# ResNet-9 costs ~1 s per DP-SGD step of 32 images here (cnn: 0.03 s): a smaller subset.
MODEL_OVERRIDES = {
    "cnn": [],
    "resnet9": [
        "model.name=resnet9",
        "data.train_samples=1000",
        "rounds=3",
        # its evaluation: FGSM and PGD, one seed (FAB and PGD-L2 cost too much here)
        "robustness.evaluate.attacks=[fgsm,pgd]",
        "robustness.evaluate.seeds=[0]",
    ],
}


def points(
    raw: dict[str, Any],
    epsilons: list[float] | None = None,
    fractions: list[float] | None = None,
    seeds: list[int] | None = None,
) -> list[tuple[str, float, int, list[str]]]:
    """(privacy label, p, seed, overrides) of every run of one dataset config."""
    grid = dict(raw["sweep"]["grid"])
    if epsilons:
        grid["dp.epsilon"] = epsilons
    if fractions:
        grid["roles.adversarial.data_fraction"] = fractions
    privacies = [("nondp", NONDP_OVERRIDES)] + [
        (f"dp{eps}", [f"dp.epsilon={eps}"]) for eps in grid["dp.epsilon"]
    ]
    return [
        (label, float(p), seed, [*ov, f"roles.adversarial.data_fraction={p}", f"seed={seed}"])
        for seed in seeds or [0]
        for label, ov in privacies
        for p in grid["roles.adversarial.data_fraction"]
    ]


def fedsim(*args: str, attempts: int = 2) -> None:
    """Run a fedsim subcommand; retried once (Ray may kill a worker under memory pressure)."""
    cmd = [sys.executable, "-m", "fedsim.cli", *args]
    for attempt in range(1, attempts + 1):
        print("+", " ".join(cmd), flush=True)
        if subprocess.run(cmd, check=False).returncode == 0:
            return
        print(f"attempt {attempt} failed", flush=True)
    raise RuntimeError(f"{' '.join(args)} failed {attempts} times")


def run_dataset(
    config: Path,
    runs: Path,
    model: str,
    epsilons: list[float] | None,
    fractions: list[float] | None,
    seeds: list[int] | None,
    collect_only: bool = False,
) -> dict[str, Path]:
    """Run (or find) every point; returns the finished run directories by slug."""
    raw = yaml.safe_load(config.read_text())
    base = {k: v for k, v in raw.items() if k != "sweep"}
    dirs: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / config.name
        cfg_path.write_text(yaml.safe_dump(base, sort_keys=False))
        for privacy, p, seed, overrides in points(raw, epsilons, fractions, seeds):
            slug = _slug(privacy, p, seed)
            out = runs / f"{config.stem}-{model}" / slug
            if not (out / "summary.json").is_file():
                if collect_only:
                    continue
                args = ["run", str(cfg_path), "--out", str(out), "--overwrite"]
                for o in [*MODEL_OVERRIDES[model], *overrides]:
                    args += ["-o", o]
                fedsim(*args)
            dirs[slug] = out
    return dirs


def evaluate_dataset(dirs: dict[str, Path], collect_only: bool = False) -> list[dict[str, Any]]:
    """Evaluate every finished p = 0, seed-0 model: white-box, and transfer from each of
    the other such models (DP at every ε and non-DP), in one ``fedsim evaluate`` each."""
    targets = {slug: d for slug, d in dirs.items() if slug.endswith("-p0.0")}
    docs: list[dict[str, Any]] = []
    for slug, target in sorted(targets.items()):
        sources = [str(d) for s, d in sorted(targets.items()) if s != slug]
        saved = target / "robustness.json"
        doc = json.loads(saved.read_text()) if saved.is_file() else None
        # an evaluation with at least these sources is kept (a subset run must not redo it)
        if doc is None or not set(sources) <= set(doc.get("transfer_from") or []):
            if collect_only:
                continue
            fedsim("evaluate", str(target), "--transfer-from", *sources)
            doc = json.loads(saved.read_text())
        docs.append(doc)
    return docs


def transfer_matrix(rows: list[dict[str, Any]], attack: str = "pgd") -> list[dict[str, Any]]:
    """Robust accuracy of each float target (rows) under ``attack`` by each generator
    (columns; "white-box" = its own model), with its clean accuracy."""

    def short(label: str) -> str:
        return label.split(" (")[0]

    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        if r["attack"] != attack or r["precision"] != "float":
            continue
        key = (r["dataset"], short(r["model"]))
        row = out.setdefault(
            key, {"dataset": key[0], "target": key[1], "clean": f"{r['clean_accuracy']:.3f}"}
        )
        gen = "white-box" if r["mode"] == "white-box" else "from " + short(r["generator"])
        row[gen] = f"{r['robust_accuracy_mean']:.3f}"
    cols = sorted({k for row in out.values() for k in row if k.startswith("from ")})
    return [
        {k: row.get(k, "–") for k in ("dataset", "target", "clean", "white-box", *cols)}
        for row in out.values()
    ]


def attacker_pivot(rows: list[dict[str, Any]], key: str = "test_accuracy") -> list[dict[str, Any]]:
    """Mean final ``key`` (± std over seeds) per (dataset, privacy) and p."""
    cells: dict[tuple[str, str], dict[float, list[float]]] = {}
    for r in rows:
        if r.get(key) is None:
            continue
        cells.setdefault((r["dataset"], r["privacy"]), {}).setdefault(r["p"], []).append(r[key])
    out = []
    for (ds, privacy), by_p in cells.items():
        row: dict[str, Any] = {"dataset": ds, "privacy": privacy}
        for p in sorted(by_p):
            accs = by_p[p]
            mean = sum(accs) / len(accs)
            std = (sum((a - mean) ** 2 for a in accs) / max(len(accs) - 1, 1)) ** 0.5
            row[f"p={p:g}"] = f"{mean:.3f}" + (f" ± {std:.3f}" if len(accs) > 1 else "")
        out.append(row)
    return out


def _md(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no finished runs)"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/psreval", help="where the run directories go")
    ap.add_argument("--datasets", nargs="+", default=["pneumoniamnist", "fashion-mnist"])
    ap.add_argument("--model", choices=sorted(MODEL_OVERRIDES), default="cnn")
    ap.add_argument("--epsilons", nargs="+", type=float, help="subset of the ε grid")
    ap.add_argument("--fractions", nargs="+", type=float, help="subset of the p grid")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds")
    ap.add_argument(
        "--collect-only", action="store_true", help="only tabulate finished runs/evaluations"
    )
    args = ap.parse_args()
    runs = Path(args.runs)
    attacker: list[dict[str, Any]] = []
    robust: list[dict[str, Any]] = []
    int8: list[dict[str, Any]] = []
    for ds in args.datasets:
        config = HERE / f"{ds}.yaml"
        c = args.collect_only
        # the p = 0 runs and their robustness evaluation first, then the attacker points
        p0 = run_dataset(config, runs, args.model, args.epsilons, [0.0], [0], c)
        robust_docs = evaluate_dataset(p0, c)
        dirs = run_dataset(config, runs, args.model, args.epsilons, args.fractions, args.seeds, c)
        rows = []
        for slug, d in dirs.items():
            s = json.loads((d / "summary.json").read_text())
            privacy, rest = slug.split("-p", 1)
            rows.append(
                {
                    "dataset": ds,
                    "model": args.model,
                    "privacy": privacy,
                    "p": float(rest.split("-s")[0]),
                    "seed": s["seed"],
                    "epsilon_spent": s["dp"]["max_epsilon_spent"] or float("inf"),
                    "test_accuracy": s["final"]["test_accuracy"],
                    "test_auc": s["final"].get("test_auc"),
                    "roles": " ".join(c["role"] for c in s["clients"].values()),
                    "wall_seconds": s["wall_seconds"],
                }
            )
        base = {(r["privacy"], r["seed"]): r["test_accuracy"] for r in rows if r["p"] == 0.0}
        for r in rows:
            r["drop_vs_p0"] = base.get((r["privacy"], r["seed"]), float("nan")) - r["test_accuracy"]
        attacker += rows
        for doc in robust_docs:
            for r in doc["rows"]:
                robust.append(
                    {
                        "dataset": ds,
                        **{k: v for k, v in r.items() if k != "robust_accuracy_per_seed"},
                        "seeds": len(r["robust_accuracy_per_seed"]),
                    }
                )
            q = doc["int8"]
            int8.append(
                {
                    "dataset": ds,
                    "model": doc["model"],
                    "bytes_float": q["bytes_float"],
                    "bytes_int8": q["bytes_int8"],
                    "size_reduction": q["size_reduction"],
                    "clean_float": doc["clean_accuracy"]["float"],
                    "clean_int8": doc["clean_accuracy"]["int8"],
                    "accuracy_change": q["accuracy_change"],
                }
            )
    out = RESULTS if args.model == "cnn" else RESULTS / args.model
    out.mkdir(parents=True, exist_ok=True)
    for ds in args.datasets:  # the small files of every run, for traceability
        for d in sorted((runs / f"{ds}-{args.model}").glob("*")):
            for name in ("summary.json", "metrics.jsonl", "robustness.json", "config.yaml"):
                if (d / name).is_file():
                    dest = out / "runs" / f"{ds}-{args.model}" / d.name
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copy(d / name, dest / name)
    _write_csv(out / "attacker.csv", attacker)
    _write_csv(out / "robustness.csv", robust)
    _write_csv(out / "int8.csv", int8)
    (out / "results.md").write_text(
        f"# PSREval, federated (fedsim), model {args.model}\n\n"
        "## Train-time attacker: final test accuracy by p\n\n"
        + _md(attacker_pivot(attacker))
        + "\n\n## Train-time attacker: final test ROC AUC by p (binary tasks)\n\n"
        + _md(attacker_pivot(attacker, "test_auc"))
        + "\n\n## Train-time attacker: every run\n\n"
        + _md(attacker)
        + "\n\n## Transfer: PGD (L∞, ε = 8/255) robust accuracy of each float model\n\n"
        + _md(transfer_matrix(robust))
        + "\n\n## int8\n\n"
        + _md(int8)
        + "\n\n## Robust accuracy\n\n"
        + _md(robust)
        + "\n"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
