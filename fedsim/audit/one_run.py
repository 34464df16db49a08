"""ε lower bounds from one training run: Steinke, Nasr & Jagielski (NeurIPS 2023).

Setting ("Privacy auditing with one (1) training run", arXiv:2305.08846): m canaries are
each included in the training data independently with probability ½. From the released
output alone the auditor guesses "in" or "out" for r of them (abstaining on the rest); v
guesses are correct. If the training algorithm is (ε, δ)-DP in each canary, the paper's
main theorem for approximate DP, in its p-value form (arXiv v1, Cor. 5.4), bounds

    P[W ≥ v] ≤ f(v) + 2 m δ · max_{i ∈ {1, …, m}} (f(v − i) − f(v)) / i,
    f(v) = P[Binomial(r, e^ε / (1 + e^ε)) ≥ v],

where W is the number of correct guesses. For δ = 0 this is the plain Binomial tail f(v):
(ε, 0)-DP makes each guess no better than ε-randomized response. The ε lower bound at
confidence 1 − α is the largest ε at which that p-value is still < α — every (ε', δ)-DP
claim with ε' ≤ it is rejected at level α (a claim for a smaller ε' is a stronger claim).
The p-value and its inversion follow the paper's reference procedure (App. D,
``p_value_DP_audit`` and ``get_eps_audit``): the max over i is taken over i ≤ v (for i > v,
f(v − i) = 1 and the ratio only falls), and ε is found by bisection.

The guesses must be a function of the released output only (not of the inclusion bits),
and the number of guesses fixed in advance: choosing it after looking costs a union bound
(:func:`best_guess_bound` applies Bonferroni over its grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit
from scipy.stats import binom

#: Bisection steps of :func:`one_run_lower_bound` (bracket width ≤ 2^-60 of its start).
_BISECTION_STEPS = 60


def _check_counts(correct: int, guesses: int, canaries: int) -> None:
    for name, value in (("correct", correct), ("guesses", guesses), ("canaries", canaries)):
        if isinstance(value, bool) or int(value) != value:
            raise ValueError(f"{name} must be an integer; got {value!r}")
    if not 0 <= correct <= guesses <= canaries:
        raise ValueError(
            "need 0 <= correct <= guesses <= canaries; "
            f"got correct={correct}, guesses={guesses}, canaries={canaries}"
        )


def _check_delta(delta: float) -> None:
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1); got {delta}")


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")


def one_run_p_value(
    correct: int, guesses: int, canaries: int, epsilon: float, delta: float
) -> float:
    """P-value of ``correct`` right guesses out of ``guesses`` under an (ε, δ)-DP null.

    Steinke, Nasr & Jagielski (NeurIPS 2023; arXiv v1 Cor. 5.4 and App. D, see the module
    docstring):
    ``min(1, f(v) + 2 m δ · max_{1 ≤ i ≤ v} (f(v − i) − f(v)) / i)`` with
    ``f(v) = P[Binomial(r, e^ε/(1 + e^ε)) ≥ v]``, m = ``canaries``, r = ``guesses``,
    v = ``correct``.

    Parameters
    ----------
    correct, guesses, canaries
        v, r, m with 0 ≤ v ≤ r ≤ m.
    epsilon
        ε ≥ 0 of the null hypothesis.
    delta
        δ in [0, 1) of the null hypothesis.

    Returns
    -------
    float
        An upper bound on P[W ≥ v] for every (ε, δ)-DP mechanism, in [0, 1].
    """
    _check_counts(correct, guesses, canaries)
    _check_delta(delta)
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0; got {epsilon}")
    return _p_value(int(correct), int(guesses), int(canaries), float(epsilon), float(delta))


def _p_value(v: int, r: int, m: int, epsilon: float, delta: float) -> float:
    q = float(expit(epsilon))  # accuracy of ε-randomized response
    tail = float(binom.sf(v - 1, r, q))  # f(v) = P[Binomial(r, q) ≥ v]
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    i = np.arange(1, v + 1)
    # f(v − i) − f(v) = P[v − i ≤ Binomial(r, q) < v], summed from the top down.
    window = np.cumsum(binom.pmf(v - i, r, q))
    slope = float(np.max(window / i))
    return min(tail + 2 * m * delta * slope, 1.0)


def one_run_lower_bound(
    correct: int,
    guesses: int,
    canaries: int,
    delta: float,
    *,
    confidence: float = 0.95,
) -> float:
    """ε lower bound at ``confidence`` from a one-run audit (Steinke, Nasr & Jagielski 2023).

    Returns the largest ε (to ~1e-9) at which :func:`one_run_p_value` is still below
    ``1 − confidence``: an (ε, δ)-DP mechanism would get ``correct`` or more of the
    ``guesses`` right with probability < 1 − confidence, so every claim (ε', δ) with
    ε' ≤ the returned value is rejected at that confidence. For δ = 0 the p-value is the
    Binomial(r, e^ε/(1+e^ε)) tail; δ > 0 adds the paper's ``2 m δ`` term and can only lower
    the bound.

    Parameters
    ----------
    correct, guesses, canaries
        v correct guesses out of r non-abstentions, m canaries each included independently
        with probability ½; 0 ≤ v ≤ r ≤ m.
    delta
        δ in [0, 1) of the claims being tested.
    confidence
        In (0, 1).

    Returns
    -------
    float
        ε ≥ 0; 0 when not even ε = 0 is rejected.
    """
    _check_counts(correct, guesses, canaries)
    _check_delta(delta)
    _check_confidence(confidence)
    v, r, m = int(correct), int(guesses), int(canaries)
    alpha = 1.0 - confidence

    def rejected(eps: float) -> bool:
        return _p_value(v, r, m, eps, delta) < alpha

    if not rejected(0.0):
        return 0.0
    lo, hi = 0.0, 1.0  # invariant: rejected(lo) and not rejected(hi)
    while rejected(hi):
        lo, hi = hi, 2 * hi
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        if rejected(mid):
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class OneRunAudit:
    """The best one-run bound over a grid of guess counts.

    Attributes
    ----------
    epsilon
        The ε lower bound, at confidence ``confidence`` overall (Bonferroni over the grid).
    k
        Guesses "in" on the k top-scored and "out" on the k bottom-scored canaries gave it.
    guesses, correct
        r = 2k (or m, if 2k > m) and the number v of those that were right.
    canaries
        m.
    confidence
        The overall confidence asked for.
    per_k_confidence
        ``1 − (1 − confidence)/len(grid)``, used for each k.
    """

    epsilon: float
    k: int
    guesses: int
    correct: int
    canaries: int
    confidence: float
    per_k_confidence: float


#: Default grid of r/m (fraction of canaries guessed on); k = round(fraction · m / 2).
DEFAULT_GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def best_guess_bound(
    scores: ArrayLike,
    included: ArrayLike,
    delta: float,
    *,
    ks: Sequence[int] | None = None,
    confidence: float = 0.95,
) -> OneRunAudit:
    """Best :func:`one_run_lower_bound` over top-k / bottom-k guesses for a grid of k.

    For each k the auditor guesses "in" for the k highest-scored canaries and "out" for the
    k lowest-scored (all m, split at the median rank, if 2k ≥ m), and counts correct guesses
    against ``included``. Picking the best k after seeing the outcomes is a multiple
    comparison: each k is evaluated at confidence ``1 − (1 − confidence)/len(ks)``
    (Bonferroni), so the returned bound holds at ``confidence`` overall.

    Parameters
    ----------
    scores
        One score per canary, computed from the released output only; higher means "more
        likely included". Ties are broken by canary index (stable sort).
    included
        The true inclusion bits (each canary included independently with probability ½).
    delta
        δ in [0, 1) of the claims being tested.
    ks
        Distinct positive k's to try; default ``round(f · m / 2)`` for f in
        :data:`DEFAULT_GUESS_FRACTIONS`.
    confidence
        Overall confidence in (0, 1).

    Returns
    -------
    OneRunAudit
        The k with the largest bound (the smallest such k on ties).
    """
    s = np.asarray(scores, dtype=np.float64)
    b = np.asarray(included)
    if s.ndim != 1 or b.shape != s.shape or s.size == 0:
        raise ValueError(
            "scores and included must be non-empty 1-d arrays of one length; "
            f"got shapes {s.shape} and {b.shape}"
        )
    if not np.isin(b, (0, 1)).all():
        raise ValueError("included must hold only 0/1 (or bool) values")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    _check_confidence(confidence)
    m = s.size
    if ks is None:
        grid = sorted({max(1, round(f * m / 2)) for f in DEFAULT_GUESS_FRACTIONS})
    else:
        grid = sorted(set(ks))
        if not grid or any(isinstance(k, bool) or int(k) != k or k < 1 for k in grid):
            raise ValueError(f"ks must be a non-empty sequence of integers >= 1; got {ks!r}")
    per_k = 1.0 - (1.0 - confidence) / len(grid)
    ranked = b[np.argsort(-s, kind="stable")].astype(bool)  # inclusion bits, best score first
    audits = []
    for k in grid:
        top = min(int(k), m // 2 + m % 2)  # guess "in" on these
        bottom = min(int(k), m - top)  # and "out" on these
        correct = int(ranked[:top].sum() + (~ranked[m - bottom :]).sum())
        guesses = top + bottom
        eps = one_run_lower_bound(correct, guesses, m, delta, confidence=per_k)
        audits.append(OneRunAudit(eps, int(k), guesses, correct, m, confidence, per_k))
    return max(audits, key=lambda a: a.epsilon)  # first maximum: the smallest such k
