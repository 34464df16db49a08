"""A small Ray federation with DP valuation, rewards and pruning (run directory contract)."""

from __future__ import annotations

import csv
import json

import pytest

from fedsim.config import from_dict
from fedsim.run import run_experiment
from fedsim.rundir import read_metrics, read_summary
from fedsim.valuation.report import report_section

SHARED_RAY = True  # its in-process runs share one Ray and warm workers (conftest)
pytestmark = pytest.mark.e2e


def test_valuation_run_writes_rewards_and_accounts_releases(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = from_dict(
        {
            "name": "val-e2e",
            "rounds": 2,
            "data": {"num_clients": 2, "train_samples": 160, "test_samples": 60},
            "model": {"name": "mlp"},
            "client": {"local_epochs": 1, "batch_size": 32},
            "dp": {"enabled": True, "epsilon": 4.0, "delta": 1e-4},
            "valuation": {
                "enabled": True,
                "metric": "loss",
                "epsilon": 0.5,
                "bound": 3.0,
                "report_metrics": ["grad_norm"],
                "report_bounds": [10.0],
                "graded_corruption": [0.0, 0.5],
                "reward_budget": 10.0,
                "prune": {"enabled": True, "warmup_rounds": 1, "fraction": 0.25},
            },
        }
    )
    run_experiment(cfg, tmp_path)
    with (tmp_path / "rewards.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4  # 2 clients x 2 rounds
    for rnd in ("1", "2"):
        paid = sum(float(r["reward"]) for r in rows if r["round"] == rnd)
        assert paid == pytest.approx(10.0)

    lines = read_metrics(tmp_path)
    for line in lines:
        for c in line["clients"].values():
            assert 0.0 <= c["valuation"] <= 3.0
            assert c["valuation_epsilon"] == pytest.approx(0.5)
            assert c["epsilon_total"] > c["epsilon"] > 0
            assert c["reward"] is not None and c["quality"] is not None
    # pruned after round 1: round 2 trains on 75% of the 80 samples
    assert {c["num_examples"] for c in lines[1]["clients"].values()} == {60}
    assert {c["num_pruned"] for c in lines[1]["clients"].values()} == {20}

    summary = read_summary(tmp_path)
    for cid, doc in summary["clients"].items():
        assert doc["reward_total"] == pytest.approx(
            sum(float(r["reward"]) for r in rows if r["client_id"] == cid)
        )
        assert doc["epsilon_total"] > doc["epsilon_spent"]
        assert doc["valuation"] is not None
    assert [summary["clients"][c]["clean_fraction"] for c in ("0", "1")] == [1.0, 0.5]
    val = summary["valuation"]
    for key in ("spearman_quality_clean", "spearman_combined_clean"):
        assert key in val
    assert "spearman_informativeness_clean" in val["by_metric"]["grad_norm"]
    json.dumps(summary)  # plain JSON

    md = report_section(tmp_path)
    assert md is not None and "Spearman" in md
    assert (tmp_path / "rewards.png").stat().st_size > 0


def test_vog_over_rounds_keeps_its_statistics_in_the_client_state(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With vog_checkpoints: rounds the running VoG statistics live in Flower's
    context.state between rounds: a release in round 2 sees 2 checkpoints (not 1, whose
    VoG would be 0 for every sample)."""
    cfg = from_dict(
        {
            "name": "vog-rounds",
            "rounds": 2,
            "data": {"num_clients": 2, "train_samples": 160, "test_samples": 60},
            "model": {"name": "mlp"},
            "client": {"local_epochs": 1, "batch_size": 32, "lr": 0.5},
            "dp": {"enabled": True, "epsilon": 4.0, "delta": 1e-4},
            "valuation": {
                "enabled": True,
                "metric": "vog",
                "vog_checkpoints": "rounds",
                "release_rounds": [2],
                "epsilon": 1000.0,  # noise far below VoG's size: the value shows the state
                "bound": 1.0,
            },
        }
    )
    run_experiment(cfg, tmp_path)
    lines = read_metrics(tmp_path)
    assert all(c.get("valuation") is None for c in lines[0]["clients"].values())
    released = [c["valuation"] for c in lines[1]["clients"].values()]
    assert len(released) == 2 and all(v > 1e-4 for v in released)
