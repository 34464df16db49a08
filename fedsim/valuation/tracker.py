"""The stateful shell around :mod:`fedsim.valuation.scores`: one client's dataset, scored.

:class:`ScoreTracker` holds a client's images and labels and one *plain* model built with
:func:`fedsim.models.build_model`; every score is computed on that model after
``load_state_dict``, never on an Opacus-wrapped module. VoG checkpoints are accumulated
online (Welford: running mean and sum of squared deviations of the channel-averaged input
gradients), so memory is two ``(N, H, W)`` arrays whatever the number of checkpoints.
This running form serves the registry's checkpoint score (the one that
``needs_checkpoints``, VoG); ``tests/test_contracts.py`` checks that it equals that score's
:meth:`~fedsim.valuation.registry.Score.batch` over the same checkpoints. Every other score
is its registry object's ``batch`` under the current model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import Tensor

from fedsim.models import build_model
from fedsim.valuation.registry import METRICS, score_named
from fedsim.valuation.scores import true_logit_input_grad

logger = logging.getLogger(__name__)


def _as_tensor(a: np.ndarray | Tensor, dtype: torch.dtype) -> Tensor:
    t = torch.as_tensor(np.array(a)) if not isinstance(a, Tensor) else a
    return t.to(dtype)


class ScoreTracker:
    """Per-sample scores (VoG, PLIS, loss, grad_norm) of one dataset, computed in batches.

    Parameters
    ----------
    model_name, input_shape, num_classes
        As for :func:`fedsim.models.build_model`; one plain model is built once and
        reloaded from each state_dict given.
    x, y
        The client's images ``(N, C, H, W)`` (float, in [0, 1]) and labels ``(N,)``.
    batch_size
        Samples per batched pass (memory/speed trade-off only: results do not depend on
        it). PLIS and grad_norm hold one parameter-sized gradient per sample of a batch
        (plus PLIS' double-backward graph): about 0.2 GB for the cnn at 28×28 and 128
        samples, but several GB for resnet9/18 — use 8–16 there.
    sigma
        Noise multiplier used by PLIS (``PL = ‖∇θ ℓ‖² / σ²``); 1.0 for non-DP training.
    device
        Where scores are computed (default CPU).
    """

    def __init__(
        self,
        model_name: str,
        input_shape: tuple[int, int, int],
        num_classes: int,
        x: np.ndarray | Tensor,
        y: np.ndarray | Tensor,
        *,
        batch_size: int = 128,
        sigma: float = 1.0,
        device: torch.device | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.device = device or torch.device("cpu")
        self.x = _as_tensor(x, torch.float32)
        self.y = _as_tensor(y, torch.int64)
        if self.x.ndim != 4 or self.y.shape != (len(self.x),):
            raise ValueError(
                f"x must be (N, C, H, W) and y (N,); got {tuple(self.x.shape)} and "
                f"{tuple(self.y.shape)}"
            )
        self.batch_size = batch_size
        self.sigma = sigma
        # weights are loaded from each checkpoint; the seed only fixes the throwaway init
        self.model = build_model(model_name, input_shape, num_classes, seed=0)
        self.model = self.model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(True)
        self._count = 0
        self._mean: Tensor | None = None  # (N, H, W) float64
        self._m2: Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_checkpoints(self) -> int:
        """Number of VoG checkpoints recorded so far."""
        return self._count

    def load(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load a plain state_dict (no Opacus ``_module.`` prefix) into the scoring model."""
        wrapped = [k for k in state_dict if k.startswith("_module.")]
        if wrapped:
            raise ValueError(
                f"ScoreTracker needs a plain state_dict; got Opacus-wrapped key {wrapped[0]!r} "
                "(use clients.opacus_adapter.plain_state_dict)"
            )
        self.model.load_state_dict(dict(state_dict))

    def _batches(self) -> Iterable[tuple[Tensor, Tensor]]:
        for start in range(0, len(self), self.batch_size):
            end = start + self.batch_size
            yield self.x[start:end].to(self.device), self.y[start:end].to(self.device)

    def record_checkpoint(self, state_dict: Mapping[str, Tensor]) -> None:
        """Take one VoG checkpoint: input gradients of the true-class logit under ``state_dict``."""
        self.load(state_dict)
        grads = torch.cat(
            [
                true_logit_input_grad(self.model, xb, yb).mean(dim=1).cpu()
                for xb, yb in self._batches()
            ]
        ).double()
        self._count += 1
        if self._mean is None or self._m2 is None:
            self._mean, self._m2 = grads, torch.zeros_like(grads)
            return
        delta = grads - self._mean
        self._mean = self._mean + delta / self._count
        self._m2 = self._m2 + delta * (grads - self._mean)

    def vog(self) -> Tensor:
        """VoG of every sample over the recorded checkpoints, ``(N,)`` float32.

        Equals :func:`fedsim.valuation.scores.vog` of the checkpoints' input gradients.
        """
        if self._count < 2 or self._m2 is None:
            raise ValueError(f"VoG needs at least 2 checkpoints; {self._count} recorded")
        std = (self._m2 / self._count).clamp_min(0).sqrt()
        return std.mean(dim=(1, 2)).float()

    def reset_checkpoints(self) -> None:
        """Forget all VoG checkpoints."""
        self._count, self._mean, self._m2 = 0, None, None

    def vog_state(self) -> dict[str, np.ndarray]:
        """The VoG accumulator as arrays (to keep in a client's state between rounds)."""
        if self._mean is None or self._m2 is None:
            return {"count": np.zeros(1, dtype=np.int64)}
        return {
            "count": np.array([self._count], dtype=np.int64),
            "mean": self._mean.numpy().copy(),
            "m2": self._m2.numpy().copy(),
        }

    def load_vog_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore an accumulator saved by :meth:`vog_state` (for the same samples)."""
        count = int(np.asarray(state["count"]).reshape(-1)[0])
        if count == 0:
            self.reset_checkpoints()
            return
        mean = torch.from_numpy(np.asarray(state["mean"], dtype=np.float64).copy())
        if mean.shape != (len(self), *self.x.shape[2:]):
            raise ValueError(
                f"VoG state is for shape {tuple(mean.shape)}; this tracker has "
                f"{(len(self), *self.x.shape[2:])}"
            )
        self._count = count
        self._mean = mean
        self._m2 = torch.from_numpy(np.asarray(state["m2"], dtype=np.float64).copy())

    def scores(self, metric: str, state_dict: Mapping[str, Tensor] | None = None) -> Tensor:
        """Per-sample scores ``(N,)`` of ``metric`` (one of :data:`METRICS`).

        A score that ``needs_checkpoints`` (VoG) uses the recorded checkpoints
        (``state_dict`` is ignored); the others are computed under ``state_dict`` (or the
        last loaded one when ``None``).
        """
        score = score_named(metric)
        if score.needs_checkpoints:
            return self.vog()
        if state_dict is not None:
            self.load(state_dict)
        out = [
            score.batch((self.model,), xb, yb, sigma=self.sigma).cpu() for xb, yb in self._batches()
        ]
        return torch.cat(out) if out else torch.zeros(0)

    def all_scores(
        self, state_dict: Mapping[str, Tensor], metrics: Iterable[str] = METRICS
    ) -> dict[str, Tensor]:
        """Every requested metric under ``state_dict`` (checkpoint scores only if >= 2
        checkpoints exist)."""
        self.load(state_dict)
        return {
            m: self.scores(m)
            for m in metrics
            if not score_named(m).needs_checkpoints or self.num_checkpoints >= 2
        }
