"""Contract, oracle and reproducibility tests for fedsim.models."""

from __future__ import annotations

import copy
import itertools
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus import GradSampleModule, PrivacyEngine
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader, TensorDataset

from fedsim.errors import FedsimError
from fedsim.models import MODELS, build_model, is_dp_compatible
from fedsim.models.pool import FastMaxPool2d

NUM_CLASSES = 3
BATCH = 4

CASES = [
    (name, shape)
    for name in MODELS.names()
    for shape in [(1, 28, 28), (3, 32, 32), *([(1, 8, 8)] if name in ("cnn", "mlp") else [])]
]


def _data(shape: tuple[int, int, int], n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=gen)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    return x, y


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _dp_step(
    model: nn.Module, shape: tuple[int, int, int], clipping: str
) -> tuple[GradSampleModule, list[nn.Parameter]]:
    """Wrap ``model`` with Opacus, run one DP-SGD step, return the wrapped model and params.

    Checks on the way that every per-sample gradient has the batch size as leading dim.
    """
    x, y = _data(shape, 2 * BATCH)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    m = len(_trainable(model))
    max_grad_norm: float | list[float] = 1.0 if clipping == "flat" else [1.0 / math.sqrt(m)] * m
    private, optimizer, loader = PrivacyEngine().make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=max_grad_norm,
        grad_sample_mode="hooks",
        clipping=clipping,
        poisson_sampling=False,  # a fixed batch, so the leading dim is known exactly
        noise_generator=torch.Generator().manual_seed(0),
    )
    assert isinstance(private, GradSampleModule)
    xb, yb = next(iter(loader))
    params = _trainable(private)
    optimizer.zero_grad()
    nn.functional.cross_entropy(private(xb), yb).backward()
    for p in params:
        grad_sample = getattr(p, "grad_sample", None)
        assert grad_sample is not None
        assert grad_sample.shape == (xb.shape[0], *p.shape)
    optimizer.step()
    return private, params


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("name", "shape"), CASES)
def test_model_contract(name: str, shape: tuple[int, int, int]) -> None:
    model = build_model(name, shape, NUM_CLASSES, seed=0)
    x, _ = _data(shape, BATCH)
    assert model(x).shape == (BATCH, NUM_CLASSES)
    assert is_dp_compatible(model) == []
    for module in model.modules():
        assert not isinstance(module, nn.modules.batchnorm._BatchNorm)
        assert getattr(module, "inplace", False) is False

    for clipping in ("flat", "per_layer"):
        fresh = build_model(name, shape, NUM_CLASSES, seed=0)
        before = [p.detach().clone() for p in _trainable(fresh)]
        private, params = _dp_step(fresh, shape, clipping)
        changed = [not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True)]
        assert all(changed), f"{clipping}: some parameters did not move"
        plain = private.to_standard_module()
        assert set(plain.state_dict()) == set(model.state_dict())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_plain_state_dict_after_opacus_has_no_module_prefix() -> None:
    """The right way to get weights back: ``to_standard_module()``, not the wrapper's dict."""
    model = build_model("mlp", (1, 8, 8), NUM_CLASSES, seed=0)
    keys = set(model.state_dict())
    private, _ = _dp_step(model, (1, 8, 8), "flat")
    assert all(k.startswith("_module.") for k in private.state_dict())  # the wrong way
    plain = private.to_standard_module()  # removes Opacus' hooks and grad samples
    state = plain.state_dict()
    assert set(state) == keys
    assert not any(k.startswith("_module.") for k in state)
    assert all(not hasattr(p, "grad_sample") or p.grad_sample is None for p in plain.parameters())
    fresh = build_model("mlp", (1, 8, 8), NUM_CLASSES, seed=1)
    fresh.load_state_dict(state)  # strict: the keys match a freshly built model
    # Hooks are gone, so the same module can be wrapped again next round.
    _dp_step(plain, (1, 8, 8), "flat")


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize("name", MODELS.names())
def test_per_sample_gradients_match_one_at_a_time_loop(name: str) -> None:
    shape = (1, 8, 8)
    model = build_model(name, shape, NUM_CLASSES, seed=3)
    reference = copy.deepcopy(model)
    x, y = _data(shape, 4, seed=1)

    gsm = GradSampleModule(model, loss_reduction="sum")
    nn.functional.cross_entropy(gsm(x), y, reduction="sum").backward()
    params = dict(gsm._module.named_parameters())

    for i in range(x.shape[0]):
        reference.zero_grad()
        nn.functional.cross_entropy(reference(x[i : i + 1]), y[i : i + 1]).backward()
        for pname, p in reference.named_parameters():
            assert p.grad is not None
            assert torch.allclose(params[pname].grad_sample[i], p.grad, atol=1e-5), (name, pname)
    gsm.to_standard_module()


