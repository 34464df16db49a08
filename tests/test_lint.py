"""Code style gates: ruff and mypy must be clean (STYLE.md)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sysconfig.get_path("scripts")


def test_ruff_clean() -> None:
    # The ruff of this interpreter's environment, not whatever PATH offers (or lacks).
    ruff = shutil.which("ruff", path=SCRIPTS)
    if ruff is None:
        pytest.fail(f"ruff not found in {SCRIPTS}: install the dev extra (pip install -e '.[dev]')")
    proc = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:]


@pytest.mark.slow
def test_mypy_clean() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.fail(f"mypy not importable from {sys.executable}: install the dev extra")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "fedsim", "strategies", "clients"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
