"""The batched tensor dataset gives the training loaders the very batches they had.

:class:`clients.batched.BatchedTensorDataset` gathers a batch with one indexing per tensor
instead of one example at a time; every loader the client builds over it — shuffled
(non-private), Opacus' Poisson loader (empty batches included), the public add/remove
schedule and the CSPRNG sampler — must yield the same tensors as over a ``TensorDataset``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
import torch
from client_harness import seeded_private, simulated_round
from opacus.data_loader import DPDataLoader
from torch.utils.data import DataLoader, TensorDataset

from clients.batched import BatchedTensorDataset, StackedSamples, collate_stacked
from fedsim.config import from_dict
from fedsim.models import build_model

N = 23


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(N, 1, 4, 4, generator=gen), torch.randint(0, 3, (N,), generator=gen)


def _both(make: Callable[[DataLoader], Iterable[list[torch.Tensor]]], **loader: object) -> None:
    """``make`` applied to a plain and to a batched loader over the same data yields the same
    batches: values, dtypes, shapes and layouts."""
    x, y = _data()
    plain = DataLoader(TensorDataset(x, y), generator=torch.Generator().manual_seed(3), **loader)  # type: ignore[arg-type]
    batched = DataLoader(
        BatchedTensorDataset(x, y),
        generator=torch.Generator().manual_seed(3),
        collate_fn=collate_stacked,
        **loader,  # type: ignore[arg-type]
    )
    expected, got = list(make(plain)), list(make(batched))
    assert len(got) == len(expected) > 1
    for want, have in zip(expected, got, strict=True):
        assert isinstance(have, list) and len(have) == len(want) == 2
        for a, b in zip(want, have, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
            assert torch.equal(a, b)


def test_shuffled_batches_are_the_same() -> None:
    _both(lambda loader: loader, batch_size=5, shuffle=True)


def test_poisson_batches_are_the_same_empty_ones_included() -> None:
    def poisson(loader: DataLoader) -> list[list[torch.Tensor]]:
        dp = DPDataLoader.from_data_loader(loader)  # rate 1/N: ~36% of batches are empty
        return [batch for _ in range(4) for batch in dp]

    _both(poisson, batch_size=1)
    x, y = _data()
    dp = DPDataLoader.from_data_loader(
        DataLoader(
            BatchedTensorDataset(x, y),
            batch_size=1,
            collate_fn=collate_stacked,
            generator=torch.Generator().manual_seed(3),
        )
    )
    sizes = [len(b[0]) for _ in range(4) for b in dp]
    assert 0 in sizes and max(sizes) > 1  # the comparison above met empty and larger batches


def _private_loader(loader: DataLoader, **kwargs: object) -> DataLoader:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    loader_out: DataLoader = seeded_private(model, loader, **kwargs).loader
    return loader_out


def test_public_schedule_batches_are_the_same() -> None:
    _both(lambda loader: _private_loader(loader, steps_per_epoch=9), batch_size=4)


def test_secure_sampler_keeps_the_batched_gathering() -> None:
    """The CSPRNG's batches cannot be compared with another run's; each must be the rows
    of the data it claims, gathered by the batched dataset."""
    x, y = _data()
    loader = DataLoader(
        BatchedTensorDataset(x, y),
        batch_size=4,
        collate_fn=collate_stacked,
        generator=torch.Generator().manual_seed(3),
    )
    secure = _private_loader(loader, secure=True)
    rows = {tuple(r.flatten().tolist()): int(label) for r, label in zip(x, y, strict=True)}
    seen = 0
    for bx, by in secure:
        for r, label in zip(bx, by, strict=True):
            assert rows[tuple(r.flatten().tolist())] == int(label)
            seen += 1
    assert seen > 0


def test_stacked_samples_are_a_sequence_of_examples() -> None:
    """Whoever iterates a batch as ``__getitems__``'s list of samples sees the examples."""
    x, y = _data()
    batch = BatchedTensorDataset(x, y).__getitems__([4, 0, 4])
    assert isinstance(batch, StackedSamples) and len(batch) == 3
    assert torch.equal(batch[0][0], x[4]) and int(batch[1][1]) == int(y[0])
    assert [int(s[1]) for s in batch] == [int(y[4]), int(y[0]), int(y[4])]
    assert len(batch[1:]) == 2
    empty = BatchedTensorDataset(x, y).__getitems__([])
    assert len(empty) == 0 and empty.tensors[0].shape == (0, 1, 4, 4)
    assert collate_stacked([(x[1], y[1]), (x[2], y[2])])[0].shape == (2, 1, 4, 4)


@pytest.mark.parametrize("secure", [False, True])
def test_a_local_round_trains_on_the_batched_loader(
    secure: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's training loader is built over the batched dataset (so the speed-up is
    not silently lost), in both noise modes."""
    import clients.local_round as local_round

    built: list[DataLoader] = []
    original = local_round.make_private

    def spy(model: torch.nn.Module, optimizer: object, loader: DataLoader, **kw: object) -> object:
        built.append(loader)
        return original(model, optimizer, loader, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(local_round, "make_private", spy)
    cfg = from_dict(
        {
            "data": {"name": "pneumoniamnist", "num_clients": 20},
            "model": {"name": "mlp"},
            "client": {"batch_size": 32, "local_epochs": 1},
            "dp": {"epsilon": 4.0, "delta": 1e-4, "secure_rng": secure},
        }
    )
    state = build_model("mlp", (1, 28, 28), 2, seed=0).state_dict()
    outcome = simulated_round(cfg, 0, state, 1)
    assert outcome.status == "ok"
    assert len(built) == 1
    assert isinstance(built[0].dataset, BatchedTensorDataset)
    assert built[0].collate_fn is collate_stacked
