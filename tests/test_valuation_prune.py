"""Pruning and release inside a client's local round, and their accounting."""

from __future__ import annotations

import dp_accounting
import pytest
from dp_accounting import rdp

from clients.local_round import run_local_round
from fedsim.config import from_dict
from fedsim.models import build_model
from fedsim.privacy import LaplaceRelease, PrivacyLedger, SubsampledGaussian
from fedsim.privacy.accounting import dp_sgd_schedule
from fedsim.workload import client_split, dataset_for


def _cfg(**valuation: object):  # type: ignore[no-untyped-def]
    return from_dict(
        {
            "rounds": 3,
            "data": {"num_clients": 2, "train_samples": 200, "test_samples": 50},
            "model": {"name": "mlp"},
            "client": {"local_epochs": 2, "batch_size": 32, "lr": 0.1},
            "dp": {"enabled": True, "epsilon": 4.0, "delta": 1e-4},
            "valuation": valuation,
        }
    )


def _global(cfg):  # type: ignore[no-untyped-def]
    bundle = dataset_for(cfg.data, cfg.seed)
    return build_model("mlp", bundle.input_shape, bundle.num_classes, seed=0).state_dict()


def test_prune_then_train_on_the_rest_with_exact_accounting() -> None:
    cfg = _cfg(
        enabled=True,
        metric="loss",
        epsilon=0.5,
        bound=3.0,
        prune={"enabled": True, "warmup_rounds": 1, "fraction": 0.25, "metric": "loss"},
    )
    n = len(client_split(cfg, 0))
    state = _global(cfg)
    first = run_local_round(cfg, 0, state, 1, PrivacyLedger())
    assert first.status == "ok" and first.num_examples == n
    assert first.pruned is not None and len(first.pruned) == round(0.25 * n)
    assert first.valuation is not None and 0 <= first.valuation <= 3.0
    assert first.valuation_epsilon == pytest.approx(0.5)

    second = run_local_round(cfg, 0, state, 2, first.ledger, pruned=first.pruned)
    assert second.num_examples == n - len(first.pruned)
    assert second.pruned == first.pruned  # decided once
    q1 = dp_sgd_schedule(n, 32).sample_rate
    q2 = dp_sgd_schedule(n - len(first.pruned), 32).sample_rate
    assert q2 > q1 and second.sample_rate == pytest.approx(q2)

    sgm = [e for e in second.ledger.events if isinstance(e, SubsampledGaussian)]
    laplace = [e for e in second.ledger.events if isinstance(e, LaplaceRelease)]
    assert [e.sample_rate for e in sgm] == pytest.approx([q1, q2])
    assert sum(e.epsilon for e in laplace) == pytest.approx(2 * 0.5)
    sigma = second.ledger.noise_multiplier
    acc = rdp.RdpAccountant(orders=[2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 32.0, 64.0])
    for e in sgm:
        assert e.noise_multiplier == sigma  # σ fixed at the first round, never recalibrated
        gaussian = dp_accounting.GaussianDpEvent(sigma)
        acc.compose(dp_accounting.PoissonSampledDpEvent(e.sample_rate, gaussian), e.steps)
    independent = acc.get_epsilon(1e-4)
    assert second.epsilon == pytest.approx(independent, rel=0.03)
    assert second.epsilon_total > second.epsilon


def test_budget_check_counts_the_valuation_release() -> None:
    base = _cfg(enabled=True, metric="loss", epsilon=0.5)
    cfg = from_dict({**base.to_dict(), "dp": {**base.to_dict()["dp"], "max_epsilon": 4.0}})
    state = _global(cfg)
    out = run_local_round(cfg, 0, state, 1, PrivacyLedger())
    assert out.status == "ok"
    assert out.epsilon_total == pytest.approx(out.ledger.epsilon_total(1e-4), rel=1e-9)
    # DP-SGD alone spends exactly 4.0 in the 3 planned rounds; with the releases the
    # client must refuse a round before that, and its total never passes max_epsilon
    ledger, statuses = out.ledger, []
    for rnd in (2, 3):
        nxt = run_local_round(cfg, 0, state, rnd, ledger)
        statuses.append(nxt.status)
        ledger = nxt.ledger
        assert nxt.ledger.epsilon_total(1e-4) <= 4.0 * (1 + 1e-9)
    assert "budget-exhausted" in statuses


@pytest.mark.parametrize("metric", ["vog", "plis", "grad_norm"])
def test_each_metric_is_released_within_its_bound(metric: str) -> None:
    cfg = _cfg(enabled=True, metric=metric, epsilon=1.0, bound=1.0)
    out = run_local_round(cfg, 1, _global(cfg), 1, PrivacyLedger())
    assert out.status == "ok"
    assert out.valuation is not None and 0.0 <= out.valuation <= 1.0
    assert (out.valuation_variance is not None) == (metric == "vog")
    assert out.valuation_epsilon == pytest.approx(1.0)
