"""Central evaluation of a model on a data split (accuracy, loss; for binary tasks AUC and
the clinical metrics of :mod:`fedsim.clinical`; for regression the mean relative error and
SecProbe's accuracy score)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from fedsim.clinical import confusion_matrix
from fedsim.data import Split
from fedsim.records import EvalResult
from fedsim.selection import regression_utility
from fedsim.tasks import predict


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann–Whitney U, ties
    counted half). ``None`` when only one class is present.

    Tied scores share their average rank (:func:`scipy.stats.rankdata`); a NaN score
    ranks above every number and apart from other NaNs (in input order), as a stable
    sort would place it.

    >>> roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    >>> roc_auc(np.array([0.5, 0.5, 0.2, 0.9]), np.array([1, 0, 0, 1]))  # one tie: 3.5 of 4
    0.875
    >>> roc_auc(np.array([0.3, 0.7]), np.array([1, 1])) is None
    True
    """
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    scores = np.asarray(scores)
    nan = np.isnan(scores)
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[~nan] = rankdata(scores[~nan], method="average")
    ranks[nan] = np.count_nonzero(~nan) + np.arange(1, np.count_nonzero(nan) + 1)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@torch.no_grad()
def evaluate(
    model: nn.Module, split: Split, device: torch.device | str = "cpu", batch_size: int = 512
) -> EvalResult:
    """Accuracy, balanced accuracy (the mean recall of the classes present), mean
    cross-entropy loss and, for binary tasks, ROC AUC, each class's recall and the
    confusion matrix (sensitivity, specificity, precision, F1 with class 1 positive:
    :mod:`fedsim.clinical`), of ``model`` on ``split``.

    For regression targets (:attr:`Split.task`), see :func:`evaluate_regression`.
    """
    if split.task == "regression":
        return evaluate_regression(model, split, device, batch_size)
    model.eval()
    model.to(device)
    total_loss, correct = 0.0, 0
    positive_scores = []
    predicted = []
    for start in range(0, len(split), batch_size):
        # copies: the cached dataset arrays are read-only
        x = torch.tensor(split.x[start : start + batch_size], device=device)
        y = torch.tensor(split.y[start : start + batch_size], device=device)
        logits = model(x)
        total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        hits = logits.argmax(dim=1)
        correct += int((hits == y).sum())
        predicted.append(hits.cpu().numpy())
        if logits.shape[1] == 2:
            positive_scores.append(torch.softmax(logits, dim=1)[:, 1].cpu().numpy())
    n = len(split)
    auc = roc_auc(np.concatenate(positive_scores), split.y) if positive_scores else None
    recalls = class_recalls(np.concatenate(predicted) if predicted else np.empty(0), split.y)
    present = [r for r in recalls if r is not None]
    confusion = None
    if positive_scores:  # binary: tn, fp, fn, tp with class 1 positive (fedsim.clinical)
        matrix = confusion_matrix(np.concatenate(predicted), split.y, 2)
        confusion = (int(matrix[0, 0]), int(matrix[0, 1]), int(matrix[1, 0]), int(matrix[1, 1]))
    return EvalResult(
        accuracy=correct / n,
        loss=total_loss / n,
        auc=auc,
        num_examples=n,
        balanced_accuracy=float(np.mean(present)) if present else None,
        class_recall=tuple(recalls) if positive_scores else None,
        confusion=confusion,
    )


def class_recalls(predicted: np.ndarray, labels: np.ndarray) -> list[float | None]:
    """Recall of each class ``0..max(labels)`` (``None`` for a class with no sample).

    >>> class_recalls(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1]))
    [0.5, 1.0]
    """
    labels = np.asarray(labels)
    classes = int(labels.max()) + 1 if labels.size else 0
    out: list[float | None] = []
    for c in range(classes):
        mask = labels == c
        out.append(float(np.mean(predicted[mask] == c)) if mask.any() else None)
    return out


@torch.no_grad()
def evaluate_regression(
    model: nn.Module, split: Split, device: torch.device | str = "cpu", batch_size: int = 512
) -> EvalResult:
    """Mean relative error, mean squared error and SecProbe's accuracy score (``accuracy``:
    the mean of ``1 - min(1, |ŷ - y| / y)``) of ``model``'s predictions ``sigmoid(g)``."""
    model.eval()
    model.to(device)
    preds = []
    for start in range(0, len(split), batch_size):
        x = torch.tensor(split.x[start : start + batch_size], device=device)
        preds.append(predict(model(x), "regression").double().cpu().numpy())
    z = np.concatenate(preds) if preds else np.empty(0)
    y = split.y.astype(np.float64)
    n = len(split)
    return EvalResult(
        accuracy=regression_utility(z, y),
        loss=float(np.mean((z - y) ** 2)),
        num_examples=n,
        mre=float(np.mean(np.abs(z - y) / y)),
    )
