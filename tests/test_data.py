"""Tests of fedsim.data loaders, conversions and carving.

Downloadable datasets are tested on tiny files written here in their real on-disk formats;
nothing is downloaded (the downloaders are replaced by fakes).
"""

from __future__ import annotations

import gzip
import pickle
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fedsim.data import DATASETS, DatasetBundle, Split, load_dataset
from fedsim.data.carve import holdout_count, stratified_holdout
from fedsim.data.convert import images_to_nchw_float, labels_to_int64
from fedsim.data.idx import read_idx
from fedsim.errors import DataError, FedsimError

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    load_dataset.cache_clear()
    yield
    load_dataset.cache_clear()


# --- helpers writing real on-disk formats ---------------------------------------------


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format."""
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx(path: Path, arr: np.ndarray) -> None:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def id_images(n: int, h: int = 4, w: int = 4) -> np.ndarray:
    """uint8 images whose every pixel is the sample's index (n <= 256)."""
    return np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None], (n, h, w)).copy()


def ids_of(split: Split) -> np.ndarray:
    """Recover the sample indices encoded by :func:`id_images`."""
    return np.rint(split.x[:, 0, 0, 0] * 255).astype(int)


def write_npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return str(path)


# --- types ----------------------------------------------------------------------------


def test_split_validates_dtype_shape_and_length() -> None:
    x = np.zeros((3, 1, 2, 2), np.float32)
    with pytest.raises(DataError, match=r"Split.x must be a float32 array.*float64"):
        Split(x=x.astype(np.float64), y=np.zeros(3, np.int64))
    with pytest.raises(DataError, match=r"Split.y must be an int64 \(labels\) or float32"):
        Split(x=x, y=np.zeros(3, np.int32))
    with pytest.raises(DataError, match="3 images but 2 labels"):
        Split(x=x, y=np.zeros(2, np.int64))


def test_split_subset_and_len() -> None:
    x = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1) / 4
    s = Split(x=x, y=np.arange(5, dtype=np.int64))
    sub = s.subset(np.array([4, 1]))
    assert len(s) == 5 and len(sub) == 2
    assert sub.y.tolist() == [4, 1] and sub.x[:, 0, 0, 0].tolist() == [1.0, 0.25]
    assert len(s.subset(np.array([], dtype=np.int64))) == 0
    assert s.subset(np.array([True, False, True, False, False])).y.tolist() == [0, 2]
    with pytest.raises(DataError, match="idx must be a 1-D integer or boolean array"):
        s.subset(np.array([[0]]))


def test_bundle_checks_shapes_and_labels() -> None:
    a = Split(np.zeros((2, 1, 4, 4), np.float32), np.array([0, 1]))
    b = Split(np.zeros((2, 1, 5, 5), np.float32), np.array([0, 1]))
    bundle = DatasetBundle("t", a, a, a, 2, ("x", "y"))
    assert bundle.input_shape == (1, 4, 4)
    with pytest.raises(DataError, match="val images have shape"):
        DatasetBundle("t", a, b, a, 2, ("x", "y"))
    with pytest.raises(DataError, match=r"labels must be in 0..0"):
        DatasetBundle("t", a, a, a, 1, ("x",))
    with pytest.raises(DataError, match="equal the number of class names"):
        DatasetBundle("t", a, a, a, 2, ("x",))


