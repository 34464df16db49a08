"""Pure privacy-accounting math over DP events (dp-accounting's PLD or RDP accountant).

fedsim accounts each client's privacy with Google's ``dp-accounting`` library: DP-SGD
steps are Poisson-subsampled Gaussian events, valuation releases are Laplace events, and
other pure ε-DP mechanisms (SecProbe's exponential-mechanism selection, the functional
mechanism) are generic :class:`PureDp` events. The functions here are side-effect free;
:mod:`fedsim.privacy.ledger` holds the events.

Neighbouring relation
---------------------
Every ε is stated under a neighbouring relation (:data:`Relation`):

- ``replace_one``: the two datasets have the same size and differ in one record, which
  may be replaced by anything. This is the relation that matches a protocol in which the
  size ``n`` of a client's data is public (fedsim's replies carry ``num-examples``, and σ,
  the sampling rate and the step count are functions of ``n``). A Poisson-subsampled
  Gaussian step with clipping norm C is then the pair
  ``(1-q)·N(0, σ²) + q·N(+1, σ²)`` vs ``(1-q)·N(0, σ²) + q·N(-1, σ²)`` (in units of C:
  the record's clipped gradient can flip from +C to −C); dp-accounting's PLD accountant
  analyses exactly this pair. Its RDP accountant has no Poisson replace-one analysis, so
  under ``replace_one`` fedsim accounts with PLD only.
- ``add_remove``: one dataset has one record more. Sound only when nothing a client
  reveals depends on ``n`` (see ``dp.size_bound``); PLD or RDP.

Laplace releases and pure-DP events are calibrated to their sensitivity under the
relation of the run (:mod:`fedsim.valuation.release`: the same Δ under both relations),
so each is the pure ε-DP mechanism its ε says under either relation; in a PLD they enter
as the Laplace / pure-DP privacy loss of that ε.

Opacus' Poisson data loader uses sampling rate ``q = 1 / ceil(n / B)`` and runs
``ceil(n / B)`` steps per epoch; :func:`dp_sgd_schedule` mirrors exactly that so that the
noise calibrated here is the noise Opacus' accounting would assume.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dp_accounting
from dp_accounting import rdp
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import privacy_loss_distribution as pld_lib

from fedsim.config import RELATION_TEXT, AccountantName, Relation
from fedsim.privacy import sigma_cache

if TYPE_CHECKING:
    from fedsim.config import DPConfig

_DP_RELATION = {
    "replace_one": dp_accounting.NeighboringRelation.REPLACE_ONE,
    "add_remove": dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
}
#: Discretisation of the privacy loss in fedsim's PLDs (pessimistic rounding: ε is an
#: upper bound; 1e-3 keeps ε within ~0.1% of the exact value at the sizes used here).
PLD_DISCRETIZATION = 1e-3

#: Pure ε-DP events of a larger ε are composed basically (their ε's added to the rest's
#: ε): dp-accounting's PLD of a pure ε-DP pair overflows (``math.exp(ε)``) near ε = 709,
#: and at such ε a tighter composition changes nothing that protects anyone. SecProbe's
#: tight selection sensitivity charges each participant ε·n_val/2 per round, e.g. 2,500.
BASIC_EPSILON = 100.0

#: RDP orders. Fractional orders below 2 make dp-accounting's subsampled-Gaussian series
#: fail to converge (it then drops them with a warning); they only tighten very large ε
#: (> ~20), so we leave them out: ε there is slightly conservative, never optimistic.
_RDP_ORDERS = (2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 4.5, *range(5, 64), 64, 80, 96, 128, 256, 512)


@dataclass(frozen=True)
class SubsampledGaussian:
    """``steps`` DP-SGD steps with Poisson sampling rate ``sample_rate`` and noise σ."""

    noise_multiplier: float
    sample_rate: float
    steps: int


@dataclass(frozen=True)
class LaplaceRelease:
    """``count`` releases with the Laplace mechanism, each ``epsilon``-DP (scale = Δ/ε)."""

    epsilon: float
    count: int = 1


@dataclass(frozen=True)
class EvaluationRelease(LaplaceRelease):
    """``count`` Laplace releases of a site's evaluation counts, each ``epsilon``-DP
    (:mod:`fedsim.privacy.evaluation`).

    Accounted exactly as :class:`LaplaceRelease`; a type of its own so that a ledger can
    tell the site's evaluation releases from its valuation releases.
    """


@dataclass(frozen=True)
class PureDp:
    """``count`` runs of a pure ``epsilon``-DP mechanism that is not Laplace.

    For the RDP accountant an ε-DP mechanism is ``ε²/2``-zCDP (Bun & Steinke, TCC 2016,
    Prop. 1.4), i.e. RDP ``α·ε²/2`` at every order α; the PLD accountant has no generic
    pure-DP event, so there such events compose basically (their ε's add up).
    """

    epsilon: float
    count: int = 1


@dataclass(frozen=True)
class FunctionalMechanism(PureDp):
    """``count`` epochs of SecProbe's functional mechanism, each ``epsilon``-DP.

    Accounted exactly as :class:`PureDp` (the noisy coefficients of a batch are a Laplace
    vector of L1 sensitivity Δ, an ε-DP mechanism; the batches of an epoch are disjoint,
    :mod:`fedsim.privacy.functional`); a type of its own so that a ledger can tell the
    client's training events from its other pure-DP events.
    """


DpEvent = SubsampledGaussian | LaplaceRelease | PureDp


@dataclass(frozen=True)
class DpSgdSchedule:
    """What one client's local training looks like to the accountant."""

    sample_rate: float
    steps_per_epoch: int


def dp_sgd_schedule(num_examples: int, batch_size: int) -> DpSgdSchedule:
    """Sampling rate and steps per epoch of Opacus' Poisson loader for ``n`` examples.

    >>> dp_sgd_schedule(100, 32)
    DpSgdSchedule(sample_rate=0.25, steps_per_epoch=4)
    """
    if num_examples < 1 or batch_size < 1:
        raise ValueError(
            f"need num_examples >= 1 and batch_size >= 1; got {num_examples}, {batch_size}"
        )
    batches = math.ceil(num_examples / batch_size)
    return DpSgdSchedule(sample_rate=1.0 / batches, steps_per_epoch=batches)


def _to_dp_event(event: DpEvent) -> tuple[dp_accounting.DpEvent, int]:
    if isinstance(event, SubsampledGaussian):
        inner = dp_accounting.GaussianDpEvent(event.noise_multiplier)
        if event.sample_rate < 1.0:
            return dp_accounting.PoissonSampledDpEvent(event.sample_rate, inner), event.steps
        return inner, event.steps
    if isinstance(event, PureDp):
        return dp_accounting.ZCDpEvent(rho=event.epsilon**2 / 2.0), event.count
    # Laplace with scale b and sensitivity Δ is (Δ/b)-DP; dp-accounting's parameter is b/Δ.
    return dp_accounting.LaplaceDpEvent(1.0 / event.epsilon), event.count


def epsilon(
    events: Sequence[DpEvent],
    delta: float,
    accountant: AccountantName = "pld",
    relation: Relation = "replace_one",
) -> float:
    """ε of the composition of ``events`` at ``delta`` under ``relation`` (0.0 for none).

    Pure ε-DP events (Laplace releases, :class:`PureDp`) are also composed basically (ε of
    the Gaussian part plus the sum of the pure ε's); the smaller of that and the
    accountant's bound is returned — both are valid (ε, δ) bounds.

    Raises
    ------
    ValueError
        For ``relation="replace_one"`` with ``accountant="rdp"`` (dp-accounting's RDP
        accountant has no Poisson-subsampled Gaussian under replace-one).
    """
    if relation == "replace_one" and accountant == "rdp":
        raise ValueError(
            "the rdp accountant has no Poisson-subsampled Gaussian under replace_one; "
            "use the pld accountant"
        )
    return _epsilon_of(tuple(events), delta, accountant, relation)


@functools.lru_cache(maxsize=1024)
def _epsilon_of(
    events: tuple[DpEvent, ...], delta: float, accountant: AccountantName, relation: Relation
) -> float:
    """:func:`epsilon`, cached: a client round asks for the same composition up to three
    times (the budget check's projection, then the DP-SGD and the total ε of the ledger,
    which are equal without releases), each ~25 ms of PLD work for the quickstart."""
    active = [e for e in events if (e.steps if isinstance(e, SubsampledGaussian) else e.count)]
    # pure events too large for the accountants (see BASIC_EPSILON) are added basically
    huge = [
        e for e in active if not isinstance(e, SubsampledGaussian) and e.epsilon > BASIC_EPSILON
    ]
    rest = [e for e in active if e not in huge]
    basic = sum(e.epsilon * e.count for e in huge)
    return basic + (_composed_epsilon(rest, delta, accountant, relation) if rest else 0.0)


def _composed_epsilon(
    active: list[DpEvent], delta: float, accountant: AccountantName, relation: Relation
) -> float:
    """The accountant's ε of ``active``, or the basic composition where that is smaller."""
    composed = _accountant_epsilon(active, delta, accountant, relation)
    pure = [e for e in active if not isinstance(e, SubsampledGaussian)]
    if not pure:
        return composed
    gaussian = [e for e in active if isinstance(e, SubsampledGaussian)]
    basic = sum(e.epsilon * e.count for e in pure)
    if gaussian:
        basic += _accountant_epsilon(gaussian, delta, accountant, relation)
    return min(composed, basic)


def _accountant_epsilon(
    active: Sequence[DpEvent], delta: float, accountant: AccountantName, relation: Relation
) -> float:
    if accountant == "pld":
        return _pld_epsilon(active, delta, relation)
    acc = rdp.RdpAccountant(orders=list(_RDP_ORDERS))
    for e in active:
        dp_event, count = _to_dp_event(e)
        acc.compose(dp_event, count)
    return float(acc.get_epsilon(delta))


def _event_pld(event: DpEvent, relation: Relation) -> pld_lib.PrivacyLossDistribution:
    """The privacy loss distribution of one (self-composed) event."""
    h = PLD_DISCRETIZATION
    if isinstance(event, SubsampledGaussian):
        if event.sample_rate >= 1.0:  # k Gaussians compose to one with σ/√k
            return pld_lib.from_gaussian_mechanism(
                event.noise_multiplier / math.sqrt(event.steps),
                value_discretization_interval=h,
                neighboring_relation=_DP_RELATION[relation],
            )
        return _subsampled_gaussian_pld(
            event.noise_multiplier, event.sample_rate, relation
        ).self_compose(event.steps)
    if isinstance(event, LaplaceRelease):
        # scale Δ/ε at its own sensitivity Δ: the Laplace privacy loss of parameter 1/ε
        return pld_lib.from_laplace_mechanism(
            1.0 / event.epsilon, value_discretization_interval=h
        ).self_compose(event.count)
    params = pld_common.DifferentialPrivacyParameters(event.epsilon, 0.0)
    return pld_lib.from_privacy_parameters(params, value_discretization_interval=h).self_compose(
        event.count
    )


@functools.lru_cache(maxsize=256)
def _subsampled_gaussian_pld(
    noise_multiplier: float, sample_rate: float, relation: Relation
) -> pld_lib.PrivacyLossDistribution:
    """The PLD of one Poisson-subsampled Gaussian step, cached: building it is ~80% of an ε
    computation, and a client asks for it again every round with its σ and q (dp-accounting's
    PLDs are immutable: composing returns a new one)."""
    return pld_lib.from_gaussian_mechanism(
        noise_multiplier,
        value_discretization_interval=PLD_DISCRETIZATION,
        sampling_prob=sample_rate,
        neighboring_relation=_DP_RELATION[relation],
    )


def _pld_epsilon(active: Sequence[DpEvent], delta: float, relation: Relation) -> float:
    total = pld_lib.identity(value_discretization_interval=PLD_DISCRETIZATION)
    for e in active:
        total = total.compose(_event_pld(e, relation))
    return float(total.get_epsilon_for_delta(delta))


@functools.lru_cache(maxsize=256)
def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: AccountantName = "pld",
    relation: Relation = "replace_one",
    *,
    rel_tol: float = 1e-3,
    sigma_max: float = 1e4,
) -> float:
    """Smallest σ (to ``rel_tol``) such that ``steps`` DP-SGD steps spend ``target_epsilon``.

    Cached per process, and across processes by :mod:`fedsim.privacy.sigma_cache` (a kept
    result is used only once this process's accountant has confirmed it: the same σ as
    the search, never one that spends more than the target).

    Raises
    ------
    ValueError
        If even ``sigma_max`` cannot meet the target.
    """
    if target_epsilon <= 0:
        raise ValueError(f"target_epsilon must be > 0; got {target_epsilon}")

    def eps_at(sigma: float) -> float:
        return epsilon([SubsampledGaussian(sigma, sample_rate, steps)], delta, accountant, relation)

    search = sigma_cache.Search(target_epsilon, rel_tol, sigma_max)
    name = sigma_cache.plan_name(search, delta, sample_rate, steps, accountant, relation)
    kept = sigma_cache.load(name)
    if kept is not None and sigma_cache.confirmed(kept, search, eps_at):
        return kept.hi  # the σ of the search below, confirmed by this accountant
    plan = f"(sample rate {sample_rate}, {steps} steps, delta {delta})"
    start = _starting_sigma(target_epsilon, delta, sample_rate, steps, relation)
    bisection = _ReplayedBisection(eps_at, search, start=min(start, sigma_max))
    bracket = bisection.run(plan)
    if bracket.hi not in bisection.known and eps_at(bracket.hi) > target_epsilon:
        # ε is not monotone in σ near the root (never seen): search every point instead
        bracket = _ReplayedBisection(eps_at, search, replay=False).run(plan)
    sigma_cache.store(name, bracket)
    return bracket.hi


