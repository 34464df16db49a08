"""Sample-level DP of real runs, against the worst-case neighbouring pair computed directly.

- ``replace_one`` (the default): a client's reply reveals its size, and every ε in the
  run directory lies within the exact ε bracket of the replace-one pair for the logged σ,
  q and steps (the earlier add/remove accounting of the same σ is far below it).
- ``add_remove``: only with the size hidden — no example count in any reply or in the
  run directory, one public schedule for every client (from ``dp.size_bound``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from client_harness import seeded_private, train_config
from flwr.app import Context, Message, RecordDict
from privacy_oracle import epsilon_bounds
from torch.utils.data import DataLoader, TensorDataset

from fedsim import keys
from fedsim.config import from_dict

SHARED_RAY = True  # its in-process runs share one Ray and warm workers (conftest)
DELTA = 1e-5


def _config(**dp: Any) -> dict[str, Any]:
    return {
        "name": "privacy-run",
        "seed": 1,
        "rounds": 2,
        "data": {
            "name": "pneumoniamnist",
            "num_clients": 3,
            "train_samples": 300,
            "test_samples": 100,
        },
        "model": {"name": "mlp"},
        "client": {"local_epochs": 1, "batch_size": 32, "lr": 0.2},
        "dp": {"epsilon": 3.0, "delta": DELTA, **dp},
        "strategy": {"clients_per_round": 3},
    }


def test_public_schedule_loader_ignores_the_data_size() -> None:
    """The add/remove schedule: Poisson rate 1/steps and the normaliser fixed, for any n."""
    for n in (40, 80):
        model = torch.nn.Linear(4, 2)
        loader = DataLoader(
            TensorDataset(torch.randn(n, 4), torch.randint(0, 2, (n,))),
            batch_size=8,
            generator=torch.Generator().manual_seed(0),
        )
        private = seeded_private(model, loader, steps_per_epoch=7, expected_batch_size=9)
        assert len(private.loader) == 7
        assert private.optimizer.expected_batch_size == 9
        for x, _ in private.loader:
            private.optimizer.zero_grad()
            torch.nn.functional.cross_entropy(
                private.model(x), torch.zeros(len(x)).long()
            ).backward()
            private.optimizer.step()
        assert private.accounted_schedule()[1] == pytest.approx(1 / 7)


def test_add_remove_replies_carry_no_size(task_identity: None) -> None:
    from flwr.app import ArrayRecord

    from clients.client_app import make_client_app
    from fedsim.models import build_model

    cfg = from_dict(_config(neighbouring="add_remove", size_bound=120))
    app = make_client_app(cfg, seeded_noise=True)
    node = {keys.NODE_PARTITION_ID: 0, keys.NODE_NUM_PARTITIONS: 3}
    context = Context(run_id=1, node_id=3, node_config=node, state=RecordDict(), run_config={})
    query = app(Message(RecordDict(), dst_node_id=3, message_type="query"), context)
    assert keys.NUM_EXAMPLES not in query.content.metric_records[keys.METRICS]
    arrays = ArrayRecord(build_model("mlp", (1, 28, 28), 2, seed=0).state_dict())
    train = Message(
        RecordDict({keys.ARRAYS: arrays, keys.CONFIG: train_config(1)}),
        dst_node_id=3,
        message_type="train",
    )
    reply = app(train, context)
    metrics = reply.content.metric_records[keys.METRICS]
    for hidden in (keys.NUM_EXAMPLES, keys.TRAIN_SECONDS, keys.NUM_PRUNED, keys.TRAIN_LOSS):
        assert hidden not in metrics
    assert metrics[keys.UNIT_WEIGHT] == 1
    assert metrics[keys.SAMPLE_RATE] == pytest.approx(1 / math.ceil(120 / 32))
    assert keys.RELATION_NAMES[int(metrics[keys.RELATION])] == "add_remove"  # type: ignore[arg-type]


@pytest.mark.e2e
@pytest.mark.parametrize("relation", ["replace_one", "add_remove"])
def test_run_epsilon_matches_the_worst_pair(tmp_path: Path, relation: str) -> None:
    from fedsim.run import run_experiment
    from fedsim.rundir import read_metrics, read_summary

    extra = {"neighbouring": relation}
    if relation == "add_remove":
        extra["size_bound"] = 120
    cfg = from_dict(_config(**extra))
    run_experiment(cfg, tmp_path)
    lines = read_metrics(tmp_path)
    summary = read_summary(tmp_path)
    assert summary["dp"]["neighbouring"] == relation
    checked = 0
    for line in lines:
        for cid, c in line["clients"].items():
            assert c["status"] == "ok" and c["relation"] == relation
            low, high = epsilon_bounds(
                [(c["noise_multiplier"], c["sample_rate"], c["steps"])], DELTA, relation
            )
            assert low * (1 - 1e-3) <= c["epsilon"] <= high * (1 + 1e-3), cid
            assert c["train_loss"] is None  # not released under DP-SGD
            if relation == "add_remove":
                assert c["num_examples"] is None
                assert c["sample_rate"] == pytest.approx(1 / math.ceil(120 / 32))
            else:
                assert c["num_examples"] > 0
            checked += 1
    assert checked == 6
    for c in summary["clients"].values():
        assert c["relation"] == relation
        assert (c["num_examples"] is None) == (relation == "add_remove")
    if relation == "add_remove":  # one public schedule: every client the same σ and ε
        assert len({c["epsilon_spent"] for c in summary["clients"].values()}) == 1
