"""The selection's ε in the participants' ledgers, and the regression utility.

ε totals are checked against an independent computation: Opacus' RDP analysis for the
DP-SGD part, the zCDP curve ``α·ε²/2`` of a pure ε-DP event (Bun & Steinke 2016) added by
hand, and basic composition (add/remove, RDP); the exact optimal composition of pure
ε-DP mechanisms (Kairouz, Oh & Viswanath, ICML 2015) for the PLD accountant.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants.analysis import rdp as opacus_rdp
from strategy_harness import strategy_context

from fedsim.config import from_dict
from fedsim.privacy import (
    Accounting,
    LaplaceRelease,
    PrivacyLedger,
    PureDp,
    SubsampledGaussian,
    epsilon,
)
from fedsim.privacy.accounting import _RDP_ORDERS
from fedsim.selection import (
    REGRESSION_SENSITIVITY,
    accuracy_sensitivity,
    participant_epsilon,
    regression_utility,
)
from strategies.registry import build_strategy

ORDERS = np.asarray(_RDP_ORDERS, dtype=float)
DELTA = 1e-5
RDP = Accounting(DELTA, "rdp", "add_remove")
PLD = Accounting(DELTA)  # the default: PLD, replace-one


def optimal_pure_composition_epsilon(eps: float, k: int, delta: float) -> float:
    """ε at δ of k ε-DP mechanisms, exactly (the k-fold randomized-response pair)."""
    p = math.exp(eps) / (1 + math.exp(eps))

    def delta_at(e: float) -> float:
        return sum(
            math.comb(k, i)
            * p ** (k - i)
            * (1 - p) ** i
            * max(0.0, 1 - math.exp(e - (k - 2 * i) * eps))
            for i in range(k + 1)
        )

    lo, hi = 0.0, k * eps
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta_at(mid) > delta else (lo, mid)
    return hi


def independent_total(sigma: float, q: float, steps: int, pure: list[float]) -> float:
    """min(RDP of DP-SGD + zCDP of the pure events, DP-SGD ε + Σ pure ε) via Opacus."""
    rdp = opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=list(ORDERS))
    eps_sgd, _ = opacus_rdp.get_privacy_spent(orders=list(ORDERS), rdp=rdp, delta=DELTA)
    rdp_all = np.asarray(rdp) + ORDERS * sum(e * e / 2 for e in pure)
    eps_all, _ = opacus_rdp.get_privacy_spent(orders=list(ORDERS), rdp=rdp_all, delta=DELTA)
    return min(float(eps_all), float(eps_sgd) + sum(pure))


@pytest.mark.parametrize(
    ("pure", "rounds"),
    [(1.0, 3), (0.05, 40), (0.2, 200)],  # basic wins / close / zCDP wins
)
def test_dp_sgd_plus_pure_events_against_independent_accounting(pure: float, rounds: int) -> None:
    sgd = SubsampledGaussian(1.1, 0.05, 300)
    ledger = PrivacyLedger(noise_multiplier=1.1).with_event(sgd)
    ledger = ledger.with_events([PureDp(pure)] * rounds)
    expected = independent_total(1.1, 0.05, 300, [pure] * rounds)
    assert ledger.epsilon_total(RDP) == pytest.approx(expected, rel=0.02)
    assert ledger.epsilon_dp_sgd(RDP) < ledger.epsilon_total(RDP)
    # PLD composes the pure events as ε-DP privacy losses: never above basic composition,
    # never below either part alone
    pld = ledger.epsilon_total(PLD)
    sgd_alone = ledger.epsilon_dp_sgd(PLD)
    assert pld <= sgd_alone + pure * rounds + 1e-9
    assert pld >= max(sgd_alone, optimal_pure_composition_epsilon(pure, rounds, DELTA)) * 0.999


@pytest.mark.parametrize(("eps", "k"), [(0.5, 4), (1.0, 3), (0.1, 50)])
def test_pure_events_alone_compose_optimally(eps: float, k: int) -> None:
    ours = epsilon([PureDp(eps, count=k)], DELTA)
    exact = optimal_pure_composition_epsilon(eps, k, DELTA)
    assert exact * 0.999 <= ours <= exact * 1.01 + 1e-3
    assert ours <= k * eps + 1e-9
    assert epsilon([PureDp(0.0)], DELTA) == pytest.approx(0.0)


def test_pure_events_roundtrip_and_differ_from_laplace() -> None:
    ledger = PrivacyLedger().with_events([PureDp(0.3, 2), LaplaceRelease(0.3, 2)])
    again = PrivacyLedger.from_json(ledger.to_json())
    assert again == ledger
    assert isinstance(again.events[0], PureDp) and isinstance(again.events[1], LaplaceRelease)


def ordered_selection_probs(u: np.ndarray, eps: float, k: int, sens: float) -> dict:
    a = eps / (2 * k * sens)
    w = np.exp(a * (u - u.max()))
    out = {}
    for order in itertools.permutations(range(u.size), k):
        p, rest = 1.0, w.sum()
        for i in order:
            p *= w[i] / rest
            rest -= w[i]
        out[order] = p
    return out


@settings(max_examples=40, deadline=None)
@given(
    u=st.lists(st.floats(0, 1), min_size=3, max_size=5),
    who=st.integers(0, 4),
    new=st.floats(0, 1),
    eps=st.floats(0.1, 5),
    mode=st.sampled_from(["paper", "tight"]),
)
def test_participant_epsilon_bounds_any_change_of_one_upload(
    u: list[float], who: int, new: float, eps: float, mode: str
) -> None:
    before = np.asarray(u)
    who = who % before.size
    after = before.copy()
    after[who] = new  # the participant's upload changed arbitrarily: its utility moved
    k = 2
    sens = accuracy_sensitivity(9, mode)  # type: ignore[arg-type]
    bound = math.exp(participant_epsilon(eps, sens))
    p, q = (
        ordered_selection_probs(before, eps, k, sens),
        ordered_selection_probs(after, eps, k, sens),
    )
    for order in p:
        assert p[order] <= bound * q[order] * (1 + 1e-9)
        assert q[order] <= bound * p[order] * (1 + 1e-9)


def test_participant_epsilon_values() -> None:
    assert participant_epsilon(1.0, accuracy_sensitivity(500, "paper")) == 1.0
    assert participant_epsilon(1.0, accuracy_sensitivity(500, "tight")) == pytest.approx(250.0)
    assert participant_epsilon(0.0, 0.5) == 0.0
    with pytest.raises(ValueError):
        participant_epsilon(1.0, 0.0)


def test_strategy_composes_client_ledger_with_selection_events() -> None:
    cfg = from_dict(
        {
            "dp": {
                "noise_multiplier": 1.1,
                "delta": DELTA,
                "accountant": "rdp",
                "neighbouring": "add_remove",
                "size_bound": 100,
            }
        }
    )
    strategy = build_strategy(strategy_context(cfg, nodes={}))
    sgd = SubsampledGaussian(1.1, 0.05, 300)
    strategy.client_ledgers[0] = PrivacyLedger(noise_multiplier=1.1).with_event(sgd)
    strategy.client_ledgers[1] = PrivacyLedger(noise_multiplier=1.1).with_event(sgd)
    for _ in range(3):
        strategy.charge_selection([0, 2], 0.5)
    strategy.charge_selection([0], 0.0)  # a deterministic round spends nothing
    assert strategy.client_epsilon_total(0) == pytest.approx(
        independent_total(1.1, 0.05, 300, [0.5] * 3), rel=0.02
    )
    assert strategy.client_epsilon_total(1) == pytest.approx(RDP.epsilon([sgd]))
    assert strategy.client_epsilon_total(2) == pytest.approx(1.5)  # selection only
    assert strategy.client_epsilon_total(3) is None


def test_regression_utility_hand_computed_and_bounded() -> None:
    y = np.array([2.0, -4.0, 1.0, 0.0])
    assert regression_utility(y, y) == 1.0
    # scores: 1 - 0.5, 1 - 0.25, 0 (off by 300%), 0 (y = 0, ŷ != 0)
    pred = np.array([1.0, -5.0, 4.0, 0.1])
    assert regression_utility(pred, y) == pytest.approx((0.5 + 0.75) / 4)
    assert regression_utility(np.array([np.nan, 2.0]), np.array([1.0, 2.0])) == 0.5
    with pytest.raises(ValueError):
        regression_utility(np.ones(2), np.ones(3))
    with pytest.raises(ValueError):
        regression_utility(np.ones(2), np.array([1.0, np.inf]))


@settings(max_examples=50, deadline=None)
@given(
    pred=st.lists(st.floats(-100, 100), min_size=2, max_size=12),
    data=st.data(),
)
def test_regression_utility_sensitivity(pred: list[float], data: st.DataObject) -> None:
    y = data.draw(st.lists(st.floats(-100, 100), min_size=len(pred), max_size=len(pred)))
    p, t = np.asarray(pred), np.asarray(y)
    u = regression_utility(p, t)
    assert 0.0 <= u <= 1.0
    # add / remove / replace one record: the score moves by at most the sensitivity
    assert abs(regression_utility(p[1:], t[1:]) - u) <= REGRESSION_SENSITIVITY
    assert abs(regression_utility(p[1:], t[1:]) - u) <= 1.0 / (len(p) - 1) + 1e-12
    q = p.copy()
    q[0] = data.draw(st.floats(-100, 100))
    assert abs(regression_utility(q, t) - u) <= 1.0 / len(p) + 1e-12


@pytest.mark.usefixtures("task_identity")
def test_secprobe_sends_each_client_its_selection_events_and_the_next_charge() -> None:
    from flwr.app import ArrayRecord, ConfigRecord

    from clients.client_app import server_privacy_events
    from fedsim import keys
    from strategies.secprobe import SecProbe

    cfg = from_dict(
        {
            "data": {"num_clients": 4},
            "dp": {"enabled": True, "epsilon": 4.0, "delta": DELTA},
            "strategy": {
                "name": "secprobe",
                "clients_per_round": 4,
                "k": 2,
                "selection_epsilon": 1.0,
                "sensitivity": "tight",
            },
        }
    )
    strategy = SecProbe(strategy_context(cfg, num_examples=dict.fromkeys(range(4), 10)))
    strategy.charge_selection([0, 1], 2.0)
    arrays = ArrayRecord(numpy_ndarrays=[np.zeros(3, dtype=np.float32)])
    msgs = list(strategy.configure_train(1, arrays, ConfigRecord({}), grid=None))  # type: ignore[arg-type]
    assert len(msgs) == 4
    by_client = {strategy.directory.client_of[m.metadata.dst_node_id]: m for m in msgs}
    from fedsim.workload import dataset_for

    n_val = len(dataset_for(cfg.data, cfg.seed).val)
    tight = participant_epsilon(1.0, accuracy_sensitivity(n_val, "tight"))
    assert tight == pytest.approx(n_val / 2)
    for cid, msg in by_client.items():
        config = msg.content.config_records[keys.CONFIG]
        assert config[keys.SELECTION_EPSILON_AHEAD] == pytest.approx(tight)
        events = server_privacy_events(config)
        past = [PureDp(2.0)] if cid in (0, 1) else []
        assert list(events) == [*past, PureDp(tight)]


def test_client_budget_check_counts_the_servers_selection_events() -> None:
    from client_harness import simulated_round

    from fedsim.models import build_model
    from fedsim.workload import dataset_for

    cfg = from_dict(
        {
            "data": {"num_clients": 2, "train_samples": 200, "test_samples": 50},
            "model": {"name": "mlp"},
            "client": {"local_epochs": 1, "batch_size": 32},
            "dp": {"enabled": True, "epsilon": 2.0, "delta": DELTA, "max_epsilon": 3.0},
        }
    )
    bundle = dataset_for(cfg.data, cfg.seed)
    state = build_model("mlp", bundle.input_shape, bundle.num_classes, seed=0).state_dict()
    alone = simulated_round(cfg, 0, state, 1, PrivacyLedger())
    assert alone.status == "ok"
    refused = simulated_round(cfg, 0, state, 1, PrivacyLedger(), server_events=(PureDp(2.5),))
    assert refused.status == "budget-exhausted"
    assert "selection events" in refused.reason and refused.ledger.events == ()
