"""Datasets and their partitioning across clients.

>>> from fedsim.data import load_dataset, partition_indices
>>> bundle = load_dataset("pneumoniamnist")
>>> parts = partition_indices(bundle.train.y, 5, "dirichlet", alpha=0.5, seed=0)
>>> client_0 = bundle.train.subset(parts[0])
"""

from fedsim.data.partition import partition_indices
from fedsim.data.sources import DATASETS, load_dataset
from fedsim.data.types import DatasetBundle, Split

__all__ = [
    "DATASETS",
    "DatasetBundle",
    "Split",
    "load_dataset",
    "partition_indices",
]
