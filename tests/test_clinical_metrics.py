"""Clinical metrics of binary tasks (class 1 positive): sensitivity, specificity,
precision, F1 and the confusion matrix — against plain counting loops on hand-made
predictions — in the evaluation, metrics.jsonl (schema), summary, TensorBoard and report."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedsim.clinical import BinaryCounts, confusion_matrix, count_metrics
from fedsim.config import from_dict
from fedsim.data import Split
from fedsim.evaluation import evaluate
from fedsim.records import EvalResult, RoundRecord, SiteMetrics
from fedsim.report import write_report
from fedsim.rundir import RunWriter
from fedsim.schemas import metrics_line_schema

#: labels and predictions made by hand: 4 negatives, 6 positives
LABELS = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
PREDICTED = [0, 0, 1, 0, 1, 1, 0, 1, 1, 0]


def _by_hand(labels: list[int], predicted: list[int]) -> dict[str, float | None]:
    """The four counts and the four rates, counted one sample at a time."""
    tn = fp = fn = tp = 0
    for y, p in zip(labels, predicted, strict=True):
        if y == 1 and p == 1:
            tp += 1
        elif y == 1:
            fn += 1
        elif p == 1:
            fp += 1
        else:
            tn += 1

    def div(a: float, b: float) -> float | None:
        return a / b if b else None

    sens, prec = div(tp, tp + fn), div(tp, tp + fp)
    f1 = None if not sens or not prec else 2 * prec * sens / (prec + sens)
    return {
        "tn": tn, "fp": fp, "fn": fn, "tp": tp,
        "sensitivity": sens, "specificity": div(tn, tn + fp), "precision": prec, "f1": f1,
    }  # fmt: skip


class _Fixed(torch.nn.Module):
    """Predicts the class written in each input's first pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = x[:, 0, 0, 0].long()
        return torch.nn.functional.one_hot(cls, 2).float() * 3.0


def _split(labels: list[int], predicted: list[int]) -> Split:
    x = np.zeros((len(labels), 1, 2, 2), np.float32)
    x[:, 0, 0, 0] = predicted
    return Split(x, np.asarray(labels, np.int64))


def test_counts_and_rates_match_a_plain_loop() -> None:
    expected = _by_hand(LABELS, PREDICTED)
    matrix = confusion_matrix(np.array(PREDICTED), np.array(LABELS), 2)
    binary = BinaryCounts.of(matrix)
    assert binary.counts_json() == {k: expected[k] for k in ("tn", "fp", "fn", "tp")}
    assert (expected["tn"], expected["fp"], expected["fn"], expected["tp"]) == (3, 1, 2, 4)
    for name, value in binary.json().items():
        assert value == pytest.approx(expected[name]), name
    assert binary.f1 == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))


def test_undefined_rates_are_none_not_nan() -> None:
    never_positive = BinaryCounts.of(confusion_matrix(np.zeros(4), np.array([0, 0, 1, 1]), 2))
    assert never_positive.precision is None  # no positive prediction
    assert never_positive.sensitivity == 0.0 and never_positive.f1 == 0.0
    no_positives = BinaryCounts.of(confusion_matrix(np.zeros(3), np.zeros(3), 2))
    assert no_positives.sensitivity is None and no_positives.f1 is None
    assert no_positives.specificity == 1.0


def test_noisy_counts_are_clipped_at_zero_before_the_rates() -> None:
    m = count_metrics([[5.0, -2.0], [1.5, 3.5]])
    assert m.num_examples == pytest.approx(10.0)  # -2 counts as 0
    assert m.binary is not None and m.binary.specificity == 1.0
    assert m.binary.sensitivity == pytest.approx(3.5 / 5.0)
    assert m.accuracy == pytest.approx(8.5 / 10.0)


def test_evaluate_reports_the_confusion_matrix_and_rates() -> None:
    result = evaluate(_Fixed(), _split(LABELS, PREDICTED))
    expected = _by_hand(LABELS, PREDICTED)
    assert result.confusion == (3, 1, 2, 4)
    doc = result.test_json()
    assert doc["test_confusion"] == {"tn": 3, "fp": 1, "fn": 2, "tp": 4}
    for name in ("sensitivity", "specificity", "precision", "f1"):
        assert doc[f"test_{name}"] == pytest.approx(expected[name]), name
    # sensitivity and specificity are the recalls of class 1 and class 0
    assert result.class_recall == (doc["test_specificity"], doc["test_sensitivity"])
    again = EvalResult.from_test_json(doc)
    assert again.test_json() == doc
    jsonschema.validate(
        RoundRecord(round=1, test=result).to_json(), metrics_line_schema()
    )  # the published layout


def test_multiclass_has_no_binary_metrics() -> None:
    split = Split(np.zeros((3, 1, 2, 2), np.float32), np.array([0, 1, 2]))

    class Three(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(x), 3)

    result = evaluate(Three(), split)
    assert result.confusion is None and "test_sensitivity" not in result.test_json()
    metrics = SiteMetrics.of(np.eye(3))
    assert metrics.sensitivity is None and metrics.accuracy == 1.0


def test_site_metrics_round_trip() -> None:
    metrics = SiteMetrics.of(np.array([[3.2, -0.5], [1.0, 4.0]]))
    assert SiteMetrics.from_json(json.loads(json.dumps(metrics.to_json()))) == metrics
    assert metrics.confusion[0][1] == -0.5  # kept as released


def test_tensorboard_and_report_show_them(tmp_path: Path) -> None:
    cfg = from_dict({"rounds": 2, "dp": {"enabled": False}})
    writer = RunWriter(tmp_path, cfg)
    result = evaluate(_Fixed(), _split(LABELS, PREDICTED))
    for r in (1, 2):
        writer.append_round(RoundRecord(round=r, test=result))
    writer.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("test/sensitivity", "test/specificity", "test/precision", "test/f1"):
        assert tag in tags, tag
    (tp,) = [e.value for e in events.Scalars("test/confusion_tp")][-1:]
    assert tp == 4
    report = write_report(tmp_path).read_text()
    assert "## Clinical metrics (central test)" in report
    assert "| 2 | 0.6667 | 0.75 | 0.8 | 0.7273 | 3 | 1 | 2 | 4 |" in report
