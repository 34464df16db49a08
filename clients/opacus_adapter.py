"""The one place that talks to Opacus.

:func:`make_private` wraps a model, optimizer and loader for DP-SGD and returns a named
:class:`PrivateTraining`; :func:`plain_state_dict` hands back a state_dict without Opacus'
``_module.`` prefix. No other module touches ``_module`` or Opacus' return tuples.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from opacus.grad_sample import AbstractGradSampleModule, GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.utils.data import DataLoader

from clients.bookkeeping import (
    BookkeepingPrivacyEngine,
    SecureBookkeepingPrivacyEngine,
    bookkeeping_supported,
)
from clients.secure_rng import SecurePrivacyEngine, is_secure
from fedsim.config import GradSampleMode
from fedsim.models.base import prefers_ghost_clipping

logger = logging.getLogger(__name__)

#: How Opacus bounds per-sample gradients, once ``dp.grad_sample_mode`` (config's
#: :data:`~fedsim.config.GradSampleMode`, which adds ``auto``) is resolved:
#: ``hooks`` materialises them (any clipping); ``ghost`` computes their norms without
#: materialising them (flat clipping only); ``bookkeeping`` is ghost clipping in one
#: backward pass (:mod:`clients.bookkeeping`).
ResolvedGradSampleMode = Literal["hooks", "ghost", "bookkeeping"]


@dataclass(frozen=True)
class PrivateTraining:
    """Model, optimizer and Poisson loader prepared for DP-SGD, plus the engine (accountant)."""

    model: nn.Module
    optimizer: DPOptimizer
    loader: DataLoader
    engine: PrivacyEngine
    #: For ``ghost``: Opacus' loss wrapper whose ``backward()`` runs the two passes of
    #: ghost clipping; for ``bookkeeping`` the one-pass wrapper (train with either);
    #: ``None`` for ``hooks`` (plain cross-entropy).
    criterion: Callable[..., Any] | None = None
    grad_sample_mode: ResolvedGradSampleMode = "hooks"

    def steps_taken(self) -> int:
        """DP-SGD steps the accountant recorded since :func:`make_private`."""
        return sum(int(steps) for (_sigma, _q, steps) in self.engine.accountant.history)

    def accounted_schedule(self) -> tuple[float, float]:
        """(σ, q) the accountant recorded (raises if nothing was recorded)."""
        history = self.engine.accountant.history
        if not history:
            raise RuntimeError("no DP-SGD step was recorded")
        sigma, q, _ = history[-1]
        return float(sigma), float(q)

    def noise_std(self) -> float:
        """Std of the Gaussian noise added to the *summed* clipped gradients of a step.

        ``σ · √(Σ S_j²)`` for per-layer clipping, ``σ · S`` for flat: Opacus' per-layer
        optimizer stores ``√(Σ S_j²)`` as its ``max_grad_norm``.
        """
        return float(self.optimizer.noise_multiplier * self.optimizer.max_grad_norm)


def make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    *,
    noise_multiplier: float,
    max_grad_norm: float | list[float],
    noise_generator: torch.Generator | None,
    grad_sample_mode: ResolvedGradSampleMode = "hooks",
    steps_per_epoch: int | None = None,
    expected_batch_size: int | None = None,
    secure: bool = False,
    loss_fn: nn.Module | None = None,
) -> PrivateTraining:
    """Attach DP-SGD (Poisson sampling) to fresh training objects.

    A float ``max_grad_norm`` is flat clipping; a list is Opacus' per-layer clipping, one
    bound per trainable parameter tensor (in ``model.parameters()`` order), and the noise
    std becomes ``noise_multiplier · √(Σ S_j²)``. ``loader`` must carry a seeded
    ``generator``: Opacus' Poisson sampler uses it. The returned accountant starts empty;
    the caller's ledger holds the history.

    ``grad_sample_mode="ghost"`` (flat clipping only) uses Opacus' ghost clipping (Li et
    al., "Large Language Models Can Be Strong Differentially Private Learners", ICLR
    2022): per-sample gradient norms without per-sample gradients, then a second
    backward pass with the clipping coefficients. The privacy semantics are those of
    ``hooks``: the same per-sample bound S, noise std σ·S on the summed clipped
    gradients, the same Poisson batches and the same accountant events. Train with the
    returned ``criterion``.

    ``steps_per_epoch`` replaces Opacus' data-dependent schedule (sampling rate
    ``1/len(loader)``) by a public one: Poisson sampling at rate ``1/steps_per_epoch`` with
    that many steps per epoch; ``expected_batch_size`` replaces Opacus' normaliser of the
    noisy sum (``len(dataset) · q``). Both are what ``dp.neighbouring: add_remove`` needs:
    nothing the client releases then depends on its number of examples.

    ``secure=True`` draws the noise and the Poisson batches from the OS CSPRNG
    (:mod:`clients.secure_rng`, fedsim's stand-in for Opacus' ``secure_mode``, with its
    floating-point-attack mitigation): same noise std, batch distribution and accounting,
    but not reproducible — ``noise_generator`` and the loader's generator are not used.

    ``loss_fn`` is the training loss ghost clipping wraps (default cross-entropy).
    """
    if steps_per_epoch is not None:
        loader = _public_schedule_loader(loader, steps_per_epoch)
    if isinstance(max_grad_norm, list):
        trainable = sum(1 for p in model.parameters() if p.requires_grad)
        if len(max_grad_norm) != trainable:
            raise ValueError(
                f"per-layer max_grad_norm needs one bound per trainable tensor ({trainable}); "
                f"got {len(max_grad_norm)}"
            )
        clipping = "per_layer"
        if grad_sample_mode != "hooks":
            raise ValueError("ghost clipping supports flat clipping only (one float bound)")
    else:
        clipping = "flat"
    engine = _engine(grad_sample_mode, secure)
    common: dict[str, Any] = {
        "module": model,
        "optimizer": optimizer,
        "data_loader": loader,
        "noise_multiplier": noise_multiplier,
        "max_grad_norm": max_grad_norm,
        "poisson_sampling": steps_per_epoch is None,  # else already Poisson
        "noise_generator": noise_generator,
        "clipping": clipping,
    }
    if grad_sample_mode in ("ghost", "bookkeeping"):
        wrapped, dp_optimizer, criterion, dp_loader = engine.make_private(
            **common,
            grad_sample_mode="ghost",
            criterion=loss_fn if loss_fn is not None else nn.CrossEntropyLoss(),
        )
    else:
        wrapped, dp_optimizer, dp_loader = engine.make_private(**common)
        criterion = None
    if expected_batch_size is not None:
        dp_optimizer.expected_batch_size = expected_batch_size
    if secure and not is_secure(dp_optimizer, dp_loader):
        raise RuntimeError("Opacus bypassed SecurePrivacyEngine's factories; secure mode is off")
    return PrivateTraining(
        model=wrapped,
        optimizer=dp_optimizer,
        loader=dp_loader,
        engine=engine,
        criterion=criterion,
        grad_sample_mode=grad_sample_mode,
    )


def _engine(grad_sample_mode: ResolvedGradSampleMode, secure: bool) -> PrivacyEngine:
    """The Opacus engine for ``grad_sample_mode`` (one-pass ghost for ``bookkeeping``)."""
    if grad_sample_mode == "bookkeeping":
        one_pass = SecureBookkeepingPrivacyEngine if secure else BookkeepingPrivacyEngine
        return one_pass(accountant="rdp")
    return SecurePrivacyEngine(accountant="rdp") if secure else PrivacyEngine(accountant="rdp")


def _public_schedule_loader(loader: DataLoader, steps: int) -> DPDataLoader:
    """A Poisson loader over ``loader``'s dataset with rate ``1/steps`` and ``steps`` batches.

    Opacus records the rate ``1/len(loader)``; ``int(1/q)`` must give back ``steps``, so q
    is nudged down by ulps where floating point would round ``1/(1/steps)`` below
    ``steps`` (a smaller true rate than the one accounted: conservative).
    """
    if steps < 1:
        raise ValueError(f"steps_per_epoch must be >= 1; got {steps}")
    q = 1.0 / steps
    while int(1 / q) < steps:
        q = math.nextafter(q, 0.0)
    dp_loader = DPDataLoader(
        loader.dataset, sample_rate=q, generator=loader.generator, collate_fn=loader.collate_fn
    )
    if len(dp_loader) != steps:  # Opacus changed how it derives the step count
        raise RuntimeError(f"Poisson loader has {len(dp_loader)} steps, expected {steps}")
    return dp_loader


def ghost_supported(model: nn.Module) -> bool:
    """Whether Opacus' ghost clipping can wrap ``model`` (every trainable layer supported)."""
    return not GradSampleModuleFastGradientClipping.validate(model, strict=False)


