"""``summary.json``: the end-of-run digest as typed, frozen records.

:class:`RunSummary` is built once, at the end of a run, from the round log
(:mod:`fedsim.round_log`) and the parts other components contribute as values — the
reward book's :class:`ClientValuation` per client and run-level valuation section, the
privacy audit's and the robustness evaluation's scalars — and written by the run
directory's one writer (:mod:`fedsim.rundir`). ``schemas/summary.schema.json`` publishes
its JSON layout (checked against real runs in the tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedsim import __version__
from fedsim.config import Config
from fedsim.records import ClientRoundRecord, EvalResult, SiteEvaluation
from fedsim.roles import assign_roles


def _eval_doc(result: EvalResult | None) -> dict[str, Any] | None:
    return None if result is None else result.test_json()


@dataclass(frozen=True)
class ClientValuation:
    """What the reward book knows of one client at the end of a run."""

    valuation: float | None
    reward_total: float
    reward_total_quality: float
    reward_total_informativeness: float
    reward_total_combined: float
    clean_fraction: float


@dataclass(frozen=True)
class ClientSummary:
    """One client's line of ``summary.json`` (keyed by its stable id)."""

    epsilon_spent: float | None
    epsilon_total: float | None
    epsilon_selection: float | None
    delta: float | None
    relation: str | None
    noise_multiplier: float | None
    role: str
    num_examples: int | None
    rounds_trained: int
    last_status: str
    valuation: ClientValuation | None = None
    #: ε of the client's evaluation releases, composed (``evaluation.federated``)
    epsilon_evaluation: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The client's JSON object."""
        v = self.valuation
        doc: dict[str, Any] = {
            "epsilon_spent": self.epsilon_spent,
            "epsilon_total": self.epsilon_total,
            "epsilon_selection": self.epsilon_selection,
            "delta": self.delta,
            "relation": self.relation,
            "noise_multiplier": self.noise_multiplier,
            "role": self.role,
            "valuation": None if v is None else v.valuation,
            "reward_total": 0.0 if v is None else v.reward_total,
            "num_examples": self.num_examples,
            "rounds_trained": self.rounds_trained,
            "last_status": self.last_status,
            "epsilon_evaluation": self.epsilon_evaluation,
        }
        if v is not None:
            doc.update(
                reward_total_quality=v.reward_total_quality,
                reward_total_informativeness=v.reward_total_informativeness,
                reward_total_combined=v.reward_total_combined,
                clean_fraction=v.clean_fraction,
            )
        return doc


@dataclass(frozen=True)
class DpSummary:
    """The ``dp`` section: the run's privacy settings and the largest ε spent."""

    enabled: bool
    mode: str | None
    target_epsilon: float | None
    max_epsilon: float | None
    delta: float | None
    neighbouring: str | None
    accountant: str | None
    max_epsilon_spent: float | None
    max_epsilon_total: float | None


@dataclass(frozen=True)
class RunSummary:
    """The whole ``summary.json`` document.

    ``valuation``, ``audit``, ``robustness`` and ``site_evaluation`` are the sections the
    reward book, the privacy audit, the robustness evaluation and the federated
    evaluation contribute (absent when not run).
    """

    name: str
    seed: int
    rounds: int
    wall_seconds: float
    final: EvalResult | None
    initial: EvalResult | None
    dp: DpSummary
    selection_epsilon_total: float | None
    clients: Mapping[int, ClientSummary]
    #: client rounds that ended ``failed`` (error, timeout, crash) or ``rejected``
    client_faults: Mapping[str, int] = field(default_factory=dict)
    #: why the run ended before ``cfg.rounds`` (``None`` when every round ran)
    ended_early: str | None = None
    valuation: Mapping[str, Any] | None = None
    audit: Mapping[str, Any] | None = None
    robustness: Mapping[str, Any] | None = None
    site_evaluation: Mapping[str, Any] | None = None
    fedsim_version: str = field(default=__version__)

    def to_json(self) -> dict[str, Any]:
        """The ``summary.json`` document."""
        doc: dict[str, Any] = {
            "name": self.name,
            "fedsim_version": self.fedsim_version,
            "seed": self.seed,
            "rounds": self.rounds,
            "wall_seconds": self.wall_seconds,
            "final": _eval_doc(self.final),
            "initial": _eval_doc(self.initial),
            "dp": dict(vars(self.dp)),
            "selection_epsilon_total": self.selection_epsilon_total,
            "clients": {str(cid): c.to_json() for cid, c in sorted(self.clients.items())},
            "client_faults": dict(self.client_faults),
            "ended_early": self.ended_early,
        }
        for name in ("valuation", "robustness", "audit", "site_evaluation"):
            section = getattr(self, name)
            if section is not None:
                doc[name] = dict(section)
        return doc


