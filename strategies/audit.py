"""The auditor's side of ``fedsim audit``: it watches what the server releases or receives.

- :class:`UserLevelAuditor` (``dp.mode: central``) sees every released global model and
  scores each canary by the projection of the model's change onto the canary's direction.
- :class:`SampleLevelAuditor` (DP-SGD) sees the audited client's update in every round, as
  the server receives it, and scores each canary by the projection onto minus its
  direction (the client descends on the canary's gradient).

Both only read what the run already produces; the canaries themselves are inserted by the
ordinary code paths (:mod:`clients.audit_canaries`, the canary clients of
:mod:`clients.client_app`). :func:`finish_audit` compares the result with the run's claim.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message

from fedsim import keys
from fedsim.audit.canaries import CanaryScores, inclusion, layout_of
from fedsim.audit.report import AuditLevel, AuditResult, build_audit
from fedsim.config import Config
from fedsim.privacy import Accounting, PrivacyLedger
from fedsim.seeding import numpy_rng

logger = logging.getLogger(__name__)


def _numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in arrays.items()}


class UserLevelAuditor:
    """Scores canary clients from the sequence of released global models."""

    level: AuditLevel = "user"

    def __init__(self, cfg: Config, initial: Mapping[str, np.ndarray]) -> None:
        self.cfg = cfg
        self.scores = CanaryScores(cfg.seed, cfg.audit.canaries, layout_of(initial), sign=1.0)
        self._previous = {k: np.asarray(v, dtype=np.float64) for k, v in initial.items()}

    def export_state(self) -> dict[str, Any]:
        """The scores so far (the previous model is the checkpoint's model)."""
        return self.scores.export_state()

    def restore_state(self, doc: Mapping[str, Any], model: Mapping[str, np.ndarray]) -> None:
        """Take the scores :meth:`export_state` wrote and the checkpoint's model."""
        self.scores.restore_state(doc)
        self._previous = {k: np.asarray(v, dtype=np.float64) for k, v in model.items()}

    def on_release(self, arrays: ArrayRecord) -> None:
        """Observe one released model (after a round)."""
        now = {k: v.astype(np.float64) for k, v in _numpy(arrays).items()}
        if all(np.array_equal(now[k], self._previous[k]) for k, _ in self.scores.layout):
            return  # nothing released this round (budget exhausted)
        self.scores.add({k: now[k] - self._previous[k] for k, _ in self.scores.layout})
        self._previous = now


class SampleLevelAuditor:
    """Scores the audited client's canary records from its round updates."""

    level: AuditLevel = "sample"

    def __init__(self, cfg: Config, trainable: Mapping[str, np.ndarray]) -> None:
        self.cfg = cfg
        self.client = cfg.audit.client
        self.scores = CanaryScores(cfg.seed, cfg.audit.canaries, layout_of(trainable), sign=-1.0)

    def export_state(self) -> dict[str, Any]:
        """The scores so far."""
        return self.scores.export_state()

    def restore_state(self, doc: Mapping[str, Any], model: Mapping[str, np.ndarray]) -> None:
        """Take the scores :meth:`export_state` wrote."""
        del model
        self.scores.restore_state(doc)

    def on_accepted(
        self, global_arrays: ArrayRecord | None, accepted: list[tuple[int, Message]]
    ) -> None:
        """Observe the accepted replies of a round (only the audited client's counts)."""
        if global_arrays is None:
            return
        for cid, msg in accepted:
            if cid != self.client:
                continue
            reply = _numpy(msg.content.array_records[keys.ARRAYS])
            base = _numpy(global_arrays)
            names = [name for name, _ in self.scores.layout]
            self.scores.add({k: reply[k].astype(np.float64) - base[k] for k in names})


Auditor = UserLevelAuditor | SampleLevelAuditor


def finish_audit(cfg: Config, auditor: Auditor, ledger: PrivacyLedger | None) -> AuditResult:
    """The audit of the finished run; ``ledger`` holds the audited mechanism's events (the
    federation's under central DP, the audited client's under DP-SGD)."""
    events = PrivacyLedger() if ledger is None else ledger
    claimed = events.epsilon_dp_sgd(Accounting.of(cfg.dp))
    add_remove = events.epsilon_dp_sgd(Accounting(cfg.dp.delta, "pld", "add_remove"))
    result = build_audit(
        auditor.level,
        auditor.scores.total,
        inclusion(cfg.seed, cfg.audit.canaries),
        claimed_epsilon=claimed,
        claimed_epsilon_add_remove=add_remove,
        relation=cfg.dp.neighbouring,
        delta=cfg.dp.delta,
        confidence=cfg.audit.confidence,
        rng=numpy_rng(cfg.seed, "audit-bootstrap"),
        observations=auditor.scores.observations,
        audited_client=auditor.client if isinstance(auditor, SampleLevelAuditor) else None,
    )
    logger.warning(
        "privacy audit (%s level): claimed epsilon %.4g (%s; add/remove %.4g), estimate %.4g, "
        "lower bound %.4g at %g%% -> %s",
        result.level,
        result.claimed_epsilon,
        result.relation,
        result.claimed_epsilon_add_remove,
        result.estimate.epsilon,
        result.bound.epsilon,
        100 * result.bound.confidence,
        result.verdict,
    )
    return result
