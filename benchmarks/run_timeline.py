"""Where the wall time of one ``fedsim run`` goes: the seconds at which its phases start
and end, printed as they happen.

Runs the CLI in this process with marks around the driver's phases (fork server start,
preflight, waiting for the client workers and what the driver does meanwhile, the
report, Flower's shut-down, the exit). Each mark is installed when its module is first
imported by the run itself, so the run imports nothing earlier than it would (marks
installed up front made the driver import torch before it started the fork server).
Reading aid for profiles, not a figure: run it through ``heavy`` like any run.
``--clients`` (first) also marks each round's exchange with its clients and each client's
call on a worker (:data:`CLIENT_MARKS`): what a round spends outside its clients' work.

    PYTHONPATH=. python benchmarks/run_timeline.py [--clients] run experiments/quickstart.yaml \
        --out D
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import time
from collections.abc import Callable
from typing import Any

T0 = time.monotonic()


def mark(what: str) -> None:
    sys.stderr.write(f"[{time.monotonic() - T0:7.2f} s] {what}\n")
    sys.stderr.flush()


def wrap(owner: Any, name: str, label: str) -> None:
    """Mark the start and end of every call of ``owner.name``."""
    inner = getattr(owner, name)

    def marked(*args: Any, **kwargs: Any) -> Any:
        mark(f"{label} ...")
        try:
            return inner(*args, **kwargs)
        finally:
            mark(f"... {label}")

    setattr(owner, name, marked)


#: module -> what to mark in it once it is imported: (attribute path, label)
MARKS: dict[str, list[tuple[str, str]]] = {
    "fedsim.procpool": [
        ("start_forkserver", "start the fork server"),
        ("WorkerPools.take", "take the client workers (waits for the fork server)"),
        ("ProcessBackend.terminate", "backend terminate"),
    ],
    "fedsim.run": [
        ("check_plan", "preflight"),
        ("_warm_up_report", "report warm-up while waiting"),
    ],
    "fedsim.report": [("write_report_safely", "report")],
    "fedsim.rundir": [("RunWriter.close", "run directory close")],
}

#: With ``--clients``: each round's exchange (messages pushed until the last reply pulled)
#: and each client's call on a process worker (from the driver's side).
CLIENT_MARKS: dict[str, list[tuple[str, str]]] = {
    "fedsim.procworkers": [("WorkerPool.process", "client")],
    "strategies.rounds": [("exchange", "exchange")],
}


class _MarkOnImport(importlib.abc.MetaPathFinder):
    """Installs :data:`MARKS` of a module right after the run imports it."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in MARKS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        execute: Callable[[Any], None] = loader.exec_module  # type: ignore[attr-defined]

        def exec_module(module: Any) -> None:
            execute(module)
            for attribute, label in MARKS[fullname]:
                *owners, name = attribute.split(".")
                owner = module
                for part in owners:
                    owner = getattr(owner, part)
                wrap(owner, name, label)

        loader.exec_module = exec_module  # type: ignore[attr-defined]
        return spec


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--clients"]:
        args = args[1:]
        MARKS.update(CLIENT_MARKS)
    sys.meta_path.insert(0, _MarkOnImport())
    import fedsim.cli as cli

    mark("CLI imported")
    code = cli.main(args)
    mark("main returned; exiting")
    cli.exit_now(code)


if __name__ == "__main__":
    main()
