"""One client's work in one round: check the policy and budget, train (DP-SGD or SGD),
account.

Independent of Flower: :mod:`clients.client_app` turns a train message into a
:class:`LocalTask`, the client's data into a :class:`~fedsim.deploy.site.SiteData`, calls
:func:`run_local_round` and turns its :class:`LocalOutcome` back into a reply.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader

from clients.audit_canaries import CanaryRecords, canary_records
from clients.batched import BatchedTensorDataset, collate_stacked
from clients.functional_round import train_functional
from clients.opacus_adapter import (
    make_private,
    override_grad_samples,
    plain_state_dict,
    plain_view,
    resolve_grad_sample_mode,
)
from clients.trainer import train_epochs
from clients.valuation_round import RoundScorer, due_metrics, valuation_tasks
from fedsim.clipping import check_clip_bounds, trainable_tensor_names
from fedsim.config import Config
from fedsim.data import Split
from fedsim.deploy.policy import Mechanism, RoundRequest, SitePolicy, refusal
from fedsim.deploy.site import SiteData
from fedsim.devices import pick_device
from fedsim.models import build_model, functional_units
from fedsim.privacy import Accounting, DpEvent, PrivacyLedger, SubsampledGaussian
from fedsim.privacy.functional import FunctionalPlan, plan_functional
from fedsim.privacy.planning import DpSgdPlan, plan_dp_sgd
from fedsim.robustness.training import AdversarialBatches, plan_for
from fedsim.roles import client_data, client_upload
from fedsim.seeding import torch_generator
from fedsim.tasks import loss_module

logger = logging.getLogger(__name__)


def _adversarial_transform(
    model: torch.nn.Module, plan: AdversarialBatches | None
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
    """Batch transform generating adversarial examples on a hook-free view of ``model``."""
    if plan is None:
        return None

    def transform(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with plain_view(model) as plain:
            return plan(plain, x, y)

    return transform


@dataclass(frozen=True)
class LocalTask:
    """One round's instruction from the server, and what the client carries into it.

    Attributes
    ----------
    server_round
        The round (1-based).
    global_state
        The global model the client starts from.
    ledger
        The client's privacy ledger so far (its lifetime ledger on a deployed site).
    clip_bounds
        The server's per-tensor bounds for ``dp.clipping`` ``per_layer_*`` (``None`` for
        flat). Invalid bounds (wrong count, not > 0, or ``√(Σ S_j²)`` other than
        ``dp.max_grad_norm``) raise :class:`ValueError` before any training, which the
        ClientApp turns into an error reply.
    server_events
        Privacy events of this client that the *server* records (a private selection's past
        charges and this round's, sent with the instruction): they count in the budget
        checks but stay out of the client's own ledger.
    pruned
        Indices of the client's data it dropped earlier (``valuation.prune``; ``None``:
        not pruned yet). It trains on the rest, so Opacus' sampling rate follows the
        smaller size and the ledger records the rate actually used (σ stays the one fixed
        at the first round).
    vog_state
        VoG's running statistics from the client's earlier rounds
        (``valuation.vog_checkpoints: rounds``); the outcome carries the updated one.
    """

    server_round: int
    global_state: Mapping[str, torch.Tensor]
    ledger: PrivacyLedger = field(default_factory=PrivacyLedger)
    clip_bounds: tuple[float, ...] | None = None
    server_events: tuple[DpEvent, ...] = ()
    pruned: tuple[int, ...] | None = None
    vog_state: Mapping[str, np.ndarray] | None = None


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
    valuation: float | None = None
    valuation_variance: float | None = None
    valuation_epsilon: float | None = None
    #: DP means of ``valuation.report_metrics`` (reported, not paid)
    extra_valuations: Mapping[str, float] | None = None
    #: Indices of the client's data dropped by ``valuation.prune`` (``None``: none yet)
    pruned: tuple[int, ...] | None = None
    #: VoG's running statistics to keep until the next round (``vog_checkpoints: rounds``)
    vog_state: Mapping[str, np.ndarray] | None = None


def is_audited(cfg: Config, client_id: int) -> bool:
    """Whether ``client_id`` carries the DP-SGD audit's canary records."""
    a = cfg.audit
    return a.enabled and cfg.dp.enabled and cfg.dp.mode == "sample" and client_id == a.client


