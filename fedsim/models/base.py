"""The model registry, the seeded builder and the Opacus compatibility check.

Every model in fedsim is built through :func:`build_model`, which looks the name up in
:data:`MODELS`, checks the input shape and the number of classes, and, when a seed is
given, initialises the parameters deterministically without touching torch's global RNG.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from fedsim.errors import FedsimError
from fedsim.registry import Registry

InputShape = tuple[int, int, int]
"""``(channels, height, width)`` of one input image."""

ModelFactory = Callable[[InputShape, int], nn.Module]
"""Builds a model from the input shape ``(C, H, W)`` and the number of classes."""

MODELS: Registry[ModelFactory] = Registry("model", "model.name")
"""Model factories by name; ``MODELS.get`` raises a :class:`FedsimError` listing the names.

The contract of a factory (checked for every entry by ``tests/test_contracts.py``): it
builds a CPU model for any ``(C, H, W)`` it supports — at least ``(1, 28, 28)`` and
``(3, 32, 32)`` — and any number of classes, which maps float NCHW batches to logits
``(B, num_classes)``; the model passes :func:`is_dp_compatible` unless the factory declares
otherwise with the attribute ``dp_compatible = False`` (see :func:`declares_dp_compatible`).
"""


def build_model(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    seed: int | None = None,
) -> nn.Module:
    """Build a registered model for images of ``input_shape`` and ``num_classes`` classes.

    Parameters
    ----------
    name
        A name registered in :data:`MODELS` (``"cnn"``, ``"mlp"``, ``"resnet9"``, ...).
    input_shape
        ``(C, H, W)`` of one input; inputs are float NCHW batches with values in [0, 1].
    num_classes
        Number of output logits.
    seed
        If given, parameter initialisation is a deterministic function of the seed: two
        calls with the same seed give identical state_dicts. The global RNG state is left
        exactly as it was (the CPU generator is forked, seeded, and restored). If ``None``,
        the model is initialised from torch's global RNG, as any PyTorch module is.

    Returns
    -------
    nn.Module
        A CPU model in training mode that outputs raw logits of shape ``(B, num_classes)``.

    Raises
    ------
    FedsimError
        If the name is unknown (the message lists the valid names), the shape is not three
        positive integers or is too small for the model, or ``num_classes`` is below 1.
    """
    factory = MODELS.get(name)
    shape = check_input_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise FedsimError(f"model.num_classes must be an integer >= 1; got {num_classes!r}")
    if seed is None:
        return factory(shape, num_classes).train()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise FedsimError(f"model.seed must be an integer >= 0; got {seed!r}")
    # fork_rng restores the CPU generator on exit; devices=[] keeps CUDA state out of it, and
    # seeding only the CPU default generator (not torch.manual_seed, which also seeds CUDA)
    # means nothing outside the fork is changed. Models are built on the CPU.
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        model = factory(shape, num_classes)
    return model.train()


def is_dp_compatible(model: nn.Module) -> list[str]:
    """Return Opacus' objections to ``model`` as strings; an empty list means it is usable.

    This runs ``opacus.validators.ModuleValidator.validate(model, strict=False)``, which
    flags e.g. BatchNorm layers and models not in training mode. It cannot see in-place
    operations on hooked outputs; fedsim's own models avoid them by construction.

    Parameters
    ----------
    model
        The plain (not yet wrapped) model.

    Returns
    -------
    list[str]
        One message per problem found.
    """
    from opacus.validators import ModuleValidator  # Opacus costs ~1–2 s to import

    return [str(err) for err in ModuleValidator.validate(model, strict=False)]


def shipped_with_fedsim(model: nn.Module) -> bool:
    """Whether ``model`` is one of fedsim's own models, each of which the contract tests
    validate with Opacus (``tests/test_contracts.py``): the preflight then skips
    :func:`is_dp_compatible`, and the driver of a run does not import Opacus."""
    return type(model).__module__.startswith("fedsim.models.")


def prefers_ghost_clipping(model: nn.Module) -> bool:
    """Whether ``model`` declares Opacus' ghost clipping faster than per-sample-gradient
    hooks for it (class attribute ``ghost_clipping_faster = True``, set from a measurement
    with ``benchmarks/ghost_clipping.py``); ``dp.grad_sample_mode: auto`` then uses ghost
    under flat clipping. Undeclared models keep hooks."""
    return bool(getattr(model, "ghost_clipping_faster", False))


def declares_dp_compatible(factory: ModelFactory) -> bool:
    """Whether a registered factory's models are meant for Opacus (``True`` unless the
    factory sets ``dp_compatible = False``; every model fedsim ships is)."""
    return bool(getattr(factory, "dp_compatible", True))


def check_input_shape(input_shape: Sequence[int]) -> InputShape:
    """Return ``input_shape`` as a ``(C, H, W)`` tuple, or raise a :class:`FedsimError`."""
    values = tuple(input_shape) if isinstance(input_shape, Sequence) else ()
    if len(values) != 3 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values
    ):
        raise FedsimError(
            f"model.input_shape must be three positive integers (C, H, W); got {input_shape!r}"
        )
    return (values[0], values[1], values[2])


def require_min_size(name: str, input_shape: InputShape, min_size: int) -> None:
    """Raise a :class:`FedsimError` if the image is smaller than ``min_size`` on a side."""
    _, height, width = input_shape
    if height < min_size or width < min_size:
        raise FedsimError(
            f"model.input_shape: {name} needs height and width >= {min_size}; got {input_shape!r}"
        )


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm over ``channels`` with the largest group count ``<= max_groups`` dividing it.

    GroupNorm normalises each sample on its own, so per-sample gradients stay well defined
    (unlike BatchNorm, which Opacus rejects).
    """
    groups = max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)
