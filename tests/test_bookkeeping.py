"""One-pass ghost clipping (``clients.bookkeeping``) gives DP-SGD's clipped sums.

The reference is computed independently of Opacus: per-example gradients by ``torch.func``
(``vmap`` of ``grad`` over the plain model), each example's norm over all parameters,
the factor ``min(1, C / (norm + 1e-6))``, the weighted sum. A wrong norm, a wrong factor,
a layer left out of the sum or a layer summed without its factor fails here.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader, TensorDataset

from clients.bookkeeping import (
    BookkeepingGradSampleModule,
    BookkeepingLoss,
    BookkeepingPrivacyEngine,
    bookkeeping_supported,
    conv2d_grad_sample,
    group_norm_grad_sample,
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


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("keep_limit", [1 << 24, 0], ids=["kept-per-example", "recomputed"])
def test_either_loss_reduction_gives_the_clipped_sums_without_module_backward_hooks(
    reduction: str, keep_limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mean's factor n is applied to the norms and factors, not to the output
    gradients: both reductions must give the same clipped sums, and no layer may carry a
    module backward hook (they wrap every layer's output in extra autograd functions)."""
    monkeypatch.setattr("clients.bookkeeping.KEEP_LIMIT", keep_limit)
    model = build_model("cnn", (1, 28, 28), 3, seed=0)
    x, y = _batch((1, 28, 28), 16, 3)
    expected, _, _ = _reference(copy.deepcopy(model), x, y)
    engine = BookkeepingPrivacyEngine(accountant="rdp")
    module, _, criterion, _ = engine.make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        criterion=nn.CrossEntropyLoss(reduction=reduction),
        data_loader=DataLoader(TensorDataset(x, y), batch_size=16),
        noise_multiplier=0.0,
        max_grad_norm=C,
        grad_sample_mode="ghost",
        loss_reduction=reduction,
    )
    assert not any(m._backward_hooks for m in module.modules())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "Full backward hook is firing ..."
        criterion(module(x), y).backward()
    for name, p in module._module.named_parameters():
        scale = float(expected[name].abs().max()) + 1e-12
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-4 * scale)


def test_group_norm_samples_equal_opacus_samples() -> None:
    layer = nn.GroupNorm(4, 8)
    nn.init.normal_(layer.weight)
    gen = torch.Generator().manual_seed(3)
    x, g = torch.randn(5, 8, 6, 7, generator=gen), torch.randn(5, 8, 6, 7, generator=gen)
    opacus = BookkeepingGradSampleModule.GRAD_SAMPLERS[nn.GroupNorm](layer, [x], g)
    mine = group_norm_grad_sample(layer, [x], g)
    assert mine.keys() == opacus.keys() == {layer.weight, layer.bias}
    for p in mine:
        torch.testing.assert_close(mine[p], opacus[p], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "layout",
    [
        {"in_channels": 16, "out_channels": 32, "kernel_size": 3, "padding": 1},
        {
            "in_channels": 16,
            "out_channels": 8,
            "kernel_size": 3,
            "stride": 2,
            "padding": (1, 0),
            "dilation": 2,
            "groups": 2,
            "bias": False,
        },
        {"in_channels": 8, "out_channels": 4, "kernel_size": (3, 5), "padding": 2},
        {"in_channels": 3, "out_channels": 4, "kernel_size": 3},  # few channels: Opacus'
        {"in_channels": 8, "out_channels": 4, "kernel_size": 3, "padding": "same"},
    ],
    ids=["cnn-conv2", "strided-dilated-grouped", "rectangular", "three-channels", "same"],
)
def test_convolution_samples_equal_opacus_samples(layout: dict) -> None:
    layer = nn.Conv2d(**layout)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, layout["in_channels"], 13, 11, generator=gen)
    with torch.no_grad():
        g = torch.randn(layer(x).shape, generator=gen)
    opacus = BookkeepingGradSampleModule.GRAD_SAMPLERS[nn.Conv2d](layer, [x], g)
    mine = conv2d_grad_sample(layer, [x], g)
    assert mine.keys() == opacus.keys()
    for p in mine:
        torch.testing.assert_close(mine[p], opacus[p], rtol=1e-5, atol=1e-5)


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


def test_a_layer_output_changed_in_place_is_refused() -> None:
    # autograd would return the gradient of the modified tensor, not of the layer's output:
    # per-example norms from it would be wrong, so the step must not run
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(16, 2))
    x = torch.rand(8, 1, 4, 4)
    private = _one_pass(model, x)
    with pytest.raises(RuntimeError, match="Conv2d was modified in place"):
        private.criterion(private.model(x), torch.zeros(8, dtype=torch.long)).backward()
    out_of_place = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2))
    private = _one_pass(out_of_place, x)
    private.criterion(private.model(x), torch.zeros(8, dtype=torch.long)).backward()
