"""Set-up time, round time and peak memory of ``fedsim run`` as the federation grows.

For each N of ``--clients`` it writes a synthetic ``.npz`` dataset (8×8 grey images,
``--per-client`` samples per client, plus a test split), runs ``fedsim run`` on it with
10 clients per round (no DP, the ``mlp`` model, ``--rounds`` rounds) in a subprocess,
and samples the resident memory of the whole process tree (the driver, Ray's GCS,
raylet, dashboard agents and every actor) every 0.25 s from ``/proc``.

Figures per N:

- ``setup_s``: from starting the process to the start of round 1 (imports, data, Ray,
  nodes, the initial evaluation) = the time ``metrics.jsonl``'s first line appeared minus
  round 1's own seconds;
- ``round_s``: the median seconds of rounds 2.. (round 1 includes the actors' warm-up);
- ``wall_s``: the whole process, shut-down included;
- ``peak_tree_gib``: the largest sum of RSS over the process tree.

    PYTHONPATH=. python benchmarks/scale.py [--clients 100 1000 10000 100000] [--json F]

Run it on an idle machine (``../shared/tools/heavy``): every N is a full run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from benchtools import tree_rss, write_json

VAL_SIZE = 200


def write_dataset(path: Path, num_clients: int, per_client: int, seed: int = 0) -> None:
    """A learnable synthetic 2-class task: the class shifts the mean brightness."""
    rng = np.random.default_rng(seed)
    n = num_clients * per_client + VAL_SIZE  # the server's validation split comes from train
    y = rng.integers(0, 2, size=n + 1000)
    x = rng.normal(0.0, 1.0, size=(n + 1000, 8, 8)) + 0.8 * y[:, None, None]
    images = np.clip(64 * x + 96, 0, 255).astype(np.uint8)
    np.savez(
        path,
        train_images=images[:n],
        train_labels=y[:n],
        test_images=images[n:],
        test_labels=y[n:],
    )


def config(num_clients: int, data_path: Path, rounds: int) -> dict:
    """The benchmark's run config for ``num_clients`` clients."""
    return {
        "name": f"scale-{num_clients}",
        "seed": 0,
        "rounds": rounds,
        "data": {
            "name": "npz",
            "path": str(data_path),
            "num_clients": num_clients,
            "partition": "iid",
            "val_size": VAL_SIZE,
        },
        "model": {"name": "mlp"},
        "client": {"local_epochs": 1, "batch_size": 8, "lr": 0.1},
        "dp": {"enabled": False},
        "strategy": {"name": "fedavg", "clients_per_round": 10},
    }


def measure(num_clients: int, per_client: int, rounds: int, work: Path) -> dict:
    """Run one federation of ``num_clients`` and return its figures."""
    data = work / f"data-{num_clients}.npz"
    write_dataset(data, num_clients, per_client)
    cfg_file = work / f"scale-{num_clients}.yaml"
    cfg_file.write_text(yaml.safe_dump(config(num_clients, data, rounds)))
    out = work / f"run-{num_clients}"
    metrics = out / "metrics.jsonl"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsim.cli", "run", str(cfg_file), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak, first_line_at = 0, None
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        if first_line_at is None and metrics.exists() and metrics.stat().st_size > 0:
            first_line_at = time.perf_counter() - started
        time.sleep(0.25)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"N={num_clients}: fedsim run failed:\n{proc.stderr.read()[-2000:]}")
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    seconds = [float(line["seconds"]) for line in lines]
    first = first_line_at if first_line_at is not None else wall
    return {
        "num_clients": num_clients,
        "setup_s": round(first - seconds[0], 2),
        "round1_s": round(seconds[0], 2),
        "round_s": round(statistics.median(seconds[1:] or seconds), 2),
        "wall_s": round(wall, 2),
        "peak_tree_gib": round(peak / 2**30, 3),
        "accuracy": lines[-1]["test_accuracy"],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000, 10_000, 100_000])
    parser.add_argument("--per-client", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="N = 100 and 10,000, 3 rounds")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.rounds = [100, 10_000], 3
    results = []
    with tempfile.TemporaryDirectory(prefix="fedsim-scale-") as tmp:
        for n in args.clients:
            row = measure(n, args.per_client, args.rounds, Path(tmp))
            results.append(row)
            print(
                f"N={n:>7,}: set-up {row['setup_s']:6.1f} s, round {row['round_s']:5.2f} s "
                f"(first {row['round1_s']:.2f} s), wall {row['wall_s']:6.1f} s, "
                f"peak tree {row['peak_tree_gib']:.2f} GiB, accuracy {row['accuracy']:.3f}",
                flush=True,
            )
    write_json({"benchmark": "scale", "results": results}, args.json)
    return results


if __name__ == "__main__":
    main()
