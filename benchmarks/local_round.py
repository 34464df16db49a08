"""fedsim's whole client local round against a raw Opacus loop doing the same training.

The fedsim arm is :func:`clients.local_round.run_local_round` — what the ClientApp calls —
for one client of ``experiments/quickstart.yaml`` (PneumoniaMNIST, cnn, batch 64, 2 local
epochs, ε = 4 replace-one) in round ``--round``, its ledger carrying σ and the earlier
rounds' DP-SGD steps, as the ClientApp hands it over (round 1: an empty ledger, so the
fedsim arm also calibrates σ, which it does once per client). Before every fedsim call
the privacy caches are cleared (σ calibration, ε), as in a ClientApp process that starts
fresh each round; ``--warm`` keeps them. The raw arm builds the same model from the same
global state, the same SGD optimizer and a Poisson loader over the same data through
Opacus' ``PrivacyEngine`` with the same σ, clipping bound and grad-sample mode, and runs
the same number of epochs — training only, no accounting. The arms alternate
``--repeats`` times; the ratio of their medians is reported (target <= 1.05).

    PYTHONPATH=. python benchmarks/local_round.py [--client 0] [--round 2] [--repeats 7]
        [--threads 1] [--warm] [--profile OUT.prof] [--quick] [--json results.json]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from benchtools import CACHE_ENV, write_json
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from clients.bookkeeping import BookkeepingPrivacyEngine
from clients.local_round import LocalTask, run_local_round
from clients.opacus_adapter import resolve_grad_sample_mode
from fedsim.config import Config, load
from fedsim.deploy.site import SiteData
from fedsim.models import build_model
from fedsim.privacy import PrivacyLedger, SubsampledGaussian, clear_caches
from fedsim.privacy.planning import plan_dp_sgd
from fedsim.roles import client_data
from fedsim.workload import simulated_client_data

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "quickstart.yaml"
TARGET_RATIO = 1.05


def _ledger_before(cfg: Config, n: int, server_round: int) -> PrivacyLedger:
    """The ledger a client brings into ``server_round`` after training in every earlier one
    (round 1: empty, so the fedsim arm calibrates σ, once per client)."""
    if server_round == 1:
        return PrivacyLedger()
    plan = plan_dp_sgd(cfg, n)
    steps = plan.steps_per_round * (server_round - 1)
    event = SubsampledGaussian(plan.noise_multiplier, plan.sample_rate, steps)
    return PrivacyLedger().with_noise_multiplier(plan.noise_multiplier).with_event(event)


def fedsim_round(
    cfg: Config, client: int, data: SiteData, task: LocalTask, *, warm: bool
) -> tuple[float, int]:
    """Seconds of one :func:`run_local_round` call and the DP-SGD steps it took."""
    if not warm:
        clear_caches()
    start = time.perf_counter()
    outcome = run_local_round(cfg, client, data, task, device=torch.device("cpu"))
    seconds = time.perf_counter() - start
    if outcome.status != "ok":
        raise RuntimeError(f"client {client} did not train: {outcome.reason}")
    return seconds, outcome.ledger.dp_sgd_steps - task.ledger.dp_sgd_steps


def raw_round(
    cfg: Config,
    data: SiteData,
    client: int,
    state: dict[str, torch.Tensor],
    sigma: float,
    seed: int,
) -> tuple[float, int]:
    """Seconds of the same training written directly against Opacus, and its steps."""
    start = time.perf_counter()
    split = client_data(cfg, client, data.train, data.num_classes)
    model = build_model(cfg.model.name, data.input_shape, data.num_classes, seed=0)
    model.load_state_dict(state)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.client.lr, momentum=cfg.client.momentum)
    loader = DataLoader(
        TensorDataset(torch.from_numpy(split.x), torch.from_numpy(split.y)),
        batch_size=cfg.client.batch_size,
        generator=torch.Generator().manual_seed(seed),
    )
    mode = resolve_grad_sample_mode(cfg.dp.grad_sample_mode, True, model)
    # the same clipping engine as the client code path (one-pass ghost for bookkeeping)
    one_pass = mode == "bookkeeping"
    engine = (BookkeepingPrivacyEngine if one_pass else PrivacyEngine)(accountant="rdp")
    common: dict[str, Any] = {
        "module": model,
        "optimizer": optimizer,
        "data_loader": loader,
        "noise_multiplier": sigma,
        "max_grad_norm": cfg.dp.max_grad_norm,
        "poisson_sampling": True,
        "noise_generator": torch.Generator().manual_seed(seed + 1),
    }
    ghost = mode in ("ghost", "bookkeeping")
    if ghost:
        model, optimizer, criterion, loader = engine.make_private(
            **common, grad_sample_mode="ghost", criterion=nn.CrossEntropyLoss()
        )
    else:
        model, optimizer, loader = engine.make_private(**common)
        criterion = nn.CrossEntropyLoss()
    model.train()
    steps = 0
    for _ in range(cfg.client.local_epochs):
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x), y) if len(y) or ghost else model(x).sum() * 0.0
            loss.backward()
            optimizer.step()
            steps += 1
    return time.perf_counter() - start, steps


def measure(
    client: int, server_round: int, repeats: int, *, warm: bool, profile: Path | None
) -> dict[str, Any]:
    """Alternate the two arms ``repeats`` times (after one warm-up of each)."""
    cfg = load(str(CONFIG), [])
    data = simulated_client_data(cfg, client)
    n = len(client_data(cfg, client, data.train, data.num_classes))
    state = build_model(
        cfg.model.name, data.input_shape, data.num_classes, seed=cfg.seed
    ).state_dict()
    sigma = plan_dp_sgd(cfg, n).noise_multiplier
    task = LocalTask(server_round, state, _ledger_before(cfg, n, server_round))
    fedsim_round(cfg, client, data, task, warm=True)  # warm-up: imports, allocator, caches
    raw_round(cfg, data, client, state, sigma, 0)
    fedsim_s, raw_s, steps = [], [], set()
    for i in range(repeats):
        seconds, fs = fedsim_round(cfg, client, data, task, warm=warm)
        fedsim_s.append(seconds)
        seconds, rs = raw_round(cfg, data, client, state, sigma, i)
        raw_s.append(seconds)
        steps.add((fs, rs))
    if profile is not None:
        if not warm:
            clear_caches()
        cProfile.runctx(
            "run_local_round(cfg, client, data, task, device=torch.device('cpu'))",
            globals(),
            {"cfg": cfg, "client": client, "data": data, "task": task},
            str(profile),
        )
    f, r = statistics.median(fedsim_s), statistics.median(raw_s)
    return {
        "config": str(CONFIG.relative_to(ROOT)),
        "client": client,
        "examples": n,
        "round": server_round,
        "sigma": sigma,
        "grad_sample_mode": resolve_grad_sample_mode(
            cfg.dp.grad_sample_mode, True, build_model(cfg.model.name, data.input_shape, 2)
        ),
        "steps_fedsim_raw": sorted(steps),
        "repeats": repeats,
        "warm_caches": warm,
        "threads": torch.get_num_threads(),
        "fedsim_seconds": f,
        "raw_seconds": r,
        "fedsim_seconds_repeats": fedsim_s,
        "raw_seconds_repeats": raw_s,
        "ratio": f / r,
        "target_ratio": TARGET_RATIO,
        "met": f / r <= TARGET_RATIO,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure, print the figures and (``--json``) write them."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--client", type=int, default=0, help="quickstart client (0: 826 examples)")
    parser.add_argument("--round", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warm", action="store_true", help="keep the privacy caches")
    parser.add_argument("--profile", type=Path, help="cProfile one fedsim round into this file")
    parser.add_argument("--quick", action="store_true", help="2 repeats")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    # each repeat times the search of a fresh process: no calibrations kept across them
    os.environ[CACHE_ENV] = "off"
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    result = measure(
        args.client,
        args.round,
        2 if args.quick else args.repeats,
        warm=args.warm,
        profile=args.profile,
    )
    print(
        f"quickstart client {result['client']} ({result['examples']} examples), round "
        f"{result['round']}, sigma {result['sigma']:.4f}, {result['grad_sample_mode']}, steps "
        f"(fedsim, raw) {result['steps_fedsim_raw']}, {result['repeats']} repeats, "
        f"{result['threads']} thread(s), {'warm' if args.warm else 'cold'} privacy caches: "
        f"fedsim {result['fedsim_seconds']:.3f} s, raw Opacus {result['raw_seconds']:.3f} s, "
        f"ratio {result['ratio']:.3f} (target <= {TARGET_RATIO}: "
        f"{'met' if result['met'] else 'MISSED'})"
    )
    if args.profile is not None:
        pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(25)
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
