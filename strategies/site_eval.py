"""Federated (per-site) evaluation: the sites evaluate the global model on their own
held-out records, next to the server's central test evaluation (``evaluation.federated``).

After a round's aggregation (every ``evaluation.every`` rounds, and after the last),
:class:`SiteEvaluator` sends Flower ``evaluate`` messages (``MessageType.EVALUATE``,
handled by the ClientApp's ``@app.evaluate`` function) carrying the released global model
to a fraction ``evaluation.fraction`` of the clients, sampled from the seed. Each site
replies with the DP release of its confusion matrix (:mod:`fedsim.privacy.evaluation`)
and its privacy ledger, which now holds that release. Every reply is checked
(:func:`check_eval_reply`) before anything is computed from it; a failed, late or
malformed reply is recorded with its reason and never ends the run. The aggregate is the
sum of the released matrices of the sites that released, i.e. each rate weighted by the
sites' (noisy) numbers of examples; the round's :class:`~fedsim.records.SiteEvaluation`
goes to the round log (``metrics.jsonl``'s ``site_evaluation`` block).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedsim import keys
from fedsim.config import Config
from fedsim.data import DatasetBundle
from fedsim.privacy import PrivacyLedger
from fedsim.records import SiteEvalRecord, SiteEvaluation, SiteMetrics
from fedsim.round_log import RoundLog
from fedsim.seeding import derive_seed
from fedsim.versions import local_version, version_entries
from strategies.calibrate import released_state
from strategies.directory import ClientDirectory
from strategies.ledger_check import read_ledger
from strategies.replies import (
    MAX_COUNT,
    Domain,
    client_error_text,
    read_status,
    records_problem,
)
from strategies.rounds import exchange

logger = logging.getLogger(__name__)

#: Largest magnitude of a released (noisy) count: a count plus noise of any sane scale.
MAX_RELEASED_COUNT = float(MAX_COUNT) * 4
_NONNEGATIVE = Domain(0)
_EVAL_METRICS = frozenset(
    {keys.CLIENT_ID, keys.EVAL_COUNTS, keys.EVAL_EPSILON, keys.EPSILON_EVALUATION,
     keys.EPSILON_TOTAL}
)  # fmt: skip


@dataclass(frozen=True)
class EvalReplyRules:
    """What an evaluate reply is checked against: the sender, the task's number of
    classes and the ε the run asked each release to be made at (``None``: exact)."""

    client_id: int
    num_classes: int
    epsilon: float | None


@dataclass(frozen=True)
class EvalVerdict:
    """The checked reply: the site's record, its ledger (ok replies) and its matrix."""

    record: SiteEvalRecord
    ledger: PrivacyLedger | None = None
    matrix: np.ndarray | None = None


def _counts_problem(raw: Any, k: int) -> str | None:
    if not isinstance(raw, list) or len(raw) != k * k:
        size = len(raw) if isinstance(raw, list) else type(raw).__name__
        return f"metric {keys.EVAL_COUNTS} must be a list of {k * k} numbers; got {size}"
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"metric {keys.EVAL_COUNTS} holds a {type(value).__name__}"
        if not (math.isfinite(value) and abs(value) <= MAX_RELEASED_COUNT):
            return f"metric {keys.EVAL_COUNTS} holds {value!r:.40}"
    return None


