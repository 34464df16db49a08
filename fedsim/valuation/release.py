"""DP release of a client's data valuation: clipped statistics + Laplace noise.

A client summarises its per-sample scores (VoG, PLIS, loss, gradient norm) by their mean
— and, for VoG, their variance — and releases that summary with the Laplace mechanism.
Min-max normalised scores are never released: normalisation makes every value depend on
the extreme samples, so its sensitivity is unbounded. Raw scores are clipped to the fixed
interval ``[0, B]`` instead.

Neighbouring relation
---------------------
fedsim's DP-SGD (Opacus, Poisson sampling) is accounted under *add/remove one sample*.
The release uses the same relation, so that both kinds of event compose in one ledger.
Under add/remove the client's size ``n`` is itself private, and a clipped mean
``Σ s_i / n`` divided by the true ``n`` is not ε-DP for any finite ε (the output scale
changes with ``n``). The client therefore releases three noisy sums, each a Laplace
mechanism at its own sensitivity,

===========  ====================  ================
query        add/remove Δ          share of ε
===========  ====================  ================
count n      1                     :data:`COUNT_SHARE`
Σ c_i        B                     rest × (1 − variance_share)
Σ c_i²       B²  (VoG only)        rest × variance_share
===========  ====================  ================

with ``c_i = clip(s_i, 0, B)``, and derives ``mean = Σ̃c / max(ñ, 1)`` and
``variance = Σ̃c² / max(ñ, 1) − mean²`` by post-processing (clipped to ``[0, B]`` and
``[0, B²/4]``, the ranges of the true values). The total is ε-DP by basic composition
(ε = Σ shares); each query enters the client's ledger as its own
:class:`~fedsim.privacy.LaplaceRelease`, composed with DP-SGD by dp-accounting.

(The client's reply also carries ``num-examples`` in the clear for FedAvg's weighting —
a pre-existing disclosure of ``n`` by the FL protocol; the valuation release does not
rely on it.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.privacy import LaplaceRelease

#: Share of a release's ε spent on the noisy count.
COUNT_SHARE = 0.2


@dataclass(frozen=True)
class ReleasePlan:
    """How one release spends its ε (see the module docstring).

    Attributes
    ----------
    bound
        Scores are clipped to ``[0, bound]``.
    epsilon_count, epsilon_sum, epsilon_sumsq
        ε of each Laplace query (``epsilon_sumsq`` is 0 without a variance).
    """

    bound: float
    epsilon_count: float
    epsilon_sum: float
    epsilon_sumsq: float = 0.0

    @property
    def epsilon(self) -> float:
        """ε of the whole release (basic composition of its queries)."""
        return self.epsilon_count + self.epsilon_sum + self.epsilon_sumsq

    @property
    def with_variance(self) -> bool:
        """Whether the release includes the variance."""
        return self.epsilon_sumsq > 0

    def scales(self) -> tuple[float, float, float]:
        """Laplace scales ``Δ/ε`` of the count, sum and sum of squares (0: not released)."""
        b = self.bound
        sq = b * b / self.epsilon_sumsq if self.with_variance else 0.0
        return 1.0 / self.epsilon_count, b / self.epsilon_sum, sq

    def events(self) -> tuple[LaplaceRelease, ...]:
        """The ledger events of one release."""
        eps = [self.epsilon_count, self.epsilon_sum]
        if self.with_variance:
            eps.append(self.epsilon_sumsq)
        return tuple(LaplaceRelease(e) for e in eps)


def plan_release(
    epsilon: float, bound: float, with_variance: bool, variance_share: float = 0.3
) -> ReleasePlan:
    """Split ``epsilon`` over the count, the sum and (optionally) the sum of squares.

    >>> plan_release(1.0, 2.0, with_variance=False)
    ReleasePlan(bound=2.0, epsilon_count=0.2, epsilon_sum=0.8, epsilon_sumsq=0.0)
    """
    if epsilon <= 0 or bound <= 0:
        raise ValueError(f"epsilon and bound must be > 0; got {epsilon}, {bound}")
    if not 0 < variance_share < 1:
        raise ValueError(f"variance_share must be in (0, 1); got {variance_share}")
    eps_count = COUNT_SHARE * epsilon
    rest = epsilon - eps_count
    if not with_variance:
        return ReleasePlan(bound, eps_count, rest)
    return ReleasePlan(bound, eps_count, rest * (1 - variance_share), rest * variance_share)


@dataclass(frozen=True)
class ReleasedValuation:
    """What a client discloses about its data in one round (all values are DP)."""

    mean: float
    variance: float | None
    noisy_count: float
    epsilon: float


def clipped_stats(scores: np.ndarray, bound: float) -> tuple[int, float, float]:
    """Exact ``(n, Σ c_i, Σ c_i²)`` of scores clipped to ``[0, bound]`` (NaN counts as B)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    c = np.clip(np.nan_to_num(s, nan=bound, posinf=bound, neginf=0.0), 0.0, bound)
    return len(c), float(c.sum()), float((c * c).sum())


def release_valuation(
    scores: np.ndarray, plan: ReleasePlan, rng: np.random.Generator
) -> ReleasedValuation:
    """DP mean (and variance) of ``scores`` clipped to ``[0, plan.bound]``.

    ``rng`` draws the Laplace noise; pass a generator seeded per client and round.
    """
    n, total, total_sq = clipped_stats(scores, plan.bound)
    s_count, s_sum, s_sq = plan.scales()
    noisy_n = n + rng.laplace(0.0, s_count)
    noisy_sum = total + rng.laplace(0.0, s_sum)
    denom = max(noisy_n, 1.0)
    b = plan.bound
    mean = float(np.clip(noisy_sum / denom, 0.0, b))
    variance = None
    if plan.with_variance:
        noisy_sq = total_sq + rng.laplace(0.0, s_sq)
        variance = float(np.clip(noisy_sq / denom - mean * mean, 0.0, b * b / 4))
    return ReleasedValuation(
        mean=mean, variance=variance, noisy_count=float(noisy_n), epsilon=plan.epsilon
    )


def is_release_round(server_round: int, release_rounds: tuple[int, ...] | None) -> bool:
    """Whether a client that trains in ``server_round`` releases its valuation."""
    return release_rounds is None or server_round in release_rounds
