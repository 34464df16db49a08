"""Server optimizers: FedAvgM and FedAdam as pure functions over model arrays.

The aggregation rule's result ``a`` is read as a pseudo-gradient ``Δ = a − w`` of the
global model ``w`` (Hsu et al., 2019, "Measuring the effects of non-identical data
distribution", FedAvgM; Reddi et al., ICLR 2021, "Adaptive federated optimization",
FedAdam), and the server steps with it:

- ``momentum``: ``m ← β₁·m + Δ``, ``w ← w + η·m``;
- ``adam``: ``m ← β₁·m + (1 − β₁)·Δ``, ``v ← β₂·v + (1 − β₂)·Δ²``,
  ``w ← w + η·m / (√v + τ)`` (no bias correction, as in Reddi et al.).

Both are post-processing of the released aggregate: no privacy cost. Only floating-point
arrays step; integer buffers take the aggregate's value. The state is a frozen value that
serialises to JSON (float32 arrays as base64) for the run's checkpoint.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsim.config import ServerOptimizerName, StrategyConfig

__all__ = ["ServerOptState", "ServerOptimizer", "server_step"]


@dataclass(frozen=True)
class ServerOptimizer:
    """The optimizer and its hyper-parameters (``strategy.server_*``)."""

    name: ServerOptimizerName = "none"
    lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    @classmethod
    def of(cls, st: StrategyConfig) -> ServerOptimizer:
        """The optimizer ``strategy.server_*`` configures."""
        return cls(
            st.server_optimizer, st.server_lr, st.server_momentum, st.server_beta2, st.server_tau
        )


@dataclass(frozen=True)
class ServerOptState:
    """The moments carried between rounds (empty before the first step)."""

    first: Mapping[str, np.ndarray] = field(default_factory=dict)
    second: Mapping[str, np.ndarray] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready document (float32 arrays as base64 with their shapes)."""
        return {"first": _encode(self.first), "second": _encode(self.second)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ServerOptState:
        """The state :meth:`to_json` wrote."""
        return cls(_decode(doc.get("first", {})), _decode(doc.get("second", {})))


def server_step(
    opt: ServerOptimizer,
    current: Mapping[str, np.ndarray],
    aggregate: Mapping[str, np.ndarray],
    state: ServerOptState,
) -> tuple[dict[str, np.ndarray], ServerOptState]:
    """The next global model and optimizer state from the global model ``current`` and
    the aggregation rule's ``aggregate`` (same keys and shapes).

    >>> opt = ServerOptimizer("momentum", lr=1.0, beta1=0.5)
    >>> w, s = server_step(opt, {"w": np.zeros(1)}, {"w": np.ones(1)}, ServerOptState())
    >>> w2, _ = server_step(opt, w, {"w": w["w"] + 1.0}, s)
    >>> float(w["w"][0]), float(w2["w"][0])
    (1.0, 2.5)
    """
    if opt.name == "none":
        return dict(aggregate), state
    out: dict[str, np.ndarray] = {}
    first: dict[str, np.ndarray] = {}
    second: dict[str, np.ndarray] = {}
    for key, new in aggregate.items():
        if not np.issubdtype(new.dtype, np.floating):
            out[key] = new
            continue
        w = current[key].astype(np.float64)
        delta = new.astype(np.float64) - w
        m_old = state.first.get(key, np.zeros_like(delta)).astype(np.float64)
        if opt.name == "momentum":
            m = opt.beta1 * m_old + delta
            step = m
        else:
            m = opt.beta1 * m_old + (1.0 - opt.beta1) * delta
            v_old = state.second.get(key, np.zeros_like(delta)).astype(np.float64)
            v = opt.beta2 * v_old + (1.0 - opt.beta2) * delta**2
            second[key] = v.astype(np.float32)
            step = m / (np.sqrt(v) + opt.tau)
        first[key] = m.astype(np.float32)
        out[key] = (w + opt.lr * step).astype(new.dtype)
    return out, ServerOptState(first, second)


def _encode(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {
        k: {"shape": list(a.shape), "data": base64.b64encode(a.astype("<f4").tobytes()).decode()}
        for k, a in arrays.items()
    }


def _decode(doc: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {
        k: np.frombuffer(base64.b64decode(v["data"]), dtype="<f4").reshape(v["shape"]).copy()
        for k, v in doc.items()
    }
