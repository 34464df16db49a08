"""Small pure pieces: seeds, reply screening, AUC, registry, run directory writer."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from fedsim.config import from_dict
from fedsim.errors import FedsimError
from fedsim.evaluation import roc_auc
from fedsim.records import ClientRoundRecord, EvalResult, RoundRecord
from fedsim.registry import Registry
from fedsim.rundir import TB_TEST_METRICS, RunWriter, read_metrics
from fedsim.seeding import derive_seed, numpy_rng, torch_generator
from strategies.replies import weight_problem
from strategies.uploads import update_problem


def test_derived_seeds_are_stable_and_distinct() -> None:
    seeds = {derive_seed(0, p, c, r) for p in ("a", "b") for c in range(5) for r in range(5)}
    assert len(seeds) == 50
    assert derive_seed(3, "train", 1, 2) == derive_seed(3, "train", 1, 2)
    assert numpy_rng(1, "x").integers(1 << 30) == numpy_rng(1, "x").integers(1 << 30)
    g1, g2 = torch_generator(1, "x", 2), torch_generator(1, "x", 2)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_no_global_rng_touched() -> None:
    state = torch.random.get_rng_state().clone()
    np_state = np.random.get_state(legacy=True)[1].copy()  # type: ignore[index]
    numpy_rng(0, "x").random(10)
    torch.rand(3, generator=torch_generator(0, "y"))
    assert torch.equal(state, torch.random.get_rng_state())
    assert np.array_equal(np_state, np.random.get_state(legacy=True)[1])  # type: ignore[index]


def test_screen_update_reasons() -> None:
    ref = {"w": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.float32)}
    good = {"w": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.float32)}
    assert update_problem(good, ref) is None
    bad_b = np.array([np.inf, 0.0], np.float32)
    assert "non-finite" in str(update_problem({**good, "b": bad_b}, ref))
    assert "shape (3,)" in str(update_problem({**good, "b": np.zeros(3, np.float32)}, ref))
    assert "missing ['b']" in str(update_problem({"w": good["w"]}, ref))
    assert "unexpected ['z']" in str(update_problem({**good, "z": np.zeros(1)}, ref))
    assert "num-examples" in str(weight_problem("num-examples", 0, None))
    assert "num-examples" in str(weight_problem("num-examples", float("nan"), None))


def _pairwise_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """The definition: P(positive score > negative score) + half P(tie), over all pairs."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p, n in itertools.product(pos, neg)]
    return float(np.mean(pairs))


def test_roc_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 40).astype(float)  # many ties
    labels = rng.integers(0, 2, 40)
    assert roc_auc(scores, labels) == pytest.approx(_pairwise_auc(scores, labels))
    assert roc_auc(scores, np.ones(40)) is None


@pytest.mark.parametrize("seed", range(12))
def test_roc_auc_matches_pairwise_count_on_random_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 120))
    levels = int(rng.integers(1, 8))  # 1 level: every score tied
    scores = rng.integers(0, levels, n) / levels + (rng.random(n) if seed % 3 == 0 else 0.0)
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]  # both classes present
    dtype = np.float32 if seed % 2 else np.float64
    assert roc_auc(scores.astype(dtype), labels) == pytest.approx(
        _pairwise_auc(scores.astype(dtype), labels), abs=1e-12
    )


def test_roc_auc_hand_computed_cases() -> None:
    labels = np.array([0, 0, 1, 1])
    assert roc_auc(np.array([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert roc_auc(np.array([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    assert roc_auc(np.full(4, 0.7), labels) == 0.5  # all tied: every pair counts half
    assert roc_auc(np.array([0.1, 0.5, 0.5, 0.9]), labels) == 0.875  # one tied pair of 4
    assert roc_auc(np.array([0.1, 0.2]), np.array([False, True])) == 1.0  # boolean labels
    assert roc_auc(np.array([0.1, 0.2]), np.zeros(2)) is None
    # NaN ranks above every number, NaNs apart in input order (as a stable sort puts them)
    assert roc_auc(np.array([np.nan, 0.1, 0.2]), np.array([1, 0, 0])) == 1.0
    assert roc_auc(np.array([np.nan, np.nan, 0.2]), np.array([1, 0, 1])) == 0.0  # 2nd NaN > 1st


def test_roc_auc_docstring_examples() -> None:
    import doctest

    import fedsim.evaluation

    result = doctest.testmod(fedsim.evaluation)
    assert result.attempted >= 3 and result.failed == 0


def test_registry_unknown_name_lists_valid() -> None:
    reg: Registry[int] = Registry("thing", "x.name")
    reg.register("b")(2)
    reg.register("a")(1)
    with pytest.raises(FedsimError, match=r"x.name must be one of: a, b; got 'c'"):
        reg.get("c")
    with pytest.raises(ValueError):
        reg.register("a")(3)


def test_run_writer_contract(tmp_path) -> None:
    cfg = from_dict({"dp": {"epsilon": 1.0}})
    writer = RunWriter(tmp_path, cfg, tensorboard=True)
    rec = RoundRecord(
        round=1,
        test=EvalResult(accuracy=0.5, loss=float("nan"), auc=0.6, num_examples=10),
        sampled=(0, 1),
        selected=(0,),
        clients=(
            ClientRoundRecord(0, "ok", 5, 0.3, 0.5, 0.5, 1e-5, 1.1, 0.1, 10),
            ClientRoundRecord(1, "rejected", rejected_reason="bad"),
        ),
    )
    writer.append_round(rec)
    writer.save_model({"w": torch.zeros(2)})
    with pytest.raises(ValueError):
        writer.save_model({"_module.w": torch.zeros(2)})
    writer.close()
    (line,) = read_metrics(tmp_path)
    assert line["test_loss"] is None  # NaN written as null: the file stays JSON
    assert line["selected"] == [0] and line["clients"]["1"]["rejected_reason"] == "bad"
    assert line["clients"]["0"]["epsilon"] == 0.5
    assert "fedsim_version" in (tmp_path / "config.yaml").read_text()
    assert any((tmp_path / "tb").iterdir())
    json.dumps(line, allow_nan=False)


def test_tensorboard_holds_the_config_as_text_and_hparams(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    cfg = from_dict(
        {"name": "tb", "seed": 3, "dp": {"epsilon": 2.5}, "valuation": {"report_metrics": ["vog"]}}
    )
    RunWriter(tmp_path, cfg, tensorboard=True).close()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    events.Reload()
    (text,) = events.Tensors("config/text_summary")
    shown = text.tensor_proto.string_val[0].decode()
    assert "    name: tb" in shown and "    seed: 3" in shown and "epsilon: 2.5" in shown
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["dp.epsilon"].number_value == 2.5 and hparams["seed"].number_value == 3
    assert hparams["name"].string_value == "tb" and hparams["dp.enabled"].string_value == "true"
    assert hparams["valuation.report_metrics"].string_value == '["vog"]'
    assert "dp.noise_multiplier" not in hparams  # unset: left out
    experiment = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    metrics = HParamsPluginData.FromString(experiment).experiment.metric_infos
    assert {m.name.tag for m in metrics} == set(TB_TEST_METRICS)
    assert {"test/accuracy", "test/loss", "test/auc", "test/balanced_accuracy"} <= set(
        TB_TEST_METRICS
    )
