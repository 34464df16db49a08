"""Client workers as local processes from a warm fork server: the simulation engine's
backend without Ray (``simulation.backend: process``, ``auto``'s choice on one machine
without GPUs).

Ray costs a local simulation on a small machine more than it gives it: its own
processes (GCS, raylet, agents: ~3.5 s of CPU to start, more while the run lasts) and a
fresh interpreter per client actor that imports torch, Opacus and Flower again (~5 s of
CPU each). Here one *fork server* (Python's ``multiprocessing`` ``forkserver``) is
started as soon as ``fedsim run`` has read its config; it imports the ClientApp's
modules once (:data:`~fedsim.procworkers.PRELOAD`), on the machine's other core while
the driver imports the same modules, and each client worker is then a ``fork`` of that
server: warm at once, its imported pages shared with the others. The server never runs a
thread or a parallel region before it forks, so the children inherit no locks or OpenMP
state (a fork of the driver itself, which has threads by then, would). The workers and
their pool are in :mod:`fedsim.procworkers`; this module has the backend, the choice of
backend and the pools kept between runs.

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

import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from fedsim.procworkers import (
    PRELOAD,
    PoolSpec,
    WorkerDiedError,
    WorkerPool,
    start_forkserver,
)

logger = logging.getLogger(__name__)

#: The module whose ``RayBackend`` Flower's engine instantiates (``start_vce``).
SEAM = "flwr.server.superlink.fleet.vce.backend.raybackend"


def client_gpu_share(sim: Any, gpu_visible: Callable[[], bool]) -> float:
    """Each client's GPU share for a ``SimulationConfig``: ``num_gpus_per_client``, else
    0.5 when ``gpu_visible()`` (two clients share one GPU) and 0 otherwise."""
    gpus = sim.num_gpus_per_client
    if gpus is None:
        gpus = 0.5 if gpu_visible() else 0.0
    return float(gpus)


def choose_backend(sim: Any, gpu_visible: Callable[[], bool]) -> str:
    """``process`` or ``ray`` for a ``SimulationConfig``: its ``backend``, where ``auto``
    is ``ray`` when the clients need Ray (``ray_address``, a GPU share:
    :func:`client_gpu_share`) and ``process`` otherwise."""
    if sim.backend != "auto":
        return str(sim.backend)
    return "ray" if sim.ray_address or client_gpu_share(sim, gpu_visible) > 0 else "process"


def gpu_device_files() -> bool:
    """A guess at :func:`fedsim.devices.gpu_visible` without importing torch (NVIDIA or
    AMD device files, not hidden by ``CUDA_VISIBLE_DEVICES``), for decisions taken
    before the driver's imports; a wrong guess costs start-up time only."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    dev = Path("/dev")
    return any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists()


class _Prestart(NamedTuple):
    """A pool being forked in the background (:meth:`WorkerPools.prestart`)."""

    spec: PoolSpec
    thread: threading.Thread
    box: list[Any]  # the pool, or the error that stopped it
    while_waiting: Callable[[], None] | None


class WorkerPools:
    """The pools kept between runs by :func:`reuse_workers` (by spec) and the one being
    prestarted (their one owner)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[PoolSpec, WorkerPool] = {}
        self._prestart: _Prestart | None = None

    def prestart(self, spec: PoolSpec, while_waiting: Callable[[], None] | None = None) -> bool:
        """Fork ``spec``'s workers in the background, unless a pool is kept or one is
        being started. Returns whether it started one.

        ``while_waiting``: work for the driver's idle time — :meth:`take` runs it when the
        workers are not ready yet (the fork server still imports), then waits for them.
        It must not raise and should not take longer than that wait (a run's start is
        delayed by the rest); ``fedsim run`` warms up its report there."""
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
            self._prestart = _Prestart(spec, thread, box, while_waiting)
            return True

    def take(self, spec: PoolSpec) -> WorkerPool | None:
        """A kept or prestarted pool of ``spec`` (removed: the run owns it now); a pool of
        another spec is closed (its workers would hold the CPUs)."""
        with self._lock:
            pool = self._kept.pop(spec, None)
            others, self._kept = list(self._kept.values()), {}
            started, self._prestart = self._prestart, None
        if started is not None:
            other_spec, thread, box, while_waiting = started
            if while_waiting is not None and thread.is_alive():
                while_waiting()
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
            started.thread.join()
            pools += [p for p in started.box if isinstance(p, WorkerPool)]
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
    "PoolSpec",
    "ProcessBackend",
    "WorkerDiedError",
    "WorkerPool",
    "WorkerPools",
    "choose_backend",
    "client_gpu_share",
    "engine_backend",
    "gpu_device_files",
    "pool_spec",
    "reuse_workers",
    "start_forkserver",
]