def _normal_cdf(x: float) -> float:
    """Φ(x), the standard normal CDF."""
    return 0.5 * math.erfc(-x / math.sqrt(2))


def _gdp_delta(mu: float, eps: float) -> float:
    """δ(ε) of μ-Gaussian DP (Dong, Roth & Su, "Gaussian differential privacy", JRSS-B
    2022); grows with μ."""
    return _normal_cdf(-eps / mu + mu / 2) - math.exp(eps) * _normal_cdf(-eps / mu - mu / 2)


def _starting_sigma(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, relation: Relation
) -> float:
    """Where :func:`calibrate_noise_multiplier`'s search starts: the σ at which the central
    limit approximation of ``steps`` Poisson-subsampled Gaussian steps spends
    ``target_epsilon`` at ``delta`` — μ-GDP with ``μ = q·√(T·(exp(Δ²/σ²) − 1))`` (the same
    paper's central limit theorem for subsampled composition), Δ = 1 under add/remove and
    2 under replace-one (the record's clipped gradient can flip from +C to −C).

    Only a starting point: the search's σ does not depend on it, the number and cost of
    the accountant calls do (PLD calls are slowest at small σ, e.g. 0.15–0.19 s at σ = 1
    against ~0.05 s near fedsim's usual σ). For ε 0.5–20 it lies at 0.9–1.4× the result
    under add/remove and 1.0–2.1× under replace-one (``tests/test_privacy.py``). 1.0 (the
    search's old start) where the approximation gives no answer.
    """
    try:
        lo, hi = 1e-3, 1e3
        if not _gdp_delta(lo, target_epsilon) < delta < _gdp_delta(hi, target_epsilon):
            return 1.0
        # bisect log μ
        for _ in range(60):
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if _gdp_delta(mid, target_epsilon) < delta else (lo, mid)
        sensitivity = 2.0 if relation == "replace_one" else 1.0
        ratio = hi * hi / (sample_rate * sample_rate * steps)
        sigma = sensitivity / math.sqrt(math.log1p(ratio))
    except (OverflowError, ValueError, ZeroDivisionError):
        return 1.0
    return sigma if math.isfinite(sigma) and sigma > 1e-3 else 1.0


