"""Per-sample clipping thresholds of the three DP-SGD clipping variants (pure math).

The clipping study (Flower + Opacus, DP and Byzantine resilience) compares three ways to
bound each example's gradient under one overall bound ``S`` (``dp.max_grad_norm``):

- ``flat``: one bound ``S`` on the whole per-sample gradient (Abadi et al., 2016).
- ``per_layer_uniform``: each of the ``m`` trainable parameter tensors is clipped to
  ``S_j = S / √m``.
- ``per_layer_adaptive``: ``S_j ∝ M_j``, a typical per-sample gradient norm of tensor
  ``j``, rescaled so that ``√(Σ S_j²) = S`` (McMahan et al., "A General Approach to Adding
  Differential Privacy to Iterative Training Procedures", 2018, §per-layer clipping).

In all three the per-sample gradient has L2 norm at most ``√(Σ S_j²) = S``, so the
Gaussian noise of std ``σ·S`` gives the same guarantee and the same ε for the same σ:
the variant changes utility, never the accounting.

Where ``M_j`` comes from: :func:`per_tensor_grad_magnitudes` is run by the *server* on its
own validation split (public to the server, never a client's training data), with the
current global model, which every client receives anyway. The thresholds are therefore a
function of public data and of an already-released model: sending them to the clients
and clipping with them costs no privacy (post-processing), and no client spends ε on a
DP estimate of its own gradient norms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedsim.config import ClippingName

__all__ = [
    "ClippingName",
    "adaptive_thresholds",
    "flat_thresholds",
    "overall_bound",
    "per_tensor_grad_magnitudes",
    "trainable_tensor_names",
    "uniform_thresholds",
]

#: Smallest adaptive threshold relative to the largest, so no tensor is clipped to zero.
MIN_RELATIVE_MAGNITUDE = 1e-3


def _check_bound(max_grad_norm: float) -> None:
    if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
        raise ValueError(f"max_grad_norm must be a finite number > 0; got {max_grad_norm}")


def flat_thresholds(max_grad_norm: float) -> float:
    """The single bound of flat clipping: ``S`` itself."""
    _check_bound(max_grad_norm)
    return float(max_grad_norm)


def uniform_thresholds(max_grad_norm: float, num_tensors: int) -> list[float]:
    """``S / √m`` for each of ``m`` tensors, so that ``√(Σ S_j²) = S``."""
    _check_bound(max_grad_norm)
    if num_tensors < 1:
        raise ValueError(f"num_tensors must be >= 1; got {num_tensors}")
    return [max_grad_norm / math.sqrt(num_tensors)] * num_tensors


def adaptive_thresholds(max_grad_norm: float, magnitudes: Sequence[float]) -> list[float]:
    """``S_j = S · M_j / √(Σ M_k²)``: proportional to ``magnitudes``, overall norm ``S``.

    Non-finite or non-positive magnitudes (a tensor with no gradient on the validation
    data) are raised to :data:`MIN_RELATIVE_MAGNITUDE` × the largest one, so every tensor
    keeps a positive bound; if no magnitude is positive the result is uniform.
    """
    _check_bound(max_grad_norm)
    if len(magnitudes) < 1:
        raise ValueError("magnitudes must not be empty")
    finite = [float(m) if math.isfinite(m) and m > 0 else 0.0 for m in magnitudes]
    top = max(finite)
    if top <= 0:
        return uniform_thresholds(max_grad_norm, len(magnitudes))
    # relative to the largest magnitude, so that tiny (even subnormal) values cannot
    # underflow to a zero norm
    relative = [max(m / top, MIN_RELATIVE_MAGNITUDE) for m in finite]
    norm = math.sqrt(sum(r * r for r in relative))
    return [max_grad_norm * r / norm for r in relative]


def overall_bound(thresholds: Sequence[float]) -> float:
    """``√(Σ S_j²)``: the L2 bound of a per-sample gradient clipped per tensor."""
    return math.sqrt(sum(float(s) ** 2 for s in thresholds))


def trainable_tensor_names(model: nn.Module) -> list[str]:
    """Names of the trainable parameter tensors, in the order Opacus clips them."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def per_tensor_grad_magnitudes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Median over samples of each trainable tensor's per-sample gradient L2 norm.

    Per-sample cross-entropy gradients are computed with ``torch.func`` (``vmap(grad)``)
    on a plain model (not an Opacus ``GradSampleModule``), in evaluation mode, without
    changing the model. The median is robust to a few outlier samples. Meant for the
    server's validation split: see the module docstring for why this costs no privacy.

    Returns
    -------
    list[float]
        One value per trainable tensor, ordered as :func:`trainable_tensor_names`.
    """
    if len(x) == 0:
        raise ValueError("per_tensor_grad_magnitudes needs at least one sample; got 0")
    names = trainable_tensor_names(model)
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    was_training = model.training
    model.eval()

    def loss_of(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, yi.unsqueeze(0))

    try:
        per_sample = vmap(grad(loss_of), in_dims=(None, 0, 0))(params, x, y)
    finally:
        model.train(was_training)
    out = []
    for name in names:
        g = per_sample[name].flatten(start_dim=1)
        out.append(float(g.norm(dim=1).median()))
    return out


def check_clip_bounds(
    clipping: ClippingName,
    bounds: Sequence[float] | None,
    num_tensors: int,
    max_grad_norm: float,
    tol: float = 1e-6,
) -> list[str]:
    """Problems with per-tensor ``bounds`` received for ``clipping`` (empty if valid).

    Flat clipping must receive no bounds; per-layer clipping needs one finite bound > 0 per
    trainable tensor with ``√(Σ S_j²)`` equal to ``max_grad_norm`` within ``tol``
    (relative), so that the noise calibrated for ``max_grad_norm`` still matches.
    """
    if clipping == "flat":
        if bounds is not None:
            return [f"dp.clipping is 'flat' but the server sent {len(bounds)} per-tensor bounds"]
        return []
    if bounds is None:
        return [f"dp.clipping is {clipping!r} but the server sent no per-tensor clipping bounds"]
    problems = []
    if len(bounds) != num_tensors:
        problems.append(
            f"clipping bounds must number one per trainable tensor ({num_tensors}); "
            f"got {len(bounds)}"
        )
    bad = [s for s in bounds if not (math.isfinite(s) and s > 0)]
    if bad:
        problems.append(f"clipping bounds must all be finite and > 0; got {bad[:5]}")
    elif bounds:
        total = overall_bound(bounds)
        if abs(total - max_grad_norm) > tol * max(1.0, max_grad_norm):
            problems.append(
                f"clipping bounds must satisfy sqrt(sum S_j^2) == dp.max_grad_norm "
                f"({max_grad_norm}); got {total:.10g}"
            )
    return problems
