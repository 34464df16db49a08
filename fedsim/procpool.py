"""Client workers as local processes from a warm fork server: the simulation engine's
backend without Ray (``simulation.backend: process``, ``auto``'s choice on one machine
without GPUs).

Ray costs a local simulation on a small machine more than it gives it: its own
processes (GCS, raylet, agents: ~3.5 s of CPU to start, more while the run lasts) and a
fresh interpreter per client actor that imports torch, Opacus and Flower again (~5 s of
CPU each). Here one *fork server* (Python's ``multiprocessing`` ``forkserver``) is
started as soon as ``fedsim run`` has read its config; it imports the ClientApp's
modules once (:data:`PRELOAD`), on the machine's other core while the driver imports
the same modules, and each client worker is then a ``fork`` of that server: warm at
once, its imported pages shared with the others. The server never runs a thread or a
parallel region before it forks, so the children inherit no locks or OpenMP state (a
fork of the driver itself, which has threads by then, would).

:class:`ProcessBackend` is a Flower simulation :class:`~flwr.server.superlink.fleet.vce.
backend.backend.Backend`: Flower's engine hands it each message in one of
``num_workers`` threads; it gives the message and the node's context to an idle worker
over a pipe (``cloudpickle``, as Ray serialises them), and returns the reply and the
updated context. What a worker computes does not depend on the backend: the same
ClientApp, the same seeds, ``torch`` with the threads Ray would give an actor
(``num_cpus_per_client``, at least 1), so a run's metrics equal the Ray backend's
(``tests/test_process_backend.py``).

A worker that dies while it runs a message (a crash, an OOM kill, the ``exit`` client
fault) is replaced by a new fork and the message gets an error reply, as with Ray's
restarted actors: no client can end a run. Each worker's output goes to a log file
(``<tempdir>/fedsim-workers-*/worker-K.log``, removed with the pool) instead of the
terminal, as Ray keeps its actors' output in its session logs; the error of a dead
worker quotes the file's last lines.

Inside :func:`reuse_workers` (``fedsim run``, and one block for a whole ``fedsim
sweep``) the pool outlives a run when every worker is idle at its end, and the next run
with the same worker count and threads takes it over: a sweep point pays neither the
fork server nor the workers again. The engine finds the backend through the one name it
imports when it builds one (``...fleet.vce.backend.raybackend.RayBackend``, pinned
``flwr==1.41.*``; :func:`engine_backend` swaps it for a run, without importing Ray when
it is not imported yet; ``tests/test_process_backend.py`` fails if that seam moves).
"""

from __future__ import annotations

import gc
import importlib
import logging
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: What the fork server imports before it forks a worker: first the module that points
#: the server's own output away from the driver's (:mod:`fedsim.forkserver_quiet`), then
#: the ClientApp's modules.
PRELOAD = ("fedsim.forkserver_quiet", "clients.client_app", "clients.local_round")

#: The module whose ``RayBackend`` Flower's engine instantiates (``start_vce``).
SEAM = "flwr.server.superlink.fleet.vce.backend.raybackend"

#: A worker process's name (``/proc/PID/comm``; ``ps``, ``top``, the benchmarks).
WORKER_NAME = "fedsim-worker"

#: Seconds a worker gets to exit after it was asked to, before it is killed.
STOP_GRACE = 2.0

#: Lines of a dead worker's log quoted in the error of the message it was running.
LOG_TAIL_LINES = 12


def choose_backend(sim: Any, gpu_visible: Callable[[], bool]) -> str:
    """``process`` or ``ray`` for a ``SimulationConfig``: its ``backend``, where ``auto``
    is ``ray`` when the clients need Ray (``ray_address``, a GPU share: given, or 0.5 when
    ``gpu_visible()``) and ``process`` otherwise."""
    if sim.backend != "auto":
        return str(sim.backend)
    gpus = sim.num_gpus_per_client
    if gpus is None:
        gpus = 0.5 if gpu_visible() else 0.0
    return "ray" if sim.ray_address or gpus > 0 else "process"


