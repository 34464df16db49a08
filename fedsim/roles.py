"""Participants that hurt the federation: role assignment, bad data, hostile uploads.

Adversarial clients (PSREval train-time attackers) are assigned here; what they do is in
:mod:`fedsim.robustness.training`.

SecProbe (Zhao et al., IEEE TIFS 2020) studies *unreliable* participants, a fraction P of
whose samples are replaced by uniform noise in the data range, and *malicious*
participants that upload random parameters uniform in [0, 1]. fedsim adds a label-flip
variant of unreliable data and sign-flipped / scaled malicious updates. The kinds are
registries of small pure functions in :mod:`fedsim.attackers`.

All functions are pure; randomness comes from the seed or a passed-in generator.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch

from fedsim.attackers import MALICIOUS_KINDS, UNRELIABLE_KINDS
from fedsim.config import Config, MaliciousKind, RolesConfig, UnreliableKind
from fedsim.data import Split
from fedsim.seeding import numpy_rng, torch_generator

Role = Literal["honest", "unreliable", "malicious", "adversarial"]


def _count(fraction: float, n: int) -> int:
    return int(np.floor(fraction * n + 0.5))  # round half up, not to even


@functools.lru_cache(maxsize=8)
def assign_roles(num_clients: int, roles: RolesConfig, seed: int) -> tuple[Role, ...]:
    """The role of every client id ``0..num_clients-1``, reproducible from ``seed``.

    ``round(fraction · N)`` clients are malicious, (of the rest) ``round(fraction · N)``
    unreliable and (of the rest) ``round(fraction · N)`` adversarial (PSREval's train-time
    attackers, :mod:`fedsim.robustness.training`), chosen by one seeded permutation of the
    ids. Adding adversarial clients never changes who is malicious or unreliable.
    """
    if num_clients < 0:
        raise ValueError(f"num_clients must be >= 0; got {num_clients}")
    n_mal = _count(roles.malicious.fraction, num_clients)
    n_unrel = min(_count(roles.unreliable.fraction, num_clients), num_clients - n_mal)
    n_adv = min(_count(roles.adversarial.fraction, num_clients), num_clients - n_mal - n_unrel)
    order = numpy_rng(seed, "roles").permutation(num_clients)
    out: list[Role] = ["honest"] * num_clients
    for cid in order[:n_mal]:
        out[int(cid)] = "malicious"
    for cid in order[n_mal : n_mal + n_unrel]:
        out[int(cid)] = "unreliable"
    for cid in order[n_mal + n_unrel : n_mal + n_unrel + n_adv]:
        out[int(cid)] = "adversarial"
    return tuple(out)


def corrupt_split(
    split: Split,
    noise_fraction: float,
    kind: UnreliableKind,
    rng: np.random.Generator,
    num_classes: int | None = None,
) -> Split:
    """A copy of ``split`` where ``round(noise_fraction · n)`` random samples are spoilt.

    ``kind`` names a data corruption of :data:`fedsim.attackers.UNRELIABLE_KINDS`
    (``noise``: uniform-noise images; ``label_flip``: flipped labels, needs
    ``num_classes``).
    """
    if not 0.0 <= noise_fraction <= 1.0:
        raise ValueError(f"noise_fraction must be in [0, 1]; got {noise_fraction}")
    if kind not in UNRELIABLE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(UNRELIABLE_KINDS.names())}; got {kind!r}")
    n = len(split)
    idx = rng.choice(n, size=_count(noise_fraction, n), replace=False)
    x, y = UNRELIABLE_KINDS.get(kind)(split.x, split.y, idx, rng, num_classes)
    return Split(x, y)


def malicious_state(
    global_state: Mapping[str, torch.Tensor],
    local_state: Mapping[str, torch.Tensor],
    kind: MaliciousKind,
    scale: float,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """What a malicious client uploads instead of its trained ``local_state``.

    Only floating-point tensors are changed (integer buffers such as BatchNorm's
    ``num_batches_tracked`` are uploaded as trained). ``kind`` names a hostile upload of
    :data:`fedsim.attackers.MALICIOUS_KINDS` (``random``, ``sign_flip``, ``scale``,
    ``nan``), applied to each floating-point tensor of the global and the trained
    parameters; ``scale`` is the amplification of the ``scale`` kind.
    """
    if kind not in MALICIOUS_KINDS:
        raise ValueError(f"kind must be one of {', '.join(MALICIOUS_KINDS.names())}; got {kind!r}")
    upload = MALICIOUS_KINDS.get(kind)
    out: dict[str, torch.Tensor] = {}
    for name, w in local_state.items():
        if not torch.is_floating_point(w):
            out[name] = w.clone()
            continue
        out[name] = upload(global_state[name].to(w.dtype), w, scale, generator)
    return out


# ------------------------------------------------------------------ a client's own view


def client_role(cfg: Config, client_id: int) -> Role:
    """The role of ``client_id`` in the run ``cfg``."""
    return assign_roles(cfg.data.num_clients, cfg.roles, cfg.seed)[client_id]


def client_data(cfg: Config, client_id: int, split: Split, num_classes: int) -> Split:
    """The data a client trains on: spoilt for unreliable clients, the same every round.

    With ``valuation.graded_corruption`` client ``i`` has that list's ``i``-th fraction
    corrupted (``valuation.corruption_kind``), the ground truth of valuation experiments.
    """
    graded = cfg.valuation.graded_corruption
    if graded is not None:
        rng = numpy_rng(cfg.seed, "graded-corruption", client_id)
        kind = cfg.valuation.corruption_kind
        return corrupt_split(split, graded[client_id], kind, rng, num_classes)
    if client_role(cfg, client_id) != "unreliable":
        return split
    unrel = cfg.roles.unreliable
    rng = numpy_rng(cfg.seed, "unreliable-data", client_id)
    return corrupt_split(split, unrel.noise_fraction, unrel.kind, rng, num_classes)


def client_upload(
    cfg: Config,
    client_id: int,
    server_round: int,
    global_state: Mapping[str, torch.Tensor],
    local_state: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """What a client uploads: its trained state, or a hostile one if it is malicious."""
    if client_role(cfg, client_id) != "malicious":
        return local_state
    mal = cfg.roles.malicious
    gen = torch_generator(cfg.seed, "malicious-upload", client_id, server_round)
    return malicious_state(global_state, local_state, mal.kind, mal.scale, gen)


def clean_fraction(cfg: Config, client_id: int, num_examples: int) -> float:
    """Fraction of ``client_id``'s ``num_examples`` samples that :func:`client_data` left
    intact (1.0 for honest and malicious clients, whose data is clean)."""
    graded = cfg.valuation.graded_corruption
    if graded is not None:
        fraction = graded[client_id]
    elif client_role(cfg, client_id) == "unreliable":
        fraction = cfg.roles.unreliable.noise_fraction
    else:
        return 1.0
    if num_examples <= 0:
        return 1.0
    return 1.0 - _count(fraction, num_examples) / num_examples
