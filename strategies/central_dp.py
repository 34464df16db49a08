"""Central (user-level) DP: DP-FedAvg as a wrapper around a fedsim strategy.

:class:`CentralDP` wraps the fedsim FedAvg through its public API: the wrapped strategy
builds the train messages (for a Poisson-sampled cohort, :class:`~strategies.cohorts.
PoissonCohort`) and screens the replies; the wrapper then releases
``global + (Σ clipped updates + N(0, σ²C²)) / m`` with the fixed, public denominator m
(:func:`fedsim.privacy.central.central_release`) and accounts one
:meth:`~fedsim.privacy.central.CentralDpPlan.round_event` per release under
``dp.neighbouring`` — see :mod:`fedsim.privacy.central` for why that is the mechanism's
exact analysis. Flower's own DP wrappers are not used: they average over the updates
that arrived (a data-dependent denominator) and their accountant has no amplification.

Randomness: with ``seeded=True`` (``fedsim run`` simulations) cohorts and noise come from
the root seed, so runs are reproducible and the printed ε assumes the seed is secret;
otherwise (``flwr run`` deployments) both come from OS entropy, or with
``dp.secure_rng`` the noise from the OS's cryptographically secure generator.

With ``dp.max_epsilon`` the server stops releasing before a round would pass it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedsim import keys
from fedsim.config import Config
from fedsim.privacy import Accounting, PrivacyLedger
from fedsim.privacy.central import CentralDpPlan, NormalSampler, central_release
from fedsim.privacy.secure_rng import secure_normal
from fedsim.records import ClientRoundRecord
from fedsim.round_log import RoundEntry
from fedsim.seeding import numpy_rng
from strategies.base import FedsimStrategy
from strategies.cohorts import PoissonCohort
from strategies.guards import array_record

logger = logging.getLogger(__name__)


def central_dp_rules(cfg: Config) -> list[str]:
    """The config rules of DP-FedAvg: it wraps FedAvg only (its noise is calibrated to a
    plain sum of clipped updates)."""
    if cfg.strategy.name == "fedavg":
        return []
    return [
        "strategy.name must be 'fedavg' when dp.mode is 'central' (the noise is "
        "calibrated to a uniform mean of the clipped updates); "
        f"got {cfg.strategy.name!r}"
    ]


def _secret_rng(_round: int) -> np.random.Generator:
    return np.random.default_rng(secrets.randbits(128))


class CentralDP(Strategy):
    """DP-FedAvg with a fixed denominator and Poisson cohorts, accounted by fedsim.

    Parameters
    ----------
    strategy
        The fedsim strategy to wrap (FedAvg; it samples, builds messages and screens).
    cfg
        The run's config (seed, ``dp``).
    plan
        σ, the cohort sampling rate, the clipping norm and the denominator.
    seeded
        Draw cohorts and noise from the root seed (simulation) instead of OS entropy.
    """

    def __init__(
        self, strategy: Strategy, cfg: Config, plan: CentralDpPlan, *, seeded: bool = False
    ) -> None:
        if not isinstance(strategy, FedsimStrategy):
            raise TypeError(f"{type(strategy).__name__} must derive from FedsimStrategy")
        self.strategy = strategy
        self.cfg = cfg
        self.plan = plan
        self.seeded = seeded
        self.accounting = Accounting.of(cfg.dp)
        self.ledger = PrivacyLedger(noise_multiplier=plan.noise_multiplier)
        self.round_epsilon: dict[int, float] = {}
        self._global: dict[str, np.ndarray] | None = None
        self._exhausted = False
        rng = (lambda r: numpy_rng(cfg.seed, "client-sampling", r)) if seeded else _secret_rng
        strategy.cohort = PoissonCohort(plan.sample_rate, rng)  # what the accountant assumes
        # every finite update is clipped to the plan's norm: no step bound is needed, and
        # a diverging honest client is clipped rather than rejected
        strategy.max_step_ratio = math.inf

    @property
    def core(self) -> FedsimStrategy:
        """The wrapped fedsim strategy (sampling, screening)."""
        return self.strategy  # type: ignore[return-value]

    def summary(self) -> None:
        """Log the mechanism once."""
        p = self.plan
        logger.info(
            "central DP (%s): Poisson cohorts at rate %.4g, updates clipped to %g, noise std "
            "%.4g on the sum, released over the fixed denominator %d (noise multiplier %.4g)",
            self.accounting.relation_text,
            p.sample_rate,
            p.clipping_norm,
            p.noise_std,
            p.denominator,
            p.noise_multiplier,
        )

    def export_state(self) -> dict[str, Any]:
        """The wrapper's and the wrapped strategy's state, as JSON (the checkpoint)."""
        return {
            "core": self.core.export_state(),
            "ledger": self.ledger.to_json(),
            "round_epsilon": {str(r): e for r, e in self.round_epsilon.items()},
            "exhausted": self._exhausted,
        }

    def restore_state(self, doc: Mapping[str, Any]) -> None:
        """Take the state :meth:`export_state` wrote."""
        self.core.restore_state(doc["core"])
        self.ledger = PrivacyLedger.from_json(doc["ledger"])
        self.round_epsilon = {int(r): float(e) for r, e in doc["round_epsilon"].items()}
        self._exhausted = bool(doc["exhausted"])

    def can_continue(self) -> bool:
        """Whether another release may happen (budget left, someone to sample)."""
        return not self._exhausted and self.core.can_continue()

    def epsilon(self) -> float:
        """The federation's ε spent so far (user-level)."""
        return self.ledger.epsilon_dp_sgd(self.accounting)

    def _normal(self, server_round: int) -> NormalSampler:
        if self.cfg.dp.secure_rng:
            return lambda shape, std: secure_normal(shape, std)
        rng = (
            numpy_rng(self.cfg.seed, "central-dp-noise", server_round)
            if self.seeded
            else _secret_rng(server_round)
        )
        return lambda shape, std: rng.normal(0.0, std, shape)

    # ------------------------------------------------------------------ Flower hooks
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The wrapped strategy's messages, unless the next release would pass
        ``dp.max_epsilon`` (then nothing is trained or released any more)."""
        self._global = None
        limit = self.cfg.dp.max_epsilon
        if limit is not None:
            projected = self.ledger.with_event(self.plan.round_event()).epsilon_dp_sgd(
                self.accounting
            )
            if projected > limit * (1 + 1e-9):
                if not self._exhausted:
                    logger.warning(
                        "round %d: central DP budget exhausted (epsilon %.4g spent; one more "
                        "release would reach %.4g > dp.max_epsilon %g); no more training",
                        server_round,
                        self.epsilon(),
                        projected,
                        limit,
                    )
                self._exhausted = True
                self.core.log.sampled(server_round, ())
                return []
        self._global = {k: a.numpy() for k, a in arrays.items()}
        messages = list(self.core.configure_train(server_round, arrays, config, grid))
        if not messages:
            logger.info("round %d: the Poisson cohort is empty; noise only", server_round)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen replies (the wrapped strategy), release the noisy mean, account."""
        if self._global is None:  # budget exhausted: no release
            return None, None
        accepted, records = self.core.screen_replies(server_round, replies)
        updates = [
            {k: a.numpy() for k, a in msg.content.array_records[keys.ARRAYS].items()}
            for _, msg in accepted
        ]
        released = central_release(self._global, updates, self.plan, self._normal(server_round))
        self.ledger = self.ledger.with_event(self.plan.round_event())
        eps = self.epsilon()
        self.round_epsilon[server_round] = eps
        self.core.log.close(
            RoundEntry(
                round=server_round,
                sampled=self.core.log.cohort(server_round),
                selected=tuple(cid for cid, _ in accepted),
                clients=tuple(self._accounted(r, eps) for r in records),
            )
        )
        logger.info(
            "round %d: released the noisy sum of %d clipped updates over %d; epsilon %.4g (%s)",
            server_round,
            len(updates),
            self.plan.denominator,
            eps,
            self.accounting.relation_text,
        )
        return self.core.server_step(
            array_record(released)
        ), None  # FedAvgM/FedAdam on the noisy release

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """No federated evaluation (the server evaluates centrally)."""
        return self.core.configure_evaluate(server_round, arrays, config, grid)  # type: ignore[attr-defined,no-any-return]

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Delegated to the wrapped strategy."""
        return self.core.aggregate_evaluate(server_round, replies)  # type: ignore[attr-defined,no-any-return]

    def _accounted(self, record: ClientRoundRecord, eps: float) -> ClientRoundRecord:
        changes: dict[str, Any] = {
            "epsilon": eps,
            "epsilon_total": eps,
            "delta": self.cfg.dp.delta,
            "relation": self.cfg.dp.neighbouring,
            "noise_multiplier": self.plan.noise_multiplier,
            "sample_rate": self.plan.sample_rate,
            "steps": self.ledger.dp_sgd_steps,
        }
        return dataclasses.replace(record, **changes)


def fedsim_core(strategy: Strategy) -> FedsimStrategy:
    """The fedsim strategy inside ``strategy`` (itself, or the one a DP wrapper holds)."""
    inner: Any = strategy
    while not isinstance(inner, FedsimStrategy) and hasattr(inner, "strategy"):
        inner = inner.strategy
    if not isinstance(inner, FedsimStrategy):
        raise TypeError(f"{type(strategy).__name__} must derive from FedsimStrategy")
    return inner
