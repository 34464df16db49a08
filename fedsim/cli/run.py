"""``fedsim run CONFIG [-o key=value ...] [--out DIR]`` and ``fedsim validate CONFIG``.

``run`` runs an experiment (one progress line per round on a terminal, ``report.md`` at
the end, a final line with accuracy and ε); ``validate`` runs only the config checks and
the preflight. :func:`run_command` is shared with ``fedsim audit``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from fedsim import __version__
from fedsim.cli.base import EXIT_VIOLATION, Command, add_config_args
from fedsim.config import RELATION_TEXT, Config, load
from fedsim.errors import FedsimError
from fedsim.records import RoundRecord
from fedsim.rundir import METRICS_FILE


class Progress:
    """One line per round on a terminal; silent when the stream is not a TTY."""

    def __init__(self, cfg: Config, stream: TextIO) -> None:
        self.cfg = cfg
        self.stream = stream
        self.enabled = stream.isatty()

    def __call__(self, record: RoundRecord) -> None:
        if not self.enabled:
            return
        eps_text = epsilon_text(self.cfg, record)
        auc = f"  auc {record.test.auc:.3f}" if record.test.auc is not None else ""
        self.stream.write(
            f"round {record.round}/{self.cfg.rounds}  acc {record.test.accuracy:.4f}  "
            f"loss {record.test.loss:.4f}{auc}{eps_text}  "
            f"({len(record.selected)}/{len(record.sampled)} updates, {record.seconds:.1f} s)\n"
        )
        self.stream.flush()


def epsilon_text(cfg: Config, record: RoundRecord) -> str:
    """The round line's privacy part: the largest composed ε of any client (all of its
    events), the DP-SGD part, and the relation — or, without DP, the selection ε."""
    if not cfg.dp.enabled:
        sel = [c.epsilon_selection for c in record.clients if c.epsilon_selection is not None]
        return f"  selection eps {max(sel):.3f} (no DP on updates)" if sel else ""
    total = [c.epsilon_total for c in record.clients if c.epsilon_total is not None]
    sgd = [c.epsilon for c in record.clients if c.epsilon is not None]
    if not total and not sgd:
        return ""
    relation = RELATION_TEXT[cfg.dp.neighbouring]
    if cfg.dp.mode == "central":
        return f"  eps {max(sgd):.3f} (user-level, {relation})"
    top = max(total) if total else max(sgd)
    return f"  max eps {top:.3f} (DP-SGD {max(sgd) if sgd else 0.0:.3f}, {relation})"


def _holds_run(path: Path) -> bool:
    return (path / METRICS_FILE).exists()


def resolve_out_dir(cfg: Config, out: str | None, overwrite: bool) -> Path:
    """The run directory: ``--out`` as given, or ``runs/<name>`` made unique."""
    if out is not None:
        path = Path(out)
        if _holds_run(path) and not overwrite:
            raise FedsimError(
                f"--out {str(path)!r} already holds a run (metrics.jsonl); choose another "
                "directory or pass --overwrite"
            )
        return path
    base = Path("runs") / cfg.name
    path, i = base, 1
    while _holds_run(path):
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    return path


def _cmd_validate(args: argparse.Namespace) -> int:
    from fedsim.run import check_plan

    cfg = load(args.config, args.override)
    report = check_plan(cfg)
    for line in report.lines():
        print(line)
    print(f"{args.config}: OK")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    return run_command(args, load(args.config, args.override))


def run_command(args: argparse.Namespace, cfg: Config) -> int:
    """Run ``cfg`` as ``fedsim run`` does: progress, report, the final line; exit code 3
    when the run's privacy audit (``audit.enabled``) finds a violation."""
    from fedsim.run import run_experiment

    out_dir = resolve_out_dir(cfg, args.out, args.overwrite)
    progress = Progress(cfg, sys.stderr)
    if progress.enabled:
        sys.stderr.write(f"fedsim {__version__}: running {cfg.name!r} into {out_dir}\n")
    summary = run_experiment(cfg, out_dir, on_round=progress, verbose=args.verbose)
    from fedsim.report import write_report_safely

    write_report_safely(out_dir)  # logs (never raises): the run directory is the result
    final = summary.get("final") or {}
    eps_text = final_epsilon_text(cfg, summary)
    acc = final.get("test_accuracy")
    acc_text = f"{acc:.4f}" if acc is not None else "n/a"
    print(
        f"{out_dir}: {summary['rounds']} rounds, test accuracy {acc_text}{eps_text}, "
        f"{summary['wall_seconds']:.1f} s"
    )
    audit = summary.get("audit")
    if audit is None:
        return 0
    print(
        f"privacy audit ({audit['level']} level, {audit['canaries']} canaries): claimed "
        f"epsilon {audit['claimed_epsilon_add_remove']:.4g} (add/remove), estimate "
        f"{audit['estimate']:.4g}, lower bound {audit['lower_bound']:.4g} at "
        f"{100 * audit['confidence']:g}% -> {audit['verdict']} (see {out_dir / 'audit.json'})"
    )
    return EXIT_VIOLATION if audit["verdict"] == "VIOLATION" else 0


def final_epsilon_text(cfg: Config, summary: dict[str, object]) -> str:
    """The final line's privacy part (see :func:`epsilon_text`)."""
    dp = summary["dp"]
    assert isinstance(dp, dict)  # the summary's own structure, not user input
    total, sgd = dp.get("max_epsilon_total"), dp.get("max_epsilon_spent")
    if not cfg.dp.enabled:
        sel = summary.get("selection_epsilon_total")
        return f", selection epsilon {sel:.3f} (no DP on updates)" if sel else ""
    if sgd is None:
        return ""
    relation = RELATION_TEXT[cfg.dp.neighbouring]
    if cfg.dp.mode == "central":
        return f", user-level epsilon {sgd:.3f} (delta {cfg.dp.delta:g}, {relation})"
    return (
        f", max epsilon {total if total is not None else sgd:.3f} of which DP-SGD {sgd:.3f} "
        f"(delta {cfg.dp.delta:g}, {relation})"
    )


def _configure_run(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--out", help="run directory (default: runs/<name>, made unique)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="allow --out to point at a directory that already holds a run",
    )
    p.set_defaults(handler=_cmd_run)


def _configure_validate(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.set_defaults(handler=_cmd_validate)


RUN = Command(help="run an experiment", configure=_configure_run)
VALIDATE = Command(help="check a config and run the preflight only", configure=_configure_validate)
