"""Carving a held-out split (validation or test) out of a training split.

Pure functions: the size rule and a seeded, class-stratified selection.
"""

from __future__ import annotations

import numpy as np

from fedsim.errors import DataError, FedsimError

__all__ = ["DEFAULT_HOLDOUT", "holdout_count", "stratified_holdout"]

DEFAULT_HOLDOUT = 5000
"""Default number of carved samples, capped at 10% of the training split."""


def holdout_count(size: int | float | None, n: int, field: str = "data.val_size") -> int:
    """Number of samples to carve out of a split of ``n`` samples.

    Parameters
    ----------
    size
        ``None`` for the default (``min(5000, 10% of n)``, at least 1); an ``int`` count;
        a ``float`` in ``(0, 1)`` for a fraction of ``n`` (rounded, at least 1); a whole
        ``float >= 1`` (as YAML numbers may arrive) is taken as a count.
    n
        Number of samples in the split carved from.
    field
        Config field named in error messages.

    Raises
    ------
    DataError
        If the split has fewer than 2 samples (nothing could be carved).
    FedsimError
        If the size is not a positive count or fraction, or would leave no sample behind.
    """
    if n < 2:
        raise DataError(
            f"{field}: need at least 2 training samples to carve a held-out split; got {n}"
        )
    if size is None:
        count = max(1, min(DEFAULT_HOLDOUT, n // 10))
    elif isinstance(size, bool) or not isinstance(size, int | float):
        raise FedsimError(f"{field} must be an integer count or a fraction; got {size!r}")
    elif isinstance(size, float) and 0.0 < size < 1.0:
        count = max(1, round(size * n))
    elif isinstance(size, float) and not (size >= 1.0 and float(size).is_integer()):
        raise FedsimError(
            f"{field} must be a fraction in (0, 1) or a whole count >= 1; got {size!r}"
        )
    else:
        count = int(size)
    if not 1 <= count < n:
        raise FedsimError(
            f"{field} must leave at least one training sample: a count in 1..{n - 1} "
            f"for {n} training samples; got {size!r}"
        )
    return count


def stratified_holdout(
    labels: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(len(labels))`` into kept and held-out indices, stratified by class.

    Each class contributes ``count * n_k / n`` samples, rounded by largest remainder
    (ties go to the smaller label), chosen uniformly at random within the class.

    Parameters
    ----------
    labels
        1-D integer labels.
    count
        Number of held-out samples, ``0 <= count <= len(labels)``.
    rng
        Source of randomness.

    Returns
    -------
    tuple of numpy.ndarray
        ``(kept, held_out)``: sorted ``int64`` index arrays, disjoint, covering all indices.
    """
    n = len(labels)
    if not 0 <= count <= n:
        raise ValueError(f"count must be in 0..{n}; got {count}")
    perm = rng.permutation(n)
    order = perm[np.argsort(labels[perm], kind="stable")]  # grouped by class, random within
    _, starts, sizes = np.unique(labels[order], return_index=True, return_counts=True)
    quota = count * sizes / n if n else sizes.astype(float)
    take = np.floor(quota).astype(np.int64)
    remainder = count - int(take.sum())
    take[np.argsort(-(quota - take), kind="stable")[:remainder]] += 1
    held = np.concatenate(
        [order[start : start + k] for start, k in zip(starts, take, strict=True)]
        + [np.empty(0, dtype=np.int64)]
    )
    mask = np.ones(n, dtype=bool)
    mask[held] = False
    return np.flatnonzero(mask).astype(np.int64), np.sort(held).astype(np.int64)
