"""What each party of the federation works on: the loaded dataset and client partitions.

Datasets are loaded once per process (``load_dataset`` caches) and partitions are computed
once per process from the seed, then sliced by client id: nothing per client is kept.

A simulation's workers do not load the dataset at all: the driver shares the training
pool once per machine (:func:`share_train_pool`, :mod:`fedsim.data.shared`), each worker
maps it (:func:`use_shared_pool`) and takes its clients' partitions from it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsim.config import Config, DataConfig
from fedsim.data import DatasetBundle, Split, load_dataset, partition_indices
from fedsim.data.carve import stratified_holdout
from fedsim.data.fit import ImageSpec
from fedsim.data.shared import PooledSplit, PoolFiles, open_split, share_split
from fedsim.deploy.site import SiteData
from fedsim.errors import ConfigError
from fedsim.seeding import derive_seed

logger = logging.getLogger(__name__)


def _holdout_size(size: float | None) -> int | float | None:
    """A carve-out size from the config: a whole count as ``int``, a fraction as ``float``."""
    if size is None:
        return None
    return int(size) if size >= 1 else float(size)


def image_spec(data: DataConfig) -> ImageSpec:
    """The declared input shape of ``data`` (``data.image_size``, ``channels``, ``resize``)."""
    return ImageSpec(size=data.image_hw, channels=data.channels, resize=data.resize)


def _keep(split: Split, count: int | None, field: str, seed: int) -> Split:
    """A stratified subset of ``count`` samples of ``split`` (all when ``None``)."""
    if count is None:
        return split
    if count > len(split):
        raise ConfigError([f"{field} must be at most the split's size {len(split)}; got {count}"])
    rng = np.random.default_rng(seed)
    _, kept = stratified_holdout(split.holdout_strata, count, rng)
    part = split.subset(kept)
    part.x.setflags(write=False)
    part.y.setflags(write=False)
    return part


@functools.lru_cache(maxsize=8)
def dataset_for(data: DataConfig, seed: int) -> DatasetBundle:
    """The dataset of a run (cached per process).

    ``data.train_samples`` / ``data.test_samples`` shrink the training pool / test split
    to stratified subsets drawn from the seed (the server validation split is kept).
    """
    bundle = load_dataset(
        data.name,
        path=data.path,
        root=data.root,
        download=data.download,
        val_size=_holdout_size(data.val_size),
        seed=derive_seed(seed, "val-split"),
        target=data.target,
        test_size=_holdout_size(data.test_size),
        image=image_spec(data),
        sites=data.partition == "natural",
    )
    if data.train_samples is None and data.test_samples is None:
        return bundle
    return dataclasses.replace(
        bundle,
        train=_keep(
            bundle.train,
            data.train_samples,
            "data.train_samples",
            derive_seed(seed, "train-subset"),
        ),
        test=_keep(
            bundle.test, data.test_samples, "data.test_samples", derive_seed(seed, "test-subset")
        ),
    )


@dataclass(frozen=True)
class TrainPool:
    """What the clients of a run train on: the training pool and its class and site names.

    ``train`` is the loaded :class:`Split`, or in a simulation's worker the
    :class:`~fedsim.data.shared.PooledSplit` the driver shared; both give the same
    ``float32`` partitions (``subset``).
    """

    train: Split | PooledSplit
    num_classes: int
    class_names: tuple[str, ...]
    site_names: tuple[str, ...]


@dataclass(frozen=True)
class SharedTrainPool:
    """A run's training pool shared once per machine (:func:`share_train_pool`): where it
    is, and the small facts a worker needs beside it. Travels to the workers (pickled)."""

    data: DataConfig
    seed: int
    files: PoolFiles
    num_classes: int
    class_names: tuple[str, ...]
    site_names: tuple[str, ...]


#: Shared pools mapped in this process, by (data config, seed); bounded like the
#: dataset cache, so a worker kept across many runs (``fedsim sweep``) unmaps old ones.
_MAPPED: OrderedDict[tuple[DataConfig, int], tuple[str, TrainPool]] = OrderedDict()
_MAX_MAPPED = 4
#: Digests of shared pools this process could not see (another machine's files).
_UNSEEN: set[str] = set()


def share_train_pool(cfg: Config, directory: str | Path) -> SharedTrainPool:
    """Write the training pool of ``cfg`` once under ``directory`` for the workers."""
    bundle = dataset_for(cfg.data, cfg.seed)
    files = share_split(bundle.train, directory)
    logger.info(
        "training pool shared once for all workers: %s (%s images)",
        files.folder,
        "uint8" if files.packed else "float32",
    )
    return SharedTrainPool(
        data=cfg.data,
        seed=cfg.seed,
        files=files,
        num_classes=bundle.num_classes,
        class_names=bundle.class_names,
        site_names=bundle.site_names,
    )


def use_shared_pool(shared: SharedTrainPool) -> bool:
    """Map ``shared`` in this process (once): :func:`train_pool` of its data config and
    seed then takes the clients' data from it instead of loading the dataset.

    Returns whether it is mapped: a worker on another machine of a Ray cluster, which
    does not see the driver's files, loads the dataset itself (logged once).
    """
    key = (shared.data, shared.seed)
    known = _MAPPED.get(key)
    if known is not None and known[0] == shared.files.digest:
        _MAPPED.move_to_end(key)
        return True
    if not Path(shared.files.folder).is_dir():
        if shared.files.digest not in _UNSEEN:
            _UNSEEN.add(shared.files.digest)
            logger.info(
                "shared training pool %s not on this machine: this worker loads the dataset",
                shared.files.folder,
            )
        return False
    pool = TrainPool(
        train=open_split(shared.files),
        num_classes=shared.num_classes,
        class_names=shared.class_names,
        site_names=shared.site_names,
    )
    _MAPPED[key] = (shared.files.digest, pool)
    _MAPPED.move_to_end(key)
    while len(_MAPPED) > _MAX_MAPPED:
        _MAPPED.popitem(last=False)
    return True


def train_pool(data: DataConfig, seed: int) -> TrainPool:
    """The training pool of a run: the shared one mapped here (:func:`use_shared_pool`),
    else the loaded dataset's (:func:`dataset_for`)."""
    known = _MAPPED.get((data, seed))
    if known is not None:
        return known[1]
    bundle = dataset_for(data, seed)
    return TrainPool(bundle.train, bundle.num_classes, bundle.class_names, bundle.site_names)


