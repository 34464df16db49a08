"""The released-model threshold (``strategy.calibrate: threshold``) applied to finished runs.

Usage::

    python experiments/recipe/posthoc.py experiments/results/recipe/recipe

For every point of the sweep run without calibration (``strategy.calibrate: none``), load
its final ``model.pt`` and config, set the decision threshold on the run's validation
split with :func:`strategies.calibrate.calibrated_state` (what the ServerApp does to the
model it releases) and evaluate both on the test split. The clients' training is the same
with and without the option, so this is the option's effect on those runs. Writes
``posthoc.md`` into the sweep directory and prints it.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

from fedsim.evaluation import evaluate
from fedsim.models import build_model
from fedsim.report.setup import run_config
from fedsim.workload import dataset_for
from strategies.calibrate import calibrated_state

BAR_ACCURACY, BAR_AUC = 0.80, 0.90


def main() -> None:
    sweep = Path(sys.argv[1])
    rows = [
        "| point | seed | accuracy → calibrated | balanced accuracy → calibrated | AUC |",
        "|---|---|---|---|---|",
    ]
    arms: dict[str, list[tuple[float, float, float]]] = {}
    for point in sorted((sweep / "points").iterdir()):
        if not (point / "model.pt").is_file():
            continue
        cfg = run_config(point)
        if cfg is None or cfg.strategy.calibrate != "none":
            continue
        data = dataset_for(cfg.data, cfg.seed)
        model = build_model(cfg.model.name, data.input_shape, data.num_classes, seed=0)
        state = torch.load(point / "model.pt", weights_only=True)
        model.load_state_dict(state)
        before = evaluate(model, data.test)
        scratch = build_model(cfg.model.name, data.input_shape, data.num_classes, seed=0)
        model.load_state_dict(calibrated_state(scratch, state, data))
        after = evaluate(model, data.test)
        arm = point.name.split("-", 1)[1].rsplit("_seed=", 1)[0]
        arms.setdefault(arm, []).append((after.accuracy, after.auc or 0.0, before.accuracy))
        rows.append(
            f"| {arm} | {cfg.seed} | {before.accuracy:.3f} → {after.accuracy:.3f} | "
            f"{before.balanced_accuracy:.3f} → {after.balanced_accuracy:.3f} | {after.auc:.3f} |"
        )
    rows += [
        "",
        "| arm | calibrated accuracy | min | seeds at the bar | uncalibrated |",
        "|---|---|---|---|---|",
    ]
    for arm, runs in arms.items():
        acc = [r[0] for r in runs]
        bar = sum(a >= BAR_ACCURACY and u >= BAR_AUC for a, u, _ in runs)
        rows.append(
            f"| {arm} | {statistics.fmean(acc):.3f} ± {statistics.stdev(acc):.3f} | "
            f"{min(acc):.3f} | {bar}/{len(runs)} | "
            f"{statistics.fmean(r[2] for r in runs):.3f} |"
        )
    text = "\n".join(rows) + "\n"
    (sweep / "posthoc.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
