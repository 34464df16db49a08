"""Cost of privacy per step: a DP-SGD step over a plain SGD step on the default CNN.

Both arms train fedsim's ``cnn`` (28×28 grey inputs, ``--classes`` logits) on the same
fixed batch of ``--batch`` images: the DP arm wraps it with
:func:`clients.opacus_adapter.make_private` in the mode ``dp.grad_sample_mode: auto``
resolves to for flat clipping (forward, backward, clip, noise, update); the plain arm is
forward, backward, update. Each arm's median over ``--steps`` steps (after a warm-up) is
taken ``--repeats`` times, the arms alternating so that a busy machine slows both alike;
the median of those medians is reported, and their ratio (target <= 2.3).

    PYTHONPATH=. python benchmarks/dp_step.py [--batch 64] [--steps 30] [--repeats 5]
        [--threads 1] [--quick] [--json results.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from benchtools import write_json
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from clients.opacus_adapter import make_private, resolve_grad_sample_mode
from fedsim.models import build_model

SHAPE = (1, 28, 28)
TARGET_RATIO = 2.3


def _batch(batch: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(batch, *SHAPE, generator=gen), torch.randint(
        0, classes, (batch,), generator=gen
    )


def _median_step(step: Callable[[], None], steps: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def plain_step(x: torch.Tensor, y: torch.Tensor, classes: int) -> Callable[[], None]:
    """One non-private SGD step (forward, backward, update) of a fresh CNN on ``x, y``."""
    model = build_model("cnn", SHAPE, classes, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    criterion = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        optimizer.step()

    return step


def plain_step_time(batch: int, classes: int, steps: int) -> float:
    """Median seconds of a non-private SGD step (forward, backward, update)."""
    return _median_step(plain_step(*_batch(batch, classes), classes), steps)


def private_step(batch: int, classes: int, mode: str) -> Callable[[], None]:
    """One DP-SGD step (Opacus ``mode``, flat clipping) of the CNN on a fixed batch."""
    model = build_model("cnn", SHAPE, classes, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _batch(batch, classes)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch)
    private = make_private(
        model,
        optimizer,
        loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        noise_generator=torch.Generator().manual_seed(1),
        grad_sample_mode=mode,  # type: ignore[arg-type]
    )
    criterion = private.criterion or nn.CrossEntropyLoss()

    def step() -> None:
        private.optimizer.zero_grad(set_to_none=True)
        criterion(private.model(x), y).backward()
        private.optimizer.step()

    return step


def dp_step_time(batch: int, classes: int, steps: int, mode: str) -> float:
    """Median seconds of a DP-SGD step (Opacus ``mode``, flat clipping) on the same batch."""
    return _median_step(private_step(batch, classes, mode), steps)


def measure(batch: int, classes: int, steps: int, repeats: int) -> dict[str, Any]:
    """Both arms, alternating, ``repeats`` times; medians and their ratio."""
    mode = resolve_grad_sample_mode("auto", True, build_model("cnn", SHAPE, classes))
    plain, dp = [], []
    for _ in range(repeats):
        plain.append(plain_step_time(batch, classes, steps))
        dp.append(dp_step_time(batch, classes, steps, mode))
    plain_s, dp_s = statistics.median(plain), statistics.median(dp)
    return {
        "model": "cnn",
        "input_shape": list(SHAPE),
        "classes": classes,
        "batch": batch,
        "steps": steps,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "grad_sample_mode": mode,
        "plain_ms": plain_s * 1e3,
        "dp_ms": dp_s * 1e3,
        "plain_ms_repeats": [t * 1e3 for t in plain],
        "dp_ms_repeats": [t * 1e3 for t in dp],
        "ratio": dp_s / plain_s,
        "target_ratio": TARGET_RATIO,
        "met": dp_s / plain_s <= TARGET_RATIO,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure, print the figures and (``--json``) write them."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=2, help="2 (PneumoniaMNIST) or 10")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="10 steps x 2 repeats")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    steps, repeats = (10, 2) if args.quick else (args.steps, args.repeats)
    result = measure(args.batch, args.classes, steps, repeats)
    print(
        f"cnn {args.classes} classes, batch {args.batch}, {steps} steps x {repeats} repeats, "
        f"{result['threads']} thread(s): plain SGD {result['plain_ms']:.1f} ms/step, DP-SGD "
        f"({result['grad_sample_mode']}) {result['dp_ms']:.1f} ms/step, ratio "
        f"{result['ratio']:.2f} (target <= {TARGET_RATIO}: {'met' if result['met'] else 'MISSED'})"
    )
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
