"""Broken user data files: each gives one DataError naming the file, never a traceback.

Faults are injected through the real loading path (:func:`fedsim.data.load_dataset`) and,
for one of each kind, through ``fedsim validate`` (exit 2, no traceback).
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedsim.data import load_dataset
from fedsim.data.limits import MAX_IMAGE_PIXELS
from fedsim.errors import DataError

X = np.arange(20 * 16, dtype=np.uint8).reshape(20, 4, 4)
Y = np.arange(20) % 2


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    load_dataset.cache_clear()
    yield
    load_dataset.cache_clear()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def zip_bytes(**members: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
    return buf.getvalue()


def load_npz_bytes(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "site.npz"
    path.write_bytes(content)
    load_dataset("npz", path=str(path))


def nan_images() -> np.ndarray:
    out = X.astype(np.float32) / 255
    out[3, 1, 1] = np.nan
    out[5, 0, 0] = np.inf
    return out


GOOD = npz_bytes(train_images=X, train_labels=Y)

NPZ_FAULTS = {
    "empty": (b"", r"file is empty \(0 bytes\)"),
    "truncated": (GOOD[: len(GOOD) // 2], "not an .npz archive"),
    "not a zip": (b"x,y\n1,2\n", r"not an .npz archive \(not a zip file"),
    "npy, not npz": (npy_bytes(X), "not an .npz archive"),
    "corrupt member": (
        GOOD[:120] + bytes(40) + GOOD[160:],
        "key 'train_images' is damaged or not a .npy array",
    ),
    "member not npy": (
        zip_bytes(**{"train_images.npy": b"xx", "train_labels.npy": b"yy"}),
        "key 'train_images' is damaged or not a .npy array",
    ),
    "lying header": (
        zip_bytes(**{"train_images.npy": npy_bytes(X)[:-50], "train_labels.npy": npy_bytes(Y)}),
        r"key 'train_images' is truncated or corrupt: its header declares a uint8 array of "
        r"shape \(20, 4, 4\)",
    ),
    "object array": (
        npz_bytes(train_images=X, train_labels=np.array(list(Y), dtype=object)),
        "key 'train_labels' holds an array of dtype object .*allow_pickle=False",
    ),
    "missing labels": (npz_bytes(train_images=X), "key 'train_images' needs key 'train_labels'"),
    "string images": (
        npz_bytes(train_images=X.astype(str), train_labels=Y),
        "key 'train_images': images must be uint8 .*; got dtype <U3",
    ),
    "complex images": (
        npz_bytes(train_images=X.astype(complex), train_labels=Y),
        "got dtype complex128",
    ),
    "string labels": (
        npz_bytes(train_images=X, train_labels=Y.astype(str)),
        "key 'train_labels': labels must be integers; got dtype <U",
    ),
    "labels 2-D": (
        npz_bytes(train_images=X, train_labels=np.zeros((20, 3))),
        r"labels must have shape \(N,\) or \(N, 1\); got shape \(20, 3\)",
    ),
    "images 5-D": (
        npz_bytes(train_images=X[:, None, None], train_labels=Y),
        r"images must have shape \(N, H, W\), \(N, H, W, C\) or \(N, C, H, W\)",
    ),
    "images 1-D": (npz_bytes(train_images=X[:, 0, 0], train_labels=Y), "images must have shape"),
    "0-pixel images": (
        npz_bytes(train_images=np.zeros((20, 0, 4), np.uint8), train_labels=Y),
        "images must be at least 1×1 pixels",
    ),
    "length mismatch": (
        npz_bytes(train_images=X, train_labels=Y[:7]),
        "key 'train_labels' has 7 entries but key 'train_images' has 20",
    ),
    "negative label": (
        npz_bytes(train_images=X, train_labels=Y - 1),
        "labels must be >= 0; got -1 at index 0",
    ),
    "label >= classes": (
        npz_bytes(train_images=X, train_labels=Y + 1, class_names=np.array(["a", "b"])),
        r"labels must be < the number of class names \(2\); got label 2",
    ),
    "huge label": (
        npz_bytes(train_images=X, train_labels=Y * 10**12),
        "labels must be < 100000 .*got label 1000000000000",
    ),
    "float labels": (
        npz_bytes(train_images=X, train_labels=Y + 0.5),
        "labels must be whole numbers; got 20 non-integral values, first 0.5 at index 0",
    ),
    "NaN labels": (
        npz_bytes(train_images=X, train_labels=np.where(Y == 1, np.nan, 0.0)),
        "got 10 non-integral values, first nan at index 1",
    ),
    "NaN pixels": (
        npz_bytes(train_images=nan_images(), train_labels=Y),
        r"float images must be finite; found 2 NaN/Inf values in 2 images \(first: image 3\)",
    ),
    "pixels > 1": (
        npz_bytes(train_images=X.astype(np.float32), train_labels=Y),
        r"float images must be in \[0, 1\]; got values in \[0, 255\] \(316 values outside",
    ),
    "duplicate class names": (
        npz_bytes(train_images=X, train_labels=Y, class_names=np.array(["a", "a"])),
        "must name each class once; repeated: 'a'",
    ),
    "single class": (
        npz_bytes(train_images=X, train_labels=Y * 0),
        r"the training data has 1 class \('0' \(label 0\)\); a classifier needs at least 2",
    ),
    "unseen test class": (
        npz_bytes(
            train_images=X,
            train_labels=Y,
            test_images=X[:3],
            test_labels=np.array([0, 1, 2]),
            class_names=np.array(["cat", "dog", "eel"]),
        ),
        r"the test split has classes with no training samples: 'eel' \(label 2\)",
    ),
}


@pytest.mark.parametrize("fault", list(NPZ_FAULTS))
def test_npz_fault_is_one_data_error_naming_the_file(tmp_path: Path, fault: str) -> None:
    content, message = NPZ_FAULTS[fault]
    where = re.escape(f"data.path ({tmp_path / 'site.npz'})")
    with pytest.raises(DataError, match=f"^{where}: .*{message}"):
        load_npz_bytes(tmp_path, content)


def test_npz_uint16_images_scale_by_65535(tmp_path: Path) -> None:
    images = (np.arange(20 * 16).reshape(20, 4, 4) * 200).astype(np.uint16)
    path = tmp_path / "x.npz"
    np.savez(path, train_images=images, train_labels=Y, test_images=images, test_labels=Y)
    b = load_dataset("npz", path=str(path), val_size=2)
    assert np.allclose(b.test.x[:, 0], images / 65535, atol=1e-7)


def test_npz_zip_bomb_header_is_rejected_before_reading(tmp_path: Path) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (10**7, 2000, 2000)}
    )
    bomb = zip_bytes(**{"train_images.npy": header.getvalue(), "train_labels.npy": npy_bytes(Y)})
    with pytest.raises(DataError, match="key 'train_images' is truncated or corrupt"):
        load_npz_bytes(tmp_path, bomb)


# --- image folders --------------------------------------------------------------------


def png_bytes(size: tuple[int, int] = (6, 5), seed: int = 0, mode: str = "L") -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8)).convert(mode).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def image_folder(root: Path, classes: tuple[str, ...] = ("a", "b"), n: int = 3) -> Path:
    for c in classes:
        (root / "train" / c).mkdir(parents=True)
        for i in range(n):
            (root / "train" / c / f"{i}.png").write_bytes(png_bytes(seed=i))
    return root


def test_16_bit_png_keeps_relative_values(tmp_path: Path) -> None:
    """A 16-bit grey gradient loads as value / 65535, not saturated at 1."""
    gradient = (np.arange(5 * 6).reshape(5, 6) * 2000).astype(np.uint16)
    for split, c in (("train", "a"), ("train", "b"), ("test", "a"), ("test", "b")):
        (tmp_path / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.fromarray(gradient + i).save(tmp_path / split / c / f"{i}.png")
    assert Image.open(tmp_path / "test" / "a" / "0.png").mode == "I;16"
    b = load_dataset("imagefolder", path=str(tmp_path), val_size=2)
    assert b.input_shape == (1, 5, 6)
    assert np.allclose(b.test.x[0, 0], gradient / 65535, atol=1e-6)
    assert float((b.test.x >= 1.0).mean()) == 0.0  # nothing saturated
    ratio = b.test.x[0, 0, 4, 5] / b.test.x[0, 0, 0, 1]
    assert ratio == pytest.approx(29 * 2000 / 2000)


def test_16_bit_png_in_a_colour_folder_is_scaled_too(tmp_path: Path) -> None:
    image_folder(tmp_path)
    Image.fromarray(np.full((5, 6), 32768, np.uint16)).save(tmp_path / "train" / "a" / "x.png")
    (tmp_path / "train" / "b" / "c.png").write_bytes(png_bytes(mode="RGB"))
    b = load_dataset("imagefolder", path=str(tmp_path), val_size=1)
    everything = np.concatenate([b.train.x, b.val.x, b.test.x])
    assert b.input_shape == (3, 5, 6)
    assert np.isclose(everything, 32768 / 65535).all(axis=(1, 2, 3)).sum() == 1


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def _tiff(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, format="TIFF")
    return buf.getvalue()


IMAGE_FAULTS = {
    "0-byte": ("train/a/bad.png", b"", r"cannot read image .*bad.png: cannot identify"),
    "truncated": (
        "train/a/bad.png",
        png_bytes()[:60],  # header intact, pixel data cut
        r"cannot read image .*bad.png: image file is truncated",
    ),
    "text file": ("train/a/bad.jpg", b"not an image", r"cannot read image .*bad.jpg"),
    "oversized": (
        "train/a/bad.png",
        png_bytes((6000, 6000), mode="1"),
        rf"image .*bad.png is 6000×6000 pixels; fedsim reads images of 1 to "
        rf"{MAX_IMAGE_PIXELS} pixels",
    ),
    "other size": (
        "train/a/bad.png",
        png_bytes((7, 7)),
        r"all images must have the same size; .*bad.png is 7×7",
    ),
    "float out of range": (
        "train/a/bad.tif",
        _tiff(np.full((5, 6), 2.0, np.float32)),
        r"image .*bad.tif \(32-bit float\): float images must be in \[0, 1\]",
    ),
    "float NaN": (
        "train/a/bad.tif",
        _tiff(np.full((5, 6), np.nan, np.float32)),
        r"image .*bad.tif \(32-bit float\): float images must be finite; found 30 NaN/Inf",
    ),
    "32-bit beyond 16 bits": (
        "train/a/bad.tif",
        _tiff(np.full((5, 6), 70000, np.int32)),
        r"image .*bad.tif is 32-bit integer with values in \[70000, 70000\]",
    ),
    "empty class folder": (
        "train/c/notes.txt",
        b"hi",
        "class folders without image files .*: train/c/",
    ),
    "unknown test class": (
        "test/zebra/0.png",
        png_bytes(),
        "test/ has class folders not in train/: zebra",
    ),
    "empty test folder": ("test/readme.txt", b"hi", "test/ has no class folders"),
}


@pytest.mark.parametrize("fault", list(IMAGE_FAULTS))
def test_image_fault_is_one_data_error_naming_the_file(tmp_path: Path, fault: str) -> None:
    relative, content, message = IMAGE_FAULTS[fault]
    image_folder(tmp_path)
    _write(tmp_path / relative, content)
    with pytest.raises(DataError, match=f"^{re.escape(f'data.path ({tmp_path})')}: {message}"):
        load_dataset("imagefolder", path=str(tmp_path))


def test_image_folder_without_classes_or_with_one(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="train/ has no class folders"):
        load_dataset("imagefolder", path=str(tmp_path))
    image_folder(tmp_path, classes=("only",))
    with pytest.raises(DataError, match=r"has 1 class \('only' \(label 0\)\); a classifier"):
        load_dataset("imagefolder", path=str(tmp_path))


def test_test_class_emptied_in_training_is_named(tmp_path: Path) -> None:
    """A test class whose training folder is empty cannot slip through as unseen."""
    image_folder(tmp_path, classes=("a", "b", "c"))
    for f in (tmp_path / "train" / "c").iterdir():
        f.unlink()
    _write(tmp_path / "test" / "c" / "0.png", png_bytes())
    with pytest.raises(DataError, match=r"class folders without image files .*: train/c/"):
        load_dataset("imagefolder", path=str(tmp_path))


def test_idx_and_pickle_faults_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + bytes(8))
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError, match=r"IDX file .*train-images-idx3-ubyte is truncated"):
        load_dataset("fashion-mnist", root=str(tmp_path))
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"\x80\x05garbage")
    with pytest.raises(DataError, match=r"cannot read .*data_batch_1"):
        load_dataset("cifar10", root=str(tmp_path), download=False)


# --- through the CLI ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "message"),
    [("npz", "file is empty (0 bytes)"), ("imagefolder", "cannot read image")],
)
def test_validate_exits_2_without_traceback(tmp_path: Path, kind: str, message: str) -> None:
    if kind == "npz":
        data = tmp_path / "site.npz"
        data.write_bytes(b"")
    else:
        data = image_folder(tmp_path / "folder")
        _write(data / "train" / "a" / "bad.png", png_bytes()[:60])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{name: {kind}, path: {data}}}\ndp: {{epsilon: 1}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "validate", str(cfg)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr and str(data) in proc.stderr