# --- conversions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((2, 5, 6), (2, 1, 5, 6)),
        ((2, 5, 6, 3), (2, 3, 5, 6)),
        ((2, 5, 6, 1), (2, 1, 5, 6)),
        ((2, 3, 5, 6), (2, 3, 5, 6)),
        ((2, 1, 5, 5), (2, 1, 5, 5)),
        ((2, 3, 3, 1), (2, 1, 3, 3)),  # both fit: middle axes equal -> NHWC
        ((2, 1, 3, 3), (2, 1, 3, 3)),  # both fit: last axes equal -> NCHW
    ],
)
def test_images_layouts(shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    out = images_to_nchw_float(np.zeros(shape, np.uint8), "w")
    assert out.shape == expected and out.dtype == np.float32


def test_images_nhwc_transpose_keeps_pixels() -> None:
    img = np.random.default_rng(0).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    out = images_to_nchw_float(img, "w")
    assert out[1, 2, 3, 4] == pytest.approx(img[1, 3, 4, 2] / 255)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_images_uint8_scaling_is_exact_at_ends() -> None:
    out = images_to_nchw_float(np.array([[[0, 255]]], np.uint8), "w")
    assert out.min() == 0.0 and out.max() == 1.0


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 4, 4), np.int32), "must be uint8 .* or float in \\[0, 1\\]; got dtype int32"),
        (np.full((2, 4, 4), 2.0), "float images must be in \\[0, 1\\]; got values in \\[2, 2\\]"),
        (np.full((2, 4, 4), np.nan), "must be finite"),
        (np.zeros((2, 4, 4, 5), np.uint8), "must have 1 or 3 channels"),
        (np.zeros((2, 4), np.uint8), "must have shape \\(N, H, W\\)"),
        (np.zeros((2, 3, 4, 3, 1), np.uint8), "must have shape"),
        (np.zeros((2, 2, 4, 4), np.uint8), "must have 1 or 3 channels"),
        (np.zeros((2, 3, 4, 3), np.uint8), "layout is ambiguous for shape \\(2, 3, 4, 3\\)"),
    ],
)
def test_images_rejected(images: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=f"^where: .*{message}"):
        images_to_nchw_float(images, "where")


def test_labels_conversion() -> None:
    assert labels_to_int64(np.array([[1], [0]], np.uint8), "w").tolist() == [1, 0]
    assert labels_to_int64(np.array([1.0, 2.0]), "w").dtype == np.int64
    with pytest.raises(DataError, match="whole numbers"):
        labels_to_int64(np.array([1.5]), "w")
    with pytest.raises(DataError, match=">= 0; got -1"):
        labels_to_int64(np.array([-1, 0]), "w")
    with pytest.raises(DataError, match=r"shape \(N,\) or \(N, 1\)"):
        labels_to_int64(np.zeros((2, 2), np.int64), "w")
    with pytest.raises(DataError, match="must be integers"):
        labels_to_int64(np.array(["a"]), "w")


# --- carving --------------------------------------------------------------------------


def test_holdout_count_rules() -> None:
    assert holdout_count(None, 60000) == 5000
    assert holdout_count(None, 4000) == 400
    assert holdout_count(None, 5) == 1
    assert holdout_count(7, 100) == 7
    assert holdout_count(0.25, 100) == 25
    assert holdout_count(0.001, 100) == 1
    assert holdout_count(30.0, 100) == 30  # whole float from YAML
    for bad in (0, 100, -3, 1.5, 0.0, True, "10"):
        with pytest.raises(FedsimError, match=r"^data.val_size"):
            holdout_count(bad, 100)  # type: ignore[arg-type]
    with pytest.raises(FedsimError, match="at least 2 training samples"):
        holdout_count(None, 1)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=2, max_size=200),
    st.floats(0.0, 1.0),
    st.integers(0, 2**32 - 1),
)
def test_stratified_holdout_properties(labels: list[int], frac: float, seed: int) -> None:
    y = np.array(labels)
    count = round(frac * len(y))
    kept, held = stratified_holdout(y, count, np.random.default_rng(seed))
    assert len(held) == count
    assert np.intersect1d(kept, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(len(y)))
    assert np.all(np.diff(kept) > 0) and np.all(np.diff(held) > 0)
    # stratified: each class gets its quota within rounding
    for c in np.unique(y):
        quota = count * np.mean(y == c)
        assert abs(np.sum(y[held] == c) - quota) < 1.0 + 1e-9
    again = stratified_holdout(y, count, np.random.default_rng(seed))
    assert np.array_equal(again[1], held)


