"""Time to draw a Poisson batch: the batched tensor dataset against a ``TensorDataset``.

Both arms walk Opacus' Poisson loader (rate 1/ceil(n/B), as DP-SGD's) over the same
``--n`` random 28×28 grey images and labels with batch size ``--batch``, on one thread:
the ``TensorDataset`` arm gathers each batch an example at a time and stacks it with
``default_collate``; the batched arm (:mod:`clients.batched`, what the client trains on)
indexes each tensor once. Each repeat walks the loader ``--passes`` times per arm, the
arms alternating; prints the median milliseconds per batch and checks that both arms
drew the same tensors.

    PYTHONPATH=. python benchmarks/batch_gather.py [--n 1000] [--batch 64] [--passes 7]
        [--repeats 3] [--quick] [--json F]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from benchtools import write_json
from opacus.data_loader import DPDataLoader
from torch.utils.data import DataLoader, Dataset, TensorDataset

from clients.batched import BatchedTensorDataset, collate_stacked


def _loader(dataset: Dataset, batch: int, **kwargs: Any) -> DPDataLoader:
    plain = DataLoader(dataset, batch_size=batch, **kwargs)
    return DPDataLoader.from_data_loader(plain, generator=torch.Generator().manual_seed(0))


def _walk(loader: DPDataLoader, passes: int) -> tuple[float, list[list[torch.Tensor]]]:
    """Median seconds per batch over ``passes`` walks, and the batches of the last."""
    per_batch, batches = [], []
    for _ in range(passes):
        loader.batch_sampler.generator.manual_seed(0)  # type: ignore[union-attr]
        began, batches = time.perf_counter(), list(loader)
        per_batch.append((time.perf_counter() - began) / max(1, len(batches)))
    return statistics.median(per_batch), batches


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--passes", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repeat")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(args.n, 1, 28, 28, generator=gen)
    y = torch.randint(0, 2, (args.n,), generator=gen)
    arms = {
        "tensor_dataset": _loader(TensorDataset(x, y), args.batch),
        "batched": _loader(BatchedTensorDataset(x, y), args.batch, collate_fn=collate_stacked),
    }
    ms: dict[str, list[float]] = {name: [] for name in arms}
    drawn: dict[str, list[list[torch.Tensor]]] = {}
    for _ in range(1 if args.quick else args.repeats):
        for name, loader in arms.items():
            seconds, drawn[name] = _walk(loader, args.passes)
            ms[name].append(round(seconds * 1e3, 4))
    same = len(drawn["batched"]) == len(drawn["tensor_dataset"]) and all(
        torch.equal(a, b)
        for want, have in zip(drawn["tensor_dataset"], drawn["batched"], strict=True)
        for a, b in zip(want, have, strict=True)
    )
    medians = {name: statistics.median(times) for name, times in ms.items()}
    result = {
        "benchmark": "batch_gather",
        "n": args.n,
        "batch": args.batch,
        "ms_per_batch": ms,
        "median_ms_per_batch": medians,
        "same_batches": same,
    }
    print(
        f"Poisson batches of {args.batch} from {args.n} images, one thread: TensorDataset "
        f"{medians['tensor_dataset']:.3f} ms, batched {medians['batched']:.3f} ms per batch "
        f"(medians of {len(ms['batched'])} repeats x {args.passes} passes); same batches: {same}"
    )
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
