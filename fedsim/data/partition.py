"""Cutting the training pool into client partitions: IID, Dirichlet(α), shards, natural.

The partitions are those of flwr-datasets' partitioners (``IidPartitioner``,
``DirichletPartitioner``, ``ShardPartitioner``, ``NaturalIdPartitioner``) run on an
in-memory Hugging Face dataset of ``{"label", "idx"}`` rows (``{"site", "idx"}`` for
natural partitions, where each client is one real site of a site-labelled dataset).
Before that, the pool is put in a random order drawn from ``seed`` (the IID partitioner
is not seedable: it cuts the dataset into contiguous blocks; for Dirichlet and shards the
order decides which samples of a class end up together; natural partitions do not
depend on it).

They are computed by pure-NumPy replicas of those algorithms (``_iid_numpy``,
``_dirichlet_numpy``, ``_shards_numpy``, ``_natural_numpy``) that give *identical*
partitions (tests check them index for index against flwr-datasets, on random problems
and on the shipped datasets): flwr-datasets costs ~2 s of CPU per process to import
``datasets`` and partition, paid by the driver and by every worker of a simulation, and
its per-partition ``select`` makes its cost grow with the client count.
``engine="flwr-datasets"`` runs flwr-datasets itself. The Dirichlet replica also covers
the case where flwr-datasets gives up because ``min_partition_size`` could not be met in
its 11 draws (common for many clients and small α): it then moves samples from the
largest partitions to the short ones (see :func:`_top_up`); ``engine="flwr-datasets"``
falls back to the replica there.

Measured on the development machine (2 cores, no GPU) for 60,000 labels in 10 classes,
seconds per whole call (flwr-datasets up to 1,000 clients, the replicas above; the
replicas take < 0.01 s up to 1,000 clients as well):

=================  =====  =====  =====  =====  ======
clients            10     100    1,000  1,001  10,000
=================  =====  =====  =====  =====  ======
iid                0.04   0.12   0.93   0.00   0.02
dirichlet, α=1     0.93   1.27   2.13   0.01   0.05
dirichlet, α=0.1   1.19   1.08   0.79   0.01   0.07
shards             0.70   0.62   1.75   0.00   0.02
=================  =====  =====  =====  =====  ======

At 1,000 clients and α=0.1, flwr-datasets gives up (some clients stay empty in all 11
draws) and the replica with top-up finishes the job. flwr-datasets' Dirichlet spends
about 1 s reading the label column row by row; its other cost is one ``select`` per client.
"""

from __future__ import annotations

import contextlib
import heapq
import io
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from fedsim.config import PartitionName
from fedsim.errors import FedsimError
from fedsim.registry import Registry

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner

# `datasets` and `flwr_datasets` take ~2 s to import: they are imported where used, so
# `import fedsim.data` stays cheap for code that never partitions.

__all__ = ["ENGINES", "PARTITIONERS", "Engine", "partition_indices"]

logger = logging.getLogger(__name__)

Engine = Literal["numpy", "flwr-datasets"]
#: Who computes the partitions (the same ones): the NumPy replicas, or flwr-datasets.
ENGINES: tuple[Engine, ...] = ("numpy", "flwr-datasets")

_DIRICHLET_DRAWS = 11  # flwr-datasets' DirichletPartitioner: first draw + 10 retries


@dataclass(frozen=True)
class _Request:
    """A validated partitioning request; ``order`` is the seeded order of the pool."""

    labels: np.ndarray
    order: np.ndarray
    num_clients: int
    alpha: float
    shards_per_client: int
    min_partition_size: int
    seed: int
    sites: np.ndarray | None = None
    site_names: tuple[str, ...] = ()
    engine: Engine = "numpy"

    @property
    def by_flwr(self) -> bool:
        """Whether flwr-datasets computes the partitions (else the NumPy replicas)."""
        return self.engine == "flwr-datasets"


Scheme = Callable[[_Request], list[np.ndarray]]
PARTITIONERS: Registry[Scheme] = Registry("partition scheme", "data.partition")


