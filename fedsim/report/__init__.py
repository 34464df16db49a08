"""``report.md`` with PNG plots for a run directory or a sweep directory.

:func:`write_report` decides what ``path`` is — a sweep (it holds ``sweep.csv``) or a run
(it holds ``metrics.jsonl``) — and concatenates the Markdown of every *section provider*
of that kind. A provider is named ``"module:function"`` and called as
``fn(directory: Path) -> str | None``: it returns a Markdown section (it may write PNGs
into ``directory`` and link them by file name) or ``None`` when the directory has
nothing for it. A feature adds its section by adding one name to :data:`RUN_SECTIONS`
or :data:`SWEEP_SECTIONS`.

A provider that raises does not lose the report: the error is logged and the report
says which section failed.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedsim.config import RELATION_TEXT
from fedsim.errors import FedsimError
from fedsim.rundir import METRICS_FILE, SUMMARY_FILE, read_metrics, read_summary

logger = logging.getLogger(__name__)

REPORT_FILE = "report.md"
SWEEP_FILE = "sweep.csv"

#: Sections of a run directory's report, in order.
RUN_SECTIONS: tuple[str, ...] = (
    "fedsim.report:overview_section",
    "fedsim.report:accuracy_section",
    "fedsim.report:epsilon_section",
    "fedsim.report:clients_section",
    "fedsim.audit.report:audit_section",
    "fedsim.valuation.report:report_section",
    "fedsim.valuation.analysis:report_section",
    "fedsim.robustness.report:report_section",
)

#: Sections of a sweep directory's report, in order.
SWEEP_SECTIONS: tuple[str, ...] = ("fedsim.report_sweep:sweep_section",)

Section = Callable[[Path], "str | None"]


def directory_kind(path: Path) -> str:
    """``"sweep"`` or ``"run"``; raises :class:`FedsimError` for anything else."""
    if not path.is_dir():
        raise FedsimError(f"report: {str(path)!r} is not a directory")
    if (path / SWEEP_FILE).is_file():
        return "sweep"
    if (path / METRICS_FILE).is_file():
        return "run"
    raise FedsimError(
        f"report: {str(path)!r} is neither a run directory (no {METRICS_FILE}) nor a sweep "
        f"directory (no {SWEEP_FILE})"
    )


def load_section(name: str) -> Section:
    """Import the provider ``"module:function"``."""
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"report section must look like 'module:function'; got {name!r}")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise TypeError(f"report section {name!r} is not callable")
    return fn  # type: ignore[no-any-return]


def render_sections(directory: Path, sections: Sequence[str]) -> str:
    """The Markdown of all ``sections`` for ``directory`` (failed sections are noted)."""
    parts: list[str] = []
    for name in sections:
        try:
            text = load_section(name)(directory)
        except Exception as exc:  # a broken section must not lose the others
            logger.exception("report section %s failed for %s", name, directory)
            text = f"*Section `{name}` failed: {type(exc).__name__}: {exc}*\n"
        if text:
            parts.append(text.rstrip() + "\n")
    return "\n".join(parts)


def write_report(
    path: str | Path,
    run_sections: Sequence[str] = RUN_SECTIONS,
    sweep_sections: Sequence[str] = SWEEP_SECTIONS,
) -> Path:
    """Write ``report.md`` (and its PNGs) into the run or sweep directory ``path``.

    Returns
    -------
    Path
        The written ``report.md``.

    Raises
    ------
    FedsimError
        If ``path`` is neither a run nor a sweep directory.
    """
    directory = Path(path)
    kind = directory_kind(directory)
    _use_agg()
    sections = sweep_sections if kind == "sweep" else run_sections
    out = directory / REPORT_FILE
    out.write_text(render_sections(directory, sections))
    return out


def write_report_safely(path: str | Path) -> Path | None:
    """:func:`write_report`, logging (not raising) any failure; for the end of a run."""
    try:
        return write_report(path)
    except Exception:  # the run directory is the result; a report failure must not lose it
        logger.exception("could not write the report of %s (the run itself is complete)", path)
        return None


def _use_agg() -> None:
    import matplotlib

    matplotlib.use("Agg")


def new_figure(width: float = 6.0, height: float = 3.6, ncols: int = 1) -> tuple[Any, Any]:
    """A matplotlib figure and axes (Agg backend)."""
    _use_agg()
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height))


def save_figure(fig: Any, path: Path) -> str:
    """Save ``fig`` as PNG to ``path``, close it, and return the file name for a link."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: numbers to ``digits`` significant digits, ``None`` as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ run sections


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
    if dp.get("enabled"):
        relation = dp.get("neighbouring")
        rows += [
            ("DP mode", dp.get("mode", "sample")),
            ("neighbouring relation", RELATION_TEXT.get(str(relation), relation)),
            ("max ε spent (DP-SGD / central)", dp.get("max_epsilon_spent")),
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
