"""The outcome of a privacy audit: ``audit.json`` and the ``report.md`` section.

:func:`build_audit` turns the canaries' scores into the two empirical figures — the
one-shot ε *estimate* (Andrew et al., ICLR 2024) from Gaussians fitted to the scores of
inserted and never-inserted canaries, and the one-run ε *lower bound* (Steinke, Nasr &
Jagielski, NeurIPS 2023) from guessing the top and bottom scores — and compares the
bound with the claimed ε. The canaries are inserted or left out, so the audit tests the
**add/remove** relation (of a canary record, or of a canary client): the claim it checks
is the ε of the same privacy events under add/remove, which for the Poisson-subsampled
Gaussian is never above the replace-one ε a run prints by default.

What the audit can show: a lower bound above the claim is a statistically valid proof
(at the stated confidence) that the mechanism leaks more than claimed — a ``VIOLATION``.
What it cannot: an estimate or a bound below the claim does not prove the claim; the
auditor's statistic may simply be weak.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedsim.audit.one_run import OneRunAudit, best_guess_bound
from fedsim.audit.one_shot import OneShotEstimate, one_shot_estimate
from fedsim.audit.verdict import Verdict, verdict
from fedsim.rundir import AUDIT_FILE

AuditLevel = Literal["user", "sample"]

THREAT_MODELS: dict[str, str] = {
    "user": (
        "user level: canary clients (each inserted into the federation with probability 1/2) "
        "upload a fixed random direction of norm above the clipping bound whenever they are "
        "sampled; the auditor observes every released global model and scores each canary "
        "by the projection of the total model change onto its direction"
    ),
    "sample": (
        "sample level: canary records (each inserted into the audited client's data with "
        "probability 1/2) whose per-sample gradient is a fixed random direction of norm above "
        "the clipping bound; the auditor observes the client's model update in every round "
        "as the server receives it and scores each canary by the projection of the summed "
        "updates onto minus its direction"
    ),
}


@dataclass(frozen=True)
class AuditResult:
    """Everything ``audit.json`` records."""

    level: AuditLevel
    claimed_epsilon: float
    relation: str
    delta: float
    claimed_epsilon_add_remove: float
    estimate: OneShotEstimate
    bound: OneRunAudit
    canaries: int
    inserted: int
    observations: int
    threat_model: str
    verdict: Verdict
    audited_client: int | None = None
    #: every canary's score and whether it was inserted (so anyone can redo the statistics)
    scores: tuple[float, ...] = ()
    included: tuple[bool, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The ``audit.json`` document."""
        doc = asdict(self)
        doc["audited_relation"] = "add_remove"
        return doc

    def summary_scalars(self) -> dict[str, Any]:
        """The figures that go into ``summary.json`` (and so into ``sweep.csv``)."""
        return {
            "level": self.level,
            "verdict": self.verdict,
            "claimed_epsilon": self.claimed_epsilon,
            "claimed_epsilon_add_remove": self.claimed_epsilon_add_remove,
            "estimate": self.estimate.epsilon,
            "lower_bound": self.bound.epsilon,
            "confidence": self.bound.confidence,
            "canaries": self.canaries,
        }


def build_audit(
    level: AuditLevel,
    scores: np.ndarray,
    included: np.ndarray,
    *,
    claimed_epsilon: float,
    claimed_epsilon_add_remove: float,
    relation: str,
    delta: float,
    confidence: float,
    rng: np.random.Generator,
    observations: int,
    audited_client: int | None = None,
) -> AuditResult:
    """The audit of one run from its canaries' ``scores`` and inclusion bits.

    ``claimed_epsilon`` is what the run printed (under ``relation``);
    ``claimed_epsilon_add_remove`` the ε of the same events under add/remove, which the
    canaries test; the verdict compares the lower bound with it.
    """
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    if scores.shape != included.shape:
        raise ValueError(f"scores and included differ in shape: {scores.shape}, {included.shape}")
    estimate = one_shot_estimate(
        scores[included], scores[~included], delta, confidence=confidence, rng=rng
    )
    bound = best_guess_bound(scores, included, delta, confidence=confidence)
    return AuditResult(
        level=level,
        claimed_epsilon=float(claimed_epsilon),
        relation=relation,
        delta=float(delta),
        claimed_epsilon_add_remove=float(claimed_epsilon_add_remove),
        estimate=estimate,
        bound=bound,
        canaries=int(scores.size),
        inserted=int(included.sum()),
        observations=int(observations),
        threat_model=THREAT_MODELS[level],
        verdict=verdict(claimed_epsilon_add_remove, bound.epsilon),
        audited_client=audited_client,
        scores=tuple(float(x) for x in scores),
        included=tuple(bool(b) for b in included),
    )


def read_audit(run_dir: str | Path) -> dict[str, Any] | None:
    """``audit.json`` of a run directory (``None`` when the run had no audit)."""
    path = Path(run_dir) / AUDIT_FILE
    if not path.is_file():
        return None
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def audit_section(run_dir: Path) -> str | None:
    """The ``report.md`` section of a run's audit (``None`` without one)."""
    doc = read_audit(run_dir)
    if doc is None:
        return None
    est, bound = doc["estimate"], doc["bound"]
    conf = f"{100 * bound['confidence']:g}%"
    claimed = f"{doc['claimed_epsilon']:.4g} ({doc['relation']}, δ={doc['delta']:g})"
    interval = f"{est['ci_low']:.3g}–{est['ci_high']:.3g}"
    guessed = f"{bound['correct']}/{bound['guesses']} correct guesses"
    rows = [
        ("claimed ε (as printed)", claimed),
        (
            "claimed ε, add/remove (what the canaries test)",
            f"{doc['claimed_epsilon_add_remove']:.4g}",
        ),
        ("empirical ε estimate (one-shot)", f"{est['epsilon']:.4g} (interval {interval})"),
        (f"ε lower bound at {conf} (one run)", f"{bound['epsilon']:.4g} ({guessed})"),
        ("canaries (inserted)", f"{doc['canaries']} ({doc['inserted']})"),
        ("releases observed", str(doc["observations"])),
        ("verdict", f"**{doc['verdict']}**"),
    ]
    table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    return (
        "## Privacy audit\n\n"
        f"Threat model: {doc['threat_model']}.\n\n{table}\n\n"
        "A lower bound above the claimed ε proves (at the stated confidence) that the run "
        "leaks more than it claims. An estimate or bound below the claim does not prove the "
        "claim: the auditor's statistic may be weak.\n"
    )
