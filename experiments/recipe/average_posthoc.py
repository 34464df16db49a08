"""Released-model averaging over rounds, measured post hoc on runs that saved every round.

Usage::

    python experiments/recipe/average_posthoc.py runs/recipe_average

For every point of the sweep (``save_checkpoints: true``), load the global models of all
rounds, form each candidate released model — the last round's (the quickstart today), an
exponential moving average of the global models with decay β (De et al., 2022, average
DP-SGD's iterates this way) and the uniform average of the last k rounds — set its
decision threshold on the validation split (:func:`strategies.calibrate.calibrated_state`,
as the ServerApp does) and evaluate it on the test split. Averaging released models is
post-processing (no privacy cost) and training does not depend on it, so this is each
option's exact effect on these runs. Prints one markdown table per seed group (the tuning
seeds, then the others) and writes ``average.md`` into the sweep directory.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fedsim.evaluation import evaluate
from fedsim.models import build_model
from fedsim.report.setup import run_config
from fedsim.report.stats import format_mean_std, format_paired
from fedsim.workload import dataset_for
from strategies.calibrate import calibrated_state

BAR_ACCURACY, BAR_AUC = 0.80, 0.90
TUNING_SEEDS = (100, 103, 121, 138)

Rounds = list[dict[str, np.ndarray]]


def ema_step(
    average: dict[str, np.ndarray] | None, current: dict[str, np.ndarray], decay: float
) -> dict[str, np.ndarray]:
    """``decay · average + (1 − decay) · current`` per array (``current`` when there is no
    average yet).

    >>> a = ema_step(None, {"w": np.array([1.0])}, 0.5)
    >>> float(ema_step(a, {"w": np.array([3.0])}, 0.5)["w"][0])
    2.0
    """
    if average is None:
        return dict(current)
    return {
        k: (decay * average[k].astype(np.float64) + (1.0 - decay) * v).astype(v.dtype)
        for k, v in current.items()
    }


def _ema(decay: float) -> Callable[[Rounds], dict[str, np.ndarray]]:
    def average(rounds: Rounds) -> dict[str, np.ndarray]:
        avg = None
        for state in rounds:
            avg = ema_step(avg, state, decay)
        assert avg is not None
        return avg

    return average


def _tail(k: int) -> Callable[[Rounds], dict[str, np.ndarray]]:
    def average(rounds: Rounds) -> dict[str, np.ndarray]:
        last = rounds[-k:]
        return {
            key: np.mean([r[key] for r in last], axis=0).astype(v.dtype)
            for key, v in rounds[-1].items()
        }

    return average


ARMS: dict[str, Callable[[Rounds], dict[str, np.ndarray]]] = {
    "last round (quickstart)": _ema(0.0),
    "EMA β 0.3": _ema(0.3),
    "EMA β 0.5": _ema(0.5),
    "EMA β 0.7": _ema(0.7),
    "mean of last 2": _tail(2),
    "mean of last 3": _tail(3),
    "mean of last 4": _tail(4),
}


def _point(point: Path) -> tuple[int, dict[str, tuple[float, float, float]]]:
    cfg = run_config(point)
    assert cfg is not None
    data = dataset_for(cfg.data, cfg.seed)
    files = sorted((point / "checkpoints").glob("round_*.pt"))
    rounds = [{k: v.numpy() for k, v in torch.load(f, weights_only=True).items()} for f in files]
    model = build_model(cfg.model.name, data.input_shape, data.num_classes, seed=0)
    scratch = build_model(cfg.model.name, data.input_shape, data.num_classes, seed=0)
    out = {}
    for arm, average in ARMS.items():
        state = {k: torch.from_numpy(np.array(v)) for k, v in average(rounds).items()}
        model.load_state_dict(calibrated_state(scratch, state, data))
        res = evaluate(model, data.test)
        out[arm] = (res.accuracy, res.auc or 0.0, res.balanced_accuracy)
    return cfg.seed, out


def _table(results: dict[int, dict[str, tuple[float, float, float]]], seeds: list[int]) -> str:
    base = "last round (quickstart)"
    rows = [
        f"Seeds {', '.join(map(str, seeds))}:",
        "",
        "| released model | accuracy | AUC | balanced accuracy | min accuracy | min AUC | "
        "seeds at the bar | Δ accuracy (paired, 95% CI) | Δ AUC (paired, 95% CI) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        acc = [results[s][arm][0] for s in seeds]
        auc = [results[s][arm][1] for s in seeds]
        bal = [results[s][arm][2] for s in seeds]
        bar = sum(a >= BAR_ACCURACY and u >= BAR_AUC for a, u in zip(acc, auc, strict=True))
        if arm == base:
            d_acc = d_auc = "–"
        else:
            d_acc = format_paired(
                [a - results[s][base][0] for a, s in zip(acc, seeds, strict=True)]
            )
            d_auc = format_paired(
                [u - results[s][base][1] for u, s in zip(auc, seeds, strict=True)]
            )
        rows.append(
            f"| {arm} | {format_mean_std(acc)} | {format_mean_std(auc)} | "
            f"{format_mean_std(bal)} | {min(acc):.3f} | {min(auc):.3f} | "
            f"{bar}/{len(seeds)} | {d_acc} | {d_auc} |"
        )
    rows += [
        "",
        "Per seed: accuracy / AUC.",
        "",
        "| seed | " + " | ".join(ARMS) + " |",
        "|---" * (len(ARMS) + 1) + "|",
    ]
    for s in seeds:
        rows.append(
            f"| {s} | "
            + " | ".join(f"{results[s][a][0]:.3f} / {results[s][a][1]:.3f}" for a in ARMS)
            + " |"
        )
    return "\n".join(rows) + "\n"


def main() -> None:
    sweep = Path(sys.argv[1])
    results: dict[int, dict[str, tuple[float, float, float]]] = {}
    for point in sorted((sweep / "points").iterdir()):
        if (point / "checkpoints").is_dir():
            seed, out = _point(point)
            results[seed] = out
    tuning = [s for s in TUNING_SEEDS if s in results]
    others = sorted(s for s in results if s not in TUNING_SEEDS)
    text = "\n".join(_table(results, group) for group in (tuning, others) if group)
    (sweep / "average.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
