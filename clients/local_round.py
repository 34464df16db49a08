"""One client's work in one round: check the budget, train (DP-SGD or SGD), account.

Independent of Flower: :mod:`clients.client_app` turns messages into calls of
:func:`run_local_round` and its :class:`LocalOutcome` back into a reply.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, TensorDataset

from clients.opacus_adapter import make_private, plain_state_dict
from clients.trainer import train_epochs
from fedsim.clipping import check_clip_bounds, trainable_tensor_names
from fedsim.config import Config
from fedsim.deploy.site import SiteData
from fedsim.devices import pick_device
from fedsim.models import build_model
from fedsim.privacy import PrivacyLedger, SubsampledGaussian
from fedsim.privacy.planning import plan_dp_sgd
from fedsim.roles import client_data, client_upload
from fedsim.seeding import torch_generator
from fedsim.workload import client_split, dataset_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalOutcome:
    """Result of one local round; ``state_dict`` is ``None`` when the client did not train."""

    status: str
    ledger: PrivacyLedger
    num_examples: int
    state_dict: dict[str, torch.Tensor] | None = None
    train_loss: float = math.nan
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    epsilon: float | None = None
    epsilon_total: float | None = None
    train_seconds: float = 0.0
    reason: str = ""


def run_local_round(
    cfg: Config,
    client_id: int,
    global_state: Mapping[str, torch.Tensor],
    server_round: int,
    ledger: PrivacyLedger,
    device: torch.device | None = None,
    clip_bounds: Sequence[float] | None = None,
    site: SiteData | None = None,
    secret_seed: int | None = None,
) -> LocalOutcome:
    """Train client ``client_id`` for one round starting from ``global_state``.

    Under DP, the client refuses to train (status ``budget-exhausted``) if the round would
    take its ε past ``dp.max_epsilon``; the ledger then stays unchanged.

    ``clip_bounds`` are the server's per-tensor bounds for ``dp.clipping`` ``per_layer_*``
    (``None`` for flat). Invalid bounds (wrong count, not > 0, or ``√(Σ S_j²)`` other than
    ``dp.max_grad_norm``) raise :class:`ValueError` before any training, which the
    ClientApp turns into an error reply. The clipping variant changes nothing in the
    accounting: the noise std is ``σ · dp.max_grad_norm`` in all three.

    ``site`` is a deployed site's own training data (``None`` in simulation: the client's
    partition of the config's dataset). ``secret_seed`` replaces ``cfg.seed`` as the root
    of the batch sampling and DP noise streams: a deployed site draws it from its own
    entropy, so that the coordinator, who knows ``cfg.seed``, cannot reproduce the noise.
    """
    device = device or pick_device()
    if site is None:
        bundle = dataset_for(cfg.data, cfg.seed)
        input_shape, num_classes = bundle.input_shape, bundle.num_classes
        own = client_split(cfg, client_id)
    else:
        input_shape, num_classes, own = site.input_shape, site.num_classes, site.train
    split = client_data(cfg, client_id, own, num_classes)
    n = len(split)
    noise_root = cfg.seed if secret_seed is None else secret_seed
    delta = cfg.dp.delta

    plan = plan_dp_sgd(cfg, n) if cfg.dp.enabled else None
    if plan is not None:
        if ledger.noise_multiplier is None:
            ledger = ledger.with_noise_multiplier(plan.noise_multiplier)
        sigma = ledger.noise_multiplier
        assert sigma is not None  # set just above
        spent = ledger.epsilon_dp_sgd(delta, cfg.dp.accountant)
        if cfg.dp.max_epsilon is not None:
            projected = ledger.with_event(
                SubsampledGaussian(sigma, plan.sample_rate, plan.steps_per_round)
            ).epsilon_total(delta, cfg.dp.accountant)
            if projected > cfg.dp.max_epsilon * (1 + 1e-9):
                reason = (
                    f"budget exhausted: epsilon {spent:.4g} spent, one more round would reach "
                    f"{projected:.4g} > dp.max_epsilon {cfg.dp.max_epsilon}"
                )
                logger.info("client %d: %s", client_id, reason)
                return LocalOutcome(
                    status="budget-exhausted",
                    ledger=ledger,
                    num_examples=0,
                    noise_multiplier=sigma,
                    sample_rate=plan.sample_rate,
                    epsilon=spent,
                    epsilon_total=ledger.epsilon_total(delta, cfg.dp.accountant),
                    reason=reason,
                )

    started = time.perf_counter()
    model = build_model(cfg.model.name, input_shape, num_classes)
    try:
        model.load_state_dict(dict(global_state))
    except RuntimeError as exc:
        raise ValueError(
            f"client {client_id}: the global model does not fit this client's data "
            f"(input {input_shape}, {num_classes} classes): {exc}"
        ) from exc
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.client.lr, momentum=cfg.client.momentum)
    dataset = TensorDataset(torch.from_numpy(split.x), torch.from_numpy(split.y))
    loader = DataLoader(
        dataset,
        batch_size=cfg.client.batch_size,
        shuffle=True,
        generator=torch_generator(noise_root, "batches", client_id, server_round),
    )
    if plan is None:
        result = train_epochs(model, loader, optimizer, cfg.client.local_epochs, device)
        return LocalOutcome(
            status="ok",
            ledger=ledger,
            num_examples=n,
            state_dict=client_upload(
                cfg, client_id, server_round, global_state, plain_state_dict(model)
            ),
            train_loss=result.mean_loss,
            train_seconds=time.perf_counter() - started,
        )

    sigma = ledger.noise_multiplier
    assert sigma is not None
    problems = check_clip_bounds(
        cfg.dp.clipping,
        clip_bounds,
        len(trainable_tensor_names(model)),
        cfg.dp.max_grad_norm,
    )
    if problems:
        raise ValueError(f"client {client_id} refuses round {server_round}: " + "; ".join(problems))
    private = make_private(
        model,
        optimizer,
        loader,
        noise_multiplier=sigma,
        max_grad_norm=cfg.dp.max_grad_norm if clip_bounds is None else list(clip_bounds),
        noise_generator=torch_generator(
            noise_root, "dp-noise", client_id, server_round, device=device.type
        ),
    )
    result = train_epochs(
        private.model, private.loader, private.optimizer, cfg.client.local_epochs, device
    )
    steps = private.steps_taken()
    acc_sigma, acc_q = private.accounted_schedule()
    ledger = ledger.with_event(SubsampledGaussian(acc_sigma, acc_q, steps))
    return LocalOutcome(
        status="ok",
        ledger=ledger,
        num_examples=n,
        state_dict=client_upload(
            cfg, client_id, server_round, global_state, plain_state_dict(private.model)
        ),
        train_loss=result.mean_loss,
        noise_multiplier=acc_sigma,
        sample_rate=acc_q,
        epsilon=ledger.epsilon_dp_sgd(delta, cfg.dp.accountant),
        epsilon_total=ledger.epsilon_total(delta, cfg.dp.accountant),
        train_seconds=time.perf_counter() - started,
    )
