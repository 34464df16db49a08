"""A site's persistent privacy state: its ledger in a JSON file in the site's state dir.

In deployment every SuperNode keeps ``<state-dir>/fedsim-state.json``::

    {"format": 1, "client_id": 0, "ledger": {"sigma": ..., "events": [...]},
     "rounds_trained": 4, "runs": {"<flower run id>": 2}, "updated": "2026-..."}

The file is read before and written (atomically) after every round, before the reply
leaves the site, so a restarted SuperNode — or the next run — continues with the ε it has
already spent and still refuses to train past ``dp.max_epsilon``. One state dir belongs
to one client id; pointing another client at it is an error rather than a silent merge.
:func:`site_lock` serialises rounds of concurrent runs at one site (read, train, write),
so that no ε is lost to a race.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsim.errors import FedsimError
from fedsim.files import write_atomic
from fedsim.privacy import PrivacyLedger

STATE_FILE = "fedsim-state.json"
LOCK_FILE = ".fedsim-state.lock"
FORMAT = 1


@dataclass(frozen=True)
class SiteState:
    """The persisted state of one site."""

    client_id: int
    ledger: PrivacyLedger = field(default_factory=PrivacyLedger)
    rounds_trained: int = 0
    runs: dict[str, int] = field(default_factory=dict)


def state_file(state_dir: Path) -> Path:
    """The state file inside ``state_dir``."""
    return state_dir / STATE_FILE


@contextlib.contextmanager
def site_lock(state_dir: Path) -> Iterator[None]:
    """Hold the site's exclusive lock (``flock`` on a file in ``state_dir``)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def load_state(state_dir: Path, client_id: int) -> SiteState:
    """The site's state (a fresh one when the file does not exist yet).

    Raises
    ------
    FedsimError
        If the file is unreadable, of an unknown format, or belongs to another client.
    """
    path = state_file(state_dir)
    if not path.exists():
        return SiteState(client_id=client_id)
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT:
            raise ValueError(f"unknown format {doc.get('format')!r} (expected {FORMAT})")
        stored_id = int(doc["client_id"])
        ledger = PrivacyLedger.from_json(json.dumps(doc["ledger"]))
        state = SiteState(
            client_id=stored_id,
            ledger=ledger,
            rounds_trained=int(doc.get("rounds_trained", 0)),
            runs={str(k): int(v) for k, v in dict(doc.get("runs", {})).items()},
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FedsimError(f"state file {path}: cannot be read ({exc})") from exc
    if stored_id != client_id:
        raise FedsimError(
            f"state file {path} belongs to client {stored_id}, not to client-id {client_id}; "
            f"give each site its own state-dir"
        )
    return state


def save_state(state_dir: Path, state: SiteState) -> None:
    """Write ``state`` atomically (a crash leaves the previous file intact)."""
    doc = {
        "format": FORMAT,
        "client_id": state.client_id,
        "ledger": json.loads(state.ledger.to_json()),
        "rounds_trained": state.rounds_trained,
        "runs": state.runs,
        "updated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    data = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
    write_atomic(state_file(state_dir), data, mode=0o600)


def record_round(state: SiteState, ledger: PrivacyLedger, run_id: int, trained: bool) -> SiteState:
    """``state`` after one round of run ``run_id`` that left ``ledger`` behind."""
    if not trained:
        return SiteState(state.client_id, ledger, state.rounds_trained, dict(state.runs))
    runs = dict(state.runs)
    runs[str(run_id)] = runs.get(str(run_id), 0) + 1
    return SiteState(state.client_id, ledger, state.rounds_trained + 1, runs)
