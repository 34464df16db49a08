"""Stand-in for ``fedsim sweep`` (same ``sweep:`` format, same directory layout).

Usage::

    python experiments/secprobe/run_sweep.py CONFIG OUT_DIR

Runs every point of the config's ``sweep:`` grid (cartesian product, seeds innermost)
into ``OUT_DIR/points/NNN-slug/`` (skipping points whose ``summary.json`` exists) and
writes ``OUT_DIR/sweep.csv``: the swept keys, ``seed``, every scalar leaf of summary.json
outside ``clients`` (dotted), and ``run_dir``. Once ``fedsim sweep`` is on main,
``fedsim sweep CONFIG --out OUT_DIR`` does the same.
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedsim.config import from_dict, read_yaml
from fedsim.run import run_experiment


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if not prefix and key == "clients":
            continue
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[f"{prefix}{key}"] = value
    return out


def main(config: str, out: str) -> int:
    raw = read_yaml(config)
    spec = raw.pop("sweep")
    grid = dict(spec["grid"])
    if "seeds" in spec:
        grid["seed"] = spec["seeds"]
    keys = list(grid)
    out_dir = Path(out)
    rows = []
    for index, combo in enumerate(itertools.product(*grid.values())):
        point = copy.deepcopy(raw)
        for key, value in zip(keys, combo, strict=True):
            node = point
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        cfg = from_dict(point)
        named = "-".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, combo, strict=True))
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", named)
        run_dir = out_dir / "points" / f"{index:03d}-{slug}"
        summary_file = run_dir / "summary.json"
        if not summary_file.exists():
            run_experiment(cfg, run_dir)
        summary = json.loads(summary_file.read_text())
        row: dict[str, Any] = dict(zip(keys, combo, strict=True))
        row.update({k: v for k, v in flatten(summary).items() if k not in row})
        row["run_dir"] = str(run_dir)
        rows.append(row)
        rest = sorted({k for r in rows for k in r} - set(keys) - {"run_dir"})
        columns = [*keys, *rest, "run_dir"]
        with open(out_dir / "sweep.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main(sys.argv[1], sys.argv[2]))
