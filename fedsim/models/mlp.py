"""A two-hidden-layer ReLU perceptron: the cheapest model, for smoke tests and tiny images."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from fedsim.models.base import MODELS, InputShape


class MLP(nn.Module):
    """Flatten → Linear → ReLU → Linear → ReLU → Linear (logits).

    Parameters
    ----------
    input_shape
        ``(C, H, W)``; any positive size.
    num_classes
        Number of output logits.
    hidden
        Widths of the two hidden layers.
    """

    #: Ghost clipping's DP-SGD step took 0.06× (one thread) and 0.10× (two) the time of
    #: hooks at batch 64 on 28×28 inputs (``benchmarks/ghost_clipping.py --repeats 5``), so
    #: ``dp.grad_sample_mode: auto`` uses it (:func:`~fedsim.models.base.prefers_ghost_clipping`).
    ghost_clipping_faster: ClassVar[bool] = True

    def __init__(
        self,
        input_shape: InputShape,
        num_classes: int,
        hidden: tuple[int, int] = (256, 128),
    ) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * height * width, hidden[0]),
            nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(),
            nn.Linear(hidden[1], num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Return logits of shape ``(B, num_classes)``."""
        out: Tensor = self.net(x)
        return out


@MODELS.register("mlp")
def build_mlp(input_shape: InputShape, num_classes: int) -> nn.Module:
    """Registry factory for :class:`MLP` with hidden widths (256, 128)."""
    return MLP(input_shape, num_classes)
