"""The rules of a :class:`~fedsim.config.schema.Config` that involve more than one field.

Owns the cross-field validation. Types, single-field bounds and unknown keys are checked
while the tree is built (:mod:`fedsim.config.parse`); what is left is one function per
section — :func:`run_checks`, :func:`dp_checks`, :func:`data_checks`,
:func:`selection_checks`, :func:`valuation_checks`, :func:`audit_checks`,
:func:`evaluation_checks` — each a pure
function of the built config that returns its problems as messages naming the
parameter, the rule and the value received (empty when the section is consistent).
:func:`cross_checks` runs them all, in the order of :data:`SECTION_RULES`, so that the
messages always come in the same order.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from fedsim.config.schema import (
    MIN_RESOURCE_FRACTION,
    TRACKING_URI_SCHEMES,
    Config,
    DataConfig,
    DPConfig,
)
from fedsim.config.task_rules import functional_checks, regression_checks

#: Longest run name (the run directory ``runs/<name>-<n>`` must fit a file name).
MAX_NAME_CHARS = 200


def _name_problem(name: str) -> str | None:
    """Why ``name`` is not a plain file name, or ``None``."""
    if not name or name in (".", ".."):
        return "must not be empty, '.' or '..'"
    if any(c in name for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "must be a plain file name (no '/', '\\' or control characters)"
    if len(name) > MAX_NAME_CHARS:
        return f"must be at most {MAX_NAME_CHARS} characters"
    return None


def run_checks(cfg: Config) -> list[str]:
    """Rules of the top level and the simulation: a run name that stays inside ``runs/``,
    client resources Ray can schedule."""
    problems = []
    name_problem = _name_problem(cfg.name)
    if name_problem:
        shown = cfg.name if len(cfg.name) <= 80 else cfg.name[:80] + "..."
        problems.append(f"name {name_problem}; got {shown!r}")
    gpus = cfg.simulation.num_gpus_per_client
    if gpus is not None and 0 < gpus < MIN_RESOURCE_FRACTION:
        problems.append(
            f"simulation.num_gpus_per_client must be 0 or >= {MIN_RESOURCE_FRACTION}; got {gpus}"
        )
    sim = cfg.simulation
    if sim.backend == "process" and sim.ray_address:
        problems.append(
            "simulation.backend 'process' runs clients on this machine; with "
            f"simulation.ray_address use backend 'ray' or 'auto'; got {sim.ray_address!r}"
        )
    if sim.backend == "process" and gpus:
        problems.append(
            "simulation.backend 'process' has no GPU scheduling; with "
            f"simulation.num_gpus_per_client > 0 use backend 'ray' or 'auto'; got {gpus}"
        )
    return problems


def _dp_budget_checks(dp: DPConfig) -> list[str]:
    """How the privacy budget is given: exactly one of ε or σ, ε within the cap."""
    problems = []
    if dp.enabled:
        if (dp.epsilon is None) == (dp.noise_multiplier is None):
            problems.append(
                "dp: give exactly one of dp.epsilon or dp.noise_multiplier when dp.enabled; "
                f"got epsilon={dp.epsilon}, noise_multiplier={dp.noise_multiplier}"
            )
        if dp.epsilon is not None and dp.max_epsilon is not None and dp.epsilon > dp.max_epsilon:
            problems.append(
                f"dp.epsilon must be <= dp.max_epsilon ({dp.max_epsilon}); got {dp.epsilon}"
            )
    return problems


def _dp_mode_checks(cfg: Config) -> list[str]:
    """Rules of ``dp.mode``, ``dp.neighbouring``, ``dp.accountant`` and the clipping."""
    dp = cfg.dp
    problems = []
    if dp.grad_sample_mode in ("ghost", "bookkeeping") and dp.clipping != "flat":
        problems.append(
            f"dp.grad_sample_mode {dp.grad_sample_mode!r} needs dp.clipping 'flat' (ghost "
            f"clipping has no per-layer mode); got dp.clipping {dp.clipping!r}"
        )
    if dp.enabled and dp.neighbouring == "replace_one" and dp.accountant == "rdp":
        problems.append(
            "dp.accountant must be 'pld' when dp.neighbouring is 'replace_one' (dp-accounting's "
            "RDP accountant has no Poisson-subsampled Gaussian under replace-one); got 'rdp'"
        )
    hides_n = cfg.hides_client_size
    if hides_n and dp.size_bound is None:
        problems.append(
            "dp.size_bound is required when dp.neighbouring is 'add_remove' (add/remove is "
            "sound only if the sampling rate and the steps do not depend on a client's "
            "private size); got null"
        )
    if dp.size_bound is not None and not hides_n:
        problems.append(
            "dp.size_bound is used only with dp.neighbouring 'add_remove' and dp.mode "
            f"'sample'; got neighbouring {dp.neighbouring!r}, mode {dp.mode!r}"
        )
    if hides_n and cfg.valuation.prune.enabled:
        problems.append(
            "valuation.prune.enabled must be false when dp.neighbouring is 'add_remove' (the "
            "kept set after a quantile cut is not an add/remove neighbour of the data); got true"
        )
    if dp.enabled and dp.mode == "central" and dp.clipping != "flat":
        problems.append(
            "dp.clipping must be 'flat' when dp.mode is 'central' (the server clips each "
            f"client's whole update to dp.max_grad_norm); got {dp.clipping!r}"
        )
    return problems


def dp_checks(cfg: Config) -> list[str]:
    """Rules of the dp section: the budget, then the mode, relation and clipping."""
    return [*_dp_budget_checks(cfg.dp), *_dp_mode_checks(cfg)]


def data_checks(cfg: Config) -> list[str]:
    """Rules of the data section: the federation's size, the data's path, the val split."""
    problems = []
    data = cfg.data
    cpr = cfg.strategy.clients_per_round
    if cpr is not None and cpr > data.num_clients:
        problems.append(
            f"strategy.clients_per_round must be <= data.num_clients ({data.num_clients}); "
            f"got {cpr}"
        )
    if data.name in ("npz", "imagefolder") and not data.path:
        problems.append(f"data.path is required when data.name is {data.name!r}; got null")
    for name, size in (("val_size", data.val_size), ("test_size", data.test_size)):
        if size is not None and size >= 1 and size % 1:
            problems.append(
                f"data.{name} must be a fraction in (0, 1) or a whole number of samples; got {size}"
            )
    if data.partition == "natural" and data.name not in ("npz", "imagefolder"):
        problems.append(
            "data.partition 'natural' needs data labelled by site: data.name 'npz' (key "
            "'train_sites') or 'imagefolder' (a <site>/ folder level); got data.name "
            f"{data.name!r}"
        )
    return [*problems, *_image_checks(data)]


#: Largest side of a declared input image (``data.image_size``), in pixels.
MAX_IMAGE_SIDE = 4096


def _image_checks(data: DataConfig) -> list[str]:
    """Rules of the declared input shape: ``data.image_size`` and ``data.channels``."""
    problems = []
    size = data.image_size
    sides = (size,) if isinstance(size, int) else size or ()
    if isinstance(size, tuple) and len(size) != 2:
        problems.append(
            "data.image_size must be one number (a square) or [height, width]; got a list "
            f"of {len(size)}"
        )
    elif any(not 1 <= side <= MAX_IMAGE_SIDE for side in sides):
        problems.append(
            f"data.image_size must be between 1 and {MAX_IMAGE_SIDE} pixels per side; "
            f"got {list(sides) if isinstance(size, tuple) else size}"
        )
    if data.channels is not None and data.channels not in (1, 3):
        problems.append(f"data.channels must be 1 (grey) or 3 (RGB); got {data.channels}")
    return problems


def selection_checks(cfg: Config) -> list[str]:
    """Rules of the strategy section shared by every rule, and of the client roles.

    Rules of one strategy (Krum's and Bulyan's minimum cohorts, central DP's aggregation
    rule) are declared by that strategy's factory (``strategies.registry``) and checked by
    the assembly step (:func:`fedsim.run.check_config`).
    """
    problems = []
    st, m = cfg.strategy, cfg.clients_per_round
    if st.k is not None and st.k > m:
        problems.append(f"strategy.k must be <= strategy.clients_per_round ({m}); got {st.k}")
    roles = cfg.roles
    total = roles.unreliable.fraction + roles.malicious.fraction + roles.adversarial.fraction
    if total > 1:
        problems.append(
            "roles.unreliable.fraction + roles.malicious.fraction + roles.adversarial.fraction "
            f"must be <= 1; got {roles.unreliable.fraction} + {roles.malicious.fraction} + "
            f"{roles.adversarial.fraction}"
        )
    return problems


def _release_checks(cfg: Config) -> list[str]:
    """Rules of the DP releases: DP on, rounds in range, ground truth and bounds per entry."""
    problems = []
    val = cfg.valuation
    if val.enabled and not cfg.dp.enabled:
        problems.append(
            "valuation.enabled needs dp.enabled (releases are accounted in the DP ledger); "
            "got dp.enabled=false"
        )
    for r in val.release_rounds or ():
        if not 1 <= r <= cfg.rounds:
            problems.append(
                f"valuation.release_rounds must lie in [1, rounds={cfg.rounds}]; got {r}"
            )
    graded = val.graded_corruption
    if graded is not None:
        if len(graded) != cfg.data.num_clients:
            problems.append(
                "valuation.graded_corruption needs one fraction per client "
                f"(data.num_clients={cfg.data.num_clients}); got {len(graded)}"
            )
        bad = [f for f in graded if not 0.0 <= f <= 1.0]
        if bad:
            problems.append(
                f"valuation.graded_corruption fractions must lie in [0, 1]; got {bad[0]}"
            )
        if cfg.roles.unreliable.fraction > 0:
            problems.append(
                "valuation.graded_corruption and roles.unreliable both corrupt data: set "
                f"roles.unreliable.fraction to 0; got {cfg.roles.unreliable.fraction}"
            )
    if val.report_bounds is not None and len(val.report_bounds) != len(val.report_metrics):
        problems.append(
            "valuation.report_bounds needs one bound per valuation.report_metrics entry "
            f"({len(val.report_metrics)}); got {len(val.report_bounds)}"
        )
    if any(b <= 0 for b in val.report_bounds or ()):
        problems.append(f"valuation.report_bounds must be > 0; got {list(val.report_bounds or ())}")
    return problems


def _vog_checks(cfg: Config) -> list[str]:
    """Rules of VoG's checkpoints: enough epochs, or enough rounds before its first use."""
    val = cfg.valuation
    if not val.uses_vog:
        return []
    problems = []
    if val.vog_checkpoints == "epochs" and cfg.client.local_epochs < 2:
        problems.append(
            "client.local_epochs must be >= 2 for the vog metric with "
            "valuation.vog_checkpoints 'epochs' (its checkpoints are the ends of local "
            f"epochs; 'rounds' uses the ends of rounds); got {cfg.client.local_epochs}"
        )
    if val.vog_checkpoints == "rounds":
        first = []
        if val.enabled and "vog" in (val.metric, *val.report_metrics):
            first.append(min(val.release_rounds or (1,)))
        if val.prune.enabled and val.prune.metric == "vog":
            first.append(val.prune.warmup_rounds)
        if min(first) < 2:
            problems.append(
                "valuation.vog_checkpoints 'rounds' needs >= 2 rounds before VoG is first "
                "used (valuation.release_rounds / valuation.prune.warmup_rounds >= 2); "
                f"got round {min(first)}"
            )
    return problems


