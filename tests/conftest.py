"""Shared fixtures."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import pytest
from session_procs import SESSION_ENV


def pytest_configure(config: pytest.Config) -> None:
    """Mark this pytest process (one per worker under ``pytest -n``): the processes its
    tests start inherit the mark, so checks for left-behind processes count only this
    session's (:mod:`session_procs`)."""
    os.environ[SESSION_ENV] = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    # kept noise calibrations (fedsim.privacy.sigma_cache): the session's own, not the user's
    os.environ["FEDSIM_CACHE_DIR"] = tempfile.mkdtemp(prefix="fedsim-test-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ.get("FEDSIM_CACHE_DIR", ""), ignore_errors=True)


@pytest.fixture
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages outside a Flower run need a run/node/task id (set by Flower otherwise)."""
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1, raising=False)


@pytest.fixture(scope="module", autouse=True)
def shared_ray(request: pytest.FixtureRequest):
    """In a module that sets ``SHARED_RAY = True``, its in-process runs share warm client
    workers, and one Ray with its actor pool for runs on Ray
    (:func:`fedsim.run.keep_client_workers`, as a sweep's points do), stopped when the
    module's tests are done. Modules that count processes or test the start-up itself do
    not set it."""
    if not getattr(request.module, "SHARED_RAY", False):
        yield
        return
    from fedsim.run import keep_client_workers

    with keep_client_workers():
        yield