# --- registry and cache ---------------------------------------------------------------


def test_registry_names_and_unknown_name() -> None:
    assert set(DATASETS.names()) == {
        "pneumoniamnist",
        "fashion-mnist",
        "mnist",
        "cifar10",
        "svhn",
        "tabular",
        "diabetes",
        "npz",
        "imagefolder",
    }
    with pytest.raises(FedsimError, match=r"data.name must be one of: cifar10, .*; got 'nope'"):
        load_dataset("nope")


def test_cache_returns_same_object_and_arrays_are_read_only() -> None:
    a = load_dataset("pneumoniamnist")
    assert load_dataset("pneumoniamnist") is a
    assert load_dataset("pneumoniamnist", seed=1) is not a
    assert not a.train.x.flags.writeable and not a.test.y.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        a.train.x[0, 0, 0, 0] = 0.5
    sub = a.train.subset(np.arange(3))
    assert sub.x.flags.writeable and sub.y.flags.writeable  # subsets are copies


# --- pneumoniamnist -------------------------------------------------------------------


def test_pneumoniamnist_packaged() -> None:
    b = load_dataset("pneumoniamnist")
    assert (len(b.train), len(b.val), len(b.test)) == (4708, 524, 624)
    assert b.input_shape == (1, 28, 28)
    assert b.train.x.dtype == np.float32 and b.train.y.dtype == np.int64
    assert b.train.x.min() >= 0.0 and b.train.x.max() <= 1.0 and b.train.x.max() > 0.9
    assert set(np.unique(b.train.y)) == {0, 1}
    assert np.bincount(b.train.y).tolist() == [1214, 3494]
    assert b.num_classes == 2 and b.class_names == ("normal", "pneumonia")


def test_pneumoniamnist_ignores_val_size() -> None:
    b = load_dataset("pneumoniamnist", val_size=100)
    assert (len(b.train), len(b.val)) == (4708, 524)


# --- fashion-mnist --------------------------------------------------------------------


@pytest.mark.skipif(
    not all((FASHION_ROOT / f).is_file() for f in FASHION_FILES),
    reason="Debian's dataset-fashion-mnist is not installed "
    "(apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_real() -> None:
    b = load_dataset("fashion-mnist")
    assert (len(b.train), len(b.val), len(b.test)) == (55000, 5000, 10000)
    assert b.input_shape == (1, 28, 28) and b.num_classes == 10
    assert np.bincount(b.val.y).tolist() == [500] * 10  # stratified carve
    assert np.bincount(b.test.y).tolist() == [1000] * 10
    assert b.train.x.min() == 0.0 and b.train.x.max() == 1.0
    assert b.class_names[0] == "t-shirt/top" and b.class_names[9] == "ankle boot"


def _write_fashion(root: Path, n_train: int = 30, n_test: int = 10) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_fashion_mnist_from_root(tmp_path: Path) -> None:
    _write_fashion(tmp_path)
    b = load_dataset("fashion-mnist", root=str(tmp_path), val_size=10)
    assert (len(b.train), len(b.val), len(b.test)) == (20, 10, 10)
    assert b.input_shape == (1, 28, 28)


def test_fashion_mnist_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", root=str(tmp_path))
    text = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in text
    assert "data.root" in text and str(tmp_path) in text
    assert "train-images-idx3-ubyte.gz" in text


def test_fashion_mnist_label_count_mismatch(tmp_path: Path) -> None:
    _write_fashion(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(9))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz has 9 entries but"):
        load_dataset("fashion-mnist", root=str(tmp_path))


# --- IDX parser -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_roundtrip(tmp_path: Path, suffix: str) -> None:
    arr = np.random.default_rng(1).integers(0, 256, (3, 2, 5)).astype(np.uint8)
    path = tmp_path / f"x{suffix}"
    write_idx(path, arr)
    assert np.array_equal(read_idx(path, ndim=3), arr)


def test_read_idx_errors_name_the_file(tmp_path: Path) -> None:
    bad_magic = tmp_path / "magic"
    bad_magic.write_bytes(struct.pack(">HBB", 0, 0x0D, 1) + struct.pack(">I", 1) + b"\0" * 4)
    with pytest.raises(
        DataError, match=f"IDX file {re.escape(str(bad_magic))}: bad magic number 0x00000d01"
    ):
        read_idx(bad_magic, ndim=1)
    wrong_ndim = tmp_path / "ndim"
    write_idx(wrong_ndim, np.zeros((2, 2)))
    with pytest.raises(DataError, match="bad magic number 0x00000802; expected 0x00000803"):
        read_idx(wrong_ndim, ndim=3)
    short = tmp_path / "short"
    short.write_bytes(idx_bytes(np.zeros((4, 3)))[:-2])
    with pytest.raises(DataError, match=r"shape \(4, 3\) needs 12 data bytes; found 10"):
        read_idx(short, ndim=2)
    not_gz = tmp_path / "plain.gz"
    not_gz.write_bytes(idx_bytes(np.zeros(3)))
    with pytest.raises(DataError, match=f"cannot read IDX file {re.escape(str(not_gz))}"):
        read_idx(not_gz, ndim=1)
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"\0")
    with pytest.raises(DataError, match="truncated"):
        read_idx(tiny, ndim=1)


