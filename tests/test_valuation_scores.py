"""Oracle tests of the per-sample scores in fedsim.valuation.scores."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from fedsim.models import build_model
from fedsim.valuation import (
    METRICS,
    classwise_minmax,
    grad_norm_scores,
    loss_scores,
    plis,
    true_logit_input_grad,
    vog,
)


def _batch(
    n: int, shape: tuple[int, int, int], classes: int, seed: int = 0
) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    return x, y


MODEL_CASES = [("mlp", (1, 8, 8)), ("cnn", (1, 8, 8)), ("resnet9", (3, 8, 8))]


@pytest.mark.parametrize(("name", "shape"), MODEL_CASES)
@pytest.mark.parametrize(
    "fn", [true_logit_input_grad, plis, loss_scores, grad_norm_scores], ids=lambda f: f.__name__
)
def test_batched_equals_one_at_a_time(name: str, shape: tuple[int, int, int], fn) -> None:  # type: ignore[no-untyped-def]
    model = build_model(name, shape, 3, seed=1)
    x, y = _batch(4, shape, 3)
    batched = fn(model, x, y)
    looped = torch.cat([fn(model, x[i : i + 1], y[i : i + 1]) for i in range(len(x))])
    assert batched.shape[0] == 4
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_vog_batched_equals_loop_over_checkpoints() -> None:
    models = [build_model("cnn", (1, 8, 8), 3, seed=s) for s in range(3)]
    x, y = _batch(5, (1, 8, 8), 3)
    batched = vog([true_logit_input_grad(m, x, y) for m in models])
    looped = torch.cat(
        [
            vog([true_logit_input_grad(m, x[i : i + 1], y[i : i + 1]) for m in models])
            for i in range(5)
        ]
    )
    torch.testing.assert_close(batched, looped)


def test_vog_hand_computed() -> None:
    g1 = torch.zeros(1, 2, 1, 2)
    g2 = torch.zeros(1, 2, 1, 2)
    g2[0, 0, 0, 0] = 2.0  # channel mean at pixel (0, 0): 0 then 1 -> std 0.5; other pixel 0
    assert vog([g1, g2]).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="at least 2"):
        vog([g1])


class ToyTanh(nn.Module):
    """logit_1 = tanh(scale * w·x) = -logit_0: a decision boundary at w·x = 0."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -1.0]) * scale)

    def forward(self, x: Tensor) -> Tensor:
        z = torch.tanh(x.flatten(1) @ self.w)
        return torch.stack([-z, z], dim=1)


def test_vog_far_from_boundary_is_lower_than_near() -> None:
    # Training sharpens the boundary (the weight scale grows over checkpoints): the input
    # gradient of a sample near the boundary keeps changing, one far away saturates.
    checkpoints = [ToyTanh(scale) for scale in (0.5, 1.0, 2.0, 4.0, 8.0)]
    x = torch.tensor([[2.0, -2.0], [0.05, 0.0], [-2.0, 2.0]]).view(3, 1, 1, 2)
    y = torch.tensor([1, 1, 0])
    scores = vog([true_logit_input_grad(m, x, y) for m in checkpoints])
    assert scores[0] < scores[1]
    assert scores[2] < scores[1]


def test_vog_trained_toy_boundary() -> None:
    # A small tanh MLP trained on two Gaussian blobs; checkpoints at the end of each epoch.
    gen = torch.Generator().manual_seed(0)
    n = 200
    centers = torch.tensor([[-1.5, 0.0], [1.5, 0.0]])
    y = torch.arange(n) % 2
    pts = centers[y] + 0.5 * torch.randn(n, 2, generator=gen)
    x = pts.view(n, 1, 1, 2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    probes = torch.tensor([[-4.0, 0.0], [0.0, 0.0], [4.0, 0.0]]).view(3, 1, 1, 2)
    probe_y = torch.tensor([0, 0, 1])
    grads = []
    for _ in range(8):
        for i in range(0, n, 20):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 20]), y[i : i + 20]).backward()
            opt.step()
        grads.append(true_logit_input_grad(model, probes, probe_y))
    scores = vog(grads)
    assert scores[1] > scores[0]
    assert scores[1] > scores[2]


def _privacy_loss(model: nn.Module, x: Tensor, y: Tensor, sigma: float) -> Tensor:
    model.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, [p for p in model.parameters()])
    return sum((g**2).sum() for g in grads) / sigma**2  # type: ignore[return-value]


