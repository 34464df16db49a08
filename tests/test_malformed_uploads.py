"""Every strategy rejects malformed uploads with a reason and still aggregates the rest.

Contract test over the whole strategy registry, driven without Ray: the strategy's own
``configure_train`` / ``aggregate_train`` hooks are called with hand-built Flower replies
for two rounds. (``tests/test_selection_runs.py`` checks the same for NaN uploads in real
runs, through metrics.jsonl.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from strategy_harness import strategy_context

from fedsim import keys
from fedsim.config import from_dict
from fedsim.models import build_model
from fedsim.workload import dataset_for
from strategies.registry import STRATEGIES, build_strategy

N = 11  # 4 malformed + 7 good: Bulyan with f = 1 needs 4f + 3 = 7
NAN, WRONG_KEY, WRONG_SHAPE, ZERO_EXAMPLES = 0, 1, 2, 3


def upload(cid: int, state: dict[str, torch.Tensor], rnd: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * rnd + cid)
    out = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in state.items()}
    first = next(iter(out))
    if cid == NAN:
        out[first] = torch.full_like(out[first], float("nan"))
    elif cid == WRONG_KEY:
        out["not_a_layer.weight"] = out.pop(first)
    elif cid == WRONG_SHAPE:
        out[first] = out[first][:1]
    return out


def reply(msg: Message, cid: int, rnd: int, state: dict[str, torch.Tensor]) -> Message:
    n = 0 if cid == ZERO_EXAMPLES else 20
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord(upload(cid, state, rnd)),
            keys.METRICS: MetricRecord({keys.CLIENT_ID: cid, keys.NUM_EXAMPLES: n}),
            keys.STATUS: ConfigRecord({keys.STATUS_CODE: keys.STATUS_OK}),
        }
    )
    return Message(content=content, reply_to=msg)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_strategy_rejects_malformed_uploads(name: str, task_identity: None) -> None:
    cfg = from_dict(
        {
            "seed": 3,
            "data": {"name": "pneumoniamnist", "num_clients": N},
            "model": {"name": "mlp"},
            "dp": {"enabled": False},
            "strategy": {"name": name, "clients_per_round": N, "k": 3, "num_malicious": 1},
        }
    )
    bundle = dataset_for(cfg.data, cfg.seed)
    state = build_model("mlp", bundle.input_shape, bundle.num_classes, seed=0).state_dict()
    ctx = strategy_context(cfg, num_examples=dict.fromkeys(range(N), 20))
    directory = ctx.directory
    strategy = build_strategy(ctx)
    for rnd in (1, 2):
        sent = list(strategy.configure_train(rnd, ArrayRecord(state), ConfigRecord(), None))  # type: ignore[arg-type]
        assert len(sent) == N
        replies = [reply(m, directory.client_of[m.metadata.dst_node_id], rnd, state) for m in sent]
        arrays, _ = strategy.aggregate_train(rnd, replies)
        assert arrays is not None, "the well-formed updates must still be aggregated"
        new = arrays.to_torch_state_dict()
        assert set(new) == set(state)
        assert all(torch.isfinite(v).all() for v in new.values())
        assert all(new[k].shape == state[k].shape for k in state)
        records = {r.client_id: r for r in ctx.log.entry(rnd).clients}
        reasons = {c: records[c].rejected_reason or "" for c in range(N)}
        assert "non-finite" in reasons[NAN]
        assert "wrong array keys" in reasons[WRONG_KEY] and "not_a_layer" in reasons[WRONG_KEY]
        assert "shape" in reasons[WRONG_SHAPE]
        assert "num-examples" in reasons[ZERO_EXAMPLES]
        bad = {NAN, WRONG_KEY, WRONG_SHAPE, ZERO_EXAMPLES}
        for c in range(N):
            assert (records[c].status == "rejected") == (c in bad)
        selected = ctx.log.entry(rnd).selected
        assert selected and not set(selected) & bad
        state = {k: v.clone() for k, v in new.items()}


def test_krum_and_bulyan_report_what_their_rule_kept(task_identity: None) -> None:
    # Three far-off updates among seven: Krum keeps one update, MultiKrum k=3, Bulyan
    # M - 2f = 5 — none of them one of the far-off ones.
    counts = {}
    for name in ("krum", "multikrum", "bulyan"):
        cfg = from_dict(
            {
                "data": {"name": "pneumoniamnist", "num_clients": 7},
                "model": {"name": "mlp"},
                "dp": {"enabled": False},
                "strategy": {"name": name, "k": 3, "num_malicious": 1},
            }
        )
        bundle = dataset_for(cfg.data, cfg.seed)
        state = build_model("mlp", bundle.input_shape, bundle.num_classes, seed=0).state_dict()
        ctx = strategy_context(
            cfg, {c: 10 + c for c in range(7)}, num_examples=dict.fromkeys(range(7), 20)
        )
        directory = ctx.directory
        strategy = build_strategy(ctx)
        sent = list(strategy.configure_train(1, ArrayRecord(state), ConfigRecord(), None))  # type: ignore[arg-type]
        replies = []
        for m in sent:
            cid = directory.client_of[m.metadata.dst_node_id]
            far = 50.0 if cid >= 5 else 0.0
            upd = {k: v + far + 0.01 * (cid + 1) for k, v in state.items()}
            content = RecordDict(
                {
                    keys.ARRAYS: ArrayRecord(upd),
                    keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 20}),
                }
            )
            replies.append(Message(content=content, reply_to=m))
        strategy.aggregate_train(1, replies)
        selected = ctx.log.entry(1).selected
        assert not set(selected) & {5, 6}
        counts[name] = len(selected)
    assert counts == {"krum": 1, "multikrum": 3, "bulyan": 5}
    assert np.isfinite(list(counts.values())).all()
