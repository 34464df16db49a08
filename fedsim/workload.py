"""What each party of the federation works on: the loaded dataset and client partitions.

Datasets are loaded once per process (``load_dataset`` caches) and partitions are computed
once per process from the seed, then sliced by client id: nothing per client is kept.
"""

from __future__ import annotations

import functools

import numpy as np

from fedsim.config import Config, DataConfig
from fedsim.data import DatasetBundle, Split, load_dataset, partition_indices
from fedsim.seeding import derive_seed


def _val_size(data: DataConfig) -> int | float | None:
    if data.val_size is None:
        return None
    return int(data.val_size) if data.val_size >= 1 else float(data.val_size)


def dataset_for(data: DataConfig, seed: int) -> DatasetBundle:
    """The dataset of a run (cached per process)."""
    return load_dataset(
        data.name,
        path=data.path,
        root=data.root,
        download=data.download,
        val_size=_val_size(data),
        seed=derive_seed(seed, "val-split"),
    )


@functools.lru_cache(maxsize=8)
def partitions_for(data: DataConfig, seed: int) -> tuple[np.ndarray, ...]:
    """Index arrays of every client's partition of the training pool (cached per process)."""
    bundle = dataset_for(data, seed)
    parts = partition_indices(
        bundle.train.y,
        data.num_clients,
        data.partition,
        alpha=data.alpha,
        shards_per_client=data.shards_per_client,
        min_partition_size=data.min_partition_size,
        seed=derive_seed(seed, "partition") % (2**32),
    )
    return tuple(parts)


def client_split(cfg: Config, client_id: int) -> Split:
    """The local training data of client ``client_id``."""
    if not 0 <= client_id < cfg.data.num_clients:
        raise ValueError(f"client id must be in [0, {cfg.data.num_clients}); got {client_id}")
    bundle = dataset_for(cfg.data, cfg.seed)
    return bundle.train.subset(partitions_for(cfg.data, cfg.seed)[client_id])
