"""Strategy registry: ``strategy.name`` → a factory building the strategy from the config."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flwr.serverapp.strategy import Strategy

from fedsim import keys
from fedsim.config import Config
from fedsim.privacy.central import plan_central_dp
from fedsim.registry import Registry
from strategies.central_dp import CentralDP
from strategies.fedavg import FedAvg
from strategies.random_k import RandomK
from strategies.robust import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum
from strategies.secprobe import SecProbe

logger = logging.getLogger(__name__)

StrategyFactory = Callable[[Config], Strategy]
STRATEGIES: Registry[StrategyFactory] = Registry("strategy", "strategy.name")


def central_dp(cfg: Config) -> bool:
    """Whether the run uses central (server-side, user-level) DP."""
    return cfg.dp.enabled and cfg.dp.mode == "central"


def _common(cfg: Config) -> dict[str, Any]:
    """Flower constructor arguments every fedsim strategy shares.

    fedsim samples the clients itself (:class:`~strategies.base.FedsimStrategyMixin`), so
    Flower trains every node it is handed and evaluates none; it waits for all nodes.
    """
    return {
        "fraction_train": 1.0,
        "fraction_evaluate": 0.0,
        "min_train_nodes": cfg.clients_per_round,
        "min_available_nodes": cfg.data.num_clients,
    }


def _plain(cls: Callable[..., Strategy]) -> StrategyFactory:
    """A factory for a strategy that takes only the common arguments."""
    return lambda cfg: cls(**_common(cfg))


@STRATEGIES.register("fedavg")
def _fedavg(cfg: Config) -> Strategy:
    # Under central DP the mean is uniform (weight 1 per client), as the noise assumes.
    weight = keys.UNIT_WEIGHT if central_dp(cfg) else keys.NUM_EXAMPLES
    return FedAvg(**_common(cfg), weighted_by_key=weight)


for _name, _cls in (
    ("secprobe", SecProbe),
    ("random_k", RandomK),
    ("median", FedMedian),
):
    STRATEGIES.register(_name)(_plain(_cls))


@STRATEGIES.register("krum")
def _krum(cfg: Config) -> Strategy:
    return Krum(**_common(cfg), num_malicious_nodes=cfg.strategy.num_malicious)


@STRATEGIES.register("multikrum")
def _multikrum(cfg: Config) -> Strategy:
    keep = cfg.strategy.k or max(1, cfg.clients_per_round - cfg.strategy.num_malicious)
    return MultiKrum(
        **_common(cfg), num_malicious_nodes=cfg.strategy.num_malicious, num_nodes_to_select=keep
    )


@STRATEGIES.register("trimmed_mean")
def _trimmed_mean(cfg: Config) -> Strategy:
    return FedTrimmedAvg(**_common(cfg), beta=cfg.strategy.trim_beta)


@STRATEGIES.register("bulyan")
def _bulyan(cfg: Config) -> Strategy:
    return Bulyan(**_common(cfg), num_malicious_nodes=cfg.strategy.num_malicious)


def build_strategy(cfg: Config) -> Strategy:
    """The configured strategy (logs its configuration once).

    Under ``dp.mode: central`` it is wrapped in :class:`~strategies.central_dp.CentralDP`;
    :func:`~strategies.central_dp.fedsim_core` finds the fedsim strategy inside.
    """
    strategy = STRATEGIES.get(cfg.strategy.name)(cfg)
    if central_dp(cfg):
        strategy = CentralDP(strategy, cfg, plan_central_dp(cfg))
    logger.info(
        "strategy %s: clients_per_round=%d of %d",
        cfg.strategy.name,
        cfg.clients_per_round,
        cfg.data.num_clients,
    )
    logger.info("strategy config: %s", cfg.strategy)
    return strategy
