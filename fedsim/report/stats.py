"""Seed statistics for experiment tables: mean ± std and paired 95% t intervals.

Pure functions over plain lists of floats (one value per seed). The experiment scripts
under ``experiments/`` print their comparisons with these, so every table states its
intervals the same way.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy import stats


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, sample standard deviation and the two-sided t interval of the mean.

    Parameters
    ----------
    values
        One value per seed (or per pair, for paired differences).
    level
        Coverage of the interval.

    Returns
    -------
    tuple of float
        ``(mean, std, low, high)``; std and the bounds are NaN for fewer than 2 values.

    Examples
    --------
    >>> [round(v, 3) for v in t_interval([1.0, 2.0, 3.0])]
    [2.0, 1.0, -0.484, 4.484]
    """
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan, math.nan
    sd = statistics.stdev(values)
    quantile = float(stats.t.ppf(0.5 + level / 2, len(values) - 1))
    half = quantile * sd / math.sqrt(len(values))
    return mean, sd, mean - half, mean + half


def format_mean_std(values: Sequence[float], digits: int = 3) -> str:
    """``"m ± s"`` over seeds; one value alone as itself; ``"–"`` for none.

    Examples
    --------
    >>> format_mean_std([0.8, 0.9, 1.0])
    '0.900 ± 0.100'
    >>> format_mean_std([0.81234], digits=2), format_mean_std([])
    ('0.81', '–')
    """
    if not values:
        return "–"
    if len(values) < 2:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def format_paired(diffs: Sequence[float]) -> str:
    """``"+m [lo, hi]"``: mean paired difference with its 95% t interval; ``"–"`` if < 2.

    Examples
    --------
    >>> format_paired([0.01, 0.03, 0.02])
    '+0.020 [-0.005, +0.045]'
    >>> format_paired([0.5])
    '–'
    """
    if len(diffs) < 2:
        return "–"
    mean, _, low, high = t_interval(diffs)
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"
