"""Run fedsim's benchmarks and collect their JSON figures.

Each benchmark runs in its own process (``python benchmarks/NAME.py [--quick] --json``)
one after the other, so that no two share the machine; the figures land in
``--out`` (default ``benchmarks/results/``), one ``NAME.json`` each, plus
``machine.json`` describing where they were taken. ``--quick`` is the ~5-minute subset
(fewer repeats and sizes); without it every benchmark runs in full (about 11 minutes here).
``benchmarks/RESULTS.md`` reports a full run.

    python benchmarks/run_all.py [--quick] [--only NAME ...] [--out DIR]

Run it through ``../shared/tools/heavy`` on an idle machine: a timing taken beside
another heavy job is not a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Benchmarks in the order they run (fast and pure first, whole federations last).
BENCHMARKS = (
    "cli_startup",
    "calibration",
    "batch_gather",
    "page_faults",
    "dp_step",
    "local_round",
    "ghost_clipping",
    "scale",
    "sweep_overhead",
    "federation",
    "actor_memory",
    "quickstart_time",
)


def machine() -> dict:
    """What the figures were measured on."""
    import torch

    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.is_available(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "machine.json").write_text(json.dumps(machine(), indent=2))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    failed = []
    for name in args.only or BENCHMARKS:
        cmd = [
            sys.executable,
            str(ROOT / "benchmarks" / f"{name}.py"),
            "--json",
            str(args.out / f"{name}.json"),
        ]
        if args.quick:
            cmd.append("--quick")
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        code = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        print(f"== {name}: exit {code} in {time.perf_counter() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
