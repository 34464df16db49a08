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
        """Append one line to ``metrics.jsonl`` and TensorBoard scalars."""
        line = json.dumps(_clean(record.to_json()), allow_nan=False)
        with self._metrics_path.open("a") as fh:
            fh.write(line + "\n")
            fh.flush()
        if self._tb is not None:
            step = record.round
            self._test_scalars(record.test, step)
            if record.site_evaluation is not None:
                self._site_scalars(record.site_evaluation, step)
            for c in record.clients:
                if c.epsilon is not None:
                    self._tb.add_scalar(f"epsilon/client_{c.client_id}", c.epsilon, step)
                if c.train_loss is not None:
                    self._tb.add_scalar(f"train_loss/client_{c.client_id}", c.train_loss, step)
            self._tb.flush()

    def log_initial(self, result: EvalResult) -> None:
        """TensorBoard scalars of the initial model at step 0 (curves start where training
        starts; ``summary.json`` keeps it as ``initial``)."""
        if self._tb is not None:
            self._test_scalars(result, 0)
            self._tb.flush()

    def _test_scalars(self, result: EvalResult, step: int) -> None:
        self._tb.add_scalar("test/accuracy", result.accuracy, step)
        self._tb.add_scalar("test/loss", result.loss, step)
        optional = {
            "auc": result.auc,
            "balanced_accuracy": result.balanced_accuracy,
            "mre": result.mre,
        }
        for name, value in optional.items():
            if value is not None:
                self._tb.add_scalar(f"test/{name}", value, step)
        for label, recall in enumerate(result.class_recall or ()):
            if recall is not None:
                self._tb.add_scalar(f"test/recall_class_{label}", recall, step)
        self._binary_scalars("test", result.binary, step)

    def _site_scalars(self, evaluation: SiteEvaluation, step: int) -> None:
        """The sites' aggregate under ``sites/`` and each site's accuracy and ε."""
        aggregate = evaluation.aggregate
        if aggregate is not None:
            rates = {
                "accuracy": aggregate.accuracy,
                "balanced_accuracy": aggregate.balanced_accuracy,
                "sensitivity": aggregate.sensitivity,
                "specificity": aggregate.specificity,
                "precision": aggregate.precision,
                "f1": aggregate.f1,
                "num_examples": aggregate.num_examples,
            }
            for name, value in rates.items():
                if value is not None:
                    self._tb.add_scalar(f"sites/{name}", value, step)
        for site in evaluation.sites:
            if site.metrics is not None and site.metrics.accuracy is not None:
                self._tb.add_scalar(
                    f"sites/accuracy/client_{site.client_id}", site.metrics.accuracy, step
                )
            if site.epsilon_evaluation is not None:
                self._tb.add_scalar(
                    f"epsilon_evaluation/client_{site.client_id}", site.epsilon_evaluation, step
                )

    def _binary_scalars(self, prefix: str, binary: BinaryCounts | None, step: int) -> None:
        """Sensitivity, specificity, precision, F1 and the counts tn/fp/fn/tp."""
        if binary is None:
            return
        for name, value in binary.json().items():
            if value is not None:
                self._tb.add_scalar(f"{prefix}/{name}", value, step)
        for name, count in binary.counts_json().items():
            self._tb.add_scalar(f"{prefix}/confusion_{name}", count, step)

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

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None


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
