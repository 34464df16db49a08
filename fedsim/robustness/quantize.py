"""Post-training static int8 quantisation (PSREval's deployment step), FX graph mode.

:func:`quantize_static` traces a float model with ``torch.ao.quantization.quantize_fx``,
inserts observers with the backend's default qconfig, calibrates them on *calibration*
data — in fedsim the server's public validation split, never the test set (PSREval
calibrated on test data) — and converts to int8. Convolutions, linear layers and the
ReLUs/pools fused around them become quantised kernels; ops without an int8 kernel here
(GroupNorm, tanh in the ``cnn``) stay float between dequantise/quantise stubs.
:func:`quantized_ops` lists what was quantised. The int8 model runs on CPU only and has no
input gradients: attack it by transfer from a float model.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


def pick_backend() -> str:
    """``x86``/``fbgemm`` where available (server CPUs), else ``qnnpack`` (ARM)."""
    engines = torch.backends.quantized.supported_engines
    for name in ("x86", "fbgemm", "qnnpack"):
        if name in engines:
            return name
    raise RuntimeError(f"no int8 quantisation backend in this torch build; got {engines}")


def serialized_bytes(model: nn.Module) -> int:
    """Size of ``torch.save(model.state_dict())`` in bytes (the shipped model size)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


@dataclass(frozen=True)
class QuantizedModel:
    """An int8 model plus what was done to it."""

    model: nn.Module
    backend: str
    bytes_float: int
    bytes_int8: int
    quantized_ops: dict[str, int]
    calibration_samples: int

    @property
    def size_reduction(self) -> float:
        """Fraction of the serialized size saved, ``1 - int8 / float``."""
        return 1.0 - self.bytes_int8 / self.bytes_float


def quantized_ops(model: nn.Module) -> dict[str, int]:
    """Count of modules per type whose class lives in a ``quantized`` namespace."""
    counts: Counter[str] = Counter()
    for m in model.modules():
        if ".quantized" in type(m).__module__ and not type(m).__name__.endswith("PackedParams"):
            counts[type(m).__name__] += 1
    return dict(sorted(counts.items()))


@torch.no_grad()
def quantize_static(
    model: nn.Module,
    calibration: np.ndarray,
    batch_size: int = 128,
    backend: str | None = None,
) -> QuantizedModel:
    """Int8 copy of ``model`` (float, CPU), observers calibrated on ``calibration`` images.

    ``model`` itself is not changed.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if len(calibration) == 0:
        raise ValueError("calibration data must not be empty")
    backend = backend or pick_backend()
    torch.backends.quantized.engine = backend
    float_model = copy.deepcopy(model).cpu().eval()
    example = (torch.tensor(calibration[:1]),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        prepared = prepare_fx(float_model, get_default_qconfig_mapping(backend), example)
        for start in range(0, len(calibration), batch_size):
            prepared(torch.tensor(calibration[start : start + batch_size]))
        quantized = convert_fx(prepared)
    ops = quantized_ops(quantized)
    logger.info("int8 (%s): quantised modules %s", backend, ops)
    return QuantizedModel(
        model=quantized,
        backend=backend,
        bytes_float=serialized_bytes(model),
        bytes_int8=serialized_bytes(quantized),
        quantized_ops=ops,
        calibration_samples=len(calibration),
    )
