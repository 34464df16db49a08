"""FGSM: one signed-gradient step of size ε (Goodfellow, Shlens, Szegedy, ICLR 2015)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fedsim.robustness.base import Attack, input_gradient, register


@register
class FGSM(Attack):
    """``x + ε · sign(∇ₓ loss)``, clamped to [0, 1]. Deterministic (ignores the generator)."""

    name = "fgsm"

    def _perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> Tensor:
        return x + self.params.epsilon * input_gradient(model, x, y).sign()
