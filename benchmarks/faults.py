"""Inject site failures into real runs, every kind against every strategy; print a table.

Each cell is one ``fedsim run`` (a subprocess, as a user runs it) of 8 clients × 3 rounds
in which one client's site fails every round (``roles.faulty``: ``crash``, ``straggle``
past ``strategy.round_timeout``, or ``exit`` — its worker process dies). A cell is
*handled cleanly* when the run ends with exit code 4 (done, with client faults), all three
rounds are in ``metrics.jsonl``, the faulty client is ``failed`` with a reason in each of
them, every other client is ``ok`` in every round (a dead worker was replaced), and no
Ray process is left behind.

Usage::

    python benchmarks/faults.py [--kinds crash straggle exit] [--strategies fedavg ...]

Prints one line per cell and ``faults injected N, handled cleanly M``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = """\
name: faults
seed: 1
rounds: 3
data: {{name: pneumoniamnist, num_clients: 8, train_samples: 400, test_samples: 100}}
model: {{name: mlp}}
client: {{local_epochs: 1, batch_size: 32, lr: 0.1}}
dp: {{enabled: false}}
strategy:
  {{name: {strategy}, clients_per_round: 8, k: 3, num_malicious: 1, round_timeout: {timeout}}}
roles: {{faulty: {{fraction: 0.125, kind: {kind}}}}}
"""


def ray_processes() -> set[int]:
    """Pids of Ray's own processes on this machine."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    marks = ("gcs_server", "raylet", "ray::", "ray/dashboard", "ray/_private/")
    return {int(ln.split(None, 1)[0]) for ln in out.splitlines() if any(m in ln for m in marks)}


def cell(kind: str, strategy: str, work: Path) -> tuple[bool, str]:
    """Run one cell; returns (handled cleanly, what happened)."""
    from clients.faults import faulty_clients
    from fedsim.config import load

    cfg_path = work / f"{kind}-{strategy}.yaml"
    timeout = 10 if kind == "straggle" else 120  # a replaced worker may take a while
    cfg_path.write_text(CONFIG.format(kind=kind, strategy=strategy, timeout=timeout))
    (bad,) = faulty_clients(load(cfg_path))
    run_dir = work / f"{kind}-{strategy}"
    before = ray_processes()
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "run", str(cfg_path), "--out", str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    took = time.monotonic() - started
    time.sleep(2)
    left = ray_processes() - before
    problems = []
    if proc.returncode != 4:
        problems.append(f"exit {proc.returncode}")
    lines = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    if [m["round"] for m in lines] != [1, 2, 3]:
        problems.append(f"rounds {[m['round'] for m in lines]}")
    for m in lines:
        clients = m["clients"]
        if clients.get(str(bad), {}).get("status") != "failed":
            problems.append(f"round {m['round']}: faulty client not failed")
        if not clients.get(str(bad), {}).get("rejected_reason"):
            problems.append(f"round {m['round']}: no reason")
        others = {c: r["status"] for c, r in clients.items() if c != str(bad)}
        if set(others.values()) != {"ok"} or len(others) != 7:
            problems.append(f"round {m['round']}: others {others}")
    if left:
        problems.append(f"{len(left)} Ray processes left")
    what = "ok" if not problems else "; ".join(problems)
    return not problems, f"{what} ({took:.0f} s)"


def main() -> None:
    from strategies.registry import STRATEGIES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["crash", "straggle", "exit"])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES.names()))
    args = parser.parse_args()
    total = clean = 0
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds:
            for strategy in args.strategies:
                ok, what = cell(kind, strategy, Path(tmp))
                total += 1
                clean += ok
                print(f"{kind:9s} {strategy:13s} {what}", flush=True)
    print(f"faults injected {total}, handled cleanly {clean}")


if __name__ == "__main__":
    main()
