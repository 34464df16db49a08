"""Central (user-level) DP of the whole federation: σ, and the events of each round.

With ``dp.mode: central`` the server clips every client's model update to L2 norm
C = ``dp.max_grad_norm``, averages the m = ``clients_per_round`` clipped updates uniformly
and adds Gaussian noise of std σ·C/m to the mean (McMahan et al., "Learning
Differentially Private Recurrent Language Models", ICLR 2018; Flower's
``DifferentialPrivacyServerSideFixedClipping``). Adding or removing one client changes
the *sum* of clipped updates by at most C, and the sum carries noise σ·C: one round is a
Gaussian mechanism with noise multiplier σ on a cohort sampled with rate
q = m / ``data.num_clients``. ε is therefore user-level (it protects a whole client's
data) and holds for the federation as a whole, not for one client.

When only k < m updates of a round are aggregated (a failed or rejected client), the
mean is taken over k while the noise stays σ·C/m, so that round is accounted with the
smaller multiplier σ·k/m. The accountant treats the cohort as Poisson-sampled with rate
q (fedsim samples exactly m clients without replacement; the Poisson analysis is the
usual approximation of DP-FedAvg papers); with every client in every round (q = 1) there
is no amplification and no approximation.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedsim.config import Config
from fedsim.privacy.accounting import SubsampledGaussian, calibrate_noise_multiplier, epsilon


@dataclass(frozen=True)
class CentralDpPlan:
    """σ and cohort sampling rate of a central-DP run."""

    noise_multiplier: float
    sample_rate: float
    clients_per_round: int
    clipping_norm: float
    planned_rounds: int

    @property
    def noise_std(self) -> float:
        """Std of the Gaussian noise added to the mean of the clipped updates."""
        return self.noise_multiplier * self.clipping_norm / self.clients_per_round

    def round_event(self, aggregated: int) -> SubsampledGaussian:
        """The accounting event of one round whose mean was taken over ``aggregated``.

        Raises
        ------
        ValueError
            If ``aggregated`` is not in ``1..clients_per_round``.
        """
        if not 1 <= aggregated <= self.clients_per_round:
            raise ValueError(
                f"aggregated updates must be in 1..{self.clients_per_round}; got {aggregated}"
            )
        sigma = self.noise_multiplier * aggregated / self.clients_per_round
        return SubsampledGaussian(sigma, self.sample_rate, 1)


def plan_central_dp(cfg: Config) -> CentralDpPlan:
    """σ for ``cfg``: ``dp.noise_multiplier``, or calibrated so that all planned rounds
    spend exactly ``dp.epsilon`` (at ``dp.delta``, cohort rate q = m / N).

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
        sigma = calibrate_noise_multiplier(
            cfg.dp.epsilon, cfg.dp.delta, q, cfg.rounds, cfg.dp.accountant
        )
    else:
        raise ValueError("dp.epsilon or dp.noise_multiplier must be set")
    return CentralDpPlan(sigma, q, m, cfg.dp.max_grad_norm, cfg.rounds)


def central_epsilon(plan: CentralDpPlan, rounds: int, delta: float, accountant: str) -> float:
    """ε after ``rounds`` full rounds (every sampled update aggregated)."""
    event = SubsampledGaussian(plan.noise_multiplier, plan.sample_rate, rounds)
    return epsilon([event], delta, accountant)  # type: ignore[arg-type]
