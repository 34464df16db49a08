"""Check the whole plan before anything heavy starts.

The preflight loads the dataset, cuts the partitions, builds the model (and checks that
Opacus can train it when DP is on) and works out each client's DP-SGD plan, so that a
run that cannot work fails in seconds with a clear message instead of after Ray starts.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from fedsim.config import RELATION_TEXT, Config, DataConfig
from fedsim.errors import ConfigError, FedsimError
from fedsim.models import build_model, functional_units, is_dp_compatible, shipped_with_fedsim
from fedsim.privacy.accounting import Accounting
from fedsim.privacy.central import CentralDpPlan, central_epsilon, plan_central_dp
from fedsim.privacy.functional import FunctionalPlan, plan_functional
from fedsim.privacy.planning import (
    MAX_DP_SGD_STEPS,
    DpSgdPlan,
    epsilon_after_rounds,
    plan_dp_sgd,
    planned_dp_sgd_steps,
)
from fedsim.valuation.release import is_release_round
from fedsim.workload import dataset_for, partitions_for, training_sizes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreflightReport:
    """What the preflight found (printed by ``fedsim validate``)."""

    dataset: str
    input_shape: tuple[int, int, int]
    num_classes: int
    train_pool: int
    val_size: int
    test_size: int
    client_sizes: tuple[int, ...]
    num_parameters: int
    dp_plans: tuple[tuple[int, DpSgdPlan], ...] = ()
    central_plan: CentralDpPlan | None = None
    relation: str = "replace-one"
    task: str = "classification"
    functional_plan: FunctionalPlan | None = None
    #: Natural partitions: the site each client is (client i = site_names[i]).
    site_names: tuple[str, ...] = ()
    #: what federated evaluation releases and costs (``evaluation.federated``)
    site_evaluation: str | None = None
    #: what the valuation releases and costs (``valuation.enabled``)
    valuation: str | None = None

    def headline(self) -> str:
        """One line: the clients' sizes and the noise the privacy plan needs."""
        sizes = self.client_sizes
        parts = [f"{len(sizes)} clients ({min(sizes)}..{max(sizes)} examples)"]
        sigmas = sorted(plan.noise_multiplier for _, plan in self.dp_plans)
        if sigmas:
            span = (
                f"{sigmas[0]:.4g}"
                if len(set(sigmas)) == 1
                else f"{sigmas[0]:.4g}..{sigmas[-1]:.4g}"
            )
            parts.append(f"DP-SGD sigma {span} ({self.relation})")
        if self.central_plan is not None:
            parts.append(f"central DP noise multiplier {self.central_plan.noise_multiplier:.4g}")
        return ", ".join(parts)

    def lines(self) -> list[str]:
        """Human-readable summary."""
        sizes = self.client_sizes
        out = [
            f"dataset {self.dataset}: input {self.input_shape}, "
            + (f"{self.num_classes} classes, " if self.task == "classification" else "regression, ")
            + f"train pool {self.train_pool}, server validation {self.val_size}, "
            f"test {self.test_size}",
            f"{len(sizes)} clients: {min(sizes)}..{max(sizes)} examples "
            f"(mean {sum(sizes) / len(sizes):.1f})",
            f"model: {self.num_parameters:,} trainable parameters",
        ]
        if self.site_names:
            out.insert(
                2,
                "clients are sites: "
                + ", ".join(
                    f"{i} = {name} ({n})"
                    for i, (name, n) in enumerate(zip(self.site_names, sizes, strict=True))
                ),
            )
        fm = self.functional_plan
        if fm is not None:
            out.append(
                f"functional mechanism: epsilon {fm.epsilon_per_epoch:.4g} per epoch, "
                f"sensitivity {fm.sensitivity:.4g}, Laplace scale {fm.noise_scale:.4g} on every "
                f"coefficient, {fm.epochs_per_round} epoch(s) per round ({self.relation})"
            )
        for n, plan in self.dp_plans:
            out.append(
                f"DP-SGD for a client with {n} examples: sigma {plan.noise_multiplier:.4g}, "
                f"sample rate {plan.sample_rate:.4g}, {plan.steps_per_round} steps per round "
                f"({self.relation})"
            )
        out += [t for t in (self.site_evaluation, self.valuation) if t is not None]
        if self.central_plan is not None:
            c = self.central_plan
            out.append(
                f"central DP: Poisson cohorts at rate {c.sample_rate:.4g}, updates clipped to "
                f"{c.clipping_norm:g}, noise multiplier {c.noise_multiplier:.4g} (std "
                f"{c.noise_std:.4g} on the sum, released over {c.denominator})"
            )
        return out


