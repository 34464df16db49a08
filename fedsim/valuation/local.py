"""A client's per-sample scores of its own data, and pruning by them.

Glue between the training loop and the pure score functions of
:mod:`fedsim.valuation.scores`: :class:`CheckpointCollector` keeps the VoG input
gradients taken at the ends of local epochs (only within one round; nothing survives
the round), :func:`sample_scores` computes any metric batched on a *plain* model copy,
:func:`prune_indices` ranks samples and picks the ones to drop.

Pruning is local: the ranking never leaves the client and needs no DP release. What the
federation sees afterwards is only the DP-SGD model trained on the kept samples.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedsim.config import PruneSide, ScoreMetric

#: Samples per batch when scoring (memory, not results: scores are per sample).
SCORE_BATCH = 256


def _batches(n: int, size: int = SCORE_BATCH) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


class CheckpointCollector:
    """Input gradients of the true-class logit of every sample at each checkpoint (VoG).

    Parameters
    ----------
    x, y
        The client's samples (``(N, C, H, W)`` float, ``(N,)`` int).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.grads: list[torch.Tensor] = []

    def record(self, model: nn.Module) -> None:
        """Take one checkpoint with ``model`` (a plain module, left unchanged)."""
        from fedsim.valuation.scores import true_logit_input_grad

        was_training = model.training
        model.eval()
        parts = [true_logit_input_grad(model, self.x[s], self.y[s]) for s in _batches(len(self.x))]
        model.train(was_training)
        self.grads.append(torch.cat(parts) if parts else self.x.new_zeros(self.x.shape))

    def vog(self) -> np.ndarray:
        """VoG of every sample over the checkpoints taken (needs at least 2)."""
        from fedsim.valuation.scores import vog

        return vog(self.grads).detach().cpu().numpy().astype(np.float64)


def sample_scores(
    metric: ScoreMetric,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sigma: float = 1.0,
    checkpoints: CheckpointCollector | None = None,
) -> np.ndarray:
    """Raw (unnormalised) per-sample scores of ``metric`` for ``(x, y)``.

    ``model`` must be a plain module (never Opacus-wrapped). ``sigma`` is the DP-SGD
    noise multiplier (PLIS divides by σ²). ``vog`` reads the ``checkpoints`` instead of
    the model.
    """
    if metric == "vog":
        if checkpoints is None:
            raise ValueError("metric 'vog' needs the checkpoints of the round")
        return checkpoints.vog()
    was_training = model.training
    model.eval()
    out = []
    for s in _batches(len(x)):
        xb, yb = x[s], y[s]
        if metric == "loss":
            with torch.no_grad():
                part = nn.functional.cross_entropy(model(xb), yb, reduction="none")
        elif metric == "grad_norm":
            from fedsim.valuation import scores

            part = scores.grad_norm_scores(model, xb, yb)
        elif metric == "plis":
            from fedsim.valuation import scores

            part = scores.plis(model, xb, yb, sigma=sigma)
        else:
            raise ValueError(f"unknown metric {metric!r}; valid: vog, plis, loss, grad_norm")
        out.append(part.detach().cpu())
    model.train(was_training)
    if not out:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(out).numpy().astype(np.float64)


def prune_indices(scores: np.ndarray, fraction: float, side: PruneSide) -> np.ndarray:
    """Indices (sorted) of the ``round(fraction · n)`` samples to drop.

    ``highest`` drops the largest scores, ``lowest`` the smallest; ties are broken by
    index (stable sort), NaN scores rank as the highest.

    >>> prune_indices(np.array([0.1, 0.9, 0.5, 0.7]), 0.5, "highest").tolist()
    [1, 3]
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1); got {fraction}")
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=np.inf)
    k = int(np.floor(fraction * len(s) + 0.5))
    order = np.argsort(-s if side == "highest" else s, kind="stable")
    return np.sort(order[:k])
