"""Step time of Opacus DP-SGD with per-sample-gradient hooks vs ghost clipping.

Prints the median milliseconds per DP-SGD step (forward, backward, clip, noise, update)
for fedsim's ``cnn`` and ``mlp`` on 28×28 grey inputs, flat clipping. The two modes are
timed alternately, so that a busy machine slows both alike.

    PYTHONPATH=. python benchmarks/ghost_clipping.py [--batch 64] [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch
from benchtools import write_json
from torch.utils.data import DataLoader, TensorDataset

from clients.opacus_adapter import make_private
from fedsim.models import build_model


def time_steps(
    model_name: str, mode: str, batch: int, steps: int, *, secure: bool = False, classes: int = 10
) -> float:
    """Median seconds per DP-SGD step over ``steps`` steps (after one warm-up step), with
    Opacus' ``mode`` and, with ``secure``, noise and batches from the OS CSPRNG."""
    model = build_model(model_name, (1, 28, 28), classes, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    n = batch * (steps + 1)
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(n, 1, 28, 28, generator=gen), torch.randint(0, classes, (n,), generator=gen)
    )
    loader = DataLoader(data, batch_size=batch, generator=torch.Generator().manual_seed(1))
    private = make_private(
        model,
        optimizer,
        loader,
        noise_multiplier=1.0,
        max_grad_norm=2.0,
        noise_generator=torch.Generator().manual_seed(2),
        grad_sample_mode=mode,  # type: ignore[arg-type]
        secure=secure,
    )
    criterion = private.criterion or torch.nn.CrossEntropyLoss()
    times = []
    for i, (x, y) in enumerate(private.loader):
        start = time.perf_counter()
        private.optimizer.zero_grad(set_to_none=True)
        criterion(private.model(x), y).backward()
        private.optimizer.step()
        if i > 0:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="10 steps x 2 repeats")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 10, 2
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(
        f"batch {args.batch}, {args.steps} steps x {args.repeats} repeats, "
        f"{args.threads} thread(s), torch {torch.__version__}"
    )
    results = {}
    for model_name in ("mlp", "cnn"):
        runs: dict[str, list[float]] = {"hooks": [], "ghost": []}
        for _ in range(args.repeats):
            for mode in ("hooks", "ghost"):
                runs[mode].append(time_steps(model_name, mode, args.batch, args.steps))
        hooks, ghost = statistics.median(runs["hooks"]), statistics.median(runs["ghost"])
        results[model_name] = {
            "hooks_ms": round(hooks * 1e3, 2),
            "ghost_ms": round(ghost * 1e3, 2),
            "ghost_over_hooks": round(ghost / hooks, 3),
        }
        print(
            f"{model_name}: hooks {hooks * 1e3:.1f} ms/step, ghost {ghost * 1e3:.1f} ms/step, "
            f"ghost/hooks {ghost / hooks:.2f}"
        )
    write_json(
        {"benchmark": "ghost_clipping", "threads": args.threads, "results": results}, args.json
    )
    return results


if __name__ == "__main__":
    main()
