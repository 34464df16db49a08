"""SecProbe's functional mechanism: the polynomial, its sensitivity, its noise, its privacy
loss and what a client round with it trains and accounts.

Each privacy claim is checked by a computation independent of the code's own: the
polynomial against the true loss by automatic differentiation and finite differences, the
sensitivity against neighbouring batches built directly (random and every vertex of the
input box), the noise against scipy's Laplace distribution as it appears in the real
training path's weight update, the per-epoch ε against the log density ratio of the
released coefficients of the worst neighbouring pair.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from client_harness import simulated_round
from scipy import stats

from clients.functional_round import train_functional
from fedsim.config import Config, build_dataclass, cross_checks, from_dict
from fedsim.models import SecProbeMLP, build_model
from fedsim.privacy import Accounting, FunctionalMechanism, PrivacyLedger
from fedsim.privacy.functional import (
    FunctionalPlan,
    Polynomial,
    augment,
    coefficients,
    plan_functional,
    polynomial_gradient,
    polynomial_loss,
    sensitivity,
    taylor_constant,
)

TASKS = [("regression", 1), ("classification", 3)]


def _batch(task: str, outputs: int, n: int, units: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    h = torch.rand(n, units, generator=g, dtype=torch.float64)
    if task == "regression":
        y = torch.rand(n, generator=g, dtype=torch.float64)
    else:
        y = torch.randint(0, outputs, (n,), generator=g)
    return h, y


def _true_loss(h: torch.Tensor, y: torch.Tensor, w: torch.Tensor, task: str) -> torch.Tensor:
    """The loss the polynomial approximates, from its definition."""
    g = h @ w.T  # (n, M)
    if task == "regression":
        return ((torch.sigmoid(g[:, 0]) - y) ** 2).sum()
    onehot = torch.nn.functional.one_hot(y, w.shape[0]).to(g.dtype)
    return torch.nn.functional.binary_cross_entropy_with_logits(g, onehot, reduction="sum")


# ------------------------------------------------------------------ the polynomial


@pytest.mark.parametrize(("task", "outputs"), TASKS)
def test_polynomial_equals_the_true_loss_to_second_order(task: str, outputs: int) -> None:
    h, y = _batch(task, outputs, n=7, units=4, seed=1)
    h = augment(h)
    poly = coefficients(h, y, task, outputs)  # type: ignore[arg-type]
    const = taylor_constant(y, task, outputs)  # type: ignore[arg-type]
    zero = torch.zeros(outputs, h.shape[1], dtype=torch.float64)

    def true(w: torch.Tensor) -> torch.Tensor:
        return _true_loss(h, y, w, task)

    def approx(w: torch.Tensor) -> torch.Tensor:
        return const + polynomial_loss(poly, w)

    # value, gradient and Hessian at w = 0 (the expansion point) agree exactly
    assert float(true(zero)) == pytest.approx(float(approx(zero)), abs=1e-12)
    grad_t = torch.func.grad(true)(zero)
    assert torch.allclose(grad_t, torch.func.grad(approx)(zero), atol=1e-12)
    assert torch.allclose(polynomial_gradient(poly, zero), grad_t, atol=1e-12)
    hess_t = torch.func.hessian(true)(zero)
    assert torch.allclose(hess_t, torch.func.hessian(approx)(zero), atol=1e-12)
    # finite differences: the error shrinks at least as t³ on a fixed direction
    direction = torch.randn(
        outputs, h.shape[1], generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    errors = [abs(float(true(t * direction) - approx(t * direction))) for t in (0.1, 0.05, 0.025)]
    assert errors[1] / errors[0] < 0.15 and errors[2] / errors[1] < 0.15, errors


@pytest.mark.parametrize(("task", "outputs"), TASKS)
def test_polynomial_gradient_matches_autograd_away_from_zero(task: str, outputs: int) -> None:
    h, y = _batch(task, outputs, n=5, units=3, seed=3)
    poly = coefficients(augment(h), y, task, outputs)  # type: ignore[arg-type]
    noisy = poly.perturbed(2.0, torch.Generator().manual_seed(0))
    w = torch.randn(outputs, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    auto = torch.func.grad(lambda v: polynomial_loss(noisy, v))(w)
    assert torch.allclose(polynomial_gradient(noisy, w), auto, atol=1e-10)


# ------------------------------------------------------------------ sensitivity


def _l1(a: Polynomial, b: Polynomial) -> float:
    return float((a.linear - b.linear).abs().sum() + (a.quadratic - b.quadratic).abs().sum())


@pytest.mark.parametrize(("task", "outputs"), TASKS)
def test_sensitivity_bound_holds_on_random_neighbouring_batches(task: str, outputs: int) -> None:
    units = 6  # 5 hidden units and the bias
    delta = sensitivity(units, outputs, task)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    worst = 0.0
    for trial in range(300):
        h, y = _batch(task, outputs, n=9, units=units - 1, seed=trial)
        # push some records to the corners of the box, where contributions are largest
        corner = torch.from_numpy(rng.random(h.shape) < 0.3)
        h = torch.where(corner, torch.round(h), h)
        other_h, other_y = _batch(task, outputs, n=1, units=units - 1, seed=10_000 + trial)
        h2, y2 = h.clone(), y.clone()
        h2[-1], y2[-1] = torch.round(other_h[0]) if trial % 2 else other_h[0], other_y[0]
        a = coefficients(augment(h), y, task, outputs)  # type: ignore[arg-type]
        b = coefficients(augment(h2), y2, task, outputs)  # type: ignore[arg-type]
        worst = max(worst, _l1(a, b))
    assert worst <= delta + 1e-9
    assert worst > 0.25 * delta  # the random pairs come near the bound, not vacuously under


@pytest.mark.parametrize(("task", "outputs"), TASKS)
def test_sensitivity_bound_holds_on_every_vertex_pair(task: str, outputs: int) -> None:
    """The worst replace-one pair over the vertices of the input box, computed directly."""
    hidden = 3
    units = hidden + 1
    labels = [0.0, 1.0] if task == "regression" else list(range(outputs))
    records = [
        (torch.tensor([v], dtype=torch.float64), lab)
        for v in itertools.product([0.0, 1.0], repeat=hidden)
        for lab in labels
    ]

    def coef(h: torch.Tensor, lab: float) -> Polynomial:
        y = torch.tensor([lab], dtype=torch.float64 if task == "regression" else torch.long)
        return coefficients(augment(h), y, task, outputs)  # type: ignore[arg-type]

    worst = max(_l1(coef(*r), coef(*s)) for r, s in itertools.combinations(records, 2))
    assert worst <= sensitivity(units, outputs, task) + 1e-12  # type: ignore[arg-type]


# ------------------------------------------------------------------ noise and privacy loss


def _one_batch_loader(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    return [(x, y)]


def test_training_adds_laplace_noise_of_scale_delta_over_epsilon() -> None:
    """Recover the noise on the linear coefficients from the real training step's update."""
    model = SecProbeMLP((1, 1, 4), 1, hidden=3)
    x = torch.rand(16, 1, 1, 4, generator=torch.Generator().manual_seed(0))
    y = torch.rand(16, generator=torch.Generator().manual_seed(1))
    plan = FunctionalPlan(
        epsilon_per_epoch=0.5, epochs_per_round=1, sensitivity=sensitivity(4, 1, "regression")
    )
    assert plan.noise_scale == pytest.approx(sensitivity(4, 1, "regression") / 0.5)
    with torch.no_grad():
        clean = coefficients(augment(model.features(x)).double(), y, "regression", 1).linear
    lr, draws = 0.01, []
    for seed in range(400):
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.zero_()
        train_functional(
            model,
            _one_batch_loader(x, y),
            plan,
            "regression",
            lr=lr,  # type: ignore[arg-type]
            momentum=0.0,
            noise=torch.Generator().manual_seed(seed),
            device=torch.device("cpu"),
        )
        step = torch.cat([model.head.weight, model.head.bias[:, None]], dim=1).detach().double()
        draws.append((-step * len(y) / lr - clean).flatten())  # w = 0: step = -lr·λ̄/B
    noise = torch.stack(draws).numpy().ravel()
    scale = plan.noise_scale
    assert stats.kstest(noise, stats.laplace(scale=scale).cdf).pvalue > 0.01
    assert np.mean(np.abs(noise)) == pytest.approx(scale, rel=0.1)  # E|X| = b for Laplace(b)


