"""Local training loop (plain SGD or Opacus DP-SGD), independent of Flower."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader


@dataclass(frozen=True)
class TrainResult:
    """What one local training call did."""

    mean_loss: float
    steps: int
    examples_seen: int


def train_epochs(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    device: torch.device,
    criterion: Callable[..., Any] | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    batch_transform: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    | None = None,
    after_backward: Callable[[torch.Tensor], None] | None = None,
    loss_fn: nn.Module | None = None,
    max_steps: int | None = None,
    clip_norm: float | None = None,
) -> TrainResult:
    """Train ``model`` for ``epochs`` passes over ``loader`` with ``loss_fn`` (default
    cross-entropy; :func:`fedsim.tasks.loss_module` gives the task's).

    ``batch_transform`` (e.g. adversarial examples, :mod:`fedsim.robustness.training`) maps
    each non-empty batch ``(x, y)`` to the batch actually trained on, of the same size.

    Empty Poisson batches (possible with DP sampling) still make a forward/backward pass and
    an optimizer step, so that noise is added and the accountant counts the step, as
    DP-SGD requires. A given ``criterion`` (Opacus' ghost-clipping loss wrapper) is used
    for every batch, empty ones included (its per-sample loss is then empty and the step
    adds noise alone); without one, ``loss_fn``, and an empty batch gets a zero loss.
    ``clip_norm`` (``client.max_grad_norm``, plain training only) clips each batch's
    gradient norm before the step. With ``max_steps`` (``client.local_steps``) the loader
    is walked as often as needed for exactly that many steps, ``epochs`` ignored;
    ``on_epoch_end`` follows each pass.
    ``on_epoch_end(epoch)`` (0-based) is called after each epoch, e.g. to take a VoG
    checkpoint. ``after_backward(y)`` is called with each batch's labels after the backward
    pass and before the optimizer step (the privacy audit sets its canaries' per-sample
    gradients there); records with a negative label (the audit's canaries) are then given
    label 0 for the loss, and left out of the reported mean loss.
    """
    model.train()
    wrapped = criterion is not None
    if criterion is None:
        criterion = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    total_loss, total_examples, steps = 0.0, 0, 0
    if max_steps is not None:
        epochs = math.ceil(max_steps / max(1, len(loader)))
    for epoch in range(epochs):
        for x, y in loader:
            if max_steps is not None and steps >= max_steps:
                break
            x, y = x.to(device), y.to(device)
            if batch_transform is not None and len(y):
                x, y = batch_transform(x, y)
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            labels = y.clamp(min=0) if after_backward is not None else y
            loss = criterion(logits, labels) if len(y) or wrapped else logits.sum() * 0.0
            loss.backward()
            if after_backward is not None:
                after_backward(y)
            if clip_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            optimizer.step()
            steps += 1
            real = int((y >= 0).sum()) if after_backward is not None else len(y)
            if real:
                total_loss += float(loss.detach()) * real
                total_examples += real
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    mean = total_loss / total_examples if total_examples else math.nan
    return TrainResult(mean_loss=mean, steps=steps, examples_seen=total_examples)
