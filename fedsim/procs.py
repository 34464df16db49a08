"""The Ray processes a run started, recorded so that a later run can reap survivors.

When a run's driver is killed outright (SIGKILL, the OOM killer), Ray's head processes die
with it but some of its agents (the dashboard and runtime-env agents, parented to init)
live on. A run records the processes below its driver in ``state/processes.json``; the
next run into the same directory (``fedsim run --resume`` after a crash) ends those that
are still alive *and* still the same processes (same start time, so a reused pid is never
touched). Linux only (``/proc``); elsewhere nothing is recorded.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PROC = Path("/proc")
PROCESSES_FILE = "processes.json"


@dataclass(frozen=True)
class ProcessId:
    """A process, identified beyond pid reuse by its start time (clock ticks since boot)."""

    pid: int
    start: int


def _stat(pid: int) -> tuple[int, int] | None:
    """``(ppid, start time)`` of ``pid`` from ``/proc/<pid>/stat`` (``None``: gone)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> list[ProcessId]:
    """Every live process below ``root`` (children, their children, ...)."""
    if not PROC.is_dir():
        return []
    parent: dict[int, tuple[int, int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                parent[int(entry.name)] = stat
    below: list[ProcessId] = []
    frontier = {root}
    while frontier:
        kids = {pid for pid, (ppid, _) in parent.items() if ppid in frontier}
        below.extend(ProcessId(pid, parent[pid][1]) for pid in sorted(kids))
        frontier = kids
    return below


def record(state_dir: Path, root: int | None = None) -> None:
    """Write the processes below ``root`` (this process) to ``state_dir/processes.json``."""
    procs = descendants(os.getpid() if root is None else root)
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / (PROCESSES_FILE + ".tmp")
    tmp.write_text(json.dumps([[p.pid, p.start] for p in procs]))
    tmp.replace(state_dir / PROCESSES_FILE)


def reap(state_dir: Path) -> list[int]:
    """End the recorded processes that are still alive and still the same, unless they
    are this process's own (a sweep or test session resuming in the process that ran
    before keeps its client workers' fork server); returns their pids. An unreadable
    record is ignored (nothing is killed on a guess)."""
    path = state_dir / PROCESSES_FILE
    try:
        recorded = [ProcessId(int(p), int(s)) for p, s in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        return []
    ended = []
    own = {p.pid for p in descendants(os.getpid())}
    for proc in recorded:
        stat = _stat(proc.pid)
        if stat is None or stat[1] != proc.start or proc.pid == os.getpid() or proc.pid in own:
            continue
        try:
            os.kill(proc.pid, signal.SIGKILL)
            ended.append(proc.pid)
        except OSError:
            continue
    if ended:
        logger.warning("ended %d processes left behind by an earlier run: %s", len(ended), ended)
    path.unlink(missing_ok=True)
    return ended
