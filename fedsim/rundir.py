"""The run directory contract (DESIGN.md): config.yaml, metrics.jsonl, summary.json,
model.pt, tb/, and the resume checkpoint in state/.

:class:`RunWriter` is the only code that writes these files. ``metrics.jsonl`` is appended
and flushed after every round and the server's checkpoint written after it
(:mod:`fedsim.checkpoint`), so an interrupted run keeps every completed round and can be
resumed. A fresh run in a directory that held an earlier one first removes that run's
outputs, so no old ``summary.json`` or ``model.pt`` can stand beside new metrics.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsim import __version__
from fedsim.checkpoint import (
    MODEL_STATE_FILE,
    SERVER_STATE_FILE,
    STATE_DIR,
    ResumePoint,
    ServerCheckpoint,
    sha256_file,
    sha256_text,
)
from fedsim.clinical import BinaryCounts
from fedsim.config import Config, to_yaml
from fedsim.files import write_atomic
from fedsim.records import EvalResult, RoundRecord, SiteEvaluation
from fedsim.tracking import NULL_TRACKER, RunStatus, TrackedRun, open_tracker

if TYPE_CHECKING:
    from fedsim.summary import RunSummary

if TYPE_CHECKING:
    import torch

# torch is imported where a model is saved: the file names and readers below are used by
# the CLI's parser and reports, which must not pay torch's import time (~1 s).

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.pt"
AUDIT_FILE = "audit.json"
TB_DIR = "tb"
CHECKPOINT_DIR = "checkpoints"
#: ``metrics.jsonl`` test metrics a round line carries only where they exist (AUC for
#: binary tasks; balanced accuracy where recorded): key, name in reports, name in logs.
OPTIONAL_TEST_METRICS: tuple[tuple[str, str, str], ...] = (
    ("test_auc", "AUC", "auc"),
    ("test_balanced_accuracy", "balanced accuracy", "bal acc"),
    ("test_mre", "mean relative error", "mre"),
)
#: Clinical test metrics of binary tasks (class 1 positive, :mod:`fedsim.clinical`): key,
#: name in reports, TensorBoard tag (reports and TensorBoard; the round line shows the
#: per-class recalls, which are sensitivity and specificity).
CLINICAL_TEST_METRICS: tuple[tuple[str, str, str], ...] = (
    ("test_sensitivity", "sensitivity", "test/sensitivity"),
    ("test_specificity", "specificity", "test/specificity"),
    ("test_precision", "precision", "test/precision"),
    ("test_f1", "F1", "test/f1"),
)
#: TensorBoard scalar tags of the test metrics (the HParams dashboard's metric columns).
TB_TEST_METRICS = ("test/accuracy", "test/loss", "test/auc", "test/balanced_accuracy")
#: What a run writes besides config.yaml and metrics.jsonl (cleared before a fresh run).
OUTPUT_FILES = (SUMMARY_FILE, MODEL_FILE, AUDIT_FILE, "rewards.csv", "report.md")
OUTPUT_DIRS = (TB_DIR, CHECKPOINT_DIR, STATE_DIR, "analysis")


def config_text(cfg: Config) -> str:
    """The ``config.yaml`` a run writes: the resolved config plus the fedsim version."""
    return to_yaml(cfg, {"fedsim_version": __version__})


def config_hparams(cfg: Config) -> dict[str, int | float | str]:
    """The config as flat TensorBoard hyperparameters: dotted keys (``dp.epsilon``) to
    numbers or text; lists as JSON text, booleans as ``"true"``/``"false"``, unset
    (``None``) fields left out, so that sweep runs can be filtered by any key."""
    flat: dict[str, int | float | str] = {}

    def walk(doc: Mapping[str, Any], prefix: str) -> None:
        for key, value in doc.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(value, f"{name}.")
            elif isinstance(value, bool):
                flat[name] = str(value).lower()
            elif isinstance(value, (int, float, str)):
                flat[name] = value
            elif isinstance(value, (list, tuple)):
                flat[name] = json.dumps(list(value))

    walk(cfg.to_dict(), "")
    return flat


#: The files of a run directory a tracker keeps (patterns; the ones that exist).
TRACKED_FILES = (
    CONFIG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    MODEL_FILE,
    AUDIT_FILE,
    "rewards.csv",
    "report.md",
    "*.png",
    "robustness.*",
)


def run_artifacts(run_dir: Path) -> list[Path]:
    """The files of ``run_dir`` a tracker keeps as the run's artifacts
    (:data:`TRACKED_FILES` that exist)."""
    return [path for pattern in TRACKED_FILES for path in sorted(run_dir.glob(pattern))]


def tracked_run(cfg: Config, run_dir: Path) -> TrackedRun:
    """What a tracker records about the run of ``cfg`` in ``run_dir``: the flattened
    config (:func:`config_hparams`) and fedsim version as params; name and seed as tags;
    the experiment ``tracking.experiment`` or else the config's name."""
    params: dict[str, object] = {**config_hparams(cfg), "fedsim_version": __version__}
    tags = {"fedsim.name": cfg.name, "fedsim.seed": str(cfg.seed)}
    return TrackedRun(run_dir, cfg.tracking.experiment or cfg.name, params, tags)


