"""``fedsim sweep CONFIG``: run every point of a config's ``sweep:`` grid, resumably.

The sweep directory (default ``runs/<name>-sweep``; a fixed name, so running the same
command again resumes) is laid out as :mod:`fedsim.sweep` describes: ``sweep.yaml``
(:data:`~fedsim.sweep.SWEEP_DEFINITION_FILE`), ``points/NNN-slug/`` and ``sweep.csv``
(:data:`~fedsim.sweep.SWEEP_TABLE_FILE`).

A point whose directory holds a ``summary.json`` written for the same resolved config is
finished and skipped; an interrupted point resumes from its last checkpoint (SIGINT or
SIGTERM stop the sweep within seconds, exit code 130). A point that fails
is recorded with ``status=failed`` and the sweep goes on; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fedsim.cli.base import Command, add_config_args
from fedsim.cli.run import Progress, stop_on_signals
from fedsim.config import Config, apply_overrides, from_dict, read_yaml
from fedsim.errors import ConfigError, FedsimError, RunInterruptedError
from fedsim.files import write_atomic
from fedsim.sweep import (
    POINTS_DIR,
    SWEEP_DEFINITION_FILE,
    SWEEP_TABLE_FILE,
    SweepPoint,
    SweepSpec,
    csv_columns,
    csv_row,
    expand,
    format_cell,
    split_sweep,
)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_same_sweep(out: Path, definition: dict[str, Any]) -> None:
    path = out / SWEEP_DEFINITION_FILE
    if not path.exists():
        return
    before = yaml.safe_load(path.read_text())
    if before != definition:
        raise FedsimError(
            f"--out {str(out)!r} holds a different sweep ({SWEEP_DEFINITION_FILE} differs from "
            "this config and overrides); choose another --out, or delete that directory"
        )


def _finished(point_dir: Path, cfg: Config) -> dict[str, Any] | None:
    """The summary of a finished run of ``cfg`` in ``point_dir``, else None."""
    from fedsim.rundir import CONFIG_FILE, SUMMARY_FILE, read_summary

    if not (point_dir / SUMMARY_FILE).exists() or not (point_dir / CONFIG_FILE).exists():
        return None
    try:
        written = yaml.safe_load((point_dir / CONFIG_FILE).read_text())
        written.pop("fedsim_version", None)
        if from_dict(written) != cfg:
            return None
        return read_summary(point_dir)
    except (OSError, ValueError, yaml.YAMLError, FedsimError, AttributeError):
        return None


def write_csv(path: Path, spec: SweepSpec, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``sweep.csv`` atomically."""
    columns = csv_columns(spec, rows)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_cell(row.get(c)) for c in columns])
    write_atomic(path, buffer.getvalue().encode())


def _resumable(point_dir: Path, cfg: Config) -> bool:
    """Whether ``point_dir`` holds an interrupted run of ``cfg`` with a checkpoint."""
    from fedsim.checkpoint import read_resume_point
    from fedsim.rundir import METRICS_FILE, config_text

    try:
        read_resume_point(point_dir, config_text(cfg), METRICS_FILE)
    except FedsimError:
        return False
    return True


def run_sweep(
    points: Sequence[SweepPoint],
    spec: SweepSpec,
    out: Path,
    verbose: bool = False,
    stream: Any = None,
    stop: threading.Event | None = None,
) -> list[dict[str, Any]]:
    """Run (or skip, when finished) every point; returns the ``sweep.csv`` rows.

    An interrupted point with a checkpoint resumes from it. ``stop`` (set by SIGINT or
    SIGTERM) ends the sweep within seconds with :class:`RunInterruptedError`, after the
    running point's last checkpoint. The client workers (and Ray, for points that run
    on it) start once and serve every point (:func:`fedsim.run.keep_client_workers`).
    """
    from fedsim.run import keep_client_workers

    with keep_client_workers([p.config for p in points]):
        return _run_points(points, spec, out, verbose, stream, stop)


