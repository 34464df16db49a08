"""fedsim's secure mode (clients.secure_rng): CSPRNG noise and Poisson sampling under Opacus.

The CSPRNG cannot be seeded, so the statistical checks use 6-standard-error tolerances
(false alarm rate ~1e-9 per check) and p-value floors of 1e-6.
"""

from __future__ import annotations

import inspect
import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus import PrivacyEngine
from opacus.optimizers import (
    AdaClipDPOptimizer,
    DistributedDPOptimizer,
    DPOptimizer,
    DPOptimizerFastGradientClipping,
    DPPerLayerOptimizer,
)
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from scipy import stats
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from clients import secure_rng
from clients.opacus_adapter import make_private, plain_state_dict
from clients.secure_rng import (
    SecurePoissonSampler,
    SecurePrivacyEngine,
    secure_normal,
    secure_optimizer_class,
    with_secure_sampler,
)
from fedsim.models import build_model
from fedsim.privacy.secure_rng import box_muller, opacus_steps, standard_normal, uniforms_from_bytes

SIGMA, S = 1.3, 2.0
PER_LAYER = [1.0, 0.5, 2.0, 1.5]  # one bound per tensor of _tiny_model()
N, BATCH, FEATURES = 64, 32, 16  # q = 0.5, expected batch 32


# --- pure functions, hand-computed ------------------------------------------------------


def test_uniforms_are_the_top_53_bits() -> None:
    raw = struct.pack("<4Q", 0, 2**64 - 1, 1 << 11, (1 << 11) - 1)
    assert uniforms_from_bytes(raw).tolist() == [0.0, 1 - 2**-53, 2**-53, 0.0]
    with pytest.raises(ValueError, match="multiple of 8 bytes; got 5"):
        uniforms_from_bytes(b"12345")


def test_box_muller_hand_values() -> None:
    u1 = np.array([1 - math.exp(-0.5), 1 - math.exp(-2.0), 0.0])  # radius 1, 2, 0
    u2 = np.array([0.0, 0.25, 0.6])  # angle 0, π/2, any
    np.testing.assert_allclose(box_muller(u1, u2), [1, 0, 0, 0, 2, 0], atol=1e-12)
    largest = box_muller(np.array([1 - 2**-53]), np.array([0.0]))[0]  # finite tail
    assert largest == pytest.approx(math.sqrt(2 * 53 * math.log(2)))


def test_standard_normal_is_four_draws_over_two() -> None:
    n, raw, asked = 3, bytes(range(256)) * 2, []

    def source(k: int) -> bytes:
        asked.append(k)
        return raw[:k]

    got = standard_normal(n, source)
    assert asked == [32 * n]  # 4 draws × 8 bytes per value
    u = uniforms_from_bytes(raw[: 32 * n])
    draws = box_muller(u[: 2 * n], u[2 * n :])
    expected = [sum(draws[j + k * n] for k in range(4)) / 2 for j in range(n)]
    np.testing.assert_allclose(got, expected, rtol=1e-15)


# --- secure_normal ----------------------------------------------------------------------


def test_secure_normal_mean_std_normality() -> None:
    n, std = 400_000, 2.5
    z = secure_normal((n,), std, dtype=torch.float64, device="cpu").numpy()
    assert abs(z.mean()) < 6 * std / math.sqrt(n)
    assert z.std() == pytest.approx(std, rel=6 / math.sqrt(2 * n))
    assert stats.kstest(z / std, "norm").pvalue > 1e-6
    assert abs(stats.kurtosis(z)) < 6 * math.sqrt(24 / n)  # Gaussian tails


def test_secure_normal_calls_differ() -> None:
    a, b = (secure_normal((1000,), 1.0, dtype=torch.float32, device="cpu") for _ in range(2))
    assert not torch.equal(a, b)


_DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_secure_normal_dtype_device_shape(dtype: torch.dtype, device: str) -> None:
    z = secure_normal(torch.Size([50, 40]), 3.0, dtype=dtype, device=torch.device(device))
    assert (z.dtype, z.device.type, tuple(z.shape)) == (dtype, device, (50, 40))
    assert float(z.double().std()) == pytest.approx(3.0, rel=0.15)


