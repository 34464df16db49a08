"""The ServerApp's end-of-round pipeline: in order, one pending job, errors surface."""

from __future__ import annotations

import threading
import time

import pytest

from strategies.background import RoundPipeline


def test_jobs_run_in_order_beside_the_caller_one_at_a_time() -> None:
    pipeline = RoundPipeline()
    done: list[int] = []
    gate = threading.Event()

    def job(i: int) -> None:
        if i == 0:
            assert gate.wait(5)
        done.append(i)

    pipeline.submit(job, 0)
    assert done == []  # the caller goes on while job 0 waits
    gate.set()
    pipeline.submit(job, 1)  # waits for job 0 first
    assert done[0] == 0
    pipeline.close()
    assert done == [0, 1]


def test_an_error_surfaces_at_the_next_round_or_at_close() -> None:
    pipeline = RoundPipeline()

    def fail() -> None:
        raise OSError("disk full")

    pipeline.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        pipeline.submit(lambda: None)
    pipeline.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        pipeline.close()


def test_close_waits_for_the_pending_job() -> None:
    pipeline = RoundPipeline()
    done: list[str] = []
    pipeline.submit(lambda: (time.sleep(0.2), done.append("checkpoint")))
    pipeline.close()
    assert done == ["checkpoint"]