def check_eval_reply(
    metrics: Mapping[str, Mapping[str, Any]],
    configs: Mapping[str, Mapping[str, Any]],
    arrays: Mapping[str, Any],
    rules: EvalReplyRules,
) -> EvalVerdict:
    """Every check of one evaluate reply; the first problem rejects it.

    Records: one MetricRecord ``metrics``, at most the ConfigRecord ``status``, no arrays.
    A refusal or an exhausted budget is recorded with its reason. A release carries no
    metric but those of an evaluate reply: the K × K counts (finite), the ε it was made
    at — which must be the run's ``evaluation.epsilon`` — and the ε figures (>= 0), with
    the site's readable ledger in its status; ``client-id`` must be the sender's.
    """
    cid = rules.client_id

    def rejected(reason: str) -> EvalVerdict:
        return EvalVerdict(SiteEvalRecord(cid, "rejected", rejected_reason=reason[:300]))

    status = read_status(configs.get(keys.STATUS))
    if isinstance(status, str):
        return rejected(status)
    problem = records_problem(list(arrays), list(metrics), list(configs), trained=False)
    if problem is not None:
        return rejected(problem)
    if status.code != keys.STATUS_OK:
        reason = status.reason or status.code
        return EvalVerdict(SiteEvalRecord(cid, status.code, rejected_reason=reason[:300]))  # type: ignore[arg-type]
    raw = metrics[keys.METRICS]
    unknown = sorted(str(k) for k in raw if k not in _EVAL_METRICS)
    if unknown:
        return rejected(f"unexpected metric {unknown[0]!r:.60}")
    if raw.get(keys.CLIENT_ID) != cid:
        return rejected(f"metric {keys.CLIENT_ID} is {raw.get(keys.CLIENT_ID)!r:.20}, not {cid}")
    problem = _counts_problem(raw.get(keys.EVAL_COUNTS), rules.num_classes)
    if problem is not None:
        return rejected(problem)
    values: dict[str, float | None] = {}
    for key in (keys.EVAL_EPSILON, keys.EPSILON_EVALUATION, keys.EPSILON_TOTAL):
        value = raw.get(key)
        if value is not None:
            problem = _NONNEGATIVE.problem(f"metric {key}", value)
            if problem is not None:
                return rejected(problem)
        values[key] = None if value is None else float(value)
    asked = rules.epsilon or 0.0
    released_at = values[keys.EVAL_EPSILON]
    if released_at is None or not math.isclose(released_at, asked, rel_tol=1e-9):
        return rejected(f"released at epsilon {released_at}, but the run asks {asked:g}")
    ledger = None
    if rules.epsilon is not None:
        read = read_ledger(status.ledger_text)
        if read.problem is not None:
            return rejected(f"privacy ledger refused: {read.problem}")
        ledger = read.ledger
    k = rules.num_classes
    matrix = np.asarray(raw[keys.EVAL_COUNTS], dtype=np.float64).reshape(k, k)
    record = SiteEvalRecord(
        cid,
        "ok",
        metrics=SiteMetrics.of(matrix),
        epsilon=released_at,
        epsilon_evaluation=values[keys.EPSILON_EVALUATION],
        epsilon_total=values[keys.EPSILON_TOTAL],
    )
    return EvalVerdict(record, ledger, matrix)


