"""Central (user-level) DP of the whole federation: the plan, the release and its events.

With ``dp.mode: central`` (DP-FedAvg, McMahan et al., "Learning Differentially Private
Recurrent Language Models", ICLR 2018) every client is sampled into a round
*independently* with probability q = m / N (m = ``strategy.clients_per_round``, N =
``data.num_clients``; Poisson sampling, so the cohort size varies), the server clips each
sampled client's model update to L2 norm C = ``dp.max_grad_norm`` and releases

    global + (Σ clipped updates + N(0, σ²C²·I)) / m

with the *fixed, public* denominator m — not the number of updates that arrived. One
round is then the Poisson-subsampled Gaussian mechanism on the sum, with one client's
whole update as the unit of privacy:

- ``dp.neighbouring: add_remove`` — a client is present or absent: the sum moves by at
  most C, noise σC: ``SubsampledGaussian(σ, q)`` under add/remove;
- ``replace_one`` (default) — a client's data is replaced by anything: the client's
  clipped update can flip from +C to −C (the sum moves by up to 2C); dp-accounting's
  replace-one PLD analyses exactly that pair.

A round in which fewer updates arrive than were sampled (a failure, a rejected reply) or
none at all is the same mechanism — the noise and the denominator do not change — so it
is accounted as one full event. The release is computed by :func:`central_release`, a
pure function; :mod:`strategies.central_dp` is the stateful shell.

The guarantee covers what the coordinator *releases* (the sequence of global models and
anything computed from them); the coordinator itself sees every raw update and must be
trusted. Amplification by sampling assumes the cohorts are secret: the coordinator
draws them (and the noise) from OS entropy in deployment, and from the root seed only in
``fedsim run`` simulations, whose ε therefore assumes the seed is kept secret.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedsim.config import Config
from fedsim.privacy.accounting import Accounting, SubsampledGaussian

#: Draws Gaussian noise of a given shape and standard deviation.
NormalSampler = Callable[[tuple[int, ...], float], np.ndarray]


@dataclass(frozen=True)
class CentralDpPlan:
    """σ, cohort sampling rate and release denominator of a central-DP run."""

    noise_multiplier: float
    sample_rate: float
    clients_per_round: int
    clipping_norm: float
    planned_rounds: int

    @property
    def noise_std(self) -> float:
        """Std of the Gaussian noise added to the *sum* of the clipped updates (σ·C)."""
        return self.noise_multiplier * self.clipping_norm

    @property
    def denominator(self) -> int:
        """The fixed, public denominator m of the release."""
        return self.clients_per_round

    def round_event(self) -> SubsampledGaussian:
        """The accounting event of one release (however many updates arrived)."""
        return SubsampledGaussian(self.noise_multiplier, self.sample_rate, 1)


def plan_central_dp(cfg: Config) -> CentralDpPlan:
    """σ for ``cfg``: ``dp.noise_multiplier``, or calibrated so that all planned rounds
    spend exactly ``dp.epsilon`` (at ``dp.delta``, cohort rate q = m / N, under
    ``dp.neighbouring``).

    Raises
    ------
    ValueError
        If the target ε cannot be reached.
    """
    m = cfg.clients_per_round
    q = m / cfg.data.num_clients
    if cfg.dp.noise_multiplier is not None:
        sigma = cfg.dp.noise_multiplier
    elif cfg.dp.epsilon is not None:
        sigma = Accounting.of(cfg.dp).calibrate(cfg.dp.epsilon, q, cfg.rounds)
    else:
        raise ValueError("dp.epsilon or dp.noise_multiplier must be set")
    return CentralDpPlan(sigma, q, m, cfg.dp.max_grad_norm, cfg.rounds)


def central_epsilon(plan: CentralDpPlan, rounds: int, accounting: Accounting) -> float:
    """ε after ``rounds`` releases."""
    return accounting.epsilon([SubsampledGaussian(plan.noise_multiplier, plan.sample_rate, rounds)])


def clip_update(
    update: Mapping[str, np.ndarray], norm: float
) -> tuple[dict[str, np.ndarray], float]:
    """``update`` scaled to L2 norm at most ``norm`` (over all floating arrays together),
    and its norm before clipping. Arrays are returned as float64."""
    total = float(
        np.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in update.values()))
    )
    factor = 1.0 if total <= norm else norm / total
    return {k: np.asarray(a, dtype=np.float64) * factor for k, a in update.items()}, total


def central_release(
    global_arrays: Mapping[str, np.ndarray],
    client_arrays: Sequence[Mapping[str, np.ndarray]],
    plan: CentralDpPlan,
    normal: NormalSampler,
) -> dict[str, np.ndarray]:
    """The released model: ``global + (Σ clip(client − global) + N(0, (σC)²)) / m``.

    Only floating-point arrays are updated (others keep the global value). Every
    ``client_arrays`` entry must have the global model's keys and shapes (screened before).
    ``normal(shape, std)`` draws the noise (seeded in simulation, secret in deployment).
    """
    floating = [k for k, a in global_arrays.items() if np.issubdtype(a.dtype, np.floating)]
    total = {k: np.zeros(global_arrays[k].shape, dtype=np.float64) for k in floating}
    for arrays in client_arrays:
        update = {k: np.asarray(arrays[k], np.float64) - global_arrays[k] for k in floating}
        clipped, _ = clip_update(update, plan.clipping_norm)
        for k in floating:
            total[k] += clipped[k]
    out = {k: np.array(a, copy=True) for k, a in global_arrays.items()}
    for k in floating:
        noisy = total[k] + normal(total[k].shape, plan.noise_std)
        out[k] = (global_arrays[k] + noisy / plan.denominator).astype(global_arrays[k].dtype)
    return out
