"""The ServerApp's end-of-round pipeline: in order, one pending job, errors surface."""

from __future__ import annotations

import ast
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from strategies.background import RoundPipeline

#: The thread of each :func:`ast.parse` while a test listens; None otherwise.
_PARSES: list[str] | None = None


def _on_audit(event: str, args: tuple[Any, ...]) -> None:
    # ast.parse builds Python AST objects, the step whose counter threads share;
    # compiling source to code (imports, typing's forward references) does not.
    parsing = event == "compile" and sys._getframe(1).f_code is ast.parse.__code__
    if parsing and _PARSES is not None:
        _PARSES.append(threading.current_thread().name)


sys.addaudithook(_on_audit)  # an audit hook stays for the process: it is a no-op unless listening


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


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_the_round_jobs_parse_nothing_beside_the_round_loop(tmp_path: Path) -> None:
    """The background job gets decoded tensors: decoding a Flower ``Array`` parses its
    ``.npy`` header (``ast.literal_eval``), and two threads parsing at once can fail on
    CPython 3.11 (see :mod:`strategies.background`). No :func:`ast.parse` runs on the
    pipeline's thread during a whole run; once the ServerApp's thread parses (the replies'
    arrays), no other thread does (the driver's data loading parsed before it)."""
    global _PARSES
    from fedsim.config import from_dict
    from fedsim.run import run_experiment

    raw = {
        "name": "parse-free",
        "rounds": 2,
        "data": {"num_clients": 2, "train_samples": 120, "test_samples": 60},
        "model": {"name": "mlp"},
        "client": {"batch_size": 32},
        "dp": {"noise_multiplier": 1.0, "delta": 1e-4},
    }
    _PARSES = []
    try:
        run_experiment(from_dict(raw), tmp_path)
        parses = list(_PARSES)
    finally:
        _PARSES = None
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 2  # rounds 1 and 2
    assert parses, "the hook saw no parse: the round loop decodes the replies' arrays"
    assert not [t for t in parses if t.startswith("fedsim-round")], sorted(set(parses))
    server = next(t for t in parses if t != "MainThread")
    assert parses[parses.index(server) :] == [server] * (len(parses) - parses.index(server))
