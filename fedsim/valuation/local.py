"""Pruning a client's data by a per-sample score (``valuation.prune``).

:func:`prune_indices` ranks samples and picks the ones to drop; the scores come from
:class:`fedsim.valuation.tracker.ScoreTracker` on the client.

Pruning is local: the ranking never leaves the client and needs no DP release. What the
federation sees afterwards is only the DP-SGD model trained on the kept samples.
"""

from __future__ import annotations

import numpy as np

from fedsim.config import PruneSide


def prune_indices(scores: np.ndarray, fraction: float, side: PruneSide) -> np.ndarray:
    """Indices (sorted) of the ``round(fraction · n)`` samples to drop.

    ``highest`` drops the largest scores, ``lowest`` the smallest; ties are broken by
    index (stable sort), NaN scores rank as the highest.

    >>> prune_indices(np.array([0.1, 0.9, 0.5, 0.7]), 0.5, "highest").tolist()
    [1, 3]
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1); got {fraction}")
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=np.inf)
    k = int(np.floor(fraction * len(s) + 0.5))
    order = np.argsort(-s if side == "highest" else s, kind="stable")
    return np.sort(order[:k])
