"""``report.md`` with PNG plots for a run directory or a sweep directory.

:func:`write_report` decides what ``path`` is — a sweep (it holds ``sweep.csv``) or a run
(it holds ``metrics.jsonl``) — and concatenates the Markdown of every *section* of that
kind, in the order of its registry (:mod:`fedsim.report.sections`: :data:`RUN_SECTIONS`,
:data:`SWEEP_SECTIONS`). A section that raises does not lose the report: the error is
logged and the report says which section failed.

Package layout: :mod:`~fedsim.report.sections` (the two registries and the section
contract), :mod:`~fedsim.report.run` (overview, accuracy, ε and clients sections),
:mod:`~fedsim.report.clinical` (clinical metrics and the per-site evaluation),
:mod:`~fedsim.report.setup` (what the run was, from its ``config.yaml``),
:mod:`~fedsim.report.sweep` (accuracy vs ε of a sweep) and
:mod:`~fedsim.report.markdown` (tables and figures for section providers).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from fedsim.errors import FedsimError
from fedsim.registry import Registry
from fedsim.report.markdown import use_agg, warm_up_figures
from fedsim.report.sections import RUN_SECTIONS, SWEEP_SECTIONS, Section
from fedsim.rundir import METRICS_FILE
from fedsim.sweep import SWEEP_TABLE_FILE

__all__ = [
    "REPORT_FILE",
    "RUN_SECTIONS",
    "SWEEP_SECTIONS",
    "Section",
    "directory_kind",
    "render_sections",
    "warm_up",
    "write_report",
    "write_report_safely",
]

logger = logging.getLogger(__name__)

REPORT_FILE = "report.md"


def directory_kind(path: Path) -> str:
    """``"sweep"`` or ``"run"``; raises :class:`FedsimError` for anything else."""
    if not path.is_dir():
        raise FedsimError(f"report: {str(path)!r} is not a directory")
    if (path / SWEEP_TABLE_FILE).is_file():
        return "sweep"
    if (path / METRICS_FILE).is_file():
        return "run"
    raise FedsimError(
        f"report: {str(path)!r} is neither a run directory (no {METRICS_FILE}) nor a sweep "
        f"directory (no {SWEEP_TABLE_FILE})"
    )


def render_sections(directory: Path, sections: Iterable[tuple[str, Section]]) -> str:
    """The Markdown of all named ``sections`` for ``directory``, in order.

    ``sections`` are ``(name, section)`` pairs, e.g. ``RUN_SECTIONS.items()``; a section
    that raises is logged and noted in the Markdown by its name.
    """
    parts: list[str] = []
    for name, section in sections:
        try:
            text = section(directory)
        except Exception as exc:  # a broken section must not lose the others
            logger.exception("report section %s failed for %s", name, directory)
            text = f"*Section `{name}` failed: {type(exc).__name__}: {exc}*\n"
        if text:
            parts.append(text.rstrip() + "\n")
    return "\n".join(parts)


def write_report(
    path: str | Path,
    run_sections: Registry[Section] = RUN_SECTIONS,
    sweep_sections: Registry[Section] = SWEEP_SECTIONS,
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
    use_agg()
    registry = sweep_sections if kind == "sweep" else run_sections
    out = directory / REPORT_FILE
    out.write_text(render_sections(directory, registry.items()))
    return out


def warm_up() -> None:
    """Make the next :func:`write_report` start warm (its modules, matplotlib, a first
    figure); logs, never raises: it only saves time."""
    try:
        warm_up_figures()
    except Exception:  # the report itself will say what is wrong with matplotlib
        logger.debug("report warm-up failed", exc_info=True)


def write_report_safely(path: str | Path) -> Path | None:
    """:func:`write_report`, logging (not raising) any failure; for the end of a run."""
    try:
        return write_report(path)
    except Exception:  # the run directory is the result; a report failure must not lose it
        logger.exception("could not write the report of %s (the run itself is complete)", path)
        return None