def check_data(configs: Iterable[Config]) -> None:
    """Load the dataset of every distinct ``data`` section among ``configs`` once.

    For a sweep: a missing or malformed dataset is reported once, before any point
    starts, rather than by every point that uses it.

    Raises
    ------
    ConfigError
        Listing each distinct data problem once.
    """
    problems: list[str] = []
    seen: set[DataConfig] = set()
    for cfg in configs:
        if cfg.data in seen:
            continue
        seen.add(cfg.data)
        try:
            dataset_for(cfg.data, cfg.seed)
        except FedsimError as exc:
            if str(exc) not in problems:
                problems.append(str(exc))
    if problems:
        raise ConfigError(problems)


def preflight(cfg: Config) -> PreflightReport:
    """Check ``cfg`` end to end without training.

    Raises
    ------
    ConfigError
        Listing every problem found.
    """
    problems: list[str] = []
    try:
        bundle = dataset_for(cfg.data, cfg.seed)
        parts = partitions_for(cfg.data, cfg.seed)
    except FedsimError as exc:
        raise ConfigError([str(exc)]) from None
    by_client = training_sizes(cfg)  # without held-out (once: O(N) per call)
    sizes = tuple(by_client[c] for c in range(len(parts)))
    empty = [i for i, n in enumerate(sizes) if n == 0]
    if empty:
        problems.append(
            f"data.num_clients: clients {empty[:10]} get no training data "
            f"(partition {cfg.data.partition!r}, pool {len(bundle.train)}); use fewer clients "
            "or another partition"
        )
    try:
        model = build_model(cfg.model.name, bundle.input_shape, bundle.num_classes, seed=0)
    except Exception as exc:  # a model that cannot be built for this data is a config problem
        raise ConfigError(
            [f"model.name {cfg.model.name!r} cannot be built for input {bundle.input_shape}: {exc}"]
        ) from None
    num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if cfg.strategy.calibrate == "threshold" and bundle.num_classes != 2:
        problems.append(
            "strategy.calibrate 'threshold' needs a binary task; dataset "
            f"{cfg.data.name!r} has {bundle.num_classes} classes"
        )
    plans: list[tuple[int, DpSgdPlan]] = []
    central: CentralDpPlan | None = None
    functional: FunctionalPlan | None = None
    if cfg.dp.enabled and cfg.dp.mode == "central":
        try:
            central = plan_central_dp(cfg)
        except ValueError as exc:
            problems.append(f"dp.epsilon {cfg.dp.epsilon} is not reachable: {exc}")
        if central is not None and cfg.dp.max_epsilon is not None:
            one_round = central_epsilon(central, 1, Accounting.of(cfg.dp))
            if one_round > cfg.dp.max_epsilon:
                problems.append(
                    f"dp.max_epsilon {cfg.dp.max_epsilon} is below the epsilon of a single "
                    f"central-DP round ({one_round:.4g}): no round could run"
                )
    elif cfg.functional_mechanism:
        functional = plan_functional(cfg, *functional_units(model), bundle.task)
        problems += _functional_problems(cfg, functional)
    elif cfg.dp.enabled:
        dp_errors = [] if shipped_with_fedsim(model) else is_dp_compatible(model)
        if dp_errors:
            problems.append(
                f"model.name {cfg.model.name!r} cannot be trained with Opacus: "
                + "; ".join(dp_errors[:3])
            )
        nonempty = sorted({n for n in sizes if n > 0})
        largest = nonempty[-1] if nonempty else 0
        steps = planned_dp_sgd_steps(cfg, largest) if largest else 0
        if steps > MAX_DP_SGD_STEPS:
            problems.append(
                f"rounds: the config is too large to account: rounds ({cfg.rounds}) x "
                f"client.local_epochs ({cfg.client.local_epochs}) x steps per epoch "
                f"(ceil(examples / client.batch_size), for the largest client's {largest} "
                f"examples) = {steps} DP-SGD steps; the accountant's limit is "
                f"{MAX_DP_SGD_STEPS} (use fewer rounds or local epochs, or a larger "
                "client.batch_size)"
            )
            nonempty = []
        for n in {nonempty[0], nonempty[-1]} if nonempty else set():
            try:
                plan = plan_dp_sgd(cfg, n)
            except ValueError as exc:
                problems.append(f"dp.epsilon {cfg.dp.epsilon} is not reachable: {exc}")
                continue
            plans.append((n, plan))
            if cfg.dp.max_epsilon is not None:
                one_round = epsilon_after_rounds(plan, 1, Accounting.of(cfg.dp))
                if one_round > cfg.dp.max_epsilon:
                    problems.append(
                        f"dp.max_epsilon {cfg.dp.max_epsilon} is below the epsilon of a single "
                        f"round ({one_round:.4g}) for a client with {n} examples: no client "
                        "could train"
                    )
    if cfg.tracking.mlflow and importlib.util.find_spec("mlflow") is None:
        problems.append(
            "tracking.mlflow is true but MLflow is not installed; pip install "
            "'fedsim[tracking]' (or set tracking.mlflow: false)"
        )
    if problems:
        raise ConfigError(problems)
    return PreflightReport(
        dataset=cfg.data.name,
        input_shape=bundle.input_shape,
        num_classes=bundle.num_classes,
        train_pool=len(bundle.train),
        val_size=len(bundle.val),
        test_size=len(bundle.test),
        client_sizes=sizes,
        num_parameters=num_params,
        dp_plans=tuple(sorted(plans)),
        central_plan=central,
        task=bundle.task,
        functional_plan=functional,
        relation=RELATION_TEXT[cfg.dp.neighbouring],
        site_names=bundle.site_names if cfg.data.partition == "natural" else (),
        site_evaluation=site_evaluation_text(cfg),
        valuation=valuation_text(cfg),
    )


