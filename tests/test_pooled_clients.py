"""Virtual clients on a pool of SuperNodes (``fedsim run``): addressing and identity.

Driven without Ray: the strategy's ``configure_train`` / ``aggregate_train`` hooks with
hand-built Flower replies, and the ClientApp's reading of a pooled message. (The whole
path runs in ``tests/test_integration.py``, where a run with all clients on one node
reproduces the run with one node per client.)
"""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from clients.client_app import pooled_site
from fedsim import keys
from fedsim.config import from_dict
from fedsim.errors import RunError
from fedsim.models import build_model
from fedsim.round_log import RoundLog
from fedsim.run import pool_size
from fedsim.workload import dataset_for
from strategies.base import StrategyContext
from strategies.directory import ClientDirectory
from strategies.registry import build_strategy

N, POOL = 7, (501, 502, 503)


def _setup() -> tuple:
    cfg = from_dict(
        {
            "seed": 1,
            "data": {"name": "pneumoniamnist", "num_clients": N},
            "model": {"name": "mlp"},
            "dp": {"enabled": False},
            "strategy": {"name": "fedavg", "clients_per_round": N},
        }
    )
    bundle = dataset_for(cfg.data, cfg.seed)
    directory = ClientDirectory(
        node_of={},
        client_of={},
        num_examples=dict.fromkeys(range(N), 20),
        pool=POOL,
        num_clients=N,
    )
    ctx = StrategyContext(cfg, directory, RoundLog(), bundle)
    state = build_model("mlp", bundle.input_shape, bundle.num_classes, seed=0).state_dict()
    return cfg, ctx, build_strategy(ctx), state


def _reply(
    msg: Message,
    cid: int,
    state: dict,
    *,
    node: int | None = None,
    group: str | None = None,
    examples: int = 20,
) -> Message:
    """A well-formed reply of ``cid`` to ``msg`` (optionally from another node / tag)."""
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord({k: v + 0.01 for k, v in state.items()}),
            keys.METRICS: MetricRecord({keys.CLIENT_ID: cid, keys.NUM_EXAMPLES: examples}),
            keys.STATUS: ConfigRecord({keys.STATUS_CODE: keys.STATUS_OK}),
        }
    )
    reply = Message(content=content, reply_to=msg)
    if node is not None:
        reply.metadata.src_node_id = node
    if group is not None:
        reply.metadata.group_id = group
    return reply


def test_pool_size_is_small_and_covers_small_federations() -> None:
    assert pool_size(1) == 1 and pool_size(5) == 5
    assert pool_size(100_000) == pool_size(1_000) <= 16


def test_messages_go_round_the_pool_and_name_their_client(task_identity: None) -> None:
    _, _, strategy, state = _setup()
    sent = list(strategy.configure_train(1, ArrayRecord(state), ConfigRecord(), None))  # type: ignore[arg-type]
    assert [m.metadata.dst_node_id for m in sent] == [POOL[i % 3] for i in range(N)]
    assert [keys.tagged_client(m.metadata.group_id, N) for m in sent] == list(range(N))


def test_replies_count_only_from_the_node_their_message_went_to(task_identity: None) -> None:
    _, ctx, strategy, state = _setup()
    sent = list(strategy.configure_train(1, ArrayRecord(state), ConfigRecord(), None))  # type: ignore[arg-type]
    by_client = {keys.tagged_client(m.metadata.group_id, N): m for m in sent}
    replies = [_reply(by_client[c], c, state) for c in (0, 1, 2, 3)]
    # client 4's message went to POOL[1]; a reply naming it from POOL[0] (where client 3's
    # went) is nobody's answer, and so is a tag the server never sent
    replies.append(_reply(by_client[3], 4, state, group=keys.client_tag(4)))
    replies.append(_reply(by_client[5], 5, state, group="fedsim-client-99"))
    replies.append(_reply(by_client[6], 6, state, group=""))
    replies.append(_reply(by_client[2], 2, state))  # a second reply of client 2
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    records = {r.client_id: r for r in ctx.log.entry(1).clients}
    assert sorted(records) == list(range(N))
    assert [c for c in range(N) if records[c].status == "ok"] == [0, 1, 2, 3]
    for c in (4, 5, 6):
        assert records[c].status == "failed" and "no reply" in (records[c].rejected_reason or "")


def test_client_app_reads_its_client_from_the_message(task_identity: None) -> None:
    msg = Message(
        content=RecordDict(), dst_node_id=POOL[0], message_type="train", group_id=keys.client_tag(4)
    )
    site = pooled_site(msg, N)
    assert site.client_id == 4 and not site.deployed and site.data_path is None


