"""Per-client DP-SGD plan: σ fixed once from the target ε over all planned training.

Used by the client (to train) and by the preflight (to check the budget before a run).

Under ``dp.neighbouring: replace_one`` the plan follows the client's real size ``n``
(public under that relation), exactly as Opacus' Poisson loader does. Under
``add_remove`` it follows the public ``dp.size_bound`` instead — the sampling rate, the
number of steps, σ and the normaliser of the noisy gradient sum (the expected batch size)
are then the same for every client, so nothing the client reveals depends on its size.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedsim.config import Config
from fedsim.privacy.accounting import Accounting, SubsampledGaussian, dp_sgd_schedule

#: Most DP-SGD steps one client may be planned for over a run. The accountant's work
#: grows with the step count (calibrating ε = 4 at q = 1/15 takes ~0.4 s for 30,000 steps,
#: ~2 s for 300,000 and ~30 s for 3,000,000); the quickstart plans 240 steps, the
#: clipping study 160. The preflight refuses plans above it.
MAX_DP_SGD_STEPS = 1_000_000


@dataclass(frozen=True)
class DpSgdPlan:
    """How a client with ``num_examples`` examples trains under DP-SGD."""

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    planned_rounds: int
    #: Public normaliser of the noisy gradient sum (``add_remove``: from the size bound);
    #: ``None``: Opacus' own, ``n · q`` (public under replace-one).
    expected_batch_size: int | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Steps of one local epoch (``1/sample_rate``)."""
        return round(1.0 / self.sample_rate)

    @property
    def planned_steps(self) -> int:
        """Steps if the client trains in every round."""
        return self.steps_per_round * self.planned_rounds

    def round_event(self) -> SubsampledGaussian:
        """The accounting event of one full local round."""
        return SubsampledGaussian(self.noise_multiplier, self.sample_rate, self.steps_per_round)


def _planned_size(cfg: Config, num_examples: int) -> int:
    """The size the schedule follows: ``dp.size_bound`` under add/remove, else ``n``."""
    hidden = cfg.dp.neighbouring == "add_remove" and cfg.dp.size_bound is not None
    return cfg.dp.size_bound if hidden and cfg.dp.size_bound else num_examples


def planned_dp_sgd_steps(cfg: Config, num_examples: int) -> int:
    """DP-SGD steps of a client of size ``num_examples`` that trains in every round.

    >>> from fedsim.config import from_dict
    >>> planned_dp_sgd_steps(from_dict({"rounds": 8, "dp": {"epsilon": 4}}), 942)
    120
    """
    schedule = dp_sgd_schedule(_planned_size(cfg, num_examples), cfg.client.batch_size)
    return steps_per_round(cfg, schedule.steps_per_epoch) * cfg.rounds


def steps_per_round(cfg: Config, steps_per_epoch: int) -> int:
    """``client.local_steps``, or ``client.local_epochs`` epochs of ``steps_per_epoch``."""
    if cfg.client.local_steps is not None:
        return cfg.client.local_steps
    return steps_per_epoch * cfg.client.local_epochs


def plan_dp_sgd(cfg: Config, num_examples: int, noise_multiplier: float | None = None) -> DpSgdPlan:
    """σ, q and steps for a client of size ``num_examples`` under ``cfg``.

    With ``dp.epsilon``, σ is calibrated so that training in *every* round spends exactly
    the target (a client sampled less often spends less). With ``dp.noise_multiplier``, σ
    is taken as given. Under ``add_remove`` ``num_examples`` is not used: the schedule
    comes from ``dp.size_bound``.

    ``noise_multiplier`` is the client's σ when it is already fixed (its ledger carries it
    from its first round): the plan then takes it as is and skips the calibration, a
    binary search over the accountant (~0.3–0.6 s for the quickstart) that would otherwise
    run again in every round of a ClientApp process started afresh.
    """
    hidden = cfg.dp.neighbouring == "add_remove" and cfg.dp.size_bound is not None
    planned_size = _planned_size(cfg, num_examples)
    schedule = dp_sgd_schedule(planned_size, cfg.client.batch_size)
    round_steps = steps_per_round(cfg, schedule.steps_per_epoch)
    if noise_multiplier is not None:
        sigma = noise_multiplier
    elif cfg.dp.noise_multiplier is not None:
        sigma = cfg.dp.noise_multiplier
    elif cfg.dp.epsilon is not None:
        sigma = Accounting.of(cfg.dp).calibrate(
            cfg.dp.epsilon, schedule.sample_rate, round_steps * cfg.rounds
        )
    else:
        raise ValueError("dp.epsilon or dp.noise_multiplier must be set")
    expected = int(planned_size * schedule.sample_rate) if hidden else None
    return DpSgdPlan(sigma, schedule.sample_rate, round_steps, cfg.rounds, expected)


def epsilon_after_rounds(plan: DpSgdPlan, rounds: int, accounting: Accounting) -> float:
    """ε after ``rounds`` full local rounds under ``plan``."""
    event = SubsampledGaussian(
        plan.noise_multiplier, plan.sample_rate, plan.steps_per_round * rounds
    )
    return accounting.epsilon([event])
