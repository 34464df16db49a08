"""Resuming a run: the server's checkpoint after each completed round, and its checks.

After every completed round the ServerApp writes, atomically and in this order, the
round's ``metrics.jsonl`` line and then ``state/model.pt`` (the global model) and
``state/server.json`` (:class:`ServerCheckpoint`: the round, the strategy's exported state
— budgets, ledgers, reward book, central-DP ledger, audit scores —, the initial
evaluation, the wall time so far, and SHA-256 digests of the model and of the resolved
config). Simulated clients keep their own state per round beside it (``state/clients``,
:mod:`clients.client_store`). Every random stream of a run is derived from the root seed,
the purpose and the round, so ``fedsim run --resume RUN_DIR`` continues from the last
checkpoint exactly as the uninterrupted run would have.

A torn directory is detected, not trusted: a model whose digest differs, a config that
changed, a checkpoint ahead of ``metrics.jsonl``, or an unreadable file stop the resume
with a clear message; ``metrics.jsonl`` lines beyond the checkpoint (a round that was
interrupted after its line was written) and a half-written last line are dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsim.errors import FedsimError
from fedsim.records import ClientRoundRecord, EvalResult, SiteEvaluation
from fedsim.round_log import RoundEntry

STATE_DIR = "state"
SERVER_STATE_FILE = "server.json"
MODEL_STATE_FILE = "model.pt"
FORMAT = 1


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """Hex SHA-256 of a text (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()


def _eval_doc(result: EvalResult | None) -> dict[str, Any] | None:
    return None if result is None else {
        "accuracy": result.accuracy, "loss": result.loss, "auc": result.auc,
        "num_examples": result.num_examples, "mre": result.mre,
        "balanced_accuracy": result.balanced_accuracy,
        "class_recall": None if result.class_recall is None else list(result.class_recall),
        "confusion": None if result.confusion is None else list(result.confusion),
    }  # fmt: skip


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def _recalls(values: Any) -> tuple[float | None, ...] | None:
    return None if values is None else tuple(_optional(v) for v in values)


def _eval_of(doc: Mapping[str, Any] | None) -> EvalResult | None:
    if doc is None:
        return None
    return EvalResult(
        accuracy=float(doc["accuracy"]),
        loss=float(doc["loss"]),
        auc=None if doc.get("auc") is None else float(doc["auc"]),
        num_examples=int(doc.get("num_examples", 0)),
        mre=None if doc.get("mre") is None else float(doc["mre"]),
        balanced_accuracy=_optional(doc.get("balanced_accuracy")),
        class_recall=_recalls(doc.get("class_recall")),
        confusion=(
            None if doc.get("confusion") is None else tuple(int(c) for c in doc["confusion"])  # type: ignore[arg-type]
        ),
    )


@dataclass(frozen=True)
class ServerCheckpoint:
    """The server's state after round :attr:`round` (``state/server.json``)."""

    round: int
    wall_seconds: float
    initial: EvalResult | None
    strategy: Mapping[str, Any]
    model_sha256: str
    config_sha256: str

    def to_json(self) -> dict[str, Any]:
        """The ``state/server.json`` document."""
        return {
            "format": FORMAT,
            "round": self.round,
            "wall_seconds": self.wall_seconds,
            "initial": _eval_doc(self.initial),
            "strategy": dict(self.strategy),
            "model_sha256": self.model_sha256,
            "config_sha256": self.config_sha256,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ServerCheckpoint:
        """Parse ``state/server.json`` (raises ``KeyError``/``ValueError`` on bad content)."""
        if doc.get("format") != FORMAT:
            raise ValueError(f"unknown checkpoint format {doc.get('format')!r}")
        return cls(
            round=int(doc["round"]),
            wall_seconds=float(doc["wall_seconds"]),
            initial=_eval_of(doc.get("initial")),
            strategy=dict(doc["strategy"]),
            model_sha256=str(doc["model_sha256"]),
            config_sha256=str(doc["config_sha256"]),
        )


@dataclass(frozen=True)
class ResumePoint:
    """What a resumed run starts from: the checkpoint, the completed rounds' metrics lines
    (exactly :attr:`ServerCheckpoint.round` of them) and the path of the saved model."""

    checkpoint: ServerCheckpoint
    lines: tuple[Mapping[str, Any], ...]
    model_path: Path

    @property
    def round(self) -> int:
        """The last completed round."""
        return self.checkpoint.round

    def entries(self) -> tuple[RoundEntry, ...]:
        """The completed rounds as round-log entries (from ``metrics.jsonl``)."""
        return tuple(entry_of(line) for line in self.lines)

    def evaluations(self) -> dict[int, EvalResult]:
        """Central evaluations by round, the initial one (round 0) included."""
        out = {int(m["round"]): EvalResult.from_test_json(m) for m in self.lines}
        if self.checkpoint.initial is not None:
            out[0] = self.checkpoint.initial
        return out


def entry_of(line: Mapping[str, Any]) -> RoundEntry:
    """A :class:`RoundEntry` rebuilt from its ``metrics.jsonl`` line."""
    clients = tuple(
        ClientRoundRecord(client_id=int(cid), **doc)
        for cid, doc in sorted(line.get("clients", {}).items(), key=lambda kv: int(kv[0]))
    )
    return RoundEntry(
        round=int(line["round"]),
        sampled=tuple(int(c) for c in line.get("sampled", ())),
        selected=tuple(int(c) for c in line.get("selected", ())),
        clients=clients,
        selection_epsilon=line.get("selection_epsilon"),
        site_evaluation=(
            None
            if line.get("site_evaluation") is None
            else SiteEvaluation.from_json(line["site_evaluation"])
        ),
    )


def read_resume_point(run_dir: str | Path, config_text: str, metrics_file: str) -> ResumePoint:
    """Check a run directory and return where to resume it.

    ``config_text`` is the resolved config the resumed run would write (it must equal the
    one the run started with); ``metrics_file`` names ``metrics.jsonl``.

    Raises
    ------
    FedsimError
        If the directory has no checkpoint, or any part of it is torn or inconsistent.
    """
    root = Path(run_dir)
    state = root / STATE_DIR
    where = f"--resume {str(root)!r}"
    server_path = state / SERVER_STATE_FILE
    if not server_path.is_file():
        raise FedsimError(f"{where}: no checkpoint ({STATE_DIR}/{SERVER_STATE_FILE}); "
                          "the run did not complete a round, start it again")  # fmt: skip
    try:
        checkpoint = ServerCheckpoint.from_json(json.loads(server_path.read_text("utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FedsimError(f"{where}: the checkpoint cannot be read ({exc})") from None
    if checkpoint.config_sha256 != sha256_text(config_text):
        raise FedsimError(
            f"{where}: the config differs from the one the run started with "
            "(config.yaml); resume with the same config and overrides"
        )
    model_path = state / MODEL_STATE_FILE
    if not model_path.is_file() or sha256_file(model_path) != checkpoint.model_sha256:
        raise FedsimError(f"{where}: the saved model does not match the checkpoint (torn write)")
    lines: list[Mapping[str, Any]] = []
    path = root / metrics_file
    for raw in path.read_text("utf-8").splitlines() if path.is_file() else []:
        try:
            line = json.loads(raw)
        except ValueError:
            break  # a half-written last line: the round it belongs to did not complete
        if int(line.get("round", -1)) > checkpoint.round:
            break  # written before the checkpoint of an interrupted round
        lines.append(line)
    if [int(m["round"]) for m in lines] != list(range(1, checkpoint.round + 1)):
        raise FedsimError(
            f"{where}: {metrics_file} holds rounds {[m.get('round') for m in lines]}, the "
            f"checkpoint is at round {checkpoint.round}; the directory is not consistent"
        )
    return ResumePoint(checkpoint=checkpoint, lines=tuple(lines), model_path=model_path)
