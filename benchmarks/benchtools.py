"""What the benchmarks share: timing a command in a fresh process, writing a result as
JSON, and the resident memory of process trees and of Flower's client actors, read from
``/proc``. (Run the benchmarks as scripts, ``python benchmarks/NAME.py``, so that this
module is importable.)"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

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


def timed_run(cmd: list[str], what: str) -> float:
    """Wall seconds of ``cmd`` run to its end from the repository root (exits naming
    ``what`` with the end of its stderr if it fails)."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed:\n{proc.stderr[-2000:]}")
    return wall


def write_json(result: Any, path: Path | None) -> None:
    """Write a benchmark's ``result`` to ``path`` as indented JSON (nothing when ``None``)."""
    if path is not None:
        path.write_text(json.dumps(result, indent=2) + "\n")
