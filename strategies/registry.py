"""Strategy registry: ``strategy.name`` → a factory building the strategy from the config."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.serverapp.strategy import Strategy

from fedsim.config import Config
from fedsim.registry import Registry
from strategies.fedavg import FedAvg

logger = logging.getLogger(__name__)

StrategyFactory = Callable[[Config], Strategy]
STRATEGIES: Registry[StrategyFactory] = Registry("strategy", "strategy.name")


@STRATEGIES.register("fedavg")
def _fedavg(cfg: Config) -> Strategy:
    return FedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=cfg.clients_per_round,
        min_available_nodes=cfg.data.num_clients,
    )


def build_strategy(cfg: Config) -> Strategy:
    """The configured strategy (logs its configuration once)."""
    strategy = STRATEGIES.get(cfg.strategy.name)(cfg)
    logger.info(
        "strategy %s: clients_per_round=%d of %d",
        cfg.strategy.name,
        cfg.clients_per_round,
        cfg.data.num_clients,
    )
    return strategy
