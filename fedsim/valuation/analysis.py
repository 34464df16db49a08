"""``fedsim analyze``: selection consistency of two runs, written as Markdown + PNGs.

Where the scores come from: they are *recomputed* from each run directory's ``model.pt``
(the final global model, a plain state_dict) on one common set of samples — the training
pool of the first run (``data.train_samples`` applies), or one client's partition with
``client`` — so two runs that differ in ε, DP or model score the very same samples and no
run-time change is needed. VoG needs checkpoints: a run made with
``save_checkpoints: true`` keeps the global model after every round in ``checkpoints/``,
and VoG is taken over those K = rounds checkpoints. Runs without checkpoints get every
metric but VoG. PLIS uses σ = 1 for both runs (σ only rescales a run's scores, and every
statistic reported here is scale-free).

Output directory (default ``RUN_A/analysis``): ``analysis.md``, ``analysis.json``,
``grid_<metric>_a.png`` / ``grid_<metric>_b.png`` (top-k per class, rank order) and
``scores_a.npz`` / ``scores_b.npz`` (raw per-sample scores, ``labels`` and ``index`` into
the pool). :func:`report_section` turns a run directory's ``analysis/`` into a report section.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsim.config import Config, from_dict, read_yaml
from fedsim.errors import FedsimError
from fedsim.rundir import CONFIG_FILE, MODEL_FILE, checkpoint_paths, write_json_atomic
from fedsim.valuation.consistency import SelectionConsistency, compare_selections, save_grid
from fedsim.valuation.registry import METRICS, SCORES
from fedsim.valuation.tracker import ScoreTracker

logger = logging.getLogger(__name__)

ANALYSIS_DIR = "analysis"
ANALYSIS_MD = "analysis.md"
ANALYSIS_JSON = "analysis.json"


@dataclass(frozen=True)
class Pool:
    """The samples both runs are scored on."""

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray  # positions in the training pool
    description: str


def read_run_config(run_dir: Path) -> Config:
    """The resolved config of a run directory."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise FedsimError(f"{run_dir} is not a run directory: {CONFIG_FILE} is missing")
    raw = dict(read_yaml(path))
    for extra in ("fedsim_version", "sweep"):
        raw.pop(extra, None)
    return from_dict(raw)


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise FedsimError(f"{path} does not hold a state_dict")
    return state


def scoring_pool(cfg: Config, client: int | None, max_samples: int | None) -> Pool:
    """The training pool of ``cfg`` (or client ``client``'s data), optionally subsampled.

    ``max_samples`` keeps a stratified subset drawn from the run's seed.
    """
    from fedsim.data.carve import stratified_holdout
    from fedsim.roles import client_data
    from fedsim.seeding import derive_seed
    from fedsim.workload import client_indices, client_split, dataset_for

    bundle = dataset_for(cfg.data, cfg.seed)
    if client is None:
        split, index, what = bundle.train, np.arange(len(bundle.train)), "training pool"
    else:
        if not 0 <= client < cfg.data.num_clients:
            raise FedsimError(f"--client must be in [0, {cfg.data.num_clients - 1}]; got {client}")
        split = client_data(cfg, client, client_split(cfg, client), bundle.num_classes)
        index, what = client_indices(cfg, client), f"client {client}'s data"
    if max_samples is not None and max_samples < len(split):
        rng = np.random.default_rng(derive_seed(cfg.seed, "analyze-subset"))
        _, kept = stratified_holdout(split.y, max_samples, rng)
        kept = np.sort(kept)
        split, index = split.subset(kept), index[kept]
        what += f", stratified subset of {max_samples}"
    return Pool(x=split.x, y=split.y, index=np.asarray(index), description=what)