def _prune_checks(cfg: Config) -> list[str]:
    """Rules of pruning: a warm-up shorter than the run, PLIS only under DP."""
    problems = []
    prune = cfg.valuation.prune
    if prune.enabled and prune.warmup_rounds >= cfg.rounds:
        problems.append(
            f"valuation.prune.warmup_rounds must be < rounds ({cfg.rounds}); "
            f"got {prune.warmup_rounds}"
        )
    if prune.enabled and not cfg.dp.enabled and prune.metric == "plis":
        problems.append(
            "valuation.prune.metric 'plis' needs dp.enabled (PL divides by sigma^2); "
            "got dp.enabled=false"
        )
    return problems


def valuation_checks(cfg: Config) -> list[str]:
    """Rules of the valuation section: the releases, VoG's checkpoints, then pruning."""
    return [*_release_checks(cfg), *_vog_checks(cfg), *_prune_checks(cfg)]


def audit_checks(cfg: Config) -> list[str]:
    """Rules of the audit section: something to audit, a real client, canaries that fit."""
    audit, dp = cfg.audit, cfg.dp
    if not audit.enabled:
        return []
    problems = []
    if not dp.enabled:
        problems.append("audit.enabled needs dp.enabled (there is no ε to audit); got false")
    if dp.enabled and dp.mode == "sample":
        if audit.client >= cfg.data.num_clients:
            problems.append(
                f"audit.client must be < data.num_clients ({cfg.data.num_clients}); "
                f"got {audit.client}"
            )
        if dp.clipping != "flat":
            problems.append(
                "dp.clipping must be 'flat' for a DP-SGD audit (a canary's gradient is one "
                f"direction clipped to dp.max_grad_norm); got {dp.clipping!r}"
            )
        adversarial = cfg.robustness.adversarial_training.fraction > 0
        if adversarial or cfg.roles.adversarial.fraction > 0:
            problems.append(
                "audit.enabled with adversarial examples in training is not supported (they "
                "would transform the canary records); set robustness.adversarial_training."
                "fraction and roles.adversarial.fraction to 0"
            )
    return problems