#: Relative half-width of the bracket around the root that :class:`_ReplayedBisection`
#: measures before it replays the bisection.
_BRACKET_REL = 2e-4


class _ReplayedBisection:
    """The bisection ``calibrate_noise_multiplier`` defines — doubling σ from 1 until ε
    is at most the target, then halving ``[lo, hi]`` until ``hi - lo <= rel_tol * hi`` and
    returning ``hi`` — with the same result from fewer accountant calls (each ~0.05–0.1 s
    for PLD).

    ε falls as σ grows, so a point left of a σ known to overshoot overshoots too, and a
    point right of a σ known to meet the target meets it. A secant search in log-log space
    from ``start`` (:func:`_starting_sigma`) first brackets the root to about
    ±:data:`_BRACKET_REL` (5–7 calls instead of ~12);
    the bisection is then
    replayed, evaluating only the points inside that bracket. With ``replay=False``
    every point is evaluated (the plain bisection). The caller checks the returned σ
    against the accountant when it was not evaluated itself."""

    def __init__(
        self,
        eps_at: object,
        search: sigma_cache.Search,
        *,
        replay: bool = True,
        start: float = 1.0,
    ) -> None:
        self._eps_at = eps_at
        self._search = search
        self._target = search.target_epsilon
        self._replay = replay
        self._start = start
        self.known: dict[float, float] = {}
        self._over = 0.0  # the largest σ known to overshoot the target
        self._meets = math.inf  # the smallest σ known to meet it

    def _eps(self, sigma: float) -> float:
        if sigma not in self.known:
            value = float(self._eps_at(sigma))  # type: ignore[operator]
            self.known[sigma] = value
            if value > self._target:
                self._over = max(self._over, sigma)
            else:
                self._meets = min(self._meets, sigma)
        return self.known[sigma]

    def _overshoots(self, sigma: float) -> bool:
        if self._replay and sigma <= self._over:
            return True
        if self._replay and sigma >= self._meets:
            return False
        return self._eps(sigma) > self._target

    def _bracket(self) -> None:
        """Secant steps on log ε(log σ) from the starting σ until the root lies within
        ±:data:`_BRACKET_REL`, then one point on each side of it."""
        log_t, sigma_max = math.log(self._target), self._search.sigma_max
        x0 = math.log(self._start)
        e0 = math.log(max(self._eps(self._start), 1e-300))
        x1 = x0 + (e0 - log_t)  # ε ~ 1/σ to start with
        for _ in range(8):
            x1 = min(max(x1, -30.0), math.log(sigma_max))
            e1 = math.log(max(self._eps(math.exp(x1)), 1e-300))
            if abs(x1 - x0) < 1e-12 or e1 == e0:
                break
            x0, x1, e0 = x1, x1 + (log_t - e1) * (x1 - x0) / (e1 - e0), e1
            if abs(x1 - x0) < _BRACKET_REL / 4:
                break
        root = math.exp(x1)
        if root >= sigma_max:
            return
        if self._over < root * (1 - 2 * _BRACKET_REL):  # no point close below the root
            self._eps(root * (1 - _BRACKET_REL))
        if self._meets > root * (1 + 2 * _BRACKET_REL):  # none close above it
            self._eps(min(root * (1 + _BRACKET_REL), sigma_max))

    def run(self, plan: str) -> sigma_cache.Bracket:
        """The bisection's final bracket (its ``hi`` is the σ); ``plan`` describes the
        plan in the error.

        Raises
        ------
        ValueError
            If no σ up to the search's bound reaches the target.
        """
        if self._replay:
            self._bracket()
        try:
            return self._search.final_bracket(self._overshoots)
        except ValueError:
            raise ValueError(
                f"no noise multiplier <= {self._search.sigma_max} reaches epsilon "
                f"{self._target} {plan}"
            ) from None


