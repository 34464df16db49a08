"""Whole runs of the selecting and robust strategies (real Ray, no DP, MLP, PneumoniaMNIST).

Each run takes ~15-40 s on 2 cores; all are marked e2e.
"""

from __future__ import annotations

import math

import pytest

from fedsim.config import from_dict
from fedsim.run import run_experiment
from fedsim.rundir import read_metrics, read_summary

SHARED_RAY = True  # its in-process runs share one Ray and warm workers (conftest)
pytestmark = pytest.mark.e2e

ALL_STRATEGIES = [
    "fedavg",
    "secprobe",
    "random_k",
    "krum",
    "multikrum",
    "median",
    "trimmed_mean",
    "bulyan",
]


def run_config(name: str, num_clients: int = 6, rounds: int = 2, **extra: object) -> dict:
    strategy = {"name": name, "clients_per_round": num_clients}
    strategy.update(extra.pop("strategy", {}))  # type: ignore[arg-type]
    return {
        "name": f"sel-{name}",
        "seed": 1,
        "rounds": rounds,
        "data": {"name": "pneumoniamnist", "num_clients": num_clients, "partition": "iid"},
        "model": {"name": "mlp"},
        "client": {"local_epochs": 1, "batch_size": 64, "lr": 0.1},
        "dp": {"enabled": False},
        "strategy": strategy,
        **extra,
    }


KEPT_BY_RULE = {"secprobe": 3, "random_k": 3, "krum": 1, "multikrum": 3, "bulyan": 5}


@pytest.mark.parametrize("name", ALL_STRATEGIES)
def test_each_strategy_runs_two_rounds(name: str, tmp_path) -> None:
    # 8 clients, one of which uploads NaN/Inf every round: it must be rejected with a
    # logged reason and the run must complete with the other 7 (Bulyan, f = 1, needs 7).
    extra: dict = {"k": 3}
    if name in ("krum", "multikrum", "bulyan"):
        extra = {"num_malicious": 1, **({"k": 3} if name == "multikrum" else {})}
    raw = run_config(
        name,
        num_clients=8,
        strategy=extra,
        roles={"malicious": {"fraction": 0.125, "kind": "nan"}},
    )
    summary = run_experiment(from_dict(raw), tmp_path)
    roles = {int(c): v["role"] for c, v in summary["clients"].items()}
    (bad,) = [c for c, r in roles.items() if r == "malicious"]
    lines = read_metrics(tmp_path)
    assert [m["round"] for m in lines] == [1, 2]
    for m in lines:
        assert 0.0 <= m["test_accuracy"] <= 1.0 and math.isfinite(m["test_loss"])
        assert m["sampled"] == list(range(8))
        rejected = m["clients"][str(bad)]
        assert rejected["status"] == "rejected" and "non-finite" in rejected["rejected_reason"]
        ok = [c for c in range(8) if c != bad]
        assert all(m["clients"][str(c)]["status"] == "ok" for c in ok)
        expected = KEPT_BY_RULE.get(name, 7)
        assert len(m["selected"]) == expected and set(m["selected"]) <= set(ok)
        probs = [m["clients"][str(c)]["selection_probability"] for c in ok]
        if name in ("secprobe", "random_k"):
            assert sum(probs) == pytest.approx(3.0, abs=1e-6)
        else:
            assert probs == [None] * 7
        assert rejected["selection_probability"] is None
    assert summary["rounds"] == 2
    if name == "secprobe":
        assert [m["selection_epsilon"] for m in lines] == [1.0, 1.0]
        assert summary["selection_epsilon_total"] == pytest.approx(2.0)
        for m in lines:
            for c in ok:
                assert 0.0 <= m["clients"][str(c)]["utility"] <= 1.0
        # each scored participant took part in 2 selections at eps = 1 (paper sensitivity):
        # epsilon_selection (about 2.0: two 1-DP events at delta > 0); no DP-SGD here, so no
        # epsilon_total (the updates are not protected); the rejected client was never scored
        for c in ok:
            assert summary["clients"][str(c)]["epsilon_total"] is None
            assert summary["clients"][str(c)]["epsilon_selection"] == pytest.approx(2.0, rel=1e-3)
        assert summary["clients"][str(bad)]["epsilon_selection"] is None
    else:
        assert summary["selection_epsilon_total"] is None


def test_malicious_random_upload_does_not_end_the_run(tmp_path) -> None:
    raw = run_config("fedavg", num_clients=4, roles={"malicious": {"fraction": 0.25}})
    cfg = from_dict(raw)
    summary = run_experiment(cfg, tmp_path)
    roles = [summary["clients"][str(c)]["role"] for c in range(4)]
    assert roles.count("malicious") == 1 and roles.count("honest") == 3
    lines = read_metrics(tmp_path)
    assert len(lines) == 2 and all(math.isfinite(m["test_loss"]) for m in lines)
    assert read_summary(tmp_path)["rounds"] == 2


