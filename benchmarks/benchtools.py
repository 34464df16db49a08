"""What the benchmarks share: timing a command in a fresh process, writing a result as
JSON, and the resident memory of process trees and of Flower's client actors, read from
``/proc``. (Run the benchmarks as scripts, ``python benchmarks/NAME.py``, so that this
module is importable.)"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: fedsim keeps noise calibrations across runs (``fedsim.privacy.sigma_cache``): each
#: benchmark process starts without any (its own folder, removed at its end), so that its
#: figures do not depend on what ran on the machine before; the runs it starts share it.
CACHE_ENV = "FEDSIM_CACHE_DIR"
if CACHE_ENV not in os.environ:
    os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="fedsim-bench-cache-")
    atexit.register(shutil.rmtree, os.environ[CACHE_ENV], True)

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from ``/proc``."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def tree_rss(root: int) -> int:
    """Bytes of resident memory of ``root`` and all its descendants."""
    tree = _children()
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, []))
        try:
            fields = Path(f"/proc/{pid}/statm").read_text().split()
        except OSError:
            continue
        total += int(fields[1]) * PAGE
    return total


def actor_rss() -> dict[int, int]:
    """pid -> RSS bytes of every live client worker: a Ray actor or a process-backend
    worker (named ``fedsim-worker``)."""
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmd = Path(entry.path, "cmdline").read_bytes()
            comm = Path(entry.path, "comm").read_text().strip()
            if b"ClientAppActor" not in cmd and comm != "fedsim-worker":
                continue
            out[int(entry.name)] = int(Path(entry.path, "statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return out


def pss(pid: int) -> int:
    """Proportional set size of ``pid`` in bytes (shared pages divided among their
    users: what the process really adds to the machine), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def timed_run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> float:
    """Wall seconds of ``cmd`` run to its end from the repository root (exits naming
    ``what`` with the end of its stderr if it fails); ``env`` is added to this process's
    environment."""
    started = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})}
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed:\n{proc.stderr[-2000:]}")
    return wall


def write_json(result: Any, path: Path | None) -> None:
    """Write a benchmark's ``result`` to ``path`` as indented JSON (nothing when ``None``)."""
    if path is not None:
        path.write_text(json.dumps(result, indent=2) + "\n")
