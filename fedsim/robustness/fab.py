"""FAB: fast adaptive boundary attack, L∞ (Croce & Hein, ICML 2020), simplified.

FAB looks for the *smallest* perturbation that changes the prediction. Each iteration it
linearises the classifier at the current point, picks the class whose linearised decision
boundary is closest (L∞ distance ``|f_k - f_y| / ‖∇(f_k - f_y)‖₁``), and moves to a convex
combination of the projections of the current point and of the original point onto that
hyperplane (bias towards the original point: ``α ≤ alpha_max``, overshoot ``eta``). After
each success it steps back towards the original (``beta``) to shrink the perturbation.

Simplifications against the paper (written here from the paper, not from any code): the
hyperplane projection ignores the [0, 1] box (the result is clamped afterwards) and there
is one start at the clean point (no random restarts), so the generator is unused.
For the fixed-budget evaluation the smallest adversarial point found is returned if its
L∞ norm is ≤ ε (otherwise the clean input); the contract's projection keeps it in the ball.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fedsim.robustness.base import DATA_MAX, DATA_MIN, Attack, perturbation_norm, register


def _jacobian(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Logits ``(B, K)`` and their input Jacobian ``(B, K, D)`` (one backward per class)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        rows = [
            torch.autograd.grad(logits[:, k].sum(), [x], retain_graph=k < logits.shape[1] - 1)[0]
            for k in range(logits.shape[1])
        ]
    return logits.detach(), torch.stack([r.flatten(1) for r in rows], dim=1)


@register
class FAB(Attack):
    """Untargeted L∞ FAB (minimum-norm attack, reported at the fixed budget ε)."""

    name = "fab"
    norm = "linf"
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9

    def _perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> Tensor:
        n = len(x)
        flat0 = x.flatten(1)
        rows = torch.arange(n, device=x.device)
        with torch.no_grad():
            wrong = model(x).argmax(dim=1) != y
        best = x.clone()
        best_norm = torch.where(wrong, 0.0, float("inf")).to(x.device)
        cur = flat0.clone()
        for _ in range(self.params.steps):
            logits, jac = _jacobian(model, cur.view_as(x))
            g_all = logits - logits[rows, y].unsqueeze(1)  # (B, K), < 0 if class y wins
            w_all = jac - jac[rows, y].unsqueeze(1)  # (B, K, D)
            dist = g_all.abs() / (w_all.abs().sum(dim=2) + 1e-12)
            dist[rows, y] = float("inf")
            k = dist.argmin(dim=1)
            g, w = g_all[rows, k], w_all[rows, k]
            w1 = w.abs().sum(dim=1) + 1e-12
            step_cur = -(g / w1).unsqueeze(1) * w.sign()
            g_orig = g + (w * (flat0 - cur)).sum(dim=1)
            step_orig = -(g_orig / w1).unsqueeze(1) * w.sign()
            n_cur = step_cur.abs().amax(dim=1)
            n_orig = step_orig.abs().amax(dim=1)
            alpha = (n_cur / (n_cur + n_orig + 1e-12)).clamp(0.0, self.alpha_max).unsqueeze(1)
            new = (1 - alpha) * (cur + self.eta * step_cur) + alpha * (flat0 + self.eta * step_orig)
            new = new.clamp(DATA_MIN, DATA_MAX)
            with torch.no_grad():
                adv = model(new.view_as(x)).argmax(dim=1) != y
            norm = perturbation_norm(new.view_as(x), x, "linf")
            better = adv & (norm < best_norm)
            best[better] = new.view_as(x)[better]
            best_norm = torch.where(better, norm, best_norm)
            back = (1 - self.beta) * flat0 + self.beta * new
            cur = torch.where(adv.unsqueeze(1), back, new).detach()
        keep = best_norm <= self.params.epsilon
        return torch.where(keep.view(-1, *([1] * (x.dim() - 1))), best, x)
