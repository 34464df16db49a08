"""Privacy profiles of Gaussians: μ-GDP and a pair of Gaussians with unequal variances.

All functions are pure. Probabilities are handled in log space (``scipy.special.log_ndtr``)
so that δ stays accurate when it is far below double-precision resolution of 1 − Φ, i.e.
for large ε. The vectorised ``_log_*`` helpers broadcast over NumPy arrays; the bootstrap of
:mod:`fedsim.audit.one_shot` solves a thousand ε's at once with them.

Notation: the *hockey-stick divergence* of P from Q at ε is
``H_ε(P‖Q) = ∫ (p − e^ε q)_+ = P(S) − e^ε Q(S)`` with ``S = {x : log p(x)/q(x) > ε}``;
a mechanism whose outputs on two neighbouring inputs are P and Q is (ε, δ)-DP for that
pair iff ``max(H_ε(P‖Q), H_ε(Q‖P)) ≤ δ``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import log_ndtr

FloatArray = NDArray[np.float64]

#: Bisection steps of :func:`_smallest_epsilon`; each halves the bracket, so after this many
#: the bracket is at floating-point resolution of any ε the doubling search can reach.
_BISECTION_STEPS = 100
#: ε beyond which the doubling search gives up and reports ``inf``.
_EPSILON_MAX = 1e9


def _log_sub(log_a: FloatArray, log_b: FloatArray) -> FloatArray:
    """``log(exp(log_a) − exp(log_b))``, ``-inf`` where the difference is ≤ 0."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        diff = log_b - log_a
        out = log_a + np.log1p(-np.exp(np.minimum(diff, 0.0)))
    return np.where((diff >= 0) | np.isnan(diff) | np.isneginf(log_a), -np.inf, out)


