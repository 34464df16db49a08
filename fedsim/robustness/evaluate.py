"""Robustness evaluation of finished runs: white-box and transfer attacks, float and int8.

For a run directory (``model.pt`` + ``config.yaml``) :func:`evaluate_run` measures

- clean accuracy of the float model and of its int8 copy (:mod:`.quantize`, calibrated
  on the server's public validation split), plus the serialized sizes;
- robust accuracy under every configured attack, on the **whole** test split of the run
  (``data.test_samples`` sizes it), repeated over several seeds (mean ± std; a
  deterministic attack such as FGSM or FAB is run once):

  - float target, *white-box*: adversarial examples generated on the evaluated model;
  - int8 target, *transfer from own float*: the int8 model has no input gradients, so
    its adversarial examples are those generated on its own float model;
  - float and int8 targets, *transfer*: examples generated on another run's float model
    of the same architecture and data (``--transfer-from``, e.g. DP ↔ non-DP).

Each attack named is the attack run in every mode (PSREval ignored the attack choice in
transfer mode). The table goes to ``robustness.json`` and ``robustness.csv`` in the run
directory and its headline figures into ``summary.json`` under ``robustness``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from fedsim.config import Config, RobustnessEvaluationConfig, from_dict
from fedsim.data import Split
from fedsim.errors import RunError
from fedsim.evaluation import evaluate
from fedsim.models import build_model
from fedsim.robustness.base import Attack, AttackParams, build_attack
from fedsim.robustness.quantize import QuantizedModel, quantize_static
from fedsim.rundir import (
    CONFIG_FILE,
    MODEL_FILE,
    update_summary_section,
    write_json_atomic,
)
from fedsim.seeding import derive_seed, numpy_rng
from fedsim.workload import dataset_for

logger = logging.getLogger(__name__)

ROBUSTNESS_JSON = "robustness.json"
ROBUSTNESS_CSV = "robustness.csv"


@dataclass(frozen=True)
class LoadedRun:
    """A finished run: its config, float model (CPU, eval) and label."""

    path: Path
    cfg: Config
    model: nn.Module

    @property
    def label(self) -> str:
        """``non-DP``, or ``DP`` with its target ε (or σ), plus the run name."""
        dp = self.cfg.dp
        if not dp.enabled:
            return f"non-DP ({self.cfg.name})"
        budget = f" ε={dp.epsilon:g}" if dp.epsilon is not None else ""
        if not budget and dp.noise_multiplier is not None:
            budget = f" σ={dp.noise_multiplier:g}"
        return f"DP{budget} ({self.cfg.name})"


def load_run(run_dir: str | Path) -> LoadedRun:
    """Read ``config.yaml`` and ``model.pt`` of ``run_dir``; :class:`RunError` if missing."""
    path = Path(run_dir)
    for name in (CONFIG_FILE, MODEL_FILE):
        if not (path / name).is_file():
            raise RunError(f"{path} is not a finished run directory: {name} is missing")
    raw = yaml.safe_load((path / CONFIG_FILE).read_text()) or {}
    raw.pop("fedsim_version", None)
    cfg = from_dict(raw)
    bundle = dataset_for(cfg.data, cfg.seed)
    model = build_model(cfg.model.name, bundle.input_shape, bundle.num_classes, seed=0)
    model.load_state_dict(torch.load(path / MODEL_FILE, map_location="cpu", weights_only=True))
    return LoadedRun(path=path, cfg=cfg, model=model.eval())


def check_compatible(target: LoadedRun, source: LoadedRun) -> None:
    """Transfer needs the same architecture and data; :class:`RunError` otherwise."""
    a, b = target.cfg, source.cfg
    if (a.model.name, a.data.name, a.data.path) != (b.model.name, b.data.name, b.data.path):
        raise RunError(
            f"--transfer-from {source.path}: model/data must match the evaluated run; got "
            f"{b.model.name}/{b.data.name} vs {a.model.name}/{a.data.name}"
        )


@dataclass(frozen=True)
class RobustRow:
    """One line of the robustness table."""

    model: str
    precision: str
    attack: str
    mode: str
    generator: str
    clean_accuracy: float
    robust_accuracy_mean: float
    robust_accuracy_std: float
    robust_accuracy_per_seed: tuple[float, ...]
    num_examples: int


def _batches(split: Split, batch_size: int) -> Any:
    for start in range(0, len(split), batch_size):
        yield (
            torch.tensor(split.x[start : start + batch_size]),
            torch.tensor(split.y[start : start + batch_size]),
        )


def attacked_accuracies(
    source: nn.Module,
    targets: Mapping[str, nn.Module],
    attack: Attack,
    split: Split,
    generator: torch.Generator,
    batch_size: int = 256,
) -> dict[str, float]:
    """Accuracy of every target on adversarial examples generated on ``source``.

    One pass over the whole ``split``; each batch is attacked once and shown to every
    target (white-box when a target is ``source``, transfer otherwise).
    """
    correct = dict.fromkeys(targets, 0)
    for x, y in _batches(split, batch_size):
        x_adv = attack(source, x, y, generator)
        with torch.no_grad():
            for key, target in targets.items():
                target.eval()
                correct[key] += int((target(x_adv).argmax(dim=1) == y).sum())
    return {k: c / len(split) for k, c in correct.items()}


def _attack_for(name: str, ev: RobustnessEvaluationConfig) -> Attack:
    if name == "pgd_l2":
        return build_attack(name, AttackParams(ev.l2_epsilon, ev.l2_step_size, ev.steps))
    return build_attack(name, AttackParams(ev.epsilon, ev.step_size, ev.steps))


def calibration_images(cfg: Config, count: int) -> np.ndarray:
    """Up to ``count`` seeded random images of the server's public validation split."""
    val = dataset_for(cfg.data, cfg.seed).val
    if len(val) == 0:
        raise RunError("int8 calibration needs the server validation split; it is empty")
    idx = numpy_rng(cfg.seed, "int8-calibration").permutation(len(val))[:count]
    return np.ascontiguousarray(val.x[np.sort(idx)])


