"""Central (user-level) DP: Flower's server-side clipping wrapper, accounted by fedsim."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedsim import keys
from fedsim.config import from_dict
from fedsim.errors import ConfigError
from fedsim.privacy.central import central_epsilon, plan_central_dp
from fedsim.seeding import numpy_rng
from strategies.central_dp import CentralDP, fedsim_core
from strategies.directory import ClientDirectory
from strategies.registry import build_strategy


def central_config(**over: object) -> dict:
    dp = {"enabled": True, "mode": "central", "delta": 1e-4, "max_grad_norm": 1.0}
    dp.update(over.pop("dp", {}))  # type: ignore[arg-type]
    return {
        "name": "central",
        "seed": 5,
        "rounds": 2,
        "data": {"name": "pneumoniamnist", "num_clients": 3, "partition": "iid"},
        "model": {"name": "mlp"},
        "client": {"local_epochs": 1, "batch_size": 64, "lr": 0.3},
        "dp": dp,
        "strategy": {"name": "fedavg", "clients_per_round": 2},
        **over,
    }


def independent_epsilon(sigma: float, q: float, rounds: int, delta: float) -> float:
    acc = rdp.RdpAccountant()
    event = dp_accounting.GaussianDpEvent(sigma)
    acc.compose(dp_accounting.PoissonSampledDpEvent(q, event) if q < 1 else event, rounds)
    return float(acc.get_epsilon(delta))


def test_config_rejects_incompatible_combinations() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(
            central_config(
                dp={"noise_multiplier": 1.0, "clipping": "per_layer_uniform"},
                strategy={"name": "krum", "clients_per_round": 3},
            )
        )
    text = str(err.value)
    assert "dp.clipping must be 'flat' when dp.mode is 'central'" in text
    assert "strategy.name must be 'fedavg' when dp.mode is 'central'" in text
    with pytest.raises(ConfigError, match=r"dp\.mode must be one of"):
        from_dict(central_config(dp={"noise_multiplier": 1.0, "mode": "local"}))


def test_plan_calibrates_sigma_to_target_over_planned_rounds() -> None:
    cfg = from_dict(central_config(rounds=20, dp={"epsilon": 3.0}))
    plan = plan_central_dp(cfg)
    assert plan.sample_rate == pytest.approx(2 / 3)
    eps = central_epsilon(plan, 20, 1e-4, "rdp")
    assert eps == pytest.approx(3.0, rel=5e-3)
    assert independent_epsilon(plan.noise_multiplier, 2 / 3, 20, 1e-4) == pytest.approx(
        3.0, rel=2e-2
    )
    assert plan.noise_std == pytest.approx(plan.noise_multiplier * 1.0 / 2)
    half = plan.round_event(1)
    assert half.noise_multiplier == pytest.approx(plan.noise_multiplier / 2)
    with pytest.raises(ValueError):
        plan.round_event(3)


def _rec(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


def _reply(instruction: Message, arrays: dict[str, np.ndarray], cid: int) -> Message:
    metrics = MetricRecord({keys.CLIENT_ID: cid, keys.NUM_EXAMPLES: 10 * (cid + 1)})
    metrics[keys.UNIT_WEIGHT] = 1
    content = RecordDict({keys.ARRAYS: _rec(arrays), keys.METRICS: metrics})  # type: ignore[arg-type]
    return Message(content, reply_to=instruction)


def test_wrapper_clips_each_update_and_adds_seeded_noise(task_identity: None) -> None:
    cfg = from_dict(
        central_config(
            data={"name": "pneumoniamnist", "num_clients": 2}, dp={"noise_multiplier": 0.5}
        )
    )
    outer = build_strategy(cfg)
    assert isinstance(outer, CentralDP)
    core = fedsim_core(outer)
    core.attach(
        cfg,
        ClientDirectory(
            node_of={0: 100, 1: 101}, client_of={100: 0, 101: 1}, num_examples={0: 10, 1: 20}
        ),
    )
    glob = {"w": np.zeros((2, 3), dtype=np.float32), "b": np.ones(2, dtype=np.float32)}
    messages = list(outer.configure_train(1, _rec(glob), ConfigRecord(), grid=None))  # type: ignore[arg-type]
    assert len(messages) == 2
    # client 0: small update (norm 0.5, kept); client 1: big update (norm 10, clipped to 1)
    up0 = {"w": np.full((2, 3), 0.5 / np.sqrt(6), np.float32), "b": np.ones(2, np.float32)}
    big = np.zeros((2, 3), np.float32)
    big[0, 0] = 10.0
    up1 = {"w": big, "b": np.ones(2, np.float32)}
    by_node = {m.metadata.dst_node_id: m for m in messages}
    replies = [_reply(by_node[100], up0, 0), _reply(by_node[101], up1, 1)]
    arrays, _ = outer.aggregate_train(1, replies)
    assert arrays is not None
    clipped1 = np.zeros((2, 3), np.float32)
    clipped1[0, 0] = 1.0
    mean_w = (up0["w"] + clipped1) / 2  # uniform mean, not weighted by num-examples
    rng = numpy_rng(cfg.seed, "central-dp-noise", 1)
    std = 0.5 * 1.0 / 2
    expected = {}
    for name, mean in (("w", mean_w), ("b", np.ones(2, np.float32))):
        expected[name] = mean + rng.normal(0.0, std, mean.shape).astype(np.float32)
    got = arrays.to_numpy_ndarrays()
    names = list(arrays.keys())
    for name, value in zip(names, got, strict=True):
        np.testing.assert_allclose(value, expected[name], atol=1e-6)
        plain = mean_w if name == "w" else np.ones(2)
        assert np.abs(value - plain).max() > 1e-3  # noise really was added
    # the federation's epsilon after one full round, in every client's record
    eps = outer.epsilon()
    assert eps == pytest.approx(independent_epsilon(0.5, 1.0, 1, 1e-4), rel=2e-2)
    records = core.round_records[1]
    assert [r.epsilon for r in records] == [eps, eps]
    assert all(r.noise_multiplier == 0.5 and r.sample_rate == 1.0 and r.steps == 1 for r in records)


def test_error_reply_costs_only_its_update_and_is_accounted(task_identity: None) -> None:
    cfg = from_dict(
        central_config(
            data={"name": "pneumoniamnist", "num_clients": 2}, dp={"noise_multiplier": 1.0}
        )
    )
    outer = build_strategy(cfg)
    core = fedsim_core(outer)
    core.attach(
        cfg,
        ClientDirectory(
            node_of={0: 100, 1: 101}, client_of={100: 0, 101: 1}, num_examples={0: 10, 1: 20}
        ),
    )
    glob = {"w": np.zeros(3, dtype=np.float32)}
    messages = list(outer.configure_train(1, _rec(glob), ConfigRecord(), grid=None))  # type: ignore[arg-type]
    by_node = {m.metadata.dst_node_id: m for m in messages}
    bad = {"w": np.array([np.nan, 0, 0], np.float32)}
    replies = [
        _reply(by_node[100], {"w": np.ones(3, np.float32) * 0.1}, 0),
        _reply(by_node[101], bad, 1),
    ]
    arrays, _ = outer.aggregate_train(1, replies)
    assert arrays is not None
    status = {r.client_id: r.status for r in core.round_records[1]}
    assert status == {0: "ok", 1: "rejected"}
    # one of two updates aggregated: accounted with noise multiplier 1.0 * 1/2
    assert outer.epsilon() == pytest.approx(independent_epsilon(0.5, 1.0, 1, 1e-4), rel=2e-2)


@pytest.mark.e2e
def test_two_round_central_run(tmp_path) -> None:
    from fedsim.run import run_experiment
    from fedsim.rundir import read_metrics, read_summary

    cfg = from_dict(central_config(dp={"epsilon": 4.0}))
    summary = run_experiment(cfg, tmp_path)
    plan = plan_central_dp(cfg)
    want = independent_epsilon(plan.noise_multiplier, 2 / 3, 2, 1e-4)
    assert want == pytest.approx(4.0, rel=2e-2)
    assert summary["dp"]["mode"] == "central"
    assert summary["dp"]["max_epsilon_spent"] == pytest.approx(want, rel=2e-2)
    saved = read_summary(tmp_path)
    assert {c["epsilon_spent"] for c in saved["clients"].values()} == {
        summary["dp"]["max_epsilon_spent"]
    }
    lines = read_metrics(tmp_path)
    assert [m["round"] for m in lines] == [1, 2]
    for m in lines:
        assert len(m["selected"]) == 2
        for c in m["clients"].values():
            assert c["noise_multiplier"] == pytest.approx(plan.noise_multiplier)
            assert c["sample_rate"] == pytest.approx(2 / 3)
            assert c["steps"] == m["round"]
    first = independent_epsilon(plan.noise_multiplier, 2 / 3, 1, 1e-4)
    assert next(iter(lines[0]["clients"].values()))["epsilon"] == pytest.approx(first, rel=2e-2)
