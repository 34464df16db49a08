"""Client worker processes forked from a warm fork server, and a pool of them: the
mechanics of the process backend (:mod:`fedsim.procpool` has the backend, the choice of
backend and the pools kept between runs).

The fork server is Python's ``multiprocessing`` ``forkserver``; it imports :data:`PRELOAD`
before it forks a worker, and has run no thread or parallel region then, so the workers
inherit no locks or OpenMP state. A worker takes the run's ClientApp loader once, then
runs the messages it is sent over its pipe (``cloudpickle``) until it is told to stop or
the pipe closes (the driver went away). Its output goes to its log file; a worker that
dies mid-message is replaced by :meth:`WorkerPool.process`, which raises
:class:`WorkerDiedError` for that message.
"""

from __future__ import annotations

import gc
import importlib
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: What the fork server imports before it forks a worker: first the module that points
#: the server's own output away from the driver's (:mod:`fedsim.forkserver_quiet`), then
#: the ClientApp's modules, then what a worker would otherwise import on its first message:
#: Flower's ClientApp loader and ``torch._dynamo``, which ``torch.optim.Optimizer``'s
#: constructor imports on first use (0.7–0.8 s per worker, inside round 1).
PRELOAD = (
    "fedsim.forkserver_quiet",
    "clients.client_app",
    "clients.local_round",
    "flwr.clientapp.utils",
    "torch._dynamo",
)

#: A worker process's name (``/proc/PID/comm``; ``ps``, ``top``, the benchmarks).
WORKER_NAME = "fedsim-worker"

#: Seconds a worker gets to exit after it was asked to, before it is killed.
STOP_GRACE = 2.0

#: Lines of a dead worker's log quoted in the error of the message it was running.
LOG_TAIL_LINES = 12


def start_forkserver() -> None:
    """Start this process's fork server (once; idempotent) with :data:`PRELOAD`.

    Returns at once: the server imports the modules in its own process while the caller
    goes on; the first fork waits for it.
    """
    from multiprocessing import forkserver

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))
    forkserver.ensure_running()


def _worker_main(conn: Any, threads: int, log_path: str) -> None:
    """A worker's loop: take the ClientApp's loader once, then run messages until the
    pipe closes or ``("stop", None)`` arrives."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    with suppress(OSError):  # the name ps and top show (Linux), as Ray names its actors
        Path("/proc/self/comm").write_text(WORKER_NAME)
    import cloudpickle
    import torch
    from flwr.clientapp.client_app import LoadClientAppError

    torch.set_num_threads(threads)  # as Ray gives an actor num_cpus threads
    for name in PRELOAD:
        importlib.import_module(name)
    gc.freeze()  # what the imports made: later collections skip it
    app_fn: Callable[[], Any] | None = None
    while True:
        try:
            kind, payload = cloudpickle.loads(conn.recv_bytes())
        except (EOFError, OSError):  # the driver went away
            return
        if kind == "stop":
            return
        if kind == "app":
            app_fn = payload
            continue
        message, context = payload
        try:
            if app_fn is None:
                raise LoadClientAppError("the worker has no ClientApp")
            out = app_fn()(message=message, context=context)
            reply: tuple[str, Any] = ("ok", (out, context))
        except LoadClientAppError as exc:
            reply = ("load", str(exc))
        except Exception as exc:
            reply = ("raised", f"{type(exc).__name__}: {exc}")
        try:
            data = cloudpickle.dumps(reply)
        except Exception as exc:  # a reply that cannot travel is the client's error
            data = cloudpickle.dumps(("raised", f"reply not serialisable: {exc}"))
        sys.stdout.flush()
        conn.send_bytes(data)


_LAUNCH_LOCK = threading.Lock()


def _without_main(name: str) -> dict[str, Any]:
    """``multiprocessing``'s preparation data for a child, without the driver's main
    module: a worker needs nothing from it, and re-importing it would run a user's
    script again in every worker when it has no ``if __name__ == "__main__"`` guard."""
    data = _ORIGINAL_PREPARATION(name)
    data.pop("init_main_from_name", None)
    data.pop("init_main_from_path", None)
    return dict(data)


def _original_preparation() -> Callable[[str], dict[str, Any]]:
    from multiprocessing import spawn

    return spawn.get_preparation_data  # type: ignore[no-any-return]


_ORIGINAL_PREPARATION = _original_preparation()


def _popen_class() -> type:
    from multiprocessing import popen_forkserver, spawn

    class Popen(popen_forkserver.Popen):  # type: ignore[misc, name-defined]
        """The forkserver's ``Popen`` whose child skips the driver's main module."""

        def _launch(self, process_obj: Any) -> None:
            with _LAUNCH_LOCK:
                spawn.get_preparation_data = _without_main  # type: ignore[assignment]
                try:
                    super()._launch(process_obj)  # type: ignore[misc]
                finally:
                    spawn.get_preparation_data = _ORIGINAL_PREPARATION  # type: ignore[assignment]

    return Popen


class _WorkerProcess(multiprocessing.context.ForkServerProcess):  # type: ignore[misc, name-defined]
    """A forkserver process started by :func:`_popen_class`'s ``Popen``."""

    @staticmethod
    def _Popen(process_obj: Any) -> Any:  # noqa: N802 (multiprocessing's name)
        return _popen_class()(process_obj)