def _stats(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def evaluate_run(
    run_dir: str | Path,
    transfer_from: str | Path | Sequence[str | Path] | None = None,
    settings: RobustnessEvaluationConfig | None = None,
) -> dict[str, Any]:
    """Evaluate ``run_dir`` (see the module docstring); writes and returns the document.

    ``transfer_from`` is one source run directory or several; each source's float model
    generates its own transfer rows, while the white-box rows are computed once.
    ``settings`` default to the run's own ``robustness.evaluate`` section; its
    ``transfer_from`` is used when ``transfer_from`` is not given.
    """
    run = load_run(run_dir)
    ev = settings or run.cfg.robustness.evaluate
    transfer_from = transfer_from or ev.transfer_from
    if transfer_from is None:
        source_dirs: list[str | Path] = []
    elif isinstance(transfer_from, (str, Path)):
        source_dirs = [transfer_from]
    else:
        source_dirs = list(transfer_from)
    sources = [load_run(d) for d in source_dirs]
    for source in sources:
        check_compatible(run, source)
    labels = [s.label for s in sources]
    if len(set(labels)) < len(labels):  # e.g. two seeds of one config: name them by path
        labels = [f"{s.label} at {s.path}" for s in sources]
    test = dataset_for(run.cfg.data, run.cfg.seed).test
    clean = {"float": evaluate(run.model, test).accuracy}
    targets: dict[str, nn.Module] = {"float": run.model}
    quant: QuantizedModel | None = None
    if ev.quantize:
        quant = quantize_static(run.model, calibration_images(run.cfg, ev.calibration_samples))
        targets["int8"] = quant.model
        clean["int8"] = evaluate(quant.model, test).accuracy

    rows: list[RobustRow] = []
    generators: list[tuple[str, str, nn.Module]] = [("self", "own float model", run.model)]
    generators += [
        (f"transfer:{lab}", lab, s.model) for lab, s in zip(labels, sources, strict=True)
    ]
    for attack_name in ev.attacks:
        attack = _attack_for(attack_name, ev)
        seeds = ev.seeds if attack.stochastic else ev.seeds[:1]
        for gen_name, gen_label, gen_model in generators:
            per_seed: dict[str, list[float]] = {k: [] for k in targets}
            for seed in seeds:
                g = torch.Generator().manual_seed(
                    derive_seed(seed, f"robust-eval/{attack_name}/{gen_name}") % (2**63)
                )
                accs = attacked_accuracies(gen_model, targets, attack, test, g, ev.batch_size)
                for k, acc in accs.items():
                    per_seed[k].append(acc)
            for precision, values in per_seed.items():
                if gen_name == "self":
                    mode = "white-box" if precision == "float" else "transfer"
                else:
                    mode = "transfer"
                mean, std = _stats(values)
                rows.append(
                    RobustRow(
                        model=run.label,
                        precision=precision,
                        attack=attack_name,
                        mode=mode,
                        generator=gen_label,
                        clean_accuracy=clean[precision],
                        robust_accuracy_mean=mean,
                        robust_accuracy_std=std,
                        robust_accuracy_per_seed=tuple(values),
                        num_examples=len(test),
                    )
                )
            logger.info("robustness: %s by %s done", attack_name, gen_name)
    doc: dict[str, Any] = {
        "run": str(run.path),
        "model": run.label,
        "dp": run.cfg.dp.enabled,
        "transfer_from": [str(s.path) for s in sources],
        "test_examples": len(test),
        "seeds": list(ev.seeds),
        "attacks": {
            name: dataclasses.asdict(_attack_for(name, ev).params)
            | {"norm": _attack_for(name, ev).norm}
            for name in ev.attacks
        },
        "clean_accuracy": clean,
        "int8": None
        if quant is None
        else {
            "backend": quant.backend,
            "bytes_float": quant.bytes_float,
            "bytes_int8": quant.bytes_int8,
            "size_reduction": quant.size_reduction,
            "accuracy_change": clean["int8"] - clean["float"],
            "quantized_ops": quant.quantized_ops,
            "calibration": f"server validation split, {quant.calibration_samples} samples",
            "note": "int8 models have no input gradients: attacked by transfer only",
        },
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    write_outputs(run.path, doc)
    return doc


def write_outputs(run_dir: Path, doc: Mapping[str, Any]) -> None:
    """Write ``robustness.json``/``.csv`` and the headline scalars into ``summary.json``."""
    write_json_atomic(run_dir / ROBUSTNESS_JSON, doc)
    fields = [f.name for f in dataclasses.fields(RobustRow)]
    with (run_dir / ROBUSTNESS_CSV).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in doc["rows"]:
            writer.writerow(
                {
                    **row,
                    "robust_accuracy_per_seed": " ".join(
                        f"{v:.4f}" for v in row["robust_accuracy_per_seed"]
                    ),
                }
            )
    update_summary_section(run_dir, "robustness", summary_scalars(doc))  # a finished run


def _key(row: Mapping[str, Any]) -> str:
    gen = "self" if row["generator"] == "own float model" else "other"
    mode = "white_box" if row["mode"] == "white-box" else f"transfer_{gen}"
    return f"{row['precision']}_{row['attack']}_{mode}"


def summary_scalars(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Flat scalars for ``summary.json`` (and so for ``sweep.csv``)."""
    out: dict[str, Any] = {f"clean_{k}": v for k, v in doc["clean_accuracy"].items()}
    if doc.get("int8"):
        out["int8_size_reduction"] = doc["int8"]["size_reduction"]
        out["int8_accuracy_change"] = doc["int8"]["accuracy_change"]
    for row in doc["rows"]:
        out[f"robust_{_key(row)}"] = row["robust_accuracy_mean"]
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()
    }


def read_robustness(run_dir: str | Path) -> dict[str, Any] | None:
    """``robustness.json`` of a run directory, or ``None`` when it has none."""
    path = Path(run_dir) / ROBUSTNESS_JSON
    return dict(json.loads(path.read_text())) if path.is_file() else None
