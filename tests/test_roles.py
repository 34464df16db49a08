"""Roles: reproducible assignment, corrupted data, hostile uploads (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.config import MaliciousConfig, RolesConfig, UnreliableConfig, from_dict
from fedsim.data import Split
from fedsim.roles import (
    assign_roles,
    client_data,
    client_role,
    client_upload,
    corrupt_split,
    malicious_state,
)
from fedsim.seeding import numpy_rng, torch_generator


def _roles(unrel: float, mal: float) -> RolesConfig:
    return RolesConfig(UnreliableConfig(fraction=unrel), MaliciousConfig(fraction=mal))


def test_assign_roles_counts_and_reproducibility() -> None:
    roles = assign_roles(20, _roles(0.5, 0.2), seed=4)
    assert roles.count("malicious") == 4 and roles.count("unreliable") == 10
    assert roles.count("honest") == 6
    assert roles == assign_roles(20, _roles(0.5, 0.2), seed=4)
    assert roles != assign_roles(20, _roles(0.5, 0.2), seed=5)
    assert assign_roles(7, RolesConfig(), seed=0) == ("honest",) * 7
    # rounding never over-assigns: 0.5 + 0.5 of 3 clients
    three = assign_roles(3, _roles(0.5, 0.5), seed=0)
    assert three.count("malicious") == 2 and three.count("unreliable") == 1


def _split(n: int = 10) -> Split:
    x = np.full((n, 1, 4, 4), 0.5, dtype=np.float32)
    return Split(x, (np.arange(n) % 2).astype(np.int64))


def test_corrupt_split_noise_replaces_exactly_a_fraction() -> None:
    split = _split(10)
    out = corrupt_split(split, 0.4, "noise", numpy_rng(0, "c"))
    changed = np.any(out.x != 0.5, axis=(1, 2, 3))
    assert changed.sum() == 4
    assert out.x.min() >= 0.0 and out.x.max() <= 1.0 and out.x.dtype == np.float32
    assert np.array_equal(out.y, split.y)
    assert np.all(split.x == 0.5)  # input untouched
    same = corrupt_split(split, 0.4, "noise", numpy_rng(0, "c"))
    assert np.array_equal(out.x, same.x)


def test_corrupt_split_label_flip() -> None:
    split = _split(10)
    out = corrupt_split(split, 0.5, "label_flip", numpy_rng(0, "c"), num_classes=2)
    flipped = out.y != split.y
    assert flipped.sum() == 5 and np.array_equal(out.y[flipped], 1 - split.y[flipped])
    assert np.array_equal(out.x, split.x)
    with pytest.raises(ValueError):
        corrupt_split(split, 0.5, "label_flip", numpy_rng(0, "c"))
    assert np.array_equal(corrupt_split(split, 0.0, "noise", numpy_rng(0, "c")).x, split.x)


def test_malicious_states() -> None:
    g = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    w = {"w": torch.tensor([1.5, 1.0]), "n": torch.tensor(4)}
    flip = malicious_state(g, w, "sign_flip", 1.0, torch_generator(0, "m"))
    assert flip["w"].tolist() == [0.5, 3.0] and int(flip["n"]) == 4
    scaled = malicious_state(g, w, "scale", 10.0, torch_generator(0, "m"))
    assert scaled["w"].tolist() == [6.0, -8.0]
    rnd = malicious_state(g, w, "random", 1.0, torch_generator(0, "m"))
    assert rnd["w"].shape == (2,) and bool(((rnd["w"] >= 0) & (rnd["w"] <= 1)).all())
    assert not torch.equal(rnd["w"], w["w"])
    bad = malicious_state(g, w, "nan", 1.0, torch_generator(0, "m"))
    assert not bool(torch.isfinite(bad["w"]).any()) and int(bad["n"]) == 4
    assert torch.isinf(bad["w"]).sum() == 1 and torch.isnan(bad["w"]).sum() == 1


def test_client_view_of_roles() -> None:
    cfg = from_dict(
        {
            "dp": {"enabled": False},
            "data": {"num_clients": 4},
            "roles": {"unreliable": {"fraction": 0.25}, "malicious": {"fraction": 0.25}},
        }
    )
    roles = [client_role(cfg, c) for c in range(4)]
    bad = roles.index("unreliable")
    mal = roles.index("malicious")
    honest = roles.index("honest")
    split = _split(8)
    assert client_data(cfg, honest, split, 2) is split
    spoilt = client_data(cfg, bad, split, 2)
    assert np.any(spoilt.x != split.x)
    assert np.array_equal(spoilt.x, client_data(cfg, bad, split, 2).x)  # same every round
    g = {"w": torch.zeros(3)}
    w = {"w": torch.full((3,), 5.0)}
    assert client_upload(cfg, honest, 1, g, w) is w
    up = client_upload(cfg, mal, 1, g, w)
    assert float(up["w"].max()) <= 1.0