def test_secprobe_keeps_high_utility_uploads_when_half_are_random(tmp_path) -> None:
    # Half the clients upload uniform [0, 1] parameters. With the tight sensitivity
    # 1/(n+1) (n = 524 validation records) and eps = 1, an upload whose accuracy is lower
    # than K others' by ~0.5 has inclusion probability ~1e-19: it must never be selected.
    raw = run_config(
        "secprobe",
        num_clients=6,
        rounds=3,
        strategy={"k": 3, "selection_epsilon": 1.0, "sensitivity": "tight"},
        roles={"malicious": {"fraction": 0.5}},
    )
    summary = run_experiment(from_dict(raw), tmp_path)
    roles = {cid: c["role"] for cid, c in summary["clients"].items()}
    assert sorted(roles.values()).count("malicious") == 3
    # a round selects privately (ε = 1) only when more than k uploads pass the reply
    # checks; random uploads far from the global model are rejected before selection
    lines = read_metrics(tmp_path)
    ok = [[cid for cid, c in m["clients"].items() if c["status"] == "ok"] for m in lines]
    assert summary["selection_epsilon_total"] == pytest.approx(sum(len(o) > 3 for o in ok))
    assert summary["selection_epsilon_total"] >= 1.0
    for m in lines:
        scored = {cid: c for cid, c in m["clients"].items() if c["status"] == "ok"}
        if len(scored) <= 3:  # k or fewer: every accepted upload is used, no selection
            continue
        util = {cid: c["utility"] for cid, c in scored.items()}
        prob = {cid: c["selection_probability"] for cid, c in scored.items()}
        kth_best = sorted(util.values(), reverse=True)[2]
        for cid, u in util.items():
            if u < kth_best - 0.1:
                assert str(cid) not in {str(s) for s in m["selected"]}
                assert prob[cid] < 1e-6
        assert sum(prob.values()) == pytest.approx(3.0, abs=1e-6)
        chosen = [util[str(s)] for s in m["selected"]]
        assert min(chosen) >= kth_best - 0.1


def test_secprobe_selection_epsilon_enters_each_participants_total(tmp_path) -> None:
    # DP-SGD on the clients plus SecProbe's selection: each participant's epsilon_total
    # is the composition of its DP-SGD steps (from the logged sigma, q, steps) and one
    # pure 0.5-DP event per round it was scored in; epsilon_spent stays DP-SGD only.
    from privacy_oracle import epsilon_bounds

    raw = run_config(
        "secprobe",
        num_clients=4,
        strategy={"k": 2, "selection_epsilon": 0.5},
        dp={"enabled": True, "noise_multiplier": 1.0, "delta": 1e-5},
    )
    summary = run_experiment(from_dict(raw), tmp_path)
    lines = read_metrics(tmp_path)
    for cid, doc in summary["clients"].items():
        rounds = [m["clients"][cid] for m in lines if cid in m["clients"]]
        last = rounds[-1]
        assert last["status"] == "ok"
        # the worst-case pairs of both mechanisms, composed directly (replace-one)
        low, high = epsilon_bounds(
            [
                (last["noise_multiplier"], last["sample_rate"], last["steps"]),
                ("pure", 0.5, len(rounds)),
            ],
            1e-5,
        )
        assert low * 0.999 <= doc["epsilon_total"] <= high * 1.001
        assert doc["epsilon_selection"] == pytest.approx(0.5 * len(rounds), rel=1e-2)
        assert doc["epsilon_spent"] < doc["epsilon_total"]
        assert last["epsilon_total"] == pytest.approx(doc["epsilon_total"])
    assert summary["dp"]["max_epsilon_total"] == max(
        c["epsilon_total"] for c in summary["clients"].values()
    )


def test_secprobe_with_the_functional_mechanism_on_a_regression_task(tmp_path) -> None:
    # SecProbe as published: tabular regression (the shipped diabetes data), the clients'
    # functional mechanism, the clipped relative-error utility (Δu = 1). Each client's ε is
    # checked against the worst-case pairs composed directly: its functional-mechanism
    # epochs (pure ε each) and one pure ε/2 selection charge per round it was scored in.
    import torch
    from privacy_oracle import epsilon_bounds

    from fedsim.models import build_model

    raw = {
        "name": "fm-regression",
        "seed": 2,
        "rounds": 2,
        "data": {"name": "diabetes", "num_clients": 4},
        "model": {"name": "secprobe_mlp8"},
        "client": {"local_epochs": 2, "batch_size": 64, "lr": 0.5, "mechanism": "functional"},
        "dp": {"epsilon": 2.0, "delta": 1e-5},
        "strategy": {"name": "secprobe", "clients_per_round": 4, "k": 2},
        "roles": {"unreliable": {"fraction": 0.5, "noise_fraction": 0.6}},
    }
    cfg = from_dict(raw)
    summary = run_experiment(cfg, tmp_path)
    lines = read_metrics(tmp_path)
    assert [m["round"] for m in lines] == [1, 2]
    assert all(m["test_mre"] > 0 and 0 <= m["test_accuracy"] <= 1 for m in lines)
    assert summary["final"]["test_mre"] == pytest.approx(lines[-1]["test_mre"])
    per_epoch = 2.0 / (2 * 2)
    for cid, doc in summary["clients"].items():
        rounds = [m["clients"][cid] for m in lines if cid in m["clients"]]
        trained = sum(1 for r in rounds if r["status"] == "ok")
        low, high = epsilon_bounds([("pure", per_epoch, 2 * trained)], 1e-5)
        assert low * 0.999 <= doc["epsilon_spent"] <= min(high * 1.001, 2.0 + 1e-9)
        low, high = epsilon_bounds(
            [("pure", per_epoch, 2 * trained), ("pure", 0.5, len(rounds))], 1e-5
        )
        assert low * 0.999 <= doc["epsilon_total"] <= high * 1.001
        assert all(r["steps"] == 0 for r in rounds if r["status"] == "ok")  # no DP-SGD step
    # the hidden layer never trains: the final global model keeps the initial one (up to
    # the float rounding of averaging equal tensors with weights n_i / n)
    final = torch.load(tmp_path / "model.pt", weights_only=True)
    initial = build_model("secprobe_mlp8", (1, 1, 10), 1, seed=cfg.seed).state_dict()
    assert torch.allclose(final["hidden.weight"], initial["hidden.weight"], rtol=0, atol=1e-6)
    assert not torch.equal(final["head.weight"], initial["head.weight"])
