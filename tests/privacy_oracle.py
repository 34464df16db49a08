"""An independent (ε, δ) oracle for the tests: the worst-case neighbouring pair, computed
directly.

Nothing here uses fedsim's accounting or dp-accounting. For a Gaussian mechanism with
sensitivity-1 (in units of the clipping norm) contributions and noise multiplier σ, a
record that is sampled with probability q gives, per step, the one-dimensional pair

- replace-one: ``P = (1-q)·N(0,σ²) + q·N(+1,σ²)`` vs ``Q = (1-q)·N(0,σ²) + q·N(-1,σ²)``
  (the record's clipped contribution flips from +C to −C);
- add/remove: ``P = (1-q)·N(0,σ²) + q·N(1,σ²)`` vs ``Q = N(0,σ²)``, in both directions.

The privacy loss ``log p(x)/q(x)`` of ``x ~ P`` is discretised on a fine grid, rounded
*up* to multiples of ``h`` (and the mass beyond the grid put at +∞), composed over the
steps by FFT, and ``δ(ε) = E[(1 − e^{ε−L})₊]`` is inverted by bisection. With q = 1 the
pair is a Gaussian shift and :func:`gaussian_shift_epsilon` gives the closed form
``δ(ε) = Φ(−ε/μ + μ/2) − e^ε·Φ(−ε/μ − μ/2)`` (Balle & Wang, ICML 2018).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special, stats


def gaussian_shift_delta(eps: float, mu: float) -> float:
    """δ(ε) of distinguishing N(0,1) from N(μ,1)."""
    return float(
        stats.norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2)
    )


def gaussian_shift_epsilon(mu: float, delta: float) -> float:
    """ε at ``delta`` of distinguishing N(0,1) from N(μ,1) (closed form, bisection)."""
    lo, hi = 0.0, 1.0
    while gaussian_shift_delta(hi, mu) > delta:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if gaussian_shift_delta(mid, mu) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def _loss_pmf(
    sigma: float, q: float, relation: str, direction: int, h: float, upper: bool
) -> tuple[np.ndarray, int, float]:
    """Per-step privacy loss pmf on the grid h·(offset + i), and the mass at +∞.

    ``upper``: round every loss up and put the mass beyond the grid at +∞ (the composed
    δ(ε) is then an upper bound); else round down and drop that mass (a lower bound)."""
    half = 1.0 + 15.0 * sigma
    edges = np.linspace(-half, half, 300_001)
    # component means of P (the distribution x is drawn from) and Q
    if relation == "replace_one":
        p_means, q_means = [(1 - q, 0.0), (q, 1.0)], [(1 - q, 0.0), (q, -1.0)]
    else:
        sub, full = [(1 - q, 0.0), (q, 1.0)], [(1.0, 0.0)]
        p_means, q_means = (sub, full) if direction == 0 else (full, sub)

    def logpdf(x: np.ndarray, comps: Sequence[tuple[float, float]]) -> np.ndarray:
        terms = [math.log(w) + stats.norm.logpdf(x, m, sigma) for w, m in comps if w > 0]
        return special.logsumexp(np.stack(terms), axis=0)

    def cdf(x: np.ndarray, comps: Sequence[tuple[float, float]]) -> np.ndarray:
        return sum(w * stats.norm.cdf(x, m, sigma) for w, m in comps)

    mass = np.diff(cdf(edges, p_means))
    loss_edges = logpdf(edges, p_means) - logpdf(edges, q_means)
    if upper:  # the largest loss within each cell, rounded up
        idx = np.ceil(np.maximum(loss_edges[:-1], loss_edges[1:]) / h).astype(np.int64)
    else:  # the smallest, rounded down
        idx = np.floor(np.minimum(loss_edges[:-1], loss_edges[1:]) / h).astype(np.int64)
    lo = int(idx.min())
    pmf = np.bincount(idx - lo, weights=mass)
    inf_mass = max(float(1.0 - mass.sum()), 0.0) if upper else 0.0
    return pmf, lo, inf_mass


def _pure_pmf(eps: float, h: float, upper: bool) -> tuple[np.ndarray, int]:
    """The privacy loss of an ε-DP mechanism's dominating pair: +ε w.p. e^ε/(1+e^ε), −ε
    otherwise, on the grid (rounded up or down)."""
    p = math.exp(eps) / (1 + math.exp(eps))
    rnd = math.ceil if upper else math.floor
    hi, lo = rnd(eps / h), rnd(-eps / h)
    pmf = np.zeros(hi - lo + 1)
    pmf[0], pmf[-1] = 1 - p, p
    return pmf, lo


def _convolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = 1 << (len(a) + len(b) - 2).bit_length()
    out = np.fft.irfft(np.fft.rfft(a, n) * np.fft.rfft(b, n), n)[: len(a) + len(b) - 1]
    return np.maximum(out, 0.0)


def _power(pmf: np.ndarray, steps: int) -> np.ndarray:
    size = (len(pmf) - 1) * steps + 1
    n = 1 << (size - 1).bit_length()
    return np.maximum(np.fft.irfft(np.fft.rfft(pmf, n) ** steps, n)[:size], 0.0)


Event = tuple[float, float, int] | tuple[str, float, int]


def composed_epsilon(
    events: Sequence[Event],
    delta: float,
    relation: str = "replace_one",
    h: float = 1e-3,
    upper: bool = True,
) -> float:
    """ε at ``delta`` of the composition of ``(σ, q, steps)`` Poisson-subsampled Gaussian
    events and ``("pure", ε, count)`` pure-DP events under ``relation`` (worst direction for
    add/remove): an upper bound of the true ε with ``upper``, a lower bound without (see
    :func:`epsilon_bounds`)."""
    directions = (0,) if relation == "replace_one" else (0, 1)
    best = 0.0
    for d in directions:
        total, offset, alive = np.ones(1), 0, 1.0
        for event in events:
            if event[0] == "pure":  # k ε-DP mechanisms: losses ±ε (randomized response)
                _, eps, count = event
                pmf, lo = _pure_pmf(float(eps), h, upper)
                total = _convolve(total, _power(pmf, int(count)))
                offset += lo * int(count)
                continue
            sigma, q, steps = event  # type: ignore[misc]
            pmf, lo, inf_mass = _loss_pmf(sigma, min(q, 1.0), relation, d, h, upper)
            total = _convolve(total, _power(pmf, steps))
            offset += lo * steps
            alive *= (1.0 - inf_mass) ** steps
        losses = h * (offset + np.arange(len(total)))
        inf_total = 1.0 - alive

        def delta_at(
            eps: float, c: np.ndarray = total, ls: np.ndarray = losses, it: float = inf_total
        ) -> float:
            keep = ls > eps
            return float(np.sum(c[keep] * (1.0 - np.exp(eps - ls[keep])))) + it

        lo_e, hi_e = 0.0, 1.0
        while delta_at(hi_e) > delta:
            hi_e *= 2
        for _ in range(60):
            mid = (lo_e + hi_e) / 2
            if delta_at(mid) > delta:
                lo_e = mid
            else:
                hi_e = mid
        best = max(best, hi_e)
    return best


def epsilon_bounds(
    events: Sequence[Event], delta: float, relation: str = "replace_one"
) -> tuple[float, float]:
    """(lower, upper) bounds of the true ε of ``events``: the loss rounded down and up.

    For a single full-batch event (q = 1) both are the closed form."""
    if len(events) == 1 and events[0][0] != "pure" and float(events[0][1]) >= 1.0:
        sigma, _, steps = events[0]  # type: ignore[misc]
        mu = (2.0 if relation == "replace_one" else 1.0) * math.sqrt(steps) / sigma
        exact = gaussian_shift_epsilon(mu, delta)
        return exact, exact
    low = composed_epsilon(events, delta, relation, upper=False)
    high = composed_epsilon(events, delta, relation, upper=True)
    return low, high
