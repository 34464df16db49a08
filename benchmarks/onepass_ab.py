"""One-pass clipping of this checkout against another checkout's, step by step in one process.

Loads ``clients/bookkeeping.py`` from this tree and from ``--base`` (another checkout, e.g.
``git worktree add /tmp/base REV``), wraps the default CNN with each, and alternates single
DP-SGD steps of the two (and of a plain SGD step) on the same batch of 64, ``--steps``
times; prints the median step of each and their ratios. Alternating step by step in one
process keeps this VM's speed changes (up to ~2× between hours) out of the ratios.

    PYTHONPATH=. python benchmarks/onepass_ab.py --base /tmp/base [--steps 200] [--json F]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from benchtools import write_json
from dp_step import SHAPE, _batch, plain_step
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedsim.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _dp_step(module: ModuleType, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    model = build_model("cnn", SHAPE, 2, seed=0)
    engine = module.BookkeepingPrivacyEngine(accountant="rdp")
    private, optimizer, criterion, _ = engine.make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        criterion=nn.CrossEntropyLoss(),
        data_loader=DataLoader(TensorDataset(x, y), batch_size=len(x)),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        grad_sample_mode="ghost",
        noise_generator=torch.Generator().manual_seed(1),
    )

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(private(x), y).backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    x, y = _batch(64, 2)
    steps = {
        "base": _dp_step(_load("onepass_base", args.base / "clients/bookkeeping.py"), x, y),
        "this": _dp_step(_load("onepass_this", ROOT / "clients/bookkeeping.py"), x, y),
        "plain": plain_step(x, y, 2),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()
        step()
    for _ in range(args.steps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    result = {
        "base": str(args.base),
        "steps": args.steps,
        "threads": args.threads,
        "median_ms": ms,
        "this_over_base": ms["this"] / ms["base"],
        "base_over_plain": ms["base"] / ms["plain"],
        "this_over_plain": ms["this"] / ms["plain"],
    }
    print(
        f"DP-SGD step, CNN, batch 64, {args.threads} thread(s), {args.steps} alternating steps: "
        f"base {ms['base']:.1f} ms ({result['base_over_plain']:.2f}x plain), this "
        f"{ms['this']:.1f} ms ({result['this_over_plain']:.2f}x plain), plain "
        f"{ms['plain']:.1f} ms; this/base {result['this_over_base']:.3f}"
    )
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
