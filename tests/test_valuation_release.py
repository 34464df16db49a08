"""DP release of valuations: ε split, Laplace noise scale, ledger composition."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld

from fedsim.privacy import Accounting, LaplaceRelease, PrivacyLedger, SubsampledGaussian
from fedsim.valuation.release import (
    COUNT_SHARE,
    clipped_stats,
    is_release_round,
    plan_release,
    release_valuation,
)


def test_plan_splits_epsilon_and_sums_to_total() -> None:
    plan = plan_release(2.0, 3.0, with_variance=True, variance_share=0.25)
    assert plan.epsilon_count == pytest.approx(COUNT_SHARE * 2.0)
    assert plan.epsilon_sum == pytest.approx(2.0 * (1 - COUNT_SHARE) * 0.75)
    assert plan.epsilon_sumsq == pytest.approx(2.0 * (1 - COUNT_SHARE) * 0.25)
    assert plan.epsilon == pytest.approx(2.0)
    assert sum(e.epsilon for e in plan.events()) == pytest.approx(2.0)
    # add/remove sensitivities: count 1, sum B, sum of squares B^2
    s_count, s_sum, s_sq = plan.scales()
    assert s_count == pytest.approx(1 / plan.epsilon_count)
    assert s_sum == pytest.approx(3.0 / plan.epsilon_sum)
    assert s_sq == pytest.approx(9.0 / plan.epsilon_sumsq)
    no_var = plan_release(1.0, 1.0, with_variance=False)
    assert len(no_var.events()) == 2 and no_var.scales()[2] == 0.0


@pytest.mark.parametrize("bad", [(0.0, 1.0), (1.0, -1.0)])
def test_plan_rejects_bad_parameters(bad: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        plan_release(*bad, with_variance=False)


def test_clipped_stats_clip_to_bound() -> None:
    n, s, sq = clipped_stats(np.array([-1.0, 0.5, 7.0, np.nan]), 2.0)
    assert n == 4
    assert s == pytest.approx(0.0 + 0.5 + 2.0 + 2.0)
    assert sq == pytest.approx(0.25 + 4.0 + 4.0)


def test_add_remove_changes_stats_within_sensitivity() -> None:
    rng = np.random.default_rng(0)
    scores = rng.exponential(1.0, size=50)
    b = 1.5
    n, s, sq = clipped_stats(scores, b)
    n2, s2, sq2 = clipped_stats(np.append(scores, 100.0), b)
    assert n2 - n == 1 and 0 <= s2 - s <= b and 0 <= sq2 - sq <= b * b


def test_laplace_noise_scale_matches_sensitivity_over_epsilon() -> None:
    """Empirical std of the noisy count and sum equals √2·Δ/ε (Laplace)."""
    scores = np.full(200, 0.5)  # true mean 0.5, far from the clipping edges
    plan = plan_release(1.0, 1.0, with_variance=False)
    rng = np.random.default_rng(1)
    draws = [release_valuation(scores, plan, rng) for _ in range(20000)]
    count_noise = np.array([d.noisy_count - 200 for d in draws])
    sum_noise = np.array([d.mean * max(d.noisy_count, 1.0) - 100.0 for d in draws])
    s_count, s_sum, _ = plan.scales()
    assert abs(count_noise.mean()) < 0.1 * s_count
    assert count_noise.std() == pytest.approx(np.sqrt(2) * s_count, rel=0.05)
    assert sum_noise.std() == pytest.approx(np.sqrt(2) * s_sum, rel=0.05)
    # mean absolute deviation of a Laplace(b) is b
    assert np.abs(count_noise).mean() == pytest.approx(s_count, rel=0.05)


def test_release_is_bounded_and_accurate_at_large_epsilon() -> None:
    rng = np.random.default_rng(2)
    scores = rng.uniform(0, 2, size=5000)
    plan = plan_release(1000.0, 2.0, with_variance=True)
    rel = release_valuation(scores, plan, np.random.default_rng(3))
    assert rel.mean == pytest.approx(scores.mean(), abs=1e-2)
    assert rel.variance is not None
    assert rel.variance == pytest.approx(scores.var(), abs=1e-2)
    # small n, small epsilon: still inside the ranges of the true values
    for seed in range(50):
        r = release_valuation(scores[:3], plan_release(0.1, 2.0, True), np.random.default_rng(seed))
        assert 0.0 <= r.mean <= 2.0
        assert r.variance is not None and 0.0 <= r.variance <= 1.0
    empty = release_valuation(np.zeros(0), plan, np.random.default_rng(4))
    assert 0.0 <= empty.mean <= 2.0


def test_ledger_total_epsilon_matches_independent_pld_composition() -> None:
    sigma, q, steps, delta = 1.1, 0.05, 300, 1e-5
    plan = plan_release(0.5, 1.0, with_variance=True)
    ledger = PrivacyLedger()
    for _ in range(3):  # three rounds: DP-SGD, then a valuation release
        ledger = ledger.with_event(SubsampledGaussian(sigma, q, steps))
        for event in plan.events():
            ledger = ledger.with_event(event)
    assert len([e for e in ledger.events if isinstance(e, LaplaceRelease)]) == 9

    acc = pld.PLDAccountant(value_discretization_interval=1e-3)  # add/remove
    for _ in range(3):
        acc.compose(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
        )
        for eps in (plan.epsilon_count, plan.epsilon_sum, plan.epsilon_sumsq):
            acc.compose(dp_accounting.LaplaceDpEvent(1.0 / eps))  # scale/Δ = 1/ε
    independent = acc.get_epsilon(delta)
    pld_acct = Accounting(delta, "pld", "add_remove")
    ours = ledger.epsilon_total(pld_acct)
    dp_sgd = ledger.epsilon_dp_sgd(pld_acct)
    assert ours == pytest.approx(independent, rel=0.01)
    assert dp_sgd < ours < dp_sgd + 3 * plan.epsilon  # tighter than basic composition
    rdp_total = ledger.epsilon_total(Accounting(delta, "rdp", "add_remove"))
    assert rdp_total >= ours * 0.99  # RDP is the looser bound
    # replace-one (the default): the same Laplace events, the Gaussian steps' replace-one
    # loss; more than add/remove, less than the replace-one DP-SGD part plus basic
    replace = Accounting(delta)
    assert ours < ledger.epsilon_total(replace) < ledger.epsilon_dp_sgd(replace) + 3 * plan.epsilon


def test_release_rounds() -> None:
    assert is_release_round(3, None)
    assert is_release_round(3, (1, 3)) and not is_release_round(2, (1, 3))
