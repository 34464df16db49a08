"""SecProbe's perceptron: one hidden layer of clipped ReLUs, one output layer.

Zhao et al. (IEEE TIFS 2020, Sec. III-C and IV-B) train ``z = σ(H·W⁽²⁾)`` with
``H = min(1, ReLU(X·W⁽¹⁾))`` (the ReLU bounded by [0, 1] so that the functional
mechanism's sensitivity is finite), weights initialised from N(0, 1), 80 hidden units for
regression. The network returns the output layer's pre-activation ``g = H·W⁽²⁾ + β``:
the task applies the link (sigmoid for regression, :mod:`fedsim.tasks`; softmax / argmax
for classification). :mod:`fedsim.privacy.functional` uses :meth:`SecProbeMLP.features`
and :attr:`SecProbeMLP.head`.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from fedsim.models.base import MODELS, InputShape

#: The paper's hidden width (regression).
PAPER_HIDDEN_UNITS = 80
#: A narrow variant: the functional mechanism's Δ grows with the square of the width
#: (Δ = b/2 + b²/8 for regression), so b = 8 needs ~100× less noise than b = 80.
NARROW_HIDDEN_UNITS = 8


class SecProbeMLP(nn.Module):
    """Flatten → Linear → clamp to [0, 1] → Linear (pre-activations of the outputs).

    Parameters
    ----------
    input_shape
        ``(C, H, W)`` of one input (a tabular row is ``(1, 1, d)``).
    num_outputs
        Number of outputs (1 for regression, the number of classes otherwise).
    hidden
        Hidden units ``b``.
    """

    #: The output layer can be trained by the functional mechanism (features in [0, 1]).
    functional_head: ClassVar[bool] = True

    def __init__(self, input_shape: InputShape, num_outputs: int, hidden: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.hidden = nn.Linear(channels * height * width, hidden)
        self.head = nn.Linear(hidden, num_outputs)
        for layer in (self.hidden, self.head):  # the paper's N(0, 1) initialisation
            nn.init.normal_(layer.weight, mean=0.0, std=1.0)
            nn.init.zeros_(layer.bias)
        self.clip = nn.Hardtanh(0.0, 1.0)

    def features(self, x: Tensor) -> Tensor:
        """The hidden layer's activations ``H``, each in [0, 1], of shape ``(B, b)``."""
        out: Tensor = self.clip(self.hidden(x.flatten(1)))
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Return ``g = H·W⁽²⁾ + β`` of shape ``(B, num_outputs)``."""
        out: Tensor = self.head(self.features(x))
        return out


@MODELS.register("secprobe_mlp")
def build_secprobe_mlp(input_shape: InputShape, num_classes: int) -> nn.Module:
    """Registry factory for :class:`SecProbeMLP` with the paper's 80 hidden units."""
    return SecProbeMLP(input_shape, num_classes, PAPER_HIDDEN_UNITS)


@MODELS.register("secprobe_mlp8")
def build_secprobe_mlp8(input_shape: InputShape, num_classes: int) -> nn.Module:
    """Registry factory for :class:`SecProbeMLP` with 8 hidden units."""
    return SecProbeMLP(input_shape, num_classes, NARROW_HIDDEN_UNITS)


def functional_units(model: nn.Module) -> tuple[int, int]:
    """``(augmented hidden units, outputs)`` of a model with a functional head."""
    head = model.head
    if not getattr(model, "functional_head", False) or not isinstance(head, nn.Linear):
        raise ValueError(
            f"{type(model).__name__} has no output layer the functional mechanism "
            "can train (a model declaring functional_head)"
        )
    return head.in_features + 1, head.out_features
