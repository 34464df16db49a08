"""Tables of the clipping study v2 (issue 17) from its sweep directories.

Usage::

    PYTHONPATH=. python experiments/clipping/table.py tune runs/clip_v2/tune OUT.md
    PYTHONPATH=. python experiments/clipping/table.py study OUT.md SWEEP_DIR [SWEEP_DIR ...]

``tune``: for every (variant, lr) point of the tuning sweep, the final model's accuracy on the
server's validation split (``model.pt`` of the point, evaluated on ``dataset_for(cfg.data,
cfg.seed).val``: the run's own validation split, disjoint from its training data) — the
tuning criterion — next to the test accuracy (final, and averaged over the rounds) for
reference only; the best lr per variant is marked.

``study``: the points of one or more sweeps (one per variant, each at its tuned lr), grouped
by σ: per variant the final test accuracy and the test accuracy averaged over the rounds
(the study's "average accuracy for these 5 rounds"), mean ± std over seeds; then the paired
differences flat − per-layer adaptive and per-layer uniform − best other variant with 95% t
intervals over seeds; then the per-seed values. ε is each client's replace-one ε.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch

from fedsim.evaluation import evaluate
from fedsim.models import build_model
from fedsim.report.stats import format_mean_std as _ms
from fedsim.report.stats import format_paired
from fedsim.valuation.analysis import read_run_config
from fedsim.workload import dataset_for

VARIANTS = ("flat", "per_layer_adaptive", "per_layer_uniform")
SHORT = {"flat": "flat", "per_layer_adaptive": "adaptive", "per_layer_uniform": "uniform"}


def _points(sweep: Path) -> list[dict[str, str]]:
    return [r for r in csv.DictReader((sweep / "sweep.csv").open()) if r["status"] == "done"]


def _round_accuracies(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [float(json.loads(line)["test_accuracy"]) for line in lines if line.strip()]


def _val_accuracy(run_dir: Path) -> float:
    cfg = read_run_config(run_dir)
    bundle = dataset_for(cfg.data, cfg.seed)
    model = build_model(cfg.model.name, bundle.input_shape, bundle.num_classes, seed=0)
    model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    with torch.no_grad():
        return float(evaluate(model, bundle.val).accuracy)


def _paired(diffs: list[float]) -> str:
    """Mean paired difference with its 95% t interval."""
    return format_paired(diffs)


def tune_table(sweep: Path) -> str:
    """Validation accuracy per (variant, lr), mean over the tuning seeds; best lr in bold."""
    # cells[(variant, lr)] = [(validation, test final, test mean over rounds) per seed]
    cells: dict[tuple[str, float], list[tuple[float, float, float]]] = defaultdict(list)
    for r in _points(sweep):
        run = sweep / r["run_dir"]
        accs = _round_accuracies(run)
        cells[(r["dp.clipping"], float(r["client.lr"]))].append(
            (_val_accuracy(run), accs[-1], statistics.fmean(accs))
        )
    mean = {k: statistics.fmean(v[0] for v in runs) for k, runs in cells.items()}
    best = {v: max((k for k in cells if k[0] == v), key=lambda k: mean[k])[1] for v in VARIANTS}
    out = [
        "| variant | lr | validation accuracy (final model): mean | per seed | test: final | "
        "test: mean over rounds |",
        "|---|---|---|---|---|---|",
    ]
    for variant, lr in sorted(cells):
        runs = cells[(variant, lr)]
        mark = "**" if best[variant] == lr else ""
        out.append(
            f"| {variant} | {mark}{lr:g}{mark} | {mark}{mean[(variant, lr)]:.3f}{mark} | "
            + " / ".join(f"{v[0]:.3f}" for v in runs)
            + f" | {statistics.fmean(v[1] for v in runs):.3f} | "
            f"{statistics.fmean(v[2] for v in runs):.3f} |"
        )
    out += ["", "Tuned lr: " + ", ".join(f"{v} {best[v]:g}" for v in VARIANTS) + "."]
    return "\n".join(out) + "\n"


Runs = dict[float, dict[str, dict[int, tuple[float, float, float, float]]]]


def collect(sweeps: list[Path]) -> Runs:
    """``runs[sigma][variant][seed] = (final, mean over rounds, lr, eps)``."""
    runs: Runs = defaultdict(lambda: defaultdict(dict))
    for sweep in sweeps:
        for r in _points(sweep):
            cfg = read_run_config(sweep / r["run_dir"])
            accs = _round_accuracies(sweep / r["run_dir"])
            eps = float(r["dp.max_epsilon_spent"] or "nan")
            sigma = float(cfg.dp.noise_multiplier or "nan")
            runs[sigma][cfg.dp.clipping][cfg.seed] = (
                accs[-1],
                statistics.fmean(accs),
                cfg.client.lr,
                eps,
            )
    return runs


def plot(runs: Runs, out: Path) -> None:
    """Test accuracy (final; mean over rounds) against ε, mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    sigmas = sorted(runs, reverse=True)
    for k, (ax, metric) in enumerate(zip(axes, ("final", "mean over rounds"), strict=True)):
        for variant in VARIANTS:
            eps = [max(t[3] for t in runs[s][variant].values()) for s in sigmas]
            vals = [[t[k] for t in runs[s][variant].values()] for s in sigmas]
            lr = next(iter(runs[sigmas[0]][variant].values()))[2]
            ax.errorbar(
                eps,
                [statistics.fmean(v) for v in vals],
                yerr=[statistics.stdev(v) if len(v) > 1 else 0.0 for v in vals],
                marker="o",
                capsize=3,
                label=f"{SHORT[variant]} (lr {lr:g})",
            )
        ax.set_xscale("log")
        ticks = sorted({max(t[3] for t in runs[s]["flat"].values()) for s in sigmas})
        ax.set_xticks(ticks, [f"{e:.3g}" for e in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("ε (replace-one, per client)")
        ax.set_title(f"test accuracy: {metric}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def study_table(runs: Runs) -> str:
    """Summary, paired differences and per-seed tables over σ."""
    sigmas = sorted(runs, reverse=True)
    out = [
        "| σ | ε (replace-one) | metric | "
        + " | ".join(
            f"{SHORT[v]} (lr {next(iter(runs[sigmas[0]][v].values()))[2]:g})" for v in VARIANTS
        )
        + " |",
        "|---|---|---|" + "---|" * len(VARIANTS),
    ]
    paired = [
        "| σ | ε | metric | flat − adaptive | uniform − best of flat/adaptive | "
        "uniform − flat | uniform − adaptive |",
        "|---|---|---|---|---|---|---|",
    ]
    per_seed = ["| σ | seed | " + " | ".join(SHORT[v] for v in VARIANTS) + " |"]
    per_seed.append("|---|---|" + "---|" * len(VARIANTS))
    for sigma in sigmas:
        by = runs[sigma]
        eps = max(t[3] for v in VARIANTS for t in by[v].values())
        seeds = sorted(set.intersection(*(set(by[v]) for v in VARIANTS)))
        for k, metric in ((0, "final"), (1, "mean over rounds")):
            cells = [_ms([by[v][s][k] for s in seeds]) for v in VARIANTS]
            out.append(f"| {sigma:g} | {eps:.3g} | {metric} | " + " | ".join(cells) + " |")
            flat = [by["flat"][s][k] for s in seeds]
            adap = [by["per_layer_adaptive"][s][k] for s in seeds]
            unif = [by["per_layer_uniform"][s][k] for s in seeds]
            best = flat if statistics.fmean(flat) >= statistics.fmean(adap) else adap
            paired.append(
                f"| {sigma:g} | {eps:.3g} | {metric} | "
                f"{_paired([a - b for a, b in zip(flat, adap, strict=True)])} | "
                f"{_paired([a - b for a, b in zip(unif, best, strict=True)])} | "
                f"{_paired([a - b for a, b in zip(unif, flat, strict=True)])} | "
                f"{_paired([a - b for a, b in zip(unif, adap, strict=True)])} |"
            )
        for s in seeds:
            per_seed.append(
                f"| {sigma:g} | {s} | "
                + " | ".join(f"{by[v][s][0]:.3f} / {by[v][s][1]:.3f}" for v in VARIANTS)
                + " |"
            )
    return (
        "\n".join(
            [
                *out,
                "",
                "Paired differences over seeds (mean, 95% t interval); 'best' is the variant of "
                "flat/adaptive with the higher mean at that σ and metric:",
                "",
                *paired,
                "",
                "Per seed: final / mean-over-rounds test accuracy.",
                "",
                *per_seed,
            ]
        )
        + "\n"
    )


def main() -> None:
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "tune":
        text = tune_table(Path(rest[0]))
        out = Path(rest[1])
    elif mode == "study":
        out = Path(rest[0])
        runs = collect([Path(p) for p in rest[1:]])
        text = study_table(runs)
        plot(runs, out.with_suffix(".png"))
    else:
        sys.exit(f"usage: table.py tune SWEEP OUT.md | study OUT.md SWEEP...; got mode {mode!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
