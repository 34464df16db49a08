"""Assemble and run one simulated federation (the one module that imports both sides).

``run_experiment(cfg, out_dir)`` runs the preflight, builds the ServerApp and ClientApp
from the typed config and hands them to Flower's Simulation Engine, whose backend runs
the ClientApp calls: local worker processes (:mod:`fedsim.procpool`) or Ray actors
(:func:`simulation_backend`); the ServerApp runs in this process.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsim.config import Config
from fedsim.devices import gpu_visible
from fedsim.errors import ConfigError, FedsimError, RunError, RunInterruptedError
from fedsim.heap import keep_freed_heap
from fedsim.preflight import PreflightReport, preflight
from fedsim.raystart import protect_local_ray, ray_init_args
from fedsim.records import RoundRecord

if TYPE_CHECKING:
    from fedsim.checkpoint import ResumePoint
    from fedsim.workload import SharedTrainPool

logger = logging.getLogger(__name__)


def simulation_backend(cfg: Config) -> str:
    """``process`` or ``ray``: ``simulation.backend``, where ``auto`` is ``ray`` when the
    clients need Ray (a cluster address, a GPU share) and ``process`` otherwise."""
    from fedsim.procpool import choose_backend

    return choose_backend(cfg.simulation, gpu_visible)


def backend_config(cfg: Config) -> dict[str, Any]:
    """Flower's backend config: client resources decide how many clients train at once;
    with the process backend, ``process`` gives its pool (workers: this machine's CPUs
    divided by ``num_cpus_per_client``; torch threads per worker: that share, at least 1,
    as Ray gives an actor)."""
    sim = cfg.simulation
    from fedsim.procpool import client_gpu_share

    gpus = client_gpu_share(sim, gpu_visible)
    config: dict[str, Any] = {
        # max_restarts: Ray restarts a client worker that died (crash, OOM kill) instead
        # of leaving a dead actor in Flower's pool, which would fail every later message
        "client_resources": {
            "num_cpus": sim.num_cpus_per_client,
            "num_gpus": gpus,
            "max_restarts": -1,
        },
        "init_args": ray_init_args(cfg),
    }
    if simulation_backend(cfg) == "process":
        config["process"] = {
            "workers": max(1, int((os.cpu_count() or 1) // sim.num_cpus_per_client)),
            "threads": max(1, int(sim.num_cpus_per_client)),
        }
    return config


#: Folder of the run directory where the driver shares the training pool with the
#: workers (not under ``state/``: the ServerApp clears that when a fresh run starts).
POOL_DIR = ".pool"

#: Seconds :func:`check_ray_address` waits for a Ray head to answer.
RAY_CONNECT_TIMEOUT = 5.0


def check_ray_address(address: str | None, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """Fail fast when ``simulation.ray_address`` names a Ray head nobody answers at
    (Ray itself would retry for minutes).

    ``None``, ``"auto"`` and ``"local"`` are left to Ray; ``host:port`` and
    ``ray://host:port`` must accept a TCP connection within ``timeout`` seconds.

    Raises
    ------
    FedsimError
        Naming the field, the address and the connection error.
    """
    import socket

    if address is None or address in ("auto", "local"):
        return
    bare = address.removeprefix("ray://")
    host, sep, port_text = bare.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise FedsimError(
            f"simulation.ray_address must be 'auto', 'local', 'HOST:PORT' or "
            f"'ray://HOST:PORT'; got {address!r}"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout):
            pass
    except OSError as exc:
        raise FedsimError(
            f"simulation.ray_address {address!r}: no Ray head answers there within "
            f"{timeout:g} s ({exc}); start it (ray start --head) or fix the address"
        ) from None


#: SuperNodes a simulation starts at least (up to its number of clients): its virtual
#: clients share them (:mod:`strategies.directory`), so set-up and rounds cost the same
#: for any N.
POOL_SIZE = 16

#: Workers assumed on an existing Ray cluster (``simulation.ray_address``), whose size
#: is not known before Ray starts: a node more than needed costs a few bytes.
CLUSTER_WORKERS = 256


def expected_workers(cfg: Config) -> int:
    """How many client workers (Ray actors) will train at once: this machine's CPUs (and
    GPUs, when clients ask for them) divided by each client's share."""
    sim = cfg.simulation
    if sim.ray_address:
        return CLUSTER_WORKERS
    workers = int((os.cpu_count() or 1) // sim.num_cpus_per_client)
    gpus = backend_config(cfg)["client_resources"]["num_gpus"]
    if gpus > 0:
        import torch

        workers = min(workers, int(torch.cuda.device_count() // gpus))
    return max(1, workers)


def pool_size(num_clients: int, workers: int = 1) -> int:
    """How many SuperNodes simulate ``num_clients`` virtual clients for ``workers``.

    Ray's actors, not the nodes, decide how many clients train at once; a node is only a
    mailbox, which Flower's simulation engine polls every 0.1 s for one message. At least
    :data:`POOL_SIZE` nodes, and one per worker (so that every worker is warmed up at the
    start, :func:`strategies.directory.pooled_directory`), keep messages flowing without
    the per-node cost of one node per client.

    >>> pool_size(5), pool_size(10_000), pool_size(10_000, workers=64)
    (5, 16, 64)
    """
    return max(1, min(int(num_clients), max(POOL_SIZE, int(workers))))


def config_problems(cfg: Config) -> list[str]:
    """The rules the configured strategy declares (``strategies.registry``), which the
    config package cannot see (import direction)."""
    from strategies.registry import strategy_problems

    return strategy_problems(cfg)


def check_config(cfg: Config) -> None:
    """:func:`config_problems` as a :class:`ConfigError`."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(problems)


def check_plan(cfg: Config) -> PreflightReport:
    """Everything checked before a run starts: the strategy's rules, then the preflight."""
    check_config(cfg)
    return preflight(cfg)


def run_experiment(
    cfg: Config,
    out_dir: str | Path,
    on_round: Any = None,
    verbose: bool = False,
    *,
    resume: bool = False,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Run ``cfg`` into ``out_dir``; returns the summary (also in ``summary.json``).

    ``resume``: continue the interrupted run in ``out_dir`` from its last checkpoint
    (:mod:`fedsim.checkpoint`; ``cfg`` must be the config it started with). ``stop``: set
    it (e.g. from a signal handler) to end the run within a second after its last
    checkpoint; the run then raises :class:`RunInterruptedError`.

    Raises
    ------
    ConfigError
        If the preflight finds a problem (nothing is started then).
    FedsimError
        If ``resume`` and the directory cannot be resumed (the message says why).
    RunInterruptedError
        If ``stop`` was set.
    RunError
        If the federation ends without a summary.
    """
    check_plan(cfg)
    check_ray_address(cfg.simulation.ray_address)
    keep_freed_heap()  # the driver evaluates every round
    point = None
    if resume:
        from fedsim.checkpoint import read_resume_point
        from fedsim.rundir import METRICS_FILE, config_text

        point = read_resume_point(out_dir, config_text(cfg), METRICS_FILE)
        from fedsim.checkpoint import STATE_DIR
        from fedsim.procs import reap

        reap(Path(out_dir) / STATE_DIR)  # Ray agents a killed driver left behind
    holder: dict[str, Any] = {}
    with _client_backend(cfg):
        _simulate(cfg, out_dir, on_round, verbose, holder, point, stop)
    if "summary" not in holder:
        raise RunError("the federation ended without a summary; see the log above")
    return dict(holder["summary"])


@contextmanager
def keep_client_workers(configs: Sequence[Config] = ()) -> Iterator[None]:
    """Runs inside share warm client workers (a sweep's points, a test module's runs):
    the process backend's worker pool, and Ray with its actors when one of ``configs``
    runs on Ray (without ``configs``: both); leaving it stops them."""
    from fedsim.procpool import reuse_workers

    ray_runs = not configs or any(simulation_backend(c) == "ray" for c in configs)
    with reuse_workers():
        if not ray_runs:
            yield
            return
        protect_local_ray(configs[0] if configs else Config())  # before Ray is imported
        from fedsim.raypool import reuse_actors

        with reuse_actors():
            yield


@contextmanager
def _client_backend(cfg: Config) -> Iterator[None]:
    """The engine's client backend for one run, its workers started in the background
    while the driver sets up, unless a sweep's outer block keeps warm ones; leaving it
    stops what this run started (also after an error or interruption)."""
    if simulation_backend(cfg) == "process":
        from fedsim.procpool import engine_backend, pool_spec, reuse_workers

        with reuse_workers() as workers, engine_backend():
            # the driver is idle until the fork server has imported torch & co.: it warms
            # up the report it writes at the end then (~1 s less after the last round)
            workers.prestart(pool_spec(backend_config(cfg)), while_waiting=_warm_up_report)
            yield
        return
    protect_local_ray(cfg)  # before anything imports Ray
    from fedsim.raypool import reuse_actors

    with warnings.catch_warnings(), reuse_actors() as pools:
        # Ray's notice about a future change of CUDA_VISIBLE_DEVICES handling: today's
        # behaviour (clients with num_gpus=0 see no GPU) is the one we want.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"ray\.")
        pools.prestart(backend_config(cfg))
        yield


def _warm_up_report() -> None:
    from fedsim.report import warm_up

    warm_up()


@contextmanager
def _shared_train_pool(cfg: Config, out_dir: str | Path) -> Iterator[SharedTrainPool]:
    """The training pool the driver writes once for the workers to map (instead of each
    loading the dataset: one float32 copy per worker); removed when the federation ends."""
    from fedsim.workload import share_train_pool

    pool_dir = Path(out_dir) / POOL_DIR
    try:
        yield share_train_pool(cfg, pool_dir)
    finally:
        shutil.rmtree(pool_dir, ignore_errors=True)  # a leftover only costs disk space


def _simulate(
    cfg: Config,
    out_dir: str | Path,
    on_round: Any,
    verbose: bool,
    holder: dict[str, Any],
    resume: ResumePoint | None,
    stop: threading.Event | None,
) -> None:
    from flwr.simulation import run_simulation

    from clients.client_app import make_client_app
    from fedsim.audit.canaries import federation_size
    from fedsim.checkpoint import STATE_DIR
    from strategies.server_app import make_server_app

    # a user-level audit adds its canary clients
    nodes = pool_size(federation_size(cfg), expected_workers(cfg))
    with _shared_train_pool(cfg, out_dir) as shared:
        run_simulation(
            # a simulation: reproducible from the root seed (its ε assumes the seed is secret)
            server_app=make_server_app(
                cfg,
                out_dir,
                on_round,
                on_summary=lambda s: holder.update(summary=s),
                seeded_noise=True,
                resume=resume,
                stop=stop,
                pool_size=nodes,
            ),
            client_app=make_client_app(
                cfg,
                seeded_noise=True,
                state_root=Path(out_dir) / STATE_DIR / "clients",
                pooled=True,
                shared=shared,
            ),
            num_supernodes=nodes,
            backend_config=backend_config(cfg),  # type: ignore[arg-type]
            verbose_logging=verbose,
        )


__all__ = [
    "RoundRecord",
    "RunInterruptedError",
    "backend_config",
    "check_config",
    "check_plan",
    "config_problems",
    "keep_client_workers",
    "protect_local_ray",
    "run_experiment",
    "simulation_backend",
]