@pytest.mark.parametrize("name", MODELS.names())
def test_seeded_build_is_reproducible_and_leaves_global_rng_alone(name: str) -> None:
    shape = (1, 8, 8)
    rng_before = torch.random.get_rng_state()
    a = build_model(name, shape, NUM_CLASSES, seed=1).state_dict()
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    b = build_model(name, shape, NUM_CLASSES, seed=1).state_dict()
    c = build_model(name, shape, NUM_CLASSES, seed=2).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_unseeded_build_draws_from_global_rng() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        a = build_model("mlp", (1, 8, 8), NUM_CLASSES).state_dict()
        torch.manual_seed(7)
        b = build_model("mlp", (1, 8, 8), NUM_CLASSES).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(FedsimError, match=re.escape("model.name")) as info:
        build_model("vgg", (1, 28, 28), 10)
    for name in ("cnn", "mlp", "resnet9", "resnet18"):
        assert name in str(info.value)
    assert "'vgg'" in str(info.value)


@pytest.mark.parametrize(
    ("name", "shape", "classes", "seed", "field"),
    [
        ("cnn", (1, 28), 10, None, "model.input_shape"),
        ("cnn", (0, 28, 28), 10, None, "model.input_shape"),
        ("cnn", (1, 28.0, 28), 10, None, "model.input_shape"),
        ("cnn", (1, 3, 3), 10, None, "model.input_shape"),
        ("resnet9", (1, 7, 7), 10, None, "model.input_shape"),
        ("mlp", (1, 8, 8), 0, None, "model.num_classes"),
        ("mlp", (1, 8, 8), 2, -1, "model.seed"),
    ],
)
def test_bad_arguments_name_the_field(
    name: str, shape: tuple[int, ...], classes: int, seed: int | None, field: str
) -> None:
    with pytest.raises(FedsimError, match=re.escape(field)):
        build_model(name, shape, classes, seed=seed)  # type: ignore[arg-type]


def test_input_shape_may_be_a_list() -> None:
    model = build_model("cnn", [1, 8, 8], NUM_CLASSES, seed=0)  # type: ignore[arg-type]
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, NUM_CLASSES)


def test_is_dp_compatible_reports_problems() -> None:
    bad = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    assert is_dp_compatible(bad)
    assert is_dp_compatible(build_model("cnn", (1, 8, 8), 2, seed=0).eval())


@settings(max_examples=15, deadline=None)
@given(
    name=st.sampled_from(["cnn", "mlp"]),
    channels=st.integers(1, 4),
    height=st.integers(4, 40),
    width=st.integers(4, 40),
    classes=st.integers(1, 12),
)
def test_small_models_adapt_to_any_shape(
    name: str, channels: int, height: int, width: int, classes: int
) -> None:
    model = build_model(name, (channels, height, width), classes, seed=0)
    assert model(torch.rand(2, channels, height, width)).shape == (2, classes)


def _pool_pair(x: torch.Tensor, kernel: int) -> tuple[torch.Tensor, ...]:
    """Outputs and input gradients of FastMaxPool2d and nn.MaxPool2d on copies of ``x``."""
    fast_in, ref_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    fast, ref = FastMaxPool2d(kernel)(fast_in), nn.MaxPool2d(kernel)(ref_in)
    upstream = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    fast.backward(upstream)
    ref.backward(upstream)
    assert fast_in.grad is not None and ref_in.grad is not None
    return fast, ref, fast_in.grad, ref_in.grad


