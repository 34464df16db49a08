"""Resident memory of each Ray client actor, round after round, in one ``fedsim run``.

Runs a config (default ``experiments/quickstart.yaml``) in a subprocess and samples,
every 0.25 s from ``/proc``, the RSS of every process whose command line names Flower's
``ClientAppActor`` and of the whole process tree. At each new line of ``metrics.jsonl``
(a finished round) it notes the actors' RSS and PSS (shared library pages divided among
the processes using them: what each actor really adds); it prints them per round, the
growth from the end of round 1 to the last round, and the peak of the tree.

    PYTHONPATH=. python benchmarks/actor_memory.py [CONFIG] [-o rounds=12] [--json F] [--out D]

``--out D`` keeps the run directory (e.g. to compare the metrics of two code versions).
To compare versions by ``PYTHONPATH``, run it from a directory without a ``fedsim/``:
``python -m fedsim.cli`` puts the working directory first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchtools import actor_rss, pss, tree_rss, write_json

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "experiments/quickstart.yaml"))
    parser.add_argument("-o", "--override", action="append", default=[])
    parser.add_argument("--quick", action="store_true", help="rounds=4")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--out", type=Path, help="keep the run directory here")
    args = parser.parse_args(argv)
    overrides = list(args.override) + (["rounds=4"] if args.quick else [])
    with tempfile.TemporaryDirectory(prefix="fedsim-mem-") as tmp:
        out = args.out or Path(tmp) / "run"
        cmd = [sys.executable, "-m", "fedsim.cli", "run", args.config, "--out", str(out)]
        for item in overrides:
            cmd += ["-o", item]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        metrics = out / "metrics.jsonl"
        per_round: list[dict[int, int]] = []
        proportional: list[dict[int, int]] = []
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            done = len(metrics.read_text().splitlines()) if metrics.exists() else 0
            if done > len(per_round):
                sample = actor_rss()
                per_round.append(sample)
                proportional.append({pid: pss(pid) for pid in sample})
            time.sleep(0.25)
        if proc.returncode != 0:
            raise SystemExit(f"fedsim run failed:\n{proc.stderr.read()[-2000:]}")
    rows = []
    for r, (sample, shares) in enumerate(zip(per_round, proportional, strict=True), start=1):
        gib = sorted(round(v / 2**30, 3) for v in sample.values())
        pss_gib = sorted(round(v / 2**30, 3) for v in shares.values())
        rows.append({"round": r, "actors_gib": gib, "actors_pss_gib": pss_gib})
        print(
            f"after round {r:>2}: actors RSS {', '.join(f'{g:.2f}' for g in gib)} GiB, "
            f"PSS {', '.join(f'{g:.2f}' for g in pss_gib)} GiB",
            flush=True,
        )
    first, last = sum(rows[0]["actors_gib"]), sum(rows[-1]["actors_gib"])
    result = {
        "benchmark": "actor_memory",
        "config": args.config,
        "overrides": overrides,
        "rounds": rows,
        "growth_gib": round(last - first, 3),
        "peak_tree_gib": round(peak / 2**30, 3),
    }
    print(
        f"actors' growth round 1 -> {len(rows)}: {result['growth_gib']:+.2f} GiB in total; "
        f"peak of the process tree {result['peak_tree_gib']:.2f} GiB"
    )
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
