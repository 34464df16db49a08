"""Clipping variants: threshold math, Opacus noise scale, equal ε, and a whole run."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from client_harness import simulated_round
from flwr.app import ArrayRecord
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from clients.opacus_adapter import make_private
from fedsim import clipping as C
from fedsim.config import from_dict
from fedsim.models import build_model
from fedsim.privacy import PrivacyLedger
from fedsim.workload import dataset_for
from strategies.clipping import round_clip_bounds

# ------------------------------------------------------------------ threshold math


SHARED_RAY = True  # its in-process runs share one Ray and warm workers (conftest)


def test_flat_threshold_is_the_bound() -> None:
    assert C.flat_thresholds(2.0) == 2.0
    with pytest.raises(ValueError, match="max_grad_norm"):
        C.flat_thresholds(0.0)


def test_uniform_thresholds_hand_computed() -> None:
    assert C.uniform_thresholds(2.0, 4) == [1.0, 1.0, 1.0, 1.0]  # 2/√4
    assert C.uniform_thresholds(3.0, 9) == pytest.approx([1.0] * 9)
    with pytest.raises(ValueError, match="num_tensors"):
        C.uniform_thresholds(1.0, 0)


def test_adaptive_thresholds_hand_computed() -> None:
    # M = (3, 4): ‖M‖ = 5, so S_j = S·M_j/5 = (6/5, 8/5) for S = 2
    assert C.adaptive_thresholds(2.0, [3.0, 4.0]) == pytest.approx([1.2, 1.6])
    # scale-free in M
    assert C.adaptive_thresholds(2.0, [30.0, 40.0]) == pytest.approx([1.2, 1.6])


def test_adaptive_thresholds_guard_zeros() -> None:
    # a zero / nan magnitude is raised to 1e-3 × the largest, never to zero
    out = C.adaptive_thresholds(1.0, [0.0, 1.0, math.nan])
    assert all(s > 0 for s in out)
    assert out[0] == pytest.approx(out[2]) and out[0] == pytest.approx(1e-3 * out[1])
    assert C.overall_bound(out) == pytest.approx(1.0)
    # nothing positive: uniform
    assert C.adaptive_thresholds(2.0, [0.0, 0.0, 0.0, 0.0]) == [1.0] * 4


@settings(max_examples=200, deadline=None)
@given(
    s=st.floats(min_value=1e-3, max_value=1e3),
    m=st.lists(st.floats(min_value=0.0, max_value=1e6), min_size=1, max_size=64),
)
def test_overall_bound_is_s_property(s: float, m: list[float]) -> None:
    adaptive = C.adaptive_thresholds(s, m)
    uniform = C.uniform_thresholds(s, len(m))
    assert C.overall_bound(adaptive) == pytest.approx(s, rel=1e-9)
    assert C.overall_bound(uniform) == pytest.approx(s, rel=1e-9)
    assert all(x > 0 for x in adaptive)
    assert not C.check_clip_bounds("per_layer_adaptive", adaptive, len(m), s)


def test_check_clip_bounds_messages() -> None:
    assert C.check_clip_bounds("flat", None, 3, 1.0) == []
    assert "flat" in C.check_clip_bounds("flat", [1.0], 1, 1.0)[0]
    assert "sent no" in C.check_clip_bounds("per_layer_uniform", None, 2, 1.0)[0]
    # both problems reported together
    problems = C.check_clip_bounds("per_layer_uniform", [0.6, 0.8, 0.0], 2, 1.0)
    assert len(problems) == 2
    assert "one per trainable tensor (2); got 3" in problems[0]
    assert "> 0" in problems[1]
    (p,) = C.check_clip_bounds("per_layer_adaptive", [0.6, 0.9], 2, 1.0)
    assert "dp.max_grad_norm (1.0)" in p


def test_grad_magnitudes_match_one_at_a_time_loop() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(7, 5), torch.randint(0, 3, (7,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = C.per_tensor_grad_magnitudes(model, x, y)
    norms = []
    for i in range(7):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        norms.append([float(p.grad.norm()) for p in model.parameters()])
    expected = [sorted(col)[3] for col in zip(*norms, strict=True)]  # median of 7
    assert got == pytest.approx(expected, rel=1e-5)
    assert len(got) == len(C.trainable_tensor_names(model)) == 4
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_grad_magnitudes_skip_frozen_tensors() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    model[0].bias.requires_grad_(False)
    got = C.per_tensor_grad_magnitudes(model, torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    assert C.trainable_tensor_names(model) == ["0.weight", "1.weight", "1.bias"]
    assert len(got) == 3


# ------------------------------------------------------------------ Opacus noise scale

SIGMA, S, BATCH = 1.3, 2.0, 64


def _noise_only_step(bounds: float | list[float]) -> tuple[float, list[float]]:
    """One DP-SGD step with zero per-sample gradients: the update is the noise alone.

    Returns the optimizer's noise std and the measured std of each tensor's update × the
    expected batch size (loss_reduction="mean" divides the noise by it).
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 100), nn.Linear(100, 50))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    data = TensorDataset(torch.randn(10 * BATCH, 100), torch.zeros(10 * BATCH, dtype=torch.long))
    loader = DataLoader(data, batch_size=BATCH, generator=torch.Generator().manual_seed(1))
    private = make_private(
        model,
        optimizer,
        loader,
        noise_multiplier=SIGMA,
        max_grad_norm=bounds,
        noise_generator=torch.Generator().manual_seed(2),
    )
    before = [p.detach().clone() for p in private.model.parameters()]
    x, _ = next(iter(private.loader))
    private.optimizer.zero_grad()
    (private.model(x) * 0.0).sum().backward()  # zero per-sample gradients
    private.optimizer.step()
    expected_batch = private.optimizer.expected_batch_size
    stds = [
        float((b - p.detach()).std()) * expected_batch
        for b, p in zip(before, private.model.parameters(), strict=True)
    ]
    return private.noise_std(), stds


