"""Strategy registry: ``strategy.name`` → a factory building the strategy from the config."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import Strategy

from fedsim import keys
from fedsim.config import Config
from fedsim.errors import ConfigError
from fedsim.privacy.central import plan_central_dp
from fedsim.registry import Registry
from strategies.base import StrategyContext
from strategies.central_dp import CentralDP, central_dp_rules
from strategies.fedavg import FedAvg
from strategies.random_k import RandomK
from strategies.robust import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum
from strategies.secprobe import SecProbe, secprobe_rules

logger = logging.getLogger(__name__)

#: Builds a strategy from its context (config, directory, round log, server data).
StrategyFactory = Callable[[StrategyContext], Strategy]
#: The config rules a strategy needs beyond the generic ones (problem strings).
StrategyRules = Callable[[Config], list[str]]


def _no_rules(cfg: Config) -> list[str]:
    del cfg
    return []


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: how to build it, and the config rules it declares."""

    build: StrategyFactory
    rules: StrategyRules = _no_rules


STRATEGIES: Registry[StrategySpec] = Registry("strategy", "strategy.name")


def _min_cohort(factor: int) -> StrategyRules:
    """Krum-style rules need ``clients_per_round >= factor * num_malicious + 3``."""

    def rules(cfg: Config) -> list[str]:
        m, f, name = cfg.clients_per_round, cfg.strategy.num_malicious, cfg.strategy.name
        if m >= factor * f + 3:
            return []
        return [
            f"strategy.clients_per_round must be >= {factor} * strategy.num_malicious + 3 "
            f"({factor * f + 3}) for {name}; got {m}"
        ]

    return rules


def strategy_problems(cfg: Config) -> list[str]:
    """The rules the configured strategy (and a central-DP wrapper) declare for ``cfg``."""
    problems = list(STRATEGIES.get(cfg.strategy.name).rules(cfg))
    if central_dp(cfg):
        problems.extend(central_dp_rules(cfg))
    return problems


def central_dp(cfg: Config) -> bool:
    """Whether the run uses central (server-side, user-level) DP."""
    return cfg.dp.enabled and cfg.dp.mode == "central"


def _common(cfg: Config) -> dict[str, Any]:
    """Flower constructor arguments every fedsim strategy shares.

    fedsim samples the clients itself (:class:`~strategies.base.FedsimStrategyMixin`), so
    Flower trains every node it is handed and evaluates none; it waits for all nodes.
    Updates are weighted by their example counts, or uniformly where the count is not
    sent (:attr:`~fedsim.config.Config.uniform_weights`: central DP, add/remove DP-SGD).
    """
    return {
        "fraction_train": 1.0,
        "fraction_evaluate": 0.0,
        "min_train_nodes": cfg.clients_per_round,
        "min_available_nodes": cfg.data.num_clients,
        "weighted_by_key": weight_key(cfg),
    }


def weight_key(cfg: Config) -> str:
    """The reply metric the aggregation weighs each update by."""
    return keys.UNIT_WEIGHT if cfg.uniform_weights else keys.NUM_EXAMPLES


def _plain(cls: Callable[..., Strategy]) -> StrategyFactory:
    """A factory for a strategy that takes only the common arguments."""
    return lambda ctx: cls(ctx, **_common(ctx.cfg))


for _name, _cls in (
    ("fedavg", FedAvg),
    ("random_k", RandomK),
    ("median", FedMedian),
):
    STRATEGIES.register(_name)(StrategySpec(_plain(_cls)))


def _krum(ctx: StrategyContext) -> Strategy:
    cfg = ctx.cfg
    return Krum(ctx, **_common(cfg), num_malicious_nodes=cfg.strategy.num_malicious)


def _multikrum(ctx: StrategyContext) -> Strategy:
    cfg = ctx.cfg
    keep = cfg.strategy.k or max(1, cfg.clients_per_round - cfg.strategy.num_malicious)
    return MultiKrum(
        ctx,
        **_common(cfg),
        num_malicious_nodes=cfg.strategy.num_malicious,
        num_nodes_to_select=keep,
    )


def _trimmed_mean(ctx: StrategyContext) -> Strategy:
    return FedTrimmedAvg(ctx, **_common(ctx.cfg), beta=ctx.cfg.strategy.trim_beta)


def _bulyan(ctx: StrategyContext) -> Strategy:
    cfg = ctx.cfg
    return Bulyan(ctx, **_common(cfg), num_malicious_nodes=cfg.strategy.num_malicious)


STRATEGIES.register("secprobe")(StrategySpec(_plain(SecProbe), secprobe_rules))
STRATEGIES.register("krum")(StrategySpec(_krum, _min_cohort(2)))
STRATEGIES.register("multikrum")(StrategySpec(_multikrum, _min_cohort(2)))
STRATEGIES.register("trimmed_mean")(StrategySpec(_trimmed_mean))
STRATEGIES.register("bulyan")(StrategySpec(_bulyan, _min_cohort(4)))


def build_strategy(context: StrategyContext, *, seeded: bool = False) -> Strategy:
    """The configured strategy, fully built (logs its configuration once).

    Under ``dp.mode: central`` it is wrapped in :class:`~strategies.central_dp.CentralDP`
    (``seeded``: cohorts and noise from the root seed, for simulations);
    :func:`~strategies.central_dp.fedsim_core` finds the fedsim strategy inside.
    """
    cfg = context.cfg
    problems = strategy_problems(cfg)
    if problems:
        raise ConfigError(problems)
    strategy = STRATEGIES.get(cfg.strategy.name).build(context)
    if central_dp(cfg):
        strategy = CentralDP(strategy, cfg, plan_central_dp(cfg), seeded=seeded)
    logger.info(
        "strategy %s: clients_per_round=%d of %d",
        cfg.strategy.name,
        cfg.clients_per_round,
        cfg.data.num_clients,
    )
    logger.info("strategy config: %s", cfg.strategy)
    return strategy