def client_summaries(
    cfg: Config,
    round_records: Mapping[int, Sequence[ClientRoundRecord]],
    num_examples: Mapping[int, int],
    client_ids: Sequence[int],
    central_epsilon: float | None = None,
    valuations: Mapping[int, ClientValuation] | None = None,
    site_evaluations: Mapping[int, SiteEvaluation] | None = None,
) -> dict[int, ClientSummary]:
    """Per client (stable id): ε spent, δ, relation, role, rounds trained, last status.

    A client whose size is not known (``dp.neighbouring: add_remove`` hides it) gets
    ``num_examples: null``. Under central DP (``central_epsilon`` given) every client's
    ``epsilon_spent`` and ``epsilon_total`` is the federation's user-level ε. Without DP,
    ``epsilon_total`` is ``null`` (the client's data is not protected) and a private
    selection's ε appears only as ``epsilon_selection``. Clients beyond
    ``data.num_clients`` are a user-level audit's canary clients (role ``canary``).
    With federated evaluation (``site_evaluations``) a client's ``epsilon_total`` is the
    newest its training or evaluation replies reported (a round's evaluation follows its
    training), and ``epsilon_evaluation`` the ε of its evaluation releases.
    """
    out: dict[int, ClientSummary] = {}
    roles = assign_roles(cfg.data.num_clients, cfg.roles, cfg.seed)
    relation = cfg.dp.neighbouring if cfg.dp.enabled else None
    for cid in sorted(client_ids):
        history = [
            r for rnd in sorted(round_records) for r in round_records[rnd] if r.client_id == cid
        ]
        eps = [r.epsilon for r in history if r.epsilon is not None]
        eps_total = _newest_totals(cid, round_records, site_evaluations or {})
        eps_sel = [r.epsilon_selection for r in history if r.epsilon_selection is not None]
        sigma = [r.noise_multiplier for r in history if r.noise_multiplier is not None]
        spent = (eps[-1] if eps else 0.0) if cfg.dp.enabled else None
        total = (eps_total[-1] if eps_total else 0.0) if cfg.dp.enabled else None
        if central_epsilon is not None:
            spent = total = central_epsilon
        n = num_examples.get(cid)
        out[cid] = ClientSummary(
            epsilon_spent=spent,
            epsilon_total=total,
            epsilon_selection=eps_sel[-1] if eps_sel else None,
            delta=cfg.dp.delta if cfg.dp.enabled else None,
            relation=relation,
            noise_multiplier=sigma[-1] if sigma else None,
            role=roles[cid] if 0 <= cid < len(roles) else "canary",
            num_examples=None if n is None else int(n),
            rounds_trained=sum(1 for r in history if r.status == "ok"),
            last_status=history[-1].status if history else "never-sampled",
            valuation=None if valuations is None else valuations.get(cid),
            epsilon_evaluation=_evaluation_epsilon(cid, site_evaluations or {}),
        )
    return out


def _newest_totals(
    cid: int,
    round_records: Mapping[int, Sequence[ClientRoundRecord]],
    site_evaluations: Mapping[int, SiteEvaluation],
) -> list[float]:
    """The client's reported ``epsilon_total`` values in the order they happened."""
    timed = [
        ((rnd, 0), r.epsilon_total)
        for rnd, records in round_records.items()
        for r in records
        if r.client_id == cid and r.epsilon_total is not None
    ]
    timed += [
        ((rnd, 1), s.epsilon_total)
        for rnd, ev in site_evaluations.items()
        for s in ev.sites
        if s.client_id == cid and s.epsilon_total is not None
    ]
    return [eps for _, eps in sorted(timed, key=lambda pair: pair[0])]


