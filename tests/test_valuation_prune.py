"""Pruning and release inside a client's local round, and their accounting."""

from __future__ import annotations

import pytest
from client_harness import simulated_round
from privacy_oracle import epsilon_bounds

from fedsim.config import from_dict
from fedsim.models import build_model
from fedsim.privacy import Accounting, LaplaceRelease, PrivacyLedger, SubsampledGaussian
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
    first = simulated_round(cfg, 0, state, 1, PrivacyLedger())
    assert first.status == "ok" and first.num_examples == n
    assert first.pruned is not None and len(first.pruned) == round(0.25 * n)
    assert first.valuation is not None and 0 <= first.valuation <= 3.0
    assert first.valuation_epsilon == pytest.approx(0.5)

    second = simulated_round(cfg, 0, state, 2, first.ledger, pruned=first.pruned)
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
    assert all(e.noise_multiplier == sigma for e in sgm)  # σ fixed at the first round
    # After the quantile cut, the kept set is a replace-one neighbour of the kept set of
    # any replace-one neighbour of the data: the later rounds are replace-one events at
    # the larger rate q2. The reported ε is within the bracket of the worst-case pair
    # computed directly for both rates.
    low, high = epsilon_bounds([(sigma, e.sample_rate, e.steps) for e in sgm], 1e-4)
    assert low * (1 - 1e-3) <= second.epsilon <= high * (1 + 1e-3)
    assert second.epsilon_total > second.epsilon


def test_budget_check_counts_the_valuation_release() -> None:
    base = _cfg(enabled=True, metric="loss", epsilon=0.5)
    cfg = from_dict({**base.to_dict(), "dp": {**base.to_dict()["dp"], "max_epsilon": 4.0}})
    state = _global(cfg)
    out = simulated_round(cfg, 0, state, 1, PrivacyLedger())
    assert out.status == "ok"
    acct = Accounting.of(cfg.dp)
    assert out.epsilon_total == pytest.approx(out.ledger.epsilon_total(acct), rel=1e-9)
    # DP-SGD alone spends exactly 4.0 in the 3 planned rounds; with the releases the
    # client must refuse a round before that, and its total never passes max_epsilon
    ledger, statuses = out.ledger, []
    for rnd in (2, 3):
        nxt = simulated_round(cfg, 0, state, rnd, ledger)
        statuses.append(nxt.status)
        ledger = nxt.ledger
        assert nxt.ledger.epsilon_total(acct) <= 4.0 * (1 + 1e-9)
    assert "budget-exhausted" in statuses


@pytest.mark.parametrize("metric", ["vog", "plis", "grad_norm"])
def test_each_metric_is_released_within_its_bound(metric: str) -> None:
    cfg = _cfg(enabled=True, metric=metric, epsilon=1.0, bound=1.0)
    out = simulated_round(cfg, 1, _global(cfg), 1, PrivacyLedger())
    assert out.status == "ok"
    assert out.valuation is not None and 0.0 <= out.valuation <= 1.0
    assert (out.valuation_variance is not None) == (metric == "vog")
    assert out.valuation_epsilon == pytest.approx(1.0)


def test_vog_over_round_checkpoints_survives_pruning_and_matches_the_pure_function() -> None:
    """vog_checkpoints: rounds — one checkpoint per round (the trained local model), the
    statistics carried between rounds by the client and re-indexed after pruning."""
    import numpy as np
    import torch

    from fedsim.data import Split
    from fedsim.valuation.scores import true_logit_input_grad, vog

    cfg = _cfg(
        enabled=True,
        metric="vog",
        epsilon=1.0,
        bound=1.0,
        vog_checkpoints="rounds",
        release_rounds=[3],
        prune={"enabled": True, "warmup_rounds": 2, "fraction": 0.25, "metric": "vog"},
    )
    cfg = from_dict({**cfg.to_dict(), "client": {**cfg.to_dict()["client"], "local_epochs": 1}})
    n = len(client_split(cfg, 0))
    state = _global(cfg)
    r1 = simulated_round(cfg, 0, state, 1, PrivacyLedger())
    assert r1.vog_state is not None and int(r1.vog_state["count"][0]) == 1
    assert r1.valuation is None and r1.pruned is None  # nothing due in round 1
    assert not [e for e in r1.ledger.events if isinstance(e, LaplaceRelease)]
    r2 = simulated_round(cfg, 0, r1.state_dict, 2, r1.ledger, vog_state=r1.vog_state)
    assert r2.vog_state is not None and int(r2.vog_state["count"][0]) == 2
    assert r2.pruned is not None and len(r2.pruned) == round(0.25 * n)
    r3 = simulated_round(
        cfg, 0, r2.state_dict, 3, r2.ledger, pruned=r2.pruned, vog_state=r2.vog_state
    )
    assert r3.vog_state is not None and int(r3.vog_state["count"][0]) == 3
    assert r3.num_examples == n - len(r2.pruned)
    assert r3.valuation is not None and 0 <= r3.valuation <= 1.0

    # independent: VoG of the kept samples over the three rounds' trained models
    own = client_split(cfg, 0)
    kept = np.setdiff1d(np.arange(n), np.asarray(r2.pruned))
    x, y = torch.from_numpy(own.x[kept]), torch.from_numpy(own.y[kept]).long()
    bundle = dataset_for(cfg.data, cfg.seed)
    grads = []
    for sd in (r1.state_dict, r2.state_dict, r3.state_dict):
        model = build_model("mlp", bundle.input_shape, bundle.num_classes)
        model.load_state_dict(sd)
        grads.append(true_logit_input_grad(model.eval(), x, y))
    expected = vog(grads).double().numpy()
    from clients.valuation_round import RoundScorer

    scorer = RoundScorer(
        cfg,
        Split(own.x[kept], own.y[kept]),
        bundle.input_shape,
        bundle.num_classes,
        ("vog",),
        kept=kept,
        vog_state=r2.vog_state,
    )
    scorer.tracker.record_checkpoint(r3.state_dict)  # type: ignore[union-attr]
    got = scorer.tracker.vog().double().numpy()  # type: ignore[union-attr]
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-7)
    # the pruning decision ranked the round-1/2 VoG of all samples: the dropped are the top
    grads12 = []
    xa, ya = torch.from_numpy(own.x), torch.from_numpy(own.y).long()
    for sd in (r1.state_dict, r2.state_dict):
        model = build_model("mlp", bundle.input_shape, bundle.num_classes)
        model.load_state_dict(sd)
        grads12.append(true_logit_input_grad(model.eval(), xa, ya))
    v12 = vog(grads12).numpy()
    assert set(np.argsort(-v12)[: len(r2.pruned)]) == set(r2.pruned)


def test_vog_round_checkpoints_config_rules() -> None:
    from fedsim.errors import ConfigError

    with pytest.raises(ConfigError, match="local_epochs must be >= 2"):
        from_dict({**_cfg(enabled=True, metric="vog").to_dict(), "client": {"local_epochs": 1}})
    ok = _cfg(enabled=True, metric="vog", vog_checkpoints="rounds", release_rounds=[2, 3])
    assert ok.valuation.vog_checkpoints == "rounds"
    with pytest.raises(ConfigError, match="vog_checkpoints 'rounds' needs >= 2 rounds"):
        _cfg(enabled=True, metric="vog", vog_checkpoints="rounds")
    with pytest.raises(ConfigError, match="vog_checkpoints"):
        _cfg(enabled=True, metric="vog", vog_checkpoints="steps", release_rounds=[2])
