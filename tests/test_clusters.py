"""Beyond one process: GPU shares per client (with a stand-in for GPUs, none here) and a
run attached to an existing Ray cluster (``simulation.ray_address``), which the test
starts with ``ray start --head`` and stops itself."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from test_resume import ray_processes

from fedsim.config import from_dict
from fedsim.run import CLUSTER_WORKERS, backend_config, expected_workers, pool_size
from fedsim.rundir import read_summary

ROOT = Path(__file__).resolve().parents[1]


def _cfg(**simulation: object):
    return from_dict(
        {
            "data": {"num_clients": 100},
            "dp": {"enabled": False},
            "simulation": dict(simulation),
        }
    )


@pytest.mark.parametrize(
    ("gpus", "share", "want_share", "want_workers"),
    [
        (0, None, 0.0, 8),  # no GPU: CPUs decide
        (1, None, 0.5, 2),  # one GPU: two clients share it
        (4, 0.25, 0.25, 8),  # 4 GPUs × 4 clients each = 16, but 8 CPUs
        (8, 1.0, 1.0, 8),  # a GPU per client
        (8, 0.5, 0.5, 8),  # 16 GPU slots, 8 CPUs
    ],
)
def test_gpu_shares_and_workers_with_stand_in_gpus(
    monkeypatch: pytest.MonkeyPatch,
    gpus: int,
    share: float | None,
    want_share: float,
    want_workers: int,
) -> None:
    """What Ray is asked for and how many clients train at once, for 0/1/4/8 GPUs on an
    8-CPU box (torch's device queries stand in for the GPUs this machine lacks)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    cfg = _cfg(num_gpus_per_client=share)
    resources = backend_config(cfg)["client_resources"]
    assert resources["num_gpus"] == want_share and resources["num_cpus"] == 1.0
    assert expected_workers(cfg) == want_workers
    assert pool_size(100, expected_workers(cfg)) == 16  # at least one node per worker


def test_a_cluster_gets_enough_nodes_for_its_workers() -> None:
    cfg = _cfg(ray_address="10.0.0.1:6379")
    assert expected_workers(cfg) == CLUSTER_WORKERS
    assert pool_size(100_000, expected_workers(cfg)) == CLUSTER_WORKERS
    assert backend_config(cfg)["init_args"]["address"] == "10.0.0.1:6379"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CONFIG = """\
name: cluster
seed: 2
rounds: 2
data: {name: pneumoniamnist, num_clients: 6, train_samples: 300, test_samples: 100}
model: {name: mlp}
client: {local_epochs: 1, batch_size: 32, lr: 0.1}
dp: {noise_multiplier: 1.0, delta: 1.0e-4}
strategy: {name: fedavg, clients_per_round: 3}
"""


@pytest.mark.e2e
@pytest.mark.timeout(400)
def test_a_run_attaches_to_an_existing_ray_cluster(tmp_path: Path) -> None:
    """``simulation.ray_address`` runs the clients on a cluster fedsim did not start; the
    run ends without stopping it; the test then stops it and nothing of it is left."""
    before = ray_processes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0")
    port = _free_port()
    head = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "head.log").open("w"),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert head.poll() is None, (tmp_path / "head.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "ray start --head did not come up"
                time.sleep(0.5)
        cfg = tmp_path / "c.yaml"
        cfg.write_text(CONFIG)
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedsim.cli",
                "run",
                str(cfg),
                "--out",
                str(tmp_path / "run"),
                "-o",
                f"simulation.ray_address=127.0.0.1:{port}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
        summary = read_summary(tmp_path / "run")
        assert summary["rounds"] == 2 and 0 < summary["final"]["test_accuracy"] <= 1
        assert head.poll() is None, "the run must not stop a cluster it did not start"
        # a run without ray_address starts its own Ray, not attaching to this cluster
        # (which `ray start` noted for every later ray.init() on this machine)
        local = subprocess.run(
            [sys.executable, "-m", "fedsim.cli", "run", str(cfg), "--out", str(tmp_path / "own")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert local.returncode == 0, local.stderr[-3000:]
        assert head.poll() is None
    finally:
        os.killpg(head.pid, 15)
        head.wait(timeout=60)
        # `ray start` notes its cluster for later ray.init() calls; remove the note
        note = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if note.is_file() and note.read_text().strip().endswith(f":{port}"):
            note.unlink()
    deadline = time.monotonic() + 30
    while ray_processes() - before and time.monotonic() < deadline:
        time.sleep(1)
    assert not ray_processes() - before, "the cluster's processes outlived ray start --block"