# --- npz ------------------------------------------------------------------------------


def test_npz_train_only_carves_test_then_val(tmp_path: Path) -> None:
    n = 200
    path = write_npz(tmp_path / "d.npz", train_images=id_images(n), train_labels=np.arange(n) % 4)
    b = load_dataset("npz", path=path, val_size=30, seed=3)
    assert (len(b.test), len(b.val), len(b.train)) == (20, 30, 150)
    ids = [ids_of(s) for s in (b.train, b.val, b.test)]
    assert np.array_equal(np.sort(np.concatenate(ids)), np.arange(n))  # disjoint, covering
    for s, i in zip((b.train, b.val, b.test), ids, strict=True):
        assert np.array_equal(s.y, i % 4)  # labels stay with their images
        assert np.all(np.diff(i) > 0)  # source order kept
    assert np.bincount(b.test.y).tolist() == [5, 5, 5, 5]  # stratified
    assert np.bincount(b.val.y).tolist() == [8, 8, 7, 7]  # 7.5 each; ties to smaller labels
    assert b.num_classes == 4 and b.class_names == ("0", "1", "2", "3")
    same = load_dataset("npz", path=path, val_size=30, seed=3)
    assert same is b
    load_dataset.cache_clear()
    again = load_dataset("npz", path=path, val_size=30, seed=3)
    assert np.array_equal(ids_of(again.val), ids_of(b.val))
    other = load_dataset("npz", path=path, val_size=30, seed=4)
    assert not np.array_equal(ids_of(other.val), ids_of(b.val))


def test_npz_val_fraction_and_default(tmp_path: Path) -> None:
    n = 200
    path = write_npz(tmp_path / "d.npz", x_train=id_images(n), y_train=np.arange(n) % 2)
    b = load_dataset("npz", path=path, val_size=0.1)
    assert (len(b.test), len(b.val), len(b.train)) == (20, 18, 162)
    d = load_dataset("npz", path=path)
    assert (len(d.test), len(d.val), len(d.train)) == (20, 18, 162)


