"""Experiment tracking (``tracking.mlflow``): the config rules, the round scalars, and the
local MLflow store read back with ``MlflowClient`` after real runs (``fedsim run``, a
sweep) — params, metric histories per round, ε per client, artifacts, grouping — and an
unreachable tracking server that costs one warning, not the run."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedsim.cli import main
from fedsim.config import from_dict
from fedsim.errors import ConfigError
from fedsim.records import ClientRoundRecord, EvalResult, RoundRecord
from fedsim.rundir import RunWriter, round_scalars

SHARED_RAY = True  # its in-process runs share one Ray and warm workers (conftest)

mlflow = pytest.importorskip("mlflow", reason="the tracking extra: pip install 'fedsim[tracking]'")

TINY: dict[str, Any] = {
    "name": "tracked",
    "seed": 3,
    "rounds": 2,
    "data": {"num_clients": 2, "train_samples": 200, "test_samples": 100},
    "model": {"name": "mlp"},
    "client": {"batch_size": 32, "lr": 0.1},
    "dp": {"noise_multiplier": 1.0, "delta": 1e-4},
    "tracking": {"mlflow": True},
}


def _client(store: Path) -> Any:
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")


def _closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- config -----------------------------------------------------------------------------


def test_tracking_settings_are_validated_with_named_fields() -> None:
    base = {"dp": {"enabled": False}}
    assert from_dict(base).tracking.mlflow is False  # off by default
    with pytest.raises(ConfigError) as info:
        from_dict({**base, "tracking": {"tracking_uri": "ftp://secret@host/x", "experiment": " e"}})
    text = str(info.value)
    assert "tracking.tracking_uri must start with one of http:" in text and "'ftp'" in text
    assert "secret" not in text  # a URI may carry credentials: never shown
    assert "tracking.experiment must be a name" in text
    assert "need tracking.mlflow: true" in text
    ok = from_dict({**base, "tracking": {"mlflow": True, "tracking_uri": "sqlite:///x.db"}})
    assert ok.tracking.tracking_uri == "sqlite:///x.db"


def test_bad_tracking_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**TINY, "tracking": {"mlflow": "yes"}}))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tracking.mlflow must be true or false; got 'yes'" in err and "Traceback" not in err


def test_an_untracked_run_never_imports_mlflow(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from fedsim.config import from_dict\n"
        "from fedsim.rundir import RunWriter\n"
        "from fedsim.records import EvalResult, RoundRecord\n"
        "w = RunWriter(sys.argv[1], from_dict({'dp': {'enabled': False}}), tensorboard=False)\n"
        "w.append_round(RoundRecord(1, EvalResult(0.5, 1.0)))\n"
        "w.close()\n"
        "print('mlflow' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert done.stdout.strip() == "False"
    assert not (tmp_path / "run" / "state").exists() and not (tmp_path / "mlflow").exists()


def test_tracking_warnings_never_show_a_uris_credentials() -> None:
    from fedsim.tracking.mlflow_run import _short

    exc = ConnectionError("POST http://alice:s3cret@host:5000/api/2.0/runs failed\nmore")
    text = _short(exc, "http://alice:s3cret@host:5000")
    assert text == "ConnectionError: POST http://***:***@host:5000/api/2.0/runs failed"


# --- the round stream -------------------------------------------------------------------


def test_round_scalars_hold_test_metrics_and_epsilon_per_client_and_max() -> None:
    record = RoundRecord(
        round=4,
        test=EvalResult(0.75, 0.5, auc=0.8, balanced_accuracy=0.7, class_recall=(0.6, None)),
        clients=(
            ClientRoundRecord(0, "ok", epsilon=1.5, epsilon_total=1.75, train_loss=0.25),
            ClientRoundRecord(2, "ok", epsilon=2.5, train_loss=float("nan")),
            ClientRoundRecord(3, "failed"),
        ),
        seconds=2.0,
        selection_epsilon=0.1,
    )
    assert round_scalars(record) == {
        "test/accuracy": 0.75,
        "test/loss": 0.5,
        "test/auc": 0.8,
        "test/balanced_accuracy": 0.7,
        "test/recall_class_0": 0.6,
        "epsilon/client_0": 1.5,
        "epsilon_total/client_0": 1.75,
        "train_loss/client_0": 0.25,
        "epsilon/client_2": 2.5,
        "epsilon/max": 2.5,
        "epsilon_total/max": 1.75,
        "selection/epsilon": 0.1,
        "round/seconds": 2.0,
    }  # the NaN train loss is left out


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``runs/`` directory whose local store (``runs/mlflow``) this module's writer
    tests share (creating an MLflow database takes seconds)."""
    return tmp_path_factory.mktemp("runs")