@pytest.mark.parametrize(
    "group", ["", "fedsim-client-", "fedsim-client-7", "fedsim-client--1", "fedsim-client-٣", "x"]
)
def test_client_app_refuses_a_message_naming_no_client(group: str, task_identity: None) -> None:
    msg = Message(content=RecordDict(), dst_node_id=POOL[0], message_type="train", group_id=group)
    with pytest.raises(RunError, match="names no client"):
        pooled_site(msg, N)


def test_server_sizes_are_the_partitions_sizes() -> None:
    from fedsim.workload import partitions_for
    from strategies.server_app import _server_sizes

    cfg, _, _, _ = _setup()
    sizes = _server_sizes(cfg)
    assert sizes == {c: len(p) for c, p in enumerate(partitions_for(cfg.data, cfg.seed))}
    assert sum(sizes.values()) == len(dataset_for(cfg.data, cfg.seed).train)
    private = from_dict(
        {
            "data": {"name": "pneumoniamnist", "num_clients": N},
            "dp": {"neighbouring": "add_remove", "size_bound": 2000, "epsilon": 4.0},
        }
    )
    assert _server_sizes(private) == {}


def test_model_state_is_untouched_by_pooling(task_identity: None) -> None:
    """The pooled strategy aggregates like the dedicated one (same replies, same mean)."""
    _, _, strategy, state = _setup()
    sent = list(strategy.configure_train(1, ArrayRecord(state), ConfigRecord(), None))  # type: ignore[arg-type]
    arrays, _ = strategy.aggregate_train(1, [_reply(m, i, state) for i, m in enumerate(sent)])
    assert arrays is not None
    new = arrays.to_torch_state_dict()
    assert all(torch.allclose(new[k], state[k] + 0.01) for k in state)


def test_largest_clients_are_dispatched_first(task_identity: None) -> None:
    """Longest-processing-time first: the engine runs messages in the order it takes
    them, so the largest clients' messages come first, dealt round the pool in order."""
    cfg, ctx, _, state = _setup()
    sizes = {0: 10, 1: 50, 2: 30, 3: 50, 4: 5, 5: 30, 6: 1}
    directory = ClientDirectory(
        node_of={}, client_of={}, num_examples=sizes, pool=POOL, num_clients=N
    )
    assert directory.dispatch([0, 1, 2, 3, 4, 5, 6]) == [
        (1, 501, keys.client_tag(1)),
        (3, 502, keys.client_tag(3)),
        (2, 503, keys.client_tag(2)),
        (5, 501, keys.client_tag(5)),
        (0, 502, keys.client_tag(0)),
        (4, 503, keys.client_tag(4)),
        (6, 501, keys.client_tag(6)),
    ]
    ctx = StrategyContext(cfg, directory, RoundLog(), ctx.data)
    strategy = build_strategy(ctx)
    sent = list(strategy.configure_train(1, ArrayRecord(state), ConfigRecord(), None))  # type: ignore[arg-type]
    assert [keys.tagged_client(m.metadata.group_id, N) for m in sent] == [1, 3, 2, 5, 0, 4, 6]
    # every reply still counts from the node its client's message went to
    tags = [keys.tagged_client(m.metadata.group_id, N) for m in sent]
    replies = [_reply(m, c, state, examples=sizes[c]) for m, c in zip(sent, tags, strict=True)]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    assert [r.status for r in ctx.log.entry(1).clients] == ["ok"] * N


def test_unknown_sizes_keep_the_id_order() -> None:
    directory = ClientDirectory(node_of={}, client_of={}, num_examples={}, pool=POOL, num_clients=N)
    assert [c for c, _, _ in directory.dispatch([4, 0, 2])] == [0, 2, 4]
    dedicated = ClientDirectory(node_of={0: 11, 1: 12}, client_of={11: 0, 12: 1}, num_examples={})
    assert dedicated.dispatch([1, 0]) == [(1, 12, ""), (0, 11, "")]


def test_pool_order_is_the_order_the_workers_report(task_identity: None) -> None:
    """Each worker's warm-up reply names its node's place in the engine's dispatch order
    (Flower's partition id); the pool follows it, silent nodes last by id."""
    from flwr.app import Context

    from clients.client_app import handle_warm_up
    from strategies.directory import pool_order

    cfg, _, _, _ = _setup()
    nodes = [501, 502, 503, 504]
    replies = []
    for node, place in ((501, 2), (502, 0), (503, 1)):
        query = Message(content=RecordDict(), dst_node_id=node, message_type="query")
        context = Context(
            run_id=1,
            node_id=node,
            node_config={keys.NODE_PARTITION_ID: place},
            state=RecordDict(),
            run_config={},
        )
        replies.append(handle_warm_up(cfg, query, context))  # from the node queried
    assert pool_order(nodes, replies) == (502, 503, 501, 504)
    assert pool_order(nodes, []) == (501, 502, 503, 504)
