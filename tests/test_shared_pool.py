"""The training pool a simulation's driver shares once per machine (fedsim.data.shared):
8-bit pools stored as uint8 and given back bit for bit, written once, mapped read-only,
and the same pages shared by every process that maps it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import fedsim.workload as workload
from fedsim.config import from_dict
from fedsim.data import Split, load_dataset, partition_indices
from fedsim.data.convert import images_to_nchw_float
from fedsim.data.shared import (
    PooledSplit,
    open_split,
    pack_images,
    share_split,
    unpack_images,
)

ROOT = Path(__file__).resolve().parents[1]


def bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(np.uint32)


def eight_bit_split(n: int, seed: int = 0, sites: bool = False) -> Split:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 4, size=n).astype(np.int64)
    site = rng.integers(0, 3, size=n).astype(np.int64) if sites else None
    return Split(x=images_to_nchw_float(raw, "test"), y=y, sites=site)


def test_every_code_unpacks_to_the_loaders_float() -> None:
    codes = np.arange(256, dtype=np.uint8).reshape(256, 1, 1)
    loaded = images_to_nchw_float(codes, "test")  # what a worker loading uint8 data gets
    assert np.array_equal(bits(unpack_images(codes[:, None])), bits(loaded))
    assert np.array_equal(pack_images(loaded), codes[:, None])


def test_pack_keeps_float32_unless_every_value_comes_back_exactly() -> None:
    split = eight_bit_split(10)
    assert pack_images(split.x).dtype == np.uint8
    off = split.x.copy()
    off[7, 2, 5, 5] = np.nextafter(off[7, 2, 5, 5], np.float32(2))  # one ulp away
    assert pack_images(off) is off
    sixteen = images_to_nchw_float(np.array([[[0, 1, 65535]]], np.uint16), "test")
    assert pack_images(sixteen) is sixteen  # 1/65535 is no k/255
    negative_zero = np.full((1, 1, 1, 1), -0.0, np.float32)
    assert pack_images(negative_zero) is negative_zero  # would come back as +0.0


def test_pooled_partitions_equal_the_loaded_ones_bit_for_bit(tmp_path: Path) -> None:
    bundle = load_dataset("pneumoniamnist")
    files = share_split(bundle.train, tmp_path)
    pooled = open_split(files)
    assert files.packed and pooled.x.dtype == np.uint8
    assert pooled.x.nbytes * 4 == bundle.train.x.nbytes
    parts = partition_indices(bundle.train.y, 5, "dirichlet", alpha=0.5, seed=0)
    for part in parts:
        mine, theirs = pooled.subset(part), bundle.train.subset(part)
        assert np.array_equal(bits(mine.x), bits(theirs.x))
        assert mine.y.dtype == theirs.y.dtype and np.array_equal(mine.y, theirs.y)
        assert mine.x.flags.writeable  # a copy the trainer may own, as Split.subset gives
    assert np.array_equal(pooled.strata, bundle.train.strata)


def test_sites_and_float_pools_round_trip(tmp_path: Path) -> None:
    split = eight_bit_split(50, sites=True)
    pooled = open_split(share_split(split, tmp_path / "sites"))
    assert np.array_equal(pooled.holdout_strata, split.holdout_strata)
    half = pooled.subset(np.arange(0, 50, 2))
    assert split.sites is not None and half.sites is not None
    assert np.array_equal(half.sites, split.sites[::2])
    table = Split(
        x=np.array([[[[0.25, 0.3]]], [[[1.0, 0.7]]]], np.float32),
        y=np.array([0.5, 1.0], np.float32),
    )
    files = share_split(table, tmp_path / "table")
    assert not files.packed
    back = open_split(files).subset(np.array([1, 0]))
    assert np.array_equal(bits(back.x), bits(table.x[::-1])) and back.task == "regression"


def test_a_pool_is_written_once_and_mapped_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    split = eight_bit_split(20)
    first = share_split(split, tmp_path)
    image_file = Path(first.folder) / "x.npy"
    stamp = image_file.stat().st_mtime_ns, image_file.stat().st_ino
    again = share_split(split, tmp_path)
    assert again == first
    assert (image_file.stat().st_mtime_ns, image_file.stat().st_ino) == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.digest]  # no staging left
    other = share_split(eight_bit_split(20, seed=1), tmp_path)
    assert other.digest != first.digest
    monkeypatch.chdir(tmp_path)
    relative = share_split(split, ".")
    assert relative == first and Path(relative.folder).is_absolute()  # for any worker's cwd
    pooled = open_split(first)
    assert not pooled.x.flags.writeable and not pooled.y.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        pooled.x[0, 0, 0, 0] = 1


def _pss_kib(path: Path) -> tuple[int, int]:
    """This process's (Rss, Pss) in KiB of its mappings of ``path`` (/proc/self/smaps)."""
    rss = pss = 0
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = len(fields) >= 6 and fields[5] == str(path)
        elif inside and fields[0] == "Rss:":
            rss += int(fields[1])
        elif inside and fields[0] == "Pss:":
            pss += int(fields[1])
    return rss, pss


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_two_processes_map_the_same_pages(tmp_path: Path) -> None:
    files = share_split(eight_bit_split(3000), tmp_path)  # 9 MiB of uint8 images
    image_file = Path(files.folder) / "x.npy"
    pooled = open_split(files)
    assert int(pooled.x.sum(dtype=np.int64)) > 0  # touch every page
    rss, alone = _pss_kib(image_file)
    assert rss > 8 * 1024 and alone > 0.9 * rss  # mapped, not copied; the only user
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from fedsim.data.shared import PoolFiles, open_split; "
            f"x = open_split(PoolFiles({files.folder!r}, {files.digest!r}, True)).x; "
            "x.sum(); print('mapped', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "mapped"
        rss_now, shared = _pss_kib(image_file)
    finally:
        child.communicate("")
    assert rss_now == rss
    assert shared < 0.6 * alone  # the pages are now split between two processes