def resolve_grad_sample_mode(
    requested: GradSampleMode, flat: bool, model: nn.Module
) -> ResolvedGradSampleMode:
    """The mode to use for ``dp.grad_sample_mode`` = ``requested``.

    ``auto`` picks ghost clipping where it can be used — flat clipping and every trainable
    layer supported by Opacus' ghost clipping — and was measured faster: the model declares
    :func:`~fedsim.models.base.prefers_ghost_clipping`; its one-pass form ``bookkeeping``
    where :func:`~clients.bookkeeping.bookkeeping_supported` (else two-pass ``ghost``).
    Elsewhere (per-layer clipping, an unsupported layer, an undeclared model) it picks
    hooks. Measured on the 2-core machine (torch 2.14.1, opacus 1.6) with
    ``PYTHONPATH=. python benchmarks/ghost_clipping.py --threads T --repeats 5`` (batch
    64, 28×28, 10 classes, median of 20 steps × 5 alternating repeats), ghost/hooks step
    time: CNN 0.40 (T=1) and 0.43 (T=2), MLP 0.06 and 0.10; bookkeeping/ghost on the CNN
    ~0.8 (``benchmarks/dp_step.py``). The resnets keep hooks under ``auto``: at batch 32
    on 32×32×3 ghost took 1.19× the time of hooks on resnet9 and ran out of memory under
    an 8 GB limit on resnet18 (its GroupNorm layers still materialise per-sample
    gradients, next to the ghost norms of large convolutions).

    ``ghost`` and ``bookkeeping`` fall back to hooks, with a warning, where they cannot be
    used. The privacy audit needs per-sample gradients and asks for ``hooks`` itself
    (:func:`override_grad_samples`).
    """
    if requested == "hooks":
        return "hooks"
    usable = flat and ghost_supported(model)
    if requested in ("ghost", "bookkeeping"):
        if requested == "bookkeeping":
            usable = usable and bookkeeping_supported(model)
        if not usable:
            logger.warning("%s clipping cannot be used here; falling back to hooks", requested)
        return requested if usable else "hooks"
    if not (usable and prefers_ghost_clipping(model)):
        return "hooks"
    return "bookkeeping" if bookkeeping_supported(model) else "ghost"