def clear_caches() -> None:
    """Forget every cached calibration and ε (benchmarks use it to time a fresh process)."""
    calibrate_noise_multiplier.cache_clear()
    _epsilon_of.cache_clear()
    _subsampled_gaussian_pld.cache_clear()


@dataclass(frozen=True)
class Accounting:
    """How a run turns privacy events into ε: δ, the accountant and the relation."""

    delta: float
    accountant: AccountantName = "pld"
    relation: Relation = "replace_one"

    @classmethod
    def of(cls, dp: DPConfig) -> Accounting:
        """The accounting of a run's ``dp`` section."""
        return cls(dp.delta, dp.accountant, dp.neighbouring)

    @property
    def relation_text(self) -> str:
        """The relation as printed next to an ε, e.g. ``replace-one``."""
        return RELATION_TEXT[self.relation]

    def epsilon(self, events: Sequence[DpEvent]) -> float:
        """ε of ``events`` composed (see :func:`epsilon`)."""
        return epsilon(events, self.delta, self.accountant, self.relation)

    def calibrate(self, target_epsilon: float, sample_rate: float, steps: int) -> float:
        """σ such that ``steps`` subsampled-Gaussian steps spend ``target_epsilon``."""
        return calibrate_noise_multiplier(
            target_epsilon, self.delta, sample_rate, steps, self.accountant, self.relation
        )