def run_scores(
    run_dir: Path,
    pool: Pool,
    input_shape: tuple[int, int, int],
    num_classes: int,
    metrics: Sequence[str],
    batch_size: int = 128,
) -> dict[str, np.ndarray]:
    """Scores of ``pool`` under a run's final model (VoG: under its round checkpoints)."""
    cfg = read_run_config(run_dir)
    model_path = run_dir / MODEL_FILE
    if not model_path.is_file():
        raise FedsimError(f"{run_dir} has no {MODEL_FILE}: did the run finish?")
    tracker = ScoreTracker(
        cfg.model.name, input_shape, num_classes, pool.x, pool.y, batch_size=batch_size
    )
    out: dict[str, np.ndarray] = {}
    over_checkpoints = [m for m in metrics if SCORES.get(m).needs_checkpoints]
    try:
        if over_checkpoints:
            for path in checkpoint_paths(run_dir):
                tracker.record_checkpoint(_load_state(path))
            out |= {m: tracker.scores(m).numpy() for m in over_checkpoints}
        tracker.load(_load_state(model_path))
    except RuntimeError as exc:  # load_state_dict: another architecture or class count
        raise FedsimError(
            f"{run_dir}: its model does not fit {cfg.model.name} for input {input_shape} with "
            f"{num_classes} classes ({str(exc).splitlines()[0]})"
        ) from exc
    for metric in metrics:
        if metric not in over_checkpoints:
            out[metric] = tracker.scores(metric).numpy()
    return out


def analyze_runs(
    run_a: Path,
    run_b: Path,
    out_dir: Path | None = None,
    *,
    metrics: Sequence[str] | None = None,
    k: int = 8,
    client: int | None = None,
    max_samples: int | None = None,
    largest: bool = True,
    labels: tuple[str, str] | None = None,
    batch_size: int = 128,
) -> dict[str, Any]:
    """Compare the per-class top-``k`` selections of two runs; write the analysis files.

    ``metrics=None`` means every metric of :data:`METRICS` the runs support (VoG only when
    both have at least 2 checkpoints); naming ``vog`` explicitly without checkpoints is
    an error. Returns the document written to ``analysis.json``.
    """
    if k < 1:
        raise FedsimError(f"--top-k must be >= 1; got {k}")
    requested = list(metrics) if metrics else list(METRICS)
    unknown = [m for m in requested if m not in METRICS]
    if unknown:
        raise FedsimError(f"--metric {unknown[0]!r} is not a metric (valid: {', '.join(METRICS)})")
    notes: list[str] = []
    have_ckpts = {r: len(checkpoint_paths(r)) for r in (run_a, run_b)}
    over_checkpoints = [SCORES.get(m) for m in requested if SCORES.get(m).needs_checkpoints]
    if over_checkpoints and min(have_ckpts.values()) < 2:
        missing = ", ".join(str(r) for r, n in have_ckpts.items() if n < 2)
        for score in over_checkpoints:
            msg = (
                f"{score.title} needs >= 2 round checkpoints per run; none in {missing} "
                "(run with `-o save_checkpoints=true`)"
            )
            if metrics:
                raise FedsimError(msg)
            requested.remove(score.name)
            notes.append(f"{msg}; {score.title} skipped.")
    cfg_a = read_run_config(run_a)
    cfg_b = read_run_config(run_b)
    if (cfg_a.data, cfg_a.seed) != (cfg_b.data, cfg_b.seed):
        notes.append(
            "The two runs differ in their data config or seed; both models are scored on "
            "the first run's samples."
        )
    from fedsim.workload import dataset_for

    bundle = dataset_for(cfg_a.data, cfg_a.seed)
    pool = scoring_pool(cfg_a, client, max_samples)
    out_dir = out_dir or run_a / ANALYSIS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    names = labels or (_run_label(run_a), _run_label(run_b))
    scores = {}
    for tag, run in (("a", run_a), ("b", run_b)):
        scores[tag] = run_scores(
            run, pool, bundle.input_shape, bundle.num_classes, requested, batch_size
        )
        arrays: dict[str, Any] = {"labels": pool.y, "index": pool.index, **scores[tag]}
        np.savez_compressed(out_dir / f"scores_{tag}.npz", **arrays)
    results: list[SelectionConsistency] = []
    for metric in requested:
        res = compare_selections(
            metric, scores["a"][metric], scores["b"][metric], pool.y, pool.x, k, largest=largest
        )
        results.append(res)
        side = "highest" if largest else "lowest"
        for tag, name, selected in (
            ("a", names[0], res.selected_a),
            ("b", names[1], res.selected_b),
        ):
            save_grid(
                pool.x,
                selected,
                out_dir / f"grid_{metric}_{tag}.png",
                f"{name}: top {k} per class by {metric} ({side})",
            )
    doc: dict[str, Any] = {
        "run_a": str(run_a),
        "run_b": str(run_b),
        "labels": list(names),
        "pool": pool.description,
        "num_samples": len(pool.y),
        "k": k,
        "side": "highest" if largest else "lowest",
        "checkpoints": [have_ckpts[run_a], have_ckpts[run_b]],
        "notes": notes,
        "metrics": [r.to_json() for r in results],
    }
    write_json_atomic(out_dir / ANALYSIS_JSON, doc)
    (out_dir / ANALYSIS_MD).write_text(render_markdown(doc))
    return doc


