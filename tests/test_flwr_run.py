"""`flwr run .` support: the federation settings fedsim derives from a config, how Flower
1.41's own code turns them into the simulation's backend config (client CPUs/GPUs), the
node-count message, the runtime-environment note and ``fedsim federation-config``.

The runs themselves are in ``tests/test_flwr_run_e2e.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict
from flwr.cli.run.run import _parse_federation_config_overrides
from flwr.cli.typing import SuperLinkConnection
from flwr.proto.federation_config_pb2 import SimulationConfig
from flwr.simulation.app import _run_simulation_settings
from flwr.supercore.constant import DEFAULT_SIMULATION_CONFIG

from fedsim.cli import main
from fedsim.config import Config, from_dict
from fedsim.errors import ConfigError
from fedsim.flwr_run import (
    federation_config,
    federation_config_text,
    node_count_problem,
    runtime_env_note,
)

QUICKSTART = "experiments/quickstart.yaml"


def make_config(num_clients: int, **simulation: float) -> Config:
    return from_dict(
        {
            "data": {"num_clients": num_clients},
            "dp": {"enabled": False},
            "strategy": {"clients_per_round": min(num_clients, 5)},
            "simulation": simulation,
        }
    )


def settings_flower_uses(text: str) -> tuple[int, str, dict[str, dict[str, object]]]:
    """What Flower's simulation runs with when ``flwr run`` gets ``--federation-config
    text``: the CLI's parsing, the SuperLink's merge over its default federation config
    (``control_handlers``: CopyFrom default, MergeFrom override), and
    ``flwr-simulation``'s extraction of the backend config."""
    connection = SuperLinkConnection(name="local", address=":local:")
    override = _parse_federation_config_overrides([text], connection)
    assert override is not None
    resolved = SimulationConfig()
    resolved.CopyFrom(DEFAULT_SIMULATION_CONFIG)
    resolved.MergeFrom(override)
    nodes, backend, config, _, _ = _run_simulation_settings(resolved)
    return nodes, backend, dict(config)  # type: ignore[arg-type]


def test_federation_config_has_one_node_per_client_and_fedsims_client_resources() -> None:
    cfg = make_config(7, num_cpus_per_client=1.5, num_gpus_per_client=0.25)
    assert federation_config(cfg) == {
        "num-supernodes": 7,
        "client-resources-num-cpus": 2,  # Flower takes whole CPUs: rounded up
        "client-resources-num-gpus": 0.25,
    }


@pytest.mark.parametrize("gpus", [0.0, 0.5, 1.0])
def test_flower_runs_the_simulation_with_the_printed_settings(gpus: float) -> None:
    """GPU plumbing (no GPU here): the GPU share a config asks for reaches the Ray
    backend's client resources through Flower's own parsing and merging."""
    cfg = make_config(5, num_gpus_per_client=gpus)
    nodes, backend, config = settings_flower_uses(federation_config_text(cfg))
    assert (nodes, backend) == (5, "ray")
    assert config["client_resources"] == {"num_cpus": 1, "num_gpus": gpus}


def test_flowers_defaults_do_not_fit_a_fedsim_simulation() -> None:
    """Why the settings are needed: Flower's default federation has 2 SuperNodes and
    gives each ClientApp 2 CPUs (one client at a time on a 2-core machine)."""
    assert DEFAULT_SIMULATION_CONFIG.num_supernodes == 2
    assert DEFAULT_SIMULATION_CONFIG.client_resources_num_cpus == 2


def test_node_count_problem_names_the_setting_and_the_command() -> None:
    cfg = make_config(5)
    assert node_count_problem(5, cfg) is None
    fewer = node_count_problem(2, cfg)
    assert fewer is not None
    assert "has 2 SuperNodes but data.num_clients is 5" in fewer
    assert "num-supernodes=5" in fewer
    assert f'--federation-config "{federation_config_text(cfg)}"' in fewer
    assert "data.num_clients=2" in fewer
    more = node_count_problem(8, cfg)
    assert more is not None and "has 8 SuperNodes but data.num_clients is 5" in more


def test_runtime_env_note_only_inside_flowers_runtime_environment() -> None:
    assert runtime_env_note({}) is None
    assert runtime_env_note({"VIRTUAL_ENV": "/home/u/.venv"}) is None
    note = runtime_env_note({"VIRTUAL_ENV": "/home/u/.flwr/runtime-envs/123"})
    assert note is not None
    assert "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1" in note
    assert "/home/u/.flwr/runtime-envs/123" in note


def test_federation_config_command_prints_the_argument(capsys) -> None:
    code = main(
        [
            "federation-config",
            QUICKSTART,
            "-o",
            "data.num_clients=4",
            "-o",
            "strategy.clients_per_round=4",
            "-o",
            "simulation.num_gpus_per_client=0.5",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out.strip()
    assert out == "num-supernodes=4 client-resources-num-cpus=1 client-resources-num-gpus=0.5"
    nodes, _, config = settings_flower_uses(out)
    assert nodes == 4 and config["client_resources"]["num_gpus"] == 0.5


def test_federation_config_command_rejects_a_bad_config(capsys) -> None:
    assert main(["federation-config", QUICKSTART, "-o", "data.num_clients=0"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "data.num_clients must be >= 1; got 0" in captured.err
    assert "Traceback" not in captured.err


def test_a_bad_run_config_is_logged_on_flowers_logger_before_it_raises() -> None:
    """Under ``flwr run`` the ServerApp's error must be a line of the streamed log (Flower's
    logger), not only the tail of a traceback."""
    from strategies.flwr_native import load_config

    context = Context(
        run_id=1,
        node_id=0,
        node_config={},
        state=RecordDict(),
        run_config={"config-path": QUICKSTART, "overrides": "rounds=0", "out-dir": ""},
    )
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    flower = logging.getLogger("flwr")
    flower.addHandler(handler)
    try:
        with pytest.raises(ConfigError, match="rounds must be >= 1; got 0"):
            load_config(context, Path(__file__).resolve().parents[1])
    finally:
        flower.removeHandler(handler)
    errors = [r.getMessage() for r in records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "rounds must be >= 1; got 0" in errors[0]
