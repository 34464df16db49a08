"""Reward math, graded corruption ground truth, pruning ranks, valuation config rules."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fedsim.config import from_dict
from fedsim.data import Split
from fedsim.errors import ConfigError
from fedsim.roles import clean_fraction, client_data
from fedsim.valuation.local import prune_indices
from fedsim.valuation.rewards import (
    allocate,
    combine,
    quality_scores,
    round_rewards,
    spearman,
)

DP = {"enabled": True, "epsilon": 4.0}


def test_allocate_is_proportional_and_spends_the_budget() -> None:
    r = allocate(100.0, np.array([0.2, 0.6, 0.0, -1.0, np.nan]))
    assert r.tolist() == pytest.approx([25.0, 75.0, 0.0, 0.0, 0.0])
    assert allocate(5.0, np.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_combine_rules_and_quality_measures() -> None:
    q = quality_scores([0.6, 0.8, 0.7], 0.7, "improvement")
    assert q.tolist() == pytest.approx([0.0, 0.1, 0.0])
    assert quality_scores([0.6], None, "accuracy").tolist() == [0.6]
    assert quality_scores([0.8], None, "auc").tolist() == [0.8]
    with pytest.raises(ValueError, match="needs the global"):
        quality_scores([0.8], None, "improvement")
    v = np.array([0.5, 0.4, 0.9])
    assert combine(q, v, "product", 0.0).tolist() == pytest.approx([0.0, 0.04, 0.0])
    assert combine(np.array([0.4, 0.6, 0.5]), v, "threshold", 0.5).tolist() == [0.0, 0.4, 0.9]


def test_round_rewards_pays_garbage_by_informativeness_but_not_by_quality() -> None:
    # client 2 sends pure noise: maximally "difficult" (high loss), useless update
    rr = round_rewards([0, 1, 2], [0.3, 0.4, 2.5], [0.9, 0.85, 0.5], 100.0, "product", 0.0)
    assert rr.reward_informativeness.argmax() == 2
    assert rr.reward_quality.argmin() == 2
    for part in ("quality", "informativeness", "combined"):
        assert rr.paid(part).sum() == pytest.approx(100.0)


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, size=12).astype(float)  # with ties
    y = rng.normal(size=12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_prune_indices_highest_and_lowest() -> None:
    s = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4])
    assert prune_indices(s, 0.25, "highest").tolist() == [2, 6]
    assert prune_indices(s, 0.25, "lowest").tolist() == [1, 5]
    assert prune_indices(s, 0.0, "highest").tolist() == []
    with pytest.raises(ValueError, match="fraction"):
        prune_indices(s, 1.0, "highest")


def test_graded_corruption_is_the_ground_truth() -> None:
    cfg = from_dict(
        {
            "data": {"num_clients": 3},
            "client": {"local_epochs": 2},  # VoG (the default metric) needs 2 checkpoints
            "dp": DP,
            "valuation": {"enabled": True, "graded_corruption": [0.0, 0.5, 0.9]},
        }
    )
    rng = np.random.default_rng(0)
    split = Split(
        rng.uniform(0.4, 0.6, size=(40, 1, 4, 4)).astype(np.float32),
        rng.integers(0, 2, size=40).astype(np.int64),
    )
    for cid, frac in enumerate((0.0, 0.5, 0.9)):
        out = client_data(cfg, cid, split, 2)
        changed = np.any(out.x != split.x, axis=(1, 2, 3)).sum()
        assert changed == round(frac * 40)
        assert clean_fraction(cfg, cid, 40) == pytest.approx(1 - frac)


def test_valuation_config_rules() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(
            {
                "rounds": 3,
                "data": {"num_clients": 2},
                "dp": {"enabled": False},
                "roles": {"unreliable": {"fraction": 0.5}},
                "valuation": {
                    "enabled": True,
                    "metric": "plis",
                    "release_rounds": [0, 2],
                    "graded_corruption": [0.1, 1.5, 0.2],
                    "prune": {"enabled": True, "warmup_rounds": 3, "metric": "plis"},
                },
            }
        )
    text = str(err.value)
    for needle in (
        "valuation.enabled needs dp.enabled",
        "valuation.release_rounds must lie in [1, rounds=3]; got 0",
        "valuation.graded_corruption needs one fraction per client (data.num_clients=2); got 3",
        "valuation.graded_corruption fractions must lie in [0, 1]; got 1.5",
        "set roles.unreliable.fraction to 0",
        "valuation.prune.warmup_rounds must be < rounds (3); got 3",
        "valuation.prune.metric 'plis' needs dp.enabled",
    ):
        assert needle in text
    with pytest.raises(ConfigError, match=r"valuation\.pay must be one of"):
        from_dict({"valuation": {"pay": "everyone"}})
    with pytest.raises(ConfigError, match=r"valuation\.epsilon must be > 0; got 0"):
        from_dict({"valuation": {"epsilon": 0}})