@pytest.mark.parametrize("variant", ["flat", "per_layer_uniform", "per_layer_adaptive"])
def test_noise_std_is_sigma_times_s_for_every_variant(variant: str) -> None:
    bounds: float | list[float]
    if variant == "flat":
        bounds = C.flat_thresholds(S)
    elif variant == "per_layer_uniform":
        bounds = C.uniform_thresholds(S, 4)
    else:
        bounds = C.adaptive_thresholds(S, [10.0, 0.5, 3.0, 0.01])
    noise_std, measured = _noise_only_step(bounds)
    assert noise_std == pytest.approx(SIGMA * S, rel=1e-6)
    # every tensor gets noise of std σ·√(Σ S_j²) = σ·S, whatever its own bound
    for m, n in zip(measured, (10_000, 100, 5_000, 50), strict=True):
        assert m == pytest.approx(SIGMA * S, rel=6 / math.sqrt(2 * n))


def test_wrong_number_of_bounds_is_refused_by_adapter() -> None:
    model = nn.Linear(3, 2)
    loader = DataLoader(TensorDataset(torch.randn(8, 3), torch.zeros(8, dtype=torch.long)))
    with pytest.raises(ValueError, match="one bound per trainable tensor"):
        make_private(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            loader,
            noise_multiplier=1.0,
            max_grad_norm=[1.0],
            noise_generator=None,
        )


# ------------------------------------------------------------------ same ε, real local round


def _small_cfg(variant: str) -> object:
    return from_dict(
        {
            "seed": 5,
            "rounds": 2,
            "data": {"name": "pneumoniamnist", "num_clients": 20},
            "model": {"name": "mlp"},
            "client": {"batch_size": 32, "lr": 0.05},
            "dp": {
                "noise_multiplier": 1.1,
                "max_grad_norm": S,
                "delta": 1e-4,
                "clipping": variant,
                "adaptive_samples": 64,
            },
        }
    )


def _bounds(cfg: Any, state: Any) -> list[float] | None:
    data = dataset_for(cfg.data, cfg.seed)
    return round_clip_bounds(cfg.dp, cfg.model.name, data, cfg.seed, 1, ArrayRecord(state))


