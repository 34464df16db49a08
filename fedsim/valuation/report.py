"""Report section of a run with DP valuation and rewards (``rewards.csv``).

:func:`report_section` returns Markdown (and writes ``rewards.png`` into the run
directory): the rank correlation of each reward part with the true clean fraction, a
per-client table and a plot of cumulative rewards and of reward vs clean fraction.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

REWARDS_FILE = "rewards.csv"
PLOT_FILE = "rewards.png"
_PARTS = ("quality", "informativeness", "combined")


def _fmt(x: Any, digits: int = 3) -> str:
    return "—" if x is None else f"{float(x):.{digits}f}"


def _plot(run_dir: Path, rows: list[dict[str, str]], clients: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = sorted({int(r["client_id"]) for r in rows})
    rounds = sorted({int(r["round"]) for r in rows})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for cid in ids:
        cum, total = [], 0.0
        for rnd in rounds:
            total += sum(
                float(r["reward"])
                for r in rows
                if int(r["client_id"]) == cid and int(r["round"]) == rnd
            )
            cum.append(total)
        ax1.plot(rounds, cum, marker="o", label=str(cid))
    ax1.set_xlabel("round")
    ax1.set_ylabel("cumulative reward paid")
    ax1.legend(title="client", fontsize="small", ncol=2)
    for part, marker in zip(_PARTS, ("o", "s", "^"), strict=True):
        xs, ys = [], []
        for doc in clients.values():
            if doc.get("clean_fraction") is None:
                continue
            xs.append(float(doc["clean_fraction"]))
            ys.append(float(doc.get(f"reward_total_{part}", 0.0)))
        ax2.scatter(xs, ys, marker=marker, label=part)
    ax2.set_xlabel("clean fraction (ground truth)")
    ax2.set_ylabel("total reward")
    ax2.legend(title="paid by")
    fig.tight_layout()
    fig.savefig(run_dir / PLOT_FILE, dpi=100)
    plt.close(fig)


def report_section(run_dir: Path) -> str | None:
    """Markdown for the valuation/rewards part of a run's report (``None`` without one)."""
    run_dir = Path(run_dir)
    path = run_dir / REWARDS_FILE
    summary_path = run_dir / "summary.json"
    if not path.exists() or not summary_path.exists():
        return None
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    summary = json.loads(summary_path.read_text())
    val = summary.get("valuation") or {}
    clients: dict[str, Any] = summary.get("clients", {})
    lines = [
        "## DP valuation and rewards",
        "",
        f"Metric `{val.get('metric')}`, ε = {val.get('epsilon_per_release')} per release, "
        f"paid by `{val.get('pay')}`; {len(rows)} valuations over "
        f"{len({r['round'] for r in rows})} rounds.",
        "",
        "| reward by | Spearman with clean fraction |",
        "|---|---|",
    ]
    for part in _PARTS:
        lines.append(f"| {part} | {_fmt(val.get(f'spearman_{part}_clean'))} |")
    lines.append(f"| mean DP valuation | {_fmt(val.get('spearman_valuation_clean'))} |")
    lines += [
        "",
        "| client | clean fraction | DP valuation (mean) | reward paid | ε DP-SGD | ε total |",
        "|---|---|---|---|---|---|",
    ]
    for key in sorted(clients, key=int):
        doc = clients[key]
        lines.append(
            f"| {key} | {_fmt(doc.get('clean_fraction'), 2)} | {_fmt(doc.get('valuation'))} "
            f"| {_fmt(doc.get('reward_total'), 1)} | {_fmt(doc.get('epsilon_spent'), 2)} "
            f"| {_fmt(doc.get('epsilon_total'), 2)} |"
        )
    if rows:
        _plot(run_dir, rows, clients)
        lines += ["", f"![rewards]({PLOT_FILE})"]
    return "\n".join(lines) + "\n"
