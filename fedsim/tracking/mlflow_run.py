"""A run tracked in MLflow (the ``tracking`` extra), through ``MlflowClient`` only.

No global MLflow state is touched (no active run, no ``mlflow.set_tracking_uri``), so
several runs of one process (a sweep's points) and the ServerApp's threads do not
interfere. Every call is guarded: the first failure logs one warning and the tracker
falls silent; the run itself never notices (:mod:`fedsim.tracking`).

MLflow is imported here only, and only when a run is tracked. For an HTTP(S) tracking
server this module bounds MLflow's retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` 2,
``MLFLOW_HTTP_REQUEST_TIMEOUT`` 10 s, unless set in the environment; MLflow's own
defaults retry for minutes) and first checks that the server accepts a connection.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fedsim.files import write_atomic
from fedsim.tracking import (
    NULL_TRACKER,
    TRACKING_FILE,
    RunStatus,
    SweepGroup,
    TrackedRun,
    Tracker,
    default_store,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from fedsim.config import TrackingConfig

logger = logging.getLogger(__name__)

#: Seconds to wait for an HTTP(S) tracking server to accept a connection.
CONNECT_TIMEOUT = 3.0
#: The run directory's ``state/`` (fedsim.checkpoint.STATE_DIR; not imported: light).
_STATE_DIR = "state"
#: MLflow's limits per ``log_batch`` call and on a param's value.
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
_MAX_PARAM_CHARS = 6000
#: A sweep directory's files the parent run keeps.
SWEEP_ARTIFACTS = ("sweep.csv", "sweep.yaml", "report.md", "*.png")

#: Parent runs of the sweeps of this process: sweep directory → (client, run id).
_PARENTS: dict[Path, tuple[MlflowClient, str]] = {}


def _short(exc: BaseException, uri: str = "") -> str:
    """An exception in one short line (MLflow's messages can be long), with the
    credentials of ``uri`` (``user:password@``), should it quote them, blanked out."""
    first = (str(exc).strip().splitlines() or [""])[0]
    parts = urlsplit(uri)
    for secret in (parts.password, parts.username):
        if secret:
            first = first.replace(secret, "***")
    return f"{type(exc).__name__}: {first[:200]}"


def _warn(what: str, where: Path, exc: BaseException, uri: str = "") -> None:
    logger.warning(
        "MLflow tracking of %s stopped: %s failed (%s); the run goes on without tracking",
        where,
        what,
        _short(exc, uri),
    )


def _uri_digest(uri: str) -> str:
    """A digest of the tracking URI (kept in state files instead of the URI, which may
    carry credentials)."""
    return hashlib.sha256(uri.encode()).hexdigest()


def store_uris(tracking: TrackingConfig, run_dir: Path) -> tuple[str, str | None]:
    """The tracking URI and, for the default local store, its artifact root (``None``:
    the server's or MLflow's own choice)."""
    if tracking.tracking_uri:
        return tracking.tracking_uri, None
    store = default_store(run_dir)
    return f"sqlite:///{store / 'mlflow.db'}", (store / "artifacts").as_uri()


def check_reachable(uri: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """For an HTTP(S) URI, that its host accepts a TCP connection within ``timeout``
    (raises :class:`OSError`); other URIs are left to MLflow."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
        pass


def _experiment_id(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    """The id of experiment ``name``, created if missing (by another process meanwhile:
    then found)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_root))
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def _read_note(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _write_note(path: Path, uri: str, experiment_id: str, run_id: str) -> None:
    doc = {"uri_sha256": _uri_digest(uri), "experiment_id": experiment_id, "run_id": run_id}
    write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode())


def _noted_run(path: Path, uri: str, experiment_id: str) -> str | None:
    """The run id noted in ``path`` for this store and experiment, if any."""
    doc = _read_note(path)
    same = doc.get("uri_sha256") == _uri_digest(uri) and doc.get("experiment_id") == experiment_id
    run_id = doc.get("run_id")
    return run_id if same and isinstance(run_id, str) else None


def _log_params(client: MlflowClient, run_id: str, params: Mapping[str, object]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:_MAX_PARAM_CHARS]) for k, v in sorted(params.items())]
    for start in range(0, len(items), _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + _PARAMS_PER_BATCH])


def _parent_run(client: MlflowClient, uri: str, experiment_id: str, sweep: SweepGroup) -> str:
    """The sweep's parent run: the one noted in the sweep directory (a resumed sweep),
    else a new one holding the swept params."""
    note = sweep.directory / TRACKING_FILE
    run_id = _noted_run(note, uri, experiment_id)
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
    else:
        tags = {"fedsim.sweep": sweep.directory.name, "fedsim.role": "sweep"}
        run = client.create_run(experiment_id, run_name=sweep.directory.name, tags=tags)
        run_id = run.info.run_id
        _log_params(client, run_id, sweep.params)
        _write_note(note, uri, experiment_id, run_id)
    _PARENTS[sweep.directory] = (client, run_id)
    return run_id


class MlflowRun:
    """One tracked run: an MLflow run id and the client that writes to it."""

    def __init__(self, client: MlflowClient, run_id: str, run_dir: Path) -> None:
        self.client = client
        self.run_id = run_id
        self._where = run_dir
        self._failed = False

    def _guard(self, what: str, action: Callable[[], None]) -> None:
        if self._failed:
            return
        try:
            action()
        except Exception as exc:  # tracking must never end the run: warn once, go on
            self._failed = True
            _warn(what, self._where, exc, str(self.client.tracking_uri))

    def log_metrics(self, scalars: Mapping[str, float], step: int) -> None:
        """Log ``scalars`` at ``step`` in batches."""

        def log() -> None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            metrics = [Metric(k, v, now, step) for k, v in scalars.items()]
            for start in range(0, len(metrics), _METRICS_PER_BATCH):
                batch = metrics[start : start + _METRICS_PER_BATCH]
                self.client.log_batch(self.run_id, metrics=batch)

        self._guard(f"logging round {step}", log)

    def finish(self, artifacts: Sequence[Path], status: RunStatus) -> None:
        """Upload the files of ``artifacts`` that exist, then end the run."""

        def upload() -> None:
            for path in artifacts:
                if path.is_file():
                    self.client.log_artifact(self.run_id, str(path))

        self._guard("uploading the run's files", upload)
        self._guard("ending the run", lambda: self.client.set_terminated(self.run_id, status))


def open_mlflow_run(
    tracking: TrackingConfig, run: TrackedRun, *, resume: bool, sweep: SweepGroup | None
) -> Tracker:
    """Start (or, for a resumed run, reopen) the MLflow run of ``run``; on any failure
    one warning and :data:`~fedsim.tracking.NULL_TRACKER`."""
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        logger.warning(
            "tracking.mlflow is true but MLflow cannot be imported (%s); install it with "
            "pip install 'fedsim[tracking]'. The run goes on without tracking",
            _short(exc),
        )
        return NULL_TRACKER
    uri, artifact_root = store_uris(tracking, run.run_dir)
    try:
        if artifact_root is not None:
            default_store(run.run_dir).mkdir(parents=True, exist_ok=True)
        check_reachable(uri)
        client = MlflowClient(tracking_uri=uri)
        experiment_id = _experiment_id(client, run.experiment, artifact_root)
        note = run.run_dir / _STATE_DIR / TRACKING_FILE
        run_id = _noted_run(note, uri, experiment_id) if resume else None
        if run_id is not None:
            client.update_run(run_id, status="RUNNING")
            return MlflowRun(client, run_id, run.run_dir)
        tags = {"fedsim.run_dir": str(run.run_dir.resolve()), **run.tags}
        if sweep is not None:
            tags["mlflow.parentRunId"] = _parent_run(client, uri, experiment_id, sweep)
            tags["fedsim.sweep"] = sweep.directory.name
            tags["fedsim.sweep_point"] = run.run_dir.name
        created = client.create_run(experiment_id, run_name=run.run_dir.name, tags=tags)
        run_id = created.info.run_id
        _log_params(client, run_id, run.params)
        _write_note(note, uri, experiment_id, run_id)
    except Exception as exc:  # tracking must never end the run: warn once, go on
        _warn("starting the tracked run", run.run_dir, exc, uri)
        return NULL_TRACKER
    logger.info(
        "tracking %s in MLflow (experiment %r, run %s)", run.run_dir, run.experiment, run_id
    )
    return MlflowRun(client, run_id, run.run_dir)


def finish_parent(directory: Path, status: RunStatus) -> None:
    """End the parent run of the sweep in ``directory`` (if one was opened by this
    process) with the sweep's files as artifacts."""
    entry = _PARENTS.pop(directory, None)
    if entry is None:
        return
    client, run_id = entry
    files = [path for pattern in SWEEP_ARTIFACTS for path in sorted(directory.glob(pattern))]
    MlflowRun(client, run_id, directory).finish(files, status)


__all__ = ["MlflowRun", "check_reachable", "finish_parent", "open_mlflow_run"]
