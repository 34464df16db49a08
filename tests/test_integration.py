"""Whole runs through Flower's Simulation Engine (real Ray actors, real Opacus).

Small: 3 clients × 2 rounds on PneumoniaMNIST with the MLP, so each run takes seconds
after Ray starts. Checks the run directory contract, reproducibility, ε against the
worst-case neighbouring pair computed directly (replace-one, the default relation), and
the max_epsilon budget stop.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest
import torch
from privacy_oracle import epsilon_bounds

import fedsim.run
from fedsim.config import from_dict
from fedsim.models import build_model
from fedsim.run import run_experiment
from fedsim.rundir import read_metrics, read_summary

SHARED_RAY = True  # its in-process runs share one Ray and warm workers (conftest)
pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]


def small_config(**dp: object) -> dict:
    return {
        "name": "itest",
        "seed": 3,
        "rounds": 2,
        "data": {
            "name": "pneumoniamnist",
            "num_clients": 3,
            "partition": "dirichlet",
            "alpha": 1.0,
        },
        "model": {"name": "mlp"},
        "client": {"local_epochs": 1, "batch_size": 64, "lr": 0.3},
        "dp": {"enabled": True, "delta": 1e-4, "max_grad_norm": 1.0, **dp},
        "strategy": {"name": "fedavg", "clients_per_round": 3},
    }


@pytest.fixture(scope="module")
def dp_runs(tmp_path_factory):
    cfg = from_dict(small_config(epsilon=2.0))
    a = tmp_path_factory.mktemp("run_a")
    b = tmp_path_factory.mktemp("run_b")
    run_experiment(cfg, a)  # 3 virtual clients on 3 nodes
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fedsim.run, "pool_size", lambda clients, workers=1: 1)
        run_experiment(cfg, b)  # all 3 on one node: where a client runs changes nothing
    return cfg, a, b


def test_run_directory_contract(dp_runs) -> None:
    _, run, _ = dp_runs
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "model.pt"):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())
    assert not (run / fedsim.run.POOL_DIR).exists()  # the shared training pool is removed
    lines = read_metrics(run)
    assert [m["round"] for m in lines] == [1, 2]
    for m in lines:
        assert 0.0 <= m["test_accuracy"] <= 1.0 and math.isfinite(m["test_loss"])
        assert m["selected"] == [0, 1, 2] and m["sampled"] == [0, 1, 2]
        assert sorted(m["clients"]) == ["0", "1", "2"]
        for c in m["clients"].values():
            for key in (
                "epsilon",
                "delta",
                "relation",
                "num_examples",
                "noise_multiplier",
                "sample_rate",
                "steps",
            ):
                assert c[key] is not None, key
            assert c["status"] == "ok"
            assert c["train_loss"] is None  # a non-private statistic: not sent under DP-SGD
    schemas = ROOT / "schemas"
    line_schema = json.loads((schemas / "metrics-line.schema.json").read_text())
    for m in lines:
        jsonschema.validate(m, line_schema)  # the published layout
    jsonschema.validate(
        read_summary(run), json.loads((schemas / "summary.schema.json").read_text())
    )
    summary = read_summary(run)
    assert (
        summary["rounds"] == 2 and summary["final"]["test_accuracy"] == lines[-1]["test_accuracy"]
    )
    assert summary["wall_seconds"] > 0
    assert set(summary["clients"]) == {"0", "1", "2"}
    for c in summary["clients"].values():
        assert c["role"] == "honest" and c["delta"] == 1e-4 and c["epsilon_spent"] > 0
        assert "valuation" in c and "reward_total" in c
    state = torch.load(run / "model.pt")
    assert not any(k.startswith("_module.") for k in state)
    model = build_model("mlp", (1, 28, 28), 2)
    model.load_state_dict(state)  # a plain state_dict of the configured architecture
    assert "fedsim_version" in (run / "config.yaml").read_text()


def test_same_seed_same_metrics(dp_runs) -> None:
    _, a, b = dp_runs
    strip = [{k: v for k, v in m.items() if k != "seconds"} for m in read_metrics(a)]
    for m in strip:
        for c in m["clients"].values():
            c.pop("train_seconds")
    other = [{k: v for k, v in m.items() if k != "seconds"} for m in read_metrics(b)]
    for m in other:
        for c in m["clients"].values():
            c.pop("train_seconds")
    assert json.dumps(strip, sort_keys=True) == json.dumps(other, sort_keys=True)


def test_epsilon_is_cumulative_and_meets_target(dp_runs) -> None:
    cfg, run, _ = dp_runs
    lines = read_metrics(run)
    for cid in ("0", "1", "2"):
        r1, r2 = lines[0]["clients"][cid], lines[1]["clients"][cid]
        assert r2["steps"] == 2 * r1["steps"]
        assert r2["epsilon"] > r1["epsilon"]
        # re-derive epsilon from the logged accounting inputs: the replace-one pair, directly
        low, high = epsilon_bounds(
            [(r2["noise_multiplier"], r2["sample_rate"], r2["steps"])], r2["delta"]
        )
        assert low * 0.999 <= r2["epsilon"] <= high * 1.001
        # the whole planned training spends the target (within the bracket's width)
        assert high == pytest.approx(cfg.dp.epsilon, rel=0.03)
        assert r2["epsilon"] <= cfg.dp.epsilon * 1.001


def test_max_epsilon_stops_training(tmp_path) -> None:
    # sigma 1.0 with max_epsilon between the 1-round and 2-round spend: every client trains
    # in round 1, then refuses; the global model stays unchanged in round 2, after which no
    # client can train and the run ends early, saying why.
    raw = small_config(noise_multiplier=1.0)
    raw["rounds"] = 3
    raw["data"]["partition"] = "iid"  # equal sizes: one threshold fits every client
    cfg = from_dict(raw)
    from fedsim.privacy import Accounting
    from fedsim.privacy.planning import epsilon_after_rounds, plan_dp_sgd
    from fedsim.workload import client_split

    per_client = [plan_dp_sgd(cfg, len(client_split(cfg, c))) for c in range(3)]
    acct = Accounting.of(cfg.dp)
    one = max(epsilon_after_rounds(p, 1, acct) for p in per_client)
    two = min(epsilon_after_rounds(p, 2, acct) for p in per_client)
    assert one < two
    raw["dp"]["max_epsilon"] = (one + two) / 2
    cfg = from_dict(raw)
    run_experiment(cfg, tmp_path)
    lines = read_metrics(tmp_path)
    assert lines[0]["selected"] == [0, 1, 2]
    assert [c["status"] for c in lines[1]["clients"].values()] == ["budget-exhausted"] * 3
    assert lines[1]["selected"] == [] and len(lines) == 2
    assert lines[1]["test_accuracy"] == lines[0]["test_accuracy"]
    summary = read_summary(tmp_path)
    assert summary["rounds"] == 2
    assert summary["ended_early"].startswith("no client could train after round 2 of 3")
    for c in summary["clients"].values():
        assert c["epsilon_spent"] <= cfg.dp.max_epsilon
        assert c["rounds_trained"] == 1
