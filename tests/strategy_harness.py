"""Build fedsim strategies in process, as the ServerApp does (no Flower run needed)."""

from __future__ import annotations

from collections.abc import Mapping

from fedsim.config import Config
from fedsim.round_log import RoundLog
from fedsim.workload import dataset_for
from strategies.base import StrategyContext
from strategies.directory import ClientDirectory


def strategy_context(
    cfg: Config,
    nodes: Mapping[int, int] | None = None,
    num_examples: Mapping[int, int] | None = None,
) -> StrategyContext:
    """A context for ``cfg`` whose clients ``c`` live on nodes ``nodes[c]`` (default
    ``100 + c`` for every client id of the run)."""
    if nodes is None:
        nodes = {c: 100 + c for c in range(cfg.data.num_clients)}
    directory = ClientDirectory(
        node_of=dict(nodes),
        client_of={n: c for c, n in nodes.items()},
        num_examples=dict(num_examples or {}),
    )
    return StrategyContext(cfg, directory, RoundLog(), dataset_for(cfg.data, cfg.seed))
