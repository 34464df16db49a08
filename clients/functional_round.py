"""A client's local training with SecProbe's functional mechanism (``client.mechanism:
functional``), independent of Flower and Opacus.

Each epoch walks the client's data in disjoint batches (a seeded shuffle of positions, so
the batch of every record is data-independent). For each batch the output layer's
Taylor polynomial (:mod:`fedsim.privacy.functional`) is computed from the hidden
activations of the *received* hidden weights, Laplace noise of scale ``Δ/ε_epoch`` is
added to every coefficient, and the output layer takes one SGD step on the perturbed
batch objective (divided by the public batch size). The hidden layer does not train.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch.utils.data import DataLoader

from fedsim.data.types import TaskKind
from fedsim.privacy.functional import (
    FunctionalPlan,
    augment,
    coefficients,
    polynomial_gradient,
)


@dataclass(frozen=True)
class FunctionalResult:
    """What one functional-mechanism round did."""

    steps: int
    examples_seen: int


def train_functional(
    model: torch.nn.Module,
    loader: DataLoader,
    plan: FunctionalPlan,
    task: TaskKind,
    *,
    lr: float,
    momentum: float,
    noise: torch.Generator,
    device: torch.device,
) -> FunctionalResult:
    """Train ``model``'s output layer on the perturbed polynomials of ``loader``'s batches.

    ``loader`` yields disjoint batches covering the data once per epoch (no Poisson
    sampling); ``noise`` draws the Laplace noise.
    """
    head = model.head
    assert isinstance(head, torch.nn.Linear)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum)
    outputs = head.out_features
    # declared by a functional_head model (fedsim.models.SecProbeMLP)
    features = cast(Callable[[torch.Tensor], torch.Tensor], model.features)
    steps = seen = 0
    model.eval()  # no dropout/normalisation in a functional-head model; features only
    for _ in range(plan.epochs_per_round):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                h = augment(features(x))
                poly = coefficients(h, y, task, outputs).perturbed(plan.noise_scale, noise)
                weights = torch.cat([head.weight, head.bias[:, None]], dim=1)
                grad = polynomial_gradient(poly, weights) / len(y)
            head.weight.grad = grad[:, :-1].to(head.weight.dtype)
            head.bias.grad = grad[:, -1].to(head.bias.dtype)
            optimizer.step()
            steps += 1
            seen += len(y)
    return FunctionalResult(steps=steps, examples_seen=seen)