def test_secure_normal_zero_std_and_bad_std() -> None:
    zeros = secure_normal((2, 3), 0.0, dtype=torch.float32, device="cpu")
    assert torch.equal(zeros, torch.zeros(2, 3))
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="std must be finite and >= 0"):
            secure_normal((2,), bad, dtype=torch.float32, device="cpu")


# --- Poisson sampler --------------------------------------------------------------------


def test_sampler_inclusion_rate_is_q() -> None:
    n, q, epochs = 2000, 0.1, 5
    sampler = SecurePoissonSampler(num_samples=n, sample_rate=q)
    batches = [b for _ in range(epochs) for b in sampler]
    assert len(batches) == epochs * 10
    counts = np.zeros(n)
    for b in batches:
        assert b == sorted(set(b)) and all(0 <= i < n for i in b)
        counts[b] += 1
    for half in (counts[: n // 2], counts[n // 2 :]):  # no bias by index
        trials = half.size * len(batches)
        assert abs(half.sum() / trials - q) < 6 * math.sqrt(q * (1 - q) / trials)


@settings(max_examples=60, deadline=None)
@given(q=st.floats(min_value=1e-3, max_value=1.0), n=st.integers(1, 40))
def test_sampler_steps_match_opacus(q: float, n: int) -> None:
    ours = SecurePoissonSampler(num_samples=n, sample_rate=q)
    theirs = UniformWithReplacementSampler(
        num_samples=n, sample_rate=q, generator=torch.Generator().manual_seed(0)
    )
    assert len(ours) == len(theirs) == opacus_steps(q)
    assert sum(1 for _ in ours) == sum(1 for _ in theirs)


def test_sampler_yields_empty_batches() -> None:
    sampler = SecurePoissonSampler(num_samples=3, sample_rate=0.05)  # P(empty) ≈ 0.86
    assert [] in list(sampler)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_samples": 0, "sample_rate": 0.5}, "num_samples must be > 0; got 0"),
        ({"num_samples": 5, "sample_rate": 0.0}, r"sample_rate must be in \(0, 1\]; got 0.0"),
        ({"num_samples": 5, "sample_rate": 1.5}, r"sample_rate must be in \(0, 1\]; got 1.5"),
        ({"num_samples": 5, "sample_rate": 0.5, "steps": 0}, "steps must be > 0; got 0"),
    ],
)
def test_sampler_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SecurePoissonSampler(**kwargs)


def test_with_secure_sampler_needs_opacus_poisson_loader() -> None:
    loader = DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=2)
    with pytest.raises(ValueError, match=r"needs Opacus' Poisson sampler.*BatchSampler"):
        with_secure_sampler(loader)


# --- DP-SGD through clients.opacus_adapter.make_private ----------------------------------


def _tiny_model(seed: int = 0) -> nn.Module:
    """Every tensor has ≥ 300 entries, so each one's noise std is measurable."""
    model = nn.Sequential(nn.Linear(FEATURES, 512), nn.ReLU(), nn.Linear(512, 300))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.05, 0.05, generator=gen)
    return model


def _private(secure: bool, mode: str = "hooks", bound: float | list[float] = S, seed: int = 0):
    model = _tiny_model(seed)
    gen = torch.Generator().manual_seed(seed)
    data = TensorDataset(
        torch.randn(N, FEATURES, generator=gen), torch.randint(0, 300, (N,), generator=gen)
    )
    loader = DataLoader(data, batch_size=BATCH, generator=torch.Generator().manual_seed(seed + 1))
    return make_private(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        loader,
        noise_multiplier=SIGMA,
        max_grad_norm=bound,
        noise_generator=torch.Generator().manual_seed(seed + 2),
        grad_sample_mode=mode,  # type: ignore[arg-type]
        secure=secure,
    )


