"""Exponential-mechanism selection: closed forms, sampling frequencies, ε bookkeeping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsim import selection as S
from fedsim.seeding import numpy_rng

DRAWS = 20000


def _tolerance(p: np.ndarray, draws: int) -> np.ndarray:
    """Five binomial standard errors (plus a floor): fails with probability ~1e-6 per cell."""
    return 5 * np.sqrt(p * (1 - p) / draws) + 1e-3


def _frequencies(sampler, u, eps, k, sens, purpose: str) -> np.ndarray:
    rng = numpy_rng(0, purpose)
    counts = np.zeros(len(u))
    for _ in range(DRAWS):
        counts[sampler(u, eps, k, sens, rng)] += 1
    return counts / DRAWS


def test_hand_computed_probabilities() -> None:
    # eps=2, k=1, Δu=0.5: exponent factor 2/(2*1*0.5) = 2 → weights e^0, e^2
    p = S.exponential_mechanism_probabilities(np.array([0.0, 1.0]), 2.0, 1, 0.5)
    assert p == pytest.approx([1 / (1 + math.e**2), math.e**2 / (1 + math.e**2)])
    # k=2 halves the factor: weights e^0, e^1, e^1
    p = S.exponential_mechanism_probabilities(np.array([0.0, 1.0, 1.0]), 2.0, 2, 0.5)
    z = 1 + 2 * math.e
    assert p == pytest.approx([1 / z, math.e / z, math.e / z])


def test_hand_computed_inclusion_k2_of_3() -> None:
    # weights (1, 1, 2): P(2 included) = 1 - P(order is {0,1} both first)
    # = 1 - (1/4 * 1/3 + 1/4 * 1/3) = 5/6 ; indices 0 and 1 share the rest: 7/12 each
    u = np.array([0.0, 0.0, math.log(2)])
    incl = S.inclusion_probabilities(u, 2.0, 2, 0.5)  # factor 2/(2*2*0.5)=1
    assert incl == pytest.approx([7 / 12, 7 / 12, 5 / 6])
    assert incl.sum() == pytest.approx(2.0)


def test_numerically_stable_for_huge_exponents() -> None:
    p = S.exponential_mechanism_probabilities(np.array([0.0, 1.0]), 1e6, 1, 1e-3)
    assert np.all(np.isfinite(p)) and p[1] == pytest.approx(1.0)
    u = np.array([0.1, 0.9, 0.5])
    idx = S.sample_k_gumbel(u, 1e9, 2, 0.5, numpy_rng(0, "x"))
    assert idx.tolist() == [1, 2]
    assert S.sample_k_sequential(u, 1e9, 2, 0.5, numpy_rng(0, "x")).tolist() == [1, 2]


@pytest.mark.parametrize("sampler", [S.sample_k_sequential, S.sample_k_gumbel])
def test_k1_frequencies_match_closed_form(sampler) -> None:
    u = np.array([0.2, 0.5, 0.55, 0.9])
    p = S.exponential_mechanism_probabilities(u, 4.0, 1, 0.5)
    freq = _frequencies(sampler, u, 4.0, 1, 0.5, f"k1-{sampler.__name__}")
    assert np.all(np.abs(freq - p) < _tolerance(p, DRAWS)), (freq, p)


@pytest.mark.parametrize("m,k", [(4, 2), (5, 3), (5, 2)])
def test_k_gt1_inclusion_frequencies_match_enumeration(m: int, k: int) -> None:
    u = np.linspace(0.1, 0.9, m) ** 2
    eps, sens = 6.0, 0.5
    exact = S.inclusion_probabilities(u, eps, k, sens)
    assert exact.sum() == pytest.approx(k)
    seq = _frequencies(S.sample_k_sequential, u, eps, k, sens, f"seq-{m}-{k}")
    gum = _frequencies(S.sample_k_gumbel, u, eps, k, sens, f"gum-{m}-{k}")
    tol = _tolerance(exact, DRAWS)
    assert np.all(np.abs(seq - exact) < tol), (seq, exact)
    assert np.all(np.abs(gum - exact) < tol), (gum, exact)
    assert np.all(np.abs(seq - gum) < 2 * tol)
    mc = S.inclusion_probabilities_mc(u, eps, k, sens, numpy_rng(1, "mc"), draws=DRAWS)
    assert np.all(np.abs(mc - exact) < tol)


def test_first_draw_order_agrees_between_samplers() -> None:
    # not only the sets: the first element of sequential and Gumbel draws has the same law
    u = np.array([0.0, 0.3, 0.6, 1.0])
    p = S.exponential_mechanism_probabilities(u, 3.0, 2, 0.5)
    for sampler in (S.sample_k_sequential, S.sample_k_gumbel):
        rng = numpy_rng(2, sampler.__name__)
        first = np.bincount([sampler(u, 3.0, 2, 0.5, rng)[0] for _ in range(DRAWS)], minlength=4)
        assert np.all(np.abs(first / DRAWS - p) < _tolerance(p, DRAWS))


def test_higher_epsilon_concentrates_on_the_best() -> None:
    u = np.array([0.5, 0.6, 0.7, 0.95])
    best = [S.inclusion_probabilities(u, eps, 2, 0.5)[3] for eps in (0.1, 1.0, 10.0, 100.0)]
    assert best == sorted(best) and best[-1] > 0.999
    worst = [S.inclusion_probabilities(u, eps, 2, 0.5)[0] for eps in (0.1, 1.0, 10.0, 100.0)]
    assert worst == sorted(worst, reverse=True)
    # ε → 0 is uniform: k/M each
    assert S.inclusion_probabilities(u, 1e-9, 2, 0.5) == pytest.approx([0.5] * 4)


def test_selection_inclusion_dispatch() -> None:
    u = np.array([0.1, 0.4, 0.8])
    rng = numpy_rng(0, "d")
    assert S.selection_inclusion_probabilities(u, 1.0, 3, 0.5, rng).tolist() == [1.0] * 3
    assert S.selection_inclusion_probabilities(u, 1.0, 1, 0.5, rng) == pytest.approx(
        S.exponential_mechanism_probabilities(u, 1.0, 1, 0.5)
    )
    u10 = np.linspace(0, 1, 10)
    mc = S.selection_inclusion_probabilities(u10, 5.0, 3, 0.5, rng, exact_up_to=8)
    assert mc.sum() == pytest.approx(3.0) and mc[-1] > mc[0]


def test_sensitivity_and_composition() -> None:
    assert S.accuracy_sensitivity(2, "paper") == 0.5
    assert S.accuracy_sensitivity(1000, "paper") == 0.5
    assert S.accuracy_sensitivity(1, "paper") == 1.0  # replacing the only record: 1 → 0
    assert S.accuracy_sensitivity(1, "tight") == 1.0
    assert S.accuracy_sensitivity(524, "tight") == pytest.approx(1 / 524)
    assert S.selection_epsilon_composed(0.5, 10) == pytest.approx(5.0)
    assert S.selection_epsilon_composed(1.0, 0) == 0.0
    with pytest.raises(ValueError):
        S.accuracy_sensitivity(0, "tight")
    with pytest.raises(ValueError):
        S.selection_epsilon_composed(-1.0, 3)


@pytest.mark.parametrize(
    "u,eps,k,sens",
    [
        ([], 1.0, 1, 0.5),
        ([0.1, float("nan")], 1.0, 1, 0.5),
        ([0.1, 0.2], 0.0, 1, 0.5),
        ([0.1, 0.2], 1.0, 3, 0.5),
        ([0.1, 0.2], 1.0, 0, 0.5),
        ([0.1, 0.2], 1.0, 1, 0.0),
    ],
)
def test_bad_inputs_rejected(u, eps, k, sens) -> None:
    with pytest.raises(ValueError):
        S.exponential_mechanism_probabilities(np.array(u), eps, k, sens)


def test_same_generator_same_draws() -> None:
    u = np.array([0.3, 0.1, 0.7, 0.2, 0.5])
    a = S.sample_k_gumbel(u, 2.0, 3, 0.5, numpy_rng(9, "s", 1))
    b = S.sample_k_gumbel(u, 2.0, 3, 0.5, numpy_rng(9, "s", 1))
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 3