def test_released_coefficients_privacy_loss_is_at_most_epsilon_per_batch() -> None:
    """Log density ratio of the noisy coefficients of the worst neighbouring batches."""
    hidden, eps = 3, 0.7
    units = hidden + 1
    delta = sensitivity(units, 1, "regression")
    base_h = torch.rand(6, hidden, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    base_y = torch.rand(6, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    # neighbours: the last record at two opposite corners (all-ones/y=0 vs all-zeros/y=1)
    h1, h2 = base_h.clone(), base_h.clone()
    h1[-1], h2[-1] = 1.0, 0.0
    y1, y2 = base_y.clone(), base_y.clone()
    y1[-1], y2[-1] = 0.0, 1.0
    a = coefficients(augment(h1), y1, "regression", 1)
    b = coefficients(augment(h2), y2, "regression", 1)
    ca = torch.cat([a.linear.ravel(), a.quadratic.ravel()]).numpy()
    cb = torch.cat([b.linear.ravel(), b.quadratic.ravel()]).numpy()
    scale = delta / eps
    outputs = ca + stats.laplace(scale=scale).rvs(size=(2000, ca.size), random_state=7)
    loss = (
        stats.laplace(loc=ca, scale=scale).logpdf(outputs)
        - stats.laplace(loc=cb, scale=scale).logpdf(outputs)
    ).sum(axis=1)
    assert loss.max() <= eps + 1e-9
    assert np.abs(ca - cb).sum() / scale <= eps + 1e-12  # the exact supremum of the loss


def test_hidden_layer_gradient_of_the_perturbed_objective_is_unprotected() -> None:
    """Why fedsim does not train the hidden layer: the coefficient noise does not reach
    ∂/∂W₁ — the gradient the paper would apply to it is the raw data gradient."""
    model = SecProbeMLP((1, 1, 5), 1, hidden=4)
    x = torch.rand(8, 1, 1, 5, generator=torch.Generator().manual_seed(0))
    y = torch.rand(8, generator=torch.Generator().manual_seed(1)).double()
    w = torch.cat([model.head.weight, model.head.bias[:, None]], dim=1).detach().double()
    noise = coefficients(torch.zeros(1, 5, dtype=torch.float64), y[:1], "regression", 1).perturbed(
        50.0, torch.Generator().manual_seed(2)
    )

    def hidden_grad(noisy: bool) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        poly = coefficients(augment(model.features(x).double()), y, "regression", 1)
        if noisy:
            poly = Polynomial(poly.linear + noise.linear, poly.quadratic + noise.quadratic)
        polynomial_loss(poly, w).backward()
        assert model.hidden.weight.grad is not None
        return model.hidden.weight.grad.clone()

    clean, noisy = hidden_grad(False), hidden_grad(True)
    assert torch.count_nonzero(clean) > 0
    assert torch.equal(clean, noisy)


# ------------------------------------------------------------------ plan and accounting


def test_epsilon_per_epoch_composes_to_the_target_and_is_accounted_per_epoch() -> None:
    cfg = fm_config(rounds=4, epochs=3, epsilon=6.0)
    plan = plan_functional(cfg, 9, 1, "regression")
    assert plan.epsilon_per_epoch == pytest.approx(0.5)
    assert plan.round_event() == FunctionalMechanism(0.5, 3)
    ledger = PrivacyLedger()
    for _ in range(cfg.rounds):
        ledger = ledger.with_event(plan.round_event())
    acct = Accounting.of(cfg.dp)
    # the paper's sequential composition: 4 rounds × 3 epochs × 0.5 = 6 (pure ε, δ = 0);
    # at δ > 0 the accountant may only report less
    assert ledger.epsilon_training(acct) <= 6.0 + 1e-9
    assert ledger.epsilon_training(acct) > 0.5 * 6.0
    assert PrivacyLedger.from_json(ledger.to_json()) == ledger


def fm_raw(rounds: int = 3, epochs: int = 1, epsilon: float = 3.0, **extra: object) -> dict:
    raw = {
        "seed": 0,
        "rounds": rounds,
        "data": {"name": "diabetes", "num_clients": 3},
        "model": {"name": "secprobe_mlp8"},
        "client": {"local_epochs": epochs, "batch_size": 32, "lr": 0.2, "mechanism": "functional"},
        "dp": {"epsilon": epsilon},
    }
    for key, value in extra.items():
        section, _, field = key.partition("__")
        raw.setdefault(section, {})[field] = value  # type: ignore[index]
    return raw


def fm_config(rounds: int = 3, epochs: int = 1, epsilon: float = 3.0, **extra: object) -> Config:
    return from_dict(fm_raw(rounds, epochs, epsilon, **extra))


def test_client_round_trains_only_the_output_layer_and_spends_its_plan() -> None:
    cfg = fm_config(rounds=2, epochs=2, epsilon=2.0, dp__max_epsilon=2.0)
    start = build_model("secprobe_mlp8", (1, 1, 10), 1, seed=0).state_dict()
    first = simulated_round(cfg, 0, start, 1)
    assert first.status == "ok" and first.state_dict is not None
    assert torch.equal(first.state_dict["hidden.weight"], start["hidden.weight"])
    assert torch.equal(first.state_dict["hidden.bias"], start["hidden.bias"])
    assert not torch.equal(first.state_dict["head.weight"], start["head.weight"])
    assert first.ledger.events == (FunctionalMechanism(0.5, 2),)
    assert first.epsilon == pytest.approx(
        Accounting.of(cfg.dp).epsilon([FunctionalMechanism(0.5, 2)])
    )
    assert first.ledger.dp_sgd_steps == 0 and first.noise_multiplier is None
    second = simulated_round(cfg, 0, first.state_dict, 2, first.ledger)
    assert second.status == "ok" and second.epsilon is not None and second.epsilon <= 2.0 + 1e-9
    # a third round would pass dp.max_epsilon = dp.epsilon: refused, ledger unchanged
    third = simulated_round(cfg, 0, second.state_dict, 3, second.ledger)  # type: ignore[arg-type]
    assert third.status == "budget-exhausted" and third.ledger == second.ledger


def test_client_round_noise_follows_the_noise_root() -> None:
    cfg = fm_config()
    start = build_model("secprobe_mlp8", (1, 1, 10), 1, seed=0).state_dict()
    a = simulated_round(cfg, 1, start, 1)
    b = simulated_round(cfg, 1, start, 1)
    assert a.state_dict is not None and b.state_dict is not None
    assert torch.equal(a.state_dict["head.weight"], b.state_dict["head.weight"])
    other = simulated_round(dataclasses.replace(cfg, seed=1), 1, start, 1)
    assert other.state_dict is not None
    assert not torch.equal(a.state_dict["head.weight"], other.state_dict["head.weight"])


# ------------------------------------------------------------------ config rules


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"model__name": "mlp"}, "needs a model with a functional head"),
        (
            {"dp__neighbouring": "add_remove", "dp__size_bound": 100, "dp__accountant": "pld"},
            "replace_one' only",
        ),
        ({"dp__secure_rng": True}, "dp.secure_rng is not implemented"),
        ({"dp__mode": "central"}, "needs dp.mode 'sample'"),
        ({"data__partition": "dirichlet"}, "data.partition must be 'iid'"),
        ({"valuation__enabled": True}, "valuation.enabled is not supported"),
    ],
)
def test_config_rules_name_the_field(extra: dict, message: str) -> None:
    problems = cross_checks(build_dataclass(Config, fm_raw(**extra)))
    assert any(message in p for p in problems), problems