@pytest.mark.parametrize(
    ("mode", "bound", "std"),
    [
        ("hooks", S, SIGMA * S),
        ("hooks", PER_LAYER, SIGMA * math.sqrt(sum(b * b for b in PER_LAYER))),
        ("ghost", S, SIGMA * S),
        ("bookkeeping", S, SIGMA * S),
    ],
    ids=["hooks", "per-layer", "ghost", "bookkeeping"],
)
def test_secure_step_adds_noise_of_std_sigma_c_to_every_parameter(mode, bound, std) -> None:
    private = _private(True, mode, bound)
    assert private.noise_std() == pytest.approx(std)
    noise_gen = private.optimizer.generator
    before = [p.detach().clone() for p in private.model.parameters()]
    x, y = next(iter(private.loader))
    global_rng = torch.get_rng_state()
    private.optimizer.zero_grad()
    criterion = private.criterion or nn.CrossEntropyLoss()
    (criterion(private.model(x), y) * 0.0).backward()  # zero per-sample gradients
    private.optimizer.step()
    assert noise_gen is None  # the seeded noise generator never reached the optimizer
    assert torch.equal(torch.get_rng_state(), global_rng)  # nor came it from torch's RNG
    scale = private.optimizer.expected_batch_size  # mean reduction, lr = 1
    assert scale == BATCH
    for b, p in zip(before, private.model.parameters(), strict=True):
        noise = (b - p.detach()).double() * scale
        n = noise.numel()
        assert abs(float(noise.mean())) < 6 * std / math.sqrt(n)
        assert float(noise.std()) == pytest.approx(std, rel=6 / math.sqrt(2 * n))
    assert private.engine.accountant.history == [(SIGMA, BATCH / N, 1)]


def _train(secure: bool, mode: str) -> dict[str, torch.Tensor]:
    private = _private(secure, mode)
    criterion = private.criterion or nn.CrossEntropyLoss()
    for x, y in private.loader:
        private.optimizer.zero_grad()
        criterion(private.model(x), y).backward()
        private.optimizer.step()
    return plain_state_dict(private.model)


@pytest.mark.parametrize("mode", ["hooks", "ghost", "bookkeeping"])
def test_secure_runs_differ_and_seeded_runs_repeat(mode: str) -> None:
    seeded = [_train(False, mode) for _ in range(2)]
    assert all(torch.equal(seeded[0][k], seeded[1][k]) for k in seeded[0])
    secure = [_train(True, mode) for _ in range(2)]
    assert all(not torch.equal(secure[0][k], secure[1][k]) for k in secure[0])


def test_secure_loader_ignores_the_seeded_generator() -> None:
    def batches(secure: bool) -> list[list[float]]:
        return [y.tolist() for _, y in _private(secure).loader]

    assert batches(False) == batches(False)
    assert batches(True) != batches(True)
    assert len(batches(True)) == len(batches(False)) == N // BATCH


def test_secure_loader_collates_empty_batches() -> None:
    data = TensorDataset(torch.ones(3, FEATURES), torch.zeros(3, dtype=torch.long))
    model = _tiny_model()
    private = make_private(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        DataLoader(data, batch_size=1),  # q = 1/3, P(empty) = 8/27 per step
        noise_multiplier=SIGMA,
        max_grad_norm=S,
        noise_generator=None,
        secure=True,
    )
    shapes = [tuple(x.shape) for _ in range(30) for x, _ in private.loader]
    assert len(shapes) == 90
    assert (0, FEATURES) in shapes


def test_default_cnn_secure_step_runs() -> None:
    model = build_model("cnn", (1, 28, 28), 2, seed=0)
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(16, 1, 28, 28, generator=gen), torch.randint(0, 2, (16,), generator=gen)
    )
    private = make_private(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        DataLoader(data, batch_size=8),
        noise_multiplier=SIGMA,
        max_grad_norm=S,
        noise_generator=None,
        secure=True,
    )
    before = plain_state_dict(private.model)
    for x, y in private.loader:
        private.optimizer.zero_grad()
        nn.functional.cross_entropy(private.model(x), y).backward()
        private.optimizer.step()
    after = plain_state_dict(private.model)
    assert all(torch.isfinite(v).all() and not torch.equal(v, before[k]) for k, v in after.items())


# --- the Opacus internals relied on (fail if Opacus changes them) ------------------------


def _torch_noise(seed: int):
    """Opacus' non-secure ``_generate_noise`` as a drop-in for :func:`secure_normal`."""
    gen = torch.Generator().manual_seed(seed)

    def noise(shape, std, *, dtype, device):
        return torch.normal(0, std, size=tuple(shape), generator=gen, dtype=dtype, device=device)

    return noise