def _canary_hook(model: torch.nn.Module, canaries: CanaryRecords) -> Callable[[torch.Tensor], None]:
    """Set the canary rows' per-sample gradients (after backward, before clipping)."""

    def hook(labels: torch.Tensor) -> None:
        rows, values = canaries.gradients(labels.cpu())
        override_grad_samples(model, rows, values)

    return hook


def _refusal(
    cfg: Config,
    policy: SitePolicy | None,
    own_events: Sequence[DpEvent],
    server_events: Sequence[DpEvent],
    projected: float | None,
) -> tuple[str, str] | None:
    """``("refused", reason)`` when the site's ``policy`` refuses this round, else ``None``."""
    if policy is None:
        return None
    sample_dp = cfg.dp.enabled and cfg.dp.mode == "sample"
    mechanisms: list[Mechanism] = []
    if sample_dp:
        mechanisms.append("functional" if cfg.functional_mechanism else "dpsgd")
    if own_events:
        mechanisms.append("valuation_release")
    if server_events:
        mechanisms.append("selection")
    request = RoundRequest(
        dp_enabled=cfg.dp.enabled,
        mode=cfg.dp.mode,
        neighbouring=cfg.dp.neighbouring,
        delta=cfg.dp.delta,
        mechanisms=tuple(mechanisms),
        projected_epsilon=projected,
        # the run's own cap is checked next, as "budget-exhausted": here only the site's
        config_max_epsilon=None,
    )
    reason = refusal(policy, request)
    return None if reason is None else ("refused", reason)