def site_evaluation_text(cfg: Config) -> str | None:
    """What federated evaluation releases and what it costs each site, in one line
    (``None`` without it); it says when the releases can stop training early."""
    ev = cfg.evaluation
    if not ev.federated:
        return None
    releases = sum(1 for r in range(1, cfg.rounds + 1) if ev.due(r, cfg.rounds))
    head = (
        f"federated evaluation: {ev.fraction:.0%} of the sites after {releases} round(s), each "
        f"on its held-out {ev.holdout:g} of its data"
    )
    if ev.epsilon is None:
        return head + ", releasing exact confusion matrices (no DP)"
    relation = RELATION_TEXT[cfg.dp.neighbouring]
    scale = (2.0 if cfg.dp.neighbouring == "replace_one" else 1.0) / ev.epsilon
    text = (
        f"{head}, releasing its confusion matrix with Laplace noise of scale {scale:.4g} "
        f"(epsilon {ev.epsilon:g} per release, at most {releases * ev.epsilon:g} per site "
        f"by basic composition, {relation}; in the site's ledger)"
    )
    return text + _early_stop_note(
        cfg,
        releases * ev.epsilon,
        "a site",
        "lower evaluation.epsilon or evaluate less often (evaluation.every)",
    )


def valuation_text(cfg: Config) -> str | None:
    """What the valuation releases and what it costs each client, in one line (``None``
    without it); it says when the releases can stop training early."""
    val = cfg.valuation
    if not val.enabled:
        return None
    releases = sum(1 for r in range(1, cfg.rounds + 1) if is_release_round(r, val.release_rounds))
    per_round = val.epsilon * (1 + len(val.report_metrics))
    reported = f" and {len(val.report_metrics)} reported metric(s)" if val.report_metrics else ""
    text = (
        f"valuation: each training client releases its {val.metric} valuation{reported} with "
        f"Laplace noise, epsilon {val.epsilon:g} per release, in up to {releases} round(s): "
        f"at most {releases * per_round:g} per client by basic composition "
        f"({RELATION_TEXT[cfg.dp.neighbouring]}; in its ledger)"
    )
    return text + _early_stop_note(
        cfg,
        releases * per_round,
        "a client",
        "lower valuation.epsilon or release in fewer rounds (valuation.release_rounds)",
    )


def _early_stop_note(cfg: Config, releases_epsilon: float, who: str, remedy: str) -> str:
    """``"; ... may stop training ..."`` when DP-SGD's target plus ``releases_epsilon``
    (basic composition, an upper bound) passes ``dp.max_epsilon``, else ``""``."""
    cap, target = cfg.dp.max_epsilon, cfg.dp.epsilon
    if cap is None or target is None or target + releases_epsilon <= cap:
        return ""
    return (
        f"; with dp.epsilon {target:g} and dp.max_epsilon {cap:g} {who} may stop training "
        f"(budget exhausted) before the last round: raise dp.max_epsilon, or {remedy}"
    )


def _functional_problems(cfg: Config, plan: FunctionalPlan) -> list[str]:
    """A run cap that no functional-mechanism round fits under."""
    if cfg.dp.max_epsilon is None:
        return []
    one_round = Accounting.of(cfg.dp).epsilon([plan.round_event()])
    if one_round <= cfg.dp.max_epsilon:
        return []
    return [
        f"dp.max_epsilon {cfg.dp.max_epsilon} is below the epsilon of a single functional-"
        f"mechanism round ({one_round:.4g}): no client could train"
    ]
