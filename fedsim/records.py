"""Values that cross module boundaries: what happened to each client in a round."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fedsim.clinical import BinaryCounts, count_metrics

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
    #: the binary confusion matrix ``(tn, fp, fn, tp)``, class 1 positive
    #: (:mod:`fedsim.clinical`; binary tasks)
    confusion: tuple[int, int, int, int] | None = None

    @property
    def binary(self) -> BinaryCounts | None:
        """The binary counts with sensitivity, specificity, precision and F1."""
        if self.confusion is None:
            return None
        tn, fp, fn, tp = self.confusion
        return BinaryCounts(tn=tn, fp=fp, fn=fn, tp=tp)

    def test_json(self) -> dict[str, Any]:
        """The ``test_*`` fields of a ``metrics.jsonl`` line or ``summary.json`` (the
        optional ones only when set)."""
        doc: dict[str, Any] = {"test_accuracy": self.accuracy, "test_loss": self.loss}
        optional: dict[str, Any] = {
            "test_auc": self.auc,
            "test_mre": self.mre,
            "test_balanced_accuracy": self.balanced_accuracy,
            "test_recall": None if self.class_recall is None else list(self.class_recall),
        }
        binary = self.binary
        if binary is not None:
            optional.update({f"test_{k}": v for k, v in binary.json().items()})
            optional["test_confusion"] = {k: int(v) for k, v in binary.counts_json().items()}
        doc.update({k: v for k, v in optional.items() if v is not None})
        return doc

    @classmethod
    def from_test_json(cls, doc: Mapping[str, Any]) -> EvalResult:
        """The result a :meth:`test_json` document holds (``num_examples`` is not in it)."""

        def number(key: str) -> float | None:
            return None if doc.get(key) is None else float(doc[key])

        recall = doc.get("test_recall")
        confusion = doc.get("test_confusion")
        return cls(
            accuracy=float(doc["test_accuracy"]),
            loss=float(doc["test_loss"]),
            auc=number("test_auc"),
            mre=number("test_mre"),
            balanced_accuracy=number("test_balanced_accuracy"),
            class_recall=None if recall is None else tuple(_maybe(r) for r in recall),
            confusion=(
                None
                if confusion is None
                else (
                    int(confusion["tn"]),
                    int(confusion["fp"]),
                    int(confusion["fn"]),
                    int(confusion["tp"]),
                )
            ),
        )


def _maybe(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class SiteMetrics:
    """What a released (noisy) confusion matrix says (:func:`fedsim.clinical.count_metrics`):
    one site's evaluation, or the federation's (the sum of the sites' matrices, i.e. every
    rate weighted by the sites' noisy sizes).

    ``confusion`` is the matrix ``m[true][predicted]`` (binary: ``[[tn, fp], [fn, tp]]``,
    class 1 positive); ``num_examples`` its (noisy) total.
    """

    num_examples: float
    confusion: tuple[tuple[float, ...], ...]
    accuracy: float | None = None
    balanced_accuracy: float | None = None
    class_recall: tuple[float | None, ...] = ()
    sensitivity: float | None = None
    specificity: float | None = None
    precision: float | None = None
    f1: float | None = None

    @classmethod
    def of(cls, matrix: Any) -> SiteMetrics:
        """The metrics of a square matrix ``m[true, predicted]`` (negative noisy counts
        count as 0 in the rates; the matrix is kept as released)."""
        import numpy as np

        m = np.asarray(matrix, dtype=np.float64)
        counts = count_metrics(m)
        rates = counts.binary.json() if counts.binary is not None else {}
        return cls(
            num_examples=counts.num_examples,
            confusion=tuple(tuple(float(v) for v in row) for row in m),
            accuracy=counts.accuracy,
            balanced_accuracy=counts.balanced_accuracy,
            class_recall=counts.class_recall,
            **rates,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object (``confusion`` and ``class_recall`` as lists)."""
        doc = asdict(self)
        doc["confusion"] = [list(row) for row in self.confusion]
        doc["class_recall"] = list(self.class_recall)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SiteMetrics:
        """The inverse of :meth:`to_json`."""
        rates = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1")
        return cls(
            num_examples=float(doc["num_examples"]),
            confusion=tuple(tuple(float(v) for v in row) for row in doc["confusion"]),
            class_recall=tuple(_maybe(r) for r in doc.get("class_recall", ())),
            **{k: _maybe(doc.get(k)) for k in rates},
        )


@dataclass(frozen=True)
class SiteEvalRecord:
    """One site's part in one federated evaluation, as the server saw it.

    ``metrics`` is ``None`` when the site released nothing (refused, budget exhausted,
    failed, rejected); ``epsilon`` is the ε of this release, ``epsilon_evaluation`` of
    all the site's evaluation releases so far and ``epsilon_total`` of every event in its
    ledger (DP-SGD runs), all as the site reported them.
    """

    client_id: int
    status: ClientStatus
    metrics: SiteMetrics | None = None
    epsilon: float | None = None
    epsilon_evaluation: float | None = None
    epsilon_total: float | None = None
    rejected_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The site's object in a ``metrics.jsonl`` line (without its id, the key)."""
        return {
            "status": self.status,
            "epsilon": self.epsilon,
            "epsilon_evaluation": self.epsilon_evaluation,
            "epsilon_total": self.epsilon_total,
            "rejected_reason": self.rejected_reason,
            "metrics": None if self.metrics is None else self.metrics.to_json(),
        }

    @classmethod
    def from_json(cls, client_id: int, doc: Mapping[str, Any]) -> SiteEvalRecord:
        """The inverse of :meth:`to_json`."""
        metrics = doc.get("metrics")
        return cls(
            client_id=client_id,
            status=doc["status"],
            metrics=None if metrics is None else SiteMetrics.from_json(metrics),
            epsilon=_maybe(doc.get("epsilon")),
            epsilon_evaluation=_maybe(doc.get("epsilon_evaluation")),
            epsilon_total=_maybe(doc.get("epsilon_total")),
            rejected_reason=doc.get("rejected_reason"),
        )


@dataclass(frozen=True)
class SiteEvaluation:
    """One round's federated evaluation: each asked site, and the sites' aggregate (the
    pooled released matrices of the sites that released; ``None`` when none did)."""

    sites: tuple[SiteEvalRecord, ...]
    aggregate: SiteMetrics | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``site_evaluation`` block of a ``metrics.jsonl`` line."""
        return {
            "aggregate": None if self.aggregate is None else self.aggregate.to_json(),
            "sites": {str(s.client_id): s.to_json() for s in self.sites},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SiteEvaluation:
        """The inverse of :meth:`to_json` (a resumed run's earlier rounds)."""
        aggregate = doc.get("aggregate")
        sites = sorted(doc.get("sites", {}).items(), key=lambda kv: int(kv[0]))
        return cls(
            sites=tuple(SiteEvalRecord.from_json(int(c), d) for c, d in sites),
            aggregate=None if aggregate is None else SiteMetrics.from_json(aggregate),
        )


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
    #: the sites' evaluation of this round's global model (``evaluation.federated``)
    site_evaluation: SiteEvaluation | None = None

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
        if self.site_evaluation is not None:
            doc["site_evaluation"] = self.site_evaluation.to_json()
        return doc
