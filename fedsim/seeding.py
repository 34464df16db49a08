"""Deterministic seeds split from one root seed.

Every stochastic step in fedsim draws from a generator seeded by
``derive_seed(root, purpose, *ids)``: the same root seed, purpose and ids give the same
stream, independent of process, thread or call order. No global RNG is touched.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def _purpose_code(purpose: str) -> int:
    return int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:4], "little")


def derive_seed(root: int, purpose: str, *ids: int) -> int:
    """A 63-bit seed for ``purpose`` (e.g. ``"train"``) and ``ids`` (e.g. client, round).

    >>> derive_seed(0, "train", 1, 2) == derive_seed(0, "train", 1, 2)
    True
    >>> derive_seed(0, "train", 1, 2) != derive_seed(0, "train", 2, 1)
    True
    """
    ss = np.random.SeedSequence([root, _purpose_code(purpose), *[int(i) for i in ids]])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def numpy_rng(root: int, purpose: str, *ids: int) -> np.random.Generator:
    """A NumPy generator for ``purpose`` and ``ids``."""
    return np.random.default_rng(derive_seed(root, purpose, *ids))


def torch_generator(root: int, purpose: str, *ids: int, device: str = "cpu") -> torch.Generator:
    """A torch generator for ``purpose`` and ``ids`` on ``device``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(root, purpose, *ids))
    return gen
