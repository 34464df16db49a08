"""Value types of the data layer: an image split, a loaded dataset, and what a source returns.

All inputs are ``float32`` arrays in NCHW layout with values in ``[0, 1]`` (a tabular
row of ``d`` features is a ``1 × 1 × d`` "image"). Targets are ``int64`` class indices
``0..K-1`` for a classification task, or ``float32`` values in ``(0, 1]`` for a
regression task (:attr:`Split.task`). The types check these invariants when built, so a
:class:`Split` that exists is a valid one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fedsim.data.fit import ImageSpec
from fedsim.errors import DataError

__all__ = ["DatasetBundle", "SourceArgs", "SourceSplits", "Split", "TaskKind", "max_label"]

TaskKind = Literal["classification", "regression"]
"""What a dataset's targets are: class labels or numeric values."""


@dataclass(frozen=True)
class Split:
    """Images and labels of one split.

    Parameters
    ----------
    x
        ``float32`` images of shape ``(N, C, H, W)`` with values in ``[0, 1]``.
    y
        ``int64`` labels of shape ``(N,)`` (classification), or ``float32`` targets of
        shape ``(N,)`` (regression).
    sites
        ``int64`` site indices of shape ``(N,)`` for data labelled by site (natural
        partitions; names in :attr:`DatasetBundle.site_names`), else ``None``.

    Raises
    ------
    DataError
        If the dtypes, ranks or lengths are wrong (the value range is checked by the
        loaders, where it is cheap to do so).
    """

    x: np.ndarray
    y: np.ndarray
    sites: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.x, np.ndarray) or self.x.dtype != np.float32 or self.x.ndim != 4:
            raise DataError(
                f"Split.x must be a float32 array of shape (N, C, H, W); got {_describe(self.x)}"
            )
        if (
            not isinstance(self.y, np.ndarray)
            or self.y.dtype not in (np.int64, np.float32)
            or self.y.ndim != 1
        ):
            raise DataError(
                "Split.y must be an int64 (labels) or float32 (regression targets) array of "
                f"shape (N,); got {_describe(self.y)}"
            )
        if len(self.x) != len(self.y):
            raise DataError(
                f"Split.y must have one label per image: {len(self.x)} images but "
                f"{len(self.y)} labels"
            )
        if self.sites is not None and (
            not isinstance(self.sites, np.ndarray)
            or self.sites.dtype != np.int64
            or self.sites.shape != self.y.shape
        ):
            raise DataError(
                f"Split.sites must be an int64 array of shape ({len(self.y)},); got "
                f"{_describe(self.sites)}"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def task(self) -> TaskKind:
        """``regression`` for float targets, ``classification`` for integer labels."""
        return "regression" if self.y.dtype == np.float32 else "classification"

    @property
    def strata(self) -> np.ndarray:
        """``int64`` groups to stratify or partition by: the labels, or one group of all
        samples for regression targets."""
        return strata_of(self.y)

    @property
    def holdout_strata(self) -> np.ndarray:
        """``int64`` groups to carve held-out samples by: :attr:`strata`, within each
        site when the split is labelled by site (so every site gives its share)."""
        return holdout_strata_of(self.y, self.sites)

    def subset(self, idx: np.ndarray) -> Split:
        """Return the samples at ``idx`` (integer indices or a boolean mask) as a new split.

        The result holds copies, so it is writable even when this split is read-only.
        """
        index = sample_index(idx, "Split.subset")
        sites = None if self.sites is None else self.sites[index]
        return Split(x=self.x[index], y=self.y[index], sites=sites)


@dataclass(frozen=True)
class DatasetBundle:
    """A loaded dataset: the training pool and the server's two splits.

    Parameters
    ----------
    name
        The registered dataset name (``data.name``).
    train
        The training pool, partitioned across clients.
    val
        The server's public/auxiliary validation split (SecProbe utilities, per-layer
        clipping estimates, int8 calibration).
    test
        The server's test split.
    num_classes
        Number of classes ``K``; every label is in ``0..K-1``. A regression dataset has
        ``K = 1`` (one model output) and its targets in ``(0, 1]``.
    class_names
        One name per class, ``len(class_names) == num_classes`` (regression: the target's
        name).
    site_names
        For data labelled by site: one name per site, indexed by ``train.sites``
        (sorted); else empty.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...]
    site_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.num_classes < 1 or len(self.class_names) != self.num_classes:
            raise DataError(
                f"dataset {self.name!r}: num_classes ({self.num_classes}) must be >= 1 and "
                f"equal the number of class names ({len(self.class_names)})"
            )
        sites = self.train.sites
        if sites is not None and len(sites) and int(sites.max()) >= len(self.site_names):
            raise DataError(
                f"dataset {self.name!r}: site indices must be < the number of site names "
                f"({len(self.site_names)}); got {int(sites.max())}"
            )
        shape = self.train.x.shape[1:]
        for split_name, split in (("train", self.train), ("val", self.val), ("test", self.test)):
            if split.task != self.train.task:
                raise DataError(
                    f"dataset {self.name!r}: {split_name} has {split.task} targets but train "
                    f"has {self.train.task} targets"
                )
            if split.x.shape[1:] != shape:
                raise DataError(
                    f"dataset {self.name!r}: {split_name} images have shape "
                    f"{split.x.shape[1:]} but train images have {shape}"
                )
            if (
                split.task == "classification"
                and len(split)
                and (split.y.min() < 0 or split.y.max() >= self.num_classes)
            ):
                raise DataError(
                    f"dataset {self.name!r}: {split_name} labels must be in "
                    f"0..{self.num_classes - 1}; got {split.y.min()}..{split.y.max()}"
                )

    @property
    def task(self) -> TaskKind:
        """``classification`` or ``regression`` (from the targets' dtype)."""
        return self.train.task

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The ``(C, H, W)`` shape of one image."""
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)


@dataclass(frozen=True)
class SourceArgs:
    """What a registered source loader receives from :func:`fedsim.data.load_dataset`.

    Parameters
    ----------
    path
        ``data.path``: a file or folder (``npz``, ``imagefolder``; optional elsewhere).
    root
        ``data.root``: the folder of a downloadable or system-installed dataset.
    download
        ``data.download``: whether a missing downloadable dataset may be fetched.
    target
        ``data.target``: the target column of a tabular file (``None``: the last one).
    image
        The declared input (``data.image_size``, ``data.channels``, ``data.resize``);
        an image folder fits each image to it while decoding.
    sites
        Read the data's site labels (``data.partition: natural``): an image folder's site
        level, an ``npz`` archive's ``train_sites``.
    """

    path: str | None = None
    root: str | None = None
    download: bool = True
    target: str | None = None
    image: ImageSpec = field(default_factory=ImageSpec)
    sites: bool = False


@dataclass(frozen=True)
class SourceSplits:
    """The splits a source provides, before missing validation/test splits are carved.

    Parameters
    ----------
    train
        The training split.
    val, test
        The source's own validation and test splits, or ``None`` when it has none.
    class_names
        One name per class; its length is the number of classes.
    site_names
        One name per site of ``train.sites`` (data labelled by site), else empty.
    """

    train: Split
    val: Split | None
    test: Split | None
    class_names: tuple[str, ...]
    site_names: tuple[str, ...] = ()


def max_label(splits: Iterable[Split]) -> int:
    """The largest label of ``splits``, or ``-1`` when they hold no sample."""
    return max((int(s.y.max()) for s in splits if len(s)), default=-1)


def strata_of(y: np.ndarray) -> np.ndarray:
    """:attr:`Split.strata` of targets ``y``: the labels, or one group for regression."""
    return y if y.dtype != np.float32 else np.zeros(len(y), np.int64)


def holdout_strata_of(y: np.ndarray, sites: np.ndarray | None) -> np.ndarray:
    """:attr:`Split.holdout_strata` of targets ``y`` and site indices ``sites``."""
    if sites is None:
        return strata_of(y)
    pairs = np.stack([sites, strata_of(y)])
    _, groups = np.unique(pairs, axis=1, return_inverse=True)
    return groups.reshape(-1).astype(np.int64)


def sample_index(idx: np.ndarray, where: str) -> np.ndarray:
    """``idx`` checked as a 1-D integer or boolean index of samples (empty: ``int64``)."""
    index = np.asarray(idx)
    if index.ndim != 1 or not (
        np.issubdtype(index.dtype, np.integer) or index.dtype == np.bool_ or index.size == 0
    ):
        raise DataError(
            f"{where}: idx must be a 1-D integer or boolean array; got {_describe(index)}"
        )
    if index.size == 0:
        index = index.astype(np.int64)
    return index


def _describe(value: object) -> str:
    """Short description of an array-like for error messages."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__
