"""ResNet-9 and ResNet-18 for 28–32 px images, made safe for Opacus.

Both use GroupNorm instead of BatchNorm, out-of-place ReLU and out-of-place residual
additions (``out = out + shortcut``): an in-place op on the output of a hooked module
breaks Opacus' per-sample gradients in the hooks, functorch, ghost and per-layer modes,
which is why torchvision's ResNets cannot be used even after ``ModuleValidator.fix``.
"""

from __future__ import annotations

from torch import Tensor, nn

from fedsim.models.base import MODELS, InputShape, group_norm, require_min_size
from fedsim.models.pool import FastMaxPool2d


def conv_gn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3×3 convolution (no bias; GroupNorm has one) → GroupNorm → ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        group_norm(out_channels),
        nn.ReLU(),
    )


class Residual(nn.Module):
    """``x + f(x)`` with ``f`` two conv-GN-ReLU blocks of the same width (ResNet-9's shortcut)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_gn_relu(channels, channels), conv_gn_relu(channels, channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x + body(x)`` (out of place)."""
        out: Tensor = x + self.body(x)
        return out


class ResNet9(nn.Module):
    """ResNet-9 (Page's DAWNBench network) with GroupNorm.

    prep conv 64 → conv 128 + pool + residual(128) → conv 256 + pool → conv 512 + pool +
    residual(512) → global max-pool → linear. The final global pool is adaptive, so the
    network accepts any H, W >= 8 (28 → 14 → 7 → 3; 32 → 16 → 8 → 4).

    Parameters
    ----------
    input_shape
        ``(C, H, W)``.
    num_classes
        Number of output logits.
    """

    def __init__(self, input_shape: InputShape, num_classes: int) -> None:
        super().__init__()
        in_channels = input_shape[0]
        self.features = nn.Sequential(
            conv_gn_relu(in_channels, 64),
            conv_gn_relu(64, 128),
            FastMaxPool2d(2),
            Residual(128),
            conv_gn_relu(128, 256),
            FastMaxPool2d(2),
            conv_gn_relu(256, 512),
            FastMaxPool2d(2),
            Residual(512),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits of shape ``(B, num_classes)``."""
        out: Tensor = self.fc(self.pool(self.features(x)).flatten(1))
        return out


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 conv-GN layers, a projection shortcut when the shape changes.

    Parameters
    ----------
    in_channels, out_channels
        Widths before and after the block.
    stride
        Stride of the first convolution (and of the projection shortcut).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.gn1 = group_norm(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.gn2 = group_norm(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                group_norm(out_channels),
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """Return ``relu(gn2(conv2(relu(gn1(conv1(x))))) + shortcut(x))``, all out of place."""
        out = self.relu1(self.gn1(self.conv1(x)))
        out = self.gn2(self.conv2(out))
        out = out + self.shortcut(x)
        result: Tensor = self.relu2(out)
        return result


class ResNet18(nn.Module):
    """ResNet-18 (He et al., 2016) with GroupNorm and a small-image stem.

    Stem: one 3×3 stride-1 convolution to 64 channels, no max-pool (as is usual for
    CIFAR-sized inputs); then four stages of two basic blocks (64, 128, 256, 512
    channels, stride 2 from the second stage on), adaptive average pool and a linear layer.

    Parameters
    ----------
    input_shape
        ``(C, H, W)``; any positive size works, 28–32 px is what it is meant for.
    num_classes
        Number of output logits.
    """

    def __init__(self, input_shape: InputShape, num_classes: int) -> None:
        super().__init__()
        self.stem = conv_gn_relu(input_shape[0], 64)
        layers: list[nn.Module] = []
        in_channels = 64
        for i, channels in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            layers.append(BasicBlock(in_channels, channels, stride))
            layers.append(BasicBlock(channels, channels))
            in_channels = channels
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Return logits of shape ``(B, num_classes)``."""
        out: Tensor = self.fc(self.pool(self.layers(self.stem(x))).flatten(1))
        return out


@MODELS.register("resnet9")
def build_resnet9(input_shape: InputShape, num_classes: int) -> nn.Module:
    """Registry factory for :class:`ResNet9`; needs H, W >= 8 (three 2×2 pools)."""
    require_min_size("resnet9", input_shape, 8)
    return ResNet9(input_shape, num_classes)


@MODELS.register("resnet18")
def build_resnet18(input_shape: InputShape, num_classes: int) -> nn.Module:
    """Registry factory for :class:`ResNet18`."""
    return ResNet18(input_shape, num_classes)
