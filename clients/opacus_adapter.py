"""The one place that talks to Opacus.

:func:`make_private` wraps a model, optimizer and loader for DP-SGD and returns a named
:class:`PrivateTraining`; :func:`plain_state_dict` hands back a state_dict without Opacus'
``_module.`` prefix. No other module touches ``_module`` or Opacus' return tuples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from opacus import GradSampleModule, PrivacyEngine
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.utils.data import DataLoader


@dataclass(frozen=True)
class PrivateTraining:
    """Model, optimizer and Poisson loader prepared for DP-SGD, plus the engine (accountant)."""

    model: nn.Module
    optimizer: DPOptimizer
    loader: DataLoader
    engine: PrivacyEngine

    def steps_taken(self) -> int:
        """DP-SGD steps the accountant recorded since :func:`make_private`."""
        return sum(int(steps) for (_sigma, _q, steps) in self.engine.accountant.history)

    def accounted_schedule(self) -> tuple[float, float]:
        """(σ, q) the accountant recorded (raises if nothing was recorded)."""
        history = self.engine.accountant.history
        if not history:
            raise RuntimeError("no DP-SGD step was recorded")
        sigma, q, _ = history[-1]
        return float(sigma), float(q)

    def noise_std(self) -> float:
        """Std of the Gaussian noise added to the *summed* clipped gradients of a step.

        ``σ · √(Σ S_j²)`` for per-layer clipping, ``σ · S`` for flat: Opacus' per-layer
        optimizer stores ``√(Σ S_j²)`` as its ``max_grad_norm``.
        """
        return float(self.optimizer.noise_multiplier * self.optimizer.max_grad_norm)


def make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    *,
    noise_multiplier: float,
    max_grad_norm: float | list[float],
    noise_generator: torch.Generator | None,
) -> PrivateTraining:
    """Attach DP-SGD (Poisson sampling) to fresh training objects.

    A float ``max_grad_norm`` is flat clipping; a list is Opacus' per-layer clipping, one
    bound per trainable parameter tensor (in ``model.parameters()`` order), and the noise
    std becomes ``noise_multiplier · √(Σ S_j²)``. ``loader`` must carry a seeded
    ``generator``: Opacus' Poisson sampler uses it. The returned accountant starts empty;
    the caller's ledger holds the history.
    """
    if isinstance(max_grad_norm, list):
        trainable = sum(1 for p in model.parameters() if p.requires_grad)
        if len(max_grad_norm) != trainable:
            raise ValueError(
                f"per-layer max_grad_norm needs one bound per trainable tensor ({trainable}); "
                f"got {len(max_grad_norm)}"
            )
        clipping = "per_layer"
    else:
        clipping = "flat"
    engine = PrivacyEngine(accountant="rdp")
    wrapped, dp_optimizer, dp_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        poisson_sampling=True,
        noise_generator=noise_generator,
        clipping=clipping,
    )
    return PrivateTraining(model=wrapped, optimizer=dp_optimizer, loader=dp_loader, engine=engine)


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU state_dict of ``model`` without Opacus' wrapper prefix."""
    inner = model._module if isinstance(model, GradSampleModule) else model
    return {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()}


@contextlib.contextmanager
def plain_view(model: nn.Module) -> Iterator[nn.Module]:
    """The plain module inside ``model`` with Opacus' per-sample-gradient hooks disabled.

    For computing input gradients (adversarial examples) during DP-SGD without touching
    ``grad_sample``: the hooks are switched off for the block and switched back on after.
    A non-Opacus model is yielded as is.
    """
    if not isinstance(model, GradSampleModule):
        yield model
        return
    was_enabled = model.hooks_enabled
    model.disable_hooks()
    try:
        yield model._module
    finally:
        if was_enabled:
            model.enable_hooks()
