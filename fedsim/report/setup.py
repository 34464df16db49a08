"""What a run was, read from its ``config.yaml``: the first block of ``report.md``.

:func:`run_config` reads the resolved config a run directory holds (the report's other
sections take ε reference lines from it too); :func:`setup_block` turns it into two
one-row Markdown tables (data and training; privacy) a reader takes in at a glance.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fedsim.config import RELATION_TEXT, Config, from_dict, read_yaml
from fedsim.errors import FedsimError
from fedsim.report.markdown import fmt, markdown_table
from fedsim.rundir import CONFIG_FILE

logger = logging.getLogger(__name__)


def run_config(run_dir: Path) -> Config | None:
    """The resolved config of the run in ``run_dir``; ``None`` if it has no readable one.

    A ``config.yaml`` this version cannot parse (e.g. written by another fedsim version)
    is logged and treated as absent: the report then leaves out what depends on it.
    """
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        raw = read_yaml(path)
        raw.pop("fedsim_version", None)
        return from_dict(raw)
    except FedsimError as exc:
        logger.warning("report: cannot read %s: %s", path, exc)
        return None


def partition_text(cfg: Config) -> str:
    """The partition with its parameter, e.g. ``dirichlet (α = 0.5)``."""
    data = cfg.data
    if data.partition == "dirichlet":
        return f"dirichlet (α = {data.alpha:g})"
    if data.partition == "shards":
        return f"shards ({data.shards_per_client} per client)"
    if data.partition == "natural":
        return "natural (one client per site)"
    return data.partition


def strategy_text(cfg: Config) -> str:
    """The strategy with its cohort: clients per round and, where set, the k kept."""
    s = cfg.strategy
    cohort = (
        f"{s.clients_per_round} clients per round"
        if s.clients_per_round is not None
        else "all clients every round"
    )
    keep = f", k = {s.k}" if s.k is not None else ""
    return f"{s.name} ({cohort}{keep})"


def dp_mode_text(cfg: Config) -> str:
    """DP off, sample-level DP-SGD, or central (user-level) DP."""
    if not cfg.dp.enabled:
        return "off"
    return "central (user-level)" if cfg.dp.mode == "central" else "sample-level DP-SGD"


def setup_block(cfg: Config) -> str:
    """Markdown of what the run was: data, clients, partition, model, strategy, rounds,
    seed; then the DP mode, target ε (and ``max_epsilon``), δ and neighbouring relation."""
    what = markdown_table(
        ("dataset", "clients", "partition", "model", "strategy", "rounds", "seed"),
        [
            (
                cfg.data.name,
                cfg.data.num_clients,
                partition_text(cfg),
                cfg.model.name,
                strategy_text(cfg),
                cfg.rounds,
                cfg.seed,
            )
        ],
    )
    dp = cfg.dp
    if not dp.enabled:
        return f"{what}\nDP: off (the clients' updates are not protected)\n"
    if dp.epsilon is not None:
        target = fmt(dp.epsilon)
    else:
        target = f"– (σ = {fmt(dp.noise_multiplier)} given)"
    privacy = markdown_table(
        ("DP", "target ε", "max ε", "δ", "neighbouring relation"),
        [
            (
                dp_mode_text(cfg),
                target,
                dp.max_epsilon,
                dp.delta,
                RELATION_TEXT[dp.neighbouring],
            )
        ],
    )
    return f"{what}\n{privacy}"
