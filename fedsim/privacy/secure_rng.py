"""Randomness nobody else can regenerate: normals and uniforms from the OS's CSPRNG.

``os.urandom`` (the kernel's cryptographically secure generator) supplies 53-bit
uniforms; Box–Muller turns them into normals in float64. As in Opacus' secure mode, each
returned normal is the sum of four draws divided by two (same variance), which hides the
floating-point lattice of a single Box–Muller output (Holohan & Braghin, "Secure Random
Sampling in Differential Privacy", ESORICS 2021, arXiv:2107.10138 §5.1, against the
attack of Jin et al., IEEE S&P 2022, arXiv:2112.05307). Pure functions of the random bytes
they are given (``randbytes``), so they can be tested with fixed bytes; the server's
central-DP noise (:mod:`strategies.central_dp`) and the clients' DP-SGD noise and Poisson
masks (:mod:`clients.secure_rng`) all come from here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import numpy as np

#: Source of random bytes: the OS CSPRNG (``getrandom``/``/dev/urandom``).
RandBytes = Callable[[int], bytes]
_MANTISSA_BITS = 53
_DRAWS = 4  # Opacus' secure mode: 2n Gaussian draws with n = 2, summed, divided by √(2n) = 2


def uniforms_from_bytes(raw: bytes) -> np.ndarray:
    """53-bit uniforms in [0, 1) from random bytes, 8 bytes (little-endian) per value.

    The top 53 bits ``k`` of each 64-bit word give ``k · 2⁻⁵³``: every value of the grid
    ``{0, 2⁻⁵³, …, 1 − 2⁻⁵³}`` is equally likely and exactly representable in float64.
    """
    if len(raw) % 8:
        raise ValueError(f"raw must hold a multiple of 8 bytes; got {len(raw)}")
    words = np.frombuffer(raw, dtype="<u8") >> np.uint64(64 - _MANTISSA_BITS)
    return words.astype(np.float64) * 2.0**-_MANTISSA_BITS


def box_muller(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Standard normals from uniforms in [0, 1) (Box & Muller, 1958), float64.

    Radius ``√(−2 ln(1 − u1))`` (``1 − u1`` lies in (0, 1], so the logarithm is finite) and
    angle ``2π u2``; returns ``r cos θ`` followed by ``r sin θ``: ``2 · len(u1)`` values.
    """
    radius = np.sqrt(-2.0 * np.log1p(-u1))
    angle = (2.0 * math.pi) * u2
    out = np.empty(2 * len(u1), dtype=np.float64)
    np.multiply(radius, np.cos(angle), out=out[: len(u1)])
    np.multiply(radius, np.sin(angle), out=out[len(u1) :])
    return out


def standard_normal(n: int, randbytes: RandBytes = os.urandom) -> np.ndarray:
    """``n`` N(0, 1) values in float64, each the sum of 4 Box–Muller draws divided by 2.

    Summing ``2m`` Gaussians (m = 2, as Opacus' secure mode does) hides the floating-point
    lattice of a single Box–Muller output that the attack of arXiv:2112.05307 exploits;
    dividing by ``√(2m) = 2`` keeps the variance 1. Consumes ``32 · n`` random bytes.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    u = uniforms_from_bytes(randbytes(8 * _DRAWS * n))
    pairs = _DRAWS * n // 2
    draws = box_muller(u[:pairs], u[pairs:])
    return draws.reshape(_DRAWS, n).sum(axis=0) / math.sqrt(_DRAWS)


def poisson_indices(uniforms: np.ndarray, sample_rate: float) -> list[int]:
    """Indices ``i`` with ``uniforms[i] < sample_rate``: a Poisson-sampled batch."""
    return np.flatnonzero(uniforms < sample_rate).tolist()


def opacus_steps(sample_rate: float) -> int:
    """Batches per epoch of Opacus' Poisson sampler: ``int(1 / sample_rate)`` (truncated)."""
    return int(1 / sample_rate)


def secure_normal(shape: Sequence[int], std: float) -> np.ndarray:
    """N(0, std²) noise of ``shape`` (float64) from the OS CSPRNG (:func:`standard_normal`)."""
    if not math.isfinite(std) or std < 0:
        raise ValueError(f"std must be finite and >= 0; got {std}")
    size = tuple(int(d) for d in shape)
    if std == 0:
        return np.zeros(size)
    return (standard_normal(math.prod(size)) * std).reshape(size)
