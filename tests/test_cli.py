"""The command line: exit codes, messages without tracebacks, validate, a real run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedsim.cli import main, resolve_out_dir
from fedsim.config import from_dict
from fedsim.errors import FedsimError

QUICKSTART = "experiments/quickstart.yaml"


def fedsim(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedsim.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


def test_bad_config_exits_2_with_all_problems_and_no_traceback() -> None:
    proc = fedsim(
        "run", QUICKSTART, "-o", "rounds=0", "-o", "dp.epsilon=-1", "-o", "data.partiton=iid"
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "3 problems" in proc.stderr
    assert "rounds must be >= 1; got 0" in proc.stderr
    assert "data.partiton is not a known key" in proc.stderr
    assert "dp.epsilon must be > 0; got -1.0" in proc.stderr


def test_missing_config_and_bad_data_file_exit_2(tmp_path) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    bad = tmp_path / "site.npz"
    np.savez(bad, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.zeros(3))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{name: npz, path: {bad}}}\ndp: {{epsilon: 1}}\n")
    proc = fedsim("validate", str(cfg))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "train_labels" in proc.stderr


def test_unreachable_budget_is_caught_by_preflight(capsys) -> None:
    code = main(
        [
            "validate",
            QUICKSTART,
            "-o",
            "dp.epsilon=null",
            "-o",
            "dp.noise_multiplier=0.3",
            "-o",
            "dp.max_epsilon=0.5",
        ]
    )
    assert code == 2
    assert "dp.max_epsilon 0.5 is below the epsilon of a single round" in capsys.readouterr().err


def test_validate_ok(capsys) -> None:
    assert main(["validate", QUICKSTART]) == 0
    out = capsys.readouterr().out
    assert "5 clients" in out and "sigma" in out and "OK" in out


def test_out_dir_never_clobbers_a_run(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = from_dict({"name": "x", "dp": {"epsilon": 1}})
    first = resolve_out_dir(cfg, None, False)
    assert first == Path("runs/x")
    first.mkdir(parents=True)
    (first / "metrics.jsonl").write_text("{}\n")
    assert resolve_out_dir(cfg, None, False) == Path("runs/x-1")
    with pytest.raises(FedsimError, match="already holds a run"):
        resolve_out_dir(cfg, str(first), False)
    assert resolve_out_dir(cfg, str(first), True) == first


@pytest.mark.e2e
def test_fedsim_run_end_to_end_logs_each_round_when_not_a_tty(tmp_path) -> None:
    out = tmp_path / "run"
    proc = fedsim(  # stdout and stderr are pipes, not terminals
        "run",
        QUICKSTART,
        "-o",
        "rounds=2",
        "-o",
        "data.num_clients=2",
        "-o",
        "strategy.clients_per_round=2",
        "-o",
        "model.name=mlp",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test accuracy" in proc.stdout and str(out) in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.startswith("round ")]
    # one plain line per round, after round 0 (the initial model)
    assert [line.split()[1] for line in lines] == ["0/2", "1/2", "2/2"]
    assert lines[0].endswith("(initial model)") and " bal acc " in lines[0]
    rounds = lines[1:]
    for line in rounds:
        assert " acc " in line and " auc " in line and "max eps" in line
        assert re.search(r"\(2/2 updates, \d+\.\d s/round, ETA \d+(s|m\d\ds|h\d\dm)\)$", line)
    assert rounds[-1].endswith("ETA 0s)")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2


_EXIT_SCRIPT = """
import atexit, logging, sys, threading, time
from pathlib import Path
import fedsim.cli as cli

out = Path(sys.argv[1])
logging.basicConfig(filename=out / "log.txt", level=logging.INFO)
atexit.register(lambda: (out / "atexit.txt").write_text("ran"))

def command() -> int:
    logging.getLogger("t").info("logged")
    for _ in range(1000):
        print("x" * 9)  # the last of it stays in the pipe's buffer until flushed
    if sys.argv[2] == "thread":
        def late() -> None:
            time.sleep(0.5)
            (out / "thread.txt").write_text("done")
        threading.Thread(target=late).start()
    return 3

cli.main = lambda argv=None: command()
cli.entry()
"""


@pytest.mark.parametrize("thread", ["none", "thread"])
def test_the_console_script_exits_with_its_work_done(tmp_path: Path, thread: str) -> None:
    """``entry`` ends the process without the interpreter's teardown, yet with main's
    exit code, every ``atexit`` handler run, logging flushed and stdout complete; a
    non-daemon thread still running gets the normal exit, which waits for it."""
    proc = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, str(tmp_path), thread],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},  # buffered
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "xxxxxxxxx\n" * 1000
    assert (tmp_path / "atexit.txt").read_text() == "ran"
    assert "logged" in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "thread.txt").exists() == (thread == "thread")