def _log_gaussian_delta(epsilon: ArrayLike, mu: ArrayLike) -> FloatArray:
    """``log δ(ε)`` of μ-GDP: ``log(Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2))`` (Dong, Roth & Su,
    "Gaussian differential privacy", JRSS-B 2022, Cor. 2.13); ``-inf`` for μ = 0."""
    eps = np.asarray(epsilon, dtype=np.float64)
    m = np.asarray(mu, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = eps / m
        out = _log_sub(log_ndtr(-ratio + m / 2), eps + log_ndtr(-ratio - m / 2))
    return np.where(m == 0, -np.inf, np.where(np.isposinf(eps), -np.inf, out))


def _log_mass_below(t: FloatArray, mean: FloatArray, std: FloatArray) -> FloatArray:
    return np.asarray(log_ndtr((t - mean) / std))


def _log_mass_above(t: FloatArray, mean: FloatArray, std: FloatArray) -> FloatArray:
    return np.asarray(log_ndtr((mean - t) / std))


def _log_mass_between(
    lo: FloatArray, hi: FloatArray, mean: FloatArray, std: FloatArray
) -> FloatArray:
    """``log P(lo < X < hi)`` for X ~ N(mean, std²), differencing whichever tails are small."""
    upper = _log_sub(_log_mass_above(lo, mean, std), _log_mass_above(hi, mean, std))
    lower = _log_sub(_log_mass_below(hi, mean, std), _log_mass_below(lo, mean, std))
    return np.where(lo > mean, upper, lower)


def _log_hockey_stick(
    mean_p: ArrayLike,
    std_p: ArrayLike,
    mean_q: ArrayLike,
    std_q: ArrayLike,
    epsilon: ArrayLike,
) -> FloatArray:
    """``log H_ε(P‖Q)`` for P = N(mean_p, std_p²), Q = N(mean_q, std_q²), broadcasting.

    The privacy loss ``L(x) = log p(x)/q(x) = A x² + B x + C`` with
    ``A = 1/(2 std_q²) − 1/(2 std_p²)``, ``B = mean_p/std_p² − mean_q/std_q²`` and
    ``C = log(std_q/std_p) − mean_p²/(2 std_p²) + mean_q²/(2 std_q²)``. The set
    ``S = {L > ε}`` is a half-line (A = 0), the complement of an interval (A > 0) or an
    interval (A < 0); its end points are the roots of ``A x² + B x + C − ε``, taken with
    the cancellation-free form of the quadratic formula so that nearly equal variances
    (A → 0) are continuous with the linear case. P(S) and Q(S) are exact normal masses.
    """
    mp, sp, mq, sq, eps = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (mean_p, std_p, mean_q, std_q, epsilon))
    )
    a = 0.5 / sq**2 - 0.5 / sp**2
    b = mp / sp**2 - mq / sq**2
    c = np.log(sq / sp) - mp**2 / (2 * sp**2) + mq**2 / (2 * sq**2) - eps
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # Linear case (equal variances): S = (t, ∞) if B > 0, (−∞, t) if B < 0.
        t = -c / b
        lin_p = np.where(b > 0, _log_mass_above(t, mp, sp), _log_mass_below(t, mp, sp))
        lin_q = np.where(b > 0, _log_mass_above(t, mq, sq), _log_mass_below(t, mq, sq))
        # Quadratic case.
        disc = b**2 - 4 * a * c
        root = np.sqrt(np.maximum(disc, 0.0))
        half = -(b + np.where(b >= 0, root, -root)) / 2
        r1, r2 = half / a, c / half
        lo, hi = np.minimum(r1, r2), np.maximum(r1, r2)
        outside_p = np.logaddexp(_log_mass_below(lo, mp, sp), _log_mass_above(hi, mp, sp))
        outside_q = np.logaddexp(_log_mass_below(lo, mq, sq), _log_mass_above(hi, mq, sq))
        inside_p = _log_mass_between(lo, hi, mp, sp)
        inside_q = _log_mass_between(lo, hi, mq, sq)
        quad_p = np.where(a > 0, outside_p, inside_p)
        quad_q = np.where(a > 0, outside_q, inside_q)
        log_p = np.where(a == 0, lin_p, quad_p)
        log_q = np.where(a == 0, lin_q, quad_q)
        out = _log_sub(log_p, eps + log_q)
    # S is empty (or P = Q): no divergence. For A > 0 and disc ≤ 0, S would be all of ℝ,
    # which is impossible for ε ≥ 0 (it would need 1 > e^ε); δ = 0 there as well.
    empty = np.where(a == 0, b == 0, disc <= 0)
    return np.where(empty | np.isposinf(eps), -np.inf, out)


def _smallest_epsilon(
    log_delta_at: Callable[[FloatArray], FloatArray], delta: FloatArray
) -> FloatArray:
    """Smallest ε ≥ 0 with ``log_delta_at(ε) ≤ log δ`` (elementwise), for a δ(ε) that is
    non-increasing in ε; ``inf`` where even ε = 1e9 does not reach δ.

    Bisection (not Brent) because ``log_delta_at`` may be ``-inf`` on part of the bracket;
    the returned value is the upper end of the final bracket, i.e. one at which δ(ε) ≤ δ
    does hold.
    """
    target = np.log(delta)
    lo = np.zeros_like(target)
    hi = np.ones_like(target)
    done = log_delta_at(lo) <= target
    # Grow hi until δ(hi) ≤ δ everywhere (or the cap is passed).
    while True:
        above = (log_delta_at(hi) > target) & ~done
        if not above.any() or hi[above].min() > _EPSILON_MAX:
            break
        lo = np.where(above, hi, lo)
        hi = np.where(above, hi * 2, hi)
    unreachable = (log_delta_at(hi) > target) & ~done
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        too_small = log_delta_at(mid) > target
        lo = np.where(too_small, mid, lo)
        hi = np.where(too_small, hi, mid)
    return np.where(done, 0.0, np.where(unreachable, np.inf, hi))


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1); got {delta}")


