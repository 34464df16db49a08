"""The sections of a run directory's report: overview, accuracy, ε per client, clients.

Each is a section provider ``fn(run_dir) -> str | None`` registered in
:data:`fedsim.report.sections.RUN_SECTIONS`; it reads ``metrics.jsonl`` / ``summary.json``
(:mod:`fedsim.rundir`) and may write PNGs next to ``report.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedsim.config import RELATION_TEXT
from fedsim.report.markdown import markdown_table, new_figure, save_figure
from fedsim.rundir import SUMMARY_FILE, read_metrics, read_summary


def _summary_or_none(run_dir: Path) -> dict[str, Any] | None:
    return read_summary(run_dir) if (run_dir / SUMMARY_FILE).is_file() else None


def overview_section(run_dir: Path) -> str:
    """Title, final accuracy, ε spent and wall time (from ``summary.json`` when present)."""
    summary = _summary_or_none(run_dir)
    metrics = read_metrics(run_dir)
    name = (summary or {}).get("name") or run_dir.name
    lines = [f"# Run report: {name}\n", f"Run directory: `{run_dir}`\n"]
    if summary is None:
        lines.append(
            f"No {SUMMARY_FILE}: the run did not finish; {len(metrics)} completed round(s).\n"
        )
        return "\n".join(lines)
    final = summary.get("final") or {}
    dp = summary.get("dp") or {}
    rows: list[tuple[str, Any]] = [
        ("rounds", summary.get("rounds")),
        ("final test accuracy", final.get("test_accuracy")),
        ("final test loss", final.get("test_loss")),
    ]
    if "test_auc" in final:
        rows.append(("final test AUC", final["test_auc"]))
    if "test_mre" in final:
        rows.append(("final test mean relative error", final["test_mre"]))
    if dp.get("enabled"):
        relation = dp.get("neighbouring")
        rows += [
            ("DP mode", dp.get("mode", "sample")),
            ("neighbouring relation", RELATION_TEXT.get(str(relation), relation)),
            (
                "max ε spent (training: DP-SGD, functional mechanism or central)",
                dp.get("max_epsilon_spent"),
            ),
            ("max ε total (all of a client's events)", dp.get("max_epsilon_total")),
            ("δ", dp.get("delta")),
        ]
    elif summary.get("selection_epsilon_total"):
        rows.append(("selection ε (no DP on the updates)", summary["selection_epsilon_total"]))
    rows.append(("wall seconds", summary.get("wall_seconds")))
    lines.append(markdown_table(("", "value"), rows))
    return "\n".join(lines)


def accuracy_section(run_dir: Path) -> str | None:
    """Test accuracy and loss per round (``accuracy.png``)."""
    metrics = read_metrics(run_dir)
    if not metrics:
        return None
    rounds = [m["round"] for m in metrics]
    fig, (ax_acc, ax_loss) = new_figure(9.0, 3.4, ncols=2)
    ax_acc.plot(rounds, [m.get("test_accuracy") for m in metrics], marker="o")
    ax_acc.set_xlabel("round")
    ax_acc.set_ylabel("test accuracy")
    ax_loss.plot(rounds, [m.get("test_loss") for m in metrics], marker="o", color="tab:red")
    ax_loss.set_xlabel("round")
    ax_loss.set_ylabel("test loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
    image = save_figure(fig, run_dir / "accuracy.png")
    rows = [
        (m["round"], m.get("test_accuracy"), m.get("test_loss"), len(m.get("selected", ())))
        for m in metrics
    ]
    table = markdown_table(("round", "test accuracy", "test loss", "updates"), rows)
    return f"## Accuracy per round\n\n![accuracy and loss per round]({image})\n\n{table}"


def epsilon_section(run_dir: Path) -> str | None:
    """ε spent per client per round (``epsilon.png``); ``None`` without DP figures."""
    metrics = read_metrics(run_dir)
    series: dict[str, list[tuple[int, float]]] = {}
    relations: set[str] = set()
    for m in metrics:
        for cid, c in (m.get("clients") or {}).items():
            if c.get("epsilon") is not None:
                series.setdefault(cid, []).append((m["round"], float(c["epsilon"])))
                relations.add(RELATION_TEXT.get(str(c.get("relation")), str(c.get("relation"))))
    if not series:
        return None
    fig, ax = new_figure()
    for cid in sorted(series, key=int):
        xs, ys = zip(*series[cid], strict=True)
        ax.plot(xs, ys, marker="o", label=f"client {cid}")
    ax.set_xlabel("round")
    relation = ", ".join(sorted(relations))
    ax.set_ylabel(f"ε spent (cumulative, {relation})")
    ax.grid(alpha=0.3)
    if len(series) <= 12:
        ax.legend(fontsize="small")
    image = save_figure(fig, run_dir / "epsilon.png")
    return (
        "## Privacy spent per client\n\n"
        f"![epsilon per client per round]({image})\n\n"
        "Cumulative ε after each round in which the client reported (metrics.jsonl "
        f"`clients.<id>.epsilon`), under the {relation} neighbouring relation.\n"
    )


CLIENT_COLUMNS: tuple[str, ...] = (
    "role",
    "epsilon_spent",
    "epsilon_total",
    "epsilon_selection",
    "relation",
    "noise_multiplier",
    "num_examples",
    "rounds_trained",
    "last_status",
)
#: Shown only when some client has a value.
OPTIONAL_CLIENT_COLUMNS: tuple[str, ...] = ("valuation", "reward_total")


def clients_section(run_dir: Path) -> str | None:
    """A table of the per-client fields of ``summary.json``."""
    summary = _summary_or_none(run_dir)
    clients = (summary or {}).get("clients") or {}
    if not clients:
        return None
    columns = [c for c in CLIENT_COLUMNS if any(c in v for v in clients.values())]
    for col in OPTIONAL_CLIENT_COLUMNS:
        if any(v.get(col) not in (None, 0, 0.0) for v in clients.values()):
            columns.append(col)
    rows = [[cid, *(clients[cid].get(col) for col in columns)] for cid in sorted(clients, key=int)]
    return "## Clients\n\n" + markdown_table(("client", *columns), rows)
