"""The process backend (``simulation.backend: process``, :mod:`fedsim.procpool`): client
workers forked from a warm fork server instead of Ray actors.

Unit tests drive a :class:`WorkerPool` with small stand-in apps (the worker only calls
``app_fn()(message=..., context=...)``); the e2e tests run whole federations through
Flower's engine and compare them with the Ray backend's.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from session_procs import of_this_session

from fedsim.config import from_dict
from fedsim.errors import ConfigError
from fedsim.procpool import (
    PoolSpec,
    ProcessBackend,
    WorkerDiedError,
    WorkerPool,
    choose_backend,
    engine_backend,
    reuse_workers,
)

ROOT = Path(__file__).resolve().parents[1]

TINY: dict[str, Any] = {
    "name": "tiny",
    "rounds": 2,
    "data": {"num_clients": 3, "train_samples": 240, "test_samples": 100},
    "model": {"name": "mlp"},
    "client": {"batch_size": 32, "lr": 0.1},
    "dp": {"noise_multiplier": 1.0, "delta": 1e-4},
}


class Echo:
    """A stand-in ClientApp: replies with what it was given and facts about its process."""

    def __call__(self, message: Any, context: Any) -> Any:
        import torch

        if message == "die":
            os._exit(7)
        if message == "raise":
            raise ValueError("the stand-in app refuses")
        return {"got": message, "pid": os.getpid(), "threads": torch.get_num_threads()}


def echo_app() -> Echo:
    return Echo()


def fork_server_processes() -> set[int]:
    """Processes running multiprocessing's fork server or one of its children that this
    test session started (:mod:`session_procs`)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing.forkserver" in cmd:
            found.add(int(entry.name))
    return of_this_session(found)


def _timeless(run_dir: Path) -> str:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for m in lines:
        m.pop("seconds")
        for c in m["clients"].values():
            c.pop("train_seconds", None)
    return json.dumps(lines, sort_keys=True)


def test_a_pool_runs_messages_in_its_workers_with_the_given_threads() -> None:
    pool = WorkerPool(PoolSpec(workers=2, threads=2))
    try:
        pool.set_app(echo_app)
        assert pool.size == 2 and pool.all_idle()
        replies = [pool.process(f"m{i}", {"ctx": i}) for i in range(4)]
        for i, (out, context) in enumerate(replies):
            assert out["got"] == f"m{i}" and context == {"ctx": i}
            assert out["threads"] == 2
            assert out["pid"] != os.getpid() and out["pid"] in pool.pids()
        assert {out["pid"] for out, _ in replies} == set(pool.pids())  # both take turns
    finally:
        pool.close()
    assert pool.size == 0


def test_an_app_error_is_the_clients_error_and_the_worker_stays() -> None:
    from flwr.clientapp.client_app import ClientAppException

    pool = WorkerPool(PoolSpec(workers=1, threads=1))
    try:
        pool.set_app(echo_app)
        (pid,) = pool.pids()
        with pytest.raises(ClientAppException, match="the stand-in app refuses"):
            pool.process("raise", None)
        out, _ = pool.process("after", None)
        assert out["got"] == "after" and out["pid"] == pid
    finally:
        pool.close()


def test_a_worker_that_dies_is_replaced_and_the_next_message_runs() -> None:
    """A worker ending mid-message (crash, OOM kill) gives that message an error naming
    the worker and its exit code; a new worker with the same app takes its place."""
    pool = WorkerPool(PoolSpec(workers=1, threads=1))
    try:
        pool.set_app(echo_app)
        (old,) = pool.pids()
        with pytest.raises(WorkerDiedError, match=r"exit code 7"):
            pool.process("die", None)
        (new,) = pool.pids()
        assert new != old and pool.all_idle()
        out, _ = pool.process("again", None)
        assert out["got"] == "again" and out["pid"] == new
    finally:
        pool.close()


def test_workers_are_stopped_when_the_pool_closes() -> None:
    pool = WorkerPool(PoolSpec(workers=2, threads=1))
    pool.set_app(echo_app)
    pids = pool.pids()
    pool.close()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() and _running(p) for p in pids):
        assert time.monotonic() < deadline, "workers outlived the pool"
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_reuse_workers_keeps_an_idle_pool_for_the_next_backend() -> None:
    config = {"process": {"workers": 1, "threads": 1}}
    with reuse_workers() as pools:
        first = ProcessBackend(config)
        first.build(echo_app)
        pids = first.pool.pids()  # type: ignore[union-attr]
        first.terminate()
        assert [p.pids() for p in pools.kept()] == [pids]
        second = ProcessBackend(config)
        second.build(echo_app)
        assert second.pool.pids() == pids  # type: ignore[union-attr]
        second.terminate()
        other = ProcessBackend({"process": {"workers": 1, "threads": 2}})
        other.build(echo_app)  # another spec: the kept pool is closed, a new one forked
        assert other.pool.pids() != pids  # type: ignore[union-attr]
        other.terminate()
    assert not any(_running(p) for p in pids)


def test_the_driver_works_while_waiting_for_prestarted_workers(monkeypatch) -> None:
    """``take`` runs ``while_waiting`` only while the workers are not ready (the pool's
    start is held back here until the callback has run), then hands over the real pool;
    a pool that is ready already is taken at once."""
    import threading

    import fedsim.procpool as procpool

    gate = threading.Event()
    calls: list[bool] = []

    def held_pool(spec: PoolSpec) -> WorkerPool:
        gate.wait(timeout=60)
        return WorkerPool(spec)

    def while_waiting() -> None:
        calls.append(gate.is_set())  # the pool cannot be ready yet
        gate.set()

    spec = PoolSpec(workers=1, threads=1)
    with reuse_workers() as pools:
        monkeypatch.setattr(procpool, "WorkerPool", held_pool)
        assert pools.prestart(spec, while_waiting=while_waiting)
        pool = pools.take(spec)
        assert calls == [False] and pool is not None
        pool.close()
        monkeypatch.undo()
        assert pools.prestart(spec, while_waiting=lambda: calls.append(True))
        pools._prestart.thread.join()  # type: ignore[union-attr]
        pool = pools.take(spec)
        assert calls == [False] and pool is not None  # ready: nothing run
        pool.close()


def test_the_engine_builds_the_process_backend_inside_the_seam() -> None:
    """Flower 1.41's engine imports ``RayBackend`` from its Ray backend module when it
    builds a backend; inside :func:`engine_backend` that name is the process backend, and
    the module is Flower's again outside (this fails if the seam moves)."""
    from flwr.server.superlink.fleet.vce import vce_api

    assert "from .backend.raybackend import RayBackend" in inspect.getsource(vce_api.start_vce)
    with engine_backend():
        from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend

        assert RayBackend is ProcessBackend
    from flwr.server.superlink.fleet.vce.backend.backend import Backend
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend as Flowers

    assert Flowers is not ProcessBackend and issubclass(ProcessBackend, Backend)


def test_auto_picks_ray_only_where_ray_is_needed() -> None:
    def sim(**kw: Any) -> Any:
        return from_dict({**TINY, "simulation": kw}).simulation

    assert choose_backend(sim(), lambda: False) == "process"
    assert choose_backend(sim(), lambda: True) == "ray"  # a GPU to share
    assert choose_backend(sim(num_gpus_per_client=0), lambda: True) == "process"
    assert choose_backend(sim(num_gpus_per_client=1), lambda: False) == "ray"
    assert choose_backend(sim(ray_address="auto"), lambda: False) == "ray"
    assert choose_backend(sim(backend="ray"), lambda: False) == "ray"
    assert choose_backend(sim(backend="process"), lambda: True) == "process"


def test_the_process_backend_refuses_what_only_ray_can_do() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict({**TINY, "simulation": {"backend": "process", "ray_address": "auto"}})
    assert "simulation.backend 'process' runs clients on this machine" in str(err.value)
    with pytest.raises(ConfigError) as err:
        from_dict({**TINY, "simulation": {"backend": "process", "num_gpus_per_client": 0.5}})
    assert "simulation.backend 'process' has no GPU scheduling" in str(err.value)


def test_importing_the_quiet_module_outside_the_fork_server_changes_nothing(capfd) -> None:
    import fedsim.forkserver_quiet as quiet

    assert not quiet.in_forkserver_preload()
    sys.stderr.write("still visible\n")
    assert "still visible" in capfd.readouterr().err


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_process_and_ray_backends_give_the_same_run(tmp_path: Path) -> None:
    """The same config (DP-SGD, 3 clients, 2 rounds) on worker processes and on Ray
    actors: every metric line equal, wall-clock fields aside."""
    from fedsim.run import run_experiment

    run_experiment(from_dict({**TINY, "simulation": {"backend": "process"}}), tmp_path / "p")
    run_experiment(from_dict({**TINY, "simulation": {"backend": "ray"}}), tmp_path / "r")
    assert _timeless(tmp_path / "p") == _timeless(tmp_path / "r")


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_runs_share_warm_workers_and_match_a_fresh_run(tmp_path: Path) -> None:
    from fedsim.run import keep_client_workers, run_experiment

    second = from_dict({**TINY, "seed": 4})
    with keep_client_workers([second]):
        from fedsim.procpool import _ACTIVE

        run_experiment(from_dict(TINY), tmp_path / "a")
        (pool,) = _ACTIVE[-1].kept()
        pids = pool.pids()
        run_experiment(second, tmp_path / "b")
        (again,) = _ACTIVE[-1].kept()
        assert again is pool and again.pids() == pids
    assert not any(_running(p) for p in pids)
    run_experiment(second, tmp_path / "fresh")
    assert _timeless(tmp_path / "b") == _timeless(tmp_path / "fresh")


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_a_script_without_a_main_guard_runs_without_ray(tmp_path: Path) -> None:
    """Workers do not re-import the driver's main module (a user's script without
    ``if __name__ == "__main__"`` would run again in every worker), and a run on the
    process backend never imports Ray (nor Opacus, in the driver); Flower's telemetry is
    off unless the user asked for it; nothing is left running after it."""
    script = tmp_path / "go.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys
            from fedsim.config import from_dict
            from fedsim.run import run_experiment
            summary = run_experiment(from_dict({TINY!r}), {str(tmp_path / "run")!r})
            print("RAY", "ray" in sys.modules, "ACC", summary["final"]["test_accuracy"])
            print("OPACUS", "opacus" in sys.modules)
            print("TELEMETRY", os.environ.get("FLWR_TELEMETRY_ENABLED"))
            """
        )
    )
    before = fork_server_processes()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FLWR_TELEMETRY_ENABLED", None)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("RAY False ACC") == 1, proc.stdout
    # the driver never imports Opacus (workers do), and Flower's telemetry is off
    assert "OPACUS False" in proc.stdout and "TELEMETRY 0" in proc.stdout
    deadline = time.monotonic() + 20
    while fork_server_processes() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not fork_server_processes() - before, "fork server or workers left behind"


def test_a_user_can_turn_flowers_telemetry_on() -> None:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "1"}
    code = "import os, fedsim; print(os.environ['FLWR_TELEMETRY_ENABLED'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "1"
