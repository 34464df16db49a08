"""Server-side utility of a client's update: its accuracy on the public validation split.

SecProbe (Zhao et al., IEEE TIFS 2020) selects updates by it; the valuation's quality
gate (:mod:`strategies.rewards`) pays by it. Costs the clients no privacy: the server
evaluates what it received on its own data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flwr.app import ArrayRecord, Message

from fedsim import keys
from fedsim.data import DatasetBundle
from fedsim.devices import pick_device
from fedsim.evaluation import evaluate
from fedsim.models import build_model
from fedsim.records import EvalResult


def validation_results(
    model_name: str, data: DatasetBundle, updates: Sequence[Message | ArrayRecord]
) -> list[EvalResult]:
    """Evaluation of each update on ``data``'s validation split, in order (train replies or
    bare ArrayRecords) with a ``model_name`` network."""
    bundle = data
    # the probe's initial weights are overwritten by every update
    probe = build_model(model_name, bundle.input_shape, bundle.num_classes, seed=0)
    device = pick_device()
    out = []
    for item in updates:
        arrays = item if isinstance(item, ArrayRecord) else item.content.array_records[keys.ARRAYS]
        probe.load_state_dict(arrays.to_torch_state_dict())
        out.append(evaluate(probe, bundle.val, device))
    return out


def validation_accuracies(
    model_name: str, data: DatasetBundle, updates: Sequence[Message | ArrayRecord]
) -> np.ndarray:
    """Validation accuracy of each update, in order (SecProbe's utility)."""
    results = validation_results(model_name, data, updates)
    return np.asarray([r.accuracy for r in results], dtype=np.float64)


def validation_quality(
    model_name: str, data: DatasetBundle, updates: Sequence[Message | ArrayRecord], measure: str
) -> np.ndarray:
    """``accuracy`` (SecProbe's utility) or ``auc`` (binary tasks; accuracy otherwise)."""
    results = validation_results(model_name, data, updates)
    if measure == "auc":
        return np.asarray(
            [r.auc if r.auc is not None else r.accuracy for r in results], dtype=np.float64
        )
    return np.asarray([r.accuracy for r in results], dtype=np.float64)
