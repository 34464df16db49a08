"""SecProbe's functional mechanism (FM) on the output layer: pure math over tensors.

Zhao et al. (IEEE TIFS 2020, Sec. III-C) protect a participant's training data with the
functional mechanism (Zhang et al., VLDB 2012): the loss of a batch ``S`` is replaced by
its second-order Taylor polynomial in ``g = h·w`` around ``g = 0``, where ``h ∈ [0, 1]^b``
are the hidden activations (clipped ReLU) and ``w`` the output layer's weights, and
Laplace noise of scale ``Δ/ε`` is added to every coefficient of that polynomial.

- Regression, ``(σ(g) − y)²`` with ``y ∈ [0, 1]`` (Eq. 12):
  ``y² − y + ¼ + (1 − 2y)/4 · g + g²/16``.
- Classification, binary cross-entropy of a sigmoid per output (Eq. 17):
  ``log 2 + (½ − y_j)·g_j + g_j²/8`` for each of the ``M`` outputs, ``y_j ∈ {0, 1}``.

Per batch the coefficients of the weights of output ``j`` are the linear vector
``Σ_i a_ij h_i`` (``a = (1 − 2y)/4`` or ``½ − y_j``) and the quadratic matrix
``c · Σ_i h_i h_iᵀ`` (``c = 1/16`` or ``1/8``); the constant term does not depend on the
weights and is not released. One record contributes at most ``b/4 + b²/16`` (regression)
or ``M(b/2 + b²/8)`` (classification) in L1 norm, so replacing it moves the coefficients
by at most ``Δ = b/2 + b²/8`` or ``M(b + b²/4)`` (Lemmas 3 and 4). fedsim treats the
output layer's bias as one more unit with activation 1, so ``b`` is the number of hidden
units plus one.

What the guarantee covers
-------------------------
The released noisy coefficients of a batch are ε-DP with respect to replacing one record
of that batch (Laplace mechanism, L1 sensitivity Δ). They depend on the data only through
the batch and the hidden activations ``h``; fedsim keeps the hidden layer at the weights
the client received (public to it), so a batch's coefficients do not depend on any other
batch, the batches of an epoch are disjoint (parallel composition: ε per epoch) and the
output layer's SGD on the noisy polynomials is post-processing. The paper also trains the
hidden layer through the perturbed objective; but the noise is added to coefficient
*values*, so the gradient with respect to the hidden weights is the unperturbed data
gradient (``tests/test_functional_mechanism.py`` shows it) and the next batch's
coefficients depend on it: no ε covers that, and fedsim does not offer it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fedsim.config import Config
from fedsim.data.types import TaskKind
from fedsim.privacy.accounting import FunctionalMechanism

__all__ = [
    "FunctionalPlan",
    "Polynomial",
    "augment",
    "coefficients",
    "plan_functional",
    "polynomial_gradient",
    "polynomial_loss",
    "sensitivity",
    "taylor_constant",
]

#: Quadratic factor ``c`` of the Taylor polynomial in ``g`` per task.
_QUADRATIC = {"regression": 1.0 / 16.0, "classification": 1.0 / 8.0}


@dataclass(frozen=True)
class Polynomial:
    """The coefficients of one batch's objective in the output layer's weights.

    Attributes
    ----------
    linear
        ``(M, b)``: row ``j`` multiplies output ``j``'s weights ``w_j``.
    quadratic
        ``(M, b, b)``: the objective has ``w_jᵀ Q_j w_j`` for each output.
    """

    linear: Tensor
    quadratic: Tensor

    def perturbed(self, scale: float, generator: torch.Generator) -> Polynomial:
        """A copy with independent Laplace(``scale``) noise on every coefficient."""
        return Polynomial(
            self.linear + laplace(self.linear.shape, scale, generator, self.linear),
            self.quadratic + laplace(self.quadratic.shape, scale, generator, self.quadratic),
        )


def augment(h: Tensor) -> Tensor:
    """Hidden activations ``(B, b)`` with a column of ones appended (the output bias)."""
    return torch.cat([h, torch.ones(h.shape[0], 1, dtype=h.dtype, device=h.device)], dim=1)


def _linear_factors(y: Tensor, task: TaskKind, outputs: int) -> Tensor:
    """``a_ij`` of each record and output, ``(B, M)``."""
    if task == "regression":
        if outputs != 1:
            raise ValueError(f"regression has one output; got {outputs}")
        return ((1.0 - 2.0 * y.to(torch.float64)) / 4.0).reshape(-1, 1)
    onehot = torch.nn.functional.one_hot(y.long(), outputs).to(torch.float64)
    return 0.5 - onehot


def coefficients(h: Tensor, y: Tensor, task: TaskKind, outputs: int) -> Polynomial:
    """The polynomial of a batch with augmented activations ``h`` ``(B, b)`` and targets ``y``.

    ``y`` holds regression targets in [0, 1] (``task == "regression"``, ``outputs == 1``)
    or class labels ``0..outputs-1``. Computed in float64.
    """
    hd = h.to(torch.float64)
    linear = _linear_factors(y, task, outputs).T @ hd
    gram = _QUADRATIC[task] * (hd.T @ hd)
    return Polynomial(linear, gram.expand(outputs, *gram.shape).clone())


def taylor_constant(y: Tensor, task: TaskKind, outputs: int) -> Tensor:
    """The batch's constant term (not released: it does not depend on the weights)."""
    yd = y.to(torch.float64)
    if task == "regression":
        return (yd * yd - yd + 0.25).sum()
    return torch.full((), math.log(2.0) * outputs * len(y), dtype=torch.float64)


