"""What ``flwr run .`` needs beyond the two apps: the federation settings of a simulation.

Flower 1.41 keeps a simulation's settings (number of simulated SuperNodes, each
ClientApp's CPUs and GPUs) out of the app: they belong to the federation of the SuperLink
the run goes to, set per run with ``flwr run . --federation-config "k=v ..."`` or kept
on a running SuperLink with ``flwr federation simulation-config``. (A
``[tool.flwr.federations]`` table in ``pyproject.toml`` is legacy: ``flwr run`` moves it
into ``$FLWR_HOME/config.toml`` and comments it out of the user's ``pyproject.toml``, and
the ``options.*`` it becomes are deprecated.) Flower's defaults — 2 SuperNodes, 2 CPUs
per ClientApp — do not fit a fedsim experiment, whose simulation needs one SuperNode per
client. :func:`federation_config` derives the settings from the experiment's config
(``fedsim federation-config CONFIG`` prints them), and :func:`node_count_problem` is the
message the ServerApp fails with, within seconds, when the simulation has the wrong
number of SuperNodes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from fedsim.config import Config

#: Flower's environment variable that stops a SuperLink it starts from installing the
#: app's dependencies (``uv sync`` into a fresh environment per run) before each run.
NO_DEPENDENCY_INSTALL_ENV = "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"


def federation_config(cfg: Config) -> dict[str, int | float]:
    """The ``--federation-config`` entries of ``flwr run`` that simulate ``cfg``.

    One simulated SuperNode per client (``data.num_clients``; a privacy audit's canary
    clients are ``fedsim audit``'s, which ``flwr run`` does not run), and each
    ClientApp's resources as ``fedsim run`` gives them (:func:`fedsim.run.backend_config`:
    ``simulation.num_cpus_per_client``, and ``simulation.num_gpus_per_client`` or 0.5 GPU
    when one is visible). Flower takes whole CPUs: a fractional
    ``num_cpus_per_client`` is rounded up. ``simulation.ray_address`` has no federation
    setting (Flower's simulation starts its own Ray).
    """
    from fedsim.run import backend_config

    resources = backend_config(cfg)["client_resources"]
    return {
        "num-supernodes": cfg.data.num_clients,
        "client-resources-num-cpus": max(1, math.ceil(float(resources["num_cpus"]))),
        "client-resources-num-gpus": float(resources["num_gpus"]),
    }


def federation_config_text(cfg: Config) -> str:
    """:func:`federation_config` as one ``--federation-config`` argument.

    >>> from fedsim.config import from_dict
    >>> federation_config_text(from_dict({"data": {"num_clients": 3}, "dp": {"enabled": False},
    ...     "strategy": {"clients_per_round": 3}, "simulation": {"num_gpus_per_client": 0.25}}))
    'num-supernodes=3 client-resources-num-cpus=1 client-resources-num-gpus=0.25'
    """
    return " ".join(f"{key}={value}" for key, value in federation_config(cfg).items())


def node_count_problem(nodes: int, cfg: Config) -> str | None:
    """Why a simulation with ``nodes`` SuperNodes cannot run ``cfg`` (``None``: it can).

    Each simulated SuperNode is one client (its ``partition-id`` is the client id), so
    the counts must be equal: with fewer nodes the server would wait for clients that
    never come, with more a node would name a client the config does not have.
    """
    needed = cfg.data.num_clients
    if nodes == needed:
        return None
    return (
        f"flwr run: this simulation has {nodes} SuperNodes but data.num_clients is {needed}; "
        f"a fedsim simulation needs one SuperNode per client, num-supernodes={needed}. Run "
        "it with "
        f'flwr run . --stream --federation-config "{federation_config_text(cfg)}" '
        "(fedsim federation-config CONFIG prints these settings for any config), or set "
        f"data.num_clients={nodes} in the run config's overrides"
    )


def runtime_env_note(environ: dict[str, str] | None = None) -> str | None:
    """A note when Flower installed the app's dependencies into a runtime environment
    for this run (its ``VIRTUAL_ENV`` lies under ``$FLWR_HOME/runtime-envs``).

    fedsim must be installed where Flower runs the apps anyway (the FAB holds only the
    two apps and the configs), so the installation buys nothing and costs gigabytes.
    """
    env = os.environ if environ is None else environ
    venv = env.get("VIRTUAL_ENV")
    if not venv or Path(venv).parent.name != "runtime-envs":
        return None
    return (
        f"Flower installed this app's dependencies into {venv} before the run (uv sync, "
        f"gigabytes for torch); fedsim is installed already, so start the SuperLink with "
        f"{NO_DEPENDENCY_INSTALL_ENV}=1 (for flwr's local SuperLink: set it before the "
        "first flwr command, or stop the running one) or with "
        "--disable-runtime-dependency-installation"
    )
