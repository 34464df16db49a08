"""Tests of fedsim.data.partition: properties, the NumPy replicas, skew and errors."""

from __future__ import annotations

import logging

import datasets
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.data import partition_indices
from fedsim.errors import FedsimError

SCHEMES = ("iid", "dirichlet", "shards")


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, int, str, int, float, int]:
    """(labels, num_clients, scheme, shards_per_client, alpha, seed) that are valid."""
    scheme = draw(st.sampled_from(SCHEMES))
    spc = draw(st.integers(1, 3)) if scheme == "shards" else 2
    # shards need at least one sample per shard: n >= num_clients * spc >= spc
    n = draw(st.integers(spc if scheme == "shards" else 1, 300))
    num_classes = draw(st.integers(1, 6))
    labels = np.array(draw(st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n)))
    num_clients = draw(st.integers(1, max(1, n // spc)))
    alpha = draw(st.sampled_from([0.05, 0.5, 1.0, 10.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    return labels, num_clients, scheme, spc, alpha, seed


def check_partitions(
    parts: list[np.ndarray], labels: np.ndarray, k: int, scheme: str, spc: int = 2
) -> None:
    n = len(labels)
    assert len(parts) == k
    for p in parts:
        assert p.dtype == np.int64 and p.ndim == 1
        assert np.all(np.diff(p) > 0)  # sorted, no repeats
        assert p.size == 0 or (p[0] >= 0 and p[-1] < n)
    union = np.concatenate(parts)
    assert len(np.unique(union)) == len(union)  # disjoint
    if scheme in ("iid", "dirichlet"):
        assert len(union) == n  # covers the pool
        assert min(len(p) for p in parts) >= 1  # min_partition_size=1
    if scheme == "iid":
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1
    if scheme == "shards":
        assert len({len(p) for p in parts}) == 1  # equal shards, equal count per client
        assert n - len(union) < k * spc  # fewer than num_clients * shards_per_client dropped


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(problems())
def test_properties_and_reproducibility(
    problem: tuple[np.ndarray, int, str, int, float, int],
) -> None:
    labels, k, scheme, spc, alpha, seed = problem
    kwargs = {"alpha": alpha, "shards_per_client": spc, "seed": seed}
    parts = partition_indices(labels, k, scheme, **kwargs)  # type: ignore[arg-type]
    check_partitions(parts, labels, k, scheme, spc)
    if scheme == "shards":
        shard_size = len(labels) // (k * spc)
        assert all(len(p) == spc * shard_size for p in parts)
    again = partition_indices(labels, k, scheme, **kwargs)  # type: ignore[arg-type]
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


@settings(max_examples=40, deadline=None)
@given(problems(), st.integers(0, 2))
def test_numpy_replicas_match_flwr_datasets(
    problem: tuple[np.ndarray, int, str, int, float, int], min_size: int
) -> None:
    labels, k, scheme, spc, alpha, seed = problem
    if scheme == "dirichlet" and k * min_size > len(labels):
        min_size = 0
    kwargs = {"alpha": alpha, "shards_per_client": spc, "seed": seed}
    if scheme == "dirichlet":
        kwargs["min_partition_size"] = min_size
    flwr_parts = partition_indices(
        labels,
        k,
        scheme,  # type: ignore[arg-type]
        engine="flwr-datasets",
        **kwargs,  # type: ignore[arg-type]
    )
    numpy_parts = partition_indices(labels, k, scheme, **kwargs)  # type: ignore[arg-type]
    assert all(np.array_equal(a, b) for a, b in zip(flwr_parts, numpy_parts, strict=True))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_different_seeds_differ(scheme: str) -> None:
    labels = np.arange(400) % 5
    a = partition_indices(labels, 8, scheme, seed=0)  # type: ignore[arg-type]
    b = partition_indices(labels, 8, scheme, seed=1)  # type: ignore[arg-type]
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_many_clients_use_the_fast_path(scheme: str) -> None:
    labels = np.arange(6000) % 10
    parts = partition_indices(labels, 1500, scheme, alpha=1.0, seed=3)  # type: ignore[arg-type]
    check_partitions(parts, labels, 1500, scheme)


def mean_label_entropy(parts: list[np.ndarray], labels: np.ndarray) -> float:
    entropies = []
    for p in parts:
        freq = np.bincount(labels[p], minlength=labels.max() + 1) / len(p)
        freq = freq[freq > 0]
        entropies.append(float(-(freq * np.log(freq)).sum()))
    return float(np.mean(entropies))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dirichlet_small_alpha_is_more_skewed(seed: int) -> None:
    labels = np.arange(3000) % 10
    iid = mean_label_entropy(partition_indices(labels, 10, "iid", seed=seed), labels)
    flat = partition_indices(labels, 10, "dirichlet", alpha=100.0, seed=seed)
    skewed = partition_indices(labels, 10, "dirichlet", alpha=0.05, seed=seed)
    h_flat, h_skewed = mean_label_entropy(flat, labels), mean_label_entropy(skewed, labels)
    assert h_skewed < 1.0 < h_flat  # log(10) = 2.30 is the maximum
    assert h_flat > 0.95 * iid


def test_dirichlet_top_up_when_flwr_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    labels = np.arange(300) % 3
    kwargs = {"alpha": 0.01, "min_partition_size": 2, "seed": 5}
    with caplog.at_level(logging.INFO, logger="fedsim.data.partition"):
        parts = partition_indices(labels, 60, "dirichlet", engine="flwr-datasets", **kwargs)  # type: ignore[arg-type]
    replica = partition_indices(labels, 60, "dirichlet", **kwargs)  # type: ignore[arg-type]
    assert all(np.array_equal(a, b) for a, b in zip(parts, replica, strict=True))
    check_partitions(parts, labels, 60, "dirichlet")
    assert min(len(p) for p in parts) >= 2
    assert "flwr-datasets Dirichlet gave up" in caplog.text
    assert "moved" in caplog.text
    # only the missing samples moved: the few large partitions keep the rest
    sizes = sorted((len(p) for p in parts), reverse=True)
    assert sum(sizes[:7]) == 300 - 2 * 53 and sizes[7:] == [2] * 53


def test_dirichlet_min_size_zero_allows_empty_clients() -> None:
    labels = np.repeat(np.arange(5), 4)
    parts = partition_indices(labels, 15, "dirichlet", alpha=0.01, min_partition_size=0, seed=3)
    assert sum(len(p) for p in parts) == 20 and min(len(p) for p in parts) == 0


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 10), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_shards_class_pure_give_at_most_spc_classes(k: int, spc: int, seed: int) -> None:
    shard_size = 7
    num_classes = 4
    # class sizes are multiples of the shard size and n == k * spc * shard_size: pure shards
    shards_per_class = np.full(num_classes, (k * spc) // num_classes)
    shards_per_class[: (k * spc) % num_classes] += 1
    labels = np.repeat(np.arange(num_classes), shards_per_class * shard_size)
    labels = np.random.default_rng(seed).permutation(labels)
    parts = partition_indices(labels, k, "shards", shards_per_client=spc, seed=seed)
    assert sum(len(p) for p in parts) == len(labels)  # nothing dropped here
    for p in parts:
        assert len(np.unique(labels[p])) <= spc


def test_shards_drop_the_tail_of_the_sorted_pool() -> None:
    labels = np.repeat(np.arange(4), [25, 25, 25, 28])  # n = 103
    parts = partition_indices(labels, 5, "shards", shards_per_client=2, seed=0)
    kept = np.concatenate(parts)
    dropped = np.setdiff1d(np.arange(103), kept)
    assert len(dropped) == 3 and set(labels[dropped]) == {3}  # the largest label


@pytest.mark.parametrize(
    ("scheme", "alpha", "seed"), [("dirichlet", 1.0, 0), ("dirichlet", 0.3, 7), ("iid", 1.0, 3)]
)
def test_replicas_match_flwr_datasets_on_pneumoniamnist(
    scheme: str, alpha: float, seed: int
) -> None:
    """The partitions the shipped configs train on (PneumoniaMNIST, 5 and 20 clients) are
    flwr-datasets' own, index for index."""
    from fedsim.data import load_dataset

    labels = load_dataset("pneumoniamnist").train.y
    for k in (5, 20):
        kwargs = {"alpha": alpha, "seed": seed}
        ours = partition_indices(labels, k, scheme, **kwargs)  # type: ignore[arg-type]
        theirs = partition_indices(labels, k, scheme, engine="flwr-datasets", **kwargs)  # type: ignore[arg-type]
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_an_unknown_engine_is_refused() -> None:
    with pytest.raises(FedsimError, match=r"partition engine must be one of .*got 'arrow'"):
        partition_indices(np.arange(10) % 2, 2, "iid", engine="arrow")  # type: ignore[arg-type]


def test_progress_bar_setting_is_restored() -> None:
    before = datasets.are_progress_bars_disabled()
    partition_indices(np.arange(50) % 2, 5, "shards", seed=0, engine="flwr-datasets")
    assert datasets.are_progress_bars_disabled() == before


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((np.zeros(10, int), 0, "iid"), {}, "data.num_clients must be between 1 and .*10.*got 0"),
        ((np.zeros(10, int), 11, "iid"), {}, "data.num_clients must be between 1 and .*got 11"),
        ((np.zeros(10, int), 2.5, "iid"), {}, "data.num_clients must be an integer; got 2.5"),
        ((np.zeros(10, int), True, "iid"), {}, "data.num_clients must be an integer; got True"),
        ((np.zeros(10, int), 2, "random"), {}, "data.partition must be one of: dirichlet, iid, "),
        ((np.zeros(10, int), 2, "dirichlet"), {"alpha": 0.0}, "data.alpha must be .* > 0; got 0.0"),
        ((np.zeros(10, int), 2, "dirichlet"), {"alpha": -1}, "data.alpha must be .* > 0; got -1"),
        (
            (np.zeros(10, int), 2, "dirichlet"),
            {"alpha": float("nan")},
            "data.alpha must be a finite",
        ),
        (
            (np.zeros(10, int), 4, "dirichlet"),
            {"min_partition_size": 3},
            "data.min_partition_size: 4 clients .* = 12 > 10 training samples",
        ),
        (
            (np.zeros(10, int), 2, "shards"),
            {"shards_per_client": 0},
            "data.shards_per_client must be an integer >= 1; got 0",
        ),
        (
            (np.zeros(10, int), 4, "shards"),
            {"shards_per_client": 3},
            "data.shards_per_client: 4 clients .* = 12 shards > 10 training samples",
        ),
        (
            (np.zeros(10, int), 4, "shards"),
            {"min_partition_size": 3},
            "data.min_partition_size: shard partitions .* have 2 samples",
        ),
        (
            (np.zeros(10, int), 4, "iid"),
            {"min_partition_size": 3},
            "data.min_partition_size: IID partitions .* have 2 samples or more",
        ),
        ((np.zeros(10, int), 2, "iid"), {"min_partition_size": -1}, "data.min_partition_size"),
        ((np.zeros(10, int), 2, "iid"), {"seed": -1}, "seed must be an integer >= 0; got -1"),
        ((np.zeros((2, 5), int), 2, "iid"), {}, "1-D integer array"),
        ((np.zeros(10), 2, "iid"), {}, "1-D integer array; got float64"),
    ],
)
def test_errors_name_the_field(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(FedsimError, match=message):
        partition_indices(*args, **kwargs)
