"""Max-pooling with ``nn.MaxPool2d``'s exact values and gradients, faster on CPU.

PyTorch's CPU max-pool kernel for contiguous NCHW tensors is several times slower than its
channels-last kernel (torch 2.14.1 on the 2-core CI machine, one thread, 2×2 pool:
4.3 ms vs 0.4 ms for a 64×16×28×28 batch, the CNN's first pool — more than a tenth of a
DP-SGD step). :class:`FastMaxPool2d` runs the channels-last kernel on a channels-last copy
and returns an NCHW result; its backward is PyTorch's own max-pool backward with the
indices the forward chose. Both kernels take the first maximum of a window, so outputs,
indices and gradients are bit-identical to ``nn.MaxPool2d`` (``tests/test_models.py``
checks it, ties included). Elsewhere — not CPU, not a contiguous 4-d float batch, inside a
``torch.func`` transform (VoG and PLIS use ``vmap``/``grad``), under FX tracing (static
quantization traces the model) — it *is* ``F.max_pool2d``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _ChannelsLastMaxPool(torch.autograd.Function):
    """k×k max-pool, stride k, no padding, through the channels-last kernel."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, kernel: int) -> Tensor:
        out, indices = F.max_pool2d_with_indices(
            x.contiguous(memory_format=torch.channels_last), [kernel, kernel], [kernel, kernel]
        )
        ctx.save_for_backward(x, indices)
        ctx.kernel = kernel
        return out.clone(memory_format=torch.contiguous_format)  # NCHW strides, as MaxPool2d

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        x, indices = ctx.saved_tensors
        k = ctx.kernel
        grad_input = torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(), x, [k, k], [k, k], [0, 0], [1, 1], False, indices.contiguous()
        )
        return grad_input, None


class FastMaxPool2d(nn.Module):
    """``nn.MaxPool2d(kernel_size)`` (stride = kernel, no padding, floor), faster on CPU.

    Parameters
    ----------
    kernel_size
        Side of the square window, also the stride.
    """

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: Tensor) -> Tensor:
        """Pool ``x`` of shape (B, C, H, W) to (B, C, H // k, W // k)."""
        if isinstance(x, torch.fx.Proxy):  # FX tracing (static quantization): the plain op
            return F.max_pool2d(x, self.kernel_size)
        if (
            not x.is_quantized
            and x.dim() == 4
            and x.device.type == "cpu"
            and x.is_contiguous()
            and not torch._C._are_functorch_transforms_active()
        ):
            out: Tensor = _ChannelsLastMaxPool.apply(x, self.kernel_size)
            return out
        return F.max_pool2d(x, self.kernel_size)

    def extra_repr(self) -> str:
        """``kernel_size=k`` in the module's repr."""
        return f"kernel_size={self.kernel_size}"