def test_functional_mechanism_needs_epsilon_not_sigma() -> None:
    raw = fm_raw(dp__epsilon=None, dp__noise_multiplier=1.0)
    problems = cross_checks(build_dataclass(Config, raw))
    assert any("needs dp.epsilon" in p for p in problems), problems


def test_without_dp_the_mechanism_is_not_used() -> None:
    cfg = fm_config(dp__enabled=False)
    assert cross_checks(cfg) == [] and not cfg.functional_mechanism


def test_paper_sensitivities() -> None:
    # Lemma 3 (b = 80 hidden units, regression) and Lemma 4 (M = 10 outputs, b = 128)
    assert sensitivity(80, 1, "regression") == 80 / 2 + 80**2 / 8
    assert sensitivity(128, 10, "classification") == 10 * (128 + 128**2 / 4)
    assert math.isclose(sensitivity(81, 1, "regression"), 860.625)


def test_classification_round_uses_the_cross_entropy_polynomial() -> None:
    # Eq. 17 on a two-class image task: the head trains, the hidden layer does not, and
    # the noise scale is Δ = M(b + b²/4) / ε_epoch for the 9 augmented units.
    cfg = from_dict(
        {
            "rounds": 2,
            "data": {"name": "pneumoniamnist", "num_clients": 20},
            "model": {"name": "secprobe_mlp8"},
            "client": {"mechanism": "functional", "batch_size": 256, "lr": 0.1},
            "dp": {"epsilon": 2.0},
        }
    )
    start = build_model("secprobe_mlp8", (1, 28, 28), 2, seed=0).state_dict()
    out = simulated_round(cfg, 0, start, 1)
    assert out.status == "ok" and out.state_dict is not None
    assert torch.equal(out.state_dict["hidden.weight"], start["hidden.weight"])
    assert not torch.equal(out.state_dict["head.weight"], start["head.weight"])
    plan = plan_functional(cfg, 9, 2, "classification")
    assert plan.sensitivity == 2 * (9 + 81 / 4) and plan.epsilon_per_epoch == 1.0
    assert out.ledger.events == (FunctionalMechanism(1.0, 1),)