@pytest.mark.parametrize(
    ("shape", "kernel"),
    [
        ((64, 16, 28, 28), 2),
        ((5, 3, 7, 9), 2),
        ((4, 2, 10, 11), 3),
        ((4, 8, 2, 2), 2),  # a 1x1 output: its strides are ambiguous
        ((0, 16, 28, 28), 2),
    ],
)
def test_fast_max_pool_is_bit_identical_to_max_pool_ties_included(
    shape: tuple[int, ...], kernel: int
) -> None:
    """Same values, same output layout and the same gradient element for element, also where
    a window holds several equal maxima (tanh saturates to exactly ±1) and sizes are odd."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    if shape[0]:
        x[:, :, 0, 0] = x[:, :, 0, 1]  # a tie inside the first window
        x[:, :, 2:4, 2:4] = 1.0  # a whole window of equal values
        x[:, :, -1, -1] = 100.0  # in the row/column that flooring drops
    fast, ref, fast_grad, ref_grad = _pool_pair(x, kernel)
    assert fast.shape == ref.shape and fast.stride() == ref.stride()
    assert fast_grad.stride() == ref_grad.stride()
    assert torch.equal(fast, ref)
    assert torch.equal(fast_grad, ref_grad)


def test_fast_max_pool_falls_back_for_channels_last_and_under_torch_func() -> None:
    """A channels-last batch keeps its layout (nn.MaxPool2d's behaviour), and per-example
    gradients through the CNN by torch.func (VoG/PLIS) equal those of an nn.MaxPool2d CNN."""
    x = torch.randn(3, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    out = FastMaxPool2d(2)(x)
    assert torch.equal(out, nn.MaxPool2d(2)(x))
    assert out.is_contiguous(memory_format=torch.channels_last)

    model = build_model("cnn", (1, 28, 28), NUM_CLASSES, seed=0)
    reference = copy.deepcopy(model)
    features = reference.get_submodule("features")
    assert isinstance(features, nn.Sequential)
    for i, layer in enumerate(features):
        if isinstance(layer, FastMaxPool2d):
            features[i] = nn.MaxPool2d(layer.kernel_size)
    assert any(isinstance(m, FastMaxPool2d) for m in model.modules())
    xs, ys = _data((1, 28, 28), 6)

    def per_example(net: nn.Module) -> dict[str, torch.Tensor]:
        params = {k: v.detach() for k, v in net.named_parameters()}

        def loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = functional_call(net, p, (x.unsqueeze(0),))
            return nn.functional.cross_entropy(logits, y.unsqueeze(0))

        result: dict[str, torch.Tensor] = vmap(grad(loss), in_dims=(None, 0, 0))(params, xs, ys)
        return result

    fast, ref = per_example(model), per_example(reference)
    for name in ref:
        torch.testing.assert_close(fast[name], ref[name], rtol=0, atol=0)


def _tanh_then_pool(model: nn.Module) -> nn.Module:
    """``model`` (the CNN) with each block in the written order conv → GN → tanh → pool."""
    reference = copy.deepcopy(model)
    features = reference.get_submodule("features")
    assert isinstance(features, nn.Sequential)
    layers = list(features)
    for i, layer in enumerate(layers[:-1]):
        if isinstance(layer, FastMaxPool2d):
            assert isinstance(layers[i + 1], nn.Tanh)
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 9, 11)])
def test_cnn_pools_before_tanh_and_equals_the_written_order(shape: tuple[int, int, int]) -> None:
    """The CNN pools before each tanh (tanh on a quarter of the values): outputs and
    parameter gradients equal those of conv → GN → tanh → pool with the same weights."""
    model = build_model("cnn", shape, NUM_CLASSES, seed=0)
    features = model.get_submodule("features")
    kinds = [type(m) for m in features]
    pairs = list(itertools.pairwise(kinds))
    assert pairs.count((FastMaxPool2d, nn.Tanh)) == kinds.count(FastMaxPool2d) == 2
    reference = copy.deepcopy(model)
    reference.features = _tanh_then_pool(model)  # type: ignore[assignment]
    x, y = _data(shape, 16, seed=3)
    x = 4 * x  # pre-activations well into tanh's flat tails too
    outputs = []
    for net in (model, reference):
        out = net(x)
        nn.functional.cross_entropy(out, y).backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-6, atol=1e-7)
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_only_fedsims_own_models_skip_the_preflights_opacus_check() -> None:
    """The preflight asks Opacus only about models fedsim does not ship (the contract
    tests validate each shipped one); a model defined elsewhere is not taken for one."""
    from fedsim.models import shipped_with_fedsim

    assert all(shipped_with_fedsim(build_model(n, (1, 28, 28), 2, seed=0)) for n in MODELS.names())
    assert not shipped_with_fedsim(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))

    class Elsewhere(nn.Module):
        pass

    assert not shipped_with_fedsim(Elsewhere())
