"""Image classifiers for fedsim, all usable with Opacus DP-SGD.

Build any of them with :func:`build_model`; the names are those of :data:`MODELS`:
``"cnn"`` (:class:`TanhCNN`), ``"mlp"`` (:class:`MLP`), ``"resnet9"`` (:class:`ResNet9`),
``"resnet18"`` (:class:`ResNet18`) and SecProbe's one-hidden-layer perceptron
``"secprobe_mlp"`` / ``"secprobe_mlp8"`` (:class:`SecProbeMLP`, 80 / 8 hidden units).
Inputs are float NCHW batches in [0, 1]; outputs are raw logits. No model uses BatchNorm
(GroupNorm instead), in-place activations or in-place residual additions, so Opacus'
hooks, functorch, ghost and per-layer modes work.
Importing this package registers every model (importing a model module registers it).

Sizes and CPU cost (measured November 2026 on the 2-core CI-class machine, torch 2.14.1,
10 classes, one forward+backward of a batch of 64 images of 28×28×1, best of 5; the last
column is one Opacus DP-SGD step with ``grad_sample_mode="hooks"``, flat clipping):

========  ============  ============  =======  ===============  ==============
model     params 28²×1  params 32²×3  tensors  fwd+bwd (plain)  DP-SGD (hooks)
========  ============  ============  =======  ===============  ==============
mlp            235,146       820,874        6           0.7 ms           36 ms
cnn            429,450       552,906       14            27 ms          110 ms
resnet9      6,571,978     6,573,130       26           0.54 s           2.1 s
resnet18    11,172,810    11,173,962       62           0.87 s           4.0 s
========  ============  ============  =======  ===============  ==============

"tensors" is the number of trainable parameter tensors, i.e. the length of the bound list
Opacus' per-layer clipping needs. Per-sample gradients cost batch × params floats: about
2.9 GB for resnet18 at batch 64 — mind memory when choosing the DP batch size.
These are notes, not guarantees; timings vary by a factor of ~2 with machine load. The
table predates :class:`~fedsim.models.pool.FastMaxPool2d` (the cnn and resnets' pools
since 30 November 2026, bit-identical results): it took the cnn's plain step at batch 64,
2 classes, one thread from ~19 to ~15 ms (``benchmarks/dp_step.py``).
"""

from fedsim.models.base import (
    MODELS,
    InputShape,
    ModelFactory,
    build_model,
    group_norm,
    is_dp_compatible,
    prefers_ghost_clipping,
    shipped_with_fedsim,
)
from fedsim.models.cnn import TanhCNN
from fedsim.models.mlp import MLP
from fedsim.models.resnet import ResNet9, ResNet18
from fedsim.models.secprobe_mlp import SecProbeMLP, functional_units

__all__ = [
    "MLP",
    "MODELS",
    "InputShape",
    "ModelFactory",
    "ResNet9",
    "ResNet18",
    "SecProbeMLP",
    "TanhCNN",
    "build_model",
    "functional_units",
    "group_norm",
    "is_dp_compatible",
    "prefers_ghost_clipping",
    "shipped_with_fedsim",
]
