"""Pure checks of client uploads, applied by every strategy before aggregation.

A bad reply from one client never ends a run: it is rejected with a reason that is
logged and written to ``metrics.jsonl`` (``clients.<id>.rejected_reason``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def screen_update(
    update: Mapping[str, np.ndarray],
    reference: Mapping[str, tuple[int, ...]],
    num_examples: float,
    weight_key: str = "num-examples",
) -> str | None:
    """Reason to reject an upload, or ``None`` if it is well formed.

    Parameters
    ----------
    update
        The uploaded arrays by name.
    reference
        Expected shape of each array (the global model's).
    num_examples
        The client's aggregation weight (its example count, or 1 for a uniform mean).
    weight_key
        The reply metric that carried it (for the message).

    >>> screen_update({"w": np.ones(2)}, {"w": (2,)}, 10) is None
    True
    >>> screen_update({"w": np.array([1.0, np.nan])}, {"w": (2,)}, 10)
    'array w has 1 non-finite values'
    """
    if not math.isfinite(num_examples) or num_examples <= 0:
        return f"{weight_key} must be a finite number > 0; got {num_examples}"
    missing = sorted(set(reference) - set(update))
    extra = sorted(set(update) - set(reference))
    if missing or extra:
        return f"wrong array keys: missing {missing[:3]}, unexpected {extra[:3]}"
    for name, shape in reference.items():
        arr = update[name]
        if tuple(arr.shape) != tuple(shape):
            return f"array {name} has shape {tuple(arr.shape)}, expected {tuple(shape)}"
        if arr.dtype.kind == "f":
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            if bad:
                return f"array {name} has {bad} non-finite values"
    return None
