"""Pure checks of uploaded arrays and of a round's aggregate, before and after the rule.

An upload is aggregated only if it has the global model's keys, and for each array its
shape and dtype, only finite values, and a step ``‖w − g‖₂`` (over all arrays, in float64)
of at most :data:`MAX_STEP_RATIO` × ``max(‖g‖₂, 1)`` from the global model ``g``.

Why a bound on the step, and why this one
-----------------------------------------
Finite is not enough: one finite upload scaled by 1e30 makes FedAvg's mean ~1e29 (and
overflows Krum's float32 squared distances), after which every client trains on garbage,
uploads NaN and is rejected — the run never recovers. The bound is relative to the model
the server just sent, so it needs no configuration and scales with the model: an honest
local round moves the model by a fraction of its norm (SGD steps of a clipped or bounded
gradient), the ``roles.malicious`` ``scale`` attack moves it ``scale`` times that (10 by
default), and 1000 × the model's norm is far beyond both — robust rules (Krum, median,
Bulyan) still see every attack they are evaluated against and reject it themselves. With
the bound, every accepted update has ``‖w‖ ≤ 1001·max(‖g‖, 1)``, so no rule's float32
arithmetic can overflow while ``‖g‖ < 1e15``; an aggregate that is non-finite anyway is
caught by :func:`aggregate_problem` and the round keeps the global model.

This is a sanity bound, not a defence: FedAvg stays non-robust (a client may still
move the mean by up to ``1000‖g‖ / M`` per round); that is what the robust rules are for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

#: An upload whose step from the global model exceeds this many times ``max(‖g‖₂, 1)`` is
#: rejected (see the module docstring).
MAX_STEP_RATIO = 1000.0


def model_norm(arrays: Mapping[str, np.ndarray]) -> float:
    """``‖g‖₂`` over every numeric array, computed in float64.

    >>> model_norm({"a": np.array([3.0]), "b": np.array([[4.0]], np.float32)})
    5.0
    """
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays.values()))


def step_norm(update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """``‖w − g‖₂`` over every array, in float64 (same keys and shapes assumed).

    >>> step_norm({"a": np.array([4.0, 1.0])}, {"a": np.array([1.0, 5.0])})
    5.0
    """
    total = 0.0
    for name, ref in reference.items():
        diff = np.asarray(update[name], dtype=np.float64) - np.asarray(ref, dtype=np.float64)
        total += float(np.sum(np.square(diff)))
    return math.sqrt(total)


def _non_finite(arr: np.ndarray) -> int:
    """How many values of a float or complex array are NaN or infinite (0 otherwise)."""
    if arr.dtype.kind not in "fc":
        return 0
    return int(arr.size - np.count_nonzero(np.isfinite(arr)))


def _array_problem(name: str, arr: np.ndarray, ref: np.ndarray) -> str | None:
    if tuple(arr.shape) != tuple(ref.shape):
        return f"array {name} has shape {tuple(arr.shape)}, expected {tuple(ref.shape)}"
    if arr.dtype != ref.dtype:
        return f"array {name} has dtype {arr.dtype}, expected {ref.dtype}"
    bad = _non_finite(arr)
    return f"array {name} has {bad} non-finite values" if bad else None


def update_problem(
    update: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    reference_norm: float | None = None,
    max_step_ratio: float = MAX_STEP_RATIO,
) -> str | None:
    """Why an upload cannot be aggregated, or ``None`` if it can.

    Parameters
    ----------
    update
        The uploaded arrays by name.
    reference
        The global model the server sent this round (keys, shapes, dtypes, values).
    reference_norm
        ``model_norm(reference)`` if already known (computed otherwise).
    max_step_ratio
        The bound on ``‖update − reference‖₂ / max(‖reference‖₂, 1)``.

    >>> g = {"w": np.ones(2, np.float32)}
    >>> update_problem({"w": np.full(2, 2.0, np.float32)}, g) is None
    True
    >>> update_problem({"w": np.array([1.0, np.nan], np.float32)}, g)
    'array w has 1 non-finite values'
    >>> update_problem({"w": np.ones(2)}, g)
    'array w has dtype float64, expected float32'
    >>> update_problem({"w": np.full(2, 1e30, np.float32)}, g)[:40]
    'update step 1.414e+30 exceeds 1000 × max'
    """
    missing = sorted(set(reference) - set(update))
    extra = sorted(set(update) - set(reference))
    if missing or extra:
        return f"wrong array keys: missing {missing[:3]}, unexpected {extra[:3]}"
    for name, ref in reference.items():
        problem = _array_problem(name, np.asarray(update[name]), np.asarray(ref))
        if problem is not None:
            return problem
    scale = max(model_norm(reference) if reference_norm is None else reference_norm, 1.0)
    step = step_norm(update, reference)
    if not step <= max_step_ratio * scale:  # also catches an overflow to inf
        return (
            f"update step {step:.4g} exceeds {max_step_ratio:g} × max(‖global‖, 1) = "
            f"{max_step_ratio * scale:.4g}"
        )
    return None


def aggregate_problem(
    arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
) -> str | None:
    """Why a rule's aggregate must not become the global model (``None``: it may).

    It must have the global model's keys and shapes and only finite values (the dtype
    is the rule's business).

    >>> aggregate_problem({"w": np.array([1.0, np.inf])}, {"w": np.zeros(2)})
    'the aggregate has 1 non-finite values in w'
    """
    if set(arrays) != set(reference):
        return f"the aggregate has keys {sorted(arrays)[:3]}, expected {sorted(reference)[:3]}"
    for name, ref in reference.items():
        arr = np.asarray(arrays[name])
        if tuple(arr.shape) != tuple(np.shape(ref)):
            return f"the aggregate's {name} has shape {tuple(arr.shape)}"
        bad = _non_finite(arr)
        if bad:
            return f"the aggregate has {bad} non-finite values in {name}"
    return None


def coordinate_median(updates: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The coordinate-wise median of same-shaped updates (Yin et al., ICML 2018), as
    Flower's FedMedian computes it (``np.median`` over the stacked arrays).

    >>> coordinate_median([{"w": np.array([0.0, 9.0])}, {"w": np.array([1.0, 1.0])},
    ...                    {"w": np.array([5.0, 2.0])}])["w"]
    array([1., 2.])
    """
    names = list(updates[0])
    return {k: np.asarray(np.median(np.stack([u[k] for u in updates]), axis=0)) for k in names}
