"""Pure reward math: quality gate × DP informativeness, proportional budget split.

A client's valuation has two parts (DESIGN.md, "Valuation"):

- *quality*, measured by the server on its public validation split — the validation
  accuracy of the client's update (SecProbe's utility) or its improvement over the
  current global model;
- *informativeness*, the client's DP-released mean score (VoG, PLIS, loss or gradient
  norm), which measures difficulty — pure noise is maximally "difficult", so paying for
  it alone pays for garbage.

:func:`combine` joins them; :func:`allocate` splits a round's budget in proportion to
non-negative weights. Each part alone and the combination are all computed so that a
report can show which of them tracks the true data quality (:func:`spearman`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from fedsim.config import CombineRule

#: The reward variants, in the order reports list them.
REWARD_PARTS: tuple[str, ...] = ("quality", "informativeness", "combined")


def quality_scores(
    accuracies: Sequence[float], global_accuracy: float | None, measure: str
) -> np.ndarray:
    """Quality of each update: its validation ``accuracy`` (or ``auc``, passed in the same
    argument), or its ``improvement`` over ``global_accuracy`` floored at 0."""
    acc = np.asarray(accuracies, dtype=np.float64)
    if measure in ("accuracy", "auc"):
        return acc
    if measure == "improvement":
        if global_accuracy is None:
            raise ValueError("measure 'improvement' needs the global model's accuracy")
        return np.maximum(acc - global_accuracy, 0.0)
    raise ValueError(f"unknown quality measure {measure!r}; valid: accuracy, auc, improvement")


def combine(
    quality: np.ndarray, informativeness: np.ndarray, rule: CombineRule, threshold: float
) -> np.ndarray:
    """The combined valuation: ``product`` q·v, or ``threshold`` 1[q ≥ t]·v.

    >>> combine(np.array([0.2, 0.9]), np.array([0.5, 0.4]), "threshold", 0.5).tolist()
    [0.0, 0.4]
    """
    q = np.asarray(quality, dtype=np.float64)
    v = np.asarray(informativeness, dtype=np.float64)
    if rule == "product":
        return q * v
    if rule == "threshold":
        return np.where(q >= threshold, v, 0.0)
    raise ValueError(f"unknown combine rule {rule!r}; valid: product, threshold")


def allocate(budget: float, weights: np.ndarray) -> np.ndarray:
    """Split ``budget`` in proportion to ``max(weights, 0)``; nothing is paid if all are 0.

    >>> allocate(10.0, np.array([1.0, 3.0, -2.0])).tolist()
    [2.5, 7.5, 0.0]
    """
    w = np.maximum(np.nan_to_num(np.asarray(weights, dtype=np.float64), nan=0.0), 0.0)
    total = w.sum()
    if total <= 0:
        return np.zeros_like(w)
    return budget * w / total


@dataclass(frozen=True)
class RoundRewards:
    """One round's valuations and the three reward splits, aligned with ``client_ids``."""

    client_ids: tuple[int, ...]
    informativeness: np.ndarray
    quality: np.ndarray
    combined: np.ndarray
    reward_quality: np.ndarray
    reward_informativeness: np.ndarray
    reward_combined: np.ndarray

    def paid(self, part: str) -> np.ndarray:
        """The reward actually paid (``combined``, ``quality`` or ``informativeness``)."""
        return {
            "combined": self.reward_combined,
            "quality": self.reward_quality,
            "informativeness": self.reward_informativeness,
        }[part]


def round_rewards(
    client_ids: Sequence[int],
    informativeness: Sequence[float] | np.ndarray,
    quality: Sequence[float] | np.ndarray,
    budget: float,
    rule: CombineRule,
    threshold: float,
) -> RoundRewards:
    """Valuations and the budget split of one round."""
    v = np.asarray(informativeness, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    c = combine(q, v, rule, threshold)
    return RoundRewards(
        client_ids=tuple(int(i) for i in client_ids),
        informativeness=v,
        quality=q,
        combined=c,
        reward_quality=allocate(budget, q),
        reward_informativeness=allocate(budget, v),
        reward_combined=allocate(budget, c),
    )


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); ``None`` if undefined.

    >>> spearman([1, 2, 3], [10, 30, 20])
    0.5
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"x and y must have the same length; got {len(a)}, {len(b)}")
    if len(a) < 2:
        return None
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None  # a constant vector has no rank order
    return float(stats.spearmanr(a, b).statistic)
