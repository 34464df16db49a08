"""Audit canaries: which are inserted, their random directions, and their scores.

A canary ``j`` of a run is a fixed random unit direction ``u_j`` in the space of the
audited arrays (the model's floating-point arrays for a user-level audit, its trainable
parameters for a sample-level one), drawn from the root seed. Each of the
``audit.canaries`` canaries is inserted independently with probability ½
(:func:`inclusion`), as the one-run audit of Steinke, Nasr & Jagielski (NeurIPS 2023)
requires. The auditor scores every canary — inserted or not — by the projection of what
the run releases onto its direction (:class:`CanaryScores`); inserted canaries should
score higher exactly to the extent that the mechanism leaks.

Directions are regenerated on demand from ``(seed, j)`` (:func:`direction`): nothing of
size ``canaries × parameters`` is kept in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedsim.config import Config
from fedsim.seeding import derive_seed, numpy_rng

#: ``(name, shape)`` of every audited array, in order: the layout of a flat vector.
Layout = tuple[tuple[str, tuple[int, ...]], ...]


def layout_of(
    arrays: Mapping[str, np.ndarray | torch.Tensor], names: Iterable[str] | None = None
) -> Layout:
    """The layout of the floating-point arrays of ``arrays`` (only ``names`` if given)."""
    keep = None if names is None else set(names)
    out = []
    for name, arr in arrays.items():
        floating = (
            arr.is_floating_point()
            if isinstance(arr, torch.Tensor)
            else np.issubdtype(np.asarray(arr).dtype, np.floating)
        )
        if floating and (keep is None or name in keep):
            out.append((name, tuple(int(d) for d in arr.shape)))
    return tuple(out)


def dimension(layout: Layout) -> int:
    """Number of coordinates of a flat vector of ``layout``."""
    return int(sum(int(np.prod(shape, dtype=np.int64)) for _, shape in layout))


def flatten(arrays: Mapping[str, np.ndarray | torch.Tensor], layout: Layout) -> torch.Tensor:
    """The arrays of ``layout`` concatenated into one float32 vector."""
    parts = [_tensor(arrays[name]).reshape(-1).float() for name, _ in layout]
    return torch.cat(parts) if parts else torch.zeros(0)


def _tensor(value: np.ndarray | torch.Tensor) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))


def unflatten(vector: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """Split a flat vector back into the arrays of ``layout``."""
    out, start = {}, 0
    for name, shape in layout:
        size = int(np.prod(shape, dtype=np.int64))
        out[name] = vector[start : start + size].reshape(shape)
        start += size
    return out


def inclusion(seed: int, count: int) -> np.ndarray:
    """Which of ``count`` canaries are inserted: independent fair coins (boolean array)."""
    return numpy_rng(seed, "audit-inclusion").random(count) < 0.5


def inserted(seed: int, count: int) -> tuple[int, ...]:
    """Indices of the inserted canaries, in increasing order."""
    return tuple(int(j) for j in np.flatnonzero(inclusion(seed, count)))


def direction(seed: int, index: int, dim: int) -> torch.Tensor:
    """Canary ``index``'s unit direction in ``dim`` dimensions (float32, reproducible)."""
    gen = torch.Generator().manual_seed(derive_seed(seed, "audit-canary", index))
    u = torch.randn(dim, generator=gen, dtype=torch.float32)
    return u / torch.linalg.vector_norm(u)


def projections(vector: torch.Tensor, seed: int, count: int) -> np.ndarray:
    """``⟨vector, u_j⟩`` for every canary ``j < count`` (float64)."""
    dim = int(vector.numel())
    v = vector.reshape(-1).float()
    return np.array([float(torch.dot(v, direction(seed, j, dim))) for j in range(count)])


@dataclass
class CanaryScores:
    """Running scores of all canaries: ``sign · Σ_t ⟨Δ_t, u_j⟩`` over the observed
    releases ``Δ_t`` (flat vectors of ``layout``).

    ``sign`` is +1 when an inserted canary pushes the release towards its direction (a
    canary client's update is added to the global model) and −1 when it pushes away (a
    canary record's gradient is descended on).
    """

    seed: int
    count: int
    layout: Layout
    sign: float = 1.0

    def __post_init__(self) -> None:
        self.total = np.zeros(self.count)
        self.observations = 0

    def export_state(self) -> dict[str, Any]:
        """The running totals, as JSON."""
        return {"total": [float(x) for x in self.total], "observations": self.observations}

    def restore_state(self, doc: Mapping[str, Any]) -> None:
        """Take the totals :meth:`export_state` wrote."""
        self.total = np.asarray(doc["total"], dtype=np.float64)
        self.observations = int(doc["observations"])

    def add(self, delta: Mapping[str, np.ndarray | torch.Tensor]) -> None:
        """Score one observed release ``delta`` (arrays by name)."""
        self.total += self.sign * projections(flatten(delta, self.layout), self.seed, self.count)
        self.observations += 1


def canary_clients(cfg: Config) -> tuple[int, ...]:
    """The inserted canaries of a user-level audit (``dp.mode: central``), in the order of
    their client ids ``data.num_clients, data.num_clients + 1, …``; empty otherwise."""
    a = cfg.audit
    if not (a.enabled and cfg.dp.enabled and cfg.dp.mode == "central"):
        return ()
    return inserted(cfg.seed, a.canaries)


def federation_size(cfg: Config) -> int:
    """Number of federation members: the clients plus a user-level audit's canary clients."""
    return cfg.data.num_clients + len(canary_clients(cfg))


def canary_of(cfg: Config, client_id: int) -> int | None:
    """The canary index of client ``client_id`` if it is a canary client, else ``None``."""
    offset = client_id - cfg.data.num_clients
    clients = canary_clients(cfg)
    return clients[offset] if 0 <= offset < len(clients) else None
