"""Experiment tracking: a run's config, round stream and files sent to a tracker.

:class:`fedsim.rundir.RunWriter` — the one owner of a run's round stream — opens the
run's tracker (:func:`open_tracker`), hands it the scalars of every round it writes to
``metrics.jsonl`` and TensorBoard (step = round) and ends it with the run's files as
artifacts. Without ``tracking.mlflow`` the tracker is :data:`NULL_TRACKER` and MLflow is
never imported.

Where the runs go (``tracking.tracking_uri``): the given URI, or by default a local
MLflow store next to the run directory, ``<parent of the run directory>/mlflow/``
(``mlflow.db``, SQLite, and ``artifacts/``): all runs under ``runs/`` share
``runs/mlflow/``. The points of a sweep (:func:`sweep_tracking`) share
``<sweep directory>/mlflow/`` and are children of one parent run of the sweep. MLflow 3
refuses its plain-file store unless told otherwise, hence SQLite.

A tracking failure (no server, a bad URI, a full disk) never ends or loses the run: the
tracker logs one warning and the run goes on untracked (:mod:`fedsim.tracking.mlflow_run`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from fedsim.config import TrackingConfig

__all__ = [
    "NULL_TRACKER",
    "STORE_DIR",
    "TRACKING_FILE",
    "RunStatus",
    "SweepGroup",
    "TrackedRun",
    "Tracker",
    "current_sweep",
    "default_store",
    "open_tracker",
    "sweep_tracking",
]

#: How a tracked run ended (MLflow's run statuses).
RunStatus = Literal["FINISHED", "FAILED", "KILLED"]
#: The default local store's directory (next to the run directory, or in a sweep's).
STORE_DIR = "mlflow"
#: Where a run (in its ``state/``) or a sweep (in its directory) notes its tracked run,
#: so that a resumed run or sweep goes on with the same one.
TRACKING_FILE = "tracking.json"


class Tracker(Protocol):
    """Receives one run's stream; never raises (failures are logged once)."""

    def log_metrics(self, scalars: Mapping[str, float], step: int) -> None:
        """Record ``scalars`` (tag → value) at ``step`` (the round; 0: the initial model)."""

    def finish(self, artifacts: Sequence[Path], status: RunStatus) -> None:
        """Upload the files ``artifacts`` that exist and end the run with ``status``."""


class _NullTracker:
    """The tracker of an untracked run: does nothing."""

    def log_metrics(self, scalars: Mapping[str, float], step: int) -> None:
        del scalars, step

    def finish(self, artifacts: Sequence[Path], status: RunStatus) -> None:
        del artifacts, status


NULL_TRACKER: Tracker = _NullTracker()


@dataclass(frozen=True)
class SweepGroup:
    """The sweep whose points are being run: its directory (where its store and the note
    of its parent run live) and the parent run's params (the swept keys and values)."""

    directory: Path
    params: Mapping[str, str]


_SWEEP: list[SweepGroup] = []
_LOCK = threading.Lock()


def current_sweep() -> SweepGroup | None:
    """The sweep of :func:`sweep_tracking` being run, if any."""
    with _LOCK:
        return _SWEEP[-1] if _SWEEP else None


def default_store(run_dir: Path) -> Path:
    """The local store of a run without ``tracking.tracking_uri``: ``mlflow/`` next to the
    run directory, or in the sweep directory of a sweep's point (a run directory itself
    named ``mlflow`` keeps the store inside)."""
    sweep = current_sweep()
    if sweep is not None:
        return sweep.directory / STORE_DIR
    run_dir = run_dir.resolve()
    return run_dir / STORE_DIR if run_dir.name == STORE_DIR else run_dir.parent / STORE_DIR


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker records about a run besides its rounds.

    Attributes
    ----------
    run_dir
        The run directory (its name names the tracked run).
    experiment
        The experiment the run belongs to.
    params
        The flattened config (dotted keys), with the fedsim version.
    tags
        Searchable labels (``fedsim.name``, ``fedsim.seed``, ...).
    """

    run_dir: Path
    experiment: str
    params: Mapping[str, object]
    tags: Mapping[str, str]


def open_tracker(tracking: TrackingConfig, run: TrackedRun, *, resume: bool = False) -> Tracker:
    """The tracker of ``run``: :data:`NULL_TRACKER` unless ``tracking.mlflow``; then an
    MLflow run (a resumed run goes on with its own), or — when MLflow cannot be reached or
    used — :data:`NULL_TRACKER` after one warning."""
    if not tracking.mlflow:
        return NULL_TRACKER
    from fedsim.tracking.mlflow_run import open_mlflow_run

    return open_mlflow_run(tracking, run, resume=resume, sweep=current_sweep())


@contextlib.contextmanager
def sweep_tracking(directory: Path, params: Mapping[str, str]) -> Iterator[SweepGroup]:
    """While active, tracked runs are points of the sweep in ``directory``: they share
    its default store and are children of the sweep's parent run (created with the first
    tracked point, holding the swept ``params``), which ends on exit with the sweep's
    files (``sweep.csv``, ``sweep.yaml``, ``report.md``, plots) as its artifacts: FINISHED,
    or KILLED when the sweep was interrupted, FAILED on an error."""
    group = SweepGroup(Path(directory).resolve(), dict(params))
    with _LOCK:
        _SWEEP.append(group)
    status: RunStatus = "FAILED"
    try:
        yield group
        status = "FINISHED"
    except BaseException as exc:
        from fedsim.errors import RunInterruptedError

        if isinstance(exc, (KeyboardInterrupt, RunInterruptedError)):
            status = "KILLED"
        raise
    finally:
        with _LOCK:
            _SWEEP.remove(group)
        from fedsim.tracking.mlflow_run import finish_parent

        finish_parent(group.directory, status)
