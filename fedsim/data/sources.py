"""The dataset registry and :func:`load_dataset`, the one way to load a dataset.

Each registered source returns the splits it has (:class:`~fedsim.data.types.SourceSplits`);
:func:`load_dataset` then carves the splits it lacks out of its training split and caches
the resulting :class:`~fedsim.data.types.DatasetBundle` per process.

Registered names, their files and their own splits:

- ``pneumoniamnist``: shipped in the package (or ``data.path``); train / val / test.
- ``fashion-mnist``: Debian's ``dataset-fashion-mnist`` (or ``data.root``); train / test.
- ``mnist``, ``cifar10``, ``svhn``: torchvision's formats under ``data.root``,
  downloadable; train / test.
- ``npz``: the archive at ``data.path``; train [/ val] [/ test] [, site of each
  training image].
- ``imagefolder``: the folder at ``data.path``: ``<class>/`` (train only) or ``train/``
  [/ ``val/``] [/ ``test/``], with a ``<site>/`` level above the training classes for
  data labelled by site.
- ``tabular``: the ``.csv``/``.npz`` table at ``data.path`` (regression); train.
- ``diabetes``: the shipped diabetes table (regression, 442 rows); train.

A regression source's validation and test splits are carved uniformly at random (there
are no classes to stratify by). Data labelled by site is carved within each site and
class, so every site keeps its share of the training pool.

Every image source's images are brought to the declared input (``data.image_size``,
``data.channels``, ``data.resize``; :mod:`fedsim.data.fit`) — an image folder while
decoding, the others after loading.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import numpy as np

from fedsim.data.carve import holdout_count, stratified_holdout
from fedsim.data.checks import check_classes
from fedsim.data.file_sources import load_fashion_mnist, load_npz, load_pneumoniamnist
from fedsim.data.fit import ImageSpec, fit_batch
from fedsim.data.imagefolder import load_imagefolder
from fedsim.data.limits import check_bytes
from fedsim.data.tabular import load_diabetes, load_tabular
from fedsim.data.torchvision_sources import load_cifar10, load_mnist, load_svhn
from fedsim.data.types import DatasetBundle, SourceArgs, SourceSplits, Split
from fedsim.errors import DataError
from fedsim.registry import Registry

__all__ = ["DATASETS", "Loader", "fit_source", "load_dataset"]

logger = logging.getLogger(__name__)

Loader = Callable[[SourceArgs], SourceSplits]
"""A source: reads the splits a dataset has from files named by :class:`SourceArgs`."""

DATASETS: Registry[Loader] = Registry("dataset", "data.name")
DATASETS.register("pneumoniamnist")(load_pneumoniamnist)
DATASETS.register("fashion-mnist")(load_fashion_mnist)
DATASETS.register("mnist")(load_mnist)
DATASETS.register("cifar10")(load_cifar10)
DATASETS.register("svhn")(load_svhn)
DATASETS.register("npz")(load_npz)
DATASETS.register("imagefolder")(load_imagefolder)
DATASETS.register("tabular")(load_tabular)
DATASETS.register("diabetes")(load_diabetes)


@functools.lru_cache(maxsize=4)
def load_dataset(
    name: str,
    *,
    path: str | None = None,
    root: str | None = None,
    download: bool = True,
    val_size: int | float | None = None,
    seed: int = 0,
    target: str | None = None,
    test_size: int | float | None = None,
    image: ImageSpec = ImageSpec(),  # noqa: B008 (frozen, hashable: lru_cache needs it)
    sites: bool = False,
) -> DatasetBundle:
    """Load dataset ``name`` with its training pool, server validation and test splits.

    Cached per process on the arguments (``functools.lru_cache``), so a worker loads a
    dataset once and every caller gets the same bundle: its arrays are read-only
    (:meth:`Split.subset` returns writable copies).

    Parameters
    ----------
    name
        A registered dataset (:data:`DATASETS`), ``data.name``.
    path
        ``data.path``: the file (``npz``) or folder (``imagefolder``) to read; optional
        for ``pneumoniamnist`` (another copy of the archive), ignored by the others.
    root
        ``data.root``: folder of ``fashion-mnist`` (default
        ``/usr/share/datasets/fashion-mnist``) or of a downloadable dataset (default
        ``~/.cache/fedsim/<name>``).
    download
        ``data.download``: fetch a missing ``mnist``/``cifar10``/``svhn`` (needs internet).
    val_size
        ``data.val_size``: size of the server validation split carved out of the training
        split when the source has none — an ``int`` count or a ``float`` fraction in
        ``(0, 1)``; default ``min(5000, 10%)`` of the training split. Carved samples are
        removed from the training pool. Ignored (with a log message) when the source has
        its own validation split (``pneumoniamnist``, ``npz``/``imagefolder`` with one).
    seed
        Seed of the carving (``np.random.default_rng(seed)``).
    target
        ``data.target``: the target column of a ``tabular`` CSV (default: the last).
    test_size
        ``data.test_size``: size of the test split carved when the source has none (same
        rules and default as ``val_size``); ignored (logged) when it has one.
    image
        The declared input shape: every image is fitted to it (:mod:`fedsim.data.fit`).
    sites
        Read the source's site labels (``data.partition: natural``): ``npz`` and
        ``imagefolder`` only.

    Returns
    -------
    DatasetBundle
        When the source has no test split (``npz``, ``imagefolder``), the test split is
        carved first (``test_size``), then the validation split from the rest.
        Carving is stratified by class and reproducible from ``seed``; all splits keep the
        source's sample order.

    Raises
    ------
    FedsimError
        Unknown ``name`` (the message lists the valid names) or invalid ``val_size``.
    DataError
        Missing or malformed data files (a :class:`FedsimError`), fewer than 2 training
        classes, or a validation/test class absent from training.
    """
    loader = DATASETS.get(name)
    if sites and name not in ("npz", "imagefolder"):
        raise DataError(
            f"dataset {name!r} has no site labels; data.partition 'natural' needs data.name "
            "'npz' (key 'train_sites') or 'imagefolder' (a <site>/ folder level)"
        )
    source = loader(
        SourceArgs(path=path, root=root, download=download, target=target, image=image, sites=sites)
    )
    where = (
        f"data.path ({path})" if path else f"data.root ({root})" if root else f"dataset {name!r}"
    )
    if source.train.task == "classification":
        check_classes(source, where)
    elif image.active:
        raise DataError(
            f"dataset {name!r} is a table, not images: data.image_size and data.channels "
            "must be null"
        )
    source = fit_source(source, image, where)
    rng = np.random.default_rng(seed)
    train = source.train
    test = source.test
    if test is None:
        train, test = _carve(train, holdout_count(test_size, len(train), "data.test_size"), rng)
    elif test_size is not None:
        logger.info(
            "data.test_size=%r ignored: dataset %r has its own test split (%d samples)",
            test_size,
            name,
            len(test),
        )
    val = source.val
    if val is None:
        train, val = _carve(train, holdout_count(val_size, len(train)), rng)
    elif val_size is not None:
        logger.info(
            "data.val_size=%r ignored: dataset %r has its own validation split (%d samples)",
            val_size,
            name,
            len(val),
        )
    bundle = DatasetBundle(
        name=name,
        train=_read_only(train),
        val=_read_only(val),
        test=_read_only(test),
        num_classes=len(source.class_names),
        class_names=source.class_names,
        site_names=source.site_names,
    )
    logger.info(
        "dataset %s: train %d, val %d, test %d, input %s, %d classes",
        name,
        len(bundle.train),
        len(bundle.val),
        len(bundle.test),
        bundle.input_shape,
        bundle.num_classes,
    )
    return bundle


def _carve(split: Split, count: int, rng: np.random.Generator) -> tuple[Split, Split]:
    """Return ``(rest, held_out)`` with ``count`` samples held out (stratified by class,
    within each site for data labelled by site); the held-out split has no sites."""
    kept, held = stratified_holdout(split.holdout_strata, count, rng)
    out = split.subset(held)
    return split.subset(kept), Split(x=out.x, y=out.y)


def fit_source(source: SourceSplits, image: ImageSpec, where: str) -> SourceSplits:
    """Bring every split of ``source`` to the declared input shape (``image``)."""
    if not image.active:
        return source
    c, h, w = source.train.x.shape[1:]
    shape = (image.channels or c, *(image.size or (h, w)))
    total = sum(len(s) for s in (source.train, source.val, source.test) if s is not None)
    check_bytes(total * 4 * int(np.prod(shape)), where, f"{total} images of shape {shape}")

    def fit(split: Split) -> Split:
        return Split(x=fit_batch(split.x, image), y=split.y, sites=split.sites)

    return SourceSplits(
        train=fit(source.train),
        val=None if source.val is None else fit(source.val),
        test=None if source.test is None else fit(source.test),
        class_names=source.class_names,
        site_names=source.site_names,
    )


def _read_only(split: Split) -> Split:
    """Mark a split's arrays read-only (they are shared through the process cache)."""
    split.x.setflags(write=False)
    split.y.setflags(write=False)
    return split