def gpu_device_files() -> bool:
    """A guess at :func:`fedsim.devices.gpu_visible` without importing torch (NVIDIA or
    AMD device files, not hidden by ``CUDA_VISIBLE_DEVICES``), for decisions taken
    before the driver's imports; a wrong guess costs start-up time only."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    dev = Path("/dev")
    return any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists()


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


class WorkerPools:
    """The pools kept between runs by :func:`reuse_workers` (by spec) and the one being
    prestarted (their one owner)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[PoolSpec, WorkerPool] = {}
        self._prestart: tuple[PoolSpec, threading.Thread, list[Any]] | None = None

    def prestart(self, spec: PoolSpec) -> bool:
        """Fork ``spec``'s workers in the background, unless a pool is kept or one is
        being started. Returns whether it started one."""
        with self._lock:
            if self._kept or self._prestart is not None:
                return False
            box: list[Any] = []

            def start() -> None:
                try:
                    box.append(WorkerPool(spec))
                except BaseException as exc:  # handed to the taker
                    box.append(exc)

            thread = threading.Thread(target=start, name="fedsim-worker-prestart", daemon=True)
            thread.start()
            self._prestart = (spec, thread, box)
            return True

    def take(self, spec: PoolSpec) -> WorkerPool | None:
        """A kept or prestarted pool of ``spec`` (removed: the run owns it now); a pool of
        another spec is closed (its workers would hold the CPUs)."""
        with self._lock:
            pool = self._kept.pop(spec, None)
            others, self._kept = list(self._kept.values()), {}
            started, self._prestart = self._prestart, None
        if started is not None:
            other_spec, thread, box = started
            thread.join()
            made = box[0] if box else None
            if isinstance(made, BaseException):
                raise made
            if made is not None and pool is None and other_spec == spec:
                pool = made
            elif made is not None:
                others.append(made)
        for other in others:
            other.close()
        return pool

    def give_back(self, pool: WorkerPool) -> None:
        """Keep ``pool`` for the next run of its spec."""
        with self._lock:
            self._kept[pool.spec] = pool

    def kept(self) -> tuple[WorkerPool, ...]:
        with self._lock:
            return tuple(self._kept.values())

    def close(self) -> None:
        """Stop every kept or prestarted worker."""
        with self._lock:
            pools, self._kept = list(self._kept.values()), {}
            started, self._prestart = self._prestart, None
        if started is not None:
            started[1].join()
            pools += [p for p in started[2] if isinstance(p, WorkerPool)]
        for pool in pools:
            pool.close()


#: The pools of the active :func:`reuse_workers` block (at most one: inner blocks share it).
_ACTIVE: list[WorkerPools] = []


@contextmanager
def reuse_workers() -> Iterator[WorkerPools]:
    """Runs started inside share warm worker pools; they are stopped on leaving.

    Re-entrant: a block inside another shares the outer one's pools.
    """
    if _ACTIVE:
        yield _ACTIVE[-1]
        return
    pools = WorkerPools()
    _ACTIVE.append(pools)
    try:
        yield pools
    finally:
        _ACTIVE.remove(pools)
        pools.close()


def pool_spec(backend_config: dict[str, Any]) -> PoolSpec:
    """The pool a backend config asks for (``backend_config["process"]``)."""
    section = backend_config["process"]
    return PoolSpec(workers=int(section["workers"]), threads=int(section["threads"]))


class ProcessBackend:
    """Flower's simulation backend over a :class:`WorkerPool` (see the module doc).

    Implements Flower 1.41's ``Backend`` contract: ``build``, ``num_workers``,
    ``is_worker_idle``, ``process_message``, ``terminate``.
    """

    def __init__(self, backend_config: dict[str, Any]) -> None:
        self.spec = pool_spec(backend_config)
        self.pool: WorkerPool | None = None

    def build(self, app_fn: Callable[[], Any]) -> None:
        pools = _ACTIVE[-1] if _ACTIVE else None
        pool = pools.take(self.spec) if pools is not None else None
        self.pool = pool if pool is not None else WorkerPool(self.spec)
        self.pool.set_app(app_fn)
        logger.debug("client workers: %s (pids %s)", self.spec, self.pool.pids())

    @property
    def num_workers(self) -> int:
        return self.pool.size if self.pool is not None else 0

    def is_worker_idle(self) -> bool:
        return self.pool is not None and self.pool.idle_now()

    def process_message(self, message: Any, context: Any) -> tuple[Any, Any]:
        if self.pool is None:
            raise ValueError("the process backend was not built; call build() first")
        return self.pool.process(message, context)

    def terminate(self) -> None:
        pool, self.pool = self.pool, None
        if pool is None:
            return
        pools = _ACTIVE[-1] if _ACTIVE else None
        if pools is not None and pool.all_idle():
            pools.give_back(pool)
            return
        pool.close()


def _register_backend() -> None:
    from flwr.server.superlink.fleet.vce.backend.backend import Backend

    Backend.register(ProcessBackend)


@contextmanager
def engine_backend() -> Iterator[None]:
    """While inside, Flower's simulation engine builds a :class:`ProcessBackend`.

    When Ray's backend module is imported, its ``RayBackend`` name is swapped; otherwise a
    stand-in module holds the name, so the engine does not import Ray (~0.5–1 s).
    """
    _register_backend()
    module = sys.modules.get(SEAM)
    if module is None:
        stand_in = types.ModuleType(SEAM)
        stand_in.RayBackend = ProcessBackend  # type: ignore[attr-defined]
        sys.modules[SEAM] = stand_in
        try:
            yield
        finally:
            if sys.modules.get(SEAM) is stand_in:
                del sys.modules[SEAM]
        return
    original = module.RayBackend  # type: ignore[attr-defined]
    module.RayBackend = ProcessBackend  # type: ignore[attr-defined]
    try:
        yield
    finally:
        module.RayBackend = original  # type: ignore[attr-defined]


__all__ = [
    "PRELOAD",
    "WORKER_NAME",
    "PoolSpec",
    "ProcessBackend",
    "WorkerDiedError",
    "WorkerPool",
    "WorkerPools",
    "choose_backend",
    "engine_backend",
    "gpu_device_files",
    "pool_spec",
    "reuse_workers",
    "start_forkserver",
]
