"""Clinical metrics of a classifier from its confusion matrix: pure functions.

For a binary task the *positive* class is class 1 (:data:`POSITIVE_CLASS`): in
PneumoniaMNIST 1 is pneumonia; an ``imagefolder`` dataset numbers its class folders in
sorted order, so the positive class is the second folder name (e.g. ``normal/`` = 0,
``pneumonia/`` = 1). With tn, fp, fn, tp counted for that class:

=============  ====================  ==================================
metric         formula               also called
=============  ====================  ==================================
sensitivity    tp / (tp + fn)        recall of class 1, true-positive rate
specificity    tn / (tn + fp)        recall of class 0, true-negative rate
precision      tp / (tp + fp)        positive predictive value
F1             2tp / (2tp + fp + fn)  harmonic mean of precision and sensitivity
=============  ====================  ==================================

A metric whose denominator is 0 (no positive sample, no positive prediction) is ``None``.
The same functions take the *noisy* counts a site releases in federated evaluation
(:mod:`fedsim.privacy.evaluation`): negative noisy counts are set to 0 first
(post-processing), so every derived rate stays in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The class whose detection sensitivity, precision and F1 measure (binary tasks).
POSITIVE_CLASS = 1


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``m[true, predicted]`` as a ``num_classes × num_classes`` int64 matrix.

    >>> confusion_matrix(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 1]), 2).tolist()
    [[1, 1], [1, 1]]
    """
    idx = np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(predicted, dtype=np.int64)
    counts = np.bincount(idx, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


@dataclass(frozen=True)
class BinaryCounts:
    """The binary confusion matrix (class 1 positive); counts may be noisy floats."""

    tn: float
    fp: float
    fn: float
    tp: float

    @classmethod
    def of(cls, matrix: np.ndarray) -> BinaryCounts:
        """From a 2 × 2 matrix ``m[true, predicted]`` (negative entries count as 0)."""
        m = np.clip(np.asarray(matrix, dtype=np.float64), 0.0, None)
        if m.shape != (2, 2):
            raise ValueError(f"a binary confusion matrix is 2 x 2; got shape {m.shape}")
        return cls(tn=float(m[0, 0]), fp=float(m[0, 1]), fn=float(m[1, 0]), tp=float(m[1, 1]))

    @property
    def sensitivity(self) -> float | None:
        """tp / (tp + fn)."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float | None:
        """tn / (tn + fp)."""
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def precision(self) -> float | None:
        """tp / (tp + fp)."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def f1(self) -> float | None:
        """2tp / (2tp + fp + fn).

        >>> BinaryCounts(tn=5, fp=1, fn=2, tp=2).f1
        0.5714285714285714
        """
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def json(self) -> dict[str, float | None]:
        """The four rates, by name (``None``: undefined)."""
        return {
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "precision": self.precision,
            "f1": self.f1,
        }

    def counts_json(self) -> dict[str, float]:
        """``{"tn", "fp", "fn", "tp"}``."""
        return {"tn": self.tn, "fp": self.fp, "fn": self.fn, "tp": self.tp}


@dataclass(frozen=True)
class CountMetrics:
    """What a confusion matrix says: size, accuracy, balanced accuracy, class recalls and,
    for two classes, the binary counts."""

    num_examples: float
    accuracy: float | None
    balanced_accuracy: float | None
    class_recall: tuple[float | None, ...]
    binary: BinaryCounts | None


def count_metrics(matrix: np.ndarray | Sequence[Sequence[float]]) -> CountMetrics:
    """Metrics of a (possibly noisy) square confusion matrix ``m[true, predicted]``.

    Negative entries count as 0; a class with no sample has recall ``None`` and is left
    out of the balanced accuracy.

    >>> r = count_metrics([[3, 1], [0, 4]])
    >>> r.accuracy, r.balanced_accuracy, r.class_recall
    (0.875, 0.875, (0.75, 1.0))
    """
    m = np.clip(np.asarray(matrix, dtype=np.float64), 0.0, None)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"a confusion matrix is square; got shape {m.shape}")
    n = float(m.sum())
    rows = m.sum(axis=1)
    recalls = tuple(_ratio(m[c, c], rows[c]) for c in range(m.shape[0]))
    present = [r for r in recalls if r is not None]
    return CountMetrics(
        num_examples=n,
        accuracy=_ratio(float(np.trace(m)), n),
        balanced_accuracy=float(np.mean(present)) if present else None,
        class_recall=recalls,
        binary=BinaryCounts.of(m) if m.shape == (2, 2) else None,
    )