@pytest.mark.slow
def test_a_failing_tracker_warns_once_and_the_run_directory_is_complete(
    runs_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = from_dict({**TINY, "name": "failing", "dp": {"enabled": False}})
    writer = RunWriter(runs_dir / "failing", cfg, tensorboard=False)
    with caplog.at_level(logging.WARNING, logger="fedsim.tracking"):
        writer.tracker.log_metrics({"bad key!": 1.0}, 1)  # MLflow refuses the name
        writer.append_round(RoundRecord(1, EvalResult(0.5, 1.0)))  # silent from now on
        writer.close()
    warnings = [r for r in caplog.records if r.name.startswith("fedsim.tracking")]
    assert len(warnings) == 1 and "logging round 1 failed" in warnings[0].getMessage()
    assert len((runs_dir / "failing" / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow
def test_a_bad_store_uri_warns_once_and_the_run_is_untracked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fedsim.tracking import NULL_TRACKER

    (tmp_path / "file").write_text("")
    uri = f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}"  # under a file: cannot be created
    cfg = from_dict(
        {**TINY, "dp": {"enabled": False}, "tracking": {"mlflow": True, "tracking_uri": uri}}
    )
    with caplog.at_level(logging.WARNING, logger="fedsim.tracking"):
        writer = RunWriter(tmp_path / "run", cfg, tensorboard=False)
        assert writer.tracker is NULL_TRACKER
        writer.append_round(RoundRecord(1, EvalResult(0.5, 1.0)))
        writer.close()
    (warning,) = [r for r in caplog.records if r.name.startswith("fedsim.tracking")]
    assert "starting the tracked run failed" in warning.getMessage()
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 1
    assert (tmp_path / "file").read_text() == ""


@pytest.mark.slow
def test_a_resumed_run_goes_on_with_its_tracked_run(runs_dir: Path) -> None:
    import torch

    from fedsim.checkpoint import read_resume_point
    from fedsim.rundir import METRICS_FILE, config_text

    cfg = from_dict({**TINY, "name": "resumed", "dp": {"enabled": False}})
    run_dir = runs_dir / "resumed"
    first = RunWriter(run_dir, cfg, tensorboard=False)
    first.append_round(RoundRecord(1, EvalResult(0.5, 1.0)))
    first.write_state(1, {"w": torch.zeros(2)}, {}, 1.0, None)
    first.close("KILLED")  # interrupted after round 1
    client = _client(runs_dir / "mlflow")
    experiment = client.get_experiment_by_name("resumed")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "KILLED"

    point = read_resume_point(run_dir, config_text(cfg), METRICS_FILE)
    second = RunWriter(run_dir, cfg, tensorboard=False, resume=point)
    second.append_round(RoundRecord(2, EvalResult(0.75, 0.5)))
    second.close()
    (again,) = client.search_runs([experiment.experiment_id])  # the same run, finished
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "test/accuracy")
    assert {m.step: m.value for m in history} == {1: 0.5, 2: 0.75}


# --- real runs ----------------------------------------------------------------------------


@pytest.mark.e2e
def test_fedsim_run_is_tracked_in_the_local_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tracked.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run_dir = tmp_path / "runs" / "tracked"
    assert main(["run", str(config), "--out", str(run_dir)]) == 0
    client = _client(tmp_path / "runs" / "mlflow")  # the default store: next to the run
    experiment = client.get_experiment_by_name("tracked")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    params, tags = run.data.params, run.data.tags
    assert params["seed"] == "3" and params["name"] == "tracked" and params["rounds"] == "2"
    assert params["model.name"] == "mlp" and params["dp.noise_multiplier"] == "1.0"
    assert params["tracking.mlflow"] == "true" and "fedsim_version" in params
    assert tags["fedsim.seed"] == "3" and tags["fedsim.run_dir"] == str(run_dir.resolve())

    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rid = run.info.run_id

    def history(key: str) -> dict[int, float]:
        return {m.step: m.value for m in client.get_metric_history(rid, key)}

    summary = json.loads((run_dir / "summary.json").read_text())
    assert history("test/accuracy") == {
        0: pytest.approx(summary["initial"]["test_accuracy"]),
        **{line["round"]: pytest.approx(line["test_accuracy"]) for line in lines},
    }
    assert set(history("test/loss")) == {0, 1, 2} and set(history("test/auc")) == {0, 1, 2}
    for cid in ("0", "1"):
        eps = history(f"epsilon/client_{cid}")
        assert eps == {
            line["round"]: pytest.approx(line["clients"][cid]["epsilon"]) for line in lines
        }
    top = history("epsilon/max")
    assert top[2] == pytest.approx(max(lines[-1]["clients"][c]["epsilon"] for c in ("0", "1")))
    assert top[1] < top[2]  # ε accumulates over rounds

    artifacts = {a.path for a in client.list_artifacts(rid)}
    assert {"config.yaml", "metrics.jsonl", "summary.json", "model.pt", "report.md"} <= artifacts
    assert any(p.endswith(".png") for p in artifacts)
    local = Path(
        mlflow.artifacts.download_artifacts(
            run_id=rid,
            artifact_path="summary.json",
            tracking_uri=client.tracking_uri,
            dst_path=str(tmp_path / "dl"),
        )
    )
    assert json.loads(local.read_text()) == summary


@pytest.mark.e2e
def test_sweep_points_are_child_runs_of_one_parent(tmp_path: Path) -> None:
    config = tmp_path / "sweep.yaml"
    raw = {**TINY, "rounds": 1, "sweep": {"grid": {"dp.noise_multiplier": [2.0, 1.0]}}}
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "sw"
    assert main(["sweep", str(config), "--out", str(out)]) == 0
    client = _client(out / "mlflow")  # a sweep's store: in the sweep directory
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("fedsim.role") == "sweep"]
    assert parent.info.status == "FINISHED" and parent.data.params == {
        "sweep.dp.noise_multiplier": "[2.0, 1.0]"
    }
    assert {"sweep.csv", "report.md"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(r.data.params["dp.noise_multiplier"] for r in children) == ["1.0", "2.0"]
    assert {r.data.tags["fedsim.sweep"] for r in children} == {"sw"}
    assert all(r.info.status == "FINISHED" for r in children)
    by_point = {r.data.tags["fedsim.sweep_point"]: r for r in children}
    assert set(by_point) == {p.name for p in (out / "points").iterdir()}
    eps = {r.data.params["dp.noise_multiplier"]: r.data.metrics["epsilon/max"] for r in children}
    assert eps["1.0"] > eps["2.0"]  # less noise, more ε


@pytest.mark.e2e
def test_an_unreachable_tracking_server_warns_and_the_run_completes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    raw = {**TINY, "rounds": 1, "tracking": {"mlflow": True, "tracking_uri": uri}}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="fedsim.tracking"):
        assert main(["run", str(config), "--out", str(run_dir)]) == 0
    (warning,) = [r for r in caplog.records if r.name.startswith("fedsim.tracking")]
    assert "starting the tracked run failed" in warning.getMessage()
    assert "the run goes on without tracking" in warning.getMessage()
    assert json.loads((run_dir / "summary.json").read_text())["rounds"] == 1
    assert (run_dir / "model.pt").is_file() and (run_dir / "report.md").is_file()
    assert not (tmp_path / "mlflow").exists()  # nothing went to a local store instead
