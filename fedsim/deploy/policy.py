"""A hospital's own privacy policy, and the check of one round's plan against it.

Who decides, who enforces
-------------------------
The coordinator's run config (``dp.*``, the strategy, valuation) says what a run *asks*
of the sites. A site says once, locally, what it *accepts*: a :class:`SitePolicy` read
from a YAML file that its operator gives to ``fedsim supernode --policy FILE`` (node
config ``policy-path``), or :data:`DEFAULT_POLICY` when it gives none. The file is
checked before the SuperNode starts; before every round the site's ClientApp describes
the round as a :class:`RoundRequest` — from the run's config and the site's own ledger —
and trains only when :func:`refusal` returns ``None``. Otherwise it replies with the
reason, sends no update and leaves its ledger unchanged.

The coordinator cannot override the policy: the file lives on the site's machine, is
named in the SuperNode's node config (which the coordinator neither sets nor sees) and
nothing in a run config, train config or override is read by this module. The one thing
a run can do is to ask for *less*: its ``dp.max_epsilon`` lowers the site's ε cap but
never raises it (:func:`effective_max_epsilon`).

The check is as honest as the request. The site fills :class:`RoundRequest` itself:
ε is composed from the site's persistent ledger (``state-dir``) plus this round's own
events and the ε the server says its private selection charges the site (which can only
add ε). A lifetime cap is meaningful only with a persistent ledger, so ``fedsim
supernode`` requires ``--state`` when the policy sets ``max_epsilon``.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fedsim.config import DPMode, build_dataclass, read_yaml
from fedsim.config import Relation as Neighbouring
from fedsim.errors import ConfigError

Mechanism = Literal["dpsgd", "functional", "valuation_release", "selection", "evaluation"]

#: Every privacy mechanism a round can apply to a site's data.
MECHANISMS: tuple[Mechanism, ...] = typing.get_args(Mechanism)


@dataclass(frozen=True)
class SitePolicy:
    """What one site accepts, whatever a run's config asks.

    Attributes
    ----------
    dp_required
        Train only in rounds with ``dp.enabled``.
    neighbouring
        The neighbouring relations the site accepts its ε to be stated under. The default
        accepts only ``replace_one``: every reply carries ``num-examples``, so the site's
        size is public and replace-one is the relation that matches what it reveals; the
        same ε number under ``add_remove`` is a weaker guarantee ((ε, δ) under add/remove
        only gives (2ε, (1 + e^ε)δ) under replace-one).
    max_epsilon
        The site's *lifetime* ε cap: over all rounds of all runs, as composed from its
        persistent ledger (at the run's ``dp.delta``). ``None``: only the run's
        ``dp.max_epsilon`` caps it. With a cap set, a round whose ε the site cannot
        account (no DP, or central DP) is refused: its ε is unbounded.
    max_delta
        The largest ``dp.delta`` the site accepts. δ bounds the probability that the
        guarantee fails outright, so it must be well below 1/n for n records: the default
        1e-5 is below 1/n for any site of up to 100,000 records (a hospital's typical
        range) and equals fedsim's default ``dp.delta``. A larger site should lower it.
    allow_central
        Accept ``dp.mode: central``: the site would send its *unnoised* update and trust
        the coordinator to clip and noise it. Refused by default.
    mechanisms
        The privacy mechanisms that may touch the site's data (:data:`MECHANISMS`):
        ``dpsgd`` (local DP-SGD), ``valuation_release`` (Laplace release of data-quality
        statistics), ``selection`` (the server's private selection, e.g. SecProbe, whose
        ε the server reports). All three by default: each is a DP mechanism whose ε
        enters the site's ledger and counts against the cap, so refusing them would buy
        no guarantee; a site drops one to keep e.g. its data-quality statistics private
        at any ε, or not to rely on ε reported by the server.
    """

    dp_required: bool = True
    neighbouring: tuple[Neighbouring, ...] = ("replace_one",)
    max_epsilon: float | None = field(default=None, metadata={"gt": 0})
    max_delta: float = field(default=1e-5, metadata={"gt": 0, "lt": 1})
    allow_central: bool = False
    mechanisms: tuple[Mechanism, ...] = MECHANISMS

    def describe(self) -> str:
        """One line for the SuperNode operator: what this policy accepts."""
        cap = (
            "none (the run's dp.max_epsilon)"
            if self.max_epsilon is None
            else f"{self.max_epsilon:g}"
        )
        return (
            f"dp_required={str(self.dp_required).lower()}, "
            f"neighbouring={'/'.join(self.neighbouring)}, max_epsilon (lifetime)={cap}, "
            f"max_delta={self.max_delta:g}, allow_central={str(self.allow_central).lower()}, "
            f"mechanisms={'/'.join(self.mechanisms)}"
        )


#: The policy of a site that gives none: DP-SGD required, ε stated under replace-one,
#: δ ≤ 1e-5, no central DP, the ε cap only from the run's ``dp.max_epsilon``.
DEFAULT_POLICY = SitePolicy()


@dataclass(frozen=True)
class RoundRequest:
    """What the coordinator asks of the site in one round, as the site sees it.

    The site's ClientApp builds it from the run's config and its own ledger.

    Attributes
    ----------
    dp_enabled
        ``dp.enabled``.
    mode
        ``dp.mode``.
    neighbouring
        The relation the site's ε (``projected_epsilon``) is stated under.
    delta
        ``dp.delta``: the δ of the site's ε.
    mechanisms
        The mechanisms this round would apply to the site's data: ``dpsgd`` when it
        trains with DP-SGD, ``functional`` when with SecProbe's functional mechanism
        (``client.mechanism``), ``valuation_release`` when it releases a valuation,
        ``selection`` when the server's private selection charges it ε,
        ``evaluation`` when it releases its evaluation counts.
    projected_epsilon
        The site's lifetime ε at ``delta`` if it takes part in this round: its ledger,
        composed with this round's events and the server's selection charges. ``None``
        when the site cannot account the round (``dp.enabled`` false, or central DP).
    config_max_epsilon
        The run's ``dp.max_epsilon``.
    """

    dp_enabled: bool
    mode: DPMode
    neighbouring: Neighbouring
    delta: float
    mechanisms: tuple[Mechanism, ...]
    projected_epsilon: float | None
    config_max_epsilon: float | None


def load_policy(path: str | Path) -> SitePolicy:
    """Read and validate a site policy file (YAML, the fields of :class:`SitePolicy`).

    An empty file is :data:`DEFAULT_POLICY`; fields left out keep their defaults.

    Raises
    ------
    ConfigError
        Listing every problem (unknown key, wrong type, value out of range, a policy that
        refuses every round), each naming the field, the rule and the value.
    """
    what = f"site policy {str(path)!r}"
    try:
        raw = read_yaml(path, "file")
    except ConfigError as exc:  # unreadable or not YAML: the same header as bad fields
        raise ConfigError(exc.problems, what) from None
    policy = build_dataclass(SitePolicy, raw, what)
    problems = _policy_checks(policy)
    if problems:
        raise ConfigError(problems, what)
    return policy


def _policy_checks(policy: SitePolicy) -> list[str]:
    """Rules over several fields: a policy must accept some DP round."""
    problems = []
    if not policy.neighbouring:
        problems.append("neighbouring must list at least one relation; got []")
    trains = {"dpsgd", "functional"} & set(policy.mechanisms)
    if policy.dp_required and not policy.allow_central and not trains:
        problems.append(
            "mechanisms must include 'dpsgd' or 'functional' when dp_required is true and "
            "allow_central is false (every round would be refused); got "
            f"{list(policy.mechanisms)}"
        )
    return problems


def effective_max_epsilon(policy: SitePolicy, config_max: float | None) -> float | None:
    """The site's ε cap in a run: the smaller of the policy's and the run's.

    A run's ``dp.max_epsilon`` can lower the policy's cap, never raise it; ``None``
    means no cap from that side.
    """
    caps = [c for c in (policy.max_epsilon, config_max) if c is not None]
    return min(caps) if caps else None


def refusal(policy: SitePolicy, request: RoundRequest) -> str | None:
    """Why ``policy`` refuses the round ``request``, or ``None`` when it allows it.

    Every rule is checked and every broken one is reported, in one line starting with
    ``"site policy: "`` and joined by ``"; "``, each naming the policy field, its rule
    and the value the run asks for.
    """
    reasons = []
    if policy.dp_required and not request.dp_enabled:
        reasons.append("dp_required is true but the run asks dp.enabled=false")
    central = request.dp_enabled and request.mode == "central"
    if central and not policy.allow_central:
        reasons.append(
            "allow_central is false but the run asks dp.mode='central' (the site's update "
            "would leave it unnoised)"
        )
    for name in request.mechanisms:
        if name not in policy.mechanisms:
            reasons.append(f"mechanisms allows {list(policy.mechanisms)} but the run asks {name!r}")
    if request.dp_enabled or request.mechanisms:  # some ε is stated: check its terms
        if request.neighbouring not in policy.neighbouring:
            reasons.append(
                f"neighbouring allows {list(policy.neighbouring)} but the run states epsilon "
                f"under {request.neighbouring!r}"
            )
        if not request.delta <= policy.max_delta:
            reasons.append(
                f"max_delta is {policy.max_delta:g} but the run asks dp.delta={request.delta:g}"
            )
    reasons.extend(_epsilon_reasons(policy, request))
    return "site policy: " + "; ".join(reasons) if reasons else None


def _epsilon_reasons(policy: SitePolicy, request: RoundRequest) -> list[str]:
    """The ε-cap rule: the projected lifetime ε must stay within the effective cap."""
    projected = request.projected_epsilon
    if projected is None:
        if policy.max_epsilon is None:
            return []
        return [
            f"max_epsilon {policy.max_epsilon:g} caps the site's lifetime epsilon but the "
            f"run's round has no epsilon the site can account (dp.enabled="
            f"{str(request.dp_enabled).lower()}, dp.mode={request.mode!r})"
        ]
    cap = effective_max_epsilon(policy, request.config_max_epsilon)
    # `not <=` also refuses NaN, an ε nobody could vouch for.
    if cap is None or projected <= cap * (1 + 1e-9):
        return []
    source = "the site's max_epsilon" if cap == policy.max_epsilon else "the run's dp.max_epsilon"
    shown = f"{projected:.4g}" if math.isfinite(projected) else str(projected)
    return [f"projected lifetime epsilon {shown} would exceed max_epsilon {cap:g} ({source})"]
