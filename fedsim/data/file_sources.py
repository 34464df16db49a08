"""Loaders for datasets stored as local files: ``npz``, ``pneumoniamnist``, ``fashion-mnist``.

Each loader takes :class:`~fedsim.data.types.SourceArgs` and returns the splits the files
hold (:class:`~fedsim.data.types.SourceSplits`); :func:`fedsim.data.load_dataset` carves
the missing validation/test splits.
"""

from __future__ import annotations

import logging
from collections import Counter
from importlib import resources
from pathlib import Path

import numpy as np

from fedsim.data.convert import make_split
from fedsim.data.idx import read_idx
from fedsim.data.limits import MAX_CLASSES
from fedsim.data.npzfile import read_npz_arrays
from fedsim.data.types import SourceArgs, SourceSplits, Split, max_label
from fedsim.errors import DataError

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_ROOT",
    "PNEUMONIAMNIST_CLASSES",
    "load_fashion_mnist",
    "load_npz",
    "load_pneumoniamnist",
    "read_npz",
]

logger = logging.getLogger(__name__)

# (images key, labels key) pairs per split, in order of preference.
_NPZ_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "train": (("train_images", "train_labels"), ("x_train", "y_train")),
    "val": (("val_images", "val_labels"), ("x_val", "y_val")),
    "test": (("test_images", "test_labels"), ("x_test", "y_test")),
}
_CLASS_NAMES_KEY = "class_names"
_SITES_KEY = "train_sites"

PNEUMONIAMNIST_CLASSES = ("normal", "pneumonia")

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
"""Where Debian's ``dataset-fashion-mnist`` package installs the files."""

FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_CLASSES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)


def read_npz(
    file: Path,
    where: str,
    class_names: tuple[str, ...] | None = None,
    sites: bool = False,
) -> SourceSplits:
    """Read an ``.npz`` archive of image splits.

    Parameters
    ----------
    file
        The archive. Required keys: ``train_images`` and ``train_labels`` (or ``x_train``
        and ``y_train``); optional: ``val_images``/``val_labels`` (``x_val``/``y_val``),
        ``test_images``/``test_labels`` (``x_test``/``y_test``), ``class_names`` (1-D
        strings) and ``train_sites`` (one site per training image: integers or strings).
        Images and labels as accepted by :func:`~fedsim.data.convert.make_split`.
    where
        How the file was named, e.g. ``"data.path (/data/x.npz)"``, for error messages.
    class_names
        Class names to use when the archive has none; by default ``"0", "1", ...`` up to
        the largest label.
    sites
        Read ``train_sites`` (required then): the site of each training image.

    Raises
    ------
    DataError
        If the file is missing or unreadable, or a key is missing or malformed; the
        message names the file, the key, the rule and the value.
    """
    wanted = [k for pairs in _NPZ_KEYS.values() for pair in pairs for k in pair]
    keys, arrays = read_npz_arrays(file, where, [*wanted, _CLASS_NAMES_KEY, _SITES_KEY])
    splits: dict[str, Split | None] = {
        split_name: _read_npz_split(arrays, keys, split_name, candidates, where)
        for split_name, candidates in _NPZ_KEYS.items()
    }
    stored_names = (
        _read_class_names(arrays[_CLASS_NAMES_KEY], where) if _CLASS_NAMES_KEY in arrays else None
    )
    train = splits["train"]
    if train is None:
        raise DataError(
            f"{where}: needs keys 'train_images' and 'train_labels' (or 'x_train' and "
            f"'y_train'); found {sorted(keys)}"
        )
    for split_name, split in splits.items():
        if split is not None and split.x.shape[1:] != train.x.shape[1:]:
            x_key = next(x for x, _ in _NPZ_KEYS[split_name] if x in keys)
            raise DataError(
                f"{where}: key {x_key!r} holds images of shape {split.x.shape[1:]} (C, H, W) "
                f"but the training images are {train.x.shape[1:]}"
            )
    top = max_label(s for s in splits.values() if s is not None)
    names = stored_names or class_names or _numbered_names(top, where)
    if top >= len(names):
        raise DataError(
            f"{where}: labels must be < the number of class names ({len(names)}); got label {top}"
        )
    site_names: tuple[str, ...] = ()
    if sites:
        if _SITES_KEY not in arrays:
            raise DataError(
                f"{where}: needs key {_SITES_KEY!r} (the site of each training image) for "
                f"data.partition 'natural'; found {sorted(keys)}"
            )
        site_ids, site_names = _read_sites(arrays[_SITES_KEY], len(train), where)
        train = Split(x=train.x, y=train.y, sites=site_ids)
    return SourceSplits(
        train=train,
        val=splits["val"],
        test=splits["test"],
        class_names=names,
        site_names=site_names,
    )