def partition_indices(
    labels: np.ndarray,
    num_clients: int,
    scheme: PartitionName,
    *,
    alpha: float = 1.0,
    shards_per_client: int = 2,
    min_partition_size: int = 1,
    seed: int = 0,
    sites: np.ndarray | None = None,
    site_names: tuple[str, ...] = (),
    engine: Engine = "numpy",
) -> list[np.ndarray]:
    """Cut a pool of labelled samples into ``num_clients`` partitions.

    Parameters
    ----------
    labels
        1-D integer labels of the pool (``DatasetBundle.train.y``).
    num_clients
        Number of partitions, ``1 <= num_clients <= len(labels)`` (``data.num_clients``).
    scheme
        ``"iid"``: a uniformly random split into sizes that differ by at most one.
        ``"dirichlet"``: per class, the class's samples are split among clients in
        proportions drawn from Dirichlet(α·1) (Yurochkin et al., 2019; Hsu et al., 2019);
        the draw is repeated (up to 11 times) until every client has at least
        ``min_partition_size`` samples, after which the shortest clients are topped up
        from the largest partitions. Small α gives few classes per client.
        ``"shards"``: the pool is sorted by label and cut into
        ``num_clients * shards_per_client`` shards of ``floor(n / (num_clients *
        shards_per_client))`` consecutive samples; each client gets ``shards_per_client``
        random shards (McMahan et al., 2017). The samples of no chosen shard are
        **dropped** — fewer than ``num_clients * shards_per_client`` of them: the last
        ``n mod shard_size`` of the label-sorted pool (from the largest labels) plus any
        whole shards left over. With many clients this can be a large share (55,000
        samples, 10,000 clients × 2 shards: shards of 2, 15,000 dropped); the count is
        logged.
        ``"natural"``: client ``i`` gets every sample of site ``i`` (flwr-datasets'
        ``NaturalIdPartitioner`` over ``sites``; sites in sorted order of their names), so
        ``num_clients`` must equal the number of sites.
    alpha
        Dirichlet concentration α > 0 (``data.alpha``); dirichlet only.
    shards_per_client
        Shards per client, >= 1 (``data.shards_per_client``); shards only.
    min_partition_size
        Smallest allowed partition (``data.min_partition_size``). Dirichlet meets it
        as described above; IID and shards have fixed sizes and raise if they are smaller.
    seed
        Non-negative seed; the same inputs and seed give the same partitions.
    sites
        ``int64`` site index of each sample (natural only), ``0..len(site_names)-1``.
    site_names
        The sites' names, for messages (natural only).
    engine
        ``"numpy"`` (the replicas, fast) or ``"flwr-datasets"`` (Flower's partitioners);
        both give the same partitions.

    Returns
    -------
    list of numpy.ndarray
        ``num_clients`` sorted ``int64`` arrays of indices into ``labels``, pairwise
        disjoint; for ``"iid"`` and ``"dirichlet"`` together they cover every index.

    Raises
    ------
    FedsimError
        On invalid arguments or impossible sizes; the message names the ``data.*`` field.
    """
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or y.size == 0:
        raise FedsimError(
            f"partition labels must be a non-empty 1-D integer array; got {y.dtype} array "
            f"of shape {y.shape}"
        )
    n = int(y.size)
    if isinstance(num_clients, bool) or not isinstance(num_clients, int | np.integer):
        raise FedsimError(f"data.num_clients must be an integer; got {num_clients!r}")
    if not 1 <= num_clients <= n:
        raise FedsimError(
            f"data.num_clients must be between 1 and the number of training samples ({n}); "
            f"got {num_clients}"
        )
    if (
        isinstance(min_partition_size, bool)
        or not isinstance(min_partition_size, int | np.integer)
        or min_partition_size < 0
    ):
        raise FedsimError(
            f"data.min_partition_size must be an integer >= 0; got {min_partition_size!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise FedsimError(f"seed must be an integer >= 0; got {seed!r}")
    if engine not in ENGINES:
        raise FedsimError(f"partition engine must be one of {ENGINES}; got {engine!r}")
    partitioner = PARTITIONERS.get(scheme)
    order_rng = np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(1)[0])
    request = _Request(
        labels=y.astype(np.int64),
        order=order_rng.permutation(n).astype(np.int64),
        num_clients=int(num_clients),
        alpha=alpha,
        shards_per_client=shards_per_client,
        min_partition_size=int(min_partition_size),
        seed=int(seed),
        sites=None if sites is None else np.asarray(sites),
        site_names=tuple(site_names),
        engine=engine,
    )
    return [np.sort(p).astype(np.int64) for p in partitioner(request)]


# --- IID -----------------------------------------------------------------------------


@PARTITIONERS.register("iid")
def _iid(req: _Request) -> list[np.ndarray]:
    n, k = len(req.labels), req.num_clients
    if n // k < req.min_partition_size:
        raise FedsimError(
            f"data.min_partition_size: IID partitions of {n} samples among {k} clients have "
            f"{n // k} samples or more; that is < data.min_partition_size="
            f"{req.min_partition_size}"
        )
    if not req.by_flwr:
        return _iid_numpy(req)
    from flwr_datasets.partitioner import IidPartitioner

    return _run_flwr(IidPartitioner(num_partitions=k), req.labels[req.order], req.order, k)


def _iid_numpy(req: _Request) -> list[np.ndarray]:
    """Replica of ``IidPartitioner``: contiguous blocks of the seeded order."""
    return list(np.array_split(req.order, req.num_clients))


