"""Sweeps: a grid over config keys (and seeds), each point a normal run directory.

A sweep config is an ordinary experiment config with a top-level ``sweep:`` section::

    sweep:
      grid:                       # cartesian product, in the order written
        dp.noise_multiplier: [2.0, 1.0]
        dp.clipping: [flat, per_layer_uniform]
      seeds: [0, 1]               # optional; sets ``seed`` (innermost loop)

This module is pure: it parses the section, expands the grid into
:class:`SweepPoint` values with their validated :class:`~fedsim.config.Config`, names
their directories and turns finished runs' summaries into ``sweep.csv`` rows. Running
the points is :mod:`fedsim.cli.sweep`'s job; the sweep report is :mod:`fedsim.report.sweep`.

Layout of a sweep directory (default ``runs/<name>-sweep``)::

    sweep.yaml        SWEEP_DEFINITION_FILE: the base config and the sweep section
    points/NNN-slug/  POINTS_DIR: one ordinary run directory per point
    sweep.csv         SWEEP_TABLE_FILE: one row per point (rewritten after every point)
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedsim.config import Config, copy_raw, from_dict
from fedsim.errors import ConfigError

__all__ = [
    "POINTS_DIR",
    "SWEEP_DEFINITION_FILE",
    "SWEEP_KEY",
    "SWEEP_TABLE_FILE",
    "SweepPoint",
    "SweepSpec",
    "csv_columns",
    "csv_row",
    "expand",
    "flatten_summary",
    "parse_sweep",
    "point_problems",
    "split_sweep",
]

SWEEP_KEY = "sweep"
#: The base config and ``sweep:`` section that define a sweep directory's sweep.
SWEEP_DEFINITION_FILE = "sweep.yaml"
#: One row per point (:func:`csv_row`); what marks a directory as a sweep directory.
SWEEP_TABLE_FILE = "sweep.csv"
#: One ordinary run directory per point, ``NNN-slug``.
POINTS_DIR = "points"
_ALLOWED = {"grid", "seeds"}


@dataclass(frozen=True)
class SweepSpec:
    """The ``sweep:`` section: grid keys with their values, and the seeds (if swept)."""

    grid: tuple[tuple[str, tuple[Any, ...]], ...]
    seeds: tuple[int, ...] | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        """The swept config keys (``seed`` last when seeds are swept)."""
        return tuple(k for k, _ in self.grid) + (("seed",) if self.seeds is not None else ())

    def to_dict(self) -> dict[str, Any]:
        """Plain form (as written in YAML)."""
        doc: dict[str, Any] = {"grid": {k: list(v) for k, v in self.grid}}
        if self.seeds is not None:
            doc["seeds"] = list(self.seeds)
        return doc


@dataclass(frozen=True)
class SweepPoint:
    """One point of the grid: its index, swept values and resolved config."""

    index: int
    values: tuple[tuple[str, Any], ...]
    config: Config

    @property
    def slug(self) -> str:
        """Directory name: ``NNN-key=value_key=value`` (last key component, safe chars)."""
        parts = [f"{key.rsplit('.', 1)[-1]}={_text(value)}" for key, value in self.values]
        slug = re.sub(r"[^A-Za-z0-9_.=+-]", "-", "_".join(parts))
        return f"{self.index:03d}-{slug}"[:120]

    @property
    def where(self) -> str:
        """The swept values as messages name them, e.g. ``dp.epsilon=2, seed=0``."""
        return _where(self.values)


def _where(values: Iterable[tuple[str, Any]]) -> str:
    return ", ".join(f"{k}={_text(v)}" for k, v in values)


def point_problems(found: Sequence[tuple[int, str, str]], total: int) -> list[str]:
    """Each distinct problem once, naming the sweep points that have it.

    ``found`` holds ``(point index, its swept values as text, problem)``; ``total`` is the
    number of points. A problem of one point names it with its values; one that every
    point has (a problem of the base config) says so instead of repeating it per point.

    >>> point_problems([(0, "a=1", "x"), (1, "a=2", "x"), (1, "a=2", "y")], total=2)
    ['all 2 sweep points: x', 'sweep point 1 (a=2): y']
    """
    where = {i: w for i, w, _ in found}
    points: dict[str, list[int]] = {}
    for index, _, problem in found:
        indices = points.setdefault(problem, [])
        if index not in indices:
            indices.append(index)
    lines = []
    for problem, indices in points.items():
        if len(indices) == 1:
            lines.append(f"sweep point {indices[0]} ({where[indices[0]]}): {problem}")
        elif len(indices) == total:
            lines.append(f"all {total} sweep points: {problem}")
        else:
            lines.append(f"sweep points {', '.join(map(str, indices))}: {problem}")
    return lines


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def split_sweep(raw: Mapping[str, Any]) -> tuple[dict[str, Any], SweepSpec]:
    """Separate the ``sweep:`` section from a raw config mapping.

    Raises
    ------
    ConfigError
        If there is no ``sweep:`` section or it is malformed (every problem at once).
    """
    base = copy_raw(dict(raw))
    if SWEEP_KEY not in base:
        raise ConfigError(["sweep: the config has no sweep: section (a grid of config keys)"])
    return base, parse_sweep(base.pop(SWEEP_KEY))


def parse_sweep(section: Any) -> SweepSpec:
    """Validate a ``sweep:`` section; see the module docstring for its form."""
    problems: list[str] = []
    if not isinstance(section, Mapping):
        raise ConfigError([f"sweep: must be a mapping with grid (and seeds); got {section!r}"])
    for key in section:
        if key not in _ALLOWED:
            problems.append(f"sweep.{key}: unknown key; expected one of grid, seeds")
    grid_raw = section.get("grid")
    grid: list[tuple[str, tuple[Any, ...]]] = []
    if not isinstance(grid_raw, Mapping) or not grid_raw:
        problems.append(
            f"sweep.grid: must be a non-empty mapping of config keys to lists; got {grid_raw!r}"
        )
    else:
        for key, values in grid_raw.items():
            if key in ("seed", SWEEP_KEY) or not isinstance(key, str):
                problems.append(
                    f"sweep.grid.{key}: cannot be swept here (use sweep.seeds for seeds)"
                )
            elif not isinstance(values, list) or not values:
                problems.append(
                    f"sweep.grid.{key}: must be a non-empty list of values; got {values!r}"
                )
            elif len(set(map(repr, values))) != len(values):
                problems.append(f"sweep.grid.{key}: values must be distinct; got {values!r}")
            else:
                grid.append((key, tuple(values)))
    seeds_raw = section.get("seeds")
    seeds: tuple[int, ...] | None = None
    if seeds_raw is not None:
        ok = (
            isinstance(seeds_raw, list)
            and seeds_raw
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds_raw)
            and len(set(seeds_raw)) == len(seeds_raw)
        )
        if not ok:
            problems.append(
                "sweep.seeds: must be a non-empty list of distinct integers >= 0; "
                f"got {seeds_raw!r}"
            )
        else:
            seeds = tuple(seeds_raw)
    if problems:
        raise ConfigError(problems)
    return SweepSpec(grid=tuple(grid), seeds=seeds)


def _set(raw: dict[str, Any], key: str, value: Any) -> str | None:
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return f"sweep.grid.{key}: {'.'.join(parts[: i + 1])} is not a section; got {child!r}"
        node = child
    node[parts[-1]] = value
    return None


def expand(
    base: Mapping[str, Any],
    spec: SweepSpec,
    rules: Callable[[Config], list[str]] | None = None,
) -> list[SweepPoint]:
    """Every point of the grid (seeds innermost), each with its validated config.

    ``rules`` adds checks the config package cannot make itself (the strategy's own rules,
    :func:`fedsim.run.config_problems`).

    Raises
    ------
    ConfigError
        Listing the problems of every invalid point, prefixed by the point's values, so
        that nothing starts when any point is wrong.
    """
    keys = [k for k, _ in spec.grid]
    axes: list[Sequence[Any]] = [v for _, v in spec.grid]
    if spec.seeds is not None:
        keys.append("seed")
        axes.append(spec.seeds)
    points: list[SweepPoint] = []
    problems: list[str] = []  # of the sweep section itself
    found: list[tuple[int, str, str]] = []  # of a point's config
    total = 0
    for index, combo in enumerate(itertools.product(*axes)):
        total += 1
        values = tuple(zip(keys, combo, strict=True))
        raw = copy_raw(dict(base))
        errors = [e for k, v in values if (e := _set(raw, k, v)) is not None]
        where = _where(values)
        if errors:
            problems.extend(errors)
            continue
        try:
            cfg = from_dict(raw)
        except ConfigError as exc:
            found.extend((index, where, p) for p in exc.problems)
            continue
        extra = [] if rules is None else rules(cfg)
        if extra:
            found.extend((index, where, p) for p in extra)
            continue
        points.append(SweepPoint(index=index, values=values, config=cfg))
    if problems or found:
        unique = sorted(set(problems), key=problems.index)
        raise ConfigError(unique + point_problems(found, total))
    return points


def flatten_summary(summary: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar leaves of a ``summary.json`` outside its per-client section, dotted keys."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if not prefix and key == "clients":
            continue
        if isinstance(value, Mapping):
            out.update(flatten_summary(value, prefix=f"{name}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out


def csv_row(
    point: SweepPoint, status: str, run_dir: str, summary: Mapping[str, Any] | None
) -> dict[str, Any]:
    """One ``sweep.csv`` row: swept values, status, flattened summary, run directory."""
    row: dict[str, Any] = {"point": point.index}
    row.update({k: v for k, v in point.values})
    row["status"] = status
    if summary is not None:
        for key, value in flatten_summary(summary).items():
            row.setdefault(key, value)
    row["run_dir"] = run_dir
    return row


def csv_columns(spec: SweepSpec, rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Column order: point, swept keys, status, summary fields (sorted), run_dir."""
    head = ["point", *spec.keys, "status"]
    rest = sorted({k for row in rows for k in row} - set(head) - {"run_dir"})
    return [*head, *rest, "run_dir"]


def format_cell(value: Any) -> str:
    """CSV text of a cell (empty for missing/None/NaN)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return str(value)