def test_npz_keys_variants_layouts_and_class_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = write_npz(
        tmp_path / "d.npz",
        x_train=rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8),
        y_train=(np.arange(12) % 3).reshape(12, 1),
        x_test=rng.random((5, 3, 8, 8)).astype(np.float32),
        y_test=np.arange(5) % 3,
        val_images=rng.random((4, 3, 8, 8)),
        val_labels=np.array([0, 1, 2, 0]),
        class_names=np.array(["cat", "dog", "eel"]),
    )
    b = load_dataset("npz", path=path, val_size=3)  # val_size ignored: the file has val
    assert (len(b.train), len(b.val), len(b.test)) == (12, 4, 5)
    assert b.input_shape == (3, 8, 8)
    assert b.class_names == ("cat", "dog", "eel") and b.num_classes == 3
    assert b.val.x.dtype == np.float32


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"train_images": id_images(12), "train_labels": np.zeros(10)},
            "key 'train_labels' has 10 entries but key 'train_images' has 12",
        ),
        (
            {"train_images": id_images(3), "train_labels": np.zeros(3), "val_labels": np.zeros(2)},
            "key 'val_labels' needs key 'val_images', which is missing",
        ),
        ({"images": id_images(3)}, "needs keys 'train_images' and 'train_labels'"),
        (
            {"train_images": np.full((3, 4, 4), 1.5), "train_labels": np.zeros(3)},
            "key 'train_images': float images must be in \\[0, 1\\]; got values in \\[1.5, 1.5\\]",
        ),
        (
            {"train_images": id_images(3).astype(np.int16), "train_labels": np.zeros(3)},
            "key 'train_images': images must be uint8 .*; got dtype int16",
        ),
        (
            {"train_images": np.zeros((3, 4, 4, 2), np.uint8), "train_labels": np.zeros(3)},
            "key 'train_images': images must have 1 or 3 channels",
        ),
        (
            {"train_images": id_images(3), "train_labels": np.array([0, -2, 1])},
            "key 'train_labels': labels must be >= 0; got -2",
        ),
        (
            {
                "train_images": id_images(3),
                "train_labels": np.zeros(3),
                "test_images": np.zeros((2, 5, 5), np.uint8),
                "test_labels": np.zeros(2),
            },
            "key 'test_images' holds images of shape \\(1, 5, 5\\) \\(C, H, W\\) but "
            "the training images are \\(1, 4, 4\\)",
        ),
        (
            {
                "train_images": id_images(3),
                "train_labels": np.array([0, 1, 2]),
                "class_names": np.array(["a", "b"]),
            },
            "labels must be < the number of class names \\(2\\); got label 2",
        ),
        (
            {"train_images": id_images(0), "train_labels": np.zeros(0)},
            "key 'train_images' must hold at least one image; got 0",
        ),
    ],
)
def test_npz_bad_files(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(
        DataError, match=rf"data.path \({re.escape(str(tmp_path / 'bad.npz'))}\).*{message}"
    ):
        load_dataset("npz", path=path)


def test_npz_missing_unreadable_and_unset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.path is required for dataset 'npz'"):
        load_dataset("npz")
    with pytest.raises(DataError, match=r"nope.npz\): file not found"):
        load_dataset("npz", path=str(tmp_path / "nope.npz"))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"junk.npz\): not an .npz archive \(not a zip file"):
        load_dataset("npz", path=str(junk))


def test_npz_invalid_val_size(tmp_path: Path) -> None:
    labels = np.arange(20) % 2
    path = write_npz(tmp_path / "d.npz", train_images=id_images(20), train_labels=labels)
    with pytest.raises(FedsimError, match=r"data.val_size must leave at least one .*got 18"):
        load_dataset("npz", path=path, val_size=18)
    with pytest.raises(FedsimError, match=r"data.val_size must be a fraction .*; got 2.5"):
        load_dataset("npz", path=path, val_size=2.5)


# --- imagefolder ----------------------------------------------------------------------


def _png(path: Path, value: int, mode: str = "L", size: tuple[int, int] = (6, 5)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color: int | tuple[int, int, int] = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, size, color).save(path)


def test_imagefolder_grey_with_val(tmp_path: Path) -> None:
    for split, count in (("train", 6), ("val", 2)):
        for cls, base in (("cat", 0), ("dog", 100)):
            for i in range(count):
                _png(tmp_path / split / cls / f"{i}.png", base + i)
    b = load_dataset("imagefolder", path=str(tmp_path))
    assert b.class_names == ("cat", "dog") and b.num_classes == 2
    assert b.input_shape == (1, 5, 6)  # PIL size is (W, H)
    assert (len(b.val), len(b.test) + len(b.train)) == (4, 12)
    assert len(b.test) == 1  # carved: min(5000, 10% of 12) = 1
    assert set(np.rint(b.val.x[b.val.y == 1, 0, 0, 0] * 255).astype(int)) == {100, 101}


