"""The sweep section of ``report.md``: final accuracy against ε spent, per variant.

``sweep.csv`` (:mod:`fedsim.cli.sweep`) has one row per point: ``point``, the swept
keys, ``status``, the scalar leaves of the point's ``summary.json`` flattened with dots,
and ``run_dir``; only points with status ``done`` are reported. The privacy knob
(:data:`X_KEYS`, e.g. ``dp.noise_multiplier``) moves a point along a line; every other
swept key (e.g. ``dp.clipping``) makes a separate line (a *variant*). Points that differ
only by seed are averaged: mean ± standard deviation of ε spent and of final accuracy.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedsim.report.markdown import markdown_table, new_figure, save_figure
from fedsim.sweep import SWEEP_TABLE_FILE

#: Swept keys that set the privacy level (a point's position along its variant's line).
X_KEYS: tuple[str, ...] = ("dp.noise_multiplier", "dp.epsilon")
ACCURACY = "final.test_accuracy"
EPSILON = "dp.max_epsilon_spent"


@dataclass(frozen=True)
class SeedAverage:
    """One (variant, privacy level) of a sweep: mean ± std over the seeds that ran.

    Not :class:`fedsim.sweep.SweepPoint` (one point of the grid, one seed, to run).
    """

    variant: tuple[tuple[str, str], ...]
    level: tuple[tuple[str, str], ...]
    epsilon_mean: float
    epsilon_std: float
    accuracy_mean: float
    accuracy_std: float
    seeds: int


def read_sweep(path: Path) -> list[dict[str, str]]:
    """The rows of ``sweep.csv``."""
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def swept_keys(columns: Sequence[str]) -> list[str]:
    """The swept config keys, without ``seed``.

    ``fedsim sweep`` writes them between the ``point`` and ``status`` columns; older or
    hand-written files may instead put them first, before ``seed``.
    """
    cols = list(columns)
    if "point" in cols and "status" in cols:
        keys = cols[cols.index("point") + 1 : cols.index("status")]
    elif "seed" in cols:
        keys = cols[: cols.index("seed")]
    else:
        keys = [c for c in cols if c != "run_dir"]
    return [k for k in keys if k != "seed"]


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return statistics.fmean(finite), std


def aggregate_points(rows: Sequence[Mapping[str, str]], keys: Sequence[str]) -> list[SeedAverage]:
    """Group rows by (variant, level) and average over seeds.

    Parameters
    ----------
    rows
        ``sweep.csv`` rows.
    keys
        The swept keys; those in :data:`X_KEYS` are levels, the others variants.
    """
    variant_keys = [k for k in keys if k not in X_KEYS]
    level_keys = [k for k in keys if k in X_KEYS]
    groups: dict[tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]], list] = {}
    for row in rows:
        variant = tuple((k, row.get(k, "")) for k in variant_keys)
        level = tuple((k, row.get(k, "")) for k in level_keys)
        groups.setdefault((variant, level), []).append(row)
    points = []
    for (variant, level), members in groups.items():
        eps = _mean_std([_number(r.get(EPSILON)) for r in members])
        acc = _mean_std([_number(r.get(ACCURACY)) for r in members])
        points.append(SeedAverage(variant, level, *eps, *acc, seeds=len(members)))
    return points


def _label(pairs: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in pairs) or "all"


def _level_order(point: SeedAverage) -> tuple[float, ...]:
    return tuple(_number(v) for _, v in point.level)


def sweep_section(sweep_dir: Path) -> str | None:
    """Accuracy vs ε per variant with error bars over seeds (``accuracy_vs_epsilon.png``)."""
    path = sweep_dir / SWEEP_TABLE_FILE
    rows = [r for r in read_sweep(path) if r.get("status", "done") == "done"]
    if not rows:
        return f"# Sweep report\n\n{SWEEP_TABLE_FILE} has no rows yet.\n"
    keys = swept_keys(list(rows[0].keys()))
    points = aggregate_points(rows, keys)
    variants = sorted({p.variant for p in points})
    level_key = next((k for k in keys if k in X_KEYS), None)
    fig, axes = new_figure(12.0, 4.2, ncols=2) if level_key else new_figure(7.0, 4.2)
    ax = axes[0] if level_key else axes
    for variant in variants:
        line = sorted((p for p in points if p.variant == variant), key=lambda p: p.epsilon_mean)
        ax.errorbar(
            [p.epsilon_mean for p in line],
            [p.accuracy_mean for p in line],
            xerr=[p.epsilon_std for p in line],
            yerr=[p.accuracy_std for p in line],
            marker="o",
            capsize=3,
            label=_label(variant),
        )
        if level_key:
            by_level = sorted(line, key=_level_order)
            axes[1].errorbar(
                [_level_order(p)[0] for p in by_level],
                [p.accuracy_mean for p in by_level],
                yerr=[p.accuracy_std for p in by_level],
                marker="o",
                capsize=3,
                label=_label(variant),
            )
    eps = [p.epsilon_mean for p in points if math.isfinite(p.epsilon_mean)]
    if eps and min(eps) > 0 and max(eps) / min(eps) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("ε spent (max over clients)")
    ax.set_ylabel("final test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if level_key:
        axes[1].set_xlabel(level_key)
        axes[1].set_ylabel("final test accuracy")
        axes[1].grid(alpha=0.3)
    image = save_figure(fig, sweep_dir / "accuracy_vs_epsilon.png")
    table_rows = [
        [
            _label(p.variant),
            _label(p.level),
            p.seeds,
            p.epsilon_mean,
            p.accuracy_mean,
            p.accuracy_std,
        ]
        for variant in variants
        for p in sorted((q for q in points if q.variant == variant), key=_level_order, reverse=True)
    ]
    table = markdown_table(
        ("variant", "level", "seeds", "ε spent", "accuracy (mean)", "accuracy (std)"),
        table_rows,
    )
    return (
        "# Sweep report\n\n"
        f"{len(rows)} finished run(s) from `{SWEEP_TABLE_FILE}`; swept keys: "
        f"{', '.join(f'`{k}`' for k in keys) or 'none'}.\n\n"
        f"![final accuracy vs epsilon per variant]({image})\n\n"
        "Error bars: standard deviation over seeds (none with one seed).\n\n"
        f"{table}"
    )
