"""``summary.json``: the end-of-run digest (DESIGN.md, run directory contract)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedsim import __version__
from fedsim.config import Config
from fedsim.records import ClientRoundRecord, EvalResult
from fedsim.roles import assign_roles


def _eval_doc(result: EvalResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    doc: dict[str, Any] = {"test_accuracy": result.accuracy, "test_loss": result.loss}
    if result.auc is not None:
        doc["test_auc"] = result.auc
    return doc


def client_summaries(
    cfg: Config,
    round_records: Mapping[int, Sequence[ClientRoundRecord]],
    num_examples: Mapping[int, int],
    central_epsilon: float | None = None,
    client_ids: Sequence[int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per client (stable id): ε spent, δ, relation, role, rounds trained, last status.

    ``client_ids`` defaults to the keys of ``num_examples``; a client whose size is not
    known (``dp.neighbouring: add_remove`` hides it) gets ``num_examples: null``. Under
    central DP (``central_epsilon`` given) every client's ``epsilon_spent`` and
    ``epsilon_total`` is the federation's user-level ε. Without DP, ``epsilon_total`` is
    ``null`` (the client's data is not protected) and a private selection's ε appears
    only as ``epsilon_selection``.
    """
    out: dict[str, dict[str, Any]] = {}
    roles = assign_roles(cfg.data.num_clients, cfg.roles, cfg.seed)
    relation = cfg.dp.neighbouring if cfg.dp.enabled else None
    for cid in sorted(num_examples if client_ids is None else client_ids):
        history = [
            r for rnd in sorted(round_records) for r in round_records[rnd] if r.client_id == cid
        ]
        eps = [r.epsilon for r in history if r.epsilon is not None]
        eps_total = [r.epsilon_total for r in history if r.epsilon_total is not None]
        eps_sel = [r.epsilon_selection for r in history if r.epsilon_selection is not None]
        sigma = [r.noise_multiplier for r in history if r.noise_multiplier is not None]
        n = num_examples.get(cid)
        out[str(cid)] = {
            "epsilon_spent": (eps[-1] if eps else 0.0) if cfg.dp.enabled else None,
            # all the client's events, the server's selection events included
            "epsilon_total": (eps_total[-1] if eps_total else 0.0) if cfg.dp.enabled else None,
            "epsilon_selection": eps_sel[-1] if eps_sel else None,
            "delta": cfg.dp.delta if cfg.dp.enabled else None,
            "relation": relation,
            "noise_multiplier": sigma[-1] if sigma else None,
            "role": roles[cid] if 0 <= cid < len(roles) else "canary",  # a user-level audit
            "valuation": None,
            "reward_total": 0.0,
            "num_examples": None if n is None else int(n),
            "rounds_trained": sum(1 for r in history if r.status == "ok"),
            "last_status": history[-1].status if history else "never-sampled",
        }
        if central_epsilon is not None:
            out[str(cid)]["epsilon_spent"] = out[str(cid)]["epsilon_total"] = central_epsilon
    return out


def build_summary(
    cfg: Config,
    evaluations: Mapping[int, EvalResult],
    round_records: Mapping[int, Sequence[ClientRoundRecord]],
    num_examples: Mapping[int, int],
    wall_seconds: float,
    selection_epsilon: Mapping[int, float] | None = None,
    central_epsilon: float | None = None,
    client_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The ``summary.json`` document.

    ``selection_epsilon`` (round → ε spent by a private selection such as SecProbe) is
    composed over rounds by basic composition (the sum) into ``selection_epsilon_total``.
    ``central_epsilon`` is the federation's ε under ``dp.mode: central``.
    """
    completed = max((r for r in evaluations if r > 0), default=0)
    clients = client_summaries(cfg, round_records, num_examples, central_epsilon, client_ids)
    spent = [c["epsilon_spent"] for c in clients.values() if c["epsilon_spent"] is not None]
    totals = [c["epsilon_total"] for c in clients.values() if c["epsilon_total"] is not None]
    return {
        "name": cfg.name,
        "fedsim_version": __version__,
        "seed": cfg.seed,
        "rounds": completed,
        "wall_seconds": wall_seconds,
        "final": _eval_doc(evaluations.get(completed)),
        "initial": _eval_doc(evaluations.get(0)),
        "dp": {
            "enabled": cfg.dp.enabled,
            "mode": cfg.dp.mode if cfg.dp.enabled else None,
            "target_epsilon": cfg.dp.epsilon,
            "max_epsilon": cfg.dp.max_epsilon,
            "delta": cfg.dp.delta if cfg.dp.enabled else None,
            "neighbouring": cfg.dp.neighbouring if cfg.dp.enabled else None,
            "accountant": cfg.dp.accountant if cfg.dp.enabled else None,
            "max_epsilon_spent": max(spent) if spent else None,
            "max_epsilon_total": max(totals) if totals else None,
        },
        "selection_epsilon_total": (
            float(sum(selection_epsilon.values())) if selection_epsilon else None
        ),
        "clients": clients,
    }
