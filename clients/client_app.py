"""The Flower ClientApp of fedsim.

Each train message runs :func:`clients.local_round.run_local_round` for this node's client
id and replies with the model (ArrayRecord), the accounting figures (MetricRecord) and a
status (ConfigRecord). The client's privacy ledger lives in ``context.state`` so that it
survives across rounds (simulation), or — on a deployed SuperNode whose node config names
a ``state-dir`` — in the site's state file, read before and written after every round, so
it survives restarts and runs (:mod:`fedsim.deploy.state`). A SuperNode whose node config
names a ``data-path`` trains on that local file instead of a partition of the config's
dataset (:mod:`fedsim.deploy.site`). An evaluate message (``evaluation.federated``)
evaluates the global model on the site's held-out split and replies with the DP release
of its confusion matrix (:mod:`clients.evaluate_app`). A query message returns the
client id, which lets the server map Flower's random node ids to stable client ids 0..N-1.
A train message from a coordinator whose fedsim version or config schema differs from
this install's is refused before anything else (:func:`version_refusal`,
:mod:`fedsim.versions`).

``make_client_app(cfg)`` is used by ``fedsim run`` (the typed config travels in the
closure); the module-level ``app`` serves ``flwr run .``, reading ``context.run_config``.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.audit_canaries import canary_upload
from clients.client_store import CarriedState, RoundStore
from clients.faults import inject_fault
from fedsim import keys
from fedsim.audit.canaries import canary_of, federation_size
from fedsim.config import Config, from_run_config
from fedsim.deploy.policy import DEFAULT_POLICY, SitePolicy, load_policy
from fedsim.deploy.site import SiteConfig, SiteData, load_site_data, site_from_node_config
from fedsim.deploy.state import load_state, record_round, save_state, site_lock
from fedsim.errors import FedsimError, RunError
from fedsim.heap import keep_freed_heap
from fedsim.privacy import DpEvent, PrivacyLedger, PureDp
from fedsim.versions import local_version, read_version, version_mismatch
from fedsim.workload import (
    SharedTrainPool,
    image_spec,
    partitions_for,
    simulated_client_data,
    site_parts,
    use_shared_pool,
)

if TYPE_CHECKING:
    from clients.local_round import LocalOutcome

logger = logging.getLogger(__name__)

#: The app's root (the repository, or the installed FAB under ``flwr run``): relative
#: ``config-path`` entries of the run config are read from here.
APP_DIR = Path(__file__).resolve().parents[1]


def client_id_of(context: Context) -> int:
    """The stable client id of this node (``client-id`` or ``partition-id`` in its node config)."""
    return site_from_node_config(context.node_config).client_id


def pooled_site(msg: Message, num_clients: int) -> SiteConfig:
    """The virtual client a pooled simulation's message is for (named in its group id,
    :func:`fedsim.keys.client_tag`): a simulated client, no deployed site.

    Raises
    ------
    RunError
        If the message names no client of the run.
    """
    cid = keys.tagged_client(msg.metadata.group_id, num_clients)
    if cid is None:
        raise RunError(
            f"message group id {msg.metadata.group_id!r} names no client in [0, {num_clients})"
        )
    return SiteConfig(client_id=cid, deployed=False)


def message_site(cfg: Config, msg: Message, context: Context, pooled: bool) -> SiteConfig:
    """The site a train or evaluate message is for: named in the message on a pooled
    node (:func:`pooled_site`), else the node itself (its node config)."""
    if pooled:
        return pooled_site(msg, federation_size(cfg))
    return site_from_node_config(context.node_config)


def site_data_of(site: SiteConfig, cfg: Config) -> SiteData | None:
    """The site's own training data (fitted to the run's declared input shape), or
    ``None`` when it trains on a config partition."""
    if site.data_path is None:
        return None
    return load_site_data(site.data_path, site.data_format, image_spec(cfg.data))


def training_data(cfg: Config, site: SiteConfig) -> SiteData:
    """What the site trains on: its file or simulated partition, without the held-out
    split it keeps for federated evaluation (``evaluation.federated``)."""
    data = site_data_of(site, cfg)
    if data is None:
        return simulated_client_data(cfg, site.client_id)
    return site_parts(cfg, site.client_id, data)[0] if cfg.evaluation.federated else data


def site_policy(site: SiteConfig) -> tuple[SitePolicy | None, str | None]:
    """The privacy policy this site enforces, or why it cannot enforce one.

    A node of Flower's simulation engine has none; a deployed site has its
    ``policy-path`` file or, without one, the strict :data:`DEFAULT_POLICY`. A file that
    cannot be read — or a lifetime cap without a ``state-dir`` — refuses every round
    rather than training under a policy the site did not write.
    """
    if not site.deployed:
        return None, None
    if site.policy_path is None:
        policy = DEFAULT_POLICY
    else:
        try:
            policy = load_policy(site.policy_path)
        except FedsimError as exc:
            return None, f"site policy: cannot be used: {exc}"
    if policy.max_epsilon is not None and site.state_dir is None:
        return None, (
            "site policy: max_epsilon caps the site's lifetime epsilon, which needs its "
            "persistent ledger; the node config has no state-dir"
        )
    return policy, None


def load_ledger(context: Context) -> PrivacyLedger:
    """The client's ledger from ``context.state`` (empty at the first round)."""
    record = context.state.config_records.get(keys.STATE_RECORD)
    if record is None or keys.STATE_LEDGER not in record:
        return PrivacyLedger()
    return PrivacyLedger.from_json(str(record[keys.STATE_LEDGER]))