def test_imagefolder_mixed_modes_become_rgb(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "train" / "a" / f"{i}.png", 10 * i)
        _png(tmp_path / "train" / "b" / f"{i}.png", 50, mode="RGB")
        _png(tmp_path / "test" / "b" / f"{i}.jpg", 50, mode="RGB")
    b = load_dataset("imagefolder", path=str(tmp_path), val_size=2)
    assert b.input_shape == (3, 5, 6)
    assert (len(b.train), len(b.val), len(b.test)) == (4, 2, 3)
    rgb = b.train.x[b.train.y == 1][0, :, 0, 0]
    assert np.allclose(rgb, [50 / 255, 0.0, 205 / 255])
    assert set(b.test.y.tolist()) == {1}  # test/ with a subset of classes keeps train's labels


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.path is required for dataset 'imagefolder'"):
        load_dataset("imagefolder")
    with pytest.raises(DataError, match=r"\): has no class folders; put the images in <class>/"):
        load_dataset("imagefolder", path=str(tmp_path))
    for i in range(2):
        _png(tmp_path / "train" / "a" / f"{i}.png", i)
    odd = tmp_path / "train" / "a" / "odd.png"
    _png(odd, 1, size=(7, 7))
    with pytest.raises(
        DataError, match=f"all images must have the same size; {re.escape(str(odd))} is 7×7"
    ):
        load_dataset("imagefolder", path=str(tmp_path))
    odd.unlink()
    _png(tmp_path / "val" / "zebra" / "0.png", 1)
    with pytest.raises(DataError, match="val/ has class folders not in train/: zebra"):
        load_dataset("imagefolder", path=str(tmp_path))


# --- MNIST (torchvision) --------------------------------------------------------------


def _write_mnist(root: Path, n_train: int = 20, n_test: int = 8) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", id_images(n, 28, 28))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def test_mnist_standin(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    b = load_dataset("mnist", root=str(tmp_path), download=False, val_size=4)
    assert (len(b.train), len(b.val), len(b.test)) == (16, 4, 8)
    assert b.input_shape == (1, 28, 28) and b.num_classes == 10
    assert np.array_equal(ids_of(b.test), np.arange(8)) and np.array_equal(b.test.y, np.arange(8))


def test_mnist_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("mnist", root=str(tmp_path), download=False)
    text = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in text
    assert "data.download is false" in text and "data.download: true" in text

    def offline(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError, match=r"downloading it failed .*Error downloading"):
        load_dataset("mnist", root=str(tmp_path), download=True)


# --- CIFAR-10 -------------------------------------------------------------------------


def _write_cifar(root: Path, per_batch: int = 4, n_test: int = 6) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    batches = [f"data_batch_{i}" for i in range(1, 6)]
    for b, name in enumerate([*batches, "test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        data = np.zeros((n, 3072), np.uint8)
        data[:, :1024] = 10 * b  # red plane
        data[:, 1024:2048] = 7  # green plane
        data[:, 1] = np.arange(n)  # red pixel (0, 1) encodes the position in the batch
        start = b if name == "test_batch" else 2 * b  # the training batches cover all classes
        entry = {"data": data, "labels": [(start + i) % 10 for i in range(n)], "batch_label": name}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))