def polynomial_loss(poly: Polynomial, weights: Tensor) -> Tensor:
    """``Σ_j linear_j·w_j + w_jᵀ Q_j w_j`` for output weights ``(M, b)`` (bias last)."""
    w = weights.to(torch.float64)
    quad = torch.einsum("mi,mij,mj->", w, poly.quadratic, w)
    return (poly.linear * w).sum() + quad


def polynomial_gradient(poly: Polynomial, weights: Tensor) -> Tensor:
    """Gradient of :func:`polynomial_loss` with respect to ``weights`` ``(M, b)``."""
    w = weights.to(torch.float64)
    sym = poly.quadratic + poly.quadratic.transpose(1, 2)
    return poly.linear + torch.einsum("mij,mj->mi", sym, w)


def sensitivity(units: int, outputs: int, task: TaskKind) -> float:
    """Δ of the coefficients under replace-one, for ``units`` augmented activations in [0, 1].

    Twice one record's largest L1 contribution: regression ``units/2 + units²/8``
    (Lemma 3), classification ``outputs · (units + units²/4)`` (Lemma 4).

    >>> sensitivity(80, 1, "regression"), sensitivity(128, 10, "classification")
    (840.0, 42240.0)
    """
    if units < 1 or outputs < 1:
        raise ValueError(f"need units >= 1 and outputs >= 1; got {units}, {outputs}")
    if task == "regression":
        return units / 2.0 + units**2 / 8.0
    return outputs * (units + units**2 / 4.0)


def laplace(shape: torch.Size, scale: float, generator: torch.Generator, like: Tensor) -> Tensor:
    """Laplace(0, ``scale``) noise of ``shape``: the difference of two exponentials."""
    first = torch.empty(shape, dtype=torch.float64, device=like.device)
    second = torch.empty(shape, dtype=torch.float64, device=like.device)
    first.exponential_(generator=generator)
    second.exponential_(generator=generator)
    return scale * (first - second)


@dataclass(frozen=True)
class FunctionalPlan:
    """The functional mechanism's schedule for one client: ε per epoch and its noise."""

    epsilon_per_epoch: float
    epochs_per_round: int
    sensitivity: float

    @property
    def noise_scale(self) -> float:
        """Laplace scale ``Δ/ε`` of every coefficient."""
        return self.sensitivity / self.epsilon_per_epoch

    def round_event(self) -> FunctionalMechanism:
        """The accounting event of one local round: one ε-DP release per epoch."""
        return FunctionalMechanism(self.epsilon_per_epoch, self.epochs_per_round)


def plan_functional(cfg: Config, units: int, outputs: int, task: TaskKind) -> FunctionalPlan:
    """ε per epoch: ``dp.epsilon`` split evenly over every planned epoch (sequential
    composition across epochs, as the paper accounts), for ``units`` augmented hidden
    activations and ``outputs`` outputs.

    >>> from fedsim.config import from_dict
    >>> cfg = from_dict({"rounds": 4, "client": {"local_epochs": 2}, "dp": {"epsilon": 4}})
    >>> plan_functional(cfg, 9, 1, "regression").epsilon_per_epoch
    0.5
    """
    if cfg.dp.epsilon is None:
        raise ValueError("client.mechanism 'functional' needs dp.epsilon")
    epochs = cfg.client.local_epochs
    return FunctionalPlan(
        epsilon_per_epoch=cfg.dp.epsilon / (cfg.rounds * epochs),
        epochs_per_round=epochs,
        sensitivity=sensitivity(units, outputs, task),
    )
