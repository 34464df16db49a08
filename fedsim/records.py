"""Values that cross module boundaries: what happened to each client in a round."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ClientStatus = Literal["ok", "budget-exhausted", "refused", "rejected", "failed"]


@dataclass(frozen=True)
class ClientRoundRecord:
    """One client's part in one round, as the server saw it.

    The accounting inputs (``noise_multiplier``, ``sample_rate``, cumulative ``steps``) are
    logged so that anyone can re-derive ``epsilon`` with their own accountant.
    """

    client_id: int
    status: ClientStatus
    #: ``None`` when the client does not reveal it (``dp.neighbouring: add_remove``)
    num_examples: int | None = 0
    train_loss: float | None = None
    epsilon: float | None = None
    epsilon_total: float | None = None
    #: ε of the private selections (SecProbe) this client took part in, composed so far
    epsilon_selection: float | None = None
    delta: float | None = None
    #: The neighbouring relation of ``epsilon`` / ``epsilon_total`` (``replace_one`` or
    #: ``add_remove``)
    relation: str | None = None
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    steps: int | None = None
    train_seconds: float | None = None
    rejected_reason: str | None = None
    utility: float | None = None
    selection_probability: float | None = None
    valuation: float | None = None
    valuation_variance: float | None = None
    valuation_epsilon: float | None = None
    quality: float | None = None
    reward: float | None = None
    num_pruned: int | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON object for ``metrics.jsonl`` (without the client id, which is the key)."""
        doc = asdict(self)
        doc.pop("client_id")
        return doc


@dataclass(frozen=True)
class EvalResult:
    """Central evaluation of the global model on one split.

    For a regression task ``accuracy`` is SecProbe's accuracy score, the mean over records
    of ``1 - min(1, |ŷ - y| / y)`` (:func:`fedsim.selection.regression_utility`), ``loss``
    the mean squared error and ``mre`` the mean relative error ``|ŷ - y| / y`` (the paper's
    Eq. 18); for classification ``mre`` is ``None``.
    """

    accuracy: float
    loss: float
    auc: float | None = None
    num_examples: int = 0
    mre: float | None = None
    #: mean recall over the classes present in the split (classification)
    balanced_accuracy: float | None = None
    #: recall of each class (binary tasks; ``None`` for a class absent from the split)
    class_recall: tuple[float | None, ...] | None = None

    def test_json(self) -> dict[str, Any]:
        """The ``test_*`` fields of a ``metrics.jsonl`` line or ``summary.json`` (the
        optional ones only when set)."""
        doc: dict[str, Any] = {"test_accuracy": self.accuracy, "test_loss": self.loss}
        optional = {
            "test_auc": self.auc,
            "test_mre": self.mre,
            "test_balanced_accuracy": self.balanced_accuracy,
            "test_recall": None if self.class_recall is None else list(self.class_recall),
        }
        doc.update({k: v for k, v in optional.items() if v is not None})
        return doc


@dataclass(frozen=True)
class RoundRecord:
    """Everything one round produced: one line of ``metrics.jsonl``."""

    round: int
    test: EvalResult
    sampled: tuple[int, ...] = ()
    selected: tuple[int, ...] = ()
    clients: tuple[ClientRoundRecord, ...] = field(default_factory=tuple)
    seconds: float = 0.0
    selection_epsilon: float | None = None
    #: why the round's aggregate is not the aggregation rule's own (``None``: it is)
    aggregation_note: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``metrics.jsonl`` object (DESIGN.md, run directory contract)."""
        doc: dict[str, Any] = {"round": self.round, **self.test.test_json()}
        doc["sampled"] = list(self.sampled)
        doc["selected"] = list(self.selected)
        doc["seconds"] = self.seconds
        if self.selection_epsilon is not None:
            doc["selection_epsilon"] = self.selection_epsilon
        if self.aggregation_note is not None:
            doc["aggregation_note"] = self.aggregation_note
        doc["clients"] = {str(c.client_id): c.to_json() for c in self.clients}
        return doc