def test_cifar10_standin(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    b = load_dataset("cifar10", root=str(tmp_path), download=False, val_size=5)
    assert (len(b.train), len(b.val), len(b.test)) == (15, 5, 6)
    assert b.input_shape == (3, 32, 32) and b.class_names[0] == "airplane"
    assert np.allclose(b.test.x[:, 0, 0, 0], 50 / 255)  # red plane of batch 5 (test)
    assert np.allclose(b.test.x[:, 1], 7 / 255)  # green plane is channel 1
    assert np.allclose(b.test.x[:, 0, 0, 1] * 255, np.arange(6))  # row-major H, W
    assert b.test.y.tolist() == [5, 6, 7, 8, 9, 0]


def test_cifar10_download_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match=r"cifar-10-batches-py and data.download is false"):
        load_dataset("cifar10", root=str(tmp_path / "none"), download=False)

    calls: list[tuple[object, ...]] = []

    def fake_cifar(root: str, train: bool = True, download: bool = False) -> None:
        calls.append((root, train, download))
        _write_cifar(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar)
    b = load_dataset("cifar10", root=str(tmp_path / "dl"), download=True, val_size=2)
    assert calls == [(str(tmp_path / "dl"), True, True)] and len(b.train) == 18

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError, match="downloading it failed \\(network unreachable\\)"):
        load_dataset("cifar10", root=str(tmp_path / "off"), download=True)


def test_cifar10_malformed_batch(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}))
    with pytest.raises(
        DataError, match=rf"CIFAR batch {re.escape(str(bad))}: 'data' must be .*\(2, 100\)"
    ):
        load_dataset("cifar10", root=str(tmp_path), download=False)


# --- SVHN -----------------------------------------------------------------------------


def _write_svhn(root: Path, n_train: int = 12, n_test: int = 5) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        x = np.zeros((32, 32, 3, n), np.uint8)
        x[2, 5, 1, :] = np.arange(n)  # row 2, column 5, green
        y = (np.arange(n) % 10 + 1).reshape(n, 1)  # 1..10, 10 means digit 0
        scipy.io.savemat(root / name, {"X": x, "y": y})


def test_svhn_standin(tmp_path: Path) -> None:
    _write_svhn(tmp_path)
    b = load_dataset("svhn", root=str(tmp_path), download=False, val_size=2)
    assert (len(b.train), len(b.val), len(b.test)) == (10, 2, 5)
    assert b.input_shape == (3, 32, 32) and b.num_classes == 10
    assert b.test.y.tolist() == [1, 2, 3, 4, 5]
    assert set(np.concatenate([b.train.y, b.val.y]).tolist()) == set(range(10))
    assert np.allclose(b.test.x[:, 1, 2, 5] * 255, np.arange(5))


def test_svhn_missing_and_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match=r"train_32x32.mat and data.download is false"):
        load_dataset("svhn", root=str(tmp_path), download=False)

    def offline(*args: object, **kwargs: object) -> None:
        raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(torchvision.datasets, "SVHN", offline)
    with pytest.raises(DataError, match="downloading it failed"):
        load_dataset("svhn", root=str(tmp_path), download=True)


def test_train_and_test_samples_give_seeded_stratified_subsets() -> None:
    from fedsim.config import from_dict
    from fedsim.errors import ConfigError
    from fedsim.workload import dataset_for

    raw = {"dp": {"enabled": False}, "data": {"train_samples": 300, "test_samples": 100}}
    cfg = from_dict(raw)
    full = load_dataset("pneumoniamnist", seed=0)
    small = dataset_for(cfg.data, 0)
    assert (len(small.train), len(small.test), len(small.val)) == (300, 100, len(full.val))
    # stratified: class shares within one sample of the full pool's
    share = np.bincount(full.train.y) / len(full.train)
    assert np.all(np.abs(np.bincount(small.train.y) - 300 * share) <= 1)
    other = dataset_for(cfg.data, 1)
    assert not np.array_equal(small.train.x, other.train.x)
    again = dataset_for(from_dict(raw).data, 0)
    assert np.array_equal(small.train.x, again.train.x)
    too_many = from_dict({"dp": {"enabled": False}, "data": {"test_samples": 10**6}})
    with pytest.raises(ConfigError, match=r"data\.test_samples"):
        dataset_for(too_many.data, 0)
