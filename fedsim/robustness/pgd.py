"""Projected gradient descent (Madry et al., ICLR 2018) in L∞ and L2.

Start at a uniformly random point of the ε-ball (drawn from the passed generator), take
``steps`` ascent steps of the cross-entropy (signed gradient for L∞, normalised gradient
for L2), projecting into the ε-ball and [0, 1] after each.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fedsim.robustness.base import Attack, input_gradient, project, register


def _uniform(shape: torch.Size, generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


@register
class PGDLinf(Attack):
    """L∞ PGD with a random start in the ε-cube."""

    name = "pgd"
    norm = "linf"
    stochastic = True

    def _perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> Tensor:
        eps, alpha = self.params.epsilon, self.params.step_size
        x_adv = project(x + (2 * _uniform(x.shape, generator, x.device) - 1) * eps, x, eps, "linf")
        for _ in range(self.params.steps):
            x_adv = project(x_adv + alpha * input_gradient(model, x_adv, y).sign(), x, eps, "linf")
        return x_adv


@register
class PGDL2(Attack):
    """L2 PGD with a random start uniform in the L2 ε-ball."""

    name = "pgd_l2"
    norm = "l2"
    stochastic = True

    def _perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> Tensor:
        eps, alpha = self.params.epsilon, self.params.step_size
        n, d = len(x), x[0].numel()
        direction = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
        direction = direction / direction.flatten(1).norm(dim=1).view(n, *([1] * (x.dim() - 1)))
        radius = eps * _uniform(torch.Size([n]), generator, x.device) ** (1.0 / d)
        x_adv = project(x + direction * radius.view(n, *([1] * (x.dim() - 1))), x, eps, "l2")
        for _ in range(self.params.steps):
            g = input_gradient(model, x_adv, y)
            g = g / (g.flatten(1).norm(dim=1).view(n, *([1] * (x.dim() - 1))) + 1e-12)
            x_adv = project(x_adv + alpha * g, x, eps, "l2")
        return x_adv
