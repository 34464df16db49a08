"""Downloadable datasets: MNIST, CIFAR-10 and SVHN, in torchvision's on-disk formats.

The default root is ``~/.cache/fedsim/<name>``; ``data.root`` overrides it.

- MNIST, CIFAR-10 and SVHN: torchvision refuses files whose md5 differs from the official
  release (and its MNIST reader fails with assertions on damaged files), so fedsim reads
  the files itself, in the same format torchvision reads (``<root>/MNIST/raw/*-ubyte``
  IDX files; ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``
  pickles; ``<root>/{train,test}_32x32.mat`` MATLAB files), and uses torchvision only to download
  missing files (which then are md5-checked by torchvision). CIFAR-10 batches are Python
  pickles: load only files you trust, as with torchvision.

Images are converted to ``float32`` NCHW in ``[0, 1]`` in one vectorised step per split.
"""

from __future__ import annotations

import functools
import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.data.convert import make_split
from fedsim.data.idx import read_idx
from fedsim.data.types import SourceArgs, SourceSplits, Split, max_label
from fedsim.errors import DataError

__all__ = ["default_root", "load_cifar10", "load_mnist", "load_svhn"]

logger = logging.getLogger(__name__)

# Errors torchvision raises for missing, corrupt or undownloadable files.
_LOAD_ERRORS = (RuntimeError, OSError, ValueError, TypeError, EOFError)

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
CIFAR10_META = "batches.meta"
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
DIGITS = tuple(str(i) for i in range(10))


def default_root(name: str) -> Path:
    """The default download folder of dataset ``name``: ``~/.cache/fedsim/<name>``."""
    return Path("~/.cache/fedsim").expanduser() / name


def _root(args: SourceArgs, name: str) -> Path:
    return Path(args.root).expanduser() if args.root else default_root(name)


def _missing(name: str, looked: Path, args: SourceArgs, exc: BaseException | None) -> DataError:
    """The error for a dataset that is absent and could not be downloaded."""
    if args.download:
        why = f"downloading it failed ({exc})" if exc else "it could not be downloaded"
    else:
        why = "data.download is false"
    return DataError(
        f"data.root: {name} not found in {looked} and {why}. Set data.download: true on a "
        f"machine with internet access to fetch it into data.root (default "
        f"{default_root(name)}), or set data.root to a folder that already holds it"
    )


MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def load_mnist(args: SourceArgs) -> SourceSplits:
    """Load MNIST (LeCun et al., 1998): 60k/10k 28×28 grey digits.

    The uncompressed IDX files
    ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` are read by fedsim
    (:func:`~fedsim.data.idx.read_idx`, which checks them);
    :class:`torchvision.datasets.MNIST` only downloads missing files.
    """
    import torchvision.datasets  # imported on use: torchvision is slow to load

    root = _root(args, "mnist")
    raw = root / "MNIST" / "raw"
    splits: dict[bool, Split] = {}
    for train, (x_name, y_name) in MNIST_FILES.items():
        if not ((raw / x_name).is_file() and (raw / y_name).is_file()):
            fetch = functools.partial(
                torchvision.datasets.MNIST, str(root), train=train, download=True
            )
            _download(fetch, "mnist", raw, args)
        splits[train] = make_split(
            read_idx(raw / x_name, ndim=3),
            read_idx(raw / y_name, ndim=1),
            f"data.root ({root})",
            f"MNIST/raw/{x_name}",
            f"MNIST/raw/{y_name}",
        )
    if max_label(splits.values()) > 9:
        raise DataError(f"data.root ({root}): MNIST labels must be in 0..9")
    return SourceSplits(train=splits[True], val=None, test=splits[False], class_names=DIGITS)