def run_local_round(
    cfg: Config,
    client_id: int,
    data: SiteData,
    task: LocalTask,
    *,
    noise_root: int | None = None,
    policy: SitePolicy | None = None,
    device: torch.device | None = None,
) -> LocalOutcome:
    """Train client ``client_id`` on its ``data`` for one round as ``task`` says.

    A deployed site's ``policy`` (:mod:`fedsim.deploy.policy`) is checked first: a round
    it refuses trains nothing (status ``refused``, the policy's reason). Under DP, the
    client refuses to train (status ``budget-exhausted``) if the round — DP-SGD, its
    valuation releases and the server's selection charge — would take its ε past
    ``dp.max_epsilon``. In both cases the ledger stays unchanged. The clipping variant
    changes nothing in the accounting: the noise std is ``σ · dp.max_grad_norm`` in all
    three.

    ``noise_root`` replaces ``cfg.seed`` as the root of the batch sampling, DP noise and
    adversarial-coin streams: a deployed site draws it from its own entropy every round, so
    that the coordinator, who knows ``cfg.seed``, cannot reproduce the noise.
    """
    device = device or pick_device()
    split, kept = _own_data(cfg, client_id, data, task.pruned)
    root = cfg.seed if noise_root is None else noise_root
    acct = Accounting.of(cfg.dp)
    tasks = valuation_tasks(cfg, task.server_round, already_pruned=task.pruned is not None)
    # Under dp.mode central the server clips and noises updates: clients train plainly.
    # The audited client plans for its n records plus every possible audit canary.
    audited = is_audited(cfg, client_id)
    planned_n = len(split) + cfg.audit.canaries if audited else len(split)
    ledger = task.ledger
    sample_dp = cfg.dp.enabled and cfg.dp.mode == "sample" and not cfg.functional_mechanism
    # σ is calibrated once, in the client's first round; later rounds take it from the ledger
    plan = plan_dp_sgd(cfg, planned_n, ledger.noise_multiplier) if sample_dp else None
    if plan is not None and ledger.noise_multiplier is None:
        ledger = ledger.with_noise_multiplier(plan.noise_multiplier)

    started = time.perf_counter()
    model = build_model(cfg.model.name, data.input_shape, data.num_classes, seed=0)
    try:
        model.load_state_dict(dict(task.global_state))  # every parameter: the init is gone
    except RuntimeError as exc:
        raise ValueError(
            f"client {client_id}: the global model does not fit this client's data "
            f"(input {data.input_shape}, {data.num_classes} classes): {exc}"
        ) from exc
    fm_plan = (
        plan_functional(cfg, *functional_units(model), split.task)
        if cfg.functional_mechanism
        else None
    )
    this_round = fm_plan.round_event() if fm_plan is not None else None
    refused = budget_gate(
        cfg, client_id, ledger, plan, tasks.events(), task.server_events, policy, this_round
    )
    if refused is not None:
        return dataclasses.replace(refused, pruned=task.pruned)
    model.to(device)
    loss_fn = loss_module(split.task)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.client.lr, momentum=cfg.client.momentum)
    canaries = canary_records(cfg, client_id, model) if plan is not None else None
    x, y = torch.from_numpy(split.x), torch.from_numpy(split.y)
    if canaries is not None:  # the audit's canary records join the data (never reported)
        cx, cy = canaries.data(tuple(split.x.shape[1:]))
        x, y = torch.cat([x, cx]), torch.cat([y.long(), cy])
    loader = DataLoader(
        BatchedTensorDataset(x, y),  # a batch in one indexing (the same tensors)
        batch_size=cfg.client.batch_size,
        shuffle=True,
        collate_fn=collate_stacked,
        generator=torch_generator(root, "batches", client_id, task.server_round),
    )
    scorer = RoundScorer(
        cfg,
        split,
        data.input_shape,
        data.num_classes,
        due_metrics(cfg, tasks),
        sigma=ledger.noise_multiplier or 1.0,
        noise_seed=root,
        kept=kept,
        vog_state=task.vog_state,
    )
    adversarial = plan_for(cfg, client_id, task.server_round, root)
    if fm_plan is not None:
        return _functional_round(
            cfg, client_id, task, model, loader, fm_plan, ledger, split, root, device, started
        )
    if plan is None:
        result = train_epochs(
            model,
            loader,
            optimizer,
            cfg.client.local_epochs,
            device,
            on_epoch_end=scorer.epoch_hook(lambda: plain_state_dict(model)),
            batch_transform=_adversarial_transform(model, adversarial),
            loss_fn=loss_fn,
            max_steps=cfg.client.local_steps,
            clip_norm=cfg.client.max_grad_norm,
        )
        trained = plain_state_dict(model)
        val = scorer.finish(tasks, trained, client_id, task.server_round)
        return LocalOutcome(
            status="ok",
            ledger=ledger,
            num_examples=len(split),
            state_dict=client_upload(cfg, client_id, task.server_round, task.global_state, trained),
            train_loss=result.mean_loss,
            train_seconds=time.perf_counter() - started,
            pruned=val.dropped if val.dropped is not None else task.pruned,
            vog_state=scorer.vog_state(),
        )

    sigma = ledger.noise_multiplier
    assert sigma is not None  # fixed above
    bounds = task.clip_bounds
    problems = check_clip_bounds(
        cfg.dp.clipping, bounds, len(trainable_tensor_names(model)), cfg.dp.max_grad_norm
    )
    if problems:
        raise ValueError(
            f"client {client_id} refuses round {task.server_round}: " + "; ".join(problems)
        )
    private = make_private(
        model,
        optimizer,
        loader,
        noise_multiplier=sigma,
        max_grad_norm=cfg.dp.max_grad_norm if bounds is None else list(bounds),
        noise_generator=torch_generator(
            root, "dp-noise", client_id, task.server_round, device=device.type
        ),
        grad_sample_mode=resolve_grad_sample_mode(
            "hooks" if canaries is not None else cfg.dp.grad_sample_mode, bounds is None, model
        ),
        # a public schedule: add/remove's from dp.size_bound; the audited client's from
        # n + audit.canaries, whatever number of canaries is inserted
        steps_per_epoch=plan.steps_per_epoch if cfg.hides_client_size or audited else None,
        expected_batch_size=plan.expected_batch_size,
        secure=cfg.dp.secure_rng,  # noise and Poisson masks from the OS CSPRNG
        loss_fn=loss_fn,
    )
    # Adversarial examples replace samples of the Poisson batch (never add any): the
    # accounting below is unchanged, see fedsim.robustness.training.
    result = train_epochs(
        private.model,
        private.loader,
        private.optimizer,
        cfg.client.local_epochs,
        device,
        criterion=private.criterion,
        on_epoch_end=scorer.epoch_hook(lambda: plain_state_dict(private.model)),
        batch_transform=_adversarial_transform(private.model, adversarial),
        after_backward=None if canaries is None else _canary_hook(private.model, canaries),
        loss_fn=loss_fn,
        max_steps=cfg.client.local_steps,
    )
    acc_sigma, acc_q = private.accounted_schedule()
    ledger = ledger.with_event(SubsampledGaussian(acc_sigma, acc_q, private.steps_taken()))
    trained = plain_state_dict(private.model)
    val = scorer.finish(tasks, trained, client_id, task.server_round)
    ledger = ledger.with_events(tasks.events())
    released = val.released
    return LocalOutcome(
        status="ok",
        ledger=ledger,
        num_examples=len(split),
        state_dict=client_upload(cfg, client_id, task.server_round, task.global_state, trained),
        train_loss=result.mean_loss,
        noise_multiplier=acc_sigma,
        sample_rate=acc_q,
        epsilon=ledger.epsilon_training(acct),
        epsilon_total=ledger.epsilon_total(acct),
        train_seconds=time.perf_counter() - started,
        valuation=None if released is None else released.mean,
        valuation_variance=None if released is None else released.variance,
        valuation_epsilon=None if released is None else released.epsilon,
        extra_valuations=val.extra,
        pruned=val.dropped if val.dropped is not None else task.pruned,
        vog_state=scorer.vog_state(),
    )


