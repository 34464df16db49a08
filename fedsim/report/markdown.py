"""Building blocks of report sections: Markdown tables and cells, PNG figures.

Section providers (:mod:`fedsim.report.sections`) build their Markdown with these; figures
use matplotlib's Agg backend and are saved next to ``report.md`` and linked by file name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def use_agg() -> None:
    """Select matplotlib's non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")


def new_figure(width: float = 6.0, height: float = 3.6, ncols: int = 1) -> tuple[Any, Any]:
    """A matplotlib figure and axes (Agg backend)."""
    use_agg()
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height))


def warm_up_figures() -> None:
    """Import matplotlib and draw one small figure with text into memory, so that the
    first figure of a report starts warm (its imports, font cache and text rendering:
    ~1 s of a run's end on a 2-core machine). ``fedsim run`` calls it while its driver
    waits for the client workers."""
    import io

    import matplotlib.pyplot as plt

    fig, ax = new_figure(1.0, 1.0)
    ax.plot([0, 1], [0, 1], label="warm-up")
    ax.set_title("warm-up")
    ax.legend()
    fig.savefig(io.BytesIO(), format="png", dpi=20)
    plt.close(fig)


def integer_rounds(ax: Any) -> None:
    """Whole-number ticks on the x axis (rounds)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


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