@functools.lru_cache(maxsize=8)
def partitions_for(data: DataConfig, seed: int) -> tuple[np.ndarray, ...]:
    """Index arrays of every client's partition of the training pool (cached per process)."""
    bundle = train_pool(data, seed)
    parts = partition_indices(
        bundle.train.strata,
        data.num_clients,
        data.partition,
        alpha=data.alpha,
        shards_per_client=data.shards_per_client,
        min_partition_size=data.min_partition_size,
        seed=derive_seed(seed, "partition") % (2**32),
        sites=bundle.train.sites,
        site_names=bundle.site_names,
    )
    if data.partition == "natural":
        logger.info(
            "natural partition: %s",
            ", ".join(
                f"client {i} = site {name!r} ({len(p)})"
                for i, (name, p) in enumerate(zip(bundle.site_names, parts, strict=True))
            ),
        )
    return tuple(parts)


def _holdout_count(cfg: Config, n: int) -> int:
    """Samples held out of a site's ``n`` (see :func:`holdout_indices`)."""
    if not cfg.evaluation.federated or n < 2:
        return 0
    return min(max(1, round(cfg.evaluation.holdout * n)), n - 1)


def holdout_indices(cfg: Config, client_id: int, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """``(training, held-out)`` indices into a site's ``split`` under
    ``evaluation.federated``: ``evaluation.holdout`` of it (at least one sample, and at
    least one left to train on), stratified by class and drawn from the seed; with
    federated evaluation off, or fewer than 2 samples, nothing is held out.

    >>> from fedsim.config import from_dict
    >>> from fedsim.data import Split
    >>> cfg = from_dict({"dp": {"enabled": False}, "evaluation": {"federated": True}})
    >>> split = Split(np.zeros((10, 1, 1, 1), np.float32), np.array([0] * 5 + [1] * 5))
    >>> [len(part) for part in holdout_indices(cfg, 0, split)]
    [8, 2]
    """
    n = len(split)
    count = _holdout_count(cfg, n)
    if count == 0:
        return np.arange(n, dtype=np.int64), np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(derive_seed(cfg.seed, "site-holdout", client_id))
    return stratified_holdout(split.strata, count, rng)


def _partition(cfg: Config, client_id: int) -> Split:
    if not 0 <= client_id < cfg.data.num_clients:
        raise ValueError(f"client id must be in [0, {cfg.data.num_clients}); got {client_id}")
    pool = train_pool(cfg.data, cfg.seed).train
    return pool.subset(partitions_for(cfg.data, cfg.seed)[client_id])


def client_indices(cfg: Config, client_id: int) -> np.ndarray:
    """Indices into the training pool of what client ``client_id`` trains on: its
    partition, without its held-out split under ``evaluation.federated``."""
    part = partitions_for(cfg.data, cfg.seed)[client_id]
    if not cfg.evaluation.federated:
        return part
    return part[holdout_indices(cfg, client_id, _partition(cfg, client_id))[0]]


def client_split(cfg: Config, client_id: int) -> Split:
    """The local training data of client ``client_id``: its partition, without its
    held-out split under ``evaluation.federated`` (:func:`holdout_indices`)."""
    part = _partition(cfg, client_id)
    if not cfg.evaluation.federated:
        return part
    return part.subset(holdout_indices(cfg, client_id, part)[0])


def client_holdout(cfg: Config, client_id: int) -> Split:
    """The held-out split client ``client_id`` evaluates the global model on
    (``evaluation.federated``; empty otherwise)."""
    part = _partition(cfg, client_id)
    return part.subset(holdout_indices(cfg, client_id, part)[1])


def site_parts(cfg: Config, client_id: int, data: SiteData) -> tuple[SiteData, Split]:
    """A deployed site's own file split into what it trains on and its held-out split
    (:func:`holdout_indices`; the whole file and an empty split without federated
    evaluation)."""
    train, held = holdout_indices(cfg, client_id, data.train)
    if len(held) == 0:
        return data, data.train.subset(held)
    return dataclasses.replace(data, train=data.train.subset(train)), data.train.subset(held)


def training_sizes(cfg: Config) -> dict[int, int]:
    """Every simulated client's training-set size (its partition minus its held-out)."""
    parts = partitions_for(cfg.data, cfg.seed)
    return {cid: len(p) - _holdout_count(cfg, len(p)) for cid, p in enumerate(parts)}


def simulated_client_data(cfg: Config, client_id: int) -> SiteData:
    """A simulated client's own data: its partition of the run's training pool."""
    bundle = train_pool(cfg.data, cfg.seed)
    return SiteData(
        train=client_split(cfg, client_id),
        num_classes=bundle.num_classes,
        class_names=bundle.class_names,
    )