def load_pruned(context: Context) -> tuple[int, ...] | None:
    """Indices the client dropped by ``valuation.prune`` (``None`` before pruning)."""
    record = context.state.config_records.get(keys.STATE_RECORD)
    if record is None or keys.STATE_PRUNED not in record:
        return None
    return tuple(int(i) for i in json.loads(str(record[keys.STATE_PRUNED])))


def load_vog_state(context: Context) -> dict[str, np.ndarray] | None:
    """VoG's running statistics kept from earlier rounds (``None`` before the first)."""
    record = context.state.array_records.get(keys.STATE_VOG)
    if record is None:
        return None
    return {k: arr.numpy() for k, arr in record.items()}


def save_vog_state(context: Context, state: Mapping[str, np.ndarray] | None) -> None:
    """Keep VoG's running statistics in ``context.state`` for the next round."""
    if state is not None:
        context.state[keys.STATE_VOG] = ArrayRecord(
            OrderedDict((k, Array(np.ascontiguousarray(v))) for k, v in state.items())
        )


def save_ledger(
    context: Context, ledger: PrivacyLedger, pruned: tuple[int, ...] | None = None
) -> None:
    """Store the ledger (and the pruned indices, once decided) in ``context.state``."""
    state: dict[str, str] = {keys.STATE_LEDGER: ledger.to_json()}
    if pruned is not None:
        state[keys.STATE_PRUNED] = json.dumps(list(pruned))
    context.state[keys.STATE_RECORD] = ConfigRecord(state)  # type: ignore[arg-type]


def outcome_metrics(cfg: Config, client_id: int, outcome: LocalOutcome) -> MetricRecord:
    """The MetricRecord of a train reply: only what the run's privacy promise allows.

    - The example count is sent unless the client's size is private
      (``dp.neighbouring: add_remove``), and then neither are the seconds it trained or
      how many samples it pruned; FedAvg weighs such updates uniformly (``unit-weight``).
    - The mean training loss is a non-private statistic of the client's data: it is sent
      only when the run promises no sample-level DP (no DP, or central DP, where the
      coordinator is trusted with raw updates anyway).
    - Under DP-SGD: the client's ε (DP-SGD alone and all its events), δ, the neighbouring
      relation and the accounting inputs (σ, q, cumulative steps).
    """
    metrics: dict[str, int | float | list[int] | list[float]] = {keys.CLIENT_ID: client_id}
    if not cfg.hides_client_size:
        metrics[keys.NUM_EXAMPLES] = outcome.num_examples
        metrics[keys.TRAIN_SECONDS] = float(outcome.train_seconds)
        if outcome.pruned is not None:
            metrics[keys.NUM_PRUNED] = len(outcome.pruned)
    if cfg.uniform_weights:
        metrics[keys.UNIT_WEIGHT] = 1
    sample_dp = cfg.dp.enabled and cfg.dp.mode == "sample"
    if not sample_dp and outcome.state_dict is not None:
        metrics[keys.TRAIN_LOSS] = float(outcome.train_loss)
    else:
        metrics.update(
            {
                keys.EPSILON: float(outcome.epsilon or 0.0),
                keys.EPSILON_TOTAL: float(outcome.epsilon_total or 0.0),
                keys.DELTA: float(cfg.dp.delta),
                keys.RELATION: keys.RELATION_CODES[cfg.dp.neighbouring],
                keys.NOISE_MULTIPLIER: float(outcome.noise_multiplier or 0.0),
                keys.SAMPLE_RATE: float(outcome.sample_rate or 0.0),
                keys.STEPS: int(outcome.ledger.dp_sgd_steps),
            }
        )
    if outcome.valuation is not None:
        metrics[keys.VALUATION] = float(outcome.valuation)
        metrics[keys.VALUATION_EPSILON] = float(outcome.valuation_epsilon or 0.0)
    for metric, value in (outcome.extra_valuations or {}).items():
        metrics[keys.extra_valuation(metric)] = float(value)
    if outcome.valuation_variance is not None:
        metrics[keys.VALUATION_VARIANCE] = float(outcome.valuation_variance)
    return MetricRecord(metrics)


