"""The sections of a run directory's report: overview, accuracy, ε per client, clients.

Each is a section provider ``fn(run_dir) -> str | None`` registered in
:data:`fedsim.report.sections.RUN_SECTIONS`; it reads ``metrics.jsonl`` / ``summary.json``
(:mod:`fedsim.rundir`) and may write PNGs next to ``report.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedsim.config import RELATION_TEXT
from fedsim.report.markdown import integer_rounds, markdown_table, new_figure, save_figure
from fedsim.report.setup import run_config, setup_block
from fedsim.rundir import OPTIONAL_TEST_METRICS, SUMMARY_FILE, read_metrics, read_summary


def _summary_or_none(run_dir: Path) -> dict[str, Any] | None:
    return read_summary(run_dir) if (run_dir / SUMMARY_FILE).is_file() else None


def overview_section(run_dir: Path) -> str:
    """Title, final accuracy, ε spent and wall time (from ``summary.json`` when present)."""
    summary = _summary_or_none(run_dir)
    metrics = read_metrics(run_dir)
    name = (summary or {}).get("name") or run_dir.name
    lines = [f"# Run report: {name}\n"]
    cfg = run_config(run_dir)
    if cfg is not None:
        lines.append(setup_block(cfg))
    lines.append(f"Run directory: `{run_dir}`\n")
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
    rows += [
        (f"final test {label}", final[k]) for k, label, _ in OPTIONAL_TEST_METRICS if k in final
    ]
    if final.get("test_recall") is not None:
        rows.append(
            (
                "final test recall per class",
                " / ".join(f"{r:.4f}" if r is not None else "–" for r in final["test_recall"]),
            )
        )
    if dp.get("enabled"):
        relation = dp.get("neighbouring")
        if cfg is None:  # else the setup block above shows them
            rows += [
                ("DP mode", dp.get("mode", "sample")),
                ("neighbouring relation", RELATION_TEXT.get(str(relation), relation)),
            ]
        rows += [
            (
                "max ε spent (training: DP-SGD, functional mechanism or central)",
                dp.get("max_epsilon_spent"),
            ),
            ("max ε total (all of a client's events)", dp.get("max_epsilon_total")),
        ]
        if cfg is None:
            rows.append(("δ", dp.get("delta")))
    elif summary.get("selection_epsilon_total"):
        rows.append(("selection ε (no DP on the updates)", summary["selection_epsilon_total"]))
    rows.append(("wall seconds", summary.get("wall_seconds")))
    lines.append(markdown_table(("", "value"), rows))
    return "\n".join(lines)


def test_curves(metrics: list[dict[str, Any]]) -> list[tuple[str, str, list[Any]]]:
    """``(key, label, values per round)`` of test accuracy and every optional test metric
    (:data:`~fedsim.rundir.OPTIONAL_TEST_METRICS`) that some round carries."""
    curves = [("test_accuracy", "accuracy", [m.get("test_accuracy") for m in metrics])]
    for key, label, _ in OPTIONAL_TEST_METRICS:
        if any(m.get(key) is not None for m in metrics):
            curves.append((key, label, [m.get(key) for m in metrics]))
    return curves


def accuracy_section(run_dir: Path) -> str | None:
    """Test accuracy (with AUC and balanced accuracy where recorded) and loss per round
    (``accuracy.png``)."""
    metrics = read_metrics(run_dir)
    if not metrics:
        return None
    initial = ((_summary_or_none(run_dir) or {}).get("initial")) or None
    if initial is not None:  # round 0: the initial model, where training starts
        metrics = [{"round": 0, **initial, "selected": []}, *metrics]
    rounds = [m["round"] for m in metrics]
    curves = test_curves(metrics)
    fig, (ax_acc, ax_loss) = new_figure(9.0, 3.4, ncols=2)
    for (_, label, values), marker in zip(curves, ("o", "s", "^", "D"), strict=False):
        ys = [np.nan if v is None else v for v in values]
        ax_acc.plot(rounds, ys, marker=marker, label=label)
    ax_acc.set_xlabel("round")
    ax_acc.set_ylabel("test accuracy" if len(curves) == 1 else "test metric")
    if len(curves) > 1:
        ax_acc.legend(fontsize="small")
    ax_loss.plot(rounds, [m.get("test_loss") for m in metrics], marker="o", color="tab:red")
    ax_loss.set_xlabel("round")
    ax_loss.set_ylabel("test loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        integer_rounds(ax)
    image = save_figure(fig, run_dir / "accuracy.png")
    extra = curves[1:]
    rows = [
        (
            m["round"],
            m.get("test_accuracy"),
            *(values[i] for _, _, values in extra),
            m.get("test_loss"),
            len(m.get("selected", ())),
        )
        for i, m in enumerate(metrics)
    ]
    header = ("round", "test accuracy", *(f"test {label}" for _, label, _ in extra))
    table = markdown_table((*header, "test loss", "updates"), rows)
    title = ", ".join(label for _, label, _ in curves)
    return f"## Accuracy per round\n\n![{title} and loss per round]({image})\n\n{table}"


#: Marker and line style cycles that keep overlapping clients' ε curves apart.
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")
_LINESTYLES = ("-", "--", "-.", ":")
#: Clients past this many get no legend entry of their own.
_MAX_LEGEND_CLIENTS = 40


def client_offsets(count: int, spread: float = 0.3) -> list[float]:
    """Small x offsets (in rounds), centred on 0 and at most ``spread`` wide, one per
    client, so that clients with the same ε in the same round do not hide each other.

    >>> client_offsets(1), client_offsets(3)
    ([0.0], [-0.1, 0.0, 0.1])
    """
    if count <= 1:
        return [0.0] * count
    step = min(spread / count, 0.1)
    return [round((i - (count - 1) / 2) * step, 6) for i in range(count)]


def _budget_lines(run_dir: Path) -> list[tuple[float, str, str]]:
    """``(ε, label, line style)`` of the target ε and ``dp.max_epsilon`` where set, from
    ``config.yaml`` (else ``summary.json``'s ``dp`` section); one line when they are equal."""
    cfg = run_config(run_dir)
    if cfg is not None:
        target, cap = cfg.dp.epsilon, cfg.dp.max_epsilon
    else:
        dp = (_summary_or_none(run_dir) or {}).get("dp") or {}
        target, cap = dp.get("target_epsilon"), dp.get("max_epsilon")
    if target is not None and target == cap:
        return [(float(target), f"target ε = max_epsilon = {target:g}", "--")]
    lines = []
    if target is not None:
        lines.append((float(target), f"target ε = {target:g}", "--"))
    if cap is not None:
        lines.append((float(cap), f"max_epsilon = {cap:g}", ":"))
    return lines


def epsilon_section(run_dir: Path) -> str | None:
    """ε spent per client per round (``epsilon.png``), with the target ε and
    ``dp.max_epsilon`` as reference lines; ``None`` without DP figures."""
    metrics = read_metrics(run_dir)
    series: dict[str, list[tuple[int, float]]] = {}
    relations: set[str] = set()
    for m in metrics:
        for cid, c in (m.get("clients") or {}).items():
            if c.get("epsilon") is not None:
                series.setdefault(cid, []).append((m["round"], float(c["epsilon"])))
                if c.get("relation") is not None:
                    relations.add(RELATION_TEXT.get(str(c["relation"]), str(c["relation"])))
    if not series:
        return None
    many = len(series) > 8
    fig, ax = new_figure(7.5 if many else 6.0, 3.6)
    order = sorted(series, key=int)
    for i, (cid, dx) in enumerate(zip(order, client_offsets(len(order)), strict=True)):
        xs, ys = zip(*series[cid], strict=True)
        ax.plot(
            [x + dx for x in xs],
            ys,
            marker=_MARKERS[i % len(_MARKERS)],
            linestyle=_LINESTYLES[(i // len(_MARKERS)) % len(_LINESTYLES)],
            markersize=5,
            alpha=0.8,
            label=f"client {cid}" if i < _MAX_LEGEND_CLIENTS else "_nolegend_",
        )
    budgets = _budget_lines(run_dir)
    for value, label, style in budgets:
        ax.axhline(value, color="black", linestyle=style, linewidth=1.2, label=label)
    ax.set_xlabel("round")
    relation = ", ".join(sorted(relations))
    ax.set_ylabel(f"ε spent (cumulative, {relation})" if relation else "ε spent (cumulative)")
    integer_rounds(ax)
    ax.grid(alpha=0.3)
    if many:
        entries = min(len(order), _MAX_LEGEND_CLIENTS) + len(budgets)
        ax.legend(
            fontsize="x-small",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            ncol=max(1, -(-entries // 20)),
        )
    else:
        ax.legend(fontsize="small")
    image = save_figure(fig, run_dir / "epsilon.png")
    under = f", under the {relation} neighbouring relation" if relation else ""
    budget_text = (
        " Reference lines: " + "; ".join(label for _, label, _ in budgets) + "." if budgets else ""
    )
    apart = (
        "; clients are drawn slightly apart along the round axis so that equal values stay visible"
        if len(order) > 1
        else ""
    )
    return (
        "## Privacy spent per client\n\n"
        f"![epsilon per client per round]({image})\n\n"
        "Cumulative ε after each round in which the client reported (metrics.jsonl "
        f"`clients.<id>.epsilon`){under}{apart}."
        f"{budget_text}\n"
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
OPTIONAL_CLIENT_COLUMNS: tuple[str, ...] = ("epsilon_evaluation", "valuation", "reward_total")


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
