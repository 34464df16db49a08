"""Pairwise reward AUC of honest vs unreliable clients, from valuation sweep directories.

Usage::

    python experiments/recipe/valuation_table.py experiments/results/recipe/valuation_old \
        experiments/results/recipe/valuation_new

For each run, the reward AUC is the share of (honest, unreliable) client pairs in which the
honest client's total reward is larger (ties count half): 1.0 pays every honest client more
than every unreliable one, 0.5 is chance. Prints (and writes ``valuation_table.md`` next to
the first sweep directory) the AUC per arm and corruption kind, mean ± std over the seeds,
with the runs' final test accuracy / AUC.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def reward_auc(clients: dict[str, dict[str, Any]]) -> float:
    """P(reward of an honest client > reward of an unreliable one), ties half.

    >>> reward_auc({"0": {"role": "honest", "reward_total": 2.0},
    ...             "1": {"role": "unreliable", "reward_total": 1.0},
    ...             "2": {"role": "unreliable", "reward_total": 2.0}})
    0.75
    """
    honest = [c["reward_total"] for c in clients.values() if c["role"] == "honest"]
    bad = [c["reward_total"] for c in clients.values() if c["role"] == "unreliable"]
    wins = sum(1.0 if h > b else 0.5 if h == b else 0.0 for h in honest for b in bad)
    return wins / (len(honest) * len(bad))


def _arm(config: str) -> tuple[str, str]:
    """(arm label, corruption kind) from a point's config.yaml text."""

    def value(key: str) -> str:
        for line in config.splitlines():
            if line.strip().startswith(f"{key}:"):
                return line.split(":", 1)[1].strip()
        return "?"

    return f"metric {value('metric')}, quality {value('measure')}, pay {value('pay')}", value(
        "kind"
    )


def table(sweeps: list[Path]) -> str:
    """The Markdown table over every run of ``sweeps``."""
    cells: dict[tuple[str, str], list[tuple[float, float, float]]] = defaultdict(list)
    for sweep in sweeps:
        for point in sorted((sweep / "points").iterdir()):
            if not (point / "summary.json").is_file():
                continue
            summary = json.loads((point / "summary.json").read_text())
            arm, kind = _arm((point / "config.yaml").read_text())
            final = summary["final"]
            cells[(arm, kind)].append(
                (reward_auc(summary["clients"]), final["test_accuracy"], final.get("test_auc"))
            )
    rows = [
        "| valuation (metric, quality gate, pay) | corruption | reward AUC honest > unreliable "
        "| per seed | test accuracy | test AUC |",
        "|---|---|---|---|---|---|",
    ]
    for (arm, kind), runs in cells.items():
        aucs = [r[0] for r in runs]
        rows.append(
            f"| {arm} | {kind} | {statistics.fmean(aucs):.2f} ± {statistics.stdev(aucs):.2f} | "
            f"{', '.join(f'{a:.2f}' for a in aucs)} | "
            f"{statistics.fmean(r[1] for r in runs):.3f} | "
            f"{statistics.fmean(r[2] for r in runs):.3f} |"
        )
    return "\n".join(rows) + "\n"


def main() -> None:
    sweeps = [Path(p) for p in sys.argv[1:]]
    text = table(sweeps)
    (sweeps[0].parent / "valuation_table.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
