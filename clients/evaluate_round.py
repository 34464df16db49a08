"""One site's evaluation of the global model on its held-out records: check the policy and
the budget, count, release with DP noise, account.

Independent of Flower: :mod:`clients.client_app` turns an evaluate message into an
:class:`EvalTask`, calls :func:`run_site_evaluation` with the site's held-out split and
turns the :class:`EvalOutcome` back into a reply. What is released and how it is
accounted: :mod:`fedsim.privacy.evaluation`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from fedsim import keys
from fedsim.clinical import confusion_matrix
from fedsim.config import Config
from fedsim.data import Split
from fedsim.deploy.policy import RoundRequest, SitePolicy, effective_max_epsilon, refusal
from fedsim.models import build_model
from fedsim.privacy import Accounting, PrivacyLedger
from fedsim.privacy.evaluation import release_counts, release_events
from fedsim.seeding import derive_seed
from fedsim.tasks import predict

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalTask:
    """One evaluate instruction: the round, the global model, the site's ledger so far."""

    server_round: int
    global_state: Mapping[str, torch.Tensor]
    ledger: PrivacyLedger


@dataclass(frozen=True)
class EvalOutcome:
    """A site's evaluation; ``counts`` (the released K × K matrix, row-major) is ``None``
    when it released nothing (refused, budget exhausted)."""

    status: str
    ledger: PrivacyLedger
    counts: tuple[float, ...] | None = None
    #: ε of this release (0 for an exact release)
    epsilon: float = 0.0
    #: ε of all the site's evaluation releases so far, composed
    epsilon_evaluation: float | None = None
    #: ε of every event in the site's ledger, composed (only under DP-SGD)
    epsilon_total: float | None = None
    reason: str = ""


def _gate(
    cfg: Config, policy: SitePolicy | None, ledger: PrivacyLedger, projected: float | None
) -> tuple[str, str] | None:
    """``(status, reason)`` when the site does not release, else ``None``: its policy
    (mechanism ``evaluation`` allowed, its lifetime cap), then the run's ``dp.max_epsilon``."""
    if policy is not None:
        request = RoundRequest(
            dp_enabled=cfg.dp.enabled,
            mode=cfg.dp.mode,
            neighbouring=cfg.dp.neighbouring,
            delta=cfg.dp.delta,
            mechanisms=("evaluation",),
            projected_epsilon=projected,
            config_max_epsilon=None,
        )
        reason = refusal(policy, request)
        if reason is not None:
            return keys.STATUS_REFUSED, reason
    cap = effective_max_epsilon(policy, cfg.dp.max_epsilon) if policy else cfg.dp.max_epsilon
    if projected is not None and cap is not None and not projected <= cap * (1 + 1e-9):
        acct = Accounting.of(cfg.dp)
        return keys.STATUS_BUDGET_EXHAUSTED, (
            f"budget exhausted: epsilon {ledger.epsilon_total(acct):.4g} spent, this "
            f"evaluation would reach {projected:.4g} > max_epsilon {cap:g}"
        )
    return None


@torch.no_grad()
def held_out_matrix(
    model: torch.nn.Module, holdout: Split, num_classes: int, batch_size: int = 512
) -> np.ndarray:
    """The exact confusion matrix ``m[true, predicted]`` of ``model`` on ``holdout``."""
    model.eval()
    predicted = [
        predict(model(torch.tensor(holdout.x[i : i + batch_size])), "classification").numpy()
        for i in range(0, len(holdout), batch_size)
    ]
    flat = np.concatenate(predicted) if predicted else np.empty(0, np.int64)
    return confusion_matrix(flat, holdout.y, num_classes)


def run_site_evaluation(
    cfg: Config,
    client_id: int,
    holdout: Split,
    input_shape: tuple[int, int, int],
    num_classes: int,
    task: EvalTask,
    *,
    noise_root: int | None = None,
    policy: SitePolicy | None = None,
) -> EvalOutcome:
    """Evaluate ``task.global_state`` on the site's ``holdout`` and release the noisy
    confusion matrix at ``evaluation.epsilon``.

    The site's ``policy`` and the ε cap are checked first, on the ledger *with* this
    release: a refused or over-budget evaluation releases nothing and leaves the ledger
    unchanged. ``noise_root`` replaces ``cfg.seed`` as the root of the noise (a deployed
    site draws it from OS entropy every round).
    """
    acct = Accounting.of(cfg.dp)
    events = release_events(cfg.evaluation.epsilon, cfg.dp.neighbouring)
    ledger = task.ledger
    after = ledger.with_events(events)
    projected = after.epsilon_total(acct) if events else None
    refused = _gate(cfg, policy, ledger, projected)
    if refused is not None:
        status, reason = refused
        logger.info("client %d: evaluation not released: %s", client_id, reason)
        return EvalOutcome(status=status, ledger=ledger, reason=reason)
    model = build_model(cfg.model.name, input_shape, num_classes, seed=0)
    model.load_state_dict(dict(task.global_state))
    matrix = held_out_matrix(model, holdout, num_classes)
    root = cfg.seed if noise_root is None else noise_root
    rng = np.random.default_rng(derive_seed(root, "eval-noise", client_id, task.server_round))
    released = release_counts(matrix, cfg.evaluation.epsilon, cfg.dp.neighbouring, rng)
    sample_dp = cfg.dp.enabled and cfg.dp.mode == "sample"
    return EvalOutcome(
        status=keys.STATUS_OK,
        ledger=after,
        counts=tuple(float(c) for c in released.ravel()),
        epsilon=float(cfg.evaluation.epsilon or 0.0),
        epsilon_evaluation=acct.epsilon(after.evaluation_events()) if events else 0.0,
        epsilon_total=after.epsilon_total(acct) if sample_dp else None,
    )