def gaussian_delta(epsilon: float, mu: float) -> float:
    """δ(ε) of μ-Gaussian DP: ``Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2)``.

    This is the hockey-stick divergence between N(μ, 1) and N(0, 1) (Balle & Wang, ICML
    2018, Thm. 8; Dong, Roth & Su, JRSS-B 2022, Cor. 2.13), computed as
    ``exp(log Φ(a) + log1p(−e^{ε + log Φ(b) − log Φ(a)}))`` so that it keeps its relative
    accuracy for large ε where both terms are tiny and nearly equal.

    Parameters
    ----------
    epsilon
        ε ≥ 0 (``inf`` gives 0).
    mu
        μ ≥ 0, the mean shift in units of the noise standard deviation (``inf`` gives 1).

    Returns
    -------
    float
        δ in [0, 1].
    """
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0; got {epsilon}")
    if not mu >= 0:
        raise ValueError(f"mu must be >= 0; got {mu}")
    if math.isinf(mu):
        return 0.0 if math.isinf(epsilon) else 1.0
    return float(np.exp(_log_gaussian_delta(epsilon, mu)))


def gaussian_epsilon(mu: float, delta: float) -> float:
    """Smallest ε ≥ 0 such that μ-GDP implies (ε, δ)-DP: the inverse of :func:`gaussian_delta`.

    Parameters
    ----------
    mu
        μ ≥ 0; ``inf`` gives ``inf``.
    delta
        δ in (0, 1).

    Returns
    -------
    float
        0 when ``gaussian_delta(0, mu) ≤ delta`` (in particular for μ = 0), else the root of
        ``gaussian_delta(ε, mu) = delta`` found by bisection in log δ to floating-point
        resolution; ``inf`` for μ = ∞ (and for ε beyond 1e9).
    """
    _check_delta(delta)
    if not mu >= 0:
        raise ValueError(f"mu must be >= 0; got {mu}")
    if math.isinf(mu):
        return math.inf
    m = np.float64(mu)
    out = _smallest_epsilon(lambda e: _log_gaussian_delta(e, m), np.asarray(delta, float))
    return float(out)


def epsilon_between_gaussians(
    mean0: float, std0: float, mean1: float, std1: float, delta: float
) -> float:
    """ε at δ for distinguishing N(mean0, std0²) from N(mean1, std1²), in both directions.

    Returns the smallest ε ≥ 0 with ``max(H_ε(P0‖P1), H_ε(P1‖P0)) ≤ δ``: the privacy of a
    mechanism whose output on two neighbouring inputs is P0 or P1. Variances may differ; the
    privacy loss is then quadratic in x, and each divergence is computed exactly from normal
    tail masses of the interval(s) where the likelihood ratio exceeds e^ε (see
    ``_log_hockey_stick``). With equal variances this is ``gaussian_epsilon(|mean1 −
    mean0|/std, delta)``. This is the ε of "the Gaussian pair" that Andrew et al. (ICLR 2024,
    "One-shot empirical privacy estimation for federated learning") report.

    Parameters
    ----------
    mean0, std0, mean1, std1
        The two Gaussians; standard deviations must be finite and > 0.
    delta
        δ in (0, 1).

    Returns
    -------
    float
        ε ≥ 0, or ``inf`` if no ε ≤ 1e9 suffices.
    """
    _check_delta(delta)
    for name, value in (("std0", std0), ("std1", std1)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be finite and > 0; got {value}")
    for name, value in (("mean0", mean0), ("mean1", mean1)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite; got {value}")
    return float(_epsilon_between_gaussians(mean0, std0, mean1, std1, delta))


def _epsilon_between_gaussians(
    mean0: ArrayLike, std0: ArrayLike, mean1: ArrayLike, std1: ArrayLike, delta: float
) -> FloatArray:
    """Vectorised :func:`epsilon_between_gaussians` without input checks."""

    def log_delta_at(eps: FloatArray) -> FloatArray:
        return np.maximum(
            _log_hockey_stick(mean0, std0, mean1, std1, eps),
            _log_hockey_stick(mean1, std1, mean0, std0, eps),
        )

    shape = np.broadcast_shapes(np.shape(mean0), np.shape(std0), np.shape(mean1), np.shape(std1))
    return _smallest_epsilon(log_delta_at, np.full(shape, delta, dtype=np.float64))