def load_cifar10(args: SourceArgs) -> SourceSplits:
    """Load CIFAR-10 (Krizhevsky, 2009): 50k/10k 32×32 RGB images, 10 classes."""
    import torchvision.datasets  # imported on use: torchvision is slow to load

    root = _root(args, "cifar10")
    folder = root / CIFAR10_FOLDER
    needed = [folder / f for f in (*CIFAR10_TRAIN, CIFAR10_TEST, CIFAR10_META)]
    if not all(p.is_file() for p in needed):
        fetch = functools.partial(
            torchvision.datasets.CIFAR10, str(root), train=True, download=True
        )
        _download(fetch, "cifar10", folder, args)
    where = f"data.root ({root})"
    train_parts = [_read_cifar_batch(folder / f) for f in CIFAR10_TRAIN]
    train = make_split(
        np.concatenate([x for x, _ in train_parts]),
        np.concatenate([y for _, y in train_parts]),
        where,
        f"{CIFAR10_FOLDER}/data_batch_* images",
        f"{CIFAR10_FOLDER}/data_batch_* labels",
        channels_first=True,
    )
    x_test, y_test = _read_cifar_batch(folder / CIFAR10_TEST)
    test = make_split(
        x_test,
        y_test,
        where,
        f"{CIFAR10_FOLDER}/{CIFAR10_TEST} images",
        f"{CIFAR10_FOLDER}/{CIFAR10_TEST} labels",
        channels_first=True,
    )
    names = _read_cifar_meta(folder / CIFAR10_META)
    top = max_label((train, test))
    if top >= len(names):
        raise DataError(f"{where}: CIFAR-10 labels must be < {len(names)}; got {top}")
    return SourceSplits(train=train, val=None, test=test, class_names=names)


def _read_cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR batch pickle: ``data`` (N, 3072) uint8 and ``labels`` (N,)."""
    entry = _unpickle(file)
    data, labels = entry.get("data"), entry.get("labels", entry.get("fine_labels"))
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"CIFAR batch {file}: 'data' must be an array of shape (N, 3072); got "
            f"{getattr(data, 'shape', type(data).__name__)}"
        )
    if labels is None:
        raise DataError(f"CIFAR batch {file}: needs a 'labels' entry")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels)


def _read_cifar_meta(file: Path) -> tuple[str, ...]:
    names = _unpickle(file).get("label_names")
    if not isinstance(names, list | tuple) or not names:
        raise DataError(f"CIFAR metadata {file}: needs a non-empty 'label_names' list")
    return tuple(str(n) for n in names)


def _unpickle(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as fh:
            entry = pickle.load(fh, encoding="latin1")
    except Exception as exc:  # unpickling a damaged file can raise any exception type
        raise DataError(f"cannot read {file}: {exc}") from exc
    if not isinstance(entry, dict):
        raise DataError(f"{file}: expected a pickled dict; got {type(entry).__name__}")
    return entry


def load_svhn(args: SourceArgs) -> SourceSplits:
    """Load SVHN (Netzer et al., 2011) cropped digits: 73,257/26,032 32×32 RGB, 10 classes.

    Label 10 in the files means digit 0, as in torchvision.
    """
    import scipy.io  # optional at import time, as in torchvision
    import torchvision.datasets

    root = _root(args, "svhn")
    splits: dict[str, Split] = {}
    for split_name, filename in SVHN_FILES.items():
        file = root / filename
        if not file.is_file():
            fetch = functools.partial(
                torchvision.datasets.SVHN, str(root), split=split_name, download=True
            )
            _download(fetch, "svhn", file, args)
        try:
            mat = scipy.io.loadmat(str(file))
        except Exception as exc:  # scipy's MATLAB reader raises many types on damaged files
            raise DataError(f"data.root ({root}): cannot read {filename}: {exc}") from exc
        x, y = mat.get("X"), mat.get("y")
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[2] != 3:
            raise DataError(
                f"data.root ({root}): {filename} key 'X' must have shape (H, W, 3, N); got "
                f"{getattr(x, 'shape', None)}"
            )
        if not isinstance(y, np.ndarray):
            raise DataError(f"data.root ({root}): {filename} needs a key 'y'")
        labels = y.reshape(-1) if y.size == x.shape[3] else y  # make_split checks values
        labels = np.where(labels == 10, 0, labels)
        splits[split_name] = make_split(
            x.transpose(3, 2, 0, 1),
            labels,
            f"data.root ({root})",
            f"{filename} key 'X'",
            f"{filename} key 'y'",
            channels_first=True,
        )
        if max_label([splits[split_name]]) > 9:
            raise DataError(f"data.root ({root}): {filename} labels must be in 1..10")
    return SourceSplits(train=splits["train"], val=None, test=splits["test"], class_names=DIGITS)


def _download(fetch: Callable[[], object], name: str, looked: Path, args: SourceArgs) -> None:
    """Run torchvision's downloader ``fetch()`` if allowed, else raise :class:`DataError`."""
    if not args.download:
        raise _missing(name, looked, args, None)
    logger.info("downloading %s into %s", name, looked.parent)
    try:
        fetch()
    except _LOAD_ERRORS as exc:
        raise _missing(name, looked, args, exc) from exc
