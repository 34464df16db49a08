"""``fedsim run CONFIG [-o key=value ...] [--out DIR]`` and ``fedsim validate CONFIG``.

``run`` runs an experiment (one progress line per round on stderr, a terminal or not;
``report.md`` at the end; a final line with accuracy and ε); ``validate`` runs only the
config checks and the preflight (of every point when CONFIG is a sweep file).
:func:`run_command` is shared with ``fedsim audit``.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from fedsim import __version__
from fedsim.cli.base import (
    EXIT_CLIENT_FAULTS,
    EXIT_INTERRUPTED,
    EXIT_VIOLATION,
    Command,
    add_config_args,
)
from fedsim.config import Config, apply_overrides, from_dict, load, read_yaml
from fedsim.errors import ConfigError, FedsimError
from fedsim.sweep import SWEEP_KEY, expand, point_problems, split_sweep

if TYPE_CHECKING:  # run-directory modules import numpy: `fedsim --help` does not need it
    from fedsim.records import RoundRecord


class Progress:
    """Writes one plain line per round (:class:`~fedsim.progress.RoundProgress`) to
    ``stream``, a terminal or not: batch jobs, ``nohup`` and CI logs see progress too.

    ``prefix`` starts every line (a sweep names its point there).
    """

    def __init__(self, cfg: Config, stream: TextIO, prefix: str = "") -> None:
        from fedsim.progress import RoundProgress

        self.lines = RoundProgress(cfg)
        self.stream = stream
        self.prefix = prefix

    def __call__(self, record: RoundRecord) -> None:
        self.stream.write(f"{self.prefix}{self.lines.line(record)}\n")
        self.stream.flush()


def _holds_run(path: Path) -> bool:
    from fedsim.rundir import METRICS_FILE

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
    raw = apply_overrides(read_yaml(args.config), args.override)
    if SWEEP_KEY in raw:
        return _validate_sweep(args.config, raw)
    from fedsim.run import check_plan

    report = check_plan(from_dict(raw))
    for line in report.lines():
        print(line)
    print(f"{args.config}: OK")
    return 0


def _validate_sweep(path: str, raw: dict[str, object]) -> int:
    """``fedsim validate`` of a sweep file: every point's config and rules, each distinct
    data section's presence (once), then every point's preflight; each problem is shown
    once, naming the points that have it."""
    from fedsim.preflight import check_data, preflight
    from fedsim.run import config_problems

    base, spec = split_sweep(raw)
    points = expand(base, spec, config_problems)
    check_data(point.config for point in points)
    found: list[tuple[int, str, str]] = []
    for point in points:
        try:
            report = preflight(point.config)
        except ConfigError as exc:
            found.extend((point.index, point.where, p) for p in exc.problems)
        else:
            print(f"{point.slug}: {report.headline()}")
    if found:
        raise ConfigError(point_problems(found, len(points)))
    print(f"{path}: OK ({len(points)} sweep points)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    if args.resume is not None:
        if args.config is not None or args.override or args.out is not None:
            raise FedsimError(
                "--resume RUN_DIR takes the run's own config.yaml: give no CONFIG, -o or --out"
            )
        run_dir = Path(args.resume)
        cfg = load_resolved(run_dir)
        return run_command(args, cfg, out_dir=run_dir, resume=True)
    if args.config is None:
        raise FedsimError("fedsim run needs a CONFIG (or --resume RUN_DIR)")
    return run_command(args, load(args.config, args.override))


def load_resolved(run_dir: Path) -> Config:
    """The resolved config a run directory ran with (its ``config.yaml``)."""
    from fedsim.rundir import CONFIG_FILE

    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise FedsimError(f"--resume {str(run_dir)!r}: no {CONFIG_FILE}; not a run directory")
    raw = read_yaml(path)
    raw.pop("fedsim_version", None)
    return from_dict(raw)


def run_command(
    args: argparse.Namespace, cfg: Config, out_dir: Path | None = None, resume: bool = False
) -> int:
    """Run ``cfg`` as ``fedsim run`` does: progress, report, the final line.

    Exit codes: 0 done; 3 the run's privacy audit found a violation; 4 done, but some
    client rounds failed (errors, timeouts) or were rejected; 130 interrupted by
    SIGINT/SIGTERM after the last completed round's checkpoint (resume with
    ``fedsim run --resume``). A first signal stops the run within about a second; a
    second one aborts at once.
    """
    from fedsim.procpool import choose_backend, gpu_device_files, start_forkserver
    from fedsim.raystart import start_early, stop_early

    if out_dir is None:
        out_dir = resolve_out_dir(cfg, args.out, args.overwrite)
    # the client workers' fork server (or Ray) starts while the driver imports and checks
    if choose_backend(cfg.simulation, gpu_device_files) == "process":
        start_forkserver()
    else:
        start_early(cfg)
    try:
        return _run_command(args, cfg, out_dir, resume)
    finally:
        stop_early()  # unless the run shut it down (also after an error)


def _run_command(args: argparse.Namespace, cfg: Config, out_dir: Path, resume: bool) -> int:
    from fedsim.progress import final_line
    from fedsim.run import RunInterruptedError, run_experiment

    progress = Progress(cfg, sys.stderr)
    verb = "resuming" if resume else "running"
    sys.stderr.write(f"fedsim {__version__}: {verb} {cfg.name!r} into {out_dir}\n")
    sys.stderr.flush()
    stop = threading.Event()
    try:
        with stop_on_signals(stop):
            summary = run_experiment(
                cfg, out_dir, on_round=progress, verbose=args.verbose, resume=resume, stop=stop
            )
    except RunInterruptedError:
        sys.stderr.write(
            f"fedsim: interrupted; completed rounds are checkpointed in {out_dir}. Continue "
            f"with: fedsim run --resume {shlex.quote(str(out_dir))}\n"
        )
        return EXIT_INTERRUPTED
    print(final_line(cfg, out_dir, summary))
    audit = summary.get("audit")
    if audit is not None:
        print(
            f"privacy audit ({audit['level']} level, {audit['canaries']} canaries): claimed "
            f"epsilon {audit['claimed_epsilon_add_remove']:.4g} (add/remove), estimate "
            f"{audit['estimate']:.4g}, lower bound {audit['lower_bound']:.4g} at "
            f"{100 * audit['confidence']:g}% -> {audit['verdict']} (see {out_dir / 'audit.json'})"
        )
        if audit["verdict"] == "VIOLATION":
            return EXIT_VIOLATION
    faults = summary.get("client_faults") or {}
    if any(faults.values()):
        print(
            f"client faults: {faults.get('failed', 0)} failed and {faults.get('rejected', 0)} "
            "rejected client rounds (reasons in metrics.jsonl, clients.<id>.rejected_reason)"
        )
        return EXIT_CLIENT_FAULTS
    return 0


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """While active, SIGINT/SIGTERM set ``stop`` (the run ends after its checkpoint within
    about a second); a second signal raises :class:`KeyboardInterrupt` at once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed by the main thread
        return

    def handler(signum: int, frame: object) -> None:
        del frame
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        sys.stderr.write(
            f"fedsim: {signal.Signals(signum).name} received: stopping after the current "
            "round's checkpoint (again to abort at once)\n"
        )

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _configure_run(p: argparse.ArgumentParser) -> None:
    add_config_args(p, "YAML experiment config (none with --resume)", optional=True)
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its last completed round (its own config)",
    )
    p.add_argument("--out", help="run directory (default: runs/<name>, made unique)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="allow --out to point at a directory that already holds a run",
    )
    p.set_defaults(handler=_cmd_run)


def _configure_validate(p: argparse.ArgumentParser) -> None:
    add_config_args(p, "YAML experiment config, or a sweep file (one with a sweep: section)")
    p.set_defaults(handler=_cmd_validate)


RUN = Command(help="run an experiment", configure=_configure_run, runs_flower=True)
VALIDATE = Command(
    help="check a config (or every point of a sweep) and run the preflight only",
    configure=_configure_validate,
)
