"""Ghost clipping in one backward pass ("book-keeping", Bu et al., ICML 2023).

Opacus' ghost clipping (Li et al., ICLR 2022) takes two backward passes per DP-SGD step.
The first computes each example's gradient norm ‖g_b‖ layer by layer from the layer's
inputs and per-example output gradients — for ``nn.Linear`` without materialising the
per-example gradients ("ghost norm"), for the other layers (convolutions, GroupNorm, …)
from per-example gradients it materialises and then drops. The second pass
back-propagates ``Σ_b c_b · loss_b`` with the clipping factors
``c_b = min(1, C / (‖g_b‖ + 1e-6))`` only to obtain each parameter's clipped sum
``Σ_b c_b · g_b``. That sum is linear in what the first pass already had, so here the
first pass keeps it and the second pass is not run:

* ``nn.Linear``: the layer's inputs ``A`` and per-example output gradients ``G``; the
  clipped sum is ``(c ⊙ G)ᵀ A``, one matrix product;
* every other layer: the per-example gradients Opacus computes for the norm; the clipped
  sum is ``Σ_b c_b g_b``. Where they would be large (more than :data:`KEEP_LIMIT`
  numbers) the inputs and output gradients are kept instead and the sum is formed from
  ``c ⊙ G`` afterwards (the convolution's weight gradient for ``nn.Conv2d``, Opacus'
  per-example sampler summed over the batch for the others).

Everything else is Opacus' ghost clipping unchanged: the per-example norms (the same
Opacus norm and grad samplers), the factors ``c_b`` (:meth:`get_clipping_coef`), the
noise ``N(0, σ²C²)`` on the clipped sum, the division by the expected batch size, the
Poisson batches and the accountant. :class:`BookkeepingPrivacyEngine` swaps only the
module wrapper and the loss wrapper that ``PrivacyEngine.make_private`` builds for
``grad_sample_mode="ghost"``. ``tests/test_bookkeeping.py`` checks the clipped sums
against per-example gradients computed independently with :mod:`torch.func`, clipped and
summed, and a whole noisy step against Opacus' two-pass ghost clipping.

Three changes of speed, not of result. The layers' outputs are noted in the forward pass
and autograd is asked for their gradients only
(:meth:`BookkeepingGradSampleModule.backpropagate`), instead of a module backward hook
per layer and a full ``backward()``: the parameters' unclipped summed gradients, which
the clipped sums replace, are never computed. (A layer output changed in place before the
backward pass, as by ``nn.ReLU(inplace=True)``, is refused, as Opacus' hooks refused it.)
A mean-reduced loss's factor n (the batch size) multiplies the norms and the clipping
factors instead of every output gradient. GroupNorm's per-example gradients are reduced
with ``sum`` (:func:`group_norm_grad_sample`).

OPACUS INTERNALS (opacus 1.6): subclasses ``GradSampleModuleFastGradientClipping``
(overrides ``add_hooks``, mirroring its bookkeeping of ``autograd_grad_sample_hooks``, and
``capture_backprops_hook``, which it calls itself; uses ``capture_activations_hook``,
``iterate_submodules``, ``rearrange_grad_samples``, ``max_batch_len``, ``NORM_SAMPLERS``,
``GRAD_SAMPLERS``, ``_norm_sample`` and ``_forward_counter``) and
``DPTensorFastGradientClipping`` (overrides ``backward``); overrides the engine factories
``_prepare_model`` and ``_prepare_criterion``. The tests above fail if any of these
changes meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from opacus import PrivacyEngine
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import (
    DPLossFastGradientClipping,
    DPTensorFastGradientClipping,
)
from opacus.utils.module_utils import trainable_parameters
from torch import nn
from torch.nn import functional as F
from torch.nn.grad import conv2d_weight

from clients.secure_rng import SecurePrivacyEngine

#: Per-example gradients of a layer are kept through the backward pass up to this many
#: numbers (64 MiB of float32); a larger layer keeps its inputs and output gradients.
KEEP_LIMIT = 1 << 24


@dataclass(frozen=True)
class _Kept:
    """What one trainable layer's call left for forming its clipped sums."""

    module: nn.Module
    #: Per-example gradients by parameter, or ``None`` when ``activations``/``backprops``
    #: were kept instead.
    per_example: dict[torch.Tensor, torch.Tensor] | None
    activations: list[torch.Tensor] | None = None
    #: Per-example output gradients of the batch loss (``d loss / d output_b``).
    backprops: torch.Tensor | None = None
    #: What turns ``per_example``/``backprops`` into example ``b``'s own gradient
    #: (``d loss_b / d …``): the batch size for a mean-reduced loss, else 1. Applied to the
    #: factors (one number per example) rather than to every output gradient.
    scale: float = 1.0


