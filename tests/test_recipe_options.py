"""The recipe options of issue 17: a fixed number of local steps, uniform weighting and the
decision threshold set on the server's validation split."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from client_harness import simulated_round
from flwr.app import Array, ArrayRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.client_app import outcome_metrics
from fedsim import keys
from fedsim.calibration import balanced_threshold, shift_binary_bias
from fedsim.config import Config, build_dataclass, cross_checks, from_dict
from fedsim.evaluation import evaluate
from fedsim.models import build_model
from fedsim.privacy.planning import plan_dp_sgd, planned_dp_sgd_steps
from fedsim.workload import dataset_for
from strategies.calibrate import calibrated_state


def _balanced(margins: np.ndarray, labels: np.ndarray, t: float) -> float:
    pred = margins > t
    return 0.5 * (np.mean(pred[labels == 1]) + np.mean(~pred[labels == 0]))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=2, max_size=30),
    st.lists(st.booleans(), min_size=2, max_size=30),
)
def test_threshold_is_the_best_balanced_accuracy_cut(ints: list[int], flags: list[bool]) -> None:
    n = min(len(ints), len(flags))
    margins = np.asarray(ints[:n], dtype=float) / 2.0  # ties on purpose
    labels = np.asarray(flags[:n], dtype=int)
    t = balanced_threshold(margins, labels)
    if labels.min() == labels.max():
        assert t == 0.0
        return
    cuts = np.concatenate([[margins.min() - 1], np.unique(margins)])  # every realisable rule
    best = max(_balanced(margins, labels, c) for c in cuts)
    assert _balanced(margins, labels, t) == pytest.approx(best)


def test_bias_shift_moves_the_margin_by_the_threshold() -> None:
    bias = np.array([0.3, -0.1], dtype=np.float32)
    shifted = shift_binary_bias(bias, 0.8)
    assert (shifted[1] - shifted[0]) - (bias[1] - bias[0]) == pytest.approx(-0.8)
    assert shifted.mean() == pytest.approx(bias.mean())
    with pytest.raises(ValueError, match="two biases"):
        shift_binary_bias(np.zeros(3), 1.0)


def test_calibrated_model_has_the_best_validation_balanced_accuracy() -> None:
    cfg = from_dict({"data": {"name": "pneumoniamnist"}, "dp": {"enabled": False}})
    data = dataset_for(cfg.data, 0)
    model = build_model("mlp", data.input_shape, 2, seed=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.from_numpy(data.train.x[:512].copy()), torch.from_numpy(data.train.y[:512].copy())
    for _ in range(40):  # a model that ranks well
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():  # ... but sits at class 1 (the quickstart's failure)
        list(model.parameters())[-1][1] += 5.0
    before = evaluate(model, data.val)
    scratch = build_model("mlp", data.input_shape, 2, seed=0)
    model.load_state_dict(calibrated_state(scratch, model.state_dict(), data))
    after = evaluate(model, data.val)
    assert before.balanced_accuracy is not None and after.balanced_accuracy is not None
    assert after.balanced_accuracy >= before.balanced_accuracy
    assert after.balanced_accuracy > before.balanced_accuracy + 0.05  # it was far off
    assert after.auc == pytest.approx(before.auc, abs=1e-3)  # same ranking (float32 ties aside)


def _dp_cfg(**client: object) -> Config:
    return from_dict(
        {
            "rounds": 3,
            "data": {"name": "pneumoniamnist", "num_clients": 4},
            "model": {"name": "mlp"},
            "client": {"batch_size": 64, **client},
            "dp": {"epsilon": 3.0},
        }
    )


def test_fixed_local_steps_are_planned_taken_and_accounted() -> None:
    cfg = _dp_cfg(local_steps=7)
    plan = plan_dp_sgd(cfg, 500)
    assert plan.steps_per_round == 7 and planned_dp_sgd_steps(cfg, 500) == 21
    assert plan.sample_rate == pytest.approx(1 / 8)  # q stays B/n
    start = build_model("mlp", (1, 28, 28), 2, seed=0).state_dict()
    out = simulated_round(cfg, 0, start, 1)
    assert out.status == "ok" and out.ledger.dp_sgd_steps == 7
    plain = simulated_round(from_dict({**cfg.to_dict(), "dp": {"enabled": False}}), 0, start, 1)
    assert plain.status == "ok"


def test_more_steps_need_more_noise_for_the_same_epsilon() -> None:
    few, many = plan_dp_sgd(_dp_cfg(local_steps=5), 500), plan_dp_sgd(_dp_cfg(local_steps=50), 500)
    assert many.noise_multiplier > few.noise_multiplier


def test_uniform_weighting_sends_unit_weights() -> None:
    cfg = from_dict({"dp": {"enabled": False}, "strategy": {"weighting": "uniform"}})
    assert cfg.uniform_weights
    from clients.local_round import LocalOutcome
    from fedsim.privacy import PrivacyLedger

    outcome = LocalOutcome(status="ok", ledger=PrivacyLedger(), num_examples=10)
    metrics = outcome_metrics(cfg, 0, outcome)
    assert metrics[keys.UNIT_WEIGHT] == 1 and metrics[keys.NUM_EXAMPLES] == 10


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {
                "data": {"name": "diabetes"},
                "model": {"name": "mlp"},
                "strategy": {"calibrate": "threshold"},
            },
            "strategy.calibrate must be 'none' for the regression dataset",
        ),
        (
            {
                "data": {"name": "diabetes"},
                "model": {"name": "secprobe_mlp8"},
                "client": {"mechanism": "functional", "local_steps": 3},
            },
            "client.local_steps must be null with client.mechanism 'functional'",
        ),
    ],
)
def test_recipe_option_rules(raw: dict, message: str) -> None:
    problems = cross_checks(build_dataclass(Config, raw))
    assert any(message in p for p in problems), problems


def test_every_model_ends_with_its_output_bias() -> None:
    # strategies.calibrate shifts the last tensor of the state_dict
    from fedsim.models import MODELS

    for name, classes in itertools.product(MODELS.names(), (2, 5)):
        shape = (1, 1, 10) if name.startswith("secprobe") else (1, 28, 28)
        state = build_model(name, shape, classes, seed=0).state_dict()
        key = list(state)[-1]
        assert key.endswith("bias") and tuple(state[key].shape) == (classes,), name


# ------------------------------------------------------------------ server optimizers


def test_server_momentum_and_adam_by_hand() -> None:
    from fedsim.server_opt import ServerOptimizer, ServerOptState, server_step

    w0 = {"w": np.array([1.0, -1.0], np.float32), "n": np.array([3], np.int64)}
    a1 = {"w": np.array([2.0, -1.0], np.float32), "n": np.array([4], np.int64)}
    mom = ServerOptimizer("momentum", lr=0.5, beta1=0.9)
    w1, s1 = server_step(mom, w0, a1, ServerOptState())
    np.testing.assert_allclose(w1["w"], [1.5, -1.0])  # m = Δ = [1, 0]
    assert w1["n"].tolist() == [4]  # integer buffers take the aggregate
    w2, _ = server_step(mom, w1, {"w": w1["w"] + 1, "n": a1["n"]}, s1)
    np.testing.assert_allclose(w2["w"], w1["w"] + 0.5 * (0.9 * np.array([1, 0]) + 1))
    adam = ServerOptimizer("adam", lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    w1, s1 = server_step(adam, w0, a1, ServerOptState())
    m, v = 0.1 * np.array([1.0, 0.0]), 0.01 * np.array([1.0, 0.0])
    np.testing.assert_allclose(w1["w"], w0["w"] + 0.1 * m / (np.sqrt(v) + 1e-3), rtol=1e-6)
    again = ServerOptState.from_json(json.loads(json.dumps(s1.to_json())))
    np.testing.assert_array_equal(again.first["w"], s1.first["w"])
    np.testing.assert_array_equal(again.second["w"], s1.second["w"])
    same, _ = server_step(ServerOptimizer(), w0, a1, ServerOptState())
    assert same is not a1 and np.array_equal(same["w"], a1["w"])


def _arrays(values: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in values.items()})


def test_strategy_steps_with_momentum_and_keeps_it_across_a_resume(task_identity: None) -> None:
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
    from strategy_harness import strategy_context

    from strategies.central_dp import fedsim_core
    from strategies.registry import build_strategy

    cfg = from_dict(
        {
            "data": {"name": "pneumoniamnist", "num_clients": 2},
            "dp": {"enabled": False},
            "strategy": {
                "server_optimizer": "momentum",
                "server_lr": 1.0,
                "server_momentum": 0.5,
                "weighting": "uniform",
            },
        }
    )

    def fresh():
        return fedsim_core(build_strategy(strategy_context(cfg), seeded=True))

    def round_(strategy, server_round: int, glob: np.ndarray, up: np.ndarray):
        msgs = list(
            strategy.configure_train(server_round, _arrays({"w": glob}), ConfigRecord(), grid=None)
        )
        replies = []
        for msg in msgs:
            cid = strategy.directory.client_of[msg.metadata.dst_node_id]
            metrics = MetricRecord(
                {keys.CLIENT_ID: cid, keys.NUM_EXAMPLES: 10, keys.UNIT_WEIGHT: 1}
            )
            content = RecordDict({keys.ARRAYS: _arrays({"w": up}), keys.METRICS: metrics})
            replies.append(Message(content, reply_to=msg))
        arrays, _ = strategy.aggregate_train(server_round, replies)
        return arrays["w"].numpy()

    glob = np.zeros(3, np.float32)
    first = fresh()
    w1 = round_(first, 1, glob, glob + 1.0)
    np.testing.assert_allclose(w1, 1.0)  # m = Δ = 1
    resumed = fresh()
    resumed.restore_state(json.loads(json.dumps(first.export_state())))
    w2 = round_(resumed, 2, w1, w1 + 1.0)
    np.testing.assert_allclose(w2, 1.0 + 0.5 * 1.0 + 1.0)  # m = 0.5·1 + 1


@pytest.mark.e2e
def test_run_releases_the_calibrated_model_and_trains_the_other(tmp_path) -> None:
    # model.pt and every evaluation are the calibrated model; the resume checkpoint (what
    # the clients train from) is not; they differ in the output bias only.
    from fedsim.run import run_experiment
    from fedsim.rundir import read_metrics

    cfg = from_dict(
        {
            "seed": 1,
            "rounds": 2,
            "data": {"name": "pneumoniamnist", "num_clients": 3, "partition": "dirichlet"},
            "model": {"name": "mlp"},
            "client": {"batch_size": 64, "lr": 0.1},
            "dp": {"enabled": False},
            "strategy": {"calibrate": "threshold"},
        }
    )
    run_experiment(cfg, tmp_path)
    released = torch.load(tmp_path / "model.pt", weights_only=True)
    trained = torch.load(tmp_path / "state" / "model.pt", weights_only=True)
    keys_ = list(released)
    assert all(torch.equal(released[k], trained[k]) for k in keys_[:-1])
    data = dataset_for(cfg.data, cfg.seed)
    scratch = build_model("mlp", data.input_shape, 2, seed=0)
    expected = calibrated_state(scratch, trained, data)
    assert torch.allclose(released[keys_[-1]], expected[keys_[-1]])
    model = build_model("mlp", data.input_shape, 2, seed=0)
    model.load_state_dict(released)
    last = read_metrics(tmp_path)[-1]
    assert last["test_accuracy"] == pytest.approx(evaluate(model, data.test).accuracy)


def test_central_dp_steps_the_server_optimizer_after_the_noise(task_identity: None) -> None:
    # FedAvgM on the noisy release: round 1's step equals the release (m = Δ, η = 1), and
    # round 2's is the plain release plus β times round 1's noisy step.
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
    from strategy_harness import strategy_context

    from strategies.registry import build_strategy

    def run(optimizer: str) -> list[np.ndarray]:
        cfg = from_dict(
            {
                "data": {"name": "pneumoniamnist", "num_clients": 2},
                "dp": {"mode": "central", "noise_multiplier": 0.5, "max_grad_norm": 1.0},
                "strategy": {"server_optimizer": optimizer, "server_momentum": 0.5},
            }
        )
        outer = build_strategy(strategy_context(cfg, num_examples={0: 10, 1: 20}), seeded=True)
        glob, out = np.zeros(3, np.float32), []
        for server_round in (1, 2):
            msgs = list(
                outer.configure_train(server_round, _arrays({"w": glob}), ConfigRecord(), grid=None)
            )
            replies = []
            for msg in msgs:
                cid = 0 if msg.metadata.dst_node_id == 100 else 1
                metrics = MetricRecord({keys.CLIENT_ID: cid, keys.UNIT_WEIGHT: 1})
                up = glob + np.float32(0.1 * (cid + 1))
                content = RecordDict({keys.ARRAYS: _arrays({"w": up}), keys.METRICS: metrics})
                replies.append(Message(content, reply_to=msg))
            arrays, _ = outer.aggregate_train(server_round, replies)
            glob = arrays["w"].numpy()
            out.append(glob)
        return out

    plain, momentum = run("none"), run("momentum")
    np.testing.assert_allclose(momentum[0], plain[0], atol=1e-6)
    # round 2 starts from the same global model in both runs, so the releases are equal
    np.testing.assert_allclose(momentum[1], plain[1] + 0.5 * plain[0], atol=1e-5)
