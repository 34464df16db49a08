"""One-pass ghost clipping (``clients.bookkeeping``) gives DP-SGD's clipped sums.

The reference is computed independently of Opacus: per-example gradients by ``torch.func``
(``vmap`` of ``grad`` over the plain model), each example's norm over all parameters,
the factor ``min(1, C / (norm + 1e-6))``, the weighted sum. A wrong norm, a wrong factor,
a layer left out of the sum or a layer summed without its factor fails here.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader, TensorDataset

from clients.bookkeeping import (
    BookkeepingGradSampleModule,
    BookkeepingLoss,
    bookkeeping_supported,
)
from clients.opacus_adapter import make_private
from fedsim.models import build_model

C = 0.5


def _batch(shape: tuple[int, ...], n: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, *shape, generator=gen)
    x[0] *= 40.0  # one example far outside the bound, whatever the model
    return x, torch.randint(0, classes, (n,), generator=gen)


def _reference(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[dict, dict, torch.Tensor]:
    """Clipped sums Σ_b min(1, C/(‖g_b‖+1e-6)) g_b by torch.func, unclipped sums, factors."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, p, (xb.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, yb.unsqueeze(0))

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in per_example.values()]).norm(dim=0)
    coef = (C / (norms + 1e-6)).clamp(max=1.0)
    sums = {k: torch.tensordot(coef, g, dims=1) for k, g in per_example.items()}
    return sums, {k: g.sum(0) for k, g in per_example.items()}, coef


def _one_pass(model: nn.Module, x: torch.Tensor, sigma: float = 0.0):
    loader = DataLoader(TensorDataset(x, torch.zeros(len(x), dtype=torch.long)), batch_size=8)
    return make_private(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        loader,
        noise_multiplier=sigma,
        max_grad_norm=C,
        noise_generator=torch.Generator().manual_seed(1),
        grad_sample_mode="bookkeeping",
    )


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize(
    ("name", "shape", "n"),
    [
        ("cnn", (1, 28, 28), 16),
        ("mlp", (1, 28, 28), 16),
        ("secprobe_mlp", (1, 8, 8), 16),
        ("resnet9", (3, 16, 16), 6),
    ],
)
@pytest.mark.parametrize("keep_limit", [1 << 24, 0], ids=["kept-per-example", "recomputed"])
def test_clipped_sums_equal_per_example_gradients_clipped_independently(
    name: str, shape: tuple[int, int, int], n: int, keep_limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways of forming a layer's sum: from the per-example gradients kept from the
    norm computation, and (large layers) from the inputs and output gradients."""
    monkeypatch.setattr("clients.bookkeeping.KEEP_LIMIT", keep_limit)
    classes = 3
    model = build_model(name, shape, classes, seed=0)
    x, y = _batch(shape, n, classes)
    expected, raw, coef = _reference(copy.deepcopy(model), x, y)
    assert float(coef.min()) < 0.5 and float(coef.max()) <= 1.0  # the bound binds

    private = _one_pass(model, x)
    assert isinstance(private.model, BookkeepingGradSampleModule)
    loss = private.criterion(private.model(x), y)
    assert isinstance(loss, BookkeepingLoss)
    loss.backward()
    for pname, p in private.model._module.named_parameters():
        assert p.grad is not None
        scale = float(expected[pname].abs().max()) + 1e-12
        torch.testing.assert_close(p.grad, expected[pname], rtol=1e-4, atol=1e-4 * scale)
    gap = sum(float((raw[k] - expected[k]).norm()) for k in raw)
    assert gap > 1.0  # clipping changed the sum: an unclipped .grad would have failed above


def test_an_empty_batch_gives_zero_sums_and_scaled_losses_stay_one_pass() -> None:
    model = build_model("mlp", (1, 28, 28), 2, seed=0)
    x, y = _batch((1, 28, 28), 8, 2)
    private = _one_pass(model, x)
    loss = private.criterion(private.model(x[:0]), y[:0])
    loss.backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in private.model.parameters())
    scaled = 0.5 * private.criterion(private.model(x), y) + 0.0
    assert isinstance(scaled, BookkeepingLoss)
    scaled.backward()
    assert private.model._kept == []  # nothing kept after the sums were formed


def test_unsupported_layers_and_reuse_are_refused() -> None:
    assert bookkeeping_supported(build_model("cnn", (1, 28, 28), 2))
    assert not bookkeeping_supported(nn.Sequential(nn.Embedding(10, 4), nn.Flatten()))

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.GroupNorm(1, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            norm = self.body[2]
            return norm(norm(self.body[1](self.body[0](x))))

    x = torch.rand(8, 1, 2, 2)
    private = _one_pass(Twice(), x)
    with pytest.raises(NotImplementedError, match="applied twice"):
        private.criterion(private.model(x), torch.zeros(8, dtype=torch.long)).backward()
