"""Pure privacy-accounting math over DP events (dp-accounting's RDP or PLD accountant).

fedsim accounts each client's privacy with Google's ``dp-accounting`` library: DP-SGD
steps are Poisson-subsampled Gaussian events, valuation releases are Laplace events, and
other pure ε-DP mechanisms (SecProbe's exponential-mechanism selection, the functional
mechanism) are generic :class:`PureDp` events. The functions here are side-effect free;
:mod:`fedsim.privacy.ledger` holds the events.

Opacus' Poisson data loader uses sampling rate ``q = 1 / ceil(n / B)`` and runs
``ceil(n / B)`` steps per epoch; :func:`dp_sgd_schedule` mirrors exactly that so that the
noise calibrated here is the noise Opacus' accounting would assume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import dp_accounting
from dp_accounting import pld, rdp

AccountantName = Literal["rdp", "pld"]

#: RDP orders. Fractional orders below 2 make dp-accounting's subsampled-Gaussian series
#: fail to converge (it then drops them with a warning); they only tighten very large ε
#: (> ~20), so we leave them out: ε there is slightly conservative, never optimistic.
_RDP_ORDERS = (2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 4.5, *range(5, 64), 64, 80, 96, 128, 256, 512)


@dataclass(frozen=True)
class SubsampledGaussian:
    """``steps`` DP-SGD steps with Poisson sampling rate ``sample_rate`` and noise σ."""

    noise_multiplier: float
    sample_rate: float
    steps: int


@dataclass(frozen=True)
class LaplaceRelease:
    """``count`` releases with the Laplace mechanism, each ``epsilon``-DP (scale = Δ/ε)."""

    epsilon: float
    count: int = 1


@dataclass(frozen=True)
class PureDp:
    """``count`` runs of a pure ``epsilon``-DP mechanism that is not Laplace.

    For the RDP accountant an ε-DP mechanism is ``ε²/2``-zCDP (Bun & Steinke, TCC 2016,
    Prop. 1.4), i.e. RDP ``α·ε²/2`` at every order α; the PLD accountant has no generic
    pure-DP event, so there such events compose basically (their ε's add up).
    """

    epsilon: float
    count: int = 1


DpEvent = SubsampledGaussian | LaplaceRelease | PureDp


@dataclass(frozen=True)
class DpSgdSchedule:
    """What one client's local training looks like to the accountant."""

    sample_rate: float
    steps_per_epoch: int


def dp_sgd_schedule(num_examples: int, batch_size: int) -> DpSgdSchedule:
    """Sampling rate and steps per epoch of Opacus' Poisson loader for ``n`` examples.

    >>> dp_sgd_schedule(100, 32)
    DpSgdSchedule(sample_rate=0.25, steps_per_epoch=4)
    """
    if num_examples < 1 or batch_size < 1:
        raise ValueError(
            f"need num_examples >= 1 and batch_size >= 1; got {num_examples}, {batch_size}"
        )
    batches = math.ceil(num_examples / batch_size)
    return DpSgdSchedule(sample_rate=1.0 / batches, steps_per_epoch=batches)


def _to_dp_event(event: DpEvent) -> tuple[dp_accounting.DpEvent, int]:
    if isinstance(event, SubsampledGaussian):
        inner = dp_accounting.GaussianDpEvent(event.noise_multiplier)
        if event.sample_rate < 1.0:
            return dp_accounting.PoissonSampledDpEvent(event.sample_rate, inner), event.steps
        return inner, event.steps
    if isinstance(event, PureDp):
        return dp_accounting.ZCDpEvent(rho=event.epsilon**2 / 2.0), event.count
    # Laplace with scale b and sensitivity Δ is (Δ/b)-DP; dp-accounting's parameter is b/Δ.
    return dp_accounting.LaplaceDpEvent(1.0 / event.epsilon), event.count


def epsilon(events: Sequence[DpEvent], delta: float, accountant: AccountantName = "rdp") -> float:
    """ε of the composition of ``events`` at ``delta`` (0.0 for no events).

    Pure ε-DP events (Laplace releases, :class:`PureDp`) are also composed basically (ε of
    the Gaussian part plus the sum of the pure ε's); the smaller of that and the
    accountant's bound is returned — both are valid (ε, δ) bounds, and for a few pure
    releases RDP is the looser one. Under PLD, :class:`PureDp` events compose basically only.
    """
    active = [e for e in events if (e.steps if isinstance(e, SubsampledGaussian) else e.count)]
    if not active:
        return 0.0
    pure = [e for e in active if not isinstance(e, SubsampledGaussian)]
    supported = accountant == "rdp" or not any(isinstance(e, PureDp) for e in active)
    composed = _accountant_epsilon(active, delta, accountant) if supported else math.inf
    if not pure:
        return composed
    gaussian = [e for e in active if isinstance(e, SubsampledGaussian)]
    basic = sum(e.epsilon * e.count for e in pure)
    if gaussian:
        basic += _accountant_epsilon(gaussian, delta, accountant)
    return min(composed, basic)


def _accountant_epsilon(
    active: Sequence[DpEvent], delta: float, accountant: AccountantName
) -> float:
    acc: dp_accounting.PrivacyAccountant
    if accountant == "rdp":
        acc = rdp.RdpAccountant(orders=list(_RDP_ORDERS))
    else:
        acc = pld.PLDAccountant(value_discretization_interval=1e-3)
    for e in active:
        dp_event, count = _to_dp_event(e)
        acc.compose(dp_event, count)
    return float(acc.get_epsilon(delta))


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: AccountantName = "rdp",
    *,
    rel_tol: float = 1e-3,
    sigma_max: float = 1e4,
) -> float:
    """Smallest σ (to ``rel_tol``) such that ``steps`` DP-SGD steps spend ``target_epsilon``.

    Raises
    ------
    ValueError
        If even ``sigma_max`` cannot meet the target.
    """
    if target_epsilon <= 0:
        raise ValueError(f"target_epsilon must be > 0; got {target_epsilon}")

    def eps_at(sigma: float) -> float:
        return epsilon([SubsampledGaussian(sigma, sample_rate, steps)], delta, accountant)

    lo, hi = 0.0, 1.0
    while eps_at(hi) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > sigma_max:
            raise ValueError(
                f"no noise multiplier <= {sigma_max} reaches epsilon {target_epsilon} "
                f"(sample rate {sample_rate}, {steps} steps, delta {delta})"
            )
    while hi - lo > rel_tol * hi:
        mid = (lo + hi) / 2
        if eps_at(mid) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi
