"""``fedsim sweep``: grid parsing and expansion (pure), resume and sweep.csv (real runs)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedsim.cli import main
from fedsim.errors import ConfigError
from fedsim.sweep import csv_columns, csv_row, expand, flatten_summary, parse_sweep, split_sweep

BASE: dict[str, Any] = {
    "name": "tiny",
    "rounds": 1,
    "data": {"num_clients": 2, "train_samples": 200, "test_samples": 100},
    "model": {"name": "mlp"},
    "client": {"batch_size": 32, "lr": 0.1},
    "dp": {"noise_multiplier": 1.0, "delta": 1e-4},
}


def test_grid_expands_in_order_with_seeds_innermost() -> None:
    raw = {
        **BASE,
        "sweep": {
            "grid": {
                "dp.noise_multiplier": [2.0, 0.5],
                "dp.clipping": ["flat", "per_layer_uniform"],
            },
            "seeds": [0, 3],
        },
    }
    base, spec = split_sweep(raw)
    assert "sweep" not in base and "sweep" in raw
    points = expand(base, spec)
    assert len(points) == 8
    assert spec.keys == ("dp.noise_multiplier", "dp.clipping", "seed")
    first, second, last = points[0], points[1], points[-1]
    assert (first.config.dp.noise_multiplier, first.config.dp.clipping, first.config.seed) == (
        2.0,
        "flat",
        0,
    )
    assert second.config.seed == 3 and second.config.dp.clipping == "flat"
    assert (last.config.dp.noise_multiplier, last.config.dp.clipping, last.config.seed) == (
        0.5,
        "per_layer_uniform",
        3,
    )
    assert first.slug == "000-noise_multiplier=2_clipping=flat_seed=0"
    assert len({p.slug for p in points}) == 8
    # the base config is untouched by the expansion
    assert base["dp"]["noise_multiplier"] == 1.0


def test_sweep_section_errors_are_all_reported() -> None:
    with pytest.raises(ConfigError) as info:
        parse_sweep({"grid": {"seed": [1], "dp.epsilon": []}, "seeds": [-1], "colour": 1})
    text = "\n".join(info.value.problems)
    assert "sweep.colour: unknown key" in text
    assert "sweep.grid.seed: cannot be swept" in text
    assert "sweep.grid.dp.epsilon: must be a non-empty list" in text
    assert "sweep.seeds: must be a non-empty list of distinct integers >= 0; got [-1]" in text
    with pytest.raises(ConfigError, match="no sweep: section"):
        split_sweep(BASE)


def test_invalid_points_are_named_before_anything_runs() -> None:
    base, spec = split_sweep({**BASE, "sweep": {"grid": {"dp.noise_multiplier": [1.0, -2.0]}}})
    with pytest.raises(ConfigError) as info:
        expand(base, spec)
    (problem,) = info.value.problems
    assert problem.startswith("sweep point 1 (dp.noise_multiplier=-2):")
    assert "dp.noise_multiplier must be >= 0.2; got -2.0" in problem


def test_csv_rows_flatten_the_summary_without_clients() -> None:
    base, spec = split_sweep({**BASE, "sweep": {"grid": {"dp.clipping": ["flat"]}, "seeds": [1]}})
    (point,) = expand(base, spec)
    summary = {
        "final": {"test_accuracy": 0.75, "test_loss": 0.5},
        "dp": {"max_epsilon_spent": 1.5, "target_epsilon": None},
        "wall_seconds": 3.0,
        "clients": {"0": {"epsilon_spent": 1.5}},
    }
    assert flatten_summary(summary) == {
        "final.test_accuracy": 0.75,
        "final.test_loss": 0.5,
        "dp.max_epsilon_spent": 1.5,
        "dp.target_epsilon": None,
        "wall_seconds": 3.0,
    }
    row = csv_row(point, "done", "points/x", summary)
    assert row["dp.clipping"] == "flat" and row["seed"] == 1 and row["status"] == "done"
    cols = csv_columns(spec, [row])
    assert cols[:4] == ["point", "dp.clipping", "seed", "status"] and cols[-1] == "run_dir"


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.e2e
def test_sweep_runs_points_writes_csv_and_resumes(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "sweep.yaml"
    raw = {**BASE, "sweep": {"grid": {"dp.noise_multiplier": [2.0, 1.0]}}}
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    assert main(["sweep", str(cfg), "--out", str(out)]) == 0
    rows = _read_csv(out / "sweep.csv")
    assert [r["dp.noise_multiplier"] for r in rows] == ["2.0", "1.0"]
    assert all(r["status"] == "done" for r in rows)
    eps = [float(r["dp.max_epsilon_spent"]) for r in rows]
    assert eps[0] < eps[1]  # less noise, more epsilon
    assert all(0.0 <= float(r["final.test_accuracy"]) <= 1.0 for r in rows)
    first_dir = out / rows[0]["run_dir"]
    assert (first_dir / "summary.json").exists() and (first_dir / "metrics.jsonl").exists()

    # resume: the finished first point is skipped, the "interrupted" second resumes
    second_dir = out / rows[1]["run_dir"]
    (second_dir / "summary.json").unlink()
    stamp = (first_dir / "summary.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["sweep", str(cfg), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "finished, skipped" in err and err.count(": resuming") == 1  # from its checkpoint
    assert (first_dir / "summary.json").stat().st_mtime_ns == stamp
    assert (second_dir / "summary.json").exists()
    assert len(_read_csv(out / "sweep.csv")) == 2

    # the same --out with another sweep is refused (exit 2), nothing is touched
    assert main(["sweep", str(cfg), "--out", str(out), "-o", "rounds=2"]) == 2
    assert "holds a different sweep" in capsys.readouterr().err
    assert (first_dir / "summary.json").stat().st_mtime_ns == stamp


def test_dry_run_lists_points_and_bad_sweep_exits_2(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "sweep": {"grid": {"rounds": [1, 2]}, "seeds": [0]}}))
    assert main(["sweep", str(cfg), "--dry-run", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "000-rounds=1_seed=0" in out and "2 points" in out
    assert not (tmp_path / "o").exists()
    assert main(["sweep", str(cfg), "-o", "sweep.grid.rounds=[0]"]) == 2
    assert "sweep point 0 (rounds=0, seed=0): rounds must be >= 1; got 0" in capsys.readouterr().err


def test_problems_of_many_points_are_shown_once() -> None:
    base, spec = split_sweep(
        {**BASE, "rounds": 0, "sweep": {"grid": {"dp.noise_multiplier": [1.0, -2.0]}}}
    )
    with pytest.raises(ConfigError) as info:
        expand(base, spec)
    assert info.value.problems == (
        "all 2 sweep points: rounds must be >= 1; got 0",
        "sweep point 1 (dp.noise_multiplier=-2): dp.noise_multiplier must be >= 0.2; got -2.0",
    )


def _sweep_file(tmp_path: Path, raw: dict[str, Any]) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_validate_checks_every_point_of_a_sweep_file(tmp_path: Path, capsys) -> None:
    cfg = _sweep_file(
        tmp_path, {**BASE, "sweep": {"grid": {"dp.noise_multiplier": [2.0, 1.0]}, "seeds": [0, 1]}}
    )
    assert main(["validate", cfg]) == 0
    out = capsys.readouterr().out
    assert "000-noise_multiplier=2_seed=0: 2 clients" in out and "DP-SGD sigma 2 " in out
    assert "003-noise_multiplier=1_seed=1: 2 clients" in out and "DP-SGD sigma 1 " in out
    assert out.rstrip().endswith(f"{cfg}: OK (4 sweep points)")
    # a preflight problem of some points: exit 2, shown once, naming those points
    grid = "sweep.grid={dp.max_epsilon: [0.05, 100.0]}"
    assert main(["validate", cfg, "-o", grid]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("below the epsilon of a single round") == 1
    assert "sweep points 0, 1: dp.max_epsilon 0.05 is below" in err


def test_missing_data_fails_a_sweep_once_before_any_point(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.npz"
    raw = {
        **BASE,
        "data": {"name": "npz", "path": str(missing), "num_clients": 2},
        "sweep": {"grid": {"dp.noise_multiplier": [2.0, 1.0]}, "seeds": [0, 1]},
    }
    cfg = _sweep_file(tmp_path, raw)
    assert main(["validate", cfg]) == 2
    err = capsys.readouterr().err
    assert err.count(f"data.path ({missing}): file not found") == 1 and "Traceback" not in err
    out = tmp_path / "out"
    assert main(["sweep", cfg, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count(f"data.path ({missing}): file not found") == 1
    assert "[1/4]" not in captured.err + captured.out and not out.exists()


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_sigint_stops_a_sweep_within_seconds_and_it_resumes(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[1]
    cfg = tmp_path / "sweep.yaml"
    raw = {**BASE, "rounds": 40, "dp": {"enabled": False}}
    raw["sweep"] = {"grid": {"client.lr": [0.1, 0.05]}}
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fedsim.cli", "sweep", str(cfg), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 300
    while not list(out.glob("points/*/state/server.json")):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    signalled = time.monotonic()
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, text[-2000:]
    assert time.monotonic() - signalled < 15
    assert "sweep interrupted" in text and "Traceback" not in text
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=500)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert ": resuming" in again.stderr
    rows = _read_csv(out / "sweep.csv")
    assert [r["status"] for r in rows] == ["done", "done"]


def _timeless(run: Path) -> str:
    """A run's metrics lines without their wall-clock fields, as one string."""
    import json

    from fedsim.rundir import read_metrics

    lines = read_metrics(run)
    for m in lines:
        m.pop("seconds")
        for c in m["clients"].values():
            c.pop("train_seconds", None)
    return json.dumps(lines, sort_keys=True)


@pytest.mark.e2e
def test_runs_share_warm_actors_and_match_a_fresh_run(tmp_path: Path) -> None:
    """Inside ``reuse_actors`` a second run takes over the first run's Ray and actor pool
    (the same actors), and its results equal those of the same config run on its own."""

    import ray

    from fedsim.config import from_dict
    from fedsim.run import protect_local_ray, run_experiment

    on_ray = {"simulation": {"backend": "ray"}}
    first = from_dict({**BASE, **on_ray, "dp": {"noise_multiplier": 2.0, "delta": 1e-4}})
    second = from_dict({**BASE, **on_ray, "rounds": 2, "seed": 5})
    protect_local_ray(first)
    from fedsim.raypool import reuse_actors

    with reuse_actors() as pools:
        run_experiment(first, tmp_path / "a")
        assert ray.is_initialized() and len(pools) == 1
        (pool,) = pools.kept()
        actors = list(pool.pool)
        run_experiment(second, tmp_path / "b")
        assert pools.kept() == (pool,) and sorted(map(id, pool.pool)) == sorted(map(id, actors))
    assert not ray.is_initialized()
    run_experiment(second, tmp_path / "fresh")

    assert _timeless(tmp_path / "b") == _timeless(tmp_path / "fresh")


def test_an_actor_warms_up_when_it_is_created() -> None:
    """Flower calls ``warm_worker`` in each client actor's constructor: the ClientApp's
    modules are imported and the objects they made are frozen (skipped by collections)."""
    import gc
    import sys

    from fedsim.raypool import ACTOR_KWARGS, WARM_MODULES, warm_worker

    assert ACTOR_KWARGS["on_actor_init_fn"] is warm_worker
    gc.unfreeze()
    try:
        warm_worker()
        assert all(name in sys.modules for name in WARM_MODULES)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


@pytest.mark.e2e
def test_a_run_takes_over_the_prestarted_ray_and_actors(tmp_path: Path) -> None:
    """``prestart`` starts Ray and the pool in the background; the run's backend takes that
    pool (the same actors) only when its resources match, and the run's results equal a
    run without a prestart; leaving the block stops Ray and lets the starting thread end."""
    import threading

    import ray

    from fedsim.config import from_dict
    from fedsim.raypool import reuse_actors
    from fedsim.run import backend_config, protect_local_ray, run_experiment

    cfg = from_dict({**BASE, "rounds": 2, "seed": 3, "simulation": {"backend": "ray"}})
    protect_local_ray(cfg)
    with reuse_actors() as pools:
        assert pools.prestart(backend_config(cfg))
        assert not pools.prestart(backend_config(cfg))  # one under way
        pools.settle()
        assert ray.is_initialized()
        prestarted = pools._prestart._pool  # type: ignore[union-attr]
        assert prestarted is not None and prestarted.num_actors >= 1
        actors = sorted(id(a) for a in prestarted.pool)
        run_experiment(cfg, tmp_path / "a")
        (pool,) = pools.kept()
        assert pool is prestarted and sorted(id(a) for a in pool.pool) == actors
    assert not ray.is_initialized()
    assert not any(t.name == "fedsim-ray-prestart" for t in threading.enumerate())

    # a prestart for other client resources is not used: the run builds its own pool
    other = backend_config(cfg)
    other["client_resources"] = {**other["client_resources"], "num_cpus": 2}
    with reuse_actors() as pools:
        assert pools.prestart(other)
        pools.settle()
        unused = pools._prestart._pool  # type: ignore[union-attr]
        run_experiment(cfg, tmp_path / "b")
        (pool,) = pools.kept()
        assert pool is not unused
    assert not ray.is_initialized()

    assert _timeless(tmp_path / "a") == _timeless(tmp_path / "b")


def test_the_early_ray_start_calls_ray_init_as_flowers_backend_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``flower_ray_init`` (used before Flower is imported) passes ``ray.init`` what Flower's
    ``RayBackend.init_ray`` passes for the same backend config, and sets the same
    ``PYTHONPATH``; so the engine finds the Ray it would have started."""
    import json
    import os

    import ray
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend

    from fedsim.config import from_dict
    from fedsim.raystart import flower_ray_init
    from fedsim.run import backend_config

    calls: list[tuple[dict[str, Any], str]] = []

    def fake_init(**kwargs: Any) -> None:
        calls.append((kwargs, os.environ.get("PYTHONPATH", "")))

    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    for overrides in ({}, {"simulation": {"ray_address": "10.0.0.1:6379"}}):
        cfg = from_dict({**BASE, **overrides})
        config = backend_config(cfg)
        monkeypatch.setenv("PYTHONPATH", "/opt/extra")
        flower_ray_init(config["init_args"])
        monkeypatch.setenv("PYTHONPATH", "/opt/extra")
        RayBackend(json.loads(json.dumps(config)))  # as the engine builds it
        ours, flowers = calls[-2], calls[-1]
        assert ours == flowers and ours[0]["include_dashboard"] is False
        assert ours[0]["runtime_env"] == {"env_vars": {"PYTHONPATH": ours[1]}}
        assert ours[1].endswith(os.pathsep + "/opt/extra")
