"""Run a simulated client's local round in process, as its ClientApp would."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from clients.local_round import LocalOutcome, LocalTask, run_local_round
from fedsim.config import Config
from fedsim.privacy import PrivacyLedger
from fedsim.workload import simulated_client_data


def simulated_round(
    cfg: Config,
    client_id: int,
    global_state: Mapping[str, torch.Tensor],
    server_round: int,
    ledger: PrivacyLedger | None = None,
    **task: Any,
) -> LocalOutcome:
    """Client ``client_id``'s round on its simulated partition (``task``: the other
    :class:`~clients.local_round.LocalTask` fields)."""
    if task.get("clip_bounds") is not None:
        task["clip_bounds"] = tuple(task["clip_bounds"])
    return run_local_round(
        cfg,
        client_id,
        simulated_client_data(cfg, client_id),
        LocalTask(server_round, global_state, ledger or PrivacyLedger(), **task),
        device=torch.device("cpu"),
    )


def train_config(server_round: int) -> Any:
    """The ConfigRecord of a train message as the ServerApp sends it: the round and the
    coordinator's fedsim version and config-schema hash (this install's)."""
    from flwr.app import ConfigRecord

    from fedsim import keys
    from fedsim.versions import local_version, version_entries

    return ConfigRecord({keys.SERVER_ROUND: server_round, **version_entries(local_version())})


def seeded_private(model: torch.nn.Module, loader: Any, **kwargs: Any) -> Any:
    """:func:`clients.opacus_adapter.make_private` of ``model`` with plain SGD (lr 0.1),
    σ = 1, C = 1 and seeded noise; ``kwargs`` are make_private's other options."""
    from clients.opacus_adapter import make_private

    return make_private(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        noise_generator=torch.Generator().manual_seed(1),
        **kwargs,
    )
