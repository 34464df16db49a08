"""What a model's outputs mean: the training loss and the evaluation of each task kind.

A classification model outputs logits (cross-entropy; accuracy, and ROC AUC for two
classes). A regression model outputs one pre-activation ``g`` per record and predicts
``ŷ = sigmoid(g)`` in (0, 1), the range of the targets (SecProbe's regression network,
Zhao et al., IEEE TIFS 2020, Eq. 8): trained on the squared error, evaluated by the mean
relative error and SecProbe's clipped accuracy score.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fedsim.data.types import TaskKind

__all__ = ["SigmoidSquaredError", "loss_module", "predict"]


class SigmoidSquaredError(nn.Module):
    """``(sigmoid(g) − y)²`` per record, reduced by ``reduction`` (``mean``, ``sum``,
    ``none``; a settable attribute, as Opacus' ghost clipping requires of a criterion)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, outputs: Tensor, target: Tensor) -> Tensor:
        """The loss of outputs ``(B, 1)`` against targets ``(B,)``."""
        err = (torch.sigmoid(outputs.reshape(-1)) - target.reshape(-1).to(outputs.dtype)) ** 2
        if self.reduction == "none":
            return err
        return err.sum() if self.reduction == "sum" else err.mean()


def loss_module(task: TaskKind) -> nn.Module:
    """A fresh training criterion for ``task`` (``reduction="mean"``)."""
    return SigmoidSquaredError() if task == "regression" else nn.CrossEntropyLoss()


def predict(outputs: Tensor, task: TaskKind) -> Tensor:
    """Regression predictions ``sigmoid(g)`` ``(B,)``, or the argmax class ``(B,)``."""
    if task == "regression":
        return torch.sigmoid(outputs.reshape(-1))
    return outputs.argmax(dim=1)
