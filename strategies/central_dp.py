"""Central (user-level) DP: Flower's server-side fixed-clipping wrapper around a fedsim strategy.

:class:`CentralDP` is Flower's ``DifferentialPrivacyServerSideFixedClipping`` (it clips
each client's model update to L2 norm C = ``dp.max_grad_norm`` relative to the global
model, lets the wrapped strategy aggregate, and adds Gaussian noise of std σ·C/m to the
aggregate; McMahan et al., ICLR 2018) with four fedsim additions:

- replies that are errors or malformed are set aside *before* Flower clips them (Flower
  would skip the whole round on one error reply, or fail on wrong shapes) and recorded
  with their reason, so a bad client costs only its own update;
- the wrapped FedAvg averages uniformly (every client weight 1, :data:`keys.UNIT_WEIGHT`),
  which the noise calibration assumes;
- the noise comes from a generator seeded from the root seed and the round (Flower's
  uses NumPy's global RNG), so the same seed gives the same run;
- fedsim's own accountant (:mod:`fedsim.privacy.central`) composes the events that
  actually happened and writes the federation's ε into every client's round record
  (``epsilon``, ``noise_multiplier``, ``sample_rate``, ``steps`` = releases so far).
  With ``dp.max_epsilon`` the server stops training before a round would exceed it.

Flower's own accountant is not used: it supports only non-amplified accounting of
FedAvg's unmodified ``aggregate_train``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, Strategy

from fedsim.config import Config
from fedsim.privacy import PrivacyLedger
from fedsim.privacy.central import CentralDpPlan
from fedsim.records import ClientRoundRecord
from fedsim.seeding import numpy_rng
from strategies.base import FedsimStrategyMixin

logger = logging.getLogger(__name__)


class CentralDP(DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed-clipping DP wrapper, accounted by fedsim.

    Parameters
    ----------
    strategy
        The fedsim strategy to wrap (FedAvg with uniform weights).
    cfg
        The run's config (seed, ``dp.delta``, ``dp.accountant``, ``dp.max_epsilon``).
    plan
        σ, the cohort sampling rate and the clipping norm (:func:`plan_central_dp`).
    """

    def __init__(self, strategy: Strategy, cfg: Config, plan: CentralDpPlan) -> None:
        if not isinstance(strategy, FedsimStrategyMixin):
            raise TypeError(f"{type(strategy).__name__} must derive from FedsimStrategyMixin")
        super().__init__(
            strategy,
            noise_multiplier=plan.noise_multiplier,
            clipping_norm=plan.clipping_norm,
            num_sampled_clients=plan.clients_per_round,
        )
        self.cfg = cfg
        self.plan = plan
        self.ledger = PrivacyLedger(noise_multiplier=plan.noise_multiplier)
        self.round_epsilon: dict[int, float] = {}
        self._noise_round = 0
        logger.info(
            "central DP: clip updates to %g, noise multiplier %.4g (noise std %.4g on the "
            "mean of %d), cohort rate %.4g",
            plan.clipping_norm,
            plan.noise_multiplier,
            plan.noise_std,
            plan.clients_per_round,
            plan.sample_rate,
        )

    @property
    def core(self) -> FedsimStrategyMixin:
        """The wrapped fedsim strategy (sampling, screening, round records)."""
        return self.strategy  # type: ignore[return-value]

    def epsilon(self) -> float:
        """The federation's ε spent so far (user-level)."""
        return self.ledger.epsilon_dp_sgd(self.cfg.dp.delta, self.cfg.dp.accountant)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Flower's configure_train, unless the next release would pass ``dp.max_epsilon``."""
        limit = self.cfg.dp.max_epsilon
        if limit is not None:
            event = self.plan.round_event(self.plan.clients_per_round)
            projected = self.ledger.with_event(event).epsilon_dp_sgd(
                self.cfg.dp.delta, self.cfg.dp.accountant
            )
            if projected > limit * (1 + 1e-9):
                logger.warning(
                    "round %d: central DP budget exhausted (epsilon %.4g spent; one more "
                    "round would reach %.4g > dp.max_epsilon %g); no training",
                    server_round,
                    self.epsilon(),
                    projected,
                    limit,
                )
                self.current_arrays = arrays
                self.core.round_sampled[server_round] = ()
                return []
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Set bad replies aside, clip + aggregate + add noise (Flower), then account."""
        usable: list[Message] = []
        set_aside: dict[int, str] = {}
        for msg in replies:
            cid = self.core.directory.client_of.get(msg.metadata.src_node_id)
            reason: str | None
            if msg.has_error():
                reason = f"client error: {msg.error.reason}"
            else:
                reason = self.core._malformed_reason(msg.content)
            if reason is None:
                usable.append(msg)
            elif cid is not None:
                logger.warning("round %d: client %d set aside: %s", server_round, cid, reason)
                set_aside[cid] = reason
        self._noise_round = server_round
        arrays, metrics = super().aggregate_train(server_round, usable)
        aggregated = len(self.core.round_selected.get(server_round, ()))
        if arrays is not None and aggregated > 0:
            self.ledger = self.ledger.with_event(self.plan.round_event(aggregated))
        eps = self.epsilon()
        self.round_epsilon[server_round] = eps
        self.core.round_records[server_round] = tuple(
            self._accounted(r, eps, set_aside.get(r.client_id))
            for r in self.core.round_records.get(server_round, ())
        )
        return arrays, metrics

    def _accounted(
        self, record: ClientRoundRecord, eps: float, reason: str | None
    ) -> ClientRoundRecord:
        changes: dict[str, Any] = {
            "epsilon": eps,
            "epsilon_total": eps,
            "delta": self.cfg.dp.delta,
            "noise_multiplier": self.plan.noise_multiplier,
            "sample_rate": self.plan.sample_rate,
            "steps": self.ledger.dp_sgd_steps,
        }
        if reason is not None:
            status = "failed" if reason.startswith("client error") else "rejected"
            changes.update(status=status, rejected_reason=reason)
        return dataclasses.replace(record, **changes)

    def _add_noise_to_aggregated_arrays(self, aggregated_arrays: ArrayRecord) -> ArrayRecord:
        """Gaussian noise of std σ·C/m on every float array, from a seeded generator."""
        rng = numpy_rng(self.cfg.seed, "central-dp-noise", self._noise_round)
        std = self.plan.noise_std
        noisy: dict[str, Array] = {}
        for name, arr in aggregated_arrays.items():
            values = arr.numpy()
            if np.issubdtype(values.dtype, np.floating):
                values = values + rng.normal(0.0, std, values.shape).astype(values.dtype)
            noisy[name] = Array(np.asarray(values))
        logger.info("central DP: noise with std %.4g added to the aggregate", std)
        return ArrayRecord(noisy)


def fedsim_core(strategy: Strategy) -> FedsimStrategyMixin:
    """The fedsim strategy inside ``strategy`` (itself, or the one a DP wrapper holds)."""
    inner: Any = strategy
    while not isinstance(inner, FedsimStrategyMixin) and hasattr(inner, "strategy"):
        inner = inner.strategy
    if not isinstance(inner, FedsimStrategyMixin):
        raise TypeError(f"{type(strategy).__name__} must derive from FedsimStrategyMixin")
    return inner
