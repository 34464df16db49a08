"""What the ServerApp adds around a run under ``flwr run .`` — what ``fedsim run`` has in
its CLI: clear errors before anything heavy starts, a header naming the run directory,
and at the end ``report.md`` (with its plots) and the final line.

Everything is logged on Flower's logger, whose records ``flwr run --stream`` and
``flwr log`` show. In a simulation (Flower's in-memory grid) the ServerApp also checks,
within seconds, that there is one simulated SuperNode per client
(:func:`fedsim.flwr_run.node_count_problem`) and runs ``fedsim run``'s preflight;
deployments (SuperNodes joining over the network) keep waiting for their sites.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.common import log as flwr_log
from flwr.serverapp import Grid

from fedsim import __version__
from fedsim.config import Config, from_run_config
from fedsim.errors import FedsimError, RunError
from fedsim.flwr_run import node_count_problem, runtime_env_note

#: Seconds :func:`settled_node_count` waits at most for the simulation's SuperNodes.
NODE_SETTLE_TIMEOUT = 10.0
#: Seconds the node count must stay unchanged to count as settled.
NODE_SETTLE_QUIET = 1.0


def is_simulation(grid: Grid) -> bool:
    """Whether ``grid`` is Flower's simulation grid (all nodes registered at start)."""
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    return isinstance(grid, InMemoryGrid)


@contextmanager
def logged_errors() -> Iterator[None]:
    """Log a :class:`FedsimError`'s message as one ERROR record before it propagates,
    so the streamed log shows it as a line of its own, not only inside a traceback."""
    try:
        yield
    except FedsimError as exc:
        flwr_log(logging.ERROR, "fedsim: %s", exc)
        raise


def load_config(context: Context, app_dir: Path) -> Config:
    """The run's typed config from Flower's run config (errors logged, then raised)."""
    with logged_errors():
        return from_run_config(context.run_config, app_dir)


def settled_node_count(
    grid: Grid, timeout: float = NODE_SETTLE_TIMEOUT, quiet: float = NODE_SETTLE_QUIET
) -> int:
    """How many nodes a simulation has, once the count stopped changing for ``quiet``
    seconds (Flower registers them while the ServerApp starts) or after ``timeout``."""
    deadline = time.monotonic() + timeout
    count, since = len(list(grid.get_node_ids())), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = len(list(grid.get_node_ids()))
        if now != count:
            count, since = now, time.monotonic()
        elif count > 0 and time.monotonic() - since >= quiet:
            break
    return count


def start(grid: Grid, cfg: Config, out_dir: str | Path) -> None:
    """Before the run: the header, a runtime-environment note, and — in a simulation —
    the node count and the preflight.

    Raises
    ------
    RunError
        If the simulation does not have one SuperNode per client (logged first).
    ConfigError
        If the strategy's rules or the preflight find a problem (logged first).
    """
    flwr_log(logging.INFO, "fedsim %s: running %r into %s", __version__, cfg.name, out_dir)
    note = runtime_env_note()
    if note is not None:
        flwr_log(logging.WARNING, "fedsim: %s", note)
    if not is_simulation(grid):
        return
    with logged_errors():
        problem = node_count_problem(settled_node_count(grid), cfg)
        if problem is not None:
            raise RunError(problem)
        from fedsim.run import check_plan

        check_plan(cfg)


def finish(cfg: Config, out_dir: str | Path, summary: Mapping[str, Any]) -> None:
    """After the run: name ``report.md`` (written by ``run_server``; a failure there is
    logged, never raised: the run directory is the result), then the final line."""
    from fedsim.progress import final_line
    from fedsim.report import REPORT_FILE

    report = Path(out_dir) / REPORT_FILE
    if report.is_file():
        flwr_log(logging.INFO, "fedsim: report %s", report)
    else:
        flwr_log(logging.WARNING, "fedsim: report.md could not be written; try fedsim report")
    flwr_log(logging.INFO, "%s", final_line(cfg, out_dir, summary))