def eval_scalars(result: EvalResult) -> dict[str, float]:
    """The test metrics of one evaluation as scalar tags (``test/accuracy``, ...; the
    optional ones and each class's recall only where they exist)."""
    scalars = {"test/accuracy": result.accuracy, "test/loss": result.loss}
    optional = {
        "auc": result.auc,
        "balanced_accuracy": result.balanced_accuracy,
        "mre": result.mre,
    }
    scalars.update({f"test/{name}": v for name, v in optional.items() if v is not None})
    for label, recall in enumerate(result.class_recall or ()):
        if recall is not None:
            scalars[f"test/recall_class_{label}"] = recall
    scalars.update(binary_scalars("test", result.binary))
    return scalars


def binary_scalars(prefix: str, binary: BinaryCounts | None) -> dict[str, float]:
    """Sensitivity, specificity, precision, F1 (where defined) and the counts tn/fp/fn/tp
    (``<prefix>/confusion_tn``, ...) of a binary evaluation; empty for other tasks."""
    if binary is None:
        return {}
    scalars = {f"{prefix}/{name}": v for name, v in binary.json().items() if v is not None}
    scalars.update({f"{prefix}/confusion_{k}": v for k, v in binary.counts_json().items()})
    return scalars


def site_scalars(evaluation: SiteEvaluation) -> dict[str, float]:
    """The sites' evaluation as scalar tags: the pooled metrics under ``sites/`` and each
    site's accuracy (``sites/accuracy/client_<id>``) and evaluation ε
    (``epsilon_evaluation/client_<id>``)."""
    scalars: dict[str, float] = {}
    pooled = evaluation.aggregate
    if pooled is not None:
        rates = {
            "accuracy": pooled.accuracy,
            "balanced_accuracy": pooled.balanced_accuracy,
            "sensitivity": pooled.sensitivity,
            "specificity": pooled.specificity,
            "precision": pooled.precision,
            "f1": pooled.f1,
            "num_examples": pooled.num_examples,
        }
        scalars.update({f"sites/{name}": v for name, v in rates.items() if v is not None})
    for site in evaluation.sites:
        if site.metrics is not None and site.metrics.accuracy is not None:
            scalars[f"sites/accuracy/client_{site.client_id}"] = site.metrics.accuracy
        if site.epsilon_evaluation is not None:
            scalars[f"epsilon_evaluation/client_{site.client_id}"] = site.epsilon_evaluation
    return scalars


def round_scalars(record: RoundRecord) -> dict[str, float]:
    """One round as scalar tags, the stream TensorBoard and the tracker receive (step =
    the round): the test metrics, each client's ε (DP-SGD ``epsilon/client_<id>``, all
    events composed ``epsilon_total/client_<id>``) and train loss, the largest ε of the
    round's clients (``epsilon/max``, ``epsilon_total/max``, which counts the sites'
    totals after this round's evaluation releases), the selection ε, the round's seconds
    and the sites' evaluation (:func:`site_scalars`). Non-finite values are left out."""
    scalars = eval_scalars(record.test)
    sites = record.site_evaluation
    if sites is not None:
        scalars.update(site_scalars(sites))
    for c in record.clients:
        for name, value in (
            ("epsilon", c.epsilon),
            ("epsilon_total", c.epsilon_total),
            ("train_loss", c.train_loss),
        ):
            if value is not None:
                scalars[f"{name}/client_{c.client_id}"] = value
    for name, values in (
        ("epsilon", [c.epsilon for c in record.clients if c.epsilon is not None]),
        ("epsilon_total", _totals(record)),
    ):
        if values:
            scalars[f"{name}/max"] = max(values)
    if record.selection_epsilon is not None:
        scalars["selection/epsilon"] = record.selection_epsilon
    scalars["round/seconds"] = record.seconds
    return {k: float(v) for k, v in scalars.items() if math.isfinite(v)}


