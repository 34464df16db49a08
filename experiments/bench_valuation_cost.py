"""Benchmark: cost of per-sample VoG / PLIS (and baselines) against local DP training.

Takes one client of a config (default: experiments/quickstart.yaml, client 0), times one
local round of Opacus DP-SGD exactly as ``clients.local_round`` runs it (local_epochs
epochs, Poisson batches), then times, on a plain copy of the model and the same client
data, one VoG checkpoint (an input-gradient pass), PLIS, the per-sample gradient norm and
the per-sample loss, batched through :class:`fedsim.valuation.ScoreTracker`. Each figure
is the median over ``--repeats`` interleaved repetitions (the machine is shared: the ratio
is more stable than the seconds). Also times PLIS one sample at a time on a few samples,
to show what batching saves.

Usage::

    PYTHONPATH=. python experiments/bench_valuation_cost.py [CONFIG] [--client 0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from clients.opacus_adapter import make_private, plain_state_dict
from clients.trainer import train_epochs
from fedsim.config import load
from fedsim.models import build_model
from fedsim.privacy.planning import plan_dp_sgd
from fedsim.roles import client_data
from fedsim.seeding import torch_generator
from fedsim.valuation import ScoreTracker, plis
from fedsim.workload import client_split, dataset_for


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="experiments/quickstart.yaml")
    ap.add_argument("--client", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--batch-size", type=int, default=128, help="scoring batch size (lower it for resnets)"
    )
    args = ap.parse_args()

    cfg = load(args.config, [])
    bundle = dataset_for(cfg.data, cfg.seed)
    split = client_data(cfg, args.client, client_split(cfg, args.client), bundle.num_classes)
    n = len(split)
    plan = plan_dp_sgd(cfg, n) if cfg.dp.enabled else None
    init = build_model(cfg.model.name, bundle.input_shape, bundle.num_classes, seed=cfg.seed)
    tracker = ScoreTracker(
        cfg.model.name,
        bundle.input_shape,
        bundle.num_classes,
        split.x,
        split.y,
        batch_size=args.batch_size,
        sigma=plan.noise_multiplier if plan else 1.0,
    )

    def train_round(state: dict[str, torch.Tensor]) -> tuple[float, dict[str, torch.Tensor]]:
        model = build_model(cfg.model.name, bundle.input_shape, bundle.num_classes)
        model.load_state_dict(state)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.client.lr, momentum=cfg.client.momentum)
        loader = DataLoader(
            TensorDataset(torch.from_numpy(split.x), torch.from_numpy(split.y)),
            batch_size=cfg.client.batch_size,
            shuffle=True,
            generator=torch_generator(cfg.seed, "bench", args.client),
        )
        started = time.perf_counter()
        if plan is None:
            train_epochs(model, loader, opt, cfg.client.local_epochs, torch.device("cpu"))
            return time.perf_counter() - started, plain_state_dict(model)
        private = make_private(
            model,
            opt,
            loader,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=cfg.dp.max_grad_norm,
            noise_generator=torch_generator(cfg.seed, "bench-noise", args.client),
        )
        train_epochs(
            private.model,
            private.loader,
            private.optimizer,
            cfg.client.local_epochs,
            torch.device("cpu"),
        )
        return time.perf_counter() - started, plain_state_dict(private.model)

    def timed(fn) -> float:  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    state = plain_state_dict(init)
    times: dict[str, list[float]] = {
        k: [] for k in ("train", "vog_ckpt", "plis", "grad_norm", "loss")
    }
    for _ in range(args.repeats):
        seconds, state = train_round(state)
        times["train"].append(seconds)
        times["vog_ckpt"].append(timed(functools.partial(tracker.record_checkpoint, state)))
        for metric in ("plis", "grad_norm", "loss"):
            times[metric].append(timed(functools.partial(tracker.scores, metric, state)))
    med = {k: statistics.median(v) for k, v in times.items()}

    probe = min(16, n)
    xb, yb = torch.from_numpy(split.x[:probe]), torch.from_numpy(split.y[:probe])
    looped = timed(
        lambda: [plis(tracker.model, xb[i : i + 1], yb[i : i + 1]) for i in range(probe)]
    )
    batched = timed(lambda: plis(tracker.model, xb, yb))

    k = cfg.client.local_epochs
    train = med["train"]
    print(
        f"config {args.config}, client {args.client}: n={n}, model {cfg.model.name}, "
        f"{k} local epochs, batch {cfg.client.batch_size}, DP={'on' if plan else 'off'}; "
        f"median of {args.repeats}, torch threads {torch.get_num_threads()}"
    )
    print(f"local round (training)           {train:8.2f} s")
    rows = [
        ("VoG, 1 checkpoint", med["vog_ckpt"]),
        (f"VoG, {k} checkpoints/round (epochs)", k * med["vog_ckpt"]),
        ("PLIS (once per valuation)", med["plis"]),
        ("grad_norm", med["grad_norm"]),
        ("loss", med["loss"]),
    ]
    for name, sec in rows:
        print(f"{name:33s}{sec:8.2f} s  = {100 * sec / train:6.1f}% of the local round")
    total = k * med["vog_ckpt"] + med["plis"]
    print(
        f"{'VoG (K=epochs) + PLIS per round':33s}{total:8.2f} s  = "
        f"{100 * total / train:6.1f}% of the local round"
    )
    print(
        f"PLIS per sample: batched {1000 * batched / probe:.1f} ms, one at a time "
        f"{1000 * looped / probe:.1f} ms ({probe} samples)"
    )


if __name__ == "__main__":
    main()
