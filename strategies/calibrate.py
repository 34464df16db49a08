"""``strategy.calibrate: threshold``: the aggregate's decision threshold set on the server's
validation split after every aggregation (:mod:`fedsim.calibration`)."""

from __future__ import annotations

import logging

import numpy as np
import torch
from flwr.app import ArrayRecord

from fedsim.calibration import balanced_threshold, shift_binary_bias
from fedsim.data import DatasetBundle
from fedsim.devices import pick_device
from fedsim.models import build_model

logger = logging.getLogger(__name__)


@torch.no_grad()
def calibrated(
    model_name: str, data: DatasetBundle, arrays: ArrayRecord, server_round: int
) -> ArrayRecord:
    """``arrays`` with the output biases shifted so that the binary decision threshold has
    the best balanced accuracy on ``data.val`` (the model's last tensor is its output
    bias, a contract of every registered model)."""
    state = arrays.to_torch_state_dict()
    probe = build_model(model_name, data.input_shape, data.num_classes, seed=0)
    probe.load_state_dict(state)
    probe.eval()
    device = pick_device()
    probe.to(device)
    margins = []
    for start in range(0, len(data.val), 512):
        x = torch.tensor(data.val.x[start : start + 512], device=device)
        logits = probe(x).double()
        margins.append((logits[:, 1] - logits[:, 0]).cpu().numpy())
    threshold = balanced_threshold(np.concatenate(margins), data.val.y)
    key = list(state)[-1]
    bias = state[key].detach().cpu().numpy()
    state[key] = torch.from_numpy(shift_binary_bias(bias, threshold)).to(state[key].dtype)
    logger.info(
        "round %d: decision threshold moved by %.4g (validation split)", server_round, threshold
    )
    return ArrayRecord(state)