def _run_points(
    points: Sequence[SweepPoint],
    spec: SweepSpec,
    out: Path,
    verbose: bool,
    stream: Any,
    stop: threading.Event | None,
) -> list[dict[str, Any]]:
    from fedsim.run import run_experiment

    stream = stream if stream is not None else sys.stderr
    rows: list[dict[str, Any]] = []
    for point in points:
        point_dir = out / POINTS_DIR / point.slug
        rel = str(Path(POINTS_DIR) / point.slug)
        summary = _finished(point_dir, point.config)
        if summary is not None:
            stream.write(f"[{point.index + 1}/{len(points)}] {point.slug}: finished, skipped\n")
            rows.append(csv_row(point, "done", rel, summary))
            continue
        if stop is not None and stop.is_set():
            raise RunInterruptedError(f"stopped before sweep point {point.slug}")
        resume = _resumable(point_dir, point.config)
        verb = "resuming" if resume else "running"
        stream.write(f"[{point.index + 1}/{len(points)}] {point.slug}: {verb}\n")
        stream.flush()
        try:
            progress = Progress(point.config, stream, prefix=f"[{point.index + 1}/{len(points)}] ")
            summary = run_experiment(
                point.config, point_dir, progress, verbose=verbose, resume=resume, stop=stop
            )
        except RunInterruptedError:
            write_csv(out / SWEEP_TABLE_FILE, spec, rows)
            raise
        except FedsimError as exc:  # shown once, on the stream (no log record as well)
            stream.write(f"[{point.index + 1}/{len(points)}] {point.slug}: failed: {exc}\n")
            rows.append(csv_row(point, "failed", rel, None))
        else:
            rows.append(csv_row(point, "done", rel, summary))
        write_csv(out / SWEEP_TABLE_FILE, spec, rows)
    write_csv(out / SWEEP_TABLE_FILE, spec, rows)
    return rows


def sweep_params(spec: SweepSpec) -> dict[str, str]:
    """The parent run's params of a tracked sweep: each swept key with its values (JSON).

    >>> sweep_params(SweepSpec(grid=(("dp.epsilon", (1.0, 2.0)),), seeds=(0, 1)))
    {'sweep.dp.epsilon': '[1.0, 2.0]', 'sweep.seeds': '[0, 1]'}
    """
    import json

    params = {f"sweep.{key}": json.dumps(list(values)) for key, values in spec.grid}
    if spec.seeds is not None:
        params["sweep.seeds"] = json.dumps(list(spec.seeds))
    return params


def cmd_sweep(args: argparse.Namespace) -> int:
    """Handler of ``fedsim sweep``."""
    raw = apply_overrides(read_yaml(args.config), args.override)
    base, spec = split_sweep(raw)
    from fedsim.run import config_problems

    points = expand(base, spec, config_problems)
    name = points[0].config.name if points else "sweep"
    out = Path(args.out) if args.out else Path("runs") / f"{name}-sweep"
    if args.dry_run:
        for point in points:
            print(f"{point.slug}")
        print(f"{len(points)} points into {out}")
        return 0
    definition = _plain({"base": base, "sweep": spec.to_dict()})
    if out.exists() and not out.is_dir():
        raise ConfigError([f"--out must be a directory; got {str(out)!r} (a file)"])
    _check_same_sweep(out, definition)
    from fedsim.preflight import check_data

    # missing data fails once, here, not once per point (finished points need none)
    check_data(p.config for p in points if _finished(out / POINTS_DIR / p.slug, p.config) is None)
    out.mkdir(parents=True, exist_ok=True)
    (out / SWEEP_DEFINITION_FILE).write_text(yaml.safe_dump(definition, sort_keys=False))
    stop = threading.Event()
    from fedsim.report import write_report_safely
    from fedsim.tracking import sweep_tracking

    try:
        # tracked points are children of one parent run, which keeps the sweep's report
        with stop_on_signals(stop), sweep_tracking(out, sweep_params(spec)):
            rows = run_sweep(points, spec, out, verbose=args.verbose, stop=stop)
            write_report_safely(out)  # logs (never raises); the runs are the result
    except (KeyboardInterrupt, RunInterruptedError):
        print(
            f"fedsim: sweep interrupted; finished points and the running point's last "
            f"checkpoint are kept in {out}; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    failed = sum(r["status"] != "done" for r in rows)
    print(f"{out}: {len(rows) - failed}/{len(rows)} points done; {out / SWEEP_TABLE_FILE}")
    return 1 if failed else 0


def _configure(p: argparse.ArgumentParser) -> None:
    add_config_args(p, "YAML experiment config with a sweep: section (-o also sets sweep.*)")
    p.add_argument("--out", help="sweep directory (default: runs/<name>-sweep; reruns resume)")
    p.add_argument("--dry-run", action="store_true", help="list the points and exit")
    p.set_defaults(handler=cmd_sweep)


SWEEP = Command(
    help="run a grid of experiments (config with a sweep: section)",
    configure=_configure,
    runs_flower=True,
)
