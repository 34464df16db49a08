"""Gaussian noise from the operating system's cryptographically secure generator.

``os.urandom`` (the kernel's CSPRNG) supplies 53-bit uniforms; Box–Muller turns them into
standard normals in float64. As in Opacus' secure mode, each returned value is the sum of
four independent normals divided by two (same variance), which defeats the
floating-point attacks on single Gaussian samples (Jin et al., 2112.05307; Holohan &
Braghin, 2107.10138). Nobody — not the coordinator, not another site, not a reader of the
run directory — can regenerate this noise; it is never reproducible.
"""

from __future__ import annotations

import math
import os

import numpy as np

_TWO_53 = float(2**53)


def secure_uniform(count: int) -> np.ndarray:
    """``count`` uniforms in the open interval (0, 1) from ``os.urandom`` (float64)."""
    if count < 0:
        raise ValueError(f"count must be >= 0; got {count}")
    words = np.frombuffer(os.urandom(8 * count), dtype=np.uint64)
    return ((words >> np.uint64(11)).astype(np.float64) + 0.5) / _TWO_53


def _standard_normal(count: int) -> np.ndarray:
    pairs = (count + 1) // 2
    u1, u2 = secure_uniform(pairs), secure_uniform(pairs)
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * math.pi * u2
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]


def secure_normal(shape: tuple[int, ...], std: float) -> np.ndarray:
    """Normal noise N(0, std²) of ``shape`` (float64) from the OS CSPRNG.

    Each value is ``(z1 + z2 + z3 + z4) / 2`` for four independent standard normals.
    """
    if std < 0:
        raise ValueError(f"std must be >= 0; got {std}")
    count = int(np.prod(shape, dtype=np.int64))
    z = _standard_normal(4 * count).reshape(4, count).sum(axis=0) / 2.0
    return (std * z).reshape(shape)
