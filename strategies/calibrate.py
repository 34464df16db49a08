"""``strategy.calibrate: threshold``: the released model's decision threshold, set on the
server's validation split (:mod:`fedsim.calibration`).

The ServerApp applies it to every model it evaluates and to the final ``model.pt``; the
clients keep training the uncalibrated global model (so the training trajectory, the
AUC and the resume checkpoints are those of the run without calibration).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from fedsim.calibration import balanced_threshold, shift_binary_bias
from fedsim.config import Config
from fedsim.data import DatasetBundle

logger = logging.getLogger(__name__)


@torch.no_grad()
def calibrated_state(
    model: nn.Module, state: Mapping[str, torch.Tensor], data: DatasetBundle
) -> dict[str, torch.Tensor]:
    """``state`` with the output biases shifted so that the binary decision threshold has
    the best balanced accuracy on ``data.val`` (the last tensor of every registered
    model's state_dict is its output bias; ``model`` is a scratch network of the same
    architecture, overwritten)."""
    model.load_state_dict(dict(state))
    model.eval()
    device = next(model.parameters()).device
    margins = []
    for start in range(0, len(data.val), 512):
        x = torch.tensor(data.val.x[start : start + 512], device=device)
        logits = model(x).double()
        margins.append((logits[:, 1] - logits[:, 0]).cpu().numpy())
    threshold = balanced_threshold(np.concatenate(margins), data.val.y)
    out = {k: v.detach().clone() for k, v in state.items()}
    key = list(out)[-1]
    bias = out[key].cpu().numpy()
    out[key] = torch.from_numpy(shift_binary_bias(bias, threshold)).to(out[key].dtype)
    logger.info("released model: decision threshold moved by %.4g (validation split)", threshold)
    return out


def released_state(
    cfg: Config, model: nn.Module, state: Mapping[str, torch.Tensor], data: DatasetBundle
) -> dict[str, torch.Tensor]:
    """The state the server evaluates and releases: calibrated under
    ``strategy.calibrate: threshold``, else ``state`` itself."""
    if cfg.strategy.calibrate == "threshold":
        return calibrated_state(model, state, data)
    return dict(state)