def _evaluation_epsilon(cid: int, site_evaluations: Mapping[int, SiteEvaluation]) -> float | None:
    """ε of the client's evaluation releases, as it last reported it."""
    reported = [
        s.epsilon_evaluation
        for _, ev in sorted(site_evaluations.items())
        for s in ev.sites
        if s.client_id == cid and s.epsilon_evaluation is not None
    ]
    return reported[-1] if reported else None


def site_evaluation_section(site_evaluations: Mapping[int, SiteEvaluation]) -> dict[str, Any]:
    """``summary.json``'s ``site_evaluation``: the evaluated rounds, the last one's
    aggregate (``final``) and each site's last evaluation."""
    last = max(site_evaluations)
    sites: dict[str, Any] = {}
    for _, ev in sorted(site_evaluations.items()):
        for s in ev.sites:
            sites[str(s.client_id)] = s.to_json()
    aggregate = site_evaluations[last].aggregate
    return {
        "rounds": sorted(site_evaluations),
        "final_round": last,
        "final": None if aggregate is None else aggregate.to_json(),
        "sites": dict(sorted(sites.items(), key=lambda kv: int(kv[0]))),
    }


def build_summary(
    cfg: Config,
    evaluations: Mapping[int, EvalResult],
    round_records: Mapping[int, Sequence[ClientRoundRecord]],
    num_examples: Mapping[int, int],
    client_ids: Sequence[int],
    wall_seconds: float,
    selection_epsilon: Mapping[int, float] | None = None,
    central_epsilon: float | None = None,
    valuations: Mapping[int, ClientValuation] | None = None,
    valuation_section: Mapping[str, Any] | None = None,
    audit: Mapping[str, Any] | None = None,
    robustness: Mapping[str, Any] | None = None,
    site_evaluations: Mapping[int, SiteEvaluation] | None = None,
) -> RunSummary:
    """The run's :class:`RunSummary`.

    ``selection_epsilon`` (round → ε spent by a private selection such as SecProbe) is
    composed over rounds by basic composition (the sum) into ``selection_epsilon_total``.
    ``central_epsilon`` is the federation's ε under ``dp.mode: central``.
    """
    completed = max((r for r in evaluations if r > 0), default=0)
    clients = client_summaries(
        cfg, round_records, num_examples, client_ids, central_epsilon, valuations, site_evaluations
    )
    spent = [c.epsilon_spent for c in clients.values() if c.epsilon_spent is not None]
    totals = [c.epsilon_total for c in clients.values() if c.epsilon_total is not None]
    dp = cfg.dp
    return RunSummary(
        name=cfg.name,
        seed=cfg.seed,
        rounds=completed,
        wall_seconds=wall_seconds,
        final=evaluations.get(completed),
        initial=evaluations.get(0),
        dp=DpSummary(
            enabled=dp.enabled,
            mode=dp.mode if dp.enabled else None,
            target_epsilon=dp.epsilon,
            max_epsilon=dp.max_epsilon,
            delta=dp.delta if dp.enabled else None,
            neighbouring=dp.neighbouring if dp.enabled else None,
            accountant=dp.accountant if dp.enabled else None,
            max_epsilon_spent=max(spent) if spent else None,
            max_epsilon_total=max(totals) if totals else None,
        ),
        selection_epsilon_total=(
            float(sum(selection_epsilon.values())) if selection_epsilon else None
        ),
        clients=clients,
        client_faults={
            status: sum(r.status == status for rnd in round_records.values() for r in rnd)
            for status in ("failed", "rejected")
        },
        ended_early=(
            None
            if completed >= cfg.rounds
            else f"no client could train after round {completed} of {cfg.rounds} "
            "(budgets exhausted or training refused)"
        ),
        valuation=valuation_section,
        audit=audit,
        robustness=robustness,
        site_evaluation=site_evaluation_section(site_evaluations) if site_evaluations else None,
    )