def _own_data(
    cfg: Config, client_id: int, data: SiteData, pruned: tuple[int, ...] | None
) -> tuple[Split, np.ndarray]:
    """The data the client trains on (its role applied, pruned samples dropped) and the
    indices into ``data.train`` it kept."""
    split = client_data(cfg, client_id, data.train, data.num_classes)
    kept = np.arange(len(split))
    if pruned:
        kept = np.setdiff1d(kept, np.asarray(pruned, dtype=np.int64))
        split = split.subset(kept)
    return split, kept


def budget_gate(
    cfg: Config,
    client_id: int,
    ledger: PrivacyLedger,
    plan: DpSgdPlan | None,
    own_events: Sequence[DpEvent],
    server_events: Sequence[DpEvent],
    policy: SitePolicy | None,
    functional: DpEvent | None = None,
) -> LocalOutcome | None:
    """The refusal of this round (site policy, then budget), or ``None`` to train.

    ``functional`` is this round's functional-mechanism event (``client.mechanism:
    functional``; ``plan`` is then ``None``).
    """
    acct = Accounting.of(cfg.dp)
    projected: float | None = None
    this_round: DpEvent | None = functional
    if plan is not None:
        sigma = ledger.noise_multiplier
        assert sigma is not None  # fixed by the caller
        this_round = SubsampledGaussian(sigma, plan.sample_rate, plan.steps_per_round)
    if this_round is not None:
        projected = ledger.with_events((this_round, *own_events, *server_events)).epsilon_total(
            acct
        )
    refused = _refusal(cfg, policy, own_events, server_events, projected)
    cap = cfg.dp.max_epsilon
    over = projected is not None and cap is not None and projected > cap * (1 + 1e-9)
    if refused is None and over:
        selection = " (incl. the server's selection events)" if server_events else ""
        refused = (
            "budget-exhausted",
            f"budget exhausted: epsilon {ledger.epsilon_training(acct):.4g} spent, one more "
            f"round would reach {projected:.4g}{selection} > dp.max_epsilon {cap}",
        )
    if refused is None:
        return None
    status, reason = refused
    logger.info("client %d: %s", client_id, reason)
    return LocalOutcome(
        status=status,
        ledger=ledger,
        num_examples=0,
        noise_multiplier=ledger.noise_multiplier,
        sample_rate=None if plan is None else plan.sample_rate,
        epsilon=ledger.epsilon_training(acct) if this_round is not None else None,
        epsilon_total=ledger.epsilon_total(acct) if this_round is not None else None,
        reason=reason,
    )


def _functional_round(
    cfg: Config,
    client_id: int,
    task: LocalTask,
    model: torch.nn.Module,
    loader: DataLoader,
    plan: FunctionalPlan,
    ledger: PrivacyLedger,
    split: Split,
    root: int,
    device: torch.device,
    started: float,
) -> LocalOutcome:
    """Train the output layer with the functional mechanism and account its epochs."""
    train_functional(
        model,
        loader,
        plan,
        split.task,
        lr=cfg.client.lr,
        momentum=cfg.client.momentum,
        noise=torch_generator(root, "fm-noise", client_id, task.server_round, device=device.type),
        device=device,
    )
    ledger = ledger.with_event(plan.round_event())
    acct = Accounting.of(cfg.dp)
    trained = plain_state_dict(model)
    return LocalOutcome(
        status="ok",
        ledger=ledger,
        num_examples=len(split),
        state_dict=client_upload(cfg, client_id, task.server_round, task.global_state, trained),
        epsilon=ledger.epsilon_training(acct),
        epsilon_total=ledger.epsilon_total(acct),
        train_seconds=time.perf_counter() - started,
        pruned=task.pruned,
    )