def evaluation_checks(cfg: Config) -> list[str]:
    """Rules of the evaluation section: per-site evaluation of a classifier, a DP release
    whenever the run promises DP, no per-site release beside central DP's user-level ε."""
    ev = cfg.evaluation
    if not ev.federated:
        return []
    problems = []
    if cfg.task == "regression":
        problems.append(
            "evaluation.federated needs a classification dataset (a site releases its "
            f"confusion matrix); got data.name={cfg.data.name!r}"
        )
    if cfg.dp.enabled and ev.epsilon is None:
        problems.append(
            "evaluation.epsilon must be > 0 when dp.enabled (a site's evaluation is a DP "
            "release charged to its ledger); got null"
        )
    if cfg.dp.enabled and cfg.dp.mode == "central":
        problems.append(
            "evaluation.federated is not supported with dp.mode 'central' (its user-level "
            "epsilon covers only the noised aggregate); got dp.mode='central'"
        )
    return problems


#: Longest ``tracking.tracking_uri`` / ``tracking.experiment``.
MAX_TRACKING_CHARS = 500
_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def tracking_checks(cfg: Config) -> list[str]:
    """Rules of the tracking section: a URI MLflow can use, settings only with a tracker.

    The URI itself is not shown in messages (it may carry credentials), only its scheme.
    """
    tracking = cfg.tracking
    problems = []
    uri = tracking.tracking_uri
    if uri:
        match = _URI_SCHEME.match(uri)
        scheme = match.group(1).split("+")[0].lower() if match else None
        if len(uri) > MAX_TRACKING_CHARS or any(ord(c) < 33 or ord(c) == 127 for c in uri):
            problems.append(  # the URI is not shown: it may carry credentials
                f"tracking.tracking_uri must be one URI of at most {MAX_TRACKING_CHARS} "
                "characters without spaces or control characters; got one of "
                f"{len(uri)} characters that is not"
            )
        elif scheme not in TRACKING_URI_SCHEMES:
            problems.append(
                "tracking.tracking_uri must start with one of "
                f"{', '.join(s + ':' for s in TRACKING_URI_SCHEMES)} (or be empty: a local "
                f"store next to the run directory); got scheme {scheme!r}"
            )
    experiment = tracking.experiment
    if experiment and (
        experiment != experiment.strip()
        or len(experiment) > MAX_TRACKING_CHARS
        or any(ord(c) < 32 or ord(c) == 127 for c in experiment)
    ):
        shown = experiment if len(experiment) <= 80 else experiment[:80] + "..."
        problems.append(
            f"tracking.experiment must be a name of at most {MAX_TRACKING_CHARS} characters "
            f"without control characters or surrounding spaces; got {shown!r}"
        )
    if not tracking.mlflow and (uri or experiment):
        problems.append(
            "tracking.tracking_uri and tracking.experiment need tracking.mlflow: true (nothing "
            "else would use them); got mlflow false"
        )
    return problems


#: Every section's rules, in the order their messages are reported.
SECTION_RULES: tuple[Callable[[Config], list[str]], ...] = (
    run_checks,
    dp_checks,
    data_checks,
    selection_checks,
    valuation_checks,
    audit_checks,
    evaluation_checks,
    regression_checks,
    functional_checks,
    tracking_checks,
)


def cross_checks(cfg: Config) -> list[str]:
    """Every cross-field problem of ``cfg`` (empty when it is consistent).

    The sections' rules (:data:`SECTION_RULES`) run in a fixed order, so the messages of
    one config always come in the same order.
    """
    return [problem for rule in SECTION_RULES for problem in rule(cfg)]
