"""No client's ε ever exceeds ``dp.max_epsilon`` — whatever its plan: DP-SGD rounds, a
rate that grows after pruning, valuation releases and the server's selection charges.

A property test over random plans drives the client's real budget gate
(:func:`clients.local_round.budget_gate`) and real ledger round after round, as the
local round does, and checks the spend after every round; the final spend is recomputed
independently from the worst-case pairs (:mod:`privacy_oracle`), in which each pure-DP
event (Laplace release or selection) is the ε-randomized-response pair that dominates it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from accounting_probe import count_pld_compositions
from client_harness import simulated_round
from hypothesis import given, settings
from hypothesis import strategies as st
from privacy_oracle import epsilon_bounds

from clients.local_round import budget_gate
from fedsim.config import from_dict
from fedsim.models import build_model
from fedsim.privacy import (
    Accounting,
    LaplaceRelease,
    PrivacyLedger,
    PureDp,
    SubsampledGaussian,
    accounting,
    clear_caches,
)
from fedsim.privacy.planning import DpSgdPlan


@pytest.mark.slow
@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    sigma=st.floats(0.8, 3.0),
    steps=st.integers(2, 12),
    batches=st.integers(2, 8),
    prune_after=st.integers(1, 6),
    release=st.sampled_from([0.0, 0.2, 0.5]),
    selection=st.sampled_from([0.0, 0.3, 1.0]),
    cap=st.floats(1.0, 6.0),
)
def test_spend_never_passes_the_cap(
    sigma: float,
    steps: int,
    batches: int,
    prune_after: int,
    release: float,
    selection: float,
    cap: float,
) -> None:
    cfg = from_dict({"dp": {"noise_multiplier": sigma, "delta": 1e-5, "max_epsilon": cap}})
    acct = Accounting.of(cfg.dp)
    plan = DpSgdPlan(sigma, 1.0 / batches, steps, planned_rounds=8)
    ledger = PrivacyLedger(noise_multiplier=sigma)
    server: tuple[PureDp, ...] = ()
    trained = 0
    for rnd in range(1, 9):
        if rnd > prune_after:  # pruning: fewer samples, a larger sampling rate
            plan = replace(plan, sample_rate=1.0 / max(1, batches - 1))
        own = (LaplaceRelease(release),) if release else ()
        ahead = (*server, PureDp(selection)) if selection else server
        refused = budget_gate(cfg, 0, ledger, plan, own, ahead, None)
        if refused is not None:
            assert refused.status == "budget-exhausted" and refused.ledger == ledger
            break
        event = SubsampledGaussian(sigma, plan.sample_rate, plan.steps_per_round)
        ledger = ledger.with_events((event, *own))
        server = ahead
        trained += 1
        total = PrivacyLedger(events=ledger.events + server).epsilon_total(acct)
        assert total <= cap * (1 + 1e-9), (rnd, total, cap)
    if not trained:
        return
    events = ledger.events + server
    gaussians = [(e.noise_multiplier, e.sample_rate, e.steps) for e in events
                 if isinstance(e, SubsampledGaussian)]  # fmt: skip
    pure = [("pure", e.epsilon, e.count) for e in events if not isinstance(e, SubsampledGaussian)]
    reported = PrivacyLedger(events=events).epsilon_total(acct)
    low, _ = epsilon_bounds(gaussians, 1e-5)
    _, high = epsilon_bounds([*gaussians, *pure], 1e-5)
    assert low * 0.999 <= reported <= high * 1.001


def test_local_rounds_calibrate_sigma_once_and_compose_epsilon_once_per_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A ClientApp process may start fresh every round (caches cleared here): σ comes from
    # the ledger after the first round, and a round without releases composes its ε once
    # (the budget check's projection is the ε the round then reports).
    cfg = from_dict(
        {
            "seed": 3,
            "rounds": 4,
            "data": {"name": "pneumoniamnist", "num_clients": 20},
            "model": {"name": "mlp"},
            "client": {"batch_size": 32, "lr": 0.05, "local_epochs": 1},
            "dp": {"epsilon": 4.0, "delta": 1e-4, "max_epsilon": 4.0},
        }
    )
    compositions = count_pld_compositions(monkeypatch)
    state = build_model("mlp", (1, 28, 28), 2, seed=0).state_dict()
    ledger, per_round = PrivacyLedger(), []
    for rnd in (1, 2, 3):
        clear_caches()
        before = compositions()
        out = simulated_round(cfg, 0, state, rnd, ledger)
        assert out.status == "ok" and out.epsilon == out.epsilon_total
        ledger = out.ledger
        per_round.append(compositions() - before)
    assert per_round[0] > 5  # the first round's binary search for σ
    assert per_round[1:] == [1, 1]
    expected = accounting.epsilon(ledger.events, 1e-4)
    assert out.epsilon == pytest.approx(expected)