def handle_train(
    cfg: Config,
    msg: Message,
    context: Context,
    seeded_noise: bool,
    store: RoundStore | None = None,
    pooled: bool = False,
) -> Message:
    """Train one round and build the reply.

    ``seeded_noise``: draw batches and DP noise from the config's root seed (``fedsim
    run`` simulations, reproducible); otherwise from a secret this site draws from OS
    entropy every round, which nobody else holds. ``store``: where a simulated client
    keeps its carried state per round (``fedsim run``; it makes runs resumable); without
    it the state lives in Flower's ``context.state`` or, on a deployed site, its state file.
    ``pooled``: the node serves many virtual clients; the message names which
    (:func:`pooled_site`; needs ``store``).
    """
    site = message_site(cfg, msg, context, pooled)
    canary = canary_of(cfg, site.client_id)
    if canary is not None:  # a user-level audit's canary client: no data, no training
        return _canary_reply(cfg, msg, site.client_id, canary)
    policy, broken = site_policy(site)
    if broken is not None:
        logger.warning("client %d: %s", site.client_id, broken)
        return _reply(cfg, site.client_id, msg, _refused(broken))
    secret = None if seeded_noise else secrets.randbits(63)
    if store is not None:
        server_round = int(msg.content.config_records[keys.CONFIG][keys.SERVER_ROUND])  # type: ignore[arg-type]
        if not store.first_attempt(site.client_id, server_round, str(msg.metadata.run_id)):
            raise RunError(
                f"client {site.client_id}: its worker died during round {server_round}; "
                "the round is not trained twice"
            )
        inject_fault(cfg, site.client_id, server_round)  # roles.faulty (simulation only)
        carried = store.load(site.client_id, before_round=server_round)
        outcome = train_round(
            cfg, msg, site, carried.ledger, carried.pruned, carried.vog, secret, policy
        )
        store.save(
            site.client_id,
            server_round,
            CarriedState(outcome.ledger, outcome.pruned, outcome.vog_state),
        )
        return _reply(cfg, site.client_id, msg, outcome)
    pruned = load_pruned(context)  # this run's pruning decision lives in context.state
    vog = load_vog_state(context)  # so do VoG's statistics (vog_checkpoints: rounds)
    if site.state_dir is None:
        ledger = load_ledger(context)
        outcome = train_round(cfg, msg, site, ledger, pruned, vog, secret, policy)
        save_ledger(context, outcome.ledger, outcome.pruned)
    else:
        # Read, train and write under the site's lock: concurrent runs cannot lose ε.
        with site_lock(site.state_dir):
            state = load_state(site.state_dir, site.client_id)
            outcome = train_round(cfg, msg, site, state.ledger, pruned, vog, secret, policy)
            # The ledger is stored before the reply (and the noised model) leaves the site.
            trained = outcome.state_dict is not None
            save_state(site.state_dir, record_round(state, outcome.ledger, context.run_id, trained))
        if outcome.pruned is not None:  # the ledger's home is the state file, not context
            context.state[keys.STATE_RECORD] = ConfigRecord(
                {keys.STATE_PRUNED: json.dumps(list(outcome.pruned))}
            )
    save_vog_state(context, outcome.vog_state)
    return _reply(cfg, site.client_id, msg, outcome)