def _read_sites(value: np.ndarray, n: int, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Site indices (into the sorted distinct sites) and site names of ``train_sites``."""
    if value.ndim != 1 or len(value) != n or value.dtype.kind not in "iuUS":
        raise DataError(
            f"{where}: key {_SITES_KEY!r} must be a 1-D array of integers or strings with "
            f"one entry per training image ({n}); got {value.dtype} array of shape "
            f"{value.shape}"
        )
    distinct, ids = np.unique(value, return_inverse=True)
    names = tuple(str(v.decode() if isinstance(v, bytes) else v) for v in distinct.tolist())
    return ids.reshape(-1).astype(np.int64), names


def _read_npz_split(
    arrays: dict[str, np.ndarray],
    keys: frozenset[str],
    split_name: str,
    candidates: tuple[tuple[str, str], ...],
    where: str,
) -> Split | None:
    """Read one split's images and labels, or return ``None`` when neither key exists."""
    for x_key, y_key in candidates:
        if x_key in keys and y_key in keys:
            split = make_split(
                arrays[x_key], arrays[y_key], where, f"key {x_key!r}", f"key {y_key!r}"
            )
            if len(split) == 0:
                raise DataError(f"{where}: key {x_key!r} must hold at least one image; got 0")
            return split
        if x_key in keys or y_key in keys:
            have, missing = (x_key, y_key) if x_key in keys else (y_key, x_key)
            raise DataError(f"{where}: key {have!r} needs key {missing!r}, which is missing")
    return None


def _read_class_names(value: np.ndarray, where: str) -> tuple[str, ...]:
    """Validate the optional ``class_names`` entry."""
    if value.ndim != 1 or value.dtype.kind not in "US" or value.size == 0:
        raise DataError(
            f"{where}: key {_CLASS_NAMES_KEY!r} must be a non-empty 1-D array of strings; "
            f"got {value.dtype} array of shape {value.shape}"
        )
    names = tuple(str(v.decode() if isinstance(v, bytes) else v) for v in value.tolist())
    duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
    if duplicates:
        raise DataError(
            f"{where}: key {_CLASS_NAMES_KEY!r} must name each class once; repeated: "
            f"{', '.join(map(repr, duplicates))}"
        )
    return names


def _numbered_names(max_label: int, where: str) -> tuple[str, ...]:
    """Class names ``"0", "1", ...`` up to ``max_label``, within :data:`MAX_CLASSES`."""
    if max_label >= MAX_CLASSES:
        raise DataError(
            f"{where}: labels must be < {MAX_CLASSES} (the most classes fedsim infers without "
            f"a {_CLASS_NAMES_KEY!r} key); got label {max_label}"
        )
    return tuple(str(i) for i in range(max_label + 1))


def load_npz(args: SourceArgs) -> SourceSplits:
    """Load the ``.npz`` archive at ``data.path`` (see :func:`read_npz` for its keys)."""
    if args.path is None:
        raise DataError("data.path is required for dataset 'npz': the .npz file to load")
    file = Path(args.path).expanduser()
    return read_npz(file, f"data.path ({file})", sites=args.sites)


def load_pneumoniamnist(args: SourceArgs) -> SourceSplits:
    """Load PneumoniaMNIST (MedMNIST v2, CC BY 4.0): 28×28 grey chest X-rays, 2 classes.

    The archive ships inside the package (``fedsim/data/pneumoniamnist.npz``, see
    ``PNEUMONIAMNIST_LICENSE.md``) with its own train/val/test splits (4708/524/624);
    ``data.path`` may point to another copy in the same format.
    """
    if args.path is not None:
        file = Path(args.path).expanduser()
        return read_npz(file, f"data.path ({file})", PNEUMONIAMNIST_CLASSES)
    ref = resources.files("fedsim.data").joinpath("pneumoniamnist.npz")
    with resources.as_file(ref) as file:
        return read_npz(file, f"packaged pneumoniamnist ({file})", PNEUMONIAMNIST_CLASSES)


def load_fashion_mnist(args: SourceArgs) -> SourceSplits:
    """Load Fashion-MNIST (Xiao et al., 2017) from its four IDX files: 60k/10k, 28×28 grey.

    The files are read from ``data.root`` or, by default, from where Debian's
    ``dataset-fashion-mnist`` package installs them (:data:`FASHION_MNIST_ROOT`).
    Uncompressed copies (names without ``.gz``) are accepted too. Nothing is downloaded.
    """
    root = Path(args.root or FASHION_MNIST_ROOT).expanduser()
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in (n for pair in FASHION_MNIST_FILES.values() for n in pair):
        options = [root / name, root / name.removesuffix(".gz")]
        hit = next((p for p in options if p.is_file()), None)
        if hit is None:
            missing.append(name)
        else:
            found[name] = hit
    if missing:
        raise DataError(
            f"data.root: Fashion-MNIST files not found in {root}: missing {', '.join(missing)}. "
            "Install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or set "
            "data.root to a folder holding the four IDX files "
            f"({', '.join(n for pair in FASHION_MNIST_FILES.values() for n in pair)})"
        )
    splits = {}
    for split_name, (x_name, y_name) in FASHION_MNIST_FILES.items():
        images = read_idx(found[x_name], ndim=3)
        labels = read_idx(found[y_name], ndim=1)
        splits[split_name] = make_split(
            images, labels, f"data.root ({root})", f"file {x_name}", f"file {y_name}"
        )
    if max_label(splits.values()) >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"data.root ({root}): Fashion-MNIST labels must be in 0..9")
    logger.debug("read Fashion-MNIST from %s", root)
    return SourceSplits(
        train=splits["train"], val=None, test=splits["test"], class_names=FASHION_MNIST_CLASSES
    )
