"""Start-up time of the ``fedsim`` command line for commands that need no torch.

Runs ``python -m fedsim.cli ARGS`` in a fresh interpreter ``--repeats`` times per command
(``--help``, ``run --help``, ``certs``, ``node keygen``, ``superlink --dry-run``; the
commands alternating, so that a busy machine slows all alike) and prints the median wall
seconds of each; target <= 0.5 s. The worktree holding this script is put first on
``PYTHONPATH``, so the code timed is this checkout's. A bare ``python -c pass``, timed in
the same rounds, shows this machine's interpreter start-up at that moment (0.03 s on a
normal day here, 0.15–0.24 s in the slow hours of 2026-12-01), so that figures taken on
different days compare.

    python benchmarks/cli_startup.py [--repeats 5] [--quick] [--json results.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchtools import write_json

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 0.5
COMMANDS: dict[str, list[str]] = {
    "--help": ["--help"],
    "run --help": ["run", "--help"],
    "certs": ["certs", "certs", "--overwrite"],
    "node keygen": ["node", "keygen", "keys/node", "--overwrite"],
    "superlink --dry-run": ["superlink", "--certs", "certs", "--dry-run"],
}


#: The bare interpreter's start-up, timed beside the commands (not part of the target).
REFERENCE = ("python -c pass", ["-c", "pass"])


def time_command(args: Sequence[str], cwd: Path) -> float:
    """Wall seconds of one ``python -m fedsim.cli ARGS`` in a fresh interpreter."""
    return _time_python(["-m", "fedsim.cli", *args], cwd)


def _time_python(argv: Sequence[str], cwd: Path) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def measure(repeats: int) -> dict[str, Any]:
    """Median seconds per command over ``repeats`` alternating rounds (after one warm-up)."""
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    bare: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        for i in range(repeats + 1):
            for name, args in COMMANDS.items():
                seconds = time_command(args, cwd)
                if i > 0:  # the first round warms the OS file cache
                    times[name].append(seconds)
            if i > 0:
                bare.append(_time_python(REFERENCE[1], cwd))
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        "python": sys.version.split()[0],
        "repeats": repeats,
        "target_seconds": TARGET_SECONDS,
        "median_seconds": medians,
        "samples_seconds": times,
        "python_startup_seconds": statistics.median(bare),
        "met": all(m <= TARGET_SECONDS for m in medians.values()),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure, print one line per command and (``--json``) write the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 repeats")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    result = measure(2 if args.quick else args.repeats)
    for name, seconds in result["median_seconds"].items():
        print(f"fedsim {name}: median {seconds:.3f} s over {result['repeats']} runs")
    print(f"target <= {TARGET_SECONDS} s: {'met' if result['met'] else 'MISSED'}")
    print(f"{REFERENCE[0]}: median {result['python_startup_seconds']:.3f} s (this machine now)")
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
