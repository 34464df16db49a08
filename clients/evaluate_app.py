"""The ClientApp's evaluate handler: federated (per-site) evaluation.

An evaluate message (``evaluation.federated``) carries the released global model; the
site evaluates it on its held-out split (:mod:`clients.evaluate_round`) and replies with
the DP release of its confusion matrix, its status and — with a release — its ledger.
The site's policy, its privacy state and its data are found exactly as for a train
message (:mod:`clients.client_app`, which registers :func:`handle_evaluate`).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from clients.client_app import (
    load_ledger,
    load_pruned,
    message_site,
    save_ledger,
    site_data_of,
    site_policy,
)
from clients.client_store import RoundStore
from clients.evaluate_round import EvalOutcome, EvalTask, run_site_evaluation
from fedsim import keys
from fedsim.audit.canaries import canary_of
from fedsim.config import Config
from fedsim.data import Split
from fedsim.deploy.site import SiteConfig, SiteData
from fedsim.deploy.state import load_state, record_round, save_state, site_lock
from fedsim.privacy import PrivacyLedger
from fedsim.workload import client_holdout, simulated_client_data, site_parts

logger = logging.getLogger(__name__)


def evaluation_data(cfg: Config, site: SiteConfig) -> tuple[SiteData, Split]:
    """The site's data (for the task's shape) and the held-out split it evaluates on."""
    data = site_data_of(site, cfg)
    if data is None:
        return simulated_client_data(cfg, site.client_id), client_holdout(cfg, site.client_id)
    return site_parts(cfg, site.client_id, data)


def handle_evaluate(
    cfg: Config,
    msg: Message,
    context: Context,
    seeded_noise: bool,
    store: RoundStore | None = None,
    pooled: bool = False,
) -> Message:
    """Evaluate the global model on the site's held-out split and reply with the DP
    release of its confusion matrix (:mod:`clients.evaluate_round`).

    The release's ε enters the site's ledger — in the round store, ``context.state`` or
    the site's state file, exactly where its training events live — before the reply
    leaves; a refusal or an exhausted budget replies with the reason and releases nothing.
    """
    site = message_site(cfg, msg, context, pooled)
    cid = site.client_id
    if canary_of(cfg, cid) is not None:
        refused = _no_release(keys.STATUS_REFUSED, "canary clients do not evaluate")
        return _eval_reply(cid, msg, refused)
    policy, broken = site_policy(site)
    if broken is not None:
        logger.warning("client %d: %s", cid, broken)
        return _eval_reply(cid, msg, _no_release(keys.STATUS_REFUSED, broken))
    server_round = int(msg.content.config_records[keys.CONFIG][keys.SERVER_ROUND])  # type: ignore[arg-type]
    state = msg.content.array_records[keys.ARRAYS].to_torch_state_dict()
    data, holdout = evaluation_data(cfg, site)
    secret = None if seeded_noise else secrets.randbits(63)

    def evaluate(ledger: PrivacyLedger) -> EvalOutcome:
        task = EvalTask(server_round, state, ledger)
        return run_site_evaluation(
            cfg, cid, holdout, data.input_shape, data.num_classes, task,
            noise_root=secret, policy=policy,
        )  # fmt: skip

    if store is not None:  # the version after this round: its training, then this release
        carried = store.load(cid, before_round=server_round + 1)
        outcome = evaluate(carried.ledger)
        if outcome.counts is not None:
            store.save(cid, server_round, dataclasses.replace(carried, ledger=outcome.ledger))
    elif site.state_dir is None:
        outcome = evaluate(load_ledger(context))
        save_ledger(context, outcome.ledger, load_pruned(context))
    else:
        with site_lock(site.state_dir):  # stored before the release leaves the site
            saved = load_state(site.state_dir, cid)
            outcome = evaluate(saved.ledger)
            save_state(site.state_dir, record_round(saved, outcome.ledger, context.run_id, False))
    return _eval_reply(cid, msg, outcome)


def _no_release(status: str, reason: str) -> EvalOutcome:
    return EvalOutcome(status=status, ledger=PrivacyLedger(), reason=reason)


def _eval_reply(client_id: int, msg: Message, outcome: EvalOutcome) -> Message:
    """The reply of an evaluate instruction: the released counts and their ε, the status
    and — with a release — the site's ledger."""
    metrics: dict[str, int | float | list[float]] = {keys.CLIENT_ID: client_id}
    status: dict[str, str] = {keys.STATUS_CODE: outcome.status, keys.STATUS_REASON: outcome.reason}
    if outcome.counts is not None:
        metrics[keys.EVAL_COUNTS] = list(outcome.counts)
        metrics[keys.EVAL_EPSILON] = outcome.epsilon
        if outcome.epsilon_evaluation is not None:
            metrics[keys.EPSILON_EVALUATION] = outcome.epsilon_evaluation
        if outcome.epsilon_total is not None:
            metrics[keys.EPSILON_TOTAL] = outcome.epsilon_total
        status[keys.STATUS_LEDGER] = outcome.ledger.to_json()
    content = RecordDict(
        {keys.METRICS: MetricRecord(metrics), keys.STATUS: ConfigRecord(status)}  # type: ignore[arg-type]
    )
    return Message(content=content, reply_to=msg)
