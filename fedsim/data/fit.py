"""Bringing images to the federation's declared input shape (``data.image_size``,
``data.channels``, ``data.resize``) with torchvision's v2 functional transforms.

Pure functions over ``float32`` arrays with values in ``[0, 1]``:

- channels: grey → RGB repeats the channel; RGB → grey is torchvision's
  ``rgb_to_grayscale`` (ITU-R 601-2 luma, the weights PIL's ``"L"`` conversion uses);
- size (``H × W``), by :data:`ResizeMode`:

  - ``stretch``: resize to exactly ``H × W`` (the aspect ratio may change);
  - ``center_crop``: resize so the image covers ``H × W`` (aspect kept), then cut the
    centre — torchvision's usual ``Resize`` + ``CenterCrop``; borders may be lost;
  - ``pad``: resize so the image fits inside ``H × W`` (aspect kept), then pad with
    zeros (black) around it; nothing is lost.

Resizing is bilinear with antialiasing, so values stay in ``[0, 1]`` (clamped against
rounding). An image that already has the declared shape is returned unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # torch and torchvision are imported where used: `import fedsim.data`
    import torch  # stays cheap for code that never resizes
    from torchvision.transforms import v2

__all__ = ["ImageSpec", "ResizeMode", "fit_batch", "fit_image"]

ResizeMode = Literal["stretch", "center_crop", "pad"]
"""How an image of another size is brought to the declared ``H × W``."""

_FIT_CHUNK = 256  # images resized per torch call in fit_batch


@dataclass(frozen=True)
class ImageSpec:
    """The declared input of a federation's image model.

    Parameters
    ----------
    size
        ``(H, W)`` every image is brought to, or ``None`` to keep the files' own size
        (then all images must share one size).
    channels
        1 (grey) or 3 (RGB), or ``None`` to infer (grey when every image is grey).
    resize
        How an image of another size is fitted (see the module docstring).
    """

    size: tuple[int, int] | None = None
    channels: int | None = None
    resize: ResizeMode = "stretch"

    def __post_init__(self) -> None:
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ValueError(f"ImageSpec.size must be (H, W) >= 1; got {self.size}")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"ImageSpec.channels must be 1 or 3; got {self.channels}")

    @property
    def active(self) -> bool:
        """Whether the spec changes anything (a size or a channel count is declared)."""
        return self.size is not None or self.channels is not None


def fit_image(pixels: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """Bring one ``(C, H, W)`` image (``C`` in {1, 3}) to ``spec``; returns ``float32``."""
    return fit_batch(pixels[None], spec)[0]


def fit_batch(images: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """Bring ``(N, C, H, W)`` images to ``spec``'s channels and size.

    Returns ``images`` itself when nothing changes, else a new ``float32`` array.
    """
    n, c, h, w = images.shape
    channels = spec.channels or c
    size = spec.size or (h, w)
    if (c, h, w) == (channels, *size):
        return images
    import torch

    out = np.empty((n, channels, *size), dtype=np.float32)
    for start in range(0, n, _FIT_CHUNK):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + _FIT_CHUNK]))
        out[start : start + len(chunk)] = _fit(chunk, channels, size, spec.resize).numpy()
    return out


def _fit(x: torch.Tensor, channels: int, size: tuple[int, int], mode: ResizeMode) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    if x.shape[1] != channels:
        x = x.repeat(1, 3, 1, 1) if channels == 3 else F.rgb_to_grayscale(x)
    h, w = x.shape[-2:]
    if (h, w) != size:
        x = _transform(h, w, size, mode)(x).clamp_(0.0, 1.0)
    return x.float()


def _transform(h: int, w: int, size: tuple[int, int], mode: ResizeMode) -> v2.Transform:
    """The torchvision v2 pipeline fitting an ``h × w`` image to ``size`` by ``mode``."""
    from torchvision.transforms import v2

    if mode == "stretch":
        return v2.Resize(list(size), antialias=True)
    th, tw = size
    scale = max(th / h, tw / w) if mode == "center_crop" else min(th / h, tw / w)
    if mode == "center_crop":  # cover the target: never smaller than it
        inner = [max(th, math.ceil(h * scale - 1e-6)), max(tw, math.ceil(w * scale - 1e-6))]
    else:  # fit inside the target: never larger than it
        inner = [max(1, math.floor(h * scale + 1e-6)), max(1, math.floor(w * scale + 1e-6))]
        inner = [min(inner[0], th), min(inner[1], tw)]
    # CenterCrop pads with zeros where the crop is larger than the image (pad mode).
    return v2.Compose([v2.Resize(inner, antialias=True), v2.CenterCrop(list(size))])
