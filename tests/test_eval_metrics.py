"""Balanced accuracy, per-class recall and the initial model (round 0) in every output:
the evaluation, metrics.jsonl, the round line, TensorBoard and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_report import _capture_figures as capture_figures
from test_report import make_run

from fedsim.config import from_dict
from fedsim.data import Split
from fedsim.evaluation import class_recalls, evaluate
from fedsim.progress import RoundProgress
from fedsim.records import EvalResult, RoundRecord
from fedsim.report import write_report
from fedsim.rundir import RunWriter


class _Always(torch.nn.Module):
    """Predicts class ``label`` for every input."""

    def __init__(self, label: int, classes: int = 2) -> None:
        super().__init__()
        self.label, self.classes = label, classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), self.classes)
        out[:, self.label] = 1.0
        return out


def _split(labels: list[int]) -> Split:
    return Split(np.zeros((len(labels), 1, 2, 2), np.float32), np.asarray(labels, np.int64))


def test_majority_class_model_has_balanced_accuracy_one_half() -> None:
    # the quickstart's failure mode: 0.625 accuracy at the majority class
    split = _split([0, 0, 0, 1, 1, 1, 1, 1])
    result = evaluate(_Always(1), split)
    assert result.accuracy == pytest.approx(5 / 8)
    assert result.class_recall == (0.0, 1.0)
    assert result.balanced_accuracy == pytest.approx(0.5)


def test_balanced_accuracy_is_the_mean_recall_of_present_classes() -> None:
    split = _split([0, 0, 2, 2, 2, 2])  # class 1 absent: not averaged
    result = evaluate(_Always(2, classes=3), split)
    assert result.balanced_accuracy == pytest.approx(0.5)
    assert result.class_recall is None  # per-class recall is for binary tasks
    assert class_recalls(np.array([2, 2, 2, 2, 2, 2]), split.y) == [0.0, None, 1.0]


def test_round_line_and_metrics_line_carry_them(tmp_path: Path) -> None:
    cfg = from_dict({"rounds": 3, "dp": {"enabled": False}})
    test = EvalResult(0.625, 0.7, auc=0.9, balanced_accuracy=0.5, class_recall=(0.0, 1.0))
    progress = RoundProgress(cfg)
    first = progress.line(RoundRecord(round=0, test=test))
    assert first.startswith("round 0/3  acc 0.6250") and "bal acc 0.500" in first
    assert "recall 0.000/1.000" in first and "(initial model)" in first
    line = progress.line(RoundRecord(round=1, test=test, seconds=2.0))
    assert "ETA 4s" in line  # round 0 does not count as a round's time
    doc = RoundRecord(round=1, test=test).to_json()
    assert doc["test_balanced_accuracy"] == 0.5 and doc["test_recall"] == [0.0, 1.0]


def test_tensorboard_starts_at_round_zero(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    writer = RunWriter(tmp_path, from_dict({"dp": {"enabled": False}}), tensorboard=True)
    writer.log_initial(
        EvalResult(0.6, 0.7, auc=0.8, balanced_accuracy=0.5, class_recall=(0.2, 0.8))
    )
    writer.append_round(RoundRecord(round=1, test=EvalResult(0.7, 0.6, balanced_accuracy=0.6)))
    writer.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("test/accuracy")] == [0, 1]
    assert [e.value for e in events.Scalars("test/balanced_accuracy")] == pytest.approx([0.5, 0.6])
    assert [e.value for e in events.Scalars("test/recall_class_1")] == pytest.approx([0.8])


def test_accuracy_plot_starts_at_the_initial_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = capture_figures(monkeypatch)
    run = make_run(tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    summary["initial"] = {"test_accuracy": 0.4, "test_loss": 2.0}
    summary["final"]["test_recall"] = [0.7, 0.9]
    (run / "summary.json").write_text(json.dumps(summary))
    text = write_report(run).read_text()
    ax = figures["accuracy.png"].axes[0]  # type: ignore[attr-defined]
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == [0, 1, 2, 3]
    assert list(line.get_ydata()) == pytest.approx([0.4, 0.6, 0.7, 0.8])
    assert "| 0 | 0.4 |" in text and "final test recall per class | 0.7000 / 0.9000" in text