class SiteEvaluator:
    """Runs the federated evaluation of one round (see the module docstring).

    Parameters
    ----------
    cfg
        The run's config (``evaluation.*``, the seed, the number of clients).
    directory
        The node ↔ client map.
    log
        Receives each round's :class:`~fedsim.records.SiteEvaluation`.
    num_classes
        Classes of the task (the size of a released matrix).
    on_ledger
        Called with ``(client id, ledger)`` of every accepted release: the strategy keeps
        the site's newest ledger, so its ``epsilon_total`` includes the release.
    """

    def __init__(
        self,
        cfg: Config,
        directory: ClientDirectory,
        log: RoundLog,
        num_classes: int,
        on_ledger: Callable[[int, PrivacyLedger], None],
    ) -> None:
        self.cfg = cfg
        self.directory = directory
        self.log = log
        self.num_classes = num_classes
        self.on_ledger = on_ledger

    def sites(self, server_round: int) -> list[int]:
        """The clients asked to evaluate after ``server_round``: ``evaluation.fraction`` of
        the federation's clients (at least one), drawn from the seed, sorted."""
        clients = [c for c in self.directory.client_ids if c < self.cfg.data.num_clients]
        count = min(len(clients), max(1, round(self.cfg.evaluation.fraction * len(clients))))
        rng = np.random.default_rng(derive_seed(self.cfg.seed, "site-eval", server_round))
        return sorted(int(c) for c in rng.choice(clients, size=count, replace=False))

    def run(
        self,
        grid: Grid,
        server_round: int,
        arrays: ArrayRecord,
        timeout: float,
        stop: threading.Event | None = None,
    ) -> SiteEvaluation:
        """Ask the round's sites to evaluate ``arrays``; record and return the result."""
        clients = self.sites(server_round)
        dispatch = self.directory.dispatch(clients)
        addressed = {(node, group): c for c, node, group in dispatch}
        # the sites evaluate only for a coordinator of their own fedsim version and schema
        config = ConfigRecord({keys.SERVER_ROUND: server_round, **version_entries(local_version())})
        messages = [
            Message(
                content=RecordDict({keys.ARRAYS: arrays, keys.CONFIG: config}),
                message_type=MessageType.EVALUATE,
                dst_node_id=node,
                group_id=group,
            )
            for _, node, group in dispatch
        ]
        logger.info("round %d: sites %s evaluate the global model", server_round, clients)
        replies = exchange(grid, messages, timeout, stop)
        evaluation = self.collect(server_round, clients, replies, addressed)
        self.log.evaluated(server_round, evaluation)
        return evaluation

    def collect(
        self,
        server_round: int,
        clients: list[int],
        replies: list[Message],
        addressed: Mapping[tuple[int, str], int],
    ) -> SiteEvaluation:
        """Check every reply and aggregate the releases (missing replies: ``failed``)."""
        records: dict[int, SiteEvalRecord] = {}
        matrices: list[np.ndarray] = []
        asked = set(clients)
        for msg in replies:
            cid = self.directory.sender(msg, addressed)
            if cid is None or cid not in asked or cid in records:
                logger.warning(
                    "round %d: evaluation reply from node %d ignored (unexpected or repeated)",
                    server_round,
                    msg.metadata.src_node_id,
                )
                continue
            if msg.has_error():
                reason = f"client error: {client_error_text(msg.error.reason)}"
                records[cid] = SiteEvalRecord(cid, "failed", rejected_reason=reason)
                logger.warning("round %d: site %d evaluation failed: %s", server_round, cid, reason)
                continue
            rules = EvalReplyRules(cid, self.num_classes, self.cfg.evaluation.epsilon)
            content = msg.content
            verdict = check_eval_reply(
                content.metric_records, content.config_records, content.array_records, rules
            )
            records[cid] = verdict.record
            if verdict.ledger is not None:
                self.on_ledger(cid, verdict.ledger)
            if verdict.matrix is not None:
                matrices.append(verdict.matrix)
            elif verdict.record.status != "ok":
                logger.warning(
                    "round %d: site %d evaluation %s: %s",
                    server_round,
                    cid,
                    verdict.record.status,
                    verdict.record.rejected_reason,
                )
        for cid in clients:
            if cid not in records:
                records[cid] = SiteEvalRecord(
                    cid, "failed", rejected_reason="no reply before timeout"
                )
        aggregate = SiteMetrics.of(np.sum(matrices, axis=0)) if matrices else None
        if aggregate is not None:
            logger.info(
                "round %d: %d/%d sites evaluated: accuracy %s (pooled, noisy n %.0f)",
                server_round,
                len(matrices),
                len(clients),
                "n/a" if aggregate.accuracy is None else f"{aggregate.accuracy:.4f}",
                aggregate.num_examples,
            )
        return SiteEvaluation(tuple(records[c] for c in sorted(records)), aggregate)


def site_evaluation_hook(
    cfg: Config,
    grid: Grid,
    evaluator: SiteEvaluator,
    release: Callable[[ArrayRecord], ArrayRecord],
    stop: threading.Event | None = None,
) -> Callable[[int, ArrayRecord], None]:
    """The round loop's hook (:func:`strategies.rounds.run_rounds`): after the rounds
    ``evaluation.due`` names, the sites evaluate ``release(arrays)`` — the model the
    server evaluates and releases (calibrated under ``strategy.calibrate``)."""

    def evaluate(server_round: int, arrays: ArrayRecord) -> None:
        if cfg.evaluation.due(server_round, cfg.rounds):
            evaluator.run(grid, server_round, release(arrays), cfg.strategy.round_timeout, stop)

    return evaluate


def released_arrays(
    cfg: Config, model: torch.nn.Module, data: DatasetBundle
) -> Callable[[ArrayRecord], ArrayRecord]:
    """``arrays`` as the server releases them (:func:`strategies.calibrate.released_state`),
    computed on ``model``, a copy of the global model's architecture used for nothing else."""

    def release(arrays: ArrayRecord) -> ArrayRecord:
        if cfg.strategy.calibrate == "none":
            return arrays
        model.load_state_dict(arrays.to_torch_state_dict())
        return ArrayRecord(released_state(cfg, model, model.state_dict(), data))

    return release
