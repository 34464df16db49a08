"""Canary records inside the audited client's DP-SGD (``audit`` under sample-level DP).

Each inserted canary ``j`` (:func:`fedsim.audit.canaries.inserted`) is one extra record of
the audited client's training data: a blank input with the marker label ``-(j+1)``. It is
Poisson-sampled like every record; when it is in a batch, its per-sample gradient is
replaced — after the backward pass, before Opacus clips, sums and noises — by
``scale · C · u_j``, a fixed direction whose norm exceeds the clipping bound C, so Opacus
clips it to exactly ``C · u_j``. Everything else is fedsim's normal DP-SGD path: the same
Opacus adapter, the same clipping, noise and accounting. The schedule of the audited
client is planned for ``n + canaries`` records whatever number is inserted, so that
inserting one canary changes nothing else (the add/remove relation the one-run audit
tests). Canaries are never scored, valued or counted in the client's reported size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedsim.audit.canaries import (
    Layout,
    dimension,
    direction,
    flatten,
    inserted,
    layout_of,
    unflatten,
)
from fedsim.config import Config


@dataclass(frozen=True)
class CanaryRecords:
    """The inserted canaries of the audited client and how to make their gradients."""

    seed: int
    count: int
    indices: tuple[int, ...]
    norm: float
    layout: Layout

    def data(self, input_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of the canary records: blank inputs, labels ``-(j+1)``."""
        x = torch.zeros((len(self.indices), *input_shape), dtype=torch.float32)
        y = torch.tensor([-(j + 1) for j in self.indices], dtype=torch.int64)
        return x, y

    def gradients(self, labels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The batch rows holding canaries and, per trainable tensor (in layout order), the
        gradients ``norm · u_j`` of those rows (shape ``[rows, *tensor shape]``)."""
        rows = labels < 0
        index = (-labels[rows] - 1).tolist()
        dim = sum(int(np.prod(s)) for _, s in self.layout)
        parts: list[list[torch.Tensor]] = [[] for _ in self.layout]
        for j in index:
            arrays = unflatten(self.norm * direction(self.seed, int(j), dim), self.layout)
            for i, (name, _) in enumerate(self.layout):
                parts[i].append(arrays[name])
        shapes = [shape for _, shape in self.layout]
        stacked = [
            torch.stack(p) if p else torch.zeros((0, *shape))
            for p, shape in zip(parts, shapes, strict=True)
        ]
        return rows, stacked


def canary_records(cfg: Config, client_id: int, model: nn.Module) -> CanaryRecords | None:
    """The canaries client ``client_id`` trains with (``None`` unless it is audited)."""
    audit = cfg.audit
    if not (audit.enabled and cfg.dp.enabled and cfg.dp.mode == "sample"):
        return None
    if client_id != audit.client:
        return None
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return CanaryRecords(
        seed=cfg.seed,
        count=audit.canaries,
        indices=inserted(cfg.seed, audit.canaries),
        norm=audit.scale * cfg.dp.max_grad_norm,
        layout=layout_of(dict(model.named_parameters()), trainable),
    )


def canary_upload(
    cfg: Config, canary: int, global_arrays: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """What canary client ``canary`` uploads under a user-level audit: the global model
    plus ``audit.scale · C · u_canary`` over all floating arrays (clipped to ``C · u`` by the
    server, like every update). It trains on nothing."""
    layout = layout_of(global_arrays)
    moved = flatten(global_arrays, layout) + (
        cfg.audit.scale * cfg.dp.max_grad_norm * direction(cfg.seed, canary, dimension(layout))
    )
    out = {k: np.array(v, copy=True) for k, v in global_arrays.items()}
    for name, value in unflatten(moved, layout).items():
        out[name] = value.numpy().astype(out[name].dtype)
    return out
