"""The dataset registry and :func:`load_dataset`, the one way to load a dataset.

Each registered source returns the splits it has (:class:`~fedsim.data.types.SourceSplits`);
:func:`load_dataset` then carves the splits it lacks out of its training split and caches
the resulting :class:`~fedsim.data.types.DatasetBundle` per process.

Registered names, their files and their own splits:

- ``pneumoniamnist``: shipped in the package (or ``data.path``); train / val / test.
- ``fashion-mnist``: Debian's ``dataset-fashion-mnist`` (or ``data.root``); train / test.
- ``mnist``, ``cifar10``, ``svhn``: torchvision's formats under ``data.root``,
  downloadable; train / test.
- ``npz``: the archive at ``data.path``; train [/ val] [/ test].
- ``imagefolder``: the folder at ``data.path``; train [/ val] [/ test].
- ``tabular``: the ``.csv``/``.npz`` table at ``data.path`` (regression); train.
- ``diabetes``: the shipped diabetes table (regression, 442 rows); train.

A regression source's validation and test splits are carved uniformly at random (there
are no classes to stratify by).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import numpy as np

from fedsim.data.carve import holdout_count, stratified_holdout
from fedsim.data.checks import check_classes
from fedsim.data.file_sources import load_fashion_mnist, load_npz, load_pneumoniamnist
from fedsim.data.imagefolder import load_imagefolder
from fedsim.data.tabular import load_diabetes, load_tabular
from fedsim.data.torchvision_sources import load_cifar10, load_mnist, load_svhn
from fedsim.data.types import DatasetBundle, SourceArgs, SourceSplits, Split
from fedsim.registry import Registry

__all__ = ["DATASETS", "Loader", "load_dataset"]

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

    Returns
    -------
    DatasetBundle
        When the source has no test split (``npz``, ``imagefolder``), the test split is
        carved first with the default size rule, then the validation split from the rest.
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
    source = loader(SourceArgs(path=path, root=root, download=download, target=target))
    where = (
        f"data.path ({path})" if path else f"data.root ({root})" if root else f"dataset {name!r}"
    )
    if source.train.task == "classification":
        check_classes(source, where)
    rng = np.random.default_rng(seed)
    train = source.train
    test = source.test
    if test is None:
        train, test = _carve(train, holdout_count(None, len(train), "data.path"), rng)
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
    """Return ``(rest, held_out)`` with ``count`` samples held out (stratified by class)."""
    kept, held = stratified_holdout(split.strata, count, rng)
    return split.subset(kept), split.subset(held)


def _read_only(split: Split) -> Split:
    """Mark a split's arrays read-only (they are shared through the process cache)."""
    split.x.setflags(write=False)
    split.y.setflags(write=False)
    return split