def test_workers_take_client_data_from_the_shared_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workload, "_MAPPED", OrderedDict())
    cfg = from_dict(
        {
            "dp": {"enabled": False},
            "data": {"name": "pneumoniamnist", "num_clients": 4, "train_samples": 900},
            "evaluation": {"federated": True},
        }
    )
    loaded = [workload.simulated_client_data(cfg, c).train for c in range(4)]
    held = [workload.client_holdout(cfg, c) for c in range(4)]
    shared = workload.share_train_pool(cfg, tmp_path)
    workload.partitions_for.cache_clear()
    assert workload.use_shared_pool(shared)
    assert workload.use_shared_pool(shared)  # mapped once
    assert len(workload._MAPPED) == 1
    assert isinstance(workload.train_pool(cfg.data, cfg.seed).train, PooledSplit)
    for c in range(4):
        mine = workload.simulated_client_data(cfg, c).train
        assert np.array_equal(bits(mine.x), bits(loaded[c].x))
        assert np.array_equal(mine.y, loaded[c].y)
        assert np.array_equal(bits(workload.client_holdout(cfg, c).x), bits(held[c].x))
    other = from_dict({"dp": {"enabled": False}, "data": {"name": "pneumoniamnist"}})
    assert isinstance(workload.train_pool(other.data, other.seed).train, Split)  # not shared


def test_a_worker_that_cannot_see_the_pool_loads_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker on another machine of a Ray cluster has no access to the driver's files."""
    monkeypatch.setattr(workload, "_MAPPED", OrderedDict())
    cfg = from_dict({"dp": {"enabled": False}, "data": {"name": "pneumoniamnist"}})
    shared = workload.share_train_pool(cfg, tmp_path / "driver")
    elsewhere = dataclasses.replace(
        shared, files=dataclasses.replace(shared.files, folder=str(tmp_path / "nowhere"))
    )
    assert workload.use_shared_pool(elsewhere) is False
    assert isinstance(workload.train_pool(cfg.data, cfg.seed).train, Split)
    assert len(workload.simulated_client_data(cfg, 0).train) > 0
