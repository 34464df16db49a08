"""Ghost clipping (Opacus ``grad_sample_mode="ghost"``) keeps DP-SGD's privacy semantics."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from clients.opacus_adapter import make_private, plain_state_dict, resolve_grad_sample_mode
from clients.trainer import train_epochs
from fedsim.config import from_dict
from fedsim.errors import ConfigError
from fedsim.models import build_model

SIGMA, S, BATCH = 1.3, 2.0, 32


def _setup(mode: str, sigma: float, n: int = 8 * BATCH, seed: int = 0, model_name: str = "mlp"):
    model = build_model(model_name, (1, 28, 28), 10, seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(seed)
    data = TensorDataset(
        torch.randn(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    )
    loader = DataLoader(data, batch_size=BATCH, generator=torch.Generator().manual_seed(seed + 1))
    return make_private(
        model,
        optimizer,
        loader,
        noise_multiplier=sigma,
        max_grad_norm=S,
        noise_generator=torch.Generator().manual_seed(seed + 2),
        grad_sample_mode=mode,  # type: ignore[arg-type]
    )


def _epoch(mode: str, sigma: float, model_name: str) -> tuple[dict[str, torch.Tensor], list]:
    """One DP-SGD epoch in ``mode``: the model's state and the accountant's events."""
    private = _setup(mode, sigma=sigma, model_name=model_name)
    assert private.grad_sample_mode == mode
    train_epochs(
        private.model, private.loader, private.optimizer, 1, torch.device("cpu"), private.criterion
    )
    return plain_state_dict(private.model), private.engine.accountant.history


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_one_pass_with_noise_equals_opacus_two_pass_ghost(model_name: str) -> None:
    """Same Poisson batches and noise generator, σ > 0: book-keeping's one backward pass
    leaves the same model and accountant events as Opacus' two-pass ghost clipping."""
    (ghost, ghost_events), (one, one_events) = (
        _epoch(mode, SIGMA, model_name) for mode in ("ghost", "bookkeeping")
    )
    assert one_events == ghost_events and ghost_events
    start = build_model(model_name, (1, 28, 28), 10, seed=0).state_dict()
    for key, value in ghost.items():
        assert not torch.equal(value, start[key])
        torch.testing.assert_close(one[key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("one_pass", [False, True], ids=["ghost", "bookkeeping"])
@pytest.mark.parametrize("model_name", ["mlp", "cnn"])  # the models `auto` gives ghost
def test_ghost_without_noise_equals_hooks(model_name: str, one_pass: bool) -> None:
    """Same Poisson batches, σ=0: ghost's clipped gradients equal the materialised ones,
    with two backward passes (Opacus) and with one (book-keeping)."""
    ghost_mode = "bookkeeping" if one_pass else "ghost"
    results = {mode: _epoch(mode, 0.0, model_name) for mode in ("hooks", ghost_mode)}
    hooks, ghost = results["hooks"], results[ghost_mode]
    assert hooks[1] == ghost[1]  # same accountant events (σ, q, steps)
    start = build_model(model_name, (1, 28, 28), 10, seed=0).state_dict()
    for name, value in hooks[0].items():
        assert not torch.equal(value, start[name])  # it trained
        torch.testing.assert_close(ghost[0][name], value, rtol=1e-4, atol=1e-5)


def test_ghost_noise_std_is_sigma_times_s() -> None:
    private = _setup("ghost", sigma=SIGMA)
    assert private.noise_std() == pytest.approx(SIGMA * S)
    before = [p.detach().clone() for p in private.model.parameters()]
    x, y = next(iter(private.loader))
    private.optimizer.zero_grad()
    loss = private.criterion(private.model(x), y) * 0.0  # zero per-sample gradients
    loss.backward()
    private.optimizer.step()
    lr, expected_batch = 0.5, private.optimizer.expected_batch_size
    for b, p in zip(before, private.model.parameters(), strict=True):
        n = p.numel()
        if n < 500:
            continue
        measured = float((b - p.detach()).std()) / lr * expected_batch
        assert measured == pytest.approx(SIGMA * S, rel=6 / math.sqrt(2 * n))


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_ghost_empty_poisson_batch_adds_noise_and_counts_a_step(model_name: str) -> None:
    # q = 1 here; feed an empty batch by hand
    private = _setup("ghost", sigma=SIGMA, n=4, model_name=model_name)
    before = [p.detach().clone() for p in private.model.parameters()]
    private.optimizer.zero_grad()
    x, y = torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long)
    private.criterion(private.model(x), y).backward()
    private.optimizer.step()
    after = list(private.model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(b, p) for b, p in zip(before, after, strict=True))
    assert sum(steps for _, _, steps in private.engine.accountant.history) == 1


def test_resolve_grad_sample_mode() -> None:
    mlp = build_model("mlp", (1, 28, 28), 2)
    cnn = build_model("cnn", (1, 28, 28), 2)
    assert resolve_grad_sample_mode("auto", True, mlp) == "bookkeeping"
    assert resolve_grad_sample_mode("auto", True, cnn) == "bookkeeping"  # ghost 0.40x hooks
    assert resolve_grad_sample_mode("auto", False, mlp) == "hooks"  # per-layer clipping
    assert resolve_grad_sample_mode("auto", False, cnn) == "hooks"
    resnet = build_model("resnet9", (3, 32, 32), 2)
    assert resolve_grad_sample_mode("auto", True, resnet) == "hooks"  # ghost measured slower
    assert resolve_grad_sample_mode("ghost", True, resnet) == "ghost"
    assert resolve_grad_sample_mode("ghost", True, cnn) == "ghost"
    assert resolve_grad_sample_mode("ghost", False, mlp) == "hooks"
    assert resolve_grad_sample_mode("bookkeeping", True, resnet) == "bookkeeping"
    assert resolve_grad_sample_mode("bookkeeping", False, cnn) == "hooks"
    assert resolve_grad_sample_mode("hooks", True, mlp) == "hooks"


@pytest.mark.parametrize("mode", ["ghost", "bookkeeping"])
def test_ghost_needs_flat_clipping(mode: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{mode}' needs dp\.clipping 'flat'"):
        from_dict(
            {
                "dp": {
                    "noise_multiplier": 1.0,
                    "clipping": "per_layer_uniform",
                    "grad_sample_mode": mode,
                }
            }
        )
    model = build_model("mlp", (1, 28, 28), 2)
    loader = DataLoader(TensorDataset(torch.randn(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)))
    with pytest.raises(ValueError, match="flat clipping only"):
        make_private(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            loader,
            noise_multiplier=1.0,
            max_grad_norm=[1.0] * len(list(model.parameters())),
            noise_generator=None,
            grad_sample_mode=mode,  # type: ignore[arg-type]
        )