@pytest.mark.parametrize(
    ("opacus_class", "bound"),
    [(DPOptimizer, S), (DPPerLayerOptimizer, [1.0, 2.0]), (DPOptimizerFastGradientClipping, S)],
)
def test_secure_add_noise_is_opacus_add_noise_with_another_source(
    opacus_class, bound, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = torch.Generator().manual_seed(0)
    summed = [torch.randn(5, 3, generator=gen), torch.randn(4, generator=gen)]

    def noised_grads(cls: type, generator: torch.Generator | None) -> list[torch.Tensor]:
        params = [nn.Parameter(torch.zeros_like(s)) for s in summed]
        optimizer = cls(
            torch.optim.SGD(params, lr=1.0),
            noise_multiplier=SIGMA,
            max_grad_norm=bound,
            expected_batch_size=8,
            generator=generator,
        )
        for p, s in zip(params, summed, strict=True):
            p.summed_grad = s.clone()
        optimizer.add_noise()
        with pytest.raises(ValueError, match="zero_grad"):  # processed-flag check kept
            optimizer.add_noise()
        return [p.grad for p in params]

    theirs = noised_grads(opacus_class, torch.Generator().manual_seed(7))
    monkeypatch.setattr(secure_rng, "secure_normal", _torch_noise(7))
    ours = noised_grads(secure_optimizer_class(opacus_class), None)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert not torch.equal(theirs[0], summed[0])  # noise was added at all


def test_privacy_engine_factories_still_exist() -> None:
    """SecurePrivacyEngine overrides these private PrivacyEngine factory methods."""
    optimizer = set(inspect.signature(PrivacyEngine._prepare_optimizer).parameters)
    assert {
        "optimizer",
        "noise_multiplier",
        "max_grad_norm",
        "expected_batch_size",
        "loss_reduction",
        "distributed",
        "clipping",
        "noise_generator",
        "grad_sample_mode",
    } <= optimizer
    assert "data_loader" in inspect.signature(PrivacyEngine._prepare_data_loader).parameters


def test_make_private_refuses_when_opacus_bypasses_the_factories(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(SecurePrivacyEngine, "_prepare_optimizer", PrivacyEngine._prepare_optimizer)
    with pytest.raises(RuntimeError, match="secure mode is off"):
        _private(True)


@pytest.mark.parametrize("opacus_class", [AdaClipDPOptimizer, DistributedDPOptimizer])
def test_unsupported_optimizers_are_refused(opacus_class: type) -> None:
    with pytest.raises(ValueError, match="secure noise supports the Opacus optimizers DPOpt"):
        secure_optimizer_class(opacus_class)


def test_numpy_secure_normal_for_the_server() -> None:
    """The server's central-DP noise: the same 4-draw CSPRNG normals, as a NumPy array."""
    from fedsim.privacy.secure_rng import secure_normal as np_secure_normal

    z = np_secure_normal((200_000,), 2.0)
    assert z.shape == (200_000,) and z.dtype == np.float64
    assert abs(z.mean()) < 6 * 2.0 / np.sqrt(z.size)
    assert abs(z.std() - 2.0) < 6 * 2.0 / np.sqrt(2 * z.size)
    assert not np.array_equal(np_secure_normal((8,), 1.0), np_secure_normal((8,), 1.0))
    assert np.array_equal(np_secure_normal((3, 2), 0.0), np.zeros((3, 2)))


@pytest.mark.parametrize("neighbouring", ["replace_one", "add_remove"])
def test_dp_secure_rng_reaches_a_clients_local_round(neighbouring: str) -> None:
    """``dp.secure_rng: true`` in the config: the same seed gives different updates."""
    from client_harness import simulated_round

    from fedsim.config import from_dict
    from fedsim.privacy import PrivacyLedger
    from fedsim.workload import dataset_for

    dp = {"epsilon": 2.0, "delta": 1e-5, "secure_rng": True, "neighbouring": neighbouring}
    if neighbouring == "add_remove":
        dp["size_bound"] = 120
    cfg = from_dict(
        {
            "rounds": 1,
            "data": {"num_clients": 2, "train_samples": 200, "test_samples": 50},
            "model": {"name": "mlp"},
            "client": {"batch_size": 32},
            "dp": dp,
        }
    )
    bundle = dataset_for(cfg.data, cfg.seed)
    state = build_model("mlp", bundle.input_shape, bundle.num_classes, seed=0).state_dict()
    a = simulated_round(cfg, 0, state, 1, PrivacyLedger())
    b = simulated_round(cfg, 0, state, 1, PrivacyLedger())
    assert a.status == b.status == "ok" and a.state_dict is not None and b.state_dict is not None
    assert any(not torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert a.ledger == b.ledger  # the same accounting
