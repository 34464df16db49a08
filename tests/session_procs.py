"""Which processes this test session started.

The suite may run in several pytest processes at once (``pytest -n 2``); a test that
checks what a run left behind must not count another session's Ray or fork server.
``conftest.py`` puts a mark unique to this pytest process into its environment, which
every process a test starts inherits (Ray's GCS, raylet and workers, the fork server and
its workers). Ray's agents overwrite their environment block with their process title,
so a process also counts as this session's when one of its ancestors does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

#: The environment variable ``conftest.py`` sets to this pytest process's own mark.
SESSION_ENV = "FEDSIM_TEST_SESSION"


def _parent_and_marked(pid: int, needle: bytes) -> tuple[int, bool] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1]), needle in environ.split(b"\0")


def of_this_session(pids: Iterable[int]) -> set[int]:
    """Those of ``pids`` this pytest process started, directly or not (all of them when
    no mark is set: a helper used outside pytest)."""
    pids = set(pids)
    mark = os.environ.get(SESSION_ENV)
    if not mark:
        return pids
    needle = f"{SESSION_ENV}={mark}".encode()
    table: dict[int, tuple[int, bool]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := _parent_and_marked(int(entry), needle)):
            table[int(entry)] = found
    ours = set()
    for pid in pids:
        seen, cur = set(), pid
        while cur in table and cur not in seen:
            parent, marked = table[cur]
            if marked or cur == os.getpid():
                ours.add(pid)
                break
            seen.add(cur)
            cur = parent
    return ours
