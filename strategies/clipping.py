"""Server side of the clipping variants: the per-tensor bounds sent with each round.

For ``dp.clipping`` ``per_layer_uniform`` and ``per_layer_adaptive`` the server decides the
per-tensor bounds ``S_j`` (``√(Σ S_j²) = dp.max_grad_norm``) and sends them in every
round's train config under :data:`fedsim.keys.CLIP_BOUNDS`; clients clip with them through
Opacus' per-layer mode. ``flat`` sends nothing. For ``per_layer_adaptive`` the bounds follow
the current global model's per-sample gradient norms on ``dp.adaptive_samples`` examples of
the server's validation split — public to the server, so the bounds cost no client privacy
(see :mod:`fedsim.clipping`). The math lives in :mod:`fedsim.clipping`; this module only
builds the model and picks the samples.
"""

from __future__ import annotations

import logging

import torch
from flwr.app import ArrayRecord

from fedsim.clipping import (
    adaptive_thresholds,
    per_tensor_grad_magnitudes,
    trainable_tensor_names,
    uniform_thresholds,
)
from fedsim.config import DPConfig
from fedsim.data import DatasetBundle
from fedsim.models import build_model
from fedsim.seeding import numpy_rng

logger = logging.getLogger(__name__)


def round_clip_bounds(
    dp: DPConfig,
    model_name: str,
    data: DatasetBundle,
    seed: int,
    server_round: int,
    arrays: ArrayRecord,
) -> list[float] | None:
    """The per-tensor bounds of this round, or ``None`` for flat clipping / no DP.

    Parameters
    ----------
    dp
        ``dp.clipping``, ``dp.max_grad_norm``, ``dp.adaptive_samples``.
    model_name, data
        The network and the server's data (its validation split measures the magnitudes).
    seed, server_round
        Seed the choice of validation samples (a fresh subset each round).
    arrays
        The global model that the clients receive this round.
    """
    if not dp.enabled or dp.clipping == "flat":
        return None
    bundle = data
    model = build_model(model_name, bundle.input_shape, bundle.num_classes, seed=0)
    names = trainable_tensor_names(model)
    if dp.clipping == "per_layer_uniform":
        bounds = uniform_thresholds(dp.max_grad_norm, len(names))
    else:
        model.load_state_dict(arrays.to_torch_state_dict())
        val = bundle.val
        n = min(dp.adaptive_samples, len(val.y))
        idx = numpy_rng(seed, "clip-val-samples", server_round).choice(
            len(val.y), size=n, replace=False
        )
        idx.sort()
        x = torch.from_numpy(val.x[idx])
        y = torch.from_numpy(val.y[idx]).long()
        magnitudes = per_tensor_grad_magnitudes(model, x, y)
        bounds = adaptive_thresholds(dp.max_grad_norm, magnitudes)
        logger.info(
            "round %d: per-tensor gradient magnitudes on %d validation samples: %s",
            server_round,
            n,
            ", ".join(f"{k}={m:.4g}" for k, m in zip(names, magnitudes, strict=True)),
        )
    logger.info(
        "round %d: %s clipping bounds (overall %g): %s",
        server_round,
        dp.clipping,
        dp.max_grad_norm,
        ", ".join(f"{k}={s:.4g}" for k, s in zip(names, bounds, strict=True)),
    )
    return bounds
