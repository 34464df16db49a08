"""DP-SGD noise and Poisson sampling drawn from the operating system's CSPRNG.

Opacus' ``PrivacyEngine(secure_mode=True)`` needs ``torchcsprng``, which has no build for
the torch/Python used here. This module is fedsim's secure mode instead:

* :func:`secure_normal` — Gaussian noise from ``os.urandom``: 53-bit uniforms, Box–Muller
  in float64, and the floating-point-attack mitigation of Opacus' secure mode (each value
  is the sum of 4 draws divided by 2, Holohan & Braghin, "Secure Random Sampling in
  Differential Privacy", ESORICS 2021, arXiv:2107.10138 §5.1; against the attack of Jin et
  al., "Are We There Yet? Timing and Floating-Point Attacks on Differential Privacy
  Systems", IEEE S&P 2022, arXiv:2112.05307).
* :class:`SecurePoissonSampler` — Opacus' ``UniformWithReplacementSampler`` with masks from
  ``os.urandom``.
* :class:`SecurePrivacyEngine` — a ``PrivacyEngine`` whose optimizer (one small subclass
  per Opacus optimizer class) adds :func:`secure_normal` noise and whose loader samples
  with :class:`SecurePoissonSampler`. Only :mod:`clients.opacus_adapter` uses it.

The randomness is not reproducible by design: no seed or generator reaches it.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from opacus import PrivacyEngine
from opacus.optimizers import (
    DPOptimizer,
    DPOptimizerFastGradientClipping,
    DPPerLayerOptimizer,
    get_optimizer_class,
)
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch.utils.data import DataLoader, Sampler

from fedsim.privacy.secure_rng import (
    opacus_steps,
    poisson_indices,
    standard_normal,
    uniforms_from_bytes,
)

# --- CSPRNG-backed noise and sampling ----------------------------------------------------


def secure_normal(
    shape: Sequence[int], std: float, *, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """Gaussian noise N(0, std²) of ``shape`` from the OS CSPRNG.

    Parameters
    ----------
    shape
        Shape of the returned tensor.
    std
        Standard deviation (finite, ≥ 0); ``0`` returns zeros without drawing.
    dtype, device
        Of the returned tensor; the noise is computed in float64 and cast once.

    Returns
    -------
    torch.Tensor
        Independent N(0, std²) values, each the 4-draw sum of :func:`standard_normal`.
    """
    if not math.isfinite(std) or std < 0:
        raise ValueError(f"std must be finite and >= 0; got {std}")
    size = tuple(int(s) for s in shape)
    if std == 0:
        return torch.zeros(size, dtype=dtype, device=device)
    values = standard_normal(math.prod(size)) * std
    return torch.from_numpy(values.reshape(size)).to(device=device, dtype=dtype)


class SecurePoissonSampler(Sampler[list[int]]):
    """Poisson (Sampled Gaussian Mechanism) batch sampler with masks from the OS CSPRNG.

    Mirrors Opacus' ``UniformWithReplacementSampler``: ``steps`` batches per epoch
    (default ``int(1 / sample_rate)``, as Opacus), each record included in each batch
    independently with probability ``sample_rate``; batches may be empty.
    """

    def __init__(self, *, num_samples: int, sample_rate: float, steps: int | None = None):
        if num_samples <= 0:
            raise ValueError(f"num_samples must be > 0; got {num_samples}")
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1]; got {sample_rate}")
        if steps is not None and steps <= 0:
            raise ValueError(f"steps must be > 0; got {steps}")
        self.num_samples = num_samples
        self.sample_rate = sample_rate
        self.steps = opacus_steps(sample_rate) if steps is None else steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            u = uniforms_from_bytes(os.urandom(8 * self.num_samples))
            yield poisson_indices(u, self.sample_rate)


def with_secure_sampler(loader: DataLoader) -> DataLoader:
    """A copy of Opacus' Poisson ``loader`` whose batches come from the OS CSPRNG.

    The Opacus ``UniformWithReplacementSampler`` is replaced by a
    :class:`SecurePoissonSampler` with the same records, sample rate and steps; dataset,
    collate function (Opacus' empty-batch wrapper) and worker settings are kept. The
    loader's ``generator`` is kept only for worker seeding; it plays no part in sampling.
    """
    sampler = loader.batch_sampler
    if not isinstance(sampler, UniformWithReplacementSampler):
        raise ValueError(
            "secure sampling needs Opacus' Poisson sampler (poisson_sampling=True, not "
            f"distributed); got batch_sampler {type(sampler).__name__}"
        )
    secure = SecurePoissonSampler(
        num_samples=sampler.num_samples, sample_rate=sampler.sample_rate, steps=sampler.steps
    )
    return DataLoader(
        loader.dataset,
        batch_sampler=secure,
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers,
    )


# --- Opacus optimizers with secure noise -------------------------------------------------


def _store_noised_grads(optimizer: Any, std: float) -> None:
    """``p.grad = p.summed_grad + secure_normal(std)`` for every parameter.

    OPACUS INTERNALS (opacus 1.6): this repeats the loop of ``DPOptimizer.add_noise``
    (also that of ``DPOptimizerFastGradientClipping.add_noise``) with
    :func:`secure_normal` in place of ``opacus.optimizers.optimizer._generate_noise``. It
    relies on the clipped sum living in ``p.summed_grad`` and on the private helpers
    ``_check_processed_flag`` / ``_mark_as_processed`` (which refuse a second step without
    ``zero_grad``). ``tests/test_secure_rng.py`` checks each secure optimizer against
    Opacus' own ``add_noise`` (same noise source, bit-identical gradients) and fails if
    Opacus changes this.
    """
    for p in optimizer.params:
        _check_processed_flag(p.summed_grad)
        grad = p.summed_grad
        z = secure_normal(grad.shape, std, dtype=grad.dtype, device=grad.device)
        p.grad = (grad + z).view_as(p)
        _mark_as_processed(p.summed_grad)


class SecureDPOptimizer(DPOptimizer):
    """Opacus' flat-clipping ``DPOptimizer`` with :func:`secure_normal` noise, std σ·C."""

    def add_noise(self) -> None:
        _store_noised_grads(self, self.noise_multiplier * self.max_grad_norm)


class SecureDPPerLayerOptimizer(DPPerLayerOptimizer):
    """Opacus' per-layer-clipping optimizer with :func:`secure_normal` noise.

    Its ``max_grad_norm`` is ``√(Σ S_j²)`` (set by Opacus), so the std is σ·√(Σ S_j²).
    """

    def add_noise(self) -> None:
        _store_noised_grads(self, self.noise_multiplier * self.max_grad_norm)


class SecureDPOptimizerFastGradientClipping(DPOptimizerFastGradientClipping):
    """Opacus' ghost-clipping optimizer with :func:`secure_normal` noise, std σ·C.

    Like Opacus, an ``_adjusted_noise_multiplier`` set by adaptive clipping replaces σ for
    the noise (never set by fedsim).
    """

    def add_noise(self) -> None:
        sigma = getattr(self, "_adjusted_noise_multiplier", self.noise_multiplier)
        _store_noised_grads(self, sigma * self.max_grad_norm)


_SECURE_OPTIMIZERS: dict[type, type] = {
    DPOptimizer: SecureDPOptimizer,
    DPPerLayerOptimizer: SecureDPPerLayerOptimizer,
    DPOptimizerFastGradientClipping: SecureDPOptimizerFastGradientClipping,
}


def secure_optimizer_class(opacus_class: type) -> type:
    """The secure subclass of an Opacus optimizer class (exact class match only).

    Subclasses with their own ``add_noise`` (e.g. ``AdaClipDPOptimizer``) and the
    distributed optimizers are refused rather than silently given the parent's noise.
    """
    try:
        return _SECURE_OPTIMIZERS[opacus_class]
    except KeyError:
        valid = ", ".join(c.__name__ for c in _SECURE_OPTIMIZERS)
        raise ValueError(
            f"secure noise supports the Opacus optimizers {valid}; got {opacus_class.__name__}"
        ) from None


def is_secure(optimizer: torch.optim.Optimizer, loader: DataLoader) -> bool:
    """Whether ``optimizer`` adds secure noise and ``loader`` samples securely."""
    return isinstance(optimizer, tuple(_SECURE_OPTIMIZERS.values())) and isinstance(
        loader.batch_sampler, SecurePoissonSampler
    )


class SecurePrivacyEngine(PrivacyEngine):
    """``PrivacyEngine`` with :func:`secure_normal` noise and :class:`SecurePoissonSampler`.

    Stands in for ``PrivacyEngine(secure_mode=True)`` (which needs ``torchcsprng``) at the
    same two places Opacus' own secure mode acts: the optimizer's noise and the loader's
    sampler. ``noise_generator`` is ignored; accounting is Opacus' unchanged.

    OPACUS INTERNALS (opacus 1.6): overrides the factory methods ``_prepare_optimizer``
    and ``_prepare_data_loader`` that ``PrivacyEngine.make_private`` calls. Their
    parameters are pinned by ``tests/test_secure_rng.py``, and
    :func:`clients.opacus_adapter.make_private` checks :func:`is_secure` on the result, so
    a renamed factory makes ``secure=True`` fail loudly instead of running insecurely.
    """

    def __init__(self, *, accountant: str = "rdp") -> None:
        with warnings.catch_warnings():
            # Opacus warns that *its* secure RNG is off; ours is on.
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            super().__init__(accountant=accountant, secure_mode=False)

    def _prepare_optimizer(
        self,
        *,
        optimizer: torch.optim.Optimizer,
        clipping: str = "flat",
        distributed: bool = False,
        grad_sample_mode: str = "hooks",
        noise_generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> DPOptimizer:
        del noise_generator  # the noise comes from the OS, never from a seeded generator
        if isinstance(optimizer, DPOptimizer):
            optimizer = optimizer.original_optimizer
        opacus_class = get_optimizer_class(
            clipping=clipping, distributed=distributed, grad_sample_mode=grad_sample_mode
        )
        secure_class = secure_optimizer_class(opacus_class)
        return secure_class(optimizer=optimizer, generator=None, secure_mode=False, **kwargs)

    def _prepare_data_loader(self, data_loader: DataLoader, **kwargs: Any) -> DataLoader:
        return with_secure_sampler(super()._prepare_data_loader(data_loader, **kwargs))