# --- Dirichlet ------------------------------------------------------------------------


@PARTITIONERS.register("dirichlet")
def _dirichlet(req: _Request) -> list[np.ndarray]:
    alpha = req.alpha
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, int | float | np.number)
        or not (math.isfinite(alpha) and alpha > 0)
    ):
        raise FedsimError(f"data.alpha must be a finite number > 0; got {alpha!r}")
    n, k, m = len(req.labels), req.num_clients, req.min_partition_size
    if k * m > n:
        raise FedsimError(
            f"data.min_partition_size: {k} clients (data.num_clients) × "
            f"{m} samples (data.min_partition_size) = {k * m} > {n} training samples; "
            "lower one of them"
        )
    if req.by_flwr:
        from flwr_datasets.partitioner import DirichletPartitioner

        partitioner = DirichletPartitioner(
            num_partitions=k,
            partition_by="label",
            alpha=float(alpha),
            min_partition_size=m,
            self_balancing=False,
            shuffle=True,
            seed=req.seed,
        )
        try:
            return _run_flwr(partitioner, req.labels[req.order], req.order, k)
        except ValueError as exc:  # flwr-datasets: "The max number of attempts (10) ..."
            logger.info("flwr-datasets Dirichlet gave up (%s); using the NumPy replica", exc)
    return _dirichlet_numpy(req)


def _dirichlet_numpy(req: _Request) -> list[np.ndarray]:
    """Replica of ``DirichletPartitioner(self_balancing=False)``, topped up if needed."""
    rng = np.random.default_rng(req.seed)
    k, m = req.num_clients, req.min_partition_size
    targets = req.labels[req.order]
    class_rows = [np.flatnonzero(targets == c) for c in np.unique(targets)]
    concentration = np.full(k, float(req.alpha))
    owner = np.empty(len(targets), dtype=np.int64)
    for _ in range(_DIRICHLET_DRAWS):
        for rows in class_rows:
            proportions = rng.dirichlet(concentration)
            cuts = np.minimum((np.cumsum(proportions) * len(rows)).astype(int)[:-1], len(rows))
            counts = np.diff(np.concatenate(([0], cuts, [len(rows)])))
            owner[rows] = np.repeat(np.arange(k), counts)
        if np.bincount(owner, minlength=k).min() >= m:
            break
    else:
        owner = _top_up(owner, k, m, rng)
    return _group(req.order, owner, k)


