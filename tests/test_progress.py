"""Per-round progress lines: their content and ETA, and the deployment's log of them."""

from __future__ import annotations

import logging

import pytest

from fedsim.config import from_dict
from fedsim.progress import RoundProgress, duration_text
from fedsim.records import ClientRoundRecord, EvalResult, RoundRecord


def _record(server_round: int, seconds: float, auc: float | None = None) -> RoundRecord:
    return RoundRecord(
        round=server_round,
        test=EvalResult(accuracy=0.8125, loss=0.41, auc=auc, num_examples=10),
        sampled=(0, 1, 2),
        selected=(0, 1),
        clients=(ClientRoundRecord(0, "ok", 5, 0.3, 1.5, 1.75, 1e-5, 1.1, 0.1, 10),),
        seconds=seconds,
    )


def test_round_lines_carry_the_metrics_and_an_eta_from_the_mean_round_time() -> None:
    progress = RoundProgress(from_dict({"rounds": 4, "dp": {"epsilon": 2.0}}))
    first = progress.line(_record(1, 10.0, auc=0.9))
    assert first.startswith("round 1/4  acc 0.8125  loss 0.4100  auc 0.900  max eps 1.750")
    assert first.endswith("(2/3 updates, 10.0 s/round, ETA 30s)")
    second = progress.line(_record(2, 50.0))
    assert "auc" not in second  # only where the record has it
    assert second.endswith("(2/3 updates, 30.0 s/round, ETA 1m00s)")  # mean of 10 and 50
    assert progress.line(_record(4, 30.0)).endswith("ETA 0s)")


def test_duration_text() -> None:
    assert [duration_text(s) for s in (0, 59.4, 60, 3599, 3600, 7500)] == [
        "0s",
        "59s",
        "1m00s",
        "59m59s",
        "1h00m",
        "2h05m",
    ]


def test_the_deployed_server_app_logs_each_round(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from strategies.server_app import log_progress

    flower = logging.getLogger("flwr")  # Flower's logger: its handler feeds `flwr log`
    monkeypatch.setattr(flower, "propagate", False)  # seen once, by caplog's handler only
    flower.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="flwr"):
            emit = log_progress(from_dict({"rounds": 2, "dp": {"epsilon": 2.0}}))
            emit(_record(1, 4.0))
            emit(_record(2, 6.0))
    finally:
        flower.removeHandler(caplog.handler)
    lines = [r.getMessage() for r in caplog.records if r.name == "flwr"]
    assert len(lines) == 2
    assert lines[0].startswith("round 1/2  acc 0.8125") and lines[0].endswith("ETA 4s)")
    assert lines[1].startswith("round 2/2") and lines[1].endswith("5.0 s/round, ETA 0s)")
