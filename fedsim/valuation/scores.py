"""Per-sample data-valuation scores: VoG, PLIS and the loss / gradient-norm baselines.

Pure functions over a plain ``nn.Module`` and a batch ``(x, y)``: nothing is trained, the
model's parameters and mode are left as they were (no ``.grad`` is written to them).
Every score of a sample depends only on that sample (fedsim's models use GroupNorm, never
BatchNorm), so a batch gives the same values as a one-sample-at-a-time loop; the tests
check exactly that. Never pass an Opacus-wrapped module: ``torch.func`` fails on
``GradSampleModule``; build a plain copy (``build_model`` + ``load_state_dict``).

Scores follow Usynin, Rueckert and Kaissis, "Incentivising the federation:
gradient-based metrics for data selection and valuation in private decentralised
training" (VoG after Agarwal, D'souza and Hooker, "Estimating Example Difficulty using
Variance of Gradients", CVPR 2022). Higher means more difficult / atypical for all four.
Their names and declared properties are in :mod:`fedsim.valuation.registry`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap


def _check_batch(x: Tensor, y: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W); got {tuple(x.shape)}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"y must have shape ({len(x)},); got {tuple(y.shape)}")


def true_logit_input_grad(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Gradient of each sample's true-class pre-softmax logit with respect to its input.

    Parameters
    ----------
    model
        A plain model returning logits ``(N, num_classes)``.
    x
        Images ``(N, C, H, W)``.
    y
        Integer labels ``(N,)``.

    Returns
    -------
    Tensor
        ``(N, C, H, W)``: row ``i`` is ``∂ logit_{y_i}(x_i) / ∂ x_i`` (detached).
    """
    _check_batch(x, y)
    inputs = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(inputs)
        true = logits.gather(1, y.long().view(-1, 1)).sum()
        (g,) = torch.autograd.grad(true, inputs)
    return g.detach()


def vog(input_grads: Sequence[Tensor]) -> Tensor:
    """Variance of Gradients from input gradients taken at ``K`` checkpoints.

    Each checkpoint's gradient is averaged over channels; the per-pixel standard deviation
    over the ``K`` checkpoints (population form, ``1/K``) is then averaged over pixels.

    Parameters
    ----------
    input_grads
        ``K >= 2`` tensors of shape ``(N, C, H, W)`` (e.g. from
        :func:`true_logit_input_grad` at the ends of local epochs or rounds), same samples
        in the same order.

    Returns
    -------
    Tensor
        ``(N,)`` VoG scores (raw, not normalised; see :func:`classwise_minmax`).
    """
    if len(input_grads) < 2:
        raise ValueError(f"vog needs gradients from at least 2 checkpoints; got {len(input_grads)}")
    shapes = {tuple(g.shape) for g in input_grads}
    if len(shapes) != 1 or len(next(iter(shapes))) != 4:
        raise ValueError(f"vog needs K tensors of one shape (N, C, H, W); got shapes {shapes}")
    stacked = torch.stack([g.detach().mean(dim=1) for g in input_grads])  # (K, N, H, W)
    return stacked.std(dim=0, unbiased=False).mean(dim=(1, 2))


def _params_and_buffers(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    frozen = {k: v.detach() for k, v in model.named_parameters() if not v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    return params, {**frozen, **buffers}


def _sample_loss_fn(model: nn.Module, rest: dict[str, Tensor]):  # type: ignore[no-untyped-def]
    """``loss(params, x_i, y_i)``: cross-entropy of one sample under ``params``."""

    def loss(params: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        logits = functional_call(model, {**params, **rest}, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, yi.long().view(1))

    return loss


def loss_scores(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per-sample cross-entropy loss, shape ``(N,)``."""
    _check_batch(x, y)
    with torch.no_grad():
        logits = model(x)
        return nn.functional.cross_entropy(logits, y.long(), reduction="none").detach()


def grad_norm_scores(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """L2 norm of each sample's (unclipped) loss gradient over all trainable parameters.

    Computed with ``torch.func.vmap`` over ``torch.func.grad``; shape ``(N,)``.
    """
    _check_batch(x, y)
    params, rest = _params_and_buffers(model)
    loss = _sample_loss_fn(model, rest)

    def sq_norm(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        g = grad(loss)(p, xi, yi)
        return sum((t**2).sum() for t in g.values())  # type: ignore[return-value]

    return vmap(sq_norm, in_dims=(None, 0, 0))(params, x.detach(), y).sqrt().detach()


def plis(model: nn.Module, x: Tensor, y: Tensor, sigma: float = 1.0) -> Tensor:
    """PLIS: spectral norm of the input gradient of the per-sample privacy loss.

    ``PL(x) = ‖∇θ ℓ(x, y)‖² / σ²`` (the squared, unclipped per-sample gradient norm over
    all trainable parameters, relative to the DP noise multiplier ``σ``). Its gradient with
    respect to ``x`` is averaged over channels, giving an ``H × W`` matrix per sample,
    whose largest singular value is the score. Batched with ``torch.func`` (``vmap`` of
    ``grad`` of a function that itself takes ``grad``): a double backward per sample.

    Parameters
    ----------
    model
        A plain model (not Opacus-wrapped).
    x, y
        Images ``(N, C, H, W)`` and labels ``(N,)``.
    sigma
        Noise multiplier ``σ > 0``; scales every score by ``1/σ²`` (rankings do not change).

    Returns
    -------
    Tensor
        ``(N,)`` PLIS scores.
    """
    _check_batch(x, y)
    if not sigma > 0:
        raise ValueError(f"plis: sigma must be > 0; got {sigma}")
    params, rest = _params_and_buffers(model)
    loss = _sample_loss_fn(model, rest)

    def privacy_loss(xi: Tensor, p: dict[str, Tensor], yi: Tensor) -> Tensor:
        g = grad(loss)(p, xi, yi)
        total: Tensor = sum((t**2).sum() for t in g.values())  # type: ignore[assignment]
        return total / sigma**2

    def one(xi: Tensor, p: dict[str, Tensor], yi: Tensor) -> Tensor:
        return grad(privacy_loss)(xi, p, yi).mean(dim=0)  # (H, W)

    maps = vmap(one, in_dims=(0, None, 0))(x.detach(), params, y).detach()
    # the SVD runs batched outside vmap: under vmap it is ~20x slower on CPU
    return torch.linalg.matrix_norm(maps, ord=2)


def classwise_minmax(scores: Tensor, labels: Tensor) -> Tensor:
    """Min-max normalise ``scores`` to [0, 1] within each class of ``labels``.

    For display and ranking only: min-max values have unbounded sensitivity, so they must
    never be released under DP. A class whose scores are all equal maps to 0.

    Parameters
    ----------
    scores
        ``(N,)`` raw scores (finite).
    labels
        ``(N,)`` integer class labels.

    Returns
    -------
    Tensor
        ``(N,)`` float scores; in each class the minimum maps to 0 and the maximum to 1,
        and the order within a class is preserved.
    """
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(
            f"scores and labels must both have shape (N,); got {tuple(scores.shape)} and "
            f"{tuple(labels.shape)}"
        )
    out = torch.zeros_like(scores, dtype=torch.float32 if not scores.is_floating_point() else None)
    for c in torch.unique(labels):
        mask = labels == c
        s = scores[mask]
        lo, hi = s.min(), s.max()
        out[mask] = (s - lo) / (hi - lo) if hi > lo else torch.zeros_like(s)
    return out
