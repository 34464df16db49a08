"""Central (user-level) DP: DP-FedAvg with Poisson cohorts and a fixed denominator.

Every ε here is checked against the worst-case neighbouring pair computed directly
(:mod:`tests.privacy_oracle`, which uses neither fedsim's accounting nor dp-accounting).
The tests would fail on the earlier implementation, which released the mean over the
updates that arrived and accounted a sensitivity of C on the sum (so it printed ε 4.00
for the quickstart where replace-one gives ~8.6).
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from privacy_oracle import epsilon_bounds
from strategy_harness import strategy_context

from fedsim import keys
from fedsim.config import from_dict
from fedsim.errors import ConfigError
from fedsim.privacy import Accounting
from fedsim.privacy.central import central_epsilon, central_release, clip_update, plan_central_dp
from fedsim.seeding import numpy_rng
from strategies.central_dp import CentralDP, fedsim_core
from strategies.cohorts import PoissonCohort
from strategies.registry import build_strategy

SHARED_RAY = True  # its in-process runs share one Ray and warm workers (conftest)


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


def test_config_rejects_incompatible_combinations() -> None:
    from fedsim.run import check_config

    with pytest.raises(ConfigError) as err:
        from_dict(central_config(dp={"noise_multiplier": 1.0, "clipping": "per_layer_uniform"}))
    assert "dp.clipping must be 'flat' when dp.mode is 'central'" in str(err.value)
    krum = from_dict(central_config(dp={"noise_multiplier": 1.0}, strategy={"name": "krum"}))
    with pytest.raises(ConfigError, match=r"strategy\.name must be 'fedavg' when dp\.mode is"):
        check_config(krum)  # the central-DP wrapper's own rule
    with pytest.raises(ConfigError, match=r"dp\.mode must be one of"):
        from_dict(central_config(dp={"noise_multiplier": 1.0, "mode": "local"}))


@pytest.mark.parametrize("relation", ["replace_one", "add_remove"])
@pytest.mark.parametrize(("num_clients", "per_round", "rounds"), [(5, 5, 8), (10, 4, 6)])
def test_reported_epsilon_covers_the_worst_neighbouring_pair(
    relation: str, num_clients: int, per_round: int, rounds: int
) -> None:
    """The printed ε of the calibrated plan is within the worst-case pair's ε bracket (the
    exact ε lies in [low, high]), so it is neither understated nor loose."""
    cfg = from_dict(
        central_config(
            rounds=rounds,
            data={"name": "pneumoniamnist", "num_clients": num_clients},
            strategy={"name": "fedavg", "clients_per_round": per_round},
            dp={"epsilon": 4.0, "neighbouring": relation},
        )
    )
    plan = plan_central_dp(cfg)
    q = per_round / num_clients
    assert plan.sample_rate == pytest.approx(q)
    reported = central_epsilon(plan, rounds, Accounting.of(cfg.dp))
    assert reported == pytest.approx(4.0, rel=5e-3)
    low, high = epsilon_bounds([(plan.noise_multiplier, q, rounds)], 1e-4, relation)
    assert low * (1 - 1e-3) <= reported <= high * (1 + 1e-3)


def test_fewer_replies_than_planned_is_the_same_event() -> None:
    cfg = from_dict(central_config(dp={"noise_multiplier": 1.0}))
    plan = plan_central_dp(cfg)
    assert plan.round_event() == plan.round_event()
    assert plan.denominator == 2
    assert plan.noise_std == pytest.approx(1.0 * 1.0)  # σ·C on the sum


def test_release_is_global_plus_noisy_clipped_sum_over_fixed_m() -> None:
    cfg = from_dict(central_config(dp={"noise_multiplier": 0.5, "max_grad_norm": 1.0}))
    plan = plan_central_dp(cfg)
    glob = {"w": np.zeros((2, 3), np.float32), "steps": np.array([7], np.int64)}
    small = {"w": np.full((2, 3), 0.1, np.float32), "steps": np.array([9], np.int64)}
    big = {"w": np.zeros((2, 3), np.float32), "steps": np.array([1], np.int64)}
    big["w"][0, 0] = 10.0
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, 0.5, (2, 3))
    out = central_release(
        glob, [small, big], plan, lambda shape, std: np.random.default_rng(3).normal(0, std, shape)
    )
    clipped_big = np.zeros((2, 3))
    clipped_big[0, 0] = 1.0
    expected = (small["w"] + clipped_big + noise) / 2  # m = clients_per_round = 2
    np.testing.assert_allclose(out["w"], expected.astype(np.float32), atol=1e-6)
    assert out["steps"].tolist() == [7]  # non-float arrays keep the global value
    # one update arriving: the denominator is still m
    one = central_release(glob, [small], plan, lambda shape, std: np.zeros(shape))
    np.testing.assert_allclose(one["w"], small["w"] / 2, atol=1e-7)
    clipped, norm = clip_update({"a": np.array([3.0, 4.0])}, 1.0)
    assert norm == pytest.approx(5.0) and np.linalg.norm(clipped["a"]) == pytest.approx(1.0)


def test_poisson_cohort_includes_each_client_independently_at_rate_q() -> None:
    cohort = PoissonCohort(0.3, lambda r: numpy_rng(0, "client-sampling", r))
    counts = np.zeros(10)
    sizes = []
    for r in range(1, 4001):
        chosen = cohort.sample(list(range(10)), r)
        counts[chosen] += 1
        sizes.append(len(chosen))
    np.testing.assert_allclose(counts / 4000, 0.3, atol=0.03)
    assert 0 in sizes and max(sizes) >= 7  # the size varies, empty cohorts happen


def _rec(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


def _reply(instruction: Message, arrays: dict[str, np.ndarray], cid: int) -> Message:
    metrics = MetricRecord({keys.CLIENT_ID: cid, keys.NUM_EXAMPLES: 10 * (cid + 1)})
    metrics[keys.UNIT_WEIGHT] = 1
    content = RecordDict({keys.ARRAYS: _rec(arrays), keys.METRICS: metrics})  # type: ignore[arg-type]
    return Message(content, reply_to=instruction)


def _wrapper(cfg_dict: dict) -> tuple[CentralDP, object]:
    cfg = from_dict(cfg_dict)
    outer = build_strategy(strategy_context(cfg, num_examples={0: 10, 1: 20}), seeded=True)
    assert isinstance(outer, CentralDP)
    return outer, fedsim_core(outer)


def test_wrapper_releases_the_seeded_noisy_sum_and_accounts(task_identity: None) -> None:
    # q = 1: both clients every round, so the test is deterministic in its cohort
    outer, core = _wrapper(
        central_config(
            data={"name": "pneumoniamnist", "num_clients": 2}, dp={"noise_multiplier": 0.5}
        )
    )
    glob = {"w": np.zeros((2, 3), dtype=np.float32), "b": np.ones(2, dtype=np.float32)}
    messages = list(outer.configure_train(1, _rec(glob), ConfigRecord(), grid=None))  # type: ignore[arg-type]
    assert len(messages) == 2
    up0 = {"w": np.full((2, 3), 0.5 / np.sqrt(6), np.float32), "b": np.ones(2, np.float32)}
    big = np.zeros((2, 3), np.float32)
    big[0, 0] = 10.0
    up1 = {"w": big, "b": np.ones(2, np.float32)}
    by_node = {m.metadata.dst_node_id: m for m in messages}
    arrays, _ = outer.aggregate_train(
        1, [_reply(by_node[100], up0, 0), _reply(by_node[101], up1, 1)]
    )
    assert arrays is not None
    clipped1 = np.zeros((2, 3))
    clipped1[0, 0] = 1.0
    rng = numpy_rng(5, "central-dp-noise", 1)
    std = 0.5 * 1.0  # σ·C on the sum
    noise_w = rng.normal(0.0, std, (2, 3))
    noise_b = rng.normal(0.0, std, (2,))
    got = dict(zip(arrays.keys(), arrays.to_numpy_ndarrays(), strict=True))
    np.testing.assert_allclose(got["w"], (up0["w"] + clipped1 + noise_w) / 2, atol=1e-6)
    np.testing.assert_allclose(got["b"], 1 + noise_b / 2, atol=1e-6)
    # one release, q = 1, replace-one: the closed form of a Gaussian shift of 2C/(σC)
    low, high = epsilon_bounds([(0.5, 1.0, 1)], 1e-4, "replace_one")
    assert low * 0.999 <= outer.epsilon() <= high * 1.001
    records = core.log.entry(1).clients  # type: ignore[attr-defined]
    assert [r.epsilon for r in records] == [outer.epsilon()] * 2
    assert all(r.relation == "replace_one" and r.sample_rate == 1.0 for r in records)


def test_rejected_reply_does_not_change_the_event(task_identity: None) -> None:
    outer, core = _wrapper(
        central_config(
            data={"name": "pneumoniamnist", "num_clients": 2}, dp={"noise_multiplier": 1.0}
        )
    )
    glob = {"w": np.zeros(3, dtype=np.float32)}
    messages = list(outer.configure_train(1, _rec(glob), ConfigRecord(), grid=None))  # type: ignore[arg-type]
    by_node = {m.metadata.dst_node_id: m for m in messages}
    bad = {"w": np.array([np.nan, 0, 0], np.float32)}
    arrays, _ = outer.aggregate_train(
        1,
        [
            _reply(by_node[100], {"w": np.ones(3, np.float32) * 0.1}, 0),
            _reply(by_node[101], bad, 1),
        ],
    )
    assert arrays is not None
    status = {r.client_id: r.status for r in core.log.entry(1).clients}  # type: ignore[attr-defined]
    assert status == {0: "ok", 1: "rejected"}
    low, high = epsilon_bounds([(1.0, 1.0, 1)], 1e-4, "replace_one")
    assert low * 0.999 <= outer.epsilon() <= high * 1.001  # a full release's ε, not σ/2's


def test_unseeded_wrapper_draws_fresh_noise(task_identity: None) -> None:
    cfg = central_config(
        data={"name": "pneumoniamnist", "num_clients": 2}, dp={"noise_multiplier": 1.0}
    )
    outs = []
    for _ in range(2):
        cfg_obj = from_dict(cfg)
        outer = build_strategy(strategy_context(cfg_obj), seeded=False)
        assert isinstance(outer, CentralDP)
        glob = {"w": np.zeros(4, dtype=np.float32)}
        msgs = list(outer.configure_train(1, _rec(glob), ConfigRecord(), grid=None))  # type: ignore[arg-type]
        replies = [
            _reply(m, {"w": np.zeros(4, np.float32)}, {100: 0, 101: 1}[m.metadata.dst_node_id])
            for m in msgs
        ]
        arrays, _ = outer.aggregate_train(1, replies)
        assert arrays is not None
        outs.append(arrays.to_numpy_ndarrays()[0])
    assert not np.allclose(outs[0], outs[1])  # the seed alone does not give the noise away


@pytest.mark.e2e
def test_two_round_central_run(tmp_path) -> None:
    from fedsim.run import run_experiment
    from fedsim.rundir import read_metrics, read_summary

    cfg = from_dict(central_config(dp={"epsilon": 4.0}))
    summary = run_experiment(cfg, tmp_path)
    plan = plan_central_dp(cfg)
    low, high = epsilon_bounds([(plan.noise_multiplier, 2 / 3, 2)], 1e-4, "replace_one")
    assert summary["dp"]["mode"] == "central"
    assert summary["dp"]["neighbouring"] == "replace_one"
    assert low * 0.999 <= summary["dp"]["max_epsilon_spent"] <= high * 1.001
    saved = read_summary(tmp_path)
    assert {c["epsilon_spent"] for c in saved["clients"].values()} == {
        summary["dp"]["max_epsilon_spent"]
    }
    lines = read_metrics(tmp_path)
    assert [m["round"] for m in lines] == [1, 2]
    for m in lines:
        for c in m["clients"].values():
            assert c["noise_multiplier"] == pytest.approx(plan.noise_multiplier)
            assert c["sample_rate"] == pytest.approx(2 / 3)
            assert c["steps"] == m["round"]
            assert c["relation"] == "replace_one"