class WorkerDiedError(RuntimeError):
    """A client worker process ended while it ran a message."""


class _Worker:
    """One worker process and the driver's end of its pipe (owned by a :class:`WorkerPool`)."""

    def __init__(self, index: int, threads: int, log_dir: Path) -> None:
        ctx = multiprocessing.get_context("forkserver")
        self.index = index
        self.log_path = log_dir / f"worker-{index}.log"
        parent, child = ctx.Pipe()
        self.conn = parent
        self.process = _WorkerProcess(
            target=_worker_main,
            args=(child, threads, str(self.log_path)),
            name=f"fedsim-worker-{index}",
            daemon=True,
        )
        self.process.start()
        child.close()

    def send(self, kind: str, payload: Any) -> None:
        import cloudpickle

        self.conn.send_bytes(cloudpickle.dumps((kind, payload)))

    def call(self, message: Any, context: Any) -> tuple[Any, Any]:
        """Run one message; raise :class:`WorkerDiedError` or the ClientApp's error."""
        import cloudpickle
        from flwr.clientapp.client_app import ClientAppException, LoadClientAppError

        try:
            self.send("run", (message, context))
            kind, value = cloudpickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError, BrokenPipeError) as exc:
            self.process.join(timeout=STOP_GRACE)
            raise WorkerDiedError(
                f"client worker {self.index} (pid {self.process.pid}) ended while running "
                f"a message (exit code {self.process.exitcode}); it is replaced. Its last "
                f"output:\n{self.log_tail()}"
            ) from exc
        if kind == "ok":
            out, context = value
            return out, context
        if kind == "load":
            raise LoadClientAppError(value)
        raise ClientAppException(value)

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-LOG_TAIL_LINES:]) or "(nothing)"

    def alive(self) -> bool:
        return self.process.is_alive()

    def ask_to_stop(self) -> None:
        """Ask the worker to exit after the message it is running (if any)."""
        with suppress(OSError, ValueError):
            self.send("stop", None)

    def stop(self, deadline: float | None = None) -> None:
        """Ask, wait until ``deadline`` (``time.monotonic``; default: :data:`STOP_GRACE`
        from now), then kill."""
        self.ask_to_stop()
        deadline = time.monotonic() + STOP_GRACE if deadline is None else deadline
        self.process.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=STOP_GRACE)
        self.conn.close()


@dataclass(frozen=True)
class PoolSpec:
    """What makes two pools interchangeable: how many workers, with how many threads."""

    workers: int
    threads: int


class WorkerPool:
    """``spec.workers`` worker processes and the queue of idle ones (its one owner)."""

    def __init__(self, spec: PoolSpec) -> None:
        start_forkserver()
        self.spec = spec
        self.log_dir = Path(tempfile.mkdtemp(prefix="fedsim-workers-"))
        self._lock = threading.Lock()
        self._next = 0
        self._app: Any = None
        self._workers: list[_Worker] = []
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        for _ in range(spec.workers):
            worker = self._fork()
            self._workers.append(worker)
            self._idle.put(worker)

    def _fork(self) -> _Worker:
        start_forkserver()  # again if it died (killed from outside): it is then restarted
        with self._lock:
            index, self._next = self._next, self._next + 1
        return _Worker(index, self.spec.threads, self.log_dir)

    @property
    def size(self) -> int:
        return len(self._workers)

    def pids(self) -> list[int]:
        """The worker processes' ids (for tests and diagnostics)."""
        return [w.process.pid or 0 for w in self._workers]

    def set_app(self, app_fn: Callable[[], Any]) -> None:
        """Give every (idle) worker the run's ClientApp loader."""
        self._app = app_fn
        for worker in self._workers:
            worker.send("app", app_fn)

    def idle_now(self) -> bool:
        """Whether a worker is free for a message."""
        return not self._idle.empty()

    def all_idle(self) -> bool:
        """Whether every worker is free and alive (the pool can serve another run)."""
        return self._idle.qsize() == len(self._workers) and all(w.alive() for w in self._workers)

    def process(self, message: Any, context: Any) -> tuple[Any, Any]:
        """Run ``message`` on the next idle worker (blocking until one is free)."""
        worker = self._idle.get()
        try:
            return worker.call(message, context)
        except WorkerDiedError:
            worker = self._replace(worker)
            raise
        finally:
            self._idle.put(worker)

    def _replace(self, dead: _Worker) -> _Worker:
        dead.stop()
        fresh = self._fork()
        if self._app is not None:
            fresh.send("app", self._app)
        with self._lock:
            self._workers[self._workers.index(dead)] = fresh
        return fresh

    def close(self) -> None:
        """Stop every worker (a busy one is killed after :data:`STOP_GRACE`)."""
        for worker in self._workers:
            worker.ask_to_stop()
        deadline = time.monotonic() + STOP_GRACE
        for worker in self._workers:
            worker.stop(deadline)
        self._workers = []
        shutil.rmtree(self.log_dir, ignore_errors=True)


__all__ = [
    "LOG_TAIL_LINES",
    "PRELOAD",
    "STOP_GRACE",
    "WORKER_NAME",
    "PoolSpec",
    "WorkerDiedError",
    "WorkerPool",
    "start_forkserver",
]
