"""Per-client DP-SGD plan: σ fixed once from the target ε over all planned training.

Used by the client (to train) and by the preflight (to check the budget before a run).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedsim.config import Config
from fedsim.privacy.accounting import (
    SubsampledGaussian,
    calibrate_noise_multiplier,
    dp_sgd_schedule,
    epsilon,
)


@dataclass(frozen=True)
class DpSgdPlan:
    """How a client with ``num_examples`` examples trains under DP-SGD."""

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    planned_rounds: int

    @property
    def planned_steps(self) -> int:
        """Steps if the client trains in every round."""
        return self.steps_per_round * self.planned_rounds

    def round_event(self) -> SubsampledGaussian:
        """The accounting event of one full local round."""
        return SubsampledGaussian(self.noise_multiplier, self.sample_rate, self.steps_per_round)


def plan_dp_sgd(cfg: Config, num_examples: int) -> DpSgdPlan:
    """σ, q and steps for a client of size ``num_examples`` under ``cfg``.

    With ``dp.epsilon``, σ is calibrated so that training in *every* round spends exactly
    the target (a client sampled less often spends less). With ``dp.noise_multiplier``, σ
    is taken as given.
    """
    schedule = dp_sgd_schedule(num_examples, cfg.client.batch_size)
    steps_per_round = schedule.steps_per_epoch * cfg.client.local_epochs
    if cfg.dp.noise_multiplier is not None:
        sigma = cfg.dp.noise_multiplier
    elif cfg.dp.epsilon is not None:
        sigma = calibrate_noise_multiplier(
            cfg.dp.epsilon,
            cfg.dp.delta,
            schedule.sample_rate,
            steps_per_round * cfg.rounds,
            cfg.dp.accountant,
        )
    else:
        raise ValueError("dp.epsilon or dp.noise_multiplier must be set")
    return DpSgdPlan(sigma, schedule.sample_rate, steps_per_round, cfg.rounds)


def epsilon_after_rounds(
    plan: DpSgdPlan, rounds: int, delta: float, accountant: str = "rdp"
) -> float:
    """ε after ``rounds`` full local rounds under ``plan``."""
    event = SubsampledGaussian(
        plan.noise_multiplier, plan.sample_rate, plan.steps_per_round * rounds
    )
    return epsilon([event], delta, accountant)  # type: ignore[arg-type]
