"""A simulated client's carried state, kept per round in the run directory.

In ``fedsim run`` simulations every client keeps what it carries between rounds — its
privacy ledger, the samples it pruned, VoG's running statistics — under
``<run dir>/state/clients/<client id>/``, one version per round it trained
(``round-NNNNNN.json`` + ``.npz``, written atomically before its reply leaves). A round
reads the newest version *older than itself*: a run resumed after round R re-runs round
R + 1 from the state its clients had after R, whatever an interrupted round R + 1 wrote,
so the resumed run reproduces the uninterrupted one exactly (in simulation the re-run's
noise is the same, so nothing is released twice). The three newest versions are kept.

Nothing here is per-run memory: a client's state lives in files, not in the process that
ran it, which is also what lets many simulated clients share a few workers.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsim.files import write_atomic
from fedsim.privacy import PrivacyLedger

_VERSION = re.compile(r"round-(\d{6})\.json$")
#: Versions kept per client: a resumed run restarts at most two rounds back (the server's
#: checkpoint of a round is written while the next one trains, strategies.background).
KEEP = 3


@dataclass(frozen=True)
class CarriedState:
    """What a client carries from one round to the next."""

    ledger: PrivacyLedger
    pruned: tuple[int, ...] | None = None
    vog: Mapping[str, np.ndarray] | None = None


class RoundStore:
    """Per-client, per-round carried state under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _dir(self, client_id: int) -> Path:
        return self.root / str(int(client_id))

    def _versions(self, client_id: int) -> list[int]:
        folder = self._dir(client_id)
        if not folder.is_dir():
            return []
        found = (_VERSION.match(p.name) for p in folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def load(self, client_id: int, before_round: int) -> CarriedState:
        """The newest state of ``client_id`` from a round before ``before_round`` (a fresh
        one if there is none)."""
        older = [r for r in self._versions(client_id) if r < before_round]
        if not older:
            return CarriedState(PrivacyLedger())
        stem = self._dir(client_id) / f"round-{older[-1]:06d}"
        doc = json.loads(stem.with_suffix(".json").read_text("utf-8"))
        pruned = doc.get("pruned")
        vog = None
        if doc.get("vog"):
            with np.load(stem.with_suffix(".npz")) as arrays:
                vog = {k: arrays[k] for k in arrays.files}
        return CarriedState(
            ledger=PrivacyLedger.from_json(doc["ledger"]),
            pruned=None if pruned is None else tuple(int(i) for i in pruned),
            vog=vog,
        )

    def first_attempt(self, client_id: int, server_round: int, run_id: str) -> bool:
        """Note that ``client_id`` starts ``server_round`` of run ``run_id``; ``False`` if
        it had already started it (an attempt whose worker died: the server sent the
        message again, not knowing whether it ran). A resumed run has a new ``run_id``.
        """
        marker = self._dir(client_id) / f"attempt-{server_round:06d}"
        try:
            if marker.read_text("utf-8") == run_id:
                return False
        except OSError:
            pass
        write_atomic(marker, run_id.encode())
        for old in self._dir(client_id).glob("attempt-*"):
            if old.name < f"attempt-{server_round - KEEP:06d}":
                old.unlink(missing_ok=True)
        return True

    def save(self, client_id: int, server_round: int, state: CarriedState) -> None:
        """Keep ``state`` as ``client_id``'s state after ``server_round`` (atomic writes;
        the arrays before the JSON that names them)."""
        stem = self._dir(client_id) / f"round-{server_round:06d}"
        if state.vog is not None:
            buffer = io.BytesIO()
            np.savez(buffer, **{k: np.asarray(v) for k, v in state.vog.items()})  # type: ignore[arg-type]
            write_atomic(stem.with_suffix(".npz"), buffer.getvalue())
        doc = {
            "ledger": state.ledger.to_json(),
            "pruned": None if state.pruned is None else [int(i) for i in state.pruned],
            "vog": state.vog is not None,
        }
        write_atomic(stem.with_suffix(".json"), json.dumps(doc).encode())
        for old in self._versions(client_id)[:-KEEP]:
            for suffix in (".json", ".npz"):
                (self._dir(client_id) / f"round-{old:06d}{suffix}").unlink(missing_ok=True)
