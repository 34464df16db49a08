"""Federated (per-site) evaluation through Flower's Simulation Engine: evaluate messages to
the sampled sites after every round, their DP releases in metrics.jsonl, summary.json,
TensorBoard and report.md, and every release charged to the site's ε.

Small: 3 clients × 2 rounds on a 900-sample PneumoniaMNIST subset with the MLP; 2 of the
3 sites evaluate each round.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedsim.config import from_dict
from fedsim.privacy import Accounting, EvaluationRelease, SubsampledGaussian
from fedsim.records import SiteMetrics
from fedsim.run import run_experiment
from fedsim.rundir import read_metrics, read_summary

SHARED_RAY = True  # conftest: one Ray for the module
pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = from_dict(
        {
            "name": "sites",
            "seed": 3,
            "rounds": 2,
            "data": {"name": "pneumoniamnist", "num_clients": 3, "train_samples": 900},
            "model": {"name": "mlp"},
            "client": {"local_epochs": 1, "batch_size": 64, "lr": 0.3},
            "dp": {"enabled": True, "epsilon": 2.0, "delta": 1e-4},
            "evaluation": {"federated": True, "fraction": 0.67, "epsilon": 1.0, "holdout": 0.2},
        }
    )
    out = tmp_path_factory.mktemp("sites")
    run_experiment(cfg, out)  # the ServerApp writes report.md too
    return cfg, out


def test_sites_report_noisy_counts_per_round(run) -> None:
    _, out = run
    lines = read_metrics(out)
    schema = json.loads((ROOT / "schemas" / "metrics-line.schema.json").read_text())
    for m in lines:
        jsonschema.validate(m, schema)
        block = m["site_evaluation"]
        assert len(block["sites"]) == 2  # round(0.67 * 3) sites, sampled from the seed
        matrices = []
        for site in block["sites"].values():
            assert site["status"] == "ok" and site["epsilon"] == 1.0
            confusion = site["metrics"]["confusion"]
            assert np.shape(confusion) == (2, 2)
            assert abs(sum(map(sum, confusion)) - 60) < 40  # ~20% of a 300-sample partition
            matrices.append(np.array(confusion))
        # the aggregate pools the released matrices (rates weighted by the noisy sizes)
        pooled = SiteMetrics.of(np.sum(matrices, axis=0)).to_json()
        assert block["aggregate"] == pytest.approx(pooled)
        # the central test's clinical metrics sit next to it
        assert set(m["test_confusion"]) == {"tn", "fp", "fn", "tp"}
        assert sum(m["test_confusion"].values()) == 624
    summary = read_summary(out)
    jsonschema.validate(summary, json.loads((ROOT / "schemas" / "summary.schema.json").read_text()))
    assert summary["site_evaluation"]["rounds"] == [1, 2]
    assert summary["site_evaluation"]["final"] == lines[-1]["site_evaluation"]["aggregate"]


def test_every_release_is_charged_to_the_site(run) -> None:
    cfg, out = run
    lines = read_metrics(out)
    summary = read_summary(out)
    acct = Accounting.of(cfg.dp)
    evaluated = {cid: [m["round"] for m in lines if cid in m["site_evaluation"]["sites"]]
                 for cid in ("0", "1", "2")}  # fmt: skip
    assert sorted(r for rounds in evaluated.values() for r in rounds) == [1, 1, 2, 2]
    for cid, rounds in evaluated.items():
        last = lines[-1]["clients"][cid]
        training = SubsampledGaussian(last["noise_multiplier"], last["sample_rate"], last["steps"])
        charges = [EvaluationRelease(0.5, 2)] * len(rounds)  # ε = 1 under replace-one
        client = summary["clients"][cid]
        assert client["epsilon_total"] == pytest.approx(
            acct.epsilon([training, *charges]), rel=1e-6
        )
        if rounds:
            assert client["epsilon_total"] > client["epsilon_spent"] + 0.5
            assert client["epsilon_evaluation"] == pytest.approx(acct.epsilon(charges), rel=1e-6)
        else:
            assert client["epsilon_evaluation"] is None
        if 1 in rounds:  # round 1's release is in the ledger the client trained round 2 with
            assert lines[1]["clients"][cid]["epsilon_total"] > lines[1]["clients"][cid]["epsilon"]
    assert summary["dp"]["max_epsilon_total"] == max(
        c["epsilon_total"] for c in summary["clients"].values()
    )


def test_report_and_tensorboard_show_the_sites(run) -> None:
    _, out = run
    report = (out / "report.md").read_text()
    assert "## Per-site evaluation" in report and "(sites.png)" in report
    assert "## Clinical metrics (central test)" in report
    assert "Laplace noise of scale 2" in report and "ε = 1 release (replace-one)" in report
    assert (out / "sites.png").stat().st_size > 0
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"sites/accuracy", "sites/sensitivity", "test/f1", "test/confusion_tp"} <= tags
    assert [e.step for e in events.Scalars("sites/accuracy")] == [1, 2]