def _totals(record: RoundRecord) -> list[float]:
    """Every ``epsilon_total`` the round reported: the clients' training replies and the
    sites' evaluation replies (after their release)."""
    totals = [c.epsilon_total for c in record.clients if c.epsilon_total is not None]
    if record.site_evaluation is not None:
        sites = record.site_evaluation.sites
        totals += [s.epsilon_total for s in sites if s.epsilon_total is not None]
    return totals


def _clean(value: Any) -> Any:
    """Replace NaN/Inf by None so that the JSON files stay standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write ``doc`` as JSON to ``path`` via a temporary file and rename."""
    text = json.dumps(_clean(doc), indent=2, allow_nan=False) + "\n"
    write_atomic(path, text.encode())


class RunWriter:
    """Writes one run directory.

    Parameters
    ----------
    out_dir
        The run directory (created if missing).
    cfg
        The fully resolved config; written to ``config.yaml`` with seed and version.
    tensorboard
        Also write TensorBoard events under ``tb/``.
    resume
        Continue the interrupted run ``resume`` (its completed rounds' lines are kept).

    The round stream also goes to the run's tracker (``cfg.tracking``,
    :mod:`fedsim.tracking`), ended by :meth:`close`.
    """

    def __init__(
        self,
        out_dir: str | Path,
        cfg: Config,
        *,
        tensorboard: bool = True,
        resume: ResumePoint | None = None,
    ) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.config_text = config_text(cfg)
        self._metrics_path = self.dir / METRICS_FILE
        if resume is None:
            self._clear_outputs()
            (self.dir / CONFIG_FILE).write_text(self.config_text)
            self._metrics_path.write_text("")
        else:  # keep the completed rounds only (drop an interrupted round's line)
            lines = "".join(json.dumps(m, allow_nan=False) + "\n" for m in resume.lines)
            write_atomic(self._metrics_path, lines.encode())
        # after the outputs are cleared (a resumed run's tracker finds its run in state/)
        self.tracker = open_tracker(
            cfg.tracking, tracked_run(cfg, self.dir), resume=resume is not None
        )
        self._tb: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.dir / TB_DIR))
            if resume is None:  # a resumed run's events already hold them
                self._write_tb_config()

    def _write_tb_config(self) -> None:
        """The config as TensorBoard text (tag ``config``) and as hyperparameters of this
        run (the HParams dashboard then filters and compares runs of a sweep by any
        config key, next to the test metrics this writer logs)."""
        from torch.utils.tensorboard.summary import hparams

        indented = "\n".join(f"    {line}" for line in self.config_text.splitlines())
        self._tb.add_text("config", indented, 0)
        metrics = {tag: 0.0 for tag in TB_TEST_METRICS}
        experiment, session_start, _ = hparams(config_hparams(self.cfg), metrics)
        self._tb.file_writer.add_summary(experiment)
        self._tb.file_writer.add_summary(session_start)
        self._tb.flush()

    def append_round(self, record: RoundRecord) -> None:
        """Append one line to ``metrics.jsonl``; the round's scalars
        (:func:`round_scalars`) to TensorBoard and the tracker."""
        line = json.dumps(_clean(record.to_json()), allow_nan=False)
        with self._metrics_path.open("a") as fh:
            fh.write(line + "\n")
            fh.flush()
        self._scalars(round_scalars(record), record.round)

    def log_initial(self, result: EvalResult) -> None:
        """The initial model's test scalars at step 0 (curves start where training
        starts; ``summary.json`` keeps it as ``initial``)."""
        self._scalars(eval_scalars(result), 0)

    def _scalars(self, scalars: Mapping[str, float], step: int) -> None:
        if self._tb is not None:
            for tag, value in scalars.items():
                self._tb.add_scalar(tag, value, step)
            self._tb.flush()
        self.tracker.log_metrics(scalars, step)

    def _clear_outputs(self) -> None:
        """Remove the outputs of an earlier run in this directory (``--overwrite``)."""
        for name in OUTPUT_FILES:
            (self.dir / name).unlink(missing_ok=True)
        for pattern in ("*.png", "robustness.*"):
            for path in self.dir.glob(pattern):
                path.unlink()
        for name in OUTPUT_DIRS:
            if (self.dir / name).is_dir():
                shutil.rmtree(self.dir / name)

    def write_state(
        self,
        server_round: int,
        state_dict: Mapping[str, torch.Tensor],
        strategy_state: Mapping[str, Any],
        wall_seconds: float,
        initial: EvalResult | None,
    ) -> None:
        """The resume checkpoint after ``server_round``: ``state/model.pt`` then
        ``state/server.json`` (both atomic; the JSON names the model's digest)."""
        import io

        import torch

        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buffer)
        model_path = self.dir / STATE_DIR / MODEL_STATE_FILE
        write_atomic(model_path, buffer.getvalue())
        checkpoint = ServerCheckpoint(
            round=server_round,
            wall_seconds=wall_seconds,
            initial=initial,
            strategy=strategy_state,
            model_sha256=sha256_file(model_path),
            config_sha256=sha256_text(self.config_text),
        )
        write_json_atomic(self.dir / STATE_DIR / SERVER_STATE_FILE, checkpoint.to_json())

    def save_model(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Save a plain ``state_dict`` (no Opacus ``_module.`` prefixes) to ``model.pt``."""
        bad = [k for k in state_dict if k.startswith("_module.")]
        if bad:
            raise ValueError(f"model state_dict has Opacus-wrapped keys, e.g. {bad[0]!r}")
        import torch

        torch.save(dict(state_dict), self.dir / MODEL_FILE)

    def save_checkpoint(self, server_round: int, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Save the global model after ``server_round`` to ``checkpoints/round_NNNN.pt``."""
        bad = [k for k in state_dict if k.startswith("_module.")]
        if bad:
            raise ValueError(f"model state_dict has Opacus-wrapped keys, e.g. {bad[0]!r}")
        ckpt_dir = self.dir / CHECKPOINT_DIR
        ckpt_dir.mkdir(exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
        import torch

        torch.save(state, ckpt_dir / f"round_{server_round:04d}.pt")

    def write_summary(self, summary: RunSummary) -> None:
        """Write ``summary.json`` atomically (once, at the end of the run)."""
        write_json_atomic(self.dir / SUMMARY_FILE, summary.to_json())

    def write_audit(self, doc: Mapping[str, Any]) -> None:
        """Write ``audit.json`` (a privacy audit's result, :mod:`fedsim.audit.report`)."""
        write_json_atomic(self.dir / AUDIT_FILE, doc)

    def close(self, status: RunStatus = "FINISHED") -> None:
        """Flush and close TensorBoard; end the tracked run with ``status`` (the run's
        files as its artifacts)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        self.tracker.finish(run_artifacts(self.dir), status)
        self.tracker = NULL_TRACKER


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl`` of a run directory."""
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def update_summary_section(run_dir: str | Path, name: str, section: Mapping[str, Any]) -> bool:
    """Set one section (e.g. ``robustness``) of a finished run's ``summary.json``.

    For tools that analyse a run after it ended (``fedsim evaluate``); this module stays
    the only writer of the file. Returns ``False`` when the run has no summary.
    """
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        return False
    doc = read_summary(run_dir)
    doc[name] = dict(section)
    write_json_atomic(path, doc)
    return True


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """Read ``summary.json`` of a run directory."""
    return dict(json.loads((Path(run_dir) / SUMMARY_FILE).read_text()))


def checkpoint_paths(run_dir: str | Path) -> list[Path]:
    """The per-round global-model checkpoints of a run (``save_checkpoints``), by round."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    return sorted(ckpt_dir.glob("round_*.pt")) if ckpt_dir.is_dir() else []