def _canary_reply(cfg: Config, msg: Message, client_id: int, canary: int) -> Message:
    """The reply of a canary client (:func:`clients.audit_canaries.canary_upload`)."""
    arrays = msg.content.array_records[keys.ARRAYS]
    upload = canary_upload(cfg, canary, {k: a.numpy() for k, a in arrays.items()})
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord(OrderedDict((k, Array(v)) for k, v in upload.items())),
            keys.METRICS: MetricRecord({keys.CLIENT_ID: client_id, keys.UNIT_WEIGHT: 1}),
            keys.STATUS: ConfigRecord({keys.STATUS_CODE: keys.STATUS_OK, keys.STATUS_REASON: ""}),
        }
    )
    return Message(content=content, reply_to=msg)


def _refused(reason: str) -> LocalOutcome:
    from clients.local_round import LocalOutcome

    return LocalOutcome(
        status=keys.STATUS_REFUSED, ledger=PrivacyLedger(), num_examples=0, reason=reason
    )


def _reply(cfg: Config, client_id: int, msg: Message, outcome: LocalOutcome) -> Message:
    """The reply message of a train instruction."""
    content = RecordDict(
        {
            keys.METRICS: outcome_metrics(cfg, client_id, outcome),
            keys.STATUS: ConfigRecord(
                {
                    keys.STATUS_CODE: outcome.status,
                    keys.STATUS_REASON: outcome.reason,
                    keys.STATUS_LEDGER: outcome.ledger.to_json(),
                }
            ),
        }
    )
    if outcome.state_dict is not None:
        content[keys.ARRAYS] = ArrayRecord(outcome.state_dict)
    return Message(content=content, reply_to=msg)


def train_round(
    cfg: Config,
    msg: Message,
    site: SiteConfig,
    ledger: PrivacyLedger,
    pruned: tuple[int, ...] | None = None,
    vog_state: Mapping[str, np.ndarray] | None = None,
    secret_seed: int | None = None,
    policy: SitePolicy | None = None,
) -> LocalOutcome:
    """Run one local round for ``site`` from the train message ``msg``.

    ``pruned``: indices of the site's samples it dropped earlier (``valuation.prune``);
    ``vog_state``: VoG's statistics from its earlier rounds (``vog_checkpoints: rounds``);
    ``secret_seed``: root of the batch-sampling and noise streams (``None``: ``cfg.seed``).
    The site's data is loaded here (its file, or its simulated partition) and handed over.
    """
    # imported here: the driver builds this ClientApp without importing Opacus (~1 s);
    # the workers import it when they start (fedsim.procpool.PRELOAD)
    from clients.local_round import LocalTask, run_local_round

    arrays = msg.content.array_records[keys.ARRAYS]
    train_config = msg.content.config_records[keys.CONFIG]
    raw_bounds = train_config.get(keys.CLIP_BOUNDS)
    task = LocalTask(
        server_round=int(train_config[keys.SERVER_ROUND]),  # type: ignore[arg-type]
        global_state=arrays.to_torch_state_dict(),
        ledger=ledger,
        clip_bounds=None if raw_bounds is None else tuple(float(s) for s in raw_bounds),  # type: ignore[union-attr]
        server_events=server_privacy_events(train_config),
        pruned=pruned,
        vog_state=vog_state,
    )
    data = training_data(cfg, site)
    return run_local_round(cfg, site.client_id, data, task, noise_root=secret_seed, policy=policy)


def server_privacy_events(train_config: ConfigRecord) -> tuple[DpEvent, ...]:
    """The server's selection events for this client: past ones and this round's."""
    events: tuple[DpEvent, ...] = ()
    text = train_config.get(keys.SELECTION_LEDGER)
    if text is not None:
        events = PrivacyLedger.from_json(str(text)).events
    ahead = train_config.get(keys.SELECTION_EPSILON_AHEAD)
    if ahead is not None and float(ahead) > 0:  # type: ignore[arg-type]
        events = (*events, PureDp(float(ahead)))  # type: ignore[arg-type]
    return events


