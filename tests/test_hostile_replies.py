"""A catalogue of hostile and broken train replies against every registered strategy.

Contract test over the whole strategy registry (discovered, not listed), driven without
Ray through each strategy's own ``configure_train`` / ``aggregate_train``: in every case
one client (``H``) sends the hostile reply and ten clients send good ones. Whatever ``H``
sends, the round must complete, ``H`` must be recorded ``rejected`` (or ``failed``) with a
reason, never be aggregated, and the new global model must be finite, of the right shapes
and close to the good clients' updates. (Real runs with NaN uploads are in
``tests/test_selection_runs.py``; the reply checks themselves in ``strategies/replies.py``.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from strategy_harness import strategy_context

from fedsim import keys
from fedsim.config import from_dict
from fedsim.models import build_model
from fedsim.workload import dataset_for
from strategies.central_dp import fedsim_core
from strategies.registry import STRATEGIES, build_strategy

GOOD = 10  # clients 0..9 reply well; clients 10.. each send one hostile reply
H = GOOD  # the hostile client of the single-fault tests
SIZE = 20  # every client's declared size

State = dict[str, torch.Tensor]
#: A case edits the hostile client's (arrays, metrics, status, extra records) in place,
#: or returns a whole replacement Message.
Case = Callable[[dict[str, Any]], None]


#: stands for the strategy's aggregation weight key (``num-examples``; ``unit-weight``
#: where clients keep their sizes private, e.g. under central DP)
WEIGHT = "<weight>"


def _metric(key: str, value: Any) -> Case:
    def edit(r: dict[str, Any]) -> None:
        r["metrics"][r["weight_key"] if key == WEIGHT else key] = value

    return edit


def _drop_metric(key: str) -> Case:
    def edit(r: dict[str, Any]) -> None:
        del r["metrics"][r["weight_key"] if key == WEIGHT else key]

    return edit


def _status(fields: dict[str, Any] | None) -> Case:
    def edit(r: dict[str, Any]) -> None:
        r["status"] = fields

    return edit


def _arrays(fn: Callable[[State], State]) -> Case:
    def edit(r: dict[str, Any]) -> None:
        r["arrays"] = fn(r["arrays"])

    return edit


def _first_layer(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[State], State]:
    def edit(state: State) -> State:
        first = next(iter(state))
        out: dict[str, Any] = dict(state)
        out[first] = fn(state[first].numpy())
        return out

    return edit


def _scaled(factor: float) -> Callable[[State], State]:
    return lambda s: {k: v * factor for k, v in s.items()}


def _records(fn: Callable[[dict[str, Any]], None]) -> Case:
    return fn


_LEDGER_NAN = (
    '{"events": [{"kind": "poisson_gaussian", "noise_multiplier": NaN, '
    '"sample_rate": 0.1, "steps": 10}]}'
)

#: name -> how the hostile reply differs from a good one
CATALOGUE: dict[str, Case] = {
    # the aggregation weight
    "weight-inf": _metric(WEIGHT, float("inf")),
    "weight-nan": _metric(WEIGHT, float("nan")),
    "weight-negative": _metric(WEIGHT, -5),
    "weight-zero": _metric(WEIGHT, 0),
    "weight-fraction": _metric(WEIGHT, 2.5),
    "weight-huge-int": _metric(WEIGHT, 2**62),
    "weight-huge-float": _metric(WEIGHT, 1e300),
    "weight-above-declared-size": _metric(WEIGHT, 100 * SIZE),
    "weight-list": _metric(WEIGHT, [20, 20]),
    "weight-missing": _drop_metric(WEIGHT),
    # every other metric against its domain
    "steps-nan": _metric(keys.STEPS, float("nan")),
    "steps-negative": _metric(keys.STEPS, -1),
    "steps-inf": _metric(keys.STEPS, float("inf")),
    "epsilon-nan": _metric(keys.EPSILON, float("nan")),
    "epsilon-inf": _metric(keys.EPSILON, float("inf")),
    "epsilon-negative": _metric(keys.EPSILON, -1.0),
    "delta-above-one": _metric(keys.DELTA, 2.0),
    "sample-rate-above-one": _metric(keys.SAMPLE_RATE, 3.0),
    "noise-multiplier-nan": _metric(keys.NOISE_MULTIPLIER, float("nan")),
    "relation-unknown": _metric(keys.RELATION, 99),
    "train-loss-nan": _metric(keys.TRAIN_LOSS, float("nan")),
    "train-seconds-negative": _metric(keys.TRAIN_SECONDS, -3.0),
    "pruned-huge": _metric(keys.NUM_PRUNED, 2**40),
    "valuation-inf": _metric(keys.VALUATION, float("inf")),
    "unknown-metric": _metric("give-me-weight", 1.0),
    "client-id-of-another-client": _metric(keys.CLIENT_ID, 0),
    # the status record
    "status-without-code": _status({keys.STATUS_REASON: "x"}),
    "status-code-unknown": _status({keys.STATUS_CODE: "ok-but-better"}),
    "status-code-not-text": _status({keys.STATUS_CODE: 7}),
    "status-extra-field": _status({keys.STATUS_CODE: keys.STATUS_OK, "boost": 1}),
    "ledger-not-json": _status({keys.STATUS_CODE: keys.STATUS_OK, keys.STATUS_LEDGER: "{["}),
    "ledger-nan-sigma": _status(
        {keys.STATUS_CODE: keys.STATUS_OK, keys.STATUS_LEDGER: _LEDGER_NAN}
    ),
    "ledger-not-text": _status({keys.STATUS_CODE: keys.STATUS_OK, keys.STATUS_LEDGER: 5}),
    # the records
    "no-metrics-record": _records(lambda r: r.update(metrics=None)),
    "no-arrays-record": _records(lambda r: r.update(arrays=None)),
    "extra-arrays-record": _records(lambda r: r["extra_arrays"].update(more=r["arrays"])),
    "extra-config-record": _records(lambda r: r["extra_configs"].update(more={"a": 1})),
    # the uploaded arrays
    "array-nan": _arrays(_first_layer(lambda a: np.full_like(a, np.nan))),
    "array-one-inf": _arrays(
        _first_layer(lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3, np.inf, a))
    ),
    "array-complex-nan": _arrays(_first_layer(lambda a: np.full(a.shape, complex(np.nan, 0)))),
    "array-complex": _arrays(_first_layer(lambda a: a.astype(np.complex64))),
    "array-int": _arrays(_first_layer(lambda a: a.astype(np.int64))),
    "array-bool": _arrays(_first_layer(lambda a: a > 0)),
    "array-wrong-shape": _arrays(_first_layer(lambda a: a[:1])),
    "array-flattened": _arrays(_first_layer(lambda a: a.reshape(-1))),
    "array-scalar": _arrays(_first_layer(lambda a: np.array(1.0, dtype=np.float32))),
    "array-missing-layer": _arrays(lambda s: dict(list(s.items())[1:])),
    "array-extra-layer": _arrays(lambda s: {**s, "bonus.weight": torch.zeros(3)}),
    "array-empty-record": _arrays(lambda s: {}),
    "upload-times-1e30": _arrays(_scaled(1e30)),
    "upload-times-1e6": _arrays(_scaled(1e6)),
    "upload-float-max": _arrays(_first_layer(lambda a: np.full_like(a, np.finfo(np.float32).max))),
}

#: cases that only break the step bound (finite, right shapes and dtypes)
STEP_CASES = {"upload-times-1e30", "upload-times-1e6", "upload-float-max"}

#: cases where the reply is a failure rather than a rejection
FAILED = {"client-error"}


def _good(cid: int, state: State) -> State:
    gen = torch.Generator().manual_seed(1000 + cid)
    return {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in state.items()}


def _reply(
    msg: Message, cid: int, state: State, case: Case | None, weight_key: str = keys.NUM_EXAMPLES
) -> Message:
    weight = 1 if weight_key == keys.UNIT_WEIGHT else SIZE
    parts: dict[str, Any] = {
        "weight_key": weight_key,
        "arrays": _good(cid, state),
        "metrics": {keys.CLIENT_ID: cid, weight_key: weight, keys.STEPS: 3},
        "status": {keys.STATUS_CODE: keys.STATUS_OK},
        "extra_arrays": {},
        "extra_configs": {},
    }
    if case is not None:
        case(parts)
    content = RecordDict()
    if parts["arrays"] is not None:
        content[keys.ARRAYS] = _array_record(parts["arrays"])
    if parts["metrics"] is not None:
        content[keys.METRICS] = MetricRecord(parts["metrics"])
    if parts["status"] is not None:
        content[keys.STATUS] = ConfigRecord(parts["status"])
    for name, arrays in parts["extra_arrays"].items():
        content[name] = _array_record(arrays)
    for name, fields in parts["extra_configs"].items():
        content[name] = ConfigRecord(fields)
    return Message(content=content, reply_to=msg)


def _array_record(arrays: dict[str, Any]) -> ArrayRecord:
    """An ArrayRecord of whatever arrays (any dtype) a client chose to send."""
    return ArrayRecord(
        {
            k: Array(np.ascontiguousarray(v.numpy() if isinstance(v, torch.Tensor) else v))
            for k, v in arrays.items()
        }
    )


#: every registered strategy, and FedAvg inside the central-DP wrapper
NAMES = [*STRATEGIES.names(), "fedavg+central"]


def _config(name: str, clients: int) -> Any:
    central = name.endswith("+central")
    dp = {"enabled": True, "mode": "central", "noise_multiplier": 0.5, "delta": 1e-4}
    return from_dict(
        {
            "seed": 3,
            "data": {"name": "pneumoniamnist", "num_clients": clients},
            "model": {"name": "mlp"},
            "dp": dp if central else {"enabled": False},
            "strategy": {
                "name": name.removesuffix("+central"),
                "clients_per_round": clients,
                "k": 3,
                "num_malicious": 1,
            },
        }
    )


Hostile = Callable[[Message, int, State, str], Message | list[Message]]


def _round(name: str, hostile: dict[int, Hostile]) -> tuple[Any, State, State]:
    """One round of ``name`` with GOOD good clients and the ``hostile`` ones."""
    clients = GOOD + len(hostile)
    cfg = _config(name, clients)
    bundle = dataset_for(cfg.data, cfg.seed)
    state = build_model("mlp", bundle.input_shape, bundle.num_classes, seed=0).state_dict()
    ctx = strategy_context(cfg, num_examples=dict.fromkeys(range(clients), SIZE))
    strategy = build_strategy(ctx)
    weight_key = str(getattr(fedsim_core(strategy), "weighted_by_key", keys.NUM_EXAMPLES))
    sent = list(strategy.configure_train(1, ArrayRecord(state), ConfigRecord(), None))  # type: ignore[arg-type]
    assert len(sent) == clients
    replies: list[Message] = []
    for m in sent:
        cid = ctx.directory.client_of[m.metadata.dst_node_id]
        if cid in hostile:
            built = hostile[cid](m, cid, state, weight_key)
            replies.extend(built if isinstance(built, list) else [built])
        else:
            replies.append(_reply(m, cid, state, None, weight_key))
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None, "the ten good updates must still be aggregated"
    return ctx, state, arrays.to_torch_state_dict()


def _assert_sound(ctx: Any, state: State, new: State, expect: dict[int, str]) -> None:
    assert set(new) == set(state)
    assert all(new[k].shape == state[k].shape for k in state)
    assert all(torch.isfinite(v).all() for v in new.values())
    # the good clients moved each weight by ~0.01 noise: the new model stays that close
    # (central DP adds noise of std 0.5 / 10 on top)
    assert max(float((new[k] - state[k]).abs().max()) for k in state) < _tolerance(ctx)
    entry = ctx.log.entry(1)
    records = {r.client_id: r for r in entry.clients}
    wrong = {
        c: (records[c].status, records[c].rejected_reason)
        for c, status in expect.items()
        if records[c].status != status or (status != "ok" and not records[c].rejected_reason)
    }
    assert not wrong, f"hostile replies not refused with a reason: {wrong}"
    refused = {c for c, status in expect.items() if status != "ok"}
    assert not refused & set(entry.selected)
    good = {c: records[c].status for c in range(GOOD)}
    assert set(good.values()) == {"ok"}, good


def _tolerance(ctx: Any) -> float:
    return 0.5 if ctx.cfg.dp.enabled else 0.1


@pytest.mark.parametrize("name", NAMES)
def test_hostile_replies_cost_only_their_senders(name: str, task_identity: None) -> None:
    """Every case of the catalogue at once, one hostile client each, in one round."""
    cases = sorted(CATALOGUE)
    hostile: dict[int, Hostile] = {
        GOOD + i: (lambda m, cid, s, w, case=case: _reply(m, cid, s, CATALOGUE[case], w))
        for i, case in enumerate(cases)
    }
    ctx, state, new = _round(name, hostile)
    # under central DP every finite update is clipped, so a far step is clipped, not refused
    clipped = STEP_CASES if name.endswith("+central") else set()
    expect = {GOOD + i: "ok" if case in clipped else "rejected" for i, case in enumerate(cases)}
    _assert_sound(ctx, state, new, expect)


@pytest.mark.parametrize("name", NAMES)
def test_a_client_error_or_a_duplicate_reply_costs_only_its_sender(
    name: str, task_identity: None
) -> None:
    def failed(m: Message, cid: int, s: State, w: str) -> Message:
        return Message(Error(code=0, reason="worker died"), reply_to=m)

    ctx, state, new = _round(name, {H: failed})
    _assert_sound(ctx, state, new, {H: "failed"})

    def twice(m: Message, cid: int, s: State, w: str) -> list[Message]:
        # a good reply and then a far-off second one: the second is ignored
        return [_reply(m, cid, s, None, w), _reply(m, cid, s, CATALOGUE["upload-times-1e6"], w)]

    ctx, state, new = _round(name, {H: twice})
    records = [r for r in ctx.log.entry(1).clients if r.client_id == H]
    assert len(records) == 1 and records[0].status == "ok"
    assert max(float((new[k] - state[k]).abs().max()) for k in state) < _tolerance(ctx)


@pytest.mark.parametrize("name", ["bulyan", "krum", "multikrum"])
def test_one_nan_client_at_the_minimum_cohort_keeps_the_rule_going(
    name: str, task_identity: None
) -> None:
    """Bulyan at exactly 4f + 3 clients (Krum 2f + 3) with one NaN upload: the round still
    updates the model (median fallback) and says why, instead of never aggregating."""
    need = {"bulyan": 7, "krum": 5, "multikrum": 5}[name]
    cfg = from_dict(
        {
            "seed": 3,
            "data": {"name": "pneumoniamnist", "num_clients": need},
            "model": {"name": "mlp"},
            "dp": {"enabled": False},
            "strategy": {"name": name, "clients_per_round": need, "k": 2, "num_malicious": 1},
        }
    )
    bundle = dataset_for(cfg.data, cfg.seed)
    state = build_model("mlp", bundle.input_shape, bundle.num_classes, seed=0).state_dict()
    ctx = strategy_context(cfg, num_examples=dict.fromkeys(range(need), SIZE))
    strategy = build_strategy(ctx)
    for rnd in (1, 2, 3):
        sent = list(strategy.configure_train(rnd, ArrayRecord(state), ConfigRecord(), None))  # type: ignore[arg-type]
        replies = []
        for m in sent:
            cid = ctx.directory.client_of[m.metadata.dst_node_id]
            replies.append(_reply(m, cid, state, CATALOGUE["array-nan"] if cid == 0 else None))
        arrays, _ = strategy.aggregate_train(rnd, replies)
        assert arrays is not None
        new = arrays.to_torch_state_dict()
        assert all(torch.isfinite(v).all() for v in new.values())
        assert any(not torch.equal(new[k], state[k]) for k in state), "the model must move"
        entry = ctx.log.entry(rnd)
        assert entry.aggregation_note and "median" in entry.aggregation_note
        assert 0 not in entry.selected
        state = {k: v.clone() for k, v in new.items()}


def test_catalogue_size() -> None:
    """The README's reliability table counts these cases."""
    assert len(CATALOGUE) >= 50


@pytest.mark.parametrize(
    "module", ["strategies.replies", "strategies.uploads", "strategies.ledger_check"]
)
def test_reply_check_examples(module: str) -> None:
    """The worked examples in the reply checks' docstrings hold."""
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0
