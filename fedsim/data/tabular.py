"""Tabular regression data: a ``.csv`` or ``.npz`` file, and the shipped diabetes data.

A tabular source yields a regression :class:`~fedsim.data.types.Split`: each row's ``d``
features as a ``1 × 1 × d`` float32 "image" min–max scaled to ``[0, 1]`` per column, and
its numeric target divided by the largest target, so that targets lie in ``(0, 1]`` as
SecProbe assumes (Zhao et al., IEEE TIFS 2020, Sec. III-C). Dividing by the maximum keeps
every relative error ``|ŷ − y| / y`` of the original scale, which is why targets must be
positive: relative error is undefined at ``y = 0``.

The scaling constants (each column's minimum and maximum, the largest target) are taken
from the whole file and treated as public, as in the paper; where they are not public,
scale the file beforehand with public bounds (then the constants are those bounds).

Files
-----
``.csv``
    A header row naming the columns, then one row per record of numbers only. The
    target is the column named by ``data.target`` (default: the last column).
``.npz``
    ``features`` (N × d) and ``target`` (N), or ``x`` and ``y``; optional
    ``feature_names`` is ignored.
"""

from __future__ import annotations

import csv
import io
import math
from importlib import resources
from pathlib import Path

import numpy as np

from fedsim.data.limits import check_bytes
from fedsim.data.npzfile import read_npz_arrays
from fedsim.data.types import SourceArgs, SourceSplits, Split
from fedsim.errors import DataError

__all__ = ["DIABETES_FILE", "load_diabetes", "load_tabular", "scale_table"]

#: The shipped diabetes data (442 patients, 10 features, disease progression after a year).
DIABETES_FILE = "diabetes.csv"
#: Most columns of a table (features + target).
MAX_COLUMNS = 10_000
_NPZ_KEYS = (("features", "target"), ("x", "y"))


def load_tabular(args: SourceArgs) -> SourceSplits:
    """Read the table at ``data.path`` (``.csv`` or ``.npz``) as one regression split.

    Raises
    ------
    DataError
        If ``data.path`` is missing or unreadable, a value is not a finite number, the
        target column is unknown, a target is not positive, or there are fewer than 2
        feature columns' worth of data (see :func:`scale_table`).
    """
    if not args.path:
        raise DataError("data.path: required for data.name 'tabular' (a .csv or .npz file)")
    file = Path(args.path)
    where = f"data.path ({args.path})"
    if file.suffix.lower() == ".npz":
        features, target, name = _read_npz_table(file, where)
    elif file.suffix.lower() == ".csv":
        features, target, name = _read_csv_table(_read_text(file, where), where, args.target)
    else:
        raise DataError(f"{where}: a tabular file must end in .csv or .npz; got {file.name!r}")
    return SourceSplits(
        train=scale_table(features, target, where), val=None, test=None, class_names=(name,)
    )


def load_diabetes(args: SourceArgs) -> SourceSplits:
    """The shipped diabetes data (``data.path`` may name another copy of the CSV)."""
    if args.path:
        return load_tabular(SourceArgs(path=args.path, target=args.target or "progression"))
    text = resources.files("fedsim.data").joinpath(DIABETES_FILE).read_text(encoding="utf-8")
    features, target, name = _read_csv_table(text, "dataset 'diabetes'", "progression")
    return SourceSplits(
        train=scale_table(features, target, "dataset 'diabetes'"),
        val=None,
        test=None,
        class_names=(name,),
    )


def scale_table(features: np.ndarray, target: np.ndarray, where: str) -> Split:
    """A regression split: features min–max scaled per column, target divided by its max.

    >>> s = scale_table(np.array([[1.0, 5.0], [3.0, 5.0]]), np.array([2.0, 4.0]), "t")
    >>> s.x[:, 0, 0, :].tolist(), s.y.tolist()
    ([[0.0, 0.0], [1.0, 0.0]], [0.5, 1.0])
    """
    if features.ndim != 2 or target.ndim != 1 or len(features) != len(target):
        raise DataError(
            f"{where}: need features of shape (N, d) and a target of shape (N,); got "
            f"{features.shape} and {target.shape}"
        )
    if len(target) < 2 or features.shape[1] < 1:
        raise DataError(f"{where}: need at least 2 rows and 1 feature column; got {features.shape}")
    if not (np.all(np.isfinite(features)) and np.all(np.isfinite(target))):
        raise DataError(f"{where}: every feature and target must be a finite number")
    if np.any(target <= 0):
        row = int(np.flatnonzero(target <= 0)[0])
        raise DataError(
            f"{where}: targets must be > 0 (the relative error |y_hat - y| / y is undefined "
            f"at y = 0); row {row + 1} has {target[row]:g}"
        )
    low, high = features.min(axis=0), features.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    x = ((features - low) / span).astype(np.float32)
    y = (target / target.max()).astype(np.float32)
    return Split(x=np.ascontiguousarray(x[:, None, None, :]), y=y)


def _read_text(file: Path, where: str) -> str:
    if not file.is_file():
        raise DataError(f"{where}: file not found")
    check_bytes(file.stat().st_size, where, "the table")
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: cannot read the file as UTF-8 text ({exc})") from exc


def _read_csv_table(
    text: str, where: str, target: str | None
) -> tuple[np.ndarray, np.ndarray, str]:
    """``(features, target, target name)`` of a CSV text with a header row."""
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if len(rows) < 3:
        raise DataError(f"{where}: need a header row and at least 2 data rows; got {len(rows)}")
    header = [c.strip() for c in rows[0]]
    if not 2 <= len(header) <= MAX_COLUMNS:
        raise DataError(
            f"{where}: need 2..{MAX_COLUMNS} columns (features and a target); got {len(header)}"
        )
    name = target if target is not None else header[-1]
    if name not in header:
        raise DataError(
            f"{where}: data.target {name!r} is not a column; columns: {', '.join(header)}"
        )
    column = header.index(name)
    values = np.empty((len(rows) - 1, len(header)), dtype=np.float64)
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(
                f"{where}: line {i} has {len(row)} values but the header has {len(header)}"
            )
        for j, cell in enumerate(row):
            values[i - 2, j] = _number(cell, where, i, header[j])
    return np.delete(values, column, axis=1), values[:, column], name


def _number(cell: str, where: str, line: int, column: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise DataError(
            f"{where}: line {line}, column {column!r}: {cell.strip()[:40]!r} is not a number"
        ) from None
    if not math.isfinite(value):
        raise DataError(f"{where}: line {line}, column {column!r}: {cell.strip()!r} is not finite")
    return value


def _read_npz_table(file: Path, where: str) -> tuple[np.ndarray, np.ndarray, str]:
    wanted = [k for pair in _NPZ_KEYS for k in pair]
    keys, arrays = read_npz_arrays(file, where, wanted)
    for feat_key, target_key in _NPZ_KEYS:
        if feat_key in arrays and target_key in arrays:
            features, target = arrays[feat_key], arrays[target_key]
            break
    else:
        raise DataError(
            f"{where}: needs keys 'features' and 'target' (or 'x' and 'y'); has "
            f"{', '.join(sorted(keys)) or 'none'}"
        )
    if not (np.issubdtype(features.dtype, np.number) and np.issubdtype(target.dtype, np.number)):
        raise DataError(f"{where}: features and target must be numeric arrays")
    return features.astype(np.float64), target.astype(np.float64).ravel(), "target"
