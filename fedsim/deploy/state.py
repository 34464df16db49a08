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


def read_state(state_dir: Path) -> SiteState | None:
    """The state file's content, whoever it belongs to (``None``: no file yet).

    Raises
    ------
    FedsimError
        If the file is unreadable or of an unknown format.
    """
    path = state_file(state_dir)
    if not path.exists():
        return None
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:  # no content in the message: position only
        raise FedsimError(
            f"state file {path}: cannot be read (not JSON: {exc.msg} at line {exc.lineno})"
        ) from None
    except UnicodeDecodeError:
        raise FedsimError(f"state file {path}: cannot be read (not UTF-8 text)") from None
    except OSError as exc:
        raise FedsimError(f"state file {path}: cannot be read ({exc.strerror})") from None
    try:
        if doc.get("format") != FORMAT:
            raise ValueError(f"its format is not {FORMAT}")
        return SiteState(
            client_id=int(doc["client_id"]),
            ledger=PrivacyLedger.from_json(json.dumps(doc["ledger"])),
            rounds_trained=int(doc.get("rounds_trained", 0)),
            runs={str(k): int(v) for k, v in dict(doc.get("runs", {})).items()},
        )
    except KeyError as exc:
        raise FedsimError(f"state file {path}: cannot be read (no field {exc.args[0]!r})") from None
    except (ValueError, TypeError, AttributeError, IndexError) as exc:
        reason = (
            str(exc) if str(exc).startswith("its format") else "a field of the wrong type or shape"
        )
        raise FedsimError(
            f"state file {path}: cannot be read ({reason}; expected fedsim's state format "
            f"{FORMAT}: client_id, ledger, rounds_trained, runs)"
        ) from None


def load_state(state_dir: Path, client_id: int) -> SiteState:
    """The state of site ``client_id`` (a fresh one when the file does not exist yet).

    Raises
    ------
    FedsimError
        If the file is unreadable, of an unknown format, or belongs to another client.
    """
    state = read_state(state_dir)
    if state is None:
        return SiteState(client_id=client_id)
    if state.client_id != client_id:
        raise FedsimError(
            f"state file {state_file(state_dir)} belongs to client {state.client_id}, not to "
            f"client-id {client_id}; give each site its own state-dir"
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
