"""The template every fedsim strategy follows, layered over a Flower strategy.

:class:`FedsimStrategy` goes first in the bases of a class that also derives from a Flower
message-API strategy (``class FedAvg(FedsimStrategy, flwr FedAvg)``) and is built fully in
its constructor from a :class:`StrategyContext` (the run's config, the node ↔ client map,
the :class:`~fedsim.round_log.RoundLog` it reports to, the server's data) plus Flower's
own keyword arguments. It owns Flower's two train hooks and offers small, explicit hooks
instead:

- ``configure_train``: samples a cohort by *stable client id* (:attr:`cohort`, seeded
  from the root seed and the round; Flower's own sampling uses the global ``random`` and
  random node ids), skipping clients that reported an exhausted budget or a refusal.
- ``aggregate_train`` (the template; do not override): :meth:`screen_replies` rejects
  errors, refusals and malformed replies, :meth:`select` picks the updates that enter
  aggregation, :meth:`value_updates` pays valuations, :meth:`aggregate` — the rule —
  combines the chosen updates, and the round is reported to the log as one frozen
  :class:`~fedsim.round_log.RoundEntry`. A new rule overrides :meth:`aggregate` (and
  maybe :meth:`select` / :meth:`kept_by_rule`); screening, records and ledgers stay.

Privacy of a private selection (SecProbe): the server keeps, per client id, a ledger of
the pure-DP selection events that client took part in (:meth:`charge_selection`). Each
client sends its own ledger (DP-SGD steps, releases) in its reply's status record; the
server composes both into the client's ``epsilon_total`` (metrics.jsonl and summary.json).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedsim import keys
from fedsim.config import Config
from fedsim.data import DatasetBundle
from fedsim.privacy import Accounting, PrivacyLedger, PureDp
from fedsim.records import ClientRoundRecord
from fedsim.round_log import RoundEntry, RoundLog
from fedsim.seeding import numpy_rng
from fedsim.server_opt import ServerOptimizer, ServerOptState, server_step
from fedsim.versions import local_version, version_entries
from strategies.clipping import round_clip_bounds
from strategies.cohorts import CohortSampler, FixedSizeCohort
from strategies.directory import ClientDirectory
from strategies.guards import (
    RoundOutcome,
    array_record,
    common_metric_keys,
    fallback,
    guarded,
)
from strategies.replies import (
    ReplyRules,
    Verdict,
    check_reply,
    client_error_text,
    record_from_metrics,
)
from strategies.rewards import RewardBook, RewardNote
from strategies.uploads import MAX_STEP_RATIO, model_norm

logger = logging.getLogger(__name__)

#: ``(client id, reply)`` pairs of accepted updates, sorted by client id
Accepted = list[tuple[int, Message]]


@dataclass(frozen=True)
class StrategyContext:
    """What a fedsim strategy is built with.

    Attributes
    ----------
    cfg
        The run's config.
    directory
        Flower node id ↔ stable client id, and the sizes clients reported.
    log
        Where the strategy reports each round (owned by the ServerApp).
    data
        The server's dataset (its validation split scores uploads, sets per-layer clipping
        bounds and gates rewards), loaded once by the ServerApp.
    """

    cfg: Config
    directory: ClientDirectory
    log: RoundLog
    data: DatasetBundle


@dataclass(frozen=True)
class SelectionNote:
    """What a selection rule reports about one accepted update."""

    utility: float | None = None
    selection_probability: float | None = None


@dataclass(frozen=True)
class Selection:
    """The updates a rule lets into aggregation, and what it noted about each update.

    ``epsilon`` is the ε a private selection spent this round (``None``: not private).
    """

    chosen: Accepted
    notes: Mapping[int, SelectionNote] = field(default_factory=dict)
    epsilon: float | None = None


class FedsimStrategy:
    """Seeded cohorts, reply screening, records, ledgers and the aggregation template.

    Parameters
    ----------
    context
        The run's config, directory, round log and server data.
    **flower_kwargs
        Passed on to the Flower strategy class that follows in the bases.
    """

    def __init__(self, context: StrategyContext, **flower_kwargs: Any) -> None:
        super().__init__(**flower_kwargs)
        cfg = context.cfg
        self.context = context
        self.cfg = cfg
        self.directory = context.directory
        self.log = context.log
        #: how cohorts are drawn (a central-DP wrapper replaces it by Poisson sampling)
        self.cohort: CohortSampler = FixedSizeCohort(
            cfg.clients_per_round, lambda r: numpy_rng(cfg.seed, "client-sampling", r)
        )
        #: clients that will not train again (budget exhausted, or their policy refused)
        self.exhausted: set[int] = set()
        #: valuation.enabled: quality gate × DP valuation → rewards (strategies.rewards)
        self.rewards: RewardBook | None = (
            RewardBook(cfg, context.data) if cfg.valuation.enabled else None
        )
        #: per client id: the ledger it last reported, and the server-side selection events
        self.client_ledgers: dict[int, PrivacyLedger] = {}
        self.selection_ledgers: dict[int, PrivacyLedger] = {}
        #: called with (this round's global arrays, accepted replies) after screening; a
        #: privacy auditor watches the updates the server receives through it
        self.reply_observers: list[Callable[[ArrayRecord | None, Accepted], None]] = []
        #: an upload's step may be at most this many times max(‖global‖, 1)
        #: (:mod:`strategies.uploads`; a wrapper that clips every update lifts it)
        self.max_step_ratio = MAX_STEP_RATIO
        #: this round's global model (what replies are checked against) and its norm
        self._reference: dict[str, np.ndarray] = {}
        self._server_opt = ServerOptimizer.of(self.cfg.strategy)
        self._server_opt_state = ServerOptState()
        self._reference_norm = 0.0
        self._reference_shapes: dict[str, tuple[int, ...]] = {}
        self._round_arrays: ArrayRecord | None = None
        #: (node id, group id) of this round's train messages -> their client
        self._addressed: dict[tuple[int, str], int] = {}

    # ------------------------------------------------------------------ resume
    def export_state(self) -> dict[str, Any]:
        """Everything this strategy carries between rounds, as JSON (the checkpoint)."""
        return {
            "exhausted": sorted(self.exhausted),
            "client_ledgers": {str(c): led.to_json() for c, led in self.client_ledgers.items()},
            "selection_ledgers": {
                str(c): led.to_json() for c, led in self.selection_ledgers.items()
            },
            "rewards": None if self.rewards is None else self.rewards.export_state(),
            "server_optimizer": self._server_opt_state.to_json(),
        }

    def restore_state(self, doc: Mapping[str, Any]) -> None:
        """Take the state :meth:`export_state` wrote (an interrupted run's checkpoint)."""
        self.exhausted = {int(c) for c in doc["exhausted"]}
        self.client_ledgers = {
            int(c): PrivacyLedger.from_json(t) for c, t in doc["client_ledgers"].items()
        }
        self.selection_ledgers = {
            int(c): PrivacyLedger.from_json(t) for c, t in doc["selection_ledgers"].items()
        }
        if self.rewards is not None and doc.get("rewards") is not None:
            self.rewards.restore_state(doc["rewards"])
        self._server_opt_state = ServerOptState.from_json(doc.get("server_optimizer") or {})

    def can_continue(self) -> bool:
        """Whether any client may still train."""
        return bool(self.eligible_clients())

    # ------------------------------------------------------------------ sampling
    def eligible_clients(self) -> list[int]:
        """Clients that may still train (budget not exhausted, not refusing)."""
        return [c for c in self.directory.client_ids if c not in self.exhausted]

    def sample_clients(self, server_round: int) -> list[int]:
        """This round's cohort of eligible clients (:attr:`cohort`), sorted."""
        return self.cohort.sample(self.eligible_clients(), server_round)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Messages to the sampled clients carrying the global model and round config."""
        self._reference_shapes = {k: tuple(a.shape) for k, a in arrays.items()}
        self._round_arrays = arrays
        self._reference = {k: a.numpy() for k, a in arrays.items()}
        self._reference_norm = model_norm(self._reference)
        self._addressed = {}
        clients = self.sample_clients(server_round)
        self.log.sampled(server_round, tuple(clients))
        if not clients:
            logger.warning("round %d: nobody to train (empty cohort or no budget)", server_round)
            return []
        config[keys.SERVER_ROUND] = server_round
        config.update(version_entries(local_version()))  # sites train only for their own
        for key, value in self.round_config(server_round, arrays).items():
            config[key] = value
        logger.info("round %d: training clients %s", server_round, clients)
        ahead = self.selection_epsilon_ahead(len(clients))
        dispatch = self.directory.dispatch(clients)
        self._addressed = {(node, group): c for c, node, group in dispatch}
        return [
            Message(
                content=RecordDict(
                    {keys.ARRAYS: arrays, keys.CONFIG: self._client_config(config, c, ahead)}
                ),
                message_type=MessageType.TRAIN,
                dst_node_id=node,
                group_id=group,
            )
            for c, node, group in dispatch
        ]

    def _client_config(self, config: ConfigRecord, cid: int, ahead: float) -> ConfigRecord:
        """The round config plus, for a private selection rule, the client's selection
        events so far and the ε this round's selection will charge it."""
        ledger = self.selection_ledgers.get(cid)
        if ledger is None and ahead <= 0:
            return config
        out = ConfigRecord(dict(config))
        if ledger is not None:
            out[keys.SELECTION_LEDGER] = ledger.to_json()
        if ahead > 0:
            out[keys.SELECTION_EPSILON_AHEAD] = float(ahead)
        return out

    def selection_epsilon_ahead(self, num_sampled: int) -> float:
        """ε (pure DP) that this round's selection charges each scored participant when
        ``num_sampled`` clients train; 0 for rules without a private selection."""
        del num_sampled
        return 0.0

    def round_config(self, server_round: int, arrays: ArrayRecord) -> dict[str, Any]:
        """Extra entries of this round's train config: the per-layer clipping bounds.

        For ``dp.clipping`` other than ``flat`` the server sends one bound per trainable
        tensor under :data:`fedsim.keys.CLIP_BOUNDS` (:mod:`strategies.clipping`).
        """
        cfg = self.cfg
        bounds = round_clip_bounds(
            cfg.dp, cfg.model.name, self.context.data, cfg.seed, server_round, arrays
        )
        return {} if bounds is None else {keys.CLIP_BOUNDS: bounds}

    # ------------------------------------------------------------------ screening
    def screen_replies(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[Accepted, list[ClientRoundRecord]]:
        """Split replies into accepted ``(client_id, message)`` pairs and records for all.

        Every field of a reply is checked (:func:`strategies.replies.check_reply`) before
        anything is computed from it; a reply failing a check is recorded ``rejected`` with
        the reason. A second reply from the same client, or one from a client outside
        this round's cohort, is not used either.
        """
        accepted: Accepted = []
        records: list[ClientRoundRecord] = []
        seen: set[int] = set()
        cohort = set(self.log.cohort(server_round))
        for msg in replies:
            cid = self.directory.sender(msg, self._addressed)
            if cid is None:
                logger.warning(
                    "round %d: reply from node %d answers no message sent to it; ignored",
                    server_round,
                    msg.metadata.src_node_id,
                )
                continue
            if cid in seen:
                logger.warning("round %d: second reply from client %d ignored", server_round, cid)
                continue
            seen.add(cid)
            if msg.has_error():
                reason = f"client error: {client_error_text(msg.error.reason)}"
                logger.warning("round %d: client %d failed: %s", server_round, cid, reason)
                records.append(record_from_metrics(cid, "failed", None, reason))
                continue
            verdict = self.check_reply(cid, msg.content)
            if cohort and cid not in cohort:
                verdict = dataclasses.replace(
                    verdict, status="rejected", reason="not sampled this round", ledger=None
                )
            if verdict.ledger is not None:
                self.client_ledgers[cid] = verdict.ledger
            if verdict.status in (keys.STATUS_BUDGET_EXHAUSTED, keys.STATUS_REFUSED):
                # the client will not train again in this run: stop sampling it
                self.exhausted.add(cid)
                if verdict.status == keys.STATUS_REFUSED:
                    logger.warning(
                        "round %d: client %d refused: %s", server_round, cid, verdict.reason
                    )
            elif verdict.status == "rejected":
                logger.warning(
                    "round %d: rejected client %d: %s", server_round, cid, verdict.reason
                )
            else:
                accepted.append((cid, msg))
            records.append(
                record_from_metrics(cid, verdict.status, verdict.metrics, verdict.reason)
            )
        for cid in self.log.cohort(server_round):
            if cid not in seen:
                records.append(record_from_metrics(cid, "failed", None, "no reply before timeout"))
        accepted.sort(key=lambda pair: pair[0])
        records.sort(key=lambda r: r.client_id)
        for observe in self.reply_observers:
            observe(self._round_arrays, accepted)
        return accepted, records

    def check_reply(self, cid: int, content: RecordDict) -> Verdict:
        """What the server makes of one reply of client ``cid`` this round (every field
        checked against this round's global model, weight key and the client's declared
        size; see :mod:`strategies.replies`)."""
        weight_key = str(getattr(self, "weighted_by_key", keys.NUM_EXAMPLES))
        rules = ReplyRules(
            reference=self._reference,
            reference_norm=self._reference_norm,
            weight_key=weight_key,
            client_id=cid,
            declared_examples=self.directory.num_examples.get(cid),
            max_step_ratio=self.max_step_ratio,
        )
        return check_reply(
            content.array_records,
            content.metric_records,
            content.config_records,
            rules,
            decode=lambda record: {k: a.numpy() for k, a in record.items()},
        )

    # ------------------------------------------------------------------ the template
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen, select, value, :meth:`aggregate` with guards, report (do not override).

        With fewer accepted updates than :meth:`min_updates`, or an aggregate that must
        not become the global model, :mod:`strategies.guards` decides the round (median
        fallback or the global model kept) and the round's entry says why.
        """
        accepted, records = self.screen_replies(server_round, replies)
        need = self.min_updates()
        short = 0 < len(accepted) < need
        selection = Selection(list(accepted)) if short else self.select(server_round, accepted)
        paid = self.value_updates(server_round, accepted, selection)
        if short:
            f, rule = self.cfg.strategy.num_malicious, self.cfg.strategy.name
            outcome = fallback(selection.chosen, need, f, rule, self._reference)
        else:
            outcome = self._aggregated(server_round, selection.chosen)
        if outcome.arrays is not None:
            outcome = dataclasses.replace(outcome, arrays=self.server_step(outcome.arrays))
        if outcome.note is not None:
            logger.warning("round %d: %s", server_round, outcome.note)
        final = tuple(self._finish(r, selection.notes, paid) for r in records)
        self.log.close(
            RoundEntry(
                round=server_round,
                sampled=self.log.cohort(server_round),
                selected=outcome.used,
                clients=final,
                selection_epsilon=selection.epsilon,
                aggregation_note=outcome.note,
            )
        )
        return outcome.arrays, outcome.metrics

    def server_step(self, arrays: ArrayRecord) -> ArrayRecord:
        """The server optimizer's step (``strategy.server_optimizer``) from this round's
        global model with the released aggregate ``arrays`` (unchanged without one).
        Post-processing of the release: the central-DP wrapper calls it after the noise."""
        if self._server_opt.name == "none":
            return arrays
        aggregate = {k: a.numpy() for k, a in arrays.items()}
        stepped, self._server_opt_state = server_step(
            self._server_opt, self._reference, aggregate, self._server_opt_state
        )
        return array_record(stepped)

    def _aggregated(self, server_round: int, chosen: Accepted) -> RoundOutcome:
        """The rule's aggregate of ``chosen``, checked (:func:`strategies.guards.guarded`)."""
        if not chosen:
            logger.warning(
                "round %d: no update accepted; the global model is unchanged", server_round
            )
            return RoundOutcome()
        used = self.kept_by_rule(chosen)
        dropped = common_metric_keys(chosen)
        if dropped:
            logger.warning("round %d: metrics %s not sent by every client", server_round, dropped)
        arrays, metrics = self.aggregate(server_round, chosen)
        return guarded(RoundOutcome(arrays, metrics, used), self._reference)

    def min_updates(self) -> int:
        """Accepted updates the rule needs to keep its guarantee (1; Krum-style rules
        more). With fewer, :func:`strategies.guards.fallback` decides the round."""
        return 1

    def select(self, server_round: int, accepted: Accepted) -> Selection:
        """Which accepted updates enter aggregation: all of them (SecProbe, random K and
        Krum-style rules override)."""
        return Selection(list(accepted))

    def aggregate(
        self, server_round: int, chosen: Accepted
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The aggregation rule over the chosen updates: the Flower strategy's own."""
        return super().aggregate_train(  # type: ignore[misc,no-any-return]
            server_round, [msg for _, msg in chosen]
        )

    def kept_by_rule(self, chosen: Accepted) -> tuple[int, ...]:
        """Client ids whose updates the aggregation rule uses (``selected`` in metrics).

        All of ``chosen`` here; a rule that discards some itself (Bulyan) overrides this.
        """
        return tuple(cid for cid, _ in chosen)

    def keep_count(self, m: int) -> int:
        """K of ``m`` accepted updates: ``strategy.k`` capped at ``m`` (all when unset)."""
        return min(self.cfg.strategy.k or m, m)

    def value_updates(
        self, server_round: int, accepted: Accepted, selection: Selection
    ) -> Mapping[int, RewardNote]:
        """Reward the accepted updates that carry a DP valuation (``valuation.enabled``).

        Every accepted update is valued, whether or not the selection kept it; SecProbe's
        utilities are reused when it computed them this round.
        """
        if self.rewards is None:
            return {}
        utility = {
            cid: note.utility for cid, note in selection.notes.items() if note.utility is not None
        }
        return self.rewards.value_round(server_round, accepted, self._round_arrays, utility)

    def _finish(
        self,
        record: ClientRoundRecord,
        notes: Mapping[int, SelectionNote],
        paid: Mapping[int, RewardNote],
    ) -> ClientRoundRecord:
        note, reward = notes.get(record.client_id), paid.get(record.client_id)
        if note is not None:
            record = dataclasses.replace(
                record, utility=note.utility, selection_probability=note.selection_probability
            )
        if reward is not None:
            record = dataclasses.replace(record, quality=reward.quality, reward=reward.reward)
        return self._with_total_epsilon(record)

    # ------------------------------------------------------------------ privacy
    def charge_selection(self, client_ids: Iterable[int], epsilon: float) -> None:
        """Record a pure ``epsilon``-DP selection event in each client's server-side ledger."""
        if epsilon <= 0:
            return
        for cid in client_ids:
            ledger = self.selection_ledgers.get(cid, PrivacyLedger())
            self.selection_ledgers[cid] = ledger.with_event(PureDp(epsilon))

    def client_epsilon_total(self, cid: int) -> float | None:
        """ε of all of a client's events: its own ledger plus the server's selection events.

        ``None`` when the server knows of no event of this client.
        """
        own = self.client_ledgers.get(cid)
        server = self.selection_ledgers.get(cid)
        if own is None and server is None:
            return None
        events = (own.events if own else ()) + (server.events if server else ())
        return PrivacyLedger(events=events).epsilon_total(Accounting.of(self.cfg.dp))

    def _with_total_epsilon(self, record: ClientRoundRecord) -> ClientRoundRecord:
        """Add the server's selection events: to ``epsilon_selection`` always, and to
        ``epsilon_total`` only under DP-SGD — without it the client's update is released
        unprotected, and no total ε may suggest otherwise."""
        if record.client_id not in self.selection_ledgers:
            return record  # the client's own epsilon_total is already complete
        server = self.selection_ledgers[record.client_id]
        selection = server.epsilon_total(Accounting.of(self.cfg.dp))
        if not (self.cfg.dp.enabled and self.cfg.dp.mode == "sample"):
            return dataclasses.replace(record, epsilon_selection=selection)
        return dataclasses.replace(
            record,
            epsilon_total=self.client_epsilon_total(record.client_id),
            epsilon_selection=selection,
            relation=self.cfg.dp.neighbouring,
        )