def _run_label(run_dir: Path) -> str:
    return run_dir.resolve().name


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


def render_markdown(doc: dict[str, Any], image_prefix: str = "", heading: str = "##") -> str:
    """Markdown of an analysis document; image links are prefixed with ``image_prefix``."""
    a, b = doc["labels"]
    lines = [
        f"{heading} Selection consistency: {a} vs {b}",
        "",
        f"Scores of the final models of `{doc['run_a']}` (A) and `{doc['run_b']}` (B) on "
        f"the same {doc['num_samples']} samples ({doc['pool']}); top {doc['k']} per class "
        f"by the {doc['side']} score. SSIM: between the two selections' mean images; "
        "Bhattacharyya: distance between their pixel histograms (0 = identical); "
        "Pearson/Spearman: over all samples' raw scores. VoG over "
        f"{doc['checkpoints'][0]} / {doc['checkpoints'][1]} round checkpoints.",
        "",
    ]
    lines += [f"> {note}" for note in doc["notes"]]
    if doc["notes"]:
        lines.append("")
    lines += [
        "| metric | overlap | mean SSIM | mean Bhattacharyya | Pearson | Spearman |",
        "|---|---|---|---|---|---|",
    ]
    for m in doc["metrics"]:
        lines.append(
            f"| {m['metric']} | {m['overlap']}/{m['selected']} | {_fmt(m['mean_ssim'])} | "
            f"{_fmt(m['mean_bhattacharyya'])} | {_fmt(m['pearson'])} | {_fmt(m['spearman'])} |"
        )
    lines.append("")
    for m in doc["metrics"]:
        per_class = ", ".join(
            f"class {c['label']}: overlap {c['overlap']}/{c['k']}, SSIM {_fmt(c['ssim'])}, "
            f"B {_fmt(c['bhattacharyya'])}"
            for c in m["classes"]
        )
        lines += [
            f"**{m['metric']}** — {per_class}",
            "",
            f"![{a}: top {doc['k']} by {m['metric']}]({image_prefix}grid_{m['metric']}_a.png) "
            f"![{b}: top {doc['k']} by {m['metric']}]({image_prefix}grid_{m['metric']}_b.png)",
            "",
        ]
    return "\n".join(lines)


def report_section(run_dir: Path) -> str | None:
    """The run's selection-consistency analysis (``analysis/analysis.json``) as Markdown.

    Returns ``None`` when the run directory holds no analysis. Image links are relative
    to ``run_dir`` (where ``report.md`` lives).
    """
    path = Path(run_dir) / ANALYSIS_DIR / ANALYSIS_JSON
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return render_markdown(doc, image_prefix=f"{ANALYSIS_DIR}/")
