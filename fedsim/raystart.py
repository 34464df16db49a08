"""Start a run's own Ray at once, before the driver's heavy imports (``fedsim run``).

This module imports nothing heavy (no torch, Flower or Ray at import), so ``fedsim run``
can call :func:`start_early` as soon as the config is read: Ray's processes start on
the machine's other core while the driver imports torch, Opacus and Flower (~3 s) and
runs the preflight; :meth:`fedsim.raypool.ActorPools.prestart` then only adds the
client actors. Ray is started exactly as Flower's simulation backend would start it
(:func:`flower_ray_init`, checked against Flower's own code by the tests), so the
engine finds it up and uses it.

Only a local Ray is started early (no ``simulation.ray_address``): attaching to a
cluster costs little and is checked first (:func:`fedsim.run.check_ray_address`).
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedsim.config import Config

#: The start of the notice ``ray.init`` gives on its GPU-visibility handling.
RAY_GPU_NOTICE = "Tip: In future versions of Ray, Ray will no longer override"

#: Seconds :meth:`RayParent.release` waits for the thread that started Ray to end.
RAY_PARENT_JOIN = 5.0


def protect_local_ray(cfg: Config) -> bool:
    """Turn on Ray's token authentication for the local Ray this process will start.

    Ray 2.55 binds its gRPC servers to every interface and maps ``127.0.0.1`` to the
    machine's address (``ray._private.services.resolve_ip_for_localhost``), so a local
    simulation cannot be kept on loopback; with ``RAY_AUTH_MODE=token`` and a fresh
    random ``RAY_AUTH_TOKEN`` that only this process and its Ray children hold, nobody
    else can attach to it or submit work. Done only when this process starts Ray itself
    (no ``simulation.ray_address``), Ray is not yet imported (its mode is fixed at import)
    and the user set no ``RAY_AUTH_MODE``. Returns whether it was turned on.
    """
    if cfg.simulation.ray_address or "ray" in sys.modules or "RAY_AUTH_MODE" in os.environ:
        return False
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    return True


def ray_init_args(cfg: Config) -> dict[str, Any]:
    """The ``ray.init`` arguments of a simulation (Flower's ``backend_config["init_args"]``)."""
    init_args: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
    if cfg.simulation.ray_address:
        init_args["address"] = cfg.simulation.ray_address
    else:
        # a Ray of our own, never a cluster that `ray start` left on this machine (Ray
        # would attach to the one its ray_current_cluster file names)
        init_args["address"] = "local"
        init_args["num_cpus"] = max(1, os.cpu_count() or 1)
    return init_args


def flower_ray_init(init_args: dict[str, Any]) -> None:
    """``ray.init`` as Flower 1.41's ``RayBackend.init_ray`` calls it for ``init_args``
    (pinned ``flwr==1.41.*``; ``tests/test_sweep.py`` compares the two): the dashboard
    off unless asked for, and this process's ``sys.path`` on the workers' ``PYTHONPATH``
    (also set in this process's environment, as Flower does)."""
    import ray

    args = dict(init_args)
    args.setdefault("include_dashboard", False)
    pythonpath = os.pathsep.join(sys.path)
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    os.environ["PYTHONPATH"] = pythonpath
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **args)


class RayParent:
    """Runs ``start`` (which starts Ray, or uses it) in a background thread that then
    lives, asleep, until :meth:`release`: Ray starts its processes with
    ``PR_SET_PDEATHSIG``, which Linux ties to the starting *thread*, so they would be
    killed (SIGKILL) when it ended; it must outlive ``ray.shutdown()``, which stops them
    in order (a raylet killed mid-shutdown leaves its agents behind)."""

    def __init__(self, start: Callable[[], None], name: str) -> None:
        self._start = start
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._released = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._start()
        except BaseException as exc:  # handed to the thread that waits
            self._error = exc
        finally:
            self._ready.set()
        self._released.wait()

    def wait(self) -> None:
        """Block until ``start`` returned; re-raise its error (once), if any."""
        self._ready.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def release(self) -> None:
        """Let the thread end: call after ``ray.shutdown()`` returned."""
        self._released.set()
        self._thread.join(timeout=RAY_PARENT_JOIN)


class EarlyRay:
    """A local Ray started by a :class:`RayParent` thread."""

    def __init__(self, init_args: dict[str, Any]) -> None:
        self._parent = RayParent(lambda: flower_ray_init(init_args), "fedsim-ray-early")

    def wait(self) -> None:
        """Block until Ray is up; re-raise the start's error (once), if any."""
        self._parent.wait()

    def stop(self) -> None:
        """Shut this Ray down unless that was done already, then let the thread end."""
        try:
            self._parent.wait()
        except Exception:  # Ray did not start: nothing to shut down
            pass
        else:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        self._parent.release()


#: The early Ray of this process, while one is up (one owner: :func:`start_early` /
#: :func:`stop_early`).
_EARLY: list[EarlyRay] = []


def start_early(cfg: Config) -> bool:
    """Start ``cfg``'s local Ray in the background (:class:`EarlyRay`), unless it attaches
    to a cluster, Ray is already imported (a sweep, a test session: Ray may be up) or an
    early Ray is up. Returns whether it started one; :func:`stop_early` must follow."""
    if cfg.simulation.ray_address or "ray" in sys.modules or _EARLY:
        return False
    protect_local_ray(cfg)
    # Ray's notice at init about a future change of CUDA_VISIBLE_DEVICES handling (the
    # run filters it too): today's behaviour (clients with num_gpus=0 see no GPU) is ours
    warnings.filterwarnings("ignore", message=RAY_GPU_NOTICE, category=FutureWarning)
    _EARLY.append(EarlyRay(ray_init_args(cfg)))
    return True


def wait_early() -> None:
    """Block until the early Ray (if any) is up; raise its start's error."""
    if _EARLY:
        _EARLY[-1].wait()


def stop_early() -> None:
    """Shut the early Ray down (unless the run did) and let its thread end."""
    while _EARLY:
        _EARLY.pop().stop()


__all__ = [
    "EarlyRay",
    "RayParent",
    "flower_ray_init",
    "protect_local_ray",
    "ray_init_args",
    "start_early",
    "stop_early",
    "wait_early",
]
