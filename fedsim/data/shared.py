"""A training pool kept once per machine and mapped read-only by every worker.

In a simulation every Ray worker trains virtual clients on partitions of one training
pool. A worker that loaded the dataset itself would hold its own ``float32`` copy of the
pool (CIFAR-10: 0.6 GiB per worker). Instead the driver writes the pool once to ``.npy``
files (:func:`share_split`) and each worker maps them read-only (:func:`open_split`):
the operating system keeps one copy of the pages in its page cache, shared by all the
workers of the machine (and, being a clean file mapping, reclaimable under memory
pressure rather than pinned like a private copy or a full ``/dev/shm``).

A pool whose every image value is ``float32(k) / 255`` for an integer ``k`` — what an
8-bit source (PneumoniaMNIST, Fashion-MNIST, MNIST, CIFAR, SVHN, 8-bit PNG/JPEG folders)
gives unless its images were resized — is stored as ``uint8`` ``k``, a quarter of the
bytes (:func:`pack_images` checks every value, bit for bit); any other pool (16-bit
images, resized images, tables) is stored as ``float32``. :meth:`PooledSplit.subset`
turns the selected samples back to ``float32`` with the arithmetic of
:func:`fedsim.data.convert.images_to_nchw_float` (:func:`unpack_images`), so a worker's
client partition equals, bit for bit, the one it would have loaded itself.

A pool's folder is named by the SHA-256 digest of its content and written atomically
(a temporary folder renamed into place), so sharing the same pool twice writes it once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsim.data.types import Split, holdout_strata_of, sample_index, strata_of

__all__ = ["PoolFiles", "PooledSplit", "open_split", "pack_images", "share_split", "unpack_images"]

_FULL = 255.0  # the value of full intensity of an 8-bit image (fedsim.data.convert)
_CHUNK = 4096  # images checked at a time by pack_images (bounds its temporaries)


def unpack_images(packed: np.ndarray) -> np.ndarray:
    """``uint8`` images as ``float32`` in ``[0, 1]``: ``float32(k) / 255``, exactly as
    :func:`fedsim.data.convert.images_to_nchw_float` converts ``uint8`` data."""
    out = packed.astype(np.float32)
    out /= _FULL
    return out


def pack_images(x: np.ndarray) -> np.ndarray:
    """``x`` as ``uint8`` when :func:`unpack_images` gives it back bit for bit, else ``x``.

    >>> x = np.array([0, 1, 128, 255], np.uint8).astype(np.float32) / 255
    >>> pack_images(x).tolist()
    [0, 1, 128, 255]
    >>> pack_images(np.float32([0.3])).dtype
    dtype('float32')
    """
    out = np.empty(x.shape, np.uint8)
    for start in range(0, len(x), _CHUNK):
        part = np.ascontiguousarray(x[start : start + _CHUNK], dtype=np.float32)
        scaled = np.rint(part * np.float32(_FULL))
        if part.size and not (scaled.min() >= 0 and scaled.max() <= _FULL):
            return x
        codes = scaled.astype(np.uint8)
        if not np.array_equal(unpack_images(codes).view(np.uint32), part.view(np.uint32)):
            return x
        out[start : start + _CHUNK] = codes
    return out


@dataclass(frozen=True)
class PoolFiles:
    """Where a shared pool is: its folder (named by :attr:`digest`) of ``x.npy``,
    ``y.npy`` and, for data labelled by site, ``sites.npy``; ``packed``: its images are
    stored as ``uint8``."""

    folder: str
    digest: str
    packed: bool


@dataclass(frozen=True)
class PooledSplit:
    """A split as a shared pool stores it, mapped read-only.

    Parameters
    ----------
    x
        ``uint8`` images (``k`` stands for ``float32(k) / 255``) or ``float32`` images,
        shape ``(N, C, H, W)``.
    y, sites
        As in :class:`~fedsim.data.types.Split`.
    """

    x: np.ndarray
    y: np.ndarray
    sites: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def strata(self) -> np.ndarray:
        """As :attr:`Split.strata <fedsim.data.types.Split.strata>`."""
        return strata_of(self.y)

    @property
    def holdout_strata(self) -> np.ndarray:
        """As :attr:`Split.holdout_strata <fedsim.data.types.Split.holdout_strata>`."""
        return holdout_strata_of(self.y, self.sites)

    def subset(self, idx: np.ndarray) -> Split:
        """The samples at ``idx`` as a new, writable :class:`Split` of ``float32`` images."""
        index = sample_index(idx, "PooledSplit.subset")
        x = self.x[index]
        images = unpack_images(x) if x.dtype == np.uint8 else np.array(x)
        sites = None if self.sites is None else np.array(self.sites[index])
        return Split(x=images, y=np.array(self.y[index]), sites=sites)


def share_split(split: Split, directory: str | Path) -> PoolFiles:
    """Write ``split`` once under ``directory`` (images packed by :func:`pack_images`).

    Returns where it is; a pool already there (the same digest) is not written again.
    """
    images = pack_images(split.x)
    arrays = {"x": np.ascontiguousarray(images), "y": np.ascontiguousarray(split.y)}
    if split.sites is not None:
        arrays["sites"] = np.ascontiguousarray(split.sites)
    digest = hashlib.sha256()
    for name, arr in arrays.items():
        digest.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        digest.update(arr.data)  # C-contiguous: hashed without a copy
    root = Path(directory).absolute()  # workers may run in another directory
    folder = root / digest.hexdigest()
    if not folder.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".pool-", dir=root))
        try:
            for name, arr in arrays.items():
                np.save(staging / f"{name}.npy", arr, allow_pickle=False)
            os.replace(staging, folder)
        except OSError:
            if not folder.is_dir():  # not a concurrent writer of the same pool: a real error
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # left only when another won the race
    return PoolFiles(folder=str(folder), digest=digest.hexdigest(), packed=images.dtype == np.uint8)


def open_split(files: PoolFiles) -> PooledSplit:
    """Map a shared pool read-only (no copy: its pages stay in the page cache, shared)."""
    folder = Path(files.folder)

    def load(name: str) -> np.ndarray:
        return np.asarray(np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False))

    sites = load("sites") if (folder / "sites.npy").is_file() else None
    return PooledSplit(x=load("x"), y=load("y"), sites=sites)
