"""The recipe options of issue 17: a fixed number of local steps, uniform weighting and the
decision threshold set on the server's validation split."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from client_harness import simulated_round
from flwr.app import ArrayRecord
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
from strategies.calibrate import calibrated


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
    after_arrays = calibrated("mlp", data, ArrayRecord(model.state_dict()), 1)
    model.load_state_dict(after_arrays.to_torch_state_dict())
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
            {"dp": {"mode": "central", "epsilon": 2.0}, "strategy": {"calibrate": "threshold"}},
            "strategy.calibrate must be 'none' when dp.mode is 'central'",
        ),
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