def test_plis_matches_finite_differences() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(2 * 3 * 4, 6), nn.Tanh(), nn.Linear(6, 3)
    ).double()
    x = torch.rand(1, 2, 3, 4, dtype=torch.float64)
    y = torch.tensor([2])
    sigma, h = 0.7, 1e-5
    fd = torch.zeros_like(x)
    for idx in torch.cartesian_prod(*[torch.arange(s) for s in x.shape[1:]]):
        e = torch.zeros_like(x)
        e[(0, *idx.tolist())] = h
        fd[(0, *idx.tolist())] = (
            _privacy_loss(model, x + e, y, sigma) - _privacy_loss(model, x - e, y, sigma)
        ) / (2 * h)
    expected = torch.linalg.matrix_norm(fd[0].mean(dim=0), ord=2)
    got = plis(model, x, y, sigma=sigma)
    assert got.shape == (1,)
    torch.testing.assert_close(got[0], expected, rtol=1e-6, atol=1e-9)
    # sigma only rescales
    torch.testing.assert_close(plis(model, x, y, sigma=1.0) * (1 / sigma**2), got)


def test_grad_norm_and_loss_match_autograd() -> None:
    model = build_model("cnn", (1, 8, 8), 3, seed=2)
    x, y = _batch(3, (1, 8, 8), 3)
    for i in range(3):
        loss = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, list(model.parameters()))
        norm = torch.sqrt(sum((g**2).sum() for g in grads))  # type: ignore[arg-type]
        torch.testing.assert_close(grad_norm_scores(model, x, y)[i], norm, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(loss_scores(model, x, y)[i], loss.detach())


def test_classwise_minmax_properties() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(50, generator=gen) * 10 + 3
    labels = torch.randint(0, 3, (50,), generator=gen)
    labels[:3] = torch.tensor([0, 1, 2])
    out = classwise_minmax(scores, labels)
    for c in range(3):
        s, o = scores[labels == c], out[labels == c]
        assert o.min().item() == 0.0 and o.max().item() == pytest.approx(1.0)
        assert torch.equal(torch.argsort(s), torch.argsort(o))  # order kept within class
    # invariant to a positive affine map per class
    torch.testing.assert_close(classwise_minmax(scores * 4 + 7, labels), out)
    # a constant class maps to 0; a singleton class too
    flat = classwise_minmax(torch.tensor([2.0, 2.0, 5.0]), torch.tensor([0, 0, 1]))
    assert flat.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="shape"):
        classwise_minmax(scores, labels[:-1])


def test_metric_names() -> None:
    assert METRICS == ("vog", "plis", "loss", "grad_norm")


def test_bad_batch_shapes_raise() -> None:
    model = build_model("mlp", (1, 4, 4), 2, seed=0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        loss_scores(model, torch.rand(2, 16), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="sigma"):
        plis(model, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), sigma=0.0)


def test_tracker_matches_pure_functions_and_batch_size() -> None:
    import numpy as np

    from fedsim.valuation import ScoreTracker

    x, y = _batch(7, (1, 8, 8), 3, seed=5)
    states = [build_model("cnn", (1, 8, 8), 3, seed=s).state_dict() for s in range(3)]
    small = ScoreTracker("cnn", (1, 8, 8), 3, x.numpy(), y.numpy(), batch_size=3, sigma=2.0)
    big = ScoreTracker("cnn", (1, 8, 8), 3, x, y, batch_size=100, sigma=2.0)
    for t in (small, big):
        for s in states:
            t.record_checkpoint(s)
    models = []
    for s in states:
        m = build_model("cnn", (1, 8, 8), 3)
        m.load_state_dict(s)
        models.append(m)
    expected_vog = vog([true_logit_input_grad(m, x, y) for m in models])
    torch.testing.assert_close(small.vog(), expected_vog, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(big.vog(), expected_vog, rtol=1e-4, atol=1e-7)
    last = models[-1]
    for metric, fn in [
        ("plis", lambda m, a, b: plis(m, a, b, sigma=2.0)),
        ("loss", loss_scores),
        ("grad_norm", grad_norm_scores),
    ]:
        torch.testing.assert_close(
            small.scores(metric, states[-1]), fn(last, x, y), rtol=1e-4, atol=1e-6
        )
    assert set(big.all_scores(states[0])) == set(METRICS)
    # the accumulator survives a round trip through numpy arrays
    fresh = ScoreTracker("cnn", (1, 8, 8), 3, x, y)
    fresh.load_vog_state({k: np.array(v) for k, v in small.vog_state().items()})
    assert fresh.num_checkpoints == 3
    torch.testing.assert_close(fresh.vog(), small.vog())
    with pytest.raises(ValueError, match="plain state_dict"):
        fresh.load({"_module." + k: v for k, v in states[0].items()})
    with pytest.raises(ValueError, match="unknown metric"):
        fresh.scores("shapley")
    fresh.reset_checkpoints()
    with pytest.raises(ValueError, match="at least 2"):
        fresh.vog()
