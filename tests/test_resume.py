"""Resume after SIGKILL: a killed run, resumed, ends exactly where an uninterrupted run
ends — global model, every client's ledger, pruning and VoG state, the SecProbe ledgers,
the reward book and the metrics (checkpoints in ``state/``, :mod:`fedsim.checkpoint`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from session_procs import of_this_session

from fedsim.checkpoint import SERVER_STATE_FILE, STATE_DIR, read_resume_point
from fedsim.config import load
from fedsim.errors import FedsimError
from fedsim.rundir import METRICS_FILE, config_text, read_metrics, read_summary

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """\
name: resume-e2e
seed: 2
rounds: 4
data: {name: pneumoniamnist, num_clients: 3, train_samples: 300, test_samples: 100}
model: {name: mlp}
client: {local_epochs: 2, batch_size: 32, lr: 0.2}
dp: {epsilon: 4.0, delta: 1.0e-5}
strategy: {name: secprobe, clients_per_round: 3, k: 2}
valuation:
  enabled: true
  metric: vog
  vog_checkpoints: rounds
  release_rounds: [2, 3, 4]
  bound: 1.0
  prune: {enabled: true, warmup_rounds: 2, fraction: 0.2, metric: loss}
"""


def ray_processes(*, any_session: bool = False) -> set[int]:
    """Pids of Ray's own processes (GCS, raylet, workers, agents) this test session started
    (:mod:`session_procs`), or with ``any_session`` all of them on this machine."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    marks = ("gcs_server", "raylet", "ray::", "ray/dashboard", "ray/_private/")
    found = {int(ln.split(None, 1)[0]) for ln in out.splitlines() if any(m in ln for m in marks)}
    return found if any_session else of_this_session(found)


def _strip(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in lines:
        m = {k: v for k, v in m.items() if k != "seconds"}
        m["clients"] = {
            cid: {k: v for k, v in c.items() if k != "train_seconds"}
            for cid, c in m["clients"].items()
        }
        out.append(m)
    return out


def _checkpoint_round(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / STATE_DIR / SERVER_STATE_FILE).read_text())["round"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    from fedsim.run import run_experiment

    cfg_path = tmp_path / "resume.yaml"
    cfg_path.write_text(CONFIG)
    cfg = load(cfg_path)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_experiment(cfg, whole)

    before = ray_processes()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "fedsim.cli", "run", str(cfg_path), "--out", str(killed)]
    with (tmp_path / "killed.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=log,
                                start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 600
        while _checkpoint_round(killed) < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "the run never reached round 2"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, as the OOM killer does
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(3)
    left = ray_processes() - before  # Ray agents outlive their killed driver
    assert not (killed / "summary.json").exists()
    done = _checkpoint_round(killed)
    assert 2 <= done < 4

    run_experiment(cfg, killed, resume=True)
    time.sleep(1)
    # (any session: a leftover whose raylet is gone no longer shows whose it is)
    left_now = left & ray_processes(any_session=True)
    assert not left_now, "the resumed run ends what the killed one left"

    assert _strip(read_metrics(killed)) == _strip(read_metrics(whole))
    a, b = read_summary(whole), read_summary(killed)
    a.pop("wall_seconds"), b.pop("wall_seconds")
    assert a == b
    assert (whole / "rewards.csv").read_text() == (killed / "rewards.csv").read_text()
    ma = torch.load(whole / "model.pt", weights_only=True)
    mb = torch.load(killed / "model.pt", weights_only=True)
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_torn_or_foreign_directories_are_detected(tmp_path: Path) -> None:
    """No checkpoint, a changed config, a model that does not match its digest, metrics
    behind the checkpoint: each refuses to resume with a clear message."""
    from fedsim.checkpoint import MODEL_STATE_FILE
    from fedsim.config import from_dict
    from fedsim.rundir import RunWriter

    cfg = from_dict({"rounds": 3, "model": {"name": "mlp"}, "dp": {"enabled": False}})
    text = config_text(cfg)
    with pytest.raises(FedsimError, match="no checkpoint"):
        read_resume_point(tmp_path, text, METRICS_FILE)
    writer = RunWriter(tmp_path, cfg, tensorboard=False)
    state = {"w": torch.zeros(3)}
    writer.write_state(1, state, {"strategy": {}, "audit": None}, 1.0, None)
    with pytest.raises(FedsimError, match=r"metrics\.jsonl holds rounds"):
        read_resume_point(tmp_path, text, METRICS_FILE)  # the round's line is missing
    (tmp_path / METRICS_FILE).write_text(
        json.dumps(
            {
                "round": 1,
                "test_accuracy": 0.5,
                "test_loss": 1.0,
                "sampled": [],
                "selected": [],
                "seconds": 1.0,
                "clients": {},
            }
        )
        + "\n"
        + '{"round": 2, "test_accur'  # a torn second line: ignored
    )
    point = read_resume_point(tmp_path, text, METRICS_FILE)
    assert point.round == 1 and len(point.lines) == 1
    other = config_text(
        from_dict({"rounds": 4, "model": {"name": "mlp"}, "dp": {"enabled": False}})
    )
    with pytest.raises(FedsimError, match="config differs"):
        read_resume_point(tmp_path, other, METRICS_FILE)
    (tmp_path / STATE_DIR / MODEL_STATE_FILE).write_bytes(b"torn")
    with pytest.raises(FedsimError, match="torn write"):
        read_resume_point(tmp_path, text, METRICS_FILE)
    writer.close()


def test_a_fresh_run_clears_an_earlier_runs_outputs(tmp_path: Path) -> None:
    from fedsim.config import from_dict
    from fedsim.rundir import RunWriter

    for name in ("summary.json", "model.pt", "audit.json", "rewards.csv", "report.md", "a.png"):
        (tmp_path / name).write_text("old")
    (tmp_path / STATE_DIR).mkdir()
    (tmp_path / STATE_DIR / SERVER_STATE_FILE).write_text("{}")
    RunWriter(tmp_path, from_dict({"dp": {"enabled": False}}), tensorboard=False).close()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["config.yaml", "metrics.jsonl"]
