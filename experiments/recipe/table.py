"""Per-seed table of the quickstart recipe and its remedies (issue 17), from a sweep directory.

Usage::

    python experiments/recipe/table.py experiments/results/recipe/recipe [MORE_SWEEP_DIRS...]

Writes ``table.md`` into the (first) sweep directory and prints it; with several sweep
directories their arms are put side by side (the first directory's first arm is the
reference of the paired differences): for every arm (the swept
values besides the seed), each seed's final test accuracy / AUC / balanced accuracy, the
mean ± std and minimum, how many seeds reach the bar (accuracy ≥ 0.80 and AUC ≥ 0.90),
the paired difference in accuracy against the first arm with a 95% t interval, and the
mean wall time per run.
"""

from __future__ import annotations

import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from fedsim.report.stats import format_mean_std as _ms
from fedsim.report.stats import format_paired

BAR_ACCURACY, BAR_AUC = 0.80, 0.90


def _arms(sweep: Path) -> dict[str, dict[int, dict[str, float]]]:
    rows = list(csv.DictReader((sweep / "sweep.csv").open()))
    columns = list(rows[0])
    keys = columns[1 : columns.index("seed")]  # the swept keys, as fedsim sweep writes them
    arms: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    for r in rows:
        if r["status"] != "done":
            continue
        arm = ", ".join(f"{k.split('.')[-1]}={r[k] or 'null'}" for k in keys) or "recipe"
        arms[arm][int(r["seed"])] = {
            "acc": float(r["final.test_accuracy"]),
            "auc": float(r["final.test_auc"]),
            "bal": float(r["final.test_balanced_accuracy"]),
            "wall": float(r["wall_seconds"]),
            "eps": float(r["dp.max_epsilon_spent"] or "nan"),
        }
    return arms


def _paired(runs: dict[int, dict[str, float]], base: dict[int, dict[str, float]], key: str) -> str:
    """Mean paired difference of ``key`` over the seeds both arms ran, with a 95% t interval."""
    diffs = [runs[s][key] - base[s][key] for s in runs if s in base]
    return format_paired(diffs)


def table(*sweeps: Path) -> str:
    """The Markdown tables (summary, then per seed) of one or more sweep directories."""
    arms: dict[str, dict[int, dict[str, float]]] = {}
    for sweep in sweeps:
        arms.update(_arms(sweep))
    names = list(arms)
    base = arms[names[0]]
    out = [
        "| arm | accuracy | AUC | balanced accuracy | min accuracy | seeds at the bar "
        "(acc ≥ 0.80, AUC ≥ 0.90) | Δ accuracy vs first arm (paired, 95% CI) | "
        "Δ AUC vs first arm (paired, 95% CI) | min AUC | max ε | s per run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        runs = arms[name]
        acc = [v["acc"] for v in runs.values()]
        bar = sum(v["acc"] >= BAR_ACCURACY and v["auc"] >= BAR_AUC for v in runs.values())
        paired = [_paired(runs, base, key) if name != names[0] else "–" for key in ("acc", "auc")]
        out.append(
            f"| {name} | {_ms(acc)} | {_ms([v['auc'] for v in runs.values()])} | "
            f"{_ms([v['bal'] for v in runs.values()])} | {min(acc):.3f} | {bar}/{len(runs)} | "
            f"{paired[0]} | {paired[1]} | {min(v['auc'] for v in runs.values()):.3f} | "
            f"{max(v['eps'] for v in runs.values()):.3f} | "
            f"{statistics.fmean(v['wall'] for v in runs.values()):.1f} |"
        )
    seeds = sorted({s for runs in arms.values() for s in runs})
    out += ["", "Per seed: final test accuracy / AUC / balanced accuracy.", ""]
    out.append("| seed | " + " | ".join(names) + " |")
    out.append("|---|" + "---|" * len(names))
    for s in seeds:
        cells = [
            f"{arms[n][s]['acc']:.3f} / {arms[n][s]['auc']:.3f} / {arms[n][s]['bal']:.3f}"
            if s in arms[n]
            else "–"
            for n in names
        ]
        out.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    sweeps = [Path(a) for a in sys.argv[1:]]
    text = table(*sweeps)
    (sweeps[0] / "table.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
