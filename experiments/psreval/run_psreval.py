"""Run the federated PSREval study and write its tables (a script, not a test).

For each dataset config in this folder: every point of its ``sweep`` grid (DP at each
ε × attacker fraction p) plus the same fractions without DP, each as a normal
``fedsim run`` (resumable: finished points are skipped). Then ``fedsim evaluate`` on the
p = 0 runs with transfer pairs (non-DP ↔ DP ε=7, DP ε=7 ← DP ε=1.7). Tables go to
``experiments/results/psreval/``:

- ``attacker.csv``: final test accuracy per (dataset, privacy, p) and the drop vs p = 0;
- ``robustness.csv``: every robustness row (model × precision × attack × mode);
- ``int8.csv``: model size and clean accuracy before/after int8;
- ``results.md``: all three as Markdown.

Usage::

    PYTHONPATH=. python experiments/psreval/run_psreval.py [--runs DIR] [--datasets ...]
"""

from __future__ import annotations

import argparse
import csv
import itertools
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


def _slug(privacy: str, p: float) -> str:
    return f"{privacy}-p{p:.1f}"


def points(
    raw: dict[str, Any], epsilons: list[float] | None = None, fractions: list[float] | None = None
) -> list[tuple[str, float, list[str]]]:
    """(privacy label, p, overrides) of every run of one dataset config."""
    grid = dict(raw["sweep"]["grid"])
    if epsilons:
        grid["dp.epsilon"] = epsilons
    if fractions:
        grid["roles.adversarial.data_fraction"] = fractions
    fractions = grid["roles.adversarial.data_fraction"]
    out = [
        (
            "nondp",
            float(p),
            # lr 0.5 suits clipped DP-SGD; without clipping it diverged here (PneumoniaMNIST
            # stuck at the majority class, loss 3.05), so non-DP runs use lr 0.1.
            ["dp.enabled=false", "client.lr=0.1", f"roles.adversarial.data_fraction={p}"],
        )
        for p in fractions
    ]
    for eps, p in itertools.product(grid["dp.epsilon"], fractions):
        out.append(
            (f"dp{eps}", float(p), [f"dp.epsilon={eps}", f"roles.adversarial.data_fraction={p}"])
        )
    return out


def fedsim(*args: str, attempts: int = 3) -> None:
    """Run a fedsim subcommand; retried because Ray kills workers when the shared
    machine runs low on memory (seen here with other jobs running)."""
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
    epsilons: list[float] | None,
    fractions: list[float] | None,
    collect_only: bool = False,
) -> dict[str, Path]:
    raw = yaml.safe_load(config.read_text())
    base = {k: v for k, v in raw.items() if k != "sweep"}
    dirs: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / config.name
        cfg_path.write_text(yaml.safe_dump(base, sort_keys=False))
        for privacy, p, overrides in points(raw, epsilons, fractions):
            out = runs / config.stem / _slug(privacy, p)
            if (out / "summary.json").is_file():
                dirs[_slug(privacy, p)] = out
                continue
            if collect_only:
                continue
            dirs[_slug(privacy, p)] = out
            args = ["run", str(cfg_path), "--out", str(out), "--overwrite"]
            for o in overrides:
                args += ["-o", o]
            fedsim(*args)
    return dirs


TRANSFER_PAIRS = [
    ("nondp", "dp7.0"),
    ("dp7.0", "nondp"),
    ("dp7.0", "dp1.7"),
    ("nondp", "dp1.7"),
    ("dp1.7", "nondp"),
]


def evaluate_dataset(dirs: dict[str, Path], collect_only: bool = False) -> list[dict[str, Any]]:
    """One transfer evaluation per finished p = 0 target (the first pair available)."""
    docs: list[dict[str, Any]] = []
    done: set[str] = set()
    for target, source in TRANSFER_PAIRS:
        if _slug(target, 0.0) not in dirs or _slug(source, 0.0) not in dirs:
            continue
        t, s = dirs[_slug(target, 0.0)], dirs[_slug(source, 0.0)]
        saved = t / f"robustness-from-{source}.json"
        if not saved.is_file():
            if collect_only:
                continue
            fedsim("evaluate", str(t), "--transfer-from", str(s))
            shutil.copy(t / "robustness.json", saved)
        docs.append(json.loads(saved.read_text()))
        done.add(_slug(target, 0.0))
    for slug, d in dirs.items():  # a target with no transfer partner: white-box only
        alone = d / "robustness-self.json"
        if slug.endswith("-p0.0") and slug not in done and alone.is_file():
            docs.append(json.loads(alone.read_text()))
    return docs


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
    ap.add_argument("--epsilons", nargs="+", type=float, help="subset of the ε grid")
    ap.add_argument(
        "--collect-only", action="store_true", help="only tabulate finished runs/evaluations"
    )
    ap.add_argument("--fractions", nargs="+", type=float, help="subset of the p grid")
    args = ap.parse_args()
    runs = Path(args.runs)
    attacker, robust, int8 = [], [], []
    for ds in args.datasets:
        # the p = 0 runs and their robustness evaluation first, then the attacker points
        config = HERE / f"{ds}.yaml"
        c = args.collect_only
        robust_docs = evaluate_dataset(run_dataset(config, runs, args.epsilons, [0.0], c), c)
        dirs = run_dataset(config, runs, args.epsilons, args.fractions, c)
        base: dict[str, float] = {}
        for slug, d in dirs.items():
            s = json.loads((d / "summary.json").read_text())
            privacy, p = slug.rsplit("-p", 1)
            acc = s["final"]["test_accuracy"]
            if float(p) == 0.0:
                base[privacy] = acc
            attacker.append(
                {
                    "dataset": ds,
                    "privacy": privacy,
                    "p": float(p),
                    "epsilon_spent": s["dp"]["max_epsilon_spent"] or float("inf"),
                    "test_accuracy": acc,
                    "roles": " ".join(c["role"] for c in s["clients"].values()),
                    "wall_seconds": s["wall_seconds"],
                }
            )
        for row in attacker:
            if row["dataset"] == ds:
                row["drop_vs_p0"] = base.get(row["privacy"], float("nan")) - row["test_accuracy"]
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
            entry = {
                "dataset": ds,
                "model": doc["model"],
                "bytes_float": q["bytes_float"],
                "bytes_int8": q["bytes_int8"],
                "size_reduction": q["size_reduction"],
                "clean_float": doc["clean_accuracy"]["float"],
                "clean_int8": doc["clean_accuracy"]["int8"],
                "accuracy_change": q["accuracy_change"],
            }
            if entry not in int8:
                int8.append(entry)
    RESULTS.mkdir(parents=True, exist_ok=True)
    # white-box rows repeat for each transfer pair of the same target: keep one
    unique = list({json.dumps(r, sort_keys=True): r for r in robust}.values())
    _write_csv(RESULTS / "attacker.csv", attacker)
    _write_csv(RESULTS / "robustness.csv", unique)
    _write_csv(RESULTS / "int8.csv", int8)
    (RESULTS / "results.md").write_text(
        "# PSREval, federated (fedsim)\n\n## Train-time attacker\n\n"
        + _md(attacker)
        + "\n\n## int8\n\n"
        + _md(int8)
        + "\n\n## Robust accuracy\n\n"
        + _md(unique)
        + "\n"
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
