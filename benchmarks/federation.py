"""A whole ``fedsim run`` versus the same training in a plain sequential loop.

Both arms run in fresh processes and are timed from process start to exit (imports
included), alternately, ``--repeats`` times:

- **federation**: ``fedsim run`` (Flower's simulation engine, its client workers, the run
  directory, central evaluation every round);
- **plain loop**: one process that loads the same data and, for every round, calls
  fedsim's client code (:func:`clients.local_round.run_local_round`) for each client in
  turn, averages the updates weighted by size (FedAvg) and evaluates on the test split.

The config is 10 clients × 3 rounds on PneumoniaMNIST with the CNN, with DP-SGD
(ε = 4) and without. The ratio federation / plain loop is printed per arm with medians.
Five repeats by default: on this VM two repeats of one arm differed by up to 12% within
minutes (2026-12-01: non-private ratio 1.31 with two repeats, 1.23 with five, same code).

    PYTHONPATH=. python benchmarks/federation.py [--repeats 5] [--quick] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import yaml
from benchtools import timed_run, write_json

ROOT = Path(__file__).resolve().parents[1]


def config(dp: bool) -> dict:
    """10 clients × 3 rounds, all clients every round."""
    return {
        "name": f"federation-{'dp' if dp else 'plain'}",
        "seed": 0,
        "rounds": 3,
        "data": {"name": "pneumoniamnist", "num_clients": 10, "partition": "iid"},
        "model": {"name": "cnn"},
        "client": {"local_epochs": 1, "batch_size": 64, "lr": 0.5 if dp else 0.05},
        "dp": {"enabled": True, "epsilon": 4.0, "delta": 1e-4} if dp else {"enabled": False},
        "strategy": {"name": "fedavg", "clients_per_round": 10},
    }


def plain_loop(config_path: str) -> None:
    """The plain-loop arm (run in its own process by :func:`main`)."""
    import torch

    from clients.local_round import LocalTask, run_local_round
    from fedsim.config import load
    from fedsim.evaluation import evaluate
    from fedsim.models import build_model
    from fedsim.privacy import PrivacyLedger
    from fedsim.workload import dataset_for, simulated_client_data

    cfg = load(config_path)
    bundle = dataset_for(cfg.data, cfg.seed)
    device = torch.device("cpu")
    model = build_model(cfg.model.name, bundle.input_shape, bundle.num_classes, seed=cfg.seed)
    ledgers = {c: PrivacyLedger() for c in range(cfg.data.num_clients)}
    data = {c: simulated_client_data(cfg, c) for c in range(cfg.data.num_clients)}
    evaluate(model, bundle.test, device)
    for rnd in range(1, cfg.rounds + 1):
        state = {k: v.clone() for k, v in model.state_dict().items()}
        total, summed = 0, None
        for cid in range(cfg.data.num_clients):
            task = LocalTask(rnd, state, ledgers[cid])
            out = run_local_round(cfg, cid, data[cid], task, device=device)
            ledgers[cid] = out.ledger
            assert out.state_dict is not None
            n = out.num_examples
            total += n
            scaled = {k: v.double() * n for k, v in out.state_dict.items()}
            summed = scaled if summed is None else {k: summed[k] + scaled[k] for k in summed}
        assert summed is not None
        model.load_state_dict({k: (v / total).to(state[k].dtype) for k, v in summed.items()})
        result = evaluate(model, bundle.test, device)
    print(json.dumps({"accuracy": result.accuracy}))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one repeat, DP only")
    parser.add_argument("--plain", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.plain:
        plain_loop(args.plain)
        return {}
    arms = [True] if args.quick else [True, False]
    repeats = 1 if args.quick else args.repeats
    results = {}
    with tempfile.TemporaryDirectory(prefix="fedsim-fed-") as tmp:
        for dp in arms:
            cfg_file = Path(tmp) / f"{dp}.yaml"
            cfg_file.write_text(yaml.safe_dump(config(dp)))
            fed, plain = [], []
            for r in range(repeats):
                out = Path(tmp) / f"run-{dp}-{r}"
                run = [sys.executable, "-m", "fedsim.cli", "run", str(cfg_file), "--out", str(out)]
                fed.append(timed_run(run, "fedsim run"))
                plain.append(
                    timed_run([sys.executable, __file__, "--plain", str(cfg_file)], "plain loop")
                )
            name = "dp" if dp else "non_private"
            row = {
                "federation_s": [round(t, 2) for t in fed],
                "plain_loop_s": [round(t, 2) for t in plain],
                "ratio": round(statistics.median(fed) / statistics.median(plain), 3),
            }
            results[name] = row
            print(
                f"{name}: federation {statistics.median(fed):.1f} s, plain loop "
                f"{statistics.median(plain):.1f} s, ratio {row['ratio']:.2f} "
                f"(target {'1.10' if dp else '1.30'})",
                flush=True,
            )
    write_json({"benchmark": "federation", "results": results}, args.json)
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
