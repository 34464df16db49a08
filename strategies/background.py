"""One job at a time, in order, beside the round loop: the ServerApp's end-of-round work.

The central evaluation of round r's model, its ``metrics.jsonl`` line and its checkpoint
run in a background thread while round r + 1 trains; the next round's end waits for it
first, so at most one round's work is pending, its errors surface one round later at the
latest, and the lines stay in round order. The checkpoint of round r is written after
its metrics line, so a run killed meanwhile resumes from round r - 1 — which is why a
client keeps its state from its three newest rounds (:data:`clients.client_store.KEEP`).

A job gets decoded values (tensors), never Flower ``Array`` s to decode: decoding one
parses its ``.npy`` header with :func:`ast.literal_eval`, and CPython 3.11's AST builder
keeps its recursion counter per interpreter, not per thread, so a parse here while the
round loop parses its replies can fail with ``SystemError: AST constructor recursion depth
mismatch`` (seen once in CI, where the error reported the other thread's depth).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class RoundPipeline:
    """A one-slot background queue (see the module doc)."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedsim-round")
        self._pending: Future[None] | None = None

    def submit(self, job: Callable[..., None], *args: Any) -> None:
        """Wait for the previous job (re-raising its error), then start ``job(*args)``."""
        self.wait()
        self._pending = self._executor.submit(job, *args)

    def wait(self) -> None:
        """Wait for the pending job, if any; re-raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for the pending job and stop the thread (its error is re-raised)."""
        try:
            self.wait()
        finally:
            self._executor.shutdown(wait=True)
