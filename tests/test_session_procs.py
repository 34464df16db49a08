"""The suite's count of left-behind processes sees only its own session's."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from session_procs import SESSION_ENV, of_this_session

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]

# Starts a sleeper with the environment given on stdin, prints its pid and exits, so the
# sleeper is orphaned (no longer below this process), as Ray's processes are once the
# driver that started them has died; with "child_env" the sleeper starts its own child.
LAUNCHER = """
import json, subprocess, sys
env, child_env = json.loads(sys.stdin.read())
code = "import time; time.sleep(60)"
if child_env is not None:
    sleep = [sys.executable, "-c", code]
    code = (
        "import subprocess, time; "
        f"c = subprocess.Popen({sleep!r}, env={child_env!r}); "
        "print(c.pid, flush=True); time.sleep(60)"
    )
p = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                     stdout=subprocess.PIPE if child_env is not None else subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, text=True)
print(p.pid, p.stdout.readline().strip() if child_env is not None else "", flush=True)
"""


def _orphan(env: dict[str, str], child_env: dict[str, str] | None = None) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", LAUNCHER],
        input=json.dumps([env, child_env]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [int(pid) for pid in out.split()]


def _end(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)


def test_a_process_counts_as_ours_by_its_mark_or_a_marked_ancestor() -> None:
    mine = dict(os.environ)
    other = {**os.environ, SESSION_ENV: "another-session"}
    started: list[int] = []
    try:
        (marked,) = _orphan(mine)
        (foreign,) = _orphan(other)
        (unmarked,) = _orphan({"PATH": os.environ.get("PATH", "")})
        parent, child = _orphan(mine, child_env={})  # the child's environment is empty
        other_parent, other_child = _orphan(other, child_env={})
        started = [marked, foreign, unmarked, parent, child, other_parent, other_child]
        assert of_this_session(started) == {marked, parent, child}
        # a process this pytest process started directly is its own, whatever its mark
        with subprocess.Popen(SLEEPER, env={}) as direct:
            assert of_this_session([direct.pid]) == {direct.pid}
            direct.kill()
    finally:
        _end(started)