def override_grad_samples(model: nn.Module, rows: torch.Tensor, values: list[torch.Tensor]) -> None:
    """Replace the per-sample gradients of batch ``rows`` (after ``backward``, before the
    optimizer clips them): ``values[i]`` holds those rows' gradients of the ``i``-th
    trainable tensor. Needs per-sample gradients (``hooks``); used by the privacy audit."""
    if not bool(rows.any()):
        return
    params = [p for p in model.parameters() if p.requires_grad]
    if len(params) != len(values):
        raise ValueError(f"need one value per trainable tensor ({len(params)}); got {len(values)}")
    for p, value in zip(params, values, strict=True):
        grad_sample = getattr(p, "grad_sample", None)
        if not isinstance(grad_sample, torch.Tensor):
            raise RuntimeError("per-sample gradients are not materialised (use hooks)")
        grad_sample[rows.to(grad_sample.device)] = value.to(grad_sample)


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU state_dict of ``model`` without Opacus' wrapper prefix (hooks or ghost)."""
    inner = model._module if isinstance(model, AbstractGradSampleModule) else model
    return {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()}


@contextlib.contextmanager
def plain_view(model: nn.Module) -> Iterator[nn.Module]:
    """The plain module inside ``model`` with Opacus' per-sample-gradient hooks disabled.

    For computing input gradients (adversarial examples) during DP-SGD without touching
    ``grad_sample``: the hooks are switched off for the block and switched back on after.
    A non-Opacus model is yielded as is.
    """
    if not isinstance(model, AbstractGradSampleModule) or not hasattr(model, "disable_hooks"):
        yield model
        return
    was_enabled = model.hooks_enabled
    model.disable_hooks()
    try:
        yield model._module
    finally:
        if was_enabled:
            model.enable_hooks()
