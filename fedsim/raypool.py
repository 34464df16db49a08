"""Start Ray and the client actors early, and keep them from one simulation to the next.

Flower's simulation engine starts Ray, builds a pool of client actors and, at the end of
every run, kills the actors and shuts Ray down, so each run pays Ray's start (3–4 s
here) and the actors' cold start (imports: ~5 s of CPU each) again, and pays them only
once the driver has set everything else up. Inside :func:`reuse_actors` (every
``fedsim run``; a ``fedsim sweep`` holds one block for all its points), the engine's Ray
backend is a :class:`KeptRayBackend`:

- :meth:`ActorPools.prestart` starts Ray and the pool in a background thread as soon as
  the config has passed its checks, the way Flower's backend would (the same
  ``ray.init`` arguments, the same actors), while the driver loads the data and builds
  its apps; each actor imports the ClientApp's modules when it is created
  (:func:`warm_worker`), not inside the first round. The backend waits for that thread
  and takes the pool over.
- the first run builds the pool (or takes the prestarted one), later runs with the same
  backend config take it over, and the end of a run leaves Ray and the actors up;
  leaving the block shuts them down.

A run's results do not depend on this: a client's state lives in the run directory
(:mod:`clients.client_store`), its batches and noise come from the run's seed, and what
an actor caches between runs (the loaded dataset, keyed by the data config) is read-only.
A pool is kept only when every actor is idle at the end of a run; otherwise (a run
interrupted while clients trained) it is terminated as Flower would and the next run
builds a fresh one.

The swap is of the one name Flower's engine reads when it builds its backend
(``flwr.server.superlink.fleet.vce.backend.raybackend.RayBackend``, pinned
``flwr==1.41.*``); ``tests/test_sweep.py`` fails if that seam moves.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flwr.clientapp import ClientApp
from flwr.server.superlink.fleet.vce.backend import raybackend
from flwr.simulation.ray_transport.ray_actor import BasicActorPool, ClientAppActor

logger = logging.getLogger(__name__)

_FlowerRayBackend = raybackend.RayBackend

#: What a client actor imports when it is created (:func:`warm_worker`): the ClientApp's
#: modules (torch, Opacus, the accountants), ~5 s of CPU on this machine's cores.
WARM_MODULES = ("clients.client_app", "clients.local_round")


def warm_worker() -> None:
    """Run by each client actor when it is created (Flower's ``on_actor_init_fn``): import
    :data:`WARM_MODULES`, then freeze the objects that made (``gc.freeze``), so that the
    worker's garbage collections during training and at its exit skip them."""
    for name in WARM_MODULES:
        importlib.import_module(name)
    gc.freeze()


#: Flower's actor arguments for fedsim's pools: warm at creation.
ACTOR_KWARGS: dict[str, Any] = {"on_actor_init_fn": warm_worker}


class Prestart:
    """Ray (unless it is up) and a client actor pool started in a background thread (a
    :class:`fedsim.raystart.RayParent`; one owner: the :class:`ActorPools` that made
    it). :meth:`take` waits for it."""

    def __init__(self, backend_config: dict[str, Any]) -> None:
        from fedsim.raystart import RayParent

        self.client_resources = dict(backend_config.get("client_resources") or {})
        self._config = backend_config
        self._pool: BasicActorPool | None = None
        self._parent = RayParent(self._start, "fedsim-ray-prestart")

    def _start(self) -> None:
        import ray

        from fedsim.raystart import flower_ray_init, wait_early

        wait_early()  # a Ray that `fedsim run` started before its imports
        if not ray.is_initialized():
            flower_ray_init(self._config["init_args"])
        pool = BasicActorPool(
            actor_type=ClientAppActor,
            client_resources=self.client_resources,
            actor_kwargs=ACTOR_KWARGS,
        )
        pool.add_actors_to_pool(pool.actors_capacity)
        self._pool = pool

    def wait(self) -> None:
        """Block until Ray is up and the actors are created (not yet warm); re-raise the
        thread's error, if any."""
        self._parent.wait()

    def release(self) -> None:
        """Let the thread end: call after ``ray.shutdown()`` returned."""
        self._parent.release()

    def take(self) -> BasicActorPool | None:
        """The prestarted pool (once), after :meth:`wait`."""
        self.wait()
        pool, self._pool = self._pool, None
        return pool


class ActorPools:
    """The pools kept by :func:`reuse_actors`, by backend config, and the one being
    prestarted (its one owner)."""

    def __init__(self) -> None:
        self._pools: dict[str, BasicActorPool] = {}
        self._lock = threading.Lock()
        self._prestart: Prestart | None = None
        self._ray_parents: list[Prestart] = []

    def prestart(self, backend_config: dict[str, Any]) -> bool:
        """Start a client actor pool for ``backend_config`` in the background (and Ray
        first, unless it is up: :mod:`fedsim.raystart` may have started it), unless a
        pool is kept (a later point of a sweep) or a prestart is under way. Returns
        whether it started one."""
        with self._lock:
            if self._prestart is not None or self._pools:
                return False
            self._prestart = Prestart(backend_config)
            self._ray_parents.append(self._prestart)
            return True

    def release_ray(self) -> None:
        """Let the threads that started Ray end (after ``ray.shutdown()``)."""
        with self._lock:
            parents, self._ray_parents = self._ray_parents, []
        for parent in parents:
            parent.release()

    def settle(self) -> None:
        """Wait for a prestart under way (Ray is then up, or its error is raised)."""
        with self._lock:
            prestart = self._prestart
        if prestart is not None:
            try:
                prestart.wait()
            except BaseException:
                with self._lock:
                    self._prestart = None
                raise

    def take_prestarted(self, client_resources: dict[str, Any]) -> BasicActorPool | None:
        """The prestarted pool when its actors have ``client_resources`` (else it is
        terminated: its actors would hold the CPUs the engine's pool needs)."""
        with self._lock:
            prestart, self._prestart = self._prestart, None
        if prestart is None:
            return None
        pool = prestart.take()
        if pool is None or prestart.client_resources == dict(client_resources):
            return pool
        pool.terminate_all_actors()
        return None

    def take(self, key: str) -> BasicActorPool | None:
        """The kept pool for ``key`` (removed: a run owns it until it gives it back)."""
        with self._lock:
            return self._pools.pop(key, None)

    def give_back(self, key: str, pool: BasicActorPool) -> None:
        """Keep ``pool`` for the next run with ``key``."""
        with self._lock:
            self._pools[key] = pool

    def __len__(self) -> int:
        with self._lock:
            return len(self._pools)

    def kept(self) -> tuple[BasicActorPool, ...]:
        """The pools kept now (between runs)."""
        with self._lock:
            return tuple(self._pools.values())

    def close(self) -> None:
        """Terminate every kept or prestarted actor (their resources return to Ray)."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
            prestart, self._prestart = self._prestart, None
        if prestart is not None:
            try:
                prestarted = prestart.take()
            except Exception as exc:  # Ray did not start: nothing to terminate
                logger.debug("prestart failed: %s", exc)
            else:
                pools += [prestarted] if prestarted is not None else []
        for pool in pools:
            try:
                pool.terminate_all_actors()
            except Exception as exc:  # actors of a Ray that is gone
                logger.debug("could not terminate kept actors: %s", exc)

    def forget(self) -> None:
        """Drop every kept pool without a word to its actors (Ray is going down)."""
        with self._lock:
            self._pools = {}
            self._prestart = None


#: The pools of the active :func:`reuse_actors` block (empty outside one; blocks inside
#: it share its pools, so it holds at most one).
_ACTIVE: list[ActorPools] = []


def _idle(pool: BasicActorPool) -> bool:
    """Whether every actor of ``pool`` is back in it (none busy with a message)."""
    return len(pool.pool) == pool.num_actors > 0


class KeptRayBackend(_FlowerRayBackend):  # type: ignore[misc, valid-type]
    """Flower's Ray backend whose actor pool outlives the run (see the module doc)."""

    def __init__(self, backend_config: dict[str, Any]) -> None:
        if _ACTIVE:
            _ACTIVE[-1].settle()  # a prestart under way: Ray is up once it returns
        super().__init__(backend_config)  # starts Ray unless it is up
        self.actor_kwargs = ACTOR_KWARGS
        import ray

        # the Ray instance is part of the key: actors of a Ray that was shut down since
        # are never handed out
        session = ray.get_runtime_context().get_job_id()
        self._key = json.dumps([session, backend_config], sort_keys=True, default=str)

    def build(self, app_fn: Callable[[], ClientApp]) -> None:
        pools = _ACTIVE[-1] if _ACTIVE else None
        pool = pools.take(self._key) if pools is not None else None
        if pool is None and pools is not None:
            pool = pools.take_prestarted(self.client_resources)
        if pool is None:
            if pools is not None:
                pools.close()  # other settings' actors would hold the CPUs this pool needs
            super().build(app_fn)
            return
        self.pool = pool
        self.app_fn = app_fn
        logger.debug("taking over %d kept or prestarted client actors", pool.num_actors)

    def terminate(self) -> None:
        pools = _ACTIVE[-1] if _ACTIVE else None
        if pools is not None and self.pool is not None and _idle(self.pool):
            pools.give_back(self._key, self.pool)  # Ray and the actors stay up
            return
        if pools is not None:
            pools.forget()  # Flower's terminate shuts Ray down with every actor
        super().terminate()


@contextmanager
def reuse_actors() -> Iterator[ActorPools]:
    """Runs started inside share Ray and a warm actor pool; shut down on leaving.

    Re-entrant: a block inside another shares the outer one's pools and leaves them to it.
    One thread at a time (one sweep per process).
    """
    if _ACTIVE:
        yield _ACTIVE[-1]
        return
    pools = ActorPools()
    _ACTIVE.append(pools)
    raybackend.RayBackend = KeptRayBackend  # type: ignore[misc]
    try:
        yield pools
    finally:
        _ACTIVE.remove(pools)
        raybackend.RayBackend = _FlowerRayBackend  # type: ignore[misc]
        pools.close()
        import ray

        if ray.is_initialized():
            ray.shutdown()
        pools.release_ray()


def actors_kept() -> bool:
    """Whether a :func:`reuse_actors` block is active (then a run leaves Ray up)."""
    return bool(_ACTIVE)
