"""What unreliable and malicious clients do: two registries of small pure functions.

:data:`UNRELIABLE_KINDS` (``roles.unreliable.kind``, ``valuation.corruption_kind``) holds
*data corruptions* ``corrupt(x, y, idx, rng, num_classes) -> (x', y')``: the samples at
the indices ``idx`` of the images ``x`` (float32 NCHW in [0, 1]) and labels ``y`` are
spoilt; the result is new arrays of the same shapes and dtypes, images still in [0, 1],
the inputs untouched; all randomness comes from ``rng``.

:data:`MALICIOUS_KINDS` (``roles.malicious.kind``) holds *hostile uploads* of one
floating-point tensor ``upload(g, w, scale, generator) -> tensor``: from the global
parameters ``g`` and the honestly trained ``w``, a new tensor of ``w``'s shape and dtype;
all randomness comes from ``generator``.

:func:`fedsim.roles.corrupt_split` and :func:`fedsim.roles.malicious_state` apply them;
``tests/test_contracts.py`` checks every registered kind against the contract above.
SecProbe (Zhao et al., IEEE TIFS 2020) defines ``noise`` and ``random``; fedsim adds
``label_flip``, ``sign_flip``, ``scale`` and ``nan``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from fedsim.registry import Registry

DataCorruption = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.random.Generator, int | None],
    tuple[np.ndarray, np.ndarray],
]
"""``corrupt(x, y, idx, rng, num_classes) -> (x', y')`` (see the module docstring)."""

HostileUpload = Callable[[Tensor, Tensor, float, torch.Generator], Tensor]
"""``upload(g, w, scale, generator) -> tensor`` (see the module docstring)."""

UNRELIABLE_KINDS: Registry[DataCorruption] = Registry(
    "unreliable data kind", "roles.unreliable.kind"
)
MALICIOUS_KINDS: Registry[HostileUpload] = Registry("malicious upload kind", "roles.malicious.kind")


# ------------------------------------------------------------------ unreliable data


@UNRELIABLE_KINDS.register("noise")
def noise_images(
    x: np.ndarray,
    y: np.ndarray,
    idx: np.ndarray,
    rng: np.random.Generator,
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The images at ``idx`` become uniform noise in [0, 1] (the data range); labels kept.

    Regression targets (float) at ``idx`` become uniform noise in (0, 1] as well: the
    whole record is noise, as in SecProbe's experiments.
    """
    out = x.copy()
    out[idx] = rng.random(size=(len(idx), *x.shape[1:]), dtype=np.float32)
    targets = y.copy()
    if y.dtype == np.float32:
        targets[idx] = 1.0 - rng.random(size=len(idx), dtype=np.float32)
    return out, targets


@UNRELIABLE_KINDS.register("label_flip")
def flip_labels(
    x: np.ndarray,
    y: np.ndarray,
    idx: np.ndarray,
    rng: np.random.Generator,
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The labels at ``idx`` become ``num_classes - 1 - y``; images kept. Regression
    targets (float, in (0, 1]) become ``1 - y``: the target range mirrored.

    Raises
    ------
    ValueError
        If ``num_classes`` is missing or below 2 (classification).
    """
    if y.dtype == np.float32:
        targets = y.copy()
        targets[idx] = 1.0 - y[idx]
        return x.copy(), targets
    if num_classes is None or num_classes < 2:
        raise ValueError(f"label_flip needs num_classes >= 2; got {num_classes}")
    out = y.copy()
    out[idx] = num_classes - 1 - y[idx]
    return x.copy(), out


# ------------------------------------------------------------------ malicious uploads


@MALICIOUS_KINDS.register("random")
def random_upload(g: Tensor, w: Tensor, scale: float, generator: torch.Generator) -> Tensor:
    """Uniform in [0, 1], ignoring ``w`` (SecProbe's malicious participant)."""
    return torch.rand(w.shape, generator=generator, dtype=w.dtype)


@MALICIOUS_KINDS.register("sign_flip")
def sign_flip_upload(g: Tensor, w: Tensor, scale: float, generator: torch.Generator) -> Tensor:
    """``g - (w - g)``: the honest update reversed."""
    return g - (w - g)


@MALICIOUS_KINDS.register("scale")
def scaled_upload(g: Tensor, w: Tensor, scale: float, generator: torch.Generator) -> Tensor:
    """``g + scale · (w - g)``: the honest update amplified."""
    return g + scale * (w - g)


@MALICIOUS_KINDS.register("nan")
def malformed_upload(g: Tensor, w: Tensor, scale: float, generator: torch.Generator) -> Tensor:
    """A malformed upload: NaN everywhere except one +Inf (every strategy must reject it
    before scoring or aggregation)."""
    bad = torch.full_like(w, float("nan"))
    bad.view(-1)[:1] = float("inf")
    return bad
