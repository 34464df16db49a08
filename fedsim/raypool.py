"""Keep Ray and its warm client actors from one simulation to the next (``fedsim sweep``).

Flower's simulation engine starts Ray, builds a pool of client actors and, at the end of
every run, kills the actors and shuts Ray down, so each run pays Ray's start (4–6 s
here) and the actors' cold start (imports, data: 10–16 s) again. Inside
:func:`reuse_actors`, the engine's Ray backend is a :class:`KeptRayBackend`: the first
run builds the pool, later runs with the same backend config take it over, and the end
of a run leaves Ray and the actors up; leaving the block shuts them down.

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

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flwr.clientapp import ClientApp
from flwr.server.superlink.fleet.vce.backend import raybackend
from flwr.simulation.ray_transport.ray_actor import BasicActorPool

logger = logging.getLogger(__name__)

_FlowerRayBackend = raybackend.RayBackend


class ActorPools:
    """The pools kept by :func:`reuse_actors`, by backend config (its one owner)."""

    def __init__(self) -> None:
        self._pools: dict[str, BasicActorPool] = {}
        self._lock = threading.Lock()

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
        """Terminate every kept actor (their resources return to Ray)."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            try:
                pool.terminate_all_actors()
            except Exception as exc:  # actors of a Ray that is gone
                logger.debug("could not terminate kept actors: %s", exc)

    def forget(self) -> None:
        """Drop every kept pool without a word to its actors (Ray is going down)."""
        with self._lock:
            self._pools = {}


#: The pools of the active :func:`reuse_actors` block (empty outside one; blocks inside
#: it share its pools, so it holds at most one).
_ACTIVE: list[ActorPools] = []


def _idle(pool: BasicActorPool) -> bool:
    """Whether every actor of ``pool`` is back in it (none busy with a message)."""
    return len(pool.pool) == pool.num_actors > 0


class KeptRayBackend(_FlowerRayBackend):  # type: ignore[misc, valid-type]
    """Flower's Ray backend whose actor pool outlives the run (see the module doc)."""

    def __init__(self, backend_config: dict[str, Any]) -> None:
        super().__init__(backend_config)  # starts Ray unless it is up
        import ray

        # the Ray instance is part of the key: actors of a Ray that was shut down since
        # are never handed out
        session = ray.get_runtime_context().get_job_id()
        self._key = json.dumps([session, backend_config], sort_keys=True, default=str)

    def build(self, app_fn: Callable[[], ClientApp]) -> None:
        pools = _ACTIVE[-1] if _ACTIVE else None
        pool = pools.take(self._key) if pools is not None else None
        if pool is None:
            if pools is not None:
                pools.close()  # other settings' actors would hold the CPUs this pool needs
            super().build(app_fn)
            return
        self.pool = pool
        self.app_fn = app_fn
        logger.debug("reusing %d warm client actors", pool.num_actors)

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


def actors_kept() -> bool:
    """Whether a :func:`reuse_actors` block is active (then a run leaves Ray up)."""
    return bool(_ACTIVE)