def test_same_sigma_same_epsilon_across_variants() -> None:
    results = {}
    for variant in ("flat", "per_layer_uniform", "per_layer_adaptive"):
        cfg = _small_cfg(variant)
        model = build_model("mlp", (1, 28, 28), 2, seed=0)
        state = model.state_dict()
        bounds = _bounds(cfg, state)
        if variant == "flat":
            assert bounds is None
        else:
            assert bounds is not None and len(bounds) == 6
            assert C.overall_bound(bounds) == pytest.approx(S)
        out = simulated_round(cfg, 0, state, 1, PrivacyLedger(), clip_bounds=bounds)
        assert out.status == "ok" and out.state_dict is not None
        results[variant] = (out.noise_multiplier, out.sample_rate, out.ledger.dp_sgd_steps)
        results[variant + "-eps"] = out.epsilon
    assert results["flat"] == results["per_layer_uniform"] == results["per_layer_adaptive"]
    assert results["flat"][0] == pytest.approx(1.1)
    eps = results["flat-eps"]
    assert eps is not None and eps > 0
    assert results["per_layer_uniform-eps"] == eps == results["per_layer_adaptive-eps"]


def test_adaptive_bounds_differ_from_uniform() -> None:
    cfg = _small_cfg("per_layer_adaptive")
    state = build_model("mlp", (1, 28, 28), 2, seed=0).state_dict()
    adaptive = _bounds(cfg, state)
    assert adaptive is not None
    assert max(adaptive) / min(adaptive) > 2.0  # weights and biases differ in magnitude


@pytest.mark.parametrize(
    ("variant", "bounds", "match"),
    [
        ("per_layer_uniform", None, "sent no per-tensor"),
        ("per_layer_uniform", [1.0] * 5, "one per trainable tensor"),
        ("per_layer_uniform", [1.0] * 6, "max_grad_norm"),
        ("flat", [S / math.sqrt(6)] * 6, "'flat'"),
    ],
)
def test_local_round_refuses_invalid_bounds(
    variant: str, bounds: list[float] | None, match: str
) -> None:
    cfg = _small_cfg(variant)
    state = build_model("mlp", (1, 28, 28), 2, seed=0).state_dict()
    ledger = PrivacyLedger()
    with pytest.raises(ValueError, match=match):
        simulated_round(cfg, 0, state, 1, ledger, clip_bounds=bounds)


# ------------------------------------------------------------------ whole run (Ray)


@pytest.mark.e2e
def test_per_layer_adaptive_run_spends_the_same_epsilon_as_flat(tmp_path) -> None:
    from fedsim.run import run_experiment
    from fedsim.rundir import read_metrics

    def raw(variant: str) -> dict:
        return {
            "name": f"clip-{variant}",
            "seed": 3,
            "rounds": 2,
            "data": {"name": "pneumoniamnist", "num_clients": 2},
            "model": {"name": "mlp"},
            "client": {"batch_size": 64, "lr": 0.3},
            "dp": {
                "noise_multiplier": 1.0,
                "delta": 1e-4,
                "max_grad_norm": 1.0,
                "clipping": variant,
                "adaptive_samples": 128,
            },
            "strategy": {"name": "fedavg", "clients_per_round": 2},
        }

    eps = {}
    for variant in ("flat", "per_layer_adaptive"):
        run = tmp_path / variant
        run_experiment(from_dict(raw(variant)), run)
        lines = read_metrics(run)
        assert [m["round"] for m in lines] == [1, 2]
        for m in lines:
            assert 0.0 <= m["test_accuracy"] <= 1.0
            assert all(c["status"] == "ok" for c in m["clients"].values()), m["clients"]
        eps[variant] = {
            cid: (c["epsilon"], c["noise_multiplier"], c["steps"])
            for cid, c in lines[-1]["clients"].items()
        }
    assert sorted(eps["flat"]) == ["0", "1"]
    for cid, (e, sigma, steps) in eps["flat"].items():
        e2, sigma2, steps2 = eps["per_layer_adaptive"][cid]
        assert (sigma2, steps2) == (sigma, steps) and sigma == pytest.approx(1.0)
        assert e2 == pytest.approx(e, rel=1e-9) and e > 0
