"""Natural (per-site) partitions: each client is one real site of a site-labelled dataset.

Site labels come from an npz's ``train_sites`` or an image folder's ``<site>/`` level;
the partition is flwr-datasets' ``NaturalIdPartitioner``. The last test runs a real
simulated federation (Ray, Flower) and checks that every client trained on its site.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedsim.config import from_dict
from fedsim.data import load_dataset, partition_indices
from fedsim.errors import ConfigError, DataError, FedsimError
from fedsim.preflight import preflight
from fedsim.rundir import read_metrics
from fedsim.workload import dataset_for, partitions_for

SHARED_RAY = True  # the one simulated run below
ROOT = Path(__file__).resolve().parents[1]
SITE_SIZES = {"clinic-x": 14, "hospital-a": 40, "hospital-b": 26}  # sorted names


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    for cached in (load_dataset, dataset_for, partitions_for):
        cached.cache_clear()
    yield
    for cached in (load_dataset, dataset_for, partitions_for):
        cached.cache_clear()


def sites_npz(path: Path, sizes: dict[str, int] = SITE_SIZES) -> Path:
    """An npz whose images encode their site (value = 10 × site rank + class)."""
    rng = np.random.default_rng(0)
    order = list(sizes)
    rng.shuffle(order)  # sites interleaved in the file, not sorted
    names = np.concatenate([[s] * sizes[s] for s in order])
    rng.shuffle(names)
    rank = np.array([sorted(sizes).index(s) for s in names])
    labels = rng.integers(0, 2, len(names))
    labels[:2] = [0, 1]
    images = np.broadcast_to((10 * rank + labels)[:, None, None], (len(names), 4, 4))
    np.savez(
        path,
        train_images=images.astype(np.uint8),
        train_labels=labels,
        train_sites=names,
    )
    return path


def site_of(x: np.ndarray) -> np.ndarray:
    return np.rint(x[:, 0, 0, 0] * 255).astype(int) // 10


# --- the partitioner -----------------------------------------------------------------


def test_natural_partition_gives_each_client_its_site() -> None:
    sites = np.array([2, 0, 1, 2, 2, 0, 1, 1, 1])
    parts = partition_indices(np.zeros(9, np.int64), 3, "natural", sites=sites)
    assert [p.tolist() for p in parts] == [[1, 5], [2, 6, 7, 8], [0, 3, 4]]
    with pytest.raises(
        FedsimError,
        match=r"data.num_clients must equal the number of sites \(3: 'a', 'b', 'c'\) when "
        r"data.partition is 'natural'; got 4",
    ):
        partition_indices(
            np.zeros(9, np.int64), 4, "natural", sites=sites, site_names=("a", "b", "c")
        )
    with pytest.raises(FedsimError, match=r"data.partition 'natural' needs data labelled by site"):
        partition_indices(np.zeros(9, np.int64), 3, "natural")
    with pytest.raises(
        FedsimError, match=r"fewer than max\(1, data.min_partition_size=3\).*'a' \(2\)"
    ):
        partition_indices(
            np.zeros(9, np.int64),
            3,
            "natural",
            sites=sites,
            site_names=("a", "b", "c"),
            min_partition_size=3,
        )


@pytest.mark.parametrize("k", [1, 3, 40, 1001])
def test_natural_partition_matches_the_sites_and_flwr_datasets(k: int) -> None:
    rng = np.random.default_rng(k)
    sites = rng.permutation(np.concatenate([np.arange(k), rng.integers(0, k, 3 * k)]))
    labels = np.zeros(len(sites), np.int64)
    parts = partition_indices(labels, k, "natural", sites=sites)
    assert all(np.array_equal(p, np.flatnonzero(sites == i)) for i, p in enumerate(parts))
    if k <= 40:  # flwr-datasets' select per site grows with k
        theirs = partition_indices(labels, k, "natural", sites=sites, engine="flwr-datasets")
        assert all(np.array_equal(a, b) for a, b in zip(parts, theirs, strict=True))


# --- loading site-labelled data ----------------------------------------------------


def test_npz_sites_are_named_carved_within_sites_and_partitioned(tmp_path: Path) -> None:
    path = sites_npz(tmp_path / "s.npz")
    cfg = from_dict(
        {
            "data": {"name": "npz", "path": str(path), "partition": "natural", "num_clients": 3},
            "dp": {"epsilon": 1.0},
        }
    )
    bundle = dataset_for(cfg.data, cfg.seed)
    assert bundle.site_names == ("clinic-x", "hospital-a", "hospital-b")
    assert bundle.val.sites is None and bundle.test.sites is None  # the server's splits
    held = len(bundle.val) + len(bundle.test)
    parts = partitions_for(cfg.data, cfg.seed)
    for client, (name, part) in enumerate(zip(bundle.site_names, parts, strict=True)):
        x = bundle.train.subset(part).x
        assert set(site_of(x).tolist()) == {client}  # client i = the i-th site, sorted
        share = SITE_SIZES[name] * held / sum(SITE_SIZES.values())
        assert abs(len(part) - (SITE_SIZES[name] - share)) <= 2  # carved within each site
    assert sum(map(len, parts)) == len(bundle.train)
    report = preflight(cfg)
    assert "clients are sites: 0 = clinic-x" in "\n".join(report.lines())


def test_site_rules_have_clear_messages(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    np.savez(path, train_images=np.zeros((6, 4, 4), np.uint8), train_labels=np.arange(6) % 2)
    data = {"name": "npz", "path": str(path), "partition": "natural", "num_clients": 2}
    cfg = from_dict({"data": data, "dp": {"epsilon": 1.0}})
    with pytest.raises(
        DataError, match=r"needs key 'train_sites' \(the site of each training image\)"
    ):
        dataset_for(cfg.data, cfg.seed)
    np.savez(
        path,
        train_images=np.zeros((6, 4, 4), np.uint8),
        train_labels=np.arange(6) % 2,
        train_sites=np.zeros(5),
    )
    with pytest.raises(
        DataError,
        match=r"key 'train_sites' must be a 1-D array of integers or strings with one entry "
        r"per training image \(6\); got float64 array of shape \(5,\)",
    ):
        dataset_for(cfg.data, cfg.seed)
    with pytest.raises(
        ConfigError,
        match=r"data.partition 'natural' needs data labelled by site.*"
        r"got data.name 'pneumoniamnist'",
    ):
        from_dict({"data": {"partition": "natural"}, "dp": {"epsilon": 1.0}})


def test_imagefolder_site_level(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for site, n in (("north", 30), ("south", 20)):
        for cls in ("normal", "pneumonia"):
            for i in range(n):
                path = tmp_path / "plain" / site / cls / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (5, 5), dtype=np.uint8)).save(path)
    (tmp_path / "plain" / "south" / "extra").mkdir()  # a class only one site has, no images
    with pytest.raises(DataError, match=r"class folders without image files .*: south/extra/"):
        load_dataset("imagefolder", path=str(tmp_path / "plain"), sites=True)
    (tmp_path / "plain" / "south" / "extra").rmdir()
    b = load_dataset(
        "imagefolder", path=str(tmp_path / "plain"), sites=True, val_size=10, test_size=10
    )
    assert b.site_names == ("north", "south") and b.class_names == ("normal", "pneumonia")
    assert np.bincount(b.train.sites).tolist() == [60 - 12, 40 - 8]  # carved within sites
    # split layout: train/<site>/<class>/, the server's test/<class>/
    (tmp_path / "split").mkdir()
    (tmp_path / "plain").rename(tmp_path / "split" / "train")
    test = tmp_path / "split" / "test" / "pneumonia" / "0.png"
    test.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(test)
    load_dataset.cache_clear()
    b = load_dataset("imagefolder", path=str(tmp_path / "split"), sites=True, val_size=2)
    assert len(b.test) == 1 and b.test.y.tolist() == [1] and len(b.train) == 98


def test_shipped_example_writes_three_sites(tmp_path: Path) -> None:
    out = tmp_path / "sites.npz"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "make_sites_npz.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert proc.returncode == 0, proc.stderr
    b = load_dataset("npz", path=str(out), sites=True)
    assert b.site_names == ("hospital-a", "hospital-b", "hospital-c")
    fractions = [b.train.y[b.train.sites == s].mean() for s in range(3)]
    assert fractions[1] == pytest.approx(0.5, abs=0.05) and fractions[2] == pytest.approx(
        0.9, abs=0.05
    )
    assert (len(b.val), len(b.test)) == (524, 624)  # PneumoniaMNIST's own server splits


@pytest.mark.e2e
def test_simulated_run_trains_each_client_on_its_site(tmp_path: Path) -> None:
    from fedsim.run import run_experiment

    path = sites_npz(tmp_path / "s.npz")
    cfg = from_dict(
        {
            "name": "natural",
            "rounds": 1,
            "data": {
                "name": "npz",
                "path": str(path),
                "partition": "natural",
                "num_clients": 3,
                "val_size": 6,
                "test_size": 6,
            },
            "model": {"name": "mlp"},
            "client": {"batch_size": 8},
            "dp": {"enabled": False},
            "strategy": {"clients_per_round": 3},
        }
    )
    run_experiment(cfg, tmp_path / "run")
    pool = dataset_for(cfg.data, cfg.seed).train
    per_site = np.bincount(site_of(pool.x), minlength=3)  # read off the images themselves
    (line,) = read_metrics(tmp_path / "run")
    trained = {int(c): entry["num_examples"] for c, entry in line["clients"].items()}
    assert trained == {i: int(n) for i, n in enumerate(per_site)}
    assert len(set(trained.values())) == 3  # the sites' own, unequal sizes