def _top_up(owner: np.ndarray, k: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """Give every partition at least ``m`` samples, taking them from the largest ones.

    Each missing sample is moved from the partition that is currently largest (a uniformly
    random one of its samples), so the label skew of the donors is barely changed.
    Requires ``k * m <= len(owner)``.
    """
    owner = owner.copy()
    sizes = np.bincount(owner, minlength=k)
    short = [int(c) for c in np.flatnonzero(sizes < m)]
    donors = [(-int(sizes[c]), int(c)) for c in range(k) if sizes[c] >= m]
    heapq.heapify(donors)
    pools: dict[int, Iterator[int]] = {}
    moved = 0
    for client in short:
        for _ in range(m - int(sizes[client])):
            neg_size, donor = heapq.heappop(donors)
            if donor not in pools:
                pools[donor] = iter(rng.permutation(np.flatnonzero(owner == donor)).tolist())
            owner[next(pools[donor])] = client
            heapq.heappush(donors, (neg_size + 1, donor))
            moved += 1
    logger.warning(
        "dirichlet: %d of %d partitions had < data.min_partition_size=%d samples after %d "
        "draws; moved %d samples to them from the largest partitions",
        len(short),
        k,
        m,
        _DIRICHLET_DRAWS,
        moved,
    )
    return owner


# --- shards ---------------------------------------------------------------------------


@PARTITIONERS.register("shards")
def _shards(req: _Request) -> list[np.ndarray]:
    spc = req.shards_per_client
    if isinstance(spc, bool) or not isinstance(spc, int | np.integer) or spc < 1:
        raise FedsimError(f"data.shards_per_client must be an integer >= 1; got {spc!r}")
    n, k = len(req.labels), req.num_clients
    if k * spc > n:
        raise FedsimError(
            f"data.shards_per_client: {k} clients (data.num_clients) × {spc} shards "
            f"(data.shards_per_client) = {k * spc} shards > {n} training samples; "
            "every shard needs at least one sample"
        )
    size = int(n / (k * spc)) * spc
    if size < req.min_partition_size:
        raise FedsimError(
            f"data.min_partition_size: shard partitions of {n} samples among {k} clients "
            f"× {spc} shards have {size} samples; that is < data.min_partition_size="
            f"{req.min_partition_size}"
        )
    if size * k < n:
        logger.info(
            "shards: %d of %d training samples are in no shard and dropped", n - size * k, n
        )
    if not req.by_flwr:
        return _shards_numpy(req)
    from flwr_datasets.partitioner import ShardPartitioner

    partitioner = ShardPartitioner(
        num_partitions=k,
        partition_by="label",
        num_shards_per_partition=int(spc),
        shuffle=True,
        seed=req.seed,
    )
    return _run_flwr(partitioner, req.labels[req.order], req.order, k)


def _shards_numpy(req: _Request) -> list[np.ndarray]:
    """Replica of ``ShardPartitioner(num_shards_per_partition=...)``."""
    n, k, spc = len(req.labels), req.num_clients, int(req.shards_per_client)
    shard_size = int(n / (k * spc))
    usable = n // shard_size
    by_label = req.order[np.argsort(req.labels[req.order], kind="stable")]
    shards = np.random.default_rng(req.seed).permutation(usable)[: k * spc].reshape(k, spc)
    rows = shards[:, :, None] * shard_size + np.arange(shard_size)
    return list(by_label[rows.reshape(k, -1)])


# --- natural (one client per site) ---------------------------------------------------


@PARTITIONERS.register("natural")
def _natural(req: _Request) -> list[np.ndarray]:
    sites = req.sites
    if sites is None:
        raise FedsimError(
            "data.partition 'natural' needs data labelled by site: an npz with key "
            "'train_sites' or an imagefolder with a <site>/ level above the class folders"
        )
    if sites.shape != req.labels.shape or not np.issubdtype(sites.dtype, np.integer):
        raise FedsimError(
            f"partition sites must be {len(req.labels)} integers, one per sample; got "
            f"{sites.dtype} array of shape {sites.shape}"
        )
    names = req.site_names or tuple(str(s) for s in range(int(sites.max()) + 1))
    k = len(names)
    if req.num_clients != k:
        shown = ", ".join(repr(n) for n in names[:10]) + (", ..." if k > 10 else "")
        raise FedsimError(
            f"data.num_clients must equal the number of sites ({k}: {shown}) when "
            f"data.partition is 'natural'; got {req.num_clients}"
        )
    sizes = np.bincount(sites, minlength=k)
    small = [i for i in range(k) if sizes[i] < max(1, req.min_partition_size)]
    if small:
        listed = ", ".join(f"{names[i]!r} ({sizes[i]})" for i in small[:10])
        raise FedsimError(
            f"data.partition 'natural': sites with fewer than "
            f"max(1, data.min_partition_size={req.min_partition_size}) training samples "
            f"(after the server's validation/test carve-outs): {listed}"
        )
    if not req.by_flwr:
        return _natural_numpy(sites, k)
    from flwr_datasets.partitioner import NaturalIdPartitioner

    partitioner = NaturalIdPartitioner(partition_by="site")
    with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar, one line per call
        return _run_flwr(partitioner, sites, np.arange(len(sites)), k, column="site")


def _natural_numpy(sites: np.ndarray, k: int) -> list[np.ndarray]:
    """Replica of ``NaturalIdPartitioner``: the rows of each site, in row order."""
    by_site = np.argsort(sites, kind="stable")
    return np.split(by_site, np.cumsum(np.bincount(sites, minlength=k))[:-1])


# --- helpers --------------------------------------------------------------------------


def _group(order: np.ndarray, owner: np.ndarray, k: int) -> list[np.ndarray]:
    """Split ``order`` by the partition each of its rows is assigned to in ``owner``."""
    by_owner = np.argsort(owner, kind="stable")
    bounds = np.cumsum(np.bincount(owner, minlength=k))[:-1]
    return np.split(order[by_owner], bounds)


def _run_flwr(
    partitioner: Partitioner, labels: np.ndarray, idx: np.ndarray, k: int, column: str = "label"
) -> list[np.ndarray]:
    """Run a flwr-datasets partitioner on rows ``(labels[j], idx[j])`` (the first column
    named ``column``); return idx per client."""
    import datasets

    table = datasets.Dataset.from_dict({column: labels, "idx": idx})  # in memory, no cache
    partitioner.dataset = table
    parts = []
    with _quiet_datasets(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Dirichlet's resampling notices
        warnings.simplefilter("ignore", FutureWarning)  # pyarrow, inside datasets' sort
        for i in range(k):
            part = partitioner.load_partition(i).with_format("numpy")
            parts.append(np.asarray(part[:]["idx"], dtype=np.int64).reshape(-1))
    return parts


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Turn off Hugging Face ``datasets`` progress bars for the block, then restore them."""
    import datasets

    forced = datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS is not None  # env var wins
    if forced or datasets.are_progress_bars_disabled():
        yield
        return
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.enable_progress_bars()