def version_refusal(msg: Message) -> Message | None:
    """The refusal of a train message from a coordinator whose fedsim version or config
    schema differs from this install's (:mod:`fedsim.versions`), or ``None`` when they
    agree.

    Checked before the run config is parsed (a differing schema may not even parse it):
    the reply carries only the status ``refused`` and the reason, which the server logs
    and records for this client without ending the run.
    """
    config = msg.content.config_records.get(keys.CONFIG)
    reason = version_mismatch(read_version(config or {}), local_version())
    if reason is None:
        return None
    logger.warning("node %d: %s", msg.metadata.dst_node_id, reason)
    content = RecordDict(
        {
            keys.METRICS: MetricRecord({}),
            keys.STATUS: ConfigRecord(
                {keys.STATUS_CODE: keys.STATUS_REFUSED, keys.STATUS_REASON: reason}
            ),
        }
    )
    return Message(content=content, reply_to=msg)


def handle_warm_up(cfg: Config, msg: Message, context: Context) -> Message:
    """A pooled simulation's start: load the run's data (and, by running at all, the
    client code's imports) in this worker, so that round 1 starts warm; replies the
    node's place in the engine's dispatch order (its ``partition-id``) when it has one."""
    partitions_for(cfg.data, cfg.seed)
    metrics = MetricRecord({})
    order = context.node_config.get(keys.NODE_PARTITION_ID)
    if isinstance(order, int) and not isinstance(order, bool):
        metrics[keys.NODE_ORDER] = order
    return Message(content=RecordDict({keys.METRICS: metrics}), reply_to=msg)


def handle_query(cfg: Config, msg: Message, context: Context) -> Message:
    """Tell the server which client this node is and how much data it holds."""
    site = site_from_node_config(context.node_config)
    client_id = site.client_id
    metrics = MetricRecord({keys.CLIENT_ID: client_id})
    if not cfg.hides_client_size and canary_of(cfg, client_id) is None:  # add/remove: private
        metrics[keys.NUM_EXAMPLES] = len(training_data(cfg, site).train)
    return Message(content=RecordDict({keys.METRICS: metrics}), reply_to=msg)


def make_client_app(
    cfg: Config | None = None,
    *,
    seeded_noise: bool = False,
    state_root: Path | None = None,
    pooled: bool = False,
    shared: SharedTrainPool | None = None,
) -> ClientApp:
    """A ClientApp for ``cfg``; with ``None`` the config comes from ``context.run_config``.

    ``seeded_noise=True`` only for ``fedsim run`` simulations (reproducible from the seed,
    whose ε assumes the seed is secret); every other use — ``flwr run`` on a deployed
    SuperNode in particular — draws sampling and noise from the site's own entropy.
    ``state_root``: keep simulated clients' carried state per round there
    (:mod:`clients.client_store`; ``fedsim run`` passes ``<run dir>/state/clients``).
    ``pooled``: each node serves many virtual clients (``fedsim run``; needs
    ``state_root``), each train message names its client (:func:`pooled_site`).
    ``shared``: the run's training pool, shared once per machine by the driver
    (:func:`fedsim.workload.share_train_pool`); the workers map it instead of loading
    the dataset.
    """
    if pooled and state_root is None:
        raise ValueError("pooled clients keep their state in a store: give state_root")
    store = None if state_root is None else RoundStore(state_root)
    app = ClientApp()

    def resolve(context: Context) -> Config:
        if shared is not None:
            use_shared_pool(shared)
        return cfg if cfg is not None else from_run_config(context.run_config, APP_DIR)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        keep_freed_heap()  # this process trains: no page faults per step (once per process)
        refused = version_refusal(msg)
        if refused is not None:
            return refused
        return handle_train(resolve(context), msg, context, seeded_noise, store, pooled)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        from clients.evaluate_app import handle_evaluate  # it builds on this module

        refused = version_refusal(msg)
        if refused is not None:
            return refused
        return handle_evaluate(resolve(context), msg, context, seeded_noise, store, pooled)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        if pooled:  # no node stands for a client: the query only warms the worker up
            return handle_warm_up(resolve(context), msg, context)
        return handle_query(resolve(context), msg, context)

    return app


#: ClientApp for ``flwr run .`` (see ``[tool.flwr.app.components]`` in pyproject.toml).
app = make_client_app()