def bookkeeping_supported(model: nn.Module) -> bool:
    """Whether one-pass clipping can wrap ``model``.

    Every trainable layer must be an ``nn.Linear`` or have an Opacus per-example gradient
    sampler other than ``nn.Embedding`` (whose per-example gradients are vocabulary-sized),
    and the model must pass Opacus' ghost-clipping validation.
    """
    if GradSampleModuleFastGradientClipping.validate(model, strict=False):
        return False
    samplers = GradSampleModuleFastGradientClipping.GRAD_SAMPLERS
    for module in model.modules():
        if not any(p.requires_grad for p in module.parameters(recurse=False)):
            continue
        if isinstance(module, nn.Embedding):
            return False
        if type(module) is not nn.Linear and type(module) not in samplers:
            return False
    return True


def _scaled(tensor: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """``tensor`` (batch first) multiplied example by example by ``coef``."""
    return tensor * coef.view(-1, *([1] * (tensor.dim() - 1))).to(tensor)


def group_norm_grad_sample(
    layer: nn.GroupNorm, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[torch.Tensor, torch.Tensor]:
    """Per-example gradients of a GroupNorm's weight and bias, as Opacus' sampler gives
    them, reduced over the positions by ``sum`` instead of ``einsum("ni...->ni")`` (4× slower
    on the CNN's first block; the same numbers up to summation order)."""
    n, channels = backprops.shape[:2]
    out: dict[torch.Tensor, torch.Tensor] = {}
    if layer.weight is not None and layer.weight.requires_grad:
        normed = F.group_norm(activations[0], layer.num_groups, eps=layer.eps)
        # in place: the recomputed normalisation is ours (one 3 MiB pass less per step on
        # the CNN's first block; the same numbers)
        out[layer.weight] = normed.mul_(backprops).reshape(n, channels, -1).sum(-1)
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = backprops.reshape(n, channels, -1).sum(-1)
    return out


#: Input channels per group from which :func:`conv2d_grad_sample` takes the grouped
#: convolution's backward (one thread, batch 32–64: 2.3× faster at 8 and 16 channels, 1.4× at
#: 64; slower at 1–3, where Opacus' unfold-and-multiply stays).
GROUPED_CONV_MIN_CHANNELS = 8


def conv2d_grad_sample(
    layer: nn.Conv2d, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[torch.Tensor, torch.Tensor]:
    """Per-example gradients of a zero-padded ``nn.Conv2d``'s weight and bias.

    The batch becomes groups of one convolution (``n × groups`` groups), whose weight
    gradient is the stack of the examples' weight gradients: PyTorch's own convolution
    backward instead of Opacus' unfolded copy of the input (the CNN's second convolution:
    2.5 vs 5.6 ms). Layers with few input channels per group, or other padding, take
    Opacus' sampler.
    """
    if (
        isinstance(layer.padding, str)
        or layer.padding_mode != "zeros"
        or layer.in_channels // layer.groups < GROUPED_CONV_MIN_CHANNELS
        or not len(backprops)
    ):
        return GradSampleModuleFastGradientClipping.GRAD_SAMPLERS[nn.Conv2d](
            layer, activations, backprops
        )
    x = activations[0].to(backprops)
    n = len(x)
    out: dict[torch.Tensor, torch.Tensor] = {}
    if layer.weight.requires_grad:
        weight_shape = (n * layer.out_channels, *layer.weight.shape[1:])
        _, per_example, _ = torch.ops.aten.convolution_backward(
            backprops.reshape(1, n * layer.out_channels, *backprops.shape[2:]),
            x.reshape(1, n * layer.in_channels, *x.shape[2:]),
            x.new_empty(weight_shape),
            None,
            list(layer.stride),
            list(layer.padding),  # type: ignore[arg-type]
            list(layer.dilation),
            False,
            [0, 0],
            n * layer.groups,
            [False, True, False],
        )
        out[layer.weight] = per_example.view(n, *layer.weight.shape)
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = backprops.reshape(n, layer.out_channels, -1).sum(-1)
    return out


#: Per-example gradient samplers used instead of Opacus' for these layer types.
_SAMPLERS: dict[type, Any] = {
    nn.GroupNorm: group_norm_grad_sample,
    nn.Conv2d: conv2d_grad_sample,
}


def clipped_sums(kept: _Kept, coef: torch.Tensor) -> dict[torch.Tensor, torch.Tensor]:
    """``Σ_b coef_b · g_b(p)`` for each trainable parameter ``p`` of ``kept.module``.

    Parameters
    ----------
    kept
        The layer and what its backward call kept.
    coef
        One clipping factor per example of the batch.

    Returns
    -------
    dict
        One tensor shaped like each trainable parameter.
    """
    coef = coef * kept.scale
    if kept.per_example is not None:
        return {p: torch.tensordot(coef.to(gs), gs, dims=1) for p, gs in kept.per_example.items()}
    module, activations, backprops = kept.module, kept.activations, kept.backprops
    assert activations is not None and backprops is not None
    scaled = _scaled(backprops, coef)
    out: dict[torch.Tensor, torch.Tensor] = {}
    if isinstance(module, nn.Linear):
        a = activations[0].reshape(-1, module.in_features)
        g = scaled.reshape(-1, module.out_features)
        if module.weight.requires_grad:
            out[module.weight] = g.t() @ a.to(g)
        if module.bias is not None and module.bias.requires_grad:
            out[module.bias] = g.sum(0)
        return out
    zero_padded = isinstance(module, nn.Conv2d) and module.padding_mode == "zeros"
    if zero_padded and not isinstance(module.padding, str):
        assert isinstance(module, nn.Conv2d)
        if module.weight.requires_grad:
            out[module.weight] = conv2d_weight(
                activations[0].to(scaled),
                module.weight.shape,
                scaled,
                stride=module.stride,
                padding=module.padding,
                dilation=module.dilation,
                groups=module.groups,
            )
        if module.bias is not None and module.bias.requires_grad:
            out[module.bias] = scaled.sum(dim=(0, 2, 3))
        return out
    sampler = GradSampleModuleFastGradientClipping.GRAD_SAMPLERS[type(module)]
    return {
        p: gs.sum(0) for p, gs in sampler(module, activations, scaled).items() if p.requires_grad
    }


class BookkeepingGradSampleModule(GradSampleModuleFastGradientClipping):
    """Opacus' ghost-clipping module that keeps, for each layer, what its clipped sum needs
    (see the module docstring) and forms the sums in :meth:`apply_clipping`."""

    def __init__(self, m: nn.Module, **kwargs: Any) -> None:
        super().__init__(m, **kwargs)
        self._kept: list[_Kept] = []
        #: Each hooked layer call of the pending forward pass: the layer, its output, the
        #: output's version counter then, and the reduction and batch layout to read the
        #: output's gradient with.
        self._outputs: list[tuple[nn.Module, torch.Tensor, int, str, bool]] = []

    def add_hooks(
        self,
        *,
        loss_reduction: str = "mean",
        batch_first: bool = True,
        force_functorch: bool = False,
    ) -> None:
        """One forward hook per trainable layer: Opacus' activation capture, and a note of
        the layer's output, whose gradient :meth:`backpropagate` asks autograd for.

        Opacus registers a full module backward hook instead, which wraps every layer's
        inputs and outputs in extra autograd functions (~10% of a quickstart worker's time,
        py-spy); the output's gradient is all :meth:`capture_backprops_hook` reads.
        """
        if force_functorch:
            raise ValueError("book-keeping clipping uses the layers' grad samplers")
        if hasattr(self._module, "autograd_grad_sample_hooks"):
            raise ValueError("Trying to add hooks twice to the same model")
        self._module.autograd_grad_sample_hooks = []  # type: ignore[assignment]
        self.autograd_grad_sample_hooks = self._module.autograd_grad_sample_hooks
        for module in self.iterate_submodules(self._module):
            hook = partial(self._capture, loss_reduction=loss_reduction, batch_first=batch_first)
            self.autograd_grad_sample_hooks.append(module.register_forward_hook(hook))
        self.enable_hooks()

    def _capture(
        self,
        module: nn.Module,
        forward_input: list[torch.Tensor],
        forward_output: Any,
        *,
        loss_reduction: str,
        batch_first: bool,
    ) -> None:
        """Keep ``module``'s inputs (Opacus' hook) and note its output."""
        before = len(getattr(module, "activations", ()))
        self.capture_activations_hook(module, forward_input, forward_output)
        if len(getattr(module, "activations", ())) == before:
            return  # not training, no gradient or hooks disabled: nothing to capture
        if not isinstance(forward_output, torch.Tensor) or not forward_output.requires_grad:
            raise NotImplementedError(
                f"book-keeping clipping needs {type(module).__name__} to return one tensor"
            )
        self._outputs.append(
            (module, forward_output, forward_output._version, loss_reduction, batch_first)
        )

    def backpropagate(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss`` to the noted layer outputs only, then compute each layer's
        norms and keep what its clipped sums need.

        Autograd is asked for the gradients of the trainable layers' outputs and nothing
        else, so it skips what :meth:`apply_clipping` would overwrite: the parameters'
        summed gradients (the first convolution's whole backward, the weight half of the
        others') and their accumulation into ``.grad``.
        """
        outputs, self._outputs = self._outputs, []
        self._kept = []
        if not outputs:  # nothing was captured: autograd as usual (no norms follow)
            loss.backward()
            return
        for module, out, version, _, _ in outputs:
            if out._version != version:  # its gradient would be that of the modified tensor
                raise RuntimeError(
                    f"book-keeping clipping needs the output of each trainable layer unchanged "
                    f"until backward, but the output of {type(module).__name__} was modified "
                    "in place (an in-place activation such as nn.ReLU(inplace=True), or +=); "
                    "use the out-of-place operation"
                )
        grads = torch.autograd.grad(loss, [out for _, out, _, _, _ in outputs], allow_unused=True)
        for (module, _, _, reduction, batch_first), grad in zip(
            reversed(outputs), reversed(grads), strict=True
        ):
            if grad is not None:  # None: the output did not reach the loss
                self.capture_backprops_hook(module, None, (grad,), reduction, batch_first)

    def capture_backprops_hook(
        self,
        module: nn.Module,
        _forward_input: Any,
        forward_output: Any,
        loss_reduction: str,
        batch_first: bool,
    ) -> None:
        """Each example's gradient norm for ``module``'s parameters (as Opacus' ghost
        clipping computes it), keeping what the clipped sums need."""
        if not self.hooks_enabled:
            return
        if len(module.activations) != 1:  # type: ignore[arg-type]
            raise NotImplementedError(
                "book-keeping clipping does not support a layer applied twice in one step"
            )
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'sum' or 'mean'; got {loss_reduction!r}")
        activations, backprops = self.rearrange_grad_samples(
            module=module,
            backprops=forward_output[0].detach(),
            loss_reduction="sum",  # the mean's factor n goes on the norms and the factors
            batch_first=batch_first,
        )
        scale = float(module.max_batch_len) if loss_reduction == "mean" else 1.0  # type: ignore[arg-type]
        if type(module) is nn.Linear:
            norms = self.NORM_SAMPLERS[nn.Linear](module, activations, backprops)
            self._kept.append(_Kept(module, None, activations, backprops, scale))
        else:
            sampler = _SAMPLERS.get(type(module)) or self.GRAD_SAMPLERS[type(module)]
            per_example = sampler(module, activations, backprops)
            norms = {p: gs.reshape(len(gs), -1).norm(2, dim=-1) for p, gs in per_example.items()}
            if sum(gs.numel() for gs in per_example.values()) <= KEEP_LIMIT:
                kept = {p: gs for p, gs in per_example.items() if p.requires_grad}
                self._kept.append(_Kept(module, kept, scale=scale))
            else:
                self._kept.append(_Kept(module, None, activations, backprops, scale))
        for param, norm in norms.items():
            if param.requires_grad:
                param._norm_sample = norm * scale  # type: ignore[attr-defined]
        for _, param in trainable_parameters(module):
            param._forward_counter -= 1  # type: ignore[attr-defined]
        if hasattr(module, "max_batch_len"):
            del module.max_batch_len

    def apply_clipping(self, coef: torch.Tensor) -> None:
        """Set each trainable parameter's ``.grad`` to its clipped sum ``Σ_b c_b g_b``
        (zero for an empty batch) and forget what the backward pass kept."""
        kept, self._kept = self._kept, []
        sums: dict[torch.Tensor, torch.Tensor] = {}
        if coef.numel():  # each layer was applied once, so each parameter has one sum
            for layer in kept:
                sums.update(clipped_sums(layer, coef))
        for p in self.trainable_parameters:
            p.grad = sums[p].to(p.dtype) if p in sums else torch.zeros_like(p)


class BookkeepingLoss(DPTensorFastGradientClipping):
    """Opacus' ghost-clipping loss whose ``backward()`` takes one pass instead of two."""

    def backward(self) -> None:  # type: ignore[override]
        """Back-propagate the batch loss (norms, kept sums), then set the clipped sums."""
        module = self.module
        if not isinstance(module, BookkeepingGradSampleModule):
            raise TypeError("BookkeepingLoss needs a BookkeepingGradSampleModule")
        if self.loss_reduction == "mean":
            reduced = torch.mean(self.loss_per_sample, dim=0)
        elif self.loss_reduction == "sum":
            reduced = torch.sum(self.loss_per_sample, dim=0)
        else:
            raise ValueError(f"loss_reduction must be 'sum' or 'mean'; got {self.loss_reduction!r}")
        module.backpropagate(reduced)
        if self.loss_per_sample.numel():
            coef = module.get_clipping_coef()
        else:  # an empty Poisson batch: the sum is zero and the step adds noise alone
            coef = self.loss_per_sample.new_zeros(0)
        module.apply_clipping(coef)


def _one_pass(operator: Any) -> Any:
    """``operator`` of Opacus' loss tensor, returning a :class:`BookkeepingLoss` again."""

    def apply(self: BookkeepingLoss, *args: Any) -> BookkeepingLoss:
        result = operator(self, *args)
        return BookkeepingLoss(
            result.module, result.optimizer, result.loss_per_sample, result.loss_reduction
        )

    apply.__name__ = operator.__name__
    apply.__doc__ = operator.__doc__
    return apply


# Scaling or combining the loss (``loss * w``, ``loss_a + loss_b``, …) keeps it one-pass.
for _name in (
    "__truediv__",
    "__mul__",
    "__rmul__",
    "__add__",
    "__radd__",
    "__sub__",
    "__rsub__",
    "__neg__",
):
    setattr(BookkeepingLoss, _name, _one_pass(getattr(DPTensorFastGradientClipping, _name)))


class BookkeepingCriterion(DPLossFastGradientClipping):
    """Opacus' ghost-clipping criterion wrapper returning a :class:`BookkeepingLoss`."""

    def __call__(self, *args: Any, shape: Any = None, **kwargs: Any) -> BookkeepingLoss:
        """The per-example loss of the batch, for the one-pass backward."""
        loss = super().__call__(*args, shape=shape, **kwargs)
        return BookkeepingLoss(
            self.module, self.optimizer, loss.loss_per_sample, loss.loss_reduction
        )


class BookkeepingMixin:
    """Makes a ``PrivacyEngine``'s ghost mode one-pass: overrides the factories
    ``_prepare_model`` (:class:`BookkeepingGradSampleModule`) and ``_prepare_criterion``
    (:class:`BookkeepingCriterion`); optimizer, loader and accountant stay the engine's."""

    def _prepare_model(self, module: nn.Module, **kwargs: Any) -> nn.Module:
        if kwargs.get("grad_sample_mode") != "ghost" or not kwargs.get("wrap_model", True):
            raise ValueError("book-keeping clipping wraps the model in grad_sample_mode 'ghost'")
        if not bookkeeping_supported(module):
            raise ValueError("book-keeping clipping does not support this model's layers")
        self.validate(module=module, optimizer=None, data_loader=None)  # type: ignore[attr-defined]
        return BookkeepingGradSampleModule(
            module,
            batch_first=kwargs.get("batch_first", True),
            loss_reduction=kwargs.get("loss_reduction", "mean"),
            max_grad_norm=kwargs.get("max_grad_norm", 1.0),
        )

    def _prepare_criterion(
        self,
        *,
        module: nn.Module,
        optimizer: Any,
        criterion: Any,
        loss_reduction: str = "mean",
        **_: Any,
    ) -> BookkeepingCriterion:
        return BookkeepingCriterion(module, optimizer, criterion, loss_reduction)  # type: ignore[arg-type]


class BookkeepingPrivacyEngine(BookkeepingMixin, PrivacyEngine):
    """Opacus' ``PrivacyEngine`` whose ghost clipping takes one backward pass."""


class SecureBookkeepingPrivacyEngine(BookkeepingMixin, SecurePrivacyEngine):
    """:class:`~clients.secure_rng.SecurePrivacyEngine` whose ghost clipping takes one pass."""
