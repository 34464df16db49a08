"""The regression task: tabular sources, the shipped diabetes data, the sigmoid-link loss,
regression evaluation, corruptions of numeric targets, and the regression config rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.attackers import flip_labels, noise_images
from fedsim.config import Config, build_dataclass, cross_checks
from fedsim.data import load_dataset
from fedsim.data.tabular import scale_table
from fedsim.errors import DataError
from fedsim.evaluation import evaluate
from fedsim.models import build_model
from fedsim.selection import regression_utility, utility_sensitivity
from fedsim.tasks import SigmoidSquaredError, loss_module


def _write_csv(path, header: str, rows: list[str]) -> str:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return str(path)


def test_diabetes_is_a_regression_dataset_with_targets_in_0_1() -> None:
    bundle = load_dataset("diabetes")
    assert bundle.task == "regression" and bundle.num_classes == 1
    assert bundle.class_names == ("progression",)
    assert bundle.input_shape == (1, 1, 10)
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 442
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.y.dtype == np.float32 and split.y.min() > 0 and split.y.max() <= 1
        assert split.x.min() >= 0 and split.x.max() <= 1
    # the largest target (346 in the raw data) maps to 1 and the smallest (25) to 25/346
    pooled = np.concatenate([bundle.train.y, bundle.val.y, bundle.test.y])
    assert pooled.max() == 1.0 and pooled.min() == pytest.approx(25 / 346)


def test_scaling_keeps_relative_errors() -> None:
    features = np.array([[0.0, 10.0], [5.0, 20.0], [10.0, 30.0]])
    target = np.array([50.0, 100.0, 200.0])
    split = scale_table(features, target, "t")
    pred_raw = np.array([60.0, 90.0, 250.0])
    rel_raw = np.abs(pred_raw - target) / target
    pred = pred_raw / target.max()
    assert np.allclose(np.abs(pred - split.y) / split.y, rel_raw, rtol=1e-6)


def test_csv_source_reads_named_target_and_carves_splits(tmp_path) -> None:
    rows = [f"{i % 7},{(i * 3) % 11},{i + 1}" for i in range(60)]
    path = _write_csv(tmp_path / "t.csv", "a,y,b", rows)
    bundle = load_dataset("tabular", path=path, target="b", seed=3)
    assert bundle.task == "regression" and bundle.input_shape == (1, 1, 2)
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 60
    assert bundle.class_names == ("b",)
    again = load_dataset("tabular", path=path, target="b", seed=3)
    assert np.array_equal(again.test.y, bundle.test.y)


def test_npz_source(tmp_path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "t.npz"
    np.savez(path, features=rng.random((50, 4)), target=rng.random(50) + 0.1)
    bundle = load_dataset("tabular", path=str(path))
    assert bundle.task == "regression" and bundle.input_shape == (1, 1, 4)


@pytest.mark.parametrize(
    ("header", "rows", "target", "message"),
    [
        ("a,b", ["1,2", "3,x"], None, r"line 3, column 'b': 'x' is not a number"),
        ("a,b", ["1,2", "3,4"], "c", r"data.target 'c' is not a column; columns: a, b"),
        ("a,b", ["1,2", "3,0"], None, r"targets must be > 0 .* row 2 has 0"),
        ("a,b", ["1,2", "3"], None, r"line 3 has 1 values but the header has 2"),
        ("a,b", ["1,2", "3,nan"], None, r"line 3, column 'b': 'nan' is not finite"),
        ("a", ["1", "2"], None, r"need 2\.\.10000 columns"),
    ],
)
def test_bad_tables_get_one_clear_message(tmp_path, header, rows, target, message) -> None:
    path = _write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(DataError, match=message):
        load_dataset("tabular", path=path, target=target)


def test_tabular_needs_a_csv_or_npz_path(tmp_path) -> None:
    with pytest.raises(DataError, match=r"data\.path: required"):
        load_dataset("tabular")
    other = tmp_path / "t.txt"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"must end in \.csv or \.npz"):
        load_dataset("tabular", path=str(other))


def test_sigmoid_squared_error_and_its_reductions() -> None:
    g = torch.tensor([[0.0], [2.0]])
    y = torch.tensor([0.5, 0.2])
    per = (torch.sigmoid(g.ravel()) - y) ** 2
    loss = SigmoidSquaredError(reduction="none")
    assert torch.allclose(loss(g, y), per)
    loss.reduction = "sum"
    assert torch.allclose(loss(g, y), per.sum())
    assert torch.allclose(loss_module("regression")(g, y), per.mean())
    assert isinstance(loss_module("classification"), torch.nn.CrossEntropyLoss)


def test_regression_evaluation_reports_mre_and_secprobe_score() -> None:
    bundle = load_dataset("diabetes")
    model = build_model("secprobe_mlp8", bundle.input_shape, 1, seed=0)
    result = evaluate(model, bundle.test)
    with torch.no_grad():
        z = torch.sigmoid(model(torch.from_numpy(bundle.test.x.copy())).ravel()).double().numpy()
    y = bundle.test.y.astype(np.float64)
    assert result.mre == pytest.approx(np.mean(np.abs(z - y) / y))
    assert result.accuracy == pytest.approx(regression_utility(z, y))
    assert result.loss == pytest.approx(np.mean((z - y) ** 2))
    assert result.auc is None


def test_regression_utility_sensitivity() -> None:
    assert utility_sensitivity(50, "paper", "regression") == 1.0
    assert utility_sensitivity(50, "tight", "regression") == pytest.approx(1 / 50)
    assert utility_sensitivity(50, "paper", "classification") == 0.5


def test_corruptions_of_numeric_targets() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((10, 1, 1, 3)).astype(np.float32)
    y = (rng.random(10).astype(np.float32) * 0.5 + 0.5).astype(np.float32)
    idx = np.array([1, 4])
    _nx, ny = noise_images(x, y, idx, np.random.default_rng(1))
    assert not np.array_equal(ny[idx], y[idx]) and np.all((ny > 0) & (ny <= 1))
    assert np.array_equal(np.delete(ny, idx), np.delete(y, idx))
    fx, fy = flip_labels(x, y, idx, np.random.default_rng(1), 1)
    assert np.allclose(fy[idx], 1 - y[idx]) and np.array_equal(fx, x)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"data": {"partition": "dirichlet"}}, "data.partition must be 'iid'"),
        ({"model": {"name": "cnn"}}, "model.name must be one of mlp, secprobe_mlp"),
        ({"audit": {"enabled": True}}, "audit.enabled is not supported for the regression"),
        ({"robustness": {"evaluate": {"enabled": True}}}, "robustness.evaluate.enabled"),
        ({"dp": {"clipping": "per_layer_adaptive"}}, "per_layer_adaptive"),
    ],
)
def test_regression_config_rules(extra: dict, message: str) -> None:
    raw: dict = {"data": {"name": "diabetes", "num_clients": 3}, "model": {"name": "mlp"}}
    for section, values in extra.items():
        raw.setdefault(section, {}).update(values)
    problems = cross_checks(build_dataclass(Config, raw))
    assert any(message in p for p in problems), problems
