"""The small tanh CNN of the DP-and-Byzantine-resilience clipping study."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from fedsim.models.base import MODELS, InputShape, group_norm, require_min_size
from fedsim.models.pool import FastMaxPool2d


class TanhCNN(nn.Module):
    """Two conv blocks (conv → GroupNorm → tanh → 2×2 max-pool) and three tanh-separated FCs.

    The layout follows the CNN of the Flower + Opacus study of differential privacy and
    Byzantine resilience in federated learning (the clipping study: flat, per-layer
    uniform and per-layer adaptive clipping). Tanh rather than ReLU keeps activations
    bounded, which suits clipped DP-SGD (Papernot et al., "Tempered Sigmoid Activations
    for Deep Learning with Differential Privacy", AAAI 2021); GroupNorm replaces
    BatchNorm so per-sample gradients exist. The exact channel and width numbers of the
    study are not reproduced from its code; they are parameters here.

    Each block pools before its tanh: tanh is increasing, so ``maxpool(tanh(x))`` and
    ``tanh(maxpool(x))`` are the same function with the same gradients (the window's
    maximum is the same element), and pooling first runs tanh and its backward on a
    quarter of the values (a DP-SGD step on 28×28 inputs 5% faster; ``tests/test_models.py``
    compares the two orders).

    Parameters
    ----------
    input_shape
        ``(C, H, W)``; H and W must be at least 4. Convolutions are padded ("same"), so
        each pool halves the size (floor): 28 → 14 → 7, 32 → 16 → 8, 8 → 4 → 2.
    num_classes
        Number of output logits.
    channels
        Output channels of the two convolutions.
    hidden
        Widths of the first two fully connected layers; the third gives the logits.
    kernel_size
        Odd convolution kernel size.
    """

    #: Ghost clipping's DP-SGD step took 0.40× (one thread) and 0.43× (two) the time of
    #: hooks at batch 64 on 28×28 inputs (``benchmarks/ghost_clipping.py --repeats 5``), so
    #: ``dp.grad_sample_mode: auto`` uses it (:func:`~fedsim.models.base.prefers_ghost_clipping`).
    ghost_clipping_faster: ClassVar[bool] = True

    def __init__(
        self,
        input_shape: InputShape,
        num_classes: int,
        channels: tuple[int, int] = (16, 32),
        hidden: tuple[int, int] = (128, 64),
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        pad = kernel_size // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], kernel_size, padding=pad),
            group_norm(channels[0], max_groups=8),
            FastMaxPool2d(2),  # before tanh: the same block (see the class docstring)
            nn.Tanh(),
            nn.Conv2d(channels[0], channels[1], kernel_size, padding=pad),
            group_norm(channels[1], max_groups=8),
            FastMaxPool2d(2),
            nn.Tanh(),
        )
        flat = channels[1] * (height // 4) * (width // 4)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, hidden[0]),
            nn.Tanh(),
            nn.Linear(hidden[0], hidden[1]),
            nn.Tanh(),
            nn.Linear(hidden[1], num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Return logits of shape ``(B, num_classes)`` for images ``x`` of shape (B, C, H, W)."""
        out: Tensor = self.classifier(self.features(x))
        return out


@MODELS.register("cnn")
def build_cnn(input_shape: InputShape, num_classes: int) -> nn.Module:
    """Registry factory for :class:`TanhCNN` with its default widths."""
    require_min_size("cnn", input_shape, 4)
    return TanhCNN(input_shape, num_classes)
