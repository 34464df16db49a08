"""Assemble and run one simulated federation (the one module that imports both sides).

``run_experiment(cfg, out_dir)`` runs the preflight, builds the ServerApp and ClientApp
from the typed config and hands them to Flower's Simulation Engine (Ray backend). Each
Ray actor runs ClientApp calls; the ServerApp runs in this process.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsim.config import Config
from fedsim.devices import gpu_visible
from fedsim.errors import ConfigError, RunError, RunInterruptedError
from fedsim.preflight import PreflightReport, preflight
from fedsim.records import RoundRecord

if TYPE_CHECKING:
    from fedsim.checkpoint import ResumePoint

logger = logging.getLogger(__name__)


def backend_config(cfg: Config) -> dict[str, Any]:
    """Flower/Ray backend config: client resources decide how many clients train at once.

    Without ``simulation.num_gpus_per_client``, clients get 0.5 GPU each when a GPU is
    visible (two share one) and none otherwise.
    """
    sim = cfg.simulation
    gpus = sim.num_gpus_per_client
    if gpus is None:
        gpus = 0.5 if gpu_visible() else 0.0
    init_args: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
    if sim.ray_address:
        init_args["address"] = sim.ray_address
    else:
        init_args["num_cpus"] = max(1, os.cpu_count() or 1)
    return {
        "client_resources": {"num_cpus": sim.num_cpus_per_client, "num_gpus": gpus},
        "init_args": init_args,
    }


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
    point = None
    if resume:
        from fedsim.checkpoint import read_resume_point
        from fedsim.rundir import METRICS_FILE, config_text

        point = read_resume_point(out_dir, config_text(cfg), METRICS_FILE)
    holder: dict[str, Any] = {}
    try:
        with warnings.catch_warnings():
            # Ray's notice about a future change of CUDA_VISIBLE_DEVICES handling: today's
            # behaviour (clients with num_gpus=0 see no GPU) is the one we want.
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"ray\.")
            _simulate(cfg, out_dir, on_round, verbose, holder, point, stop)
    finally:
        _stop_ray()
    if "summary" not in holder:
        raise RunError("the federation ended without a summary; see the log above")
    return dict(holder["summary"])


def _stop_ray() -> None:
    """Shut the local Ray instance down (also after an error or an interruption)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


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
        ),
        client_app=make_client_app(
            cfg, seeded_noise=True, state_root=Path(out_dir) / STATE_DIR / "clients"
        ),
        num_supernodes=federation_size(cfg),  # a user-level audit adds its canary clients
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
    "run_experiment",
]
