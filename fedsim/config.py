"""The typed, frozen experiment configuration.

A YAML file (plus ``-o key=value`` overrides) becomes one :class:`Config`. Unknown keys,
wrong types and out-of-range values are all collected and reported together, each with
its dotted path, the rule and the value received (:class:`~fedsim.errors.ConfigError`).

Numeric bounds live in field metadata (``ge``, ``gt``, ``le``, ``lt``); cross-field rules
live in :func:`_cross_checks`. Nothing else in fedsim reads raw config dicts: the Flower
apps turn their flat ``run_config`` into a :class:`Config` with :func:`from_run_config`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from fedsim.errors import ConfigError

DatasetName = Literal[
    "pneumoniamnist", "fashion-mnist", "mnist", "cifar10", "svhn", "npz", "imagefolder"
]
PartitionName = Literal["iid", "dirichlet", "shards"]
ModelName = Literal["cnn", "resnet9", "resnet18", "mlp"]
StrategyName = Literal[
    "fedavg", "secprobe", "random_k", "krum", "multikrum", "median", "trimmed_mean", "bulyan"
]
SensitivityName = Literal["paper", "tight"]
UnreliableKind = Literal["noise", "label_flip"]
MaliciousKind = Literal["random", "sign_flip", "scale", "nan"]
AccountantName = Literal["rdp", "pld"]
#: The neighbouring relation every ε is stated under (see fedsim.privacy.accounting).
Relation = Literal["replace_one", "add_remove"]
#: How each relation is printed next to an ε.
RELATION_TEXT: dict[str, str] = {"replace_one": "replace-one", "add_remove": "add/remove-one"}
ClippingName = Literal["flat", "per_layer_uniform", "per_layer_adaptive"]
DPMode = Literal["sample", "central"]
GradSampleMode = Literal["auto", "hooks", "ghost"]
ScoreMetric = Literal["vog", "plis", "loss", "grad_norm"]
VogCheckpoints = Literal["epochs", "rounds"]
QualityMeasure = Literal["accuracy", "auc", "improvement"]
CombineRule = Literal["product", "threshold"]
RewardPart = Literal["combined", "quality", "informativeness"]
PruneSide = Literal["highest", "lowest"]
AttackName = Literal["fgsm", "pgd", "pgd_l2", "fab"]

_T = TypeVar("_T")


def _bounds(**kw: float) -> dict[str, float]:
    """Field metadata with numeric bounds (``ge``, ``gt``, ``le``, ``lt``)."""
    return kw


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how it is split across clients."""

    name: DatasetName = "pneumoniamnist"
    path: str | None = None
    root: str | None = None
    download: bool = True
    num_clients: int = field(default=5, metadata=_bounds(ge=1))
    partition: PartitionName = "iid"
    alpha: float = field(default=1.0, metadata=_bounds(gt=0))
    shards_per_client: int = field(default=2, metadata=_bounds(ge=1))
    min_partition_size: int = field(default=1, metadata=_bounds(ge=1))
    val_size: float | None = field(default=None, metadata=_bounds(gt=0))
    #: Keep a stratified, seeded subset of this many training-pool samples (None = all);
    #: for experiments sized to small machines.
    train_samples: int | None = field(default=None, metadata=_bounds(ge=1))
    #: Evaluate on a stratified, seeded subset of this many test samples (None = all).
    test_samples: int | None = field(default=None, metadata=_bounds(ge=1))


@dataclass(frozen=True)
class ModelConfig:
    """Which network to train."""

    name: ModelName = "cnn"


@dataclass(frozen=True)
class ClientConfig:
    """Local training on each client."""

    local_epochs: int = field(default=1, metadata=_bounds(ge=1))
    batch_size: int = field(default=64, metadata=_bounds(ge=1))
    lr: float = field(default=0.1, metadata=_bounds(gt=0))
    momentum: float = field(default=0.0, metadata=_bounds(ge=0, lt=1))


@dataclass(frozen=True)
class DPConfig:
    """Sample-level DP-SGD on every client (Opacus).

    Give either ``epsilon`` (σ is calibrated once per client over all planned rounds) or
    ``noise_multiplier`` (σ fixed; ε is whatever the accountant says).
    """

    enabled: bool = True
    epsilon: float | None = field(default=None, metadata=_bounds(gt=0))
    delta: float = field(default=1e-5, metadata=_bounds(gt=0, lt=1))
    noise_multiplier: float | None = field(default=None, metadata=_bounds(gt=0))
    max_grad_norm: float = field(default=1.0, metadata=_bounds(gt=0))
    max_epsilon: float | None = field(default=None, metadata=_bounds(gt=0))
    #: ``pld`` (dp-accounting's privacy loss distributions, tight) or ``rdp`` (Rényi DP;
    #: only with ``neighbouring: add_remove``).
    accountant: AccountantName = "pld"
    #: The neighbouring relation of every ε: ``replace_one`` (default; the protocol reveals
    #: each client's number of examples) or ``add_remove`` (only where nothing a client
    #: sends depends on it: q and the steps come from the public ``size_bound``, FedAvg
    #: weighs uniformly, replies carry no example count).
    neighbouring: Relation = "replace_one"
    #: Public number of examples a client is planned for under ``neighbouring:
    #: add_remove`` (sample mode): sampling rate ``batch_size / size_bound``, an epoch of
    #: ``ceil(size_bound / batch_size)`` steps, whatever the client really holds.
    size_bound: int | None = field(default=None, metadata=_bounds(ge=1))
    #: Draw DP-SGD noise and Poisson batches from the OS's cryptographically secure
    #: generator (with Opacus' floating-point-attack mitigation); not reproducible.
    secure_rng: bool = False
    #: How the per-sample gradient is bounded (overall bound ``max_grad_norm`` in all
    #: three; same noise, same ε): see :mod:`fedsim.clipping`.
    clipping: ClippingName = "flat"
    #: Server validation samples used to set the per_layer_adaptive thresholds each round.
    adaptive_samples: int = field(default=256, metadata=_bounds(ge=1))
    #: ``sample``: sample-level DP-SGD on every client (Opacus). ``central``: user-level DP
    #: at the server (Flower's DP wrapper clips each client's update to ``max_grad_norm``
    #: and adds Gaussian noise to the mean); clients then train without Opacus.
    mode: DPMode = "sample"
    #: How Opacus bounds per-sample gradients (``sample`` mode): ``hooks`` materialises
    #: them; ``ghost`` clips without materialising them (flat clipping only); ``auto`` is
    #: ghost for flat clipping when the model supports it, hooks otherwise.
    grad_sample_mode: GradSampleMode = "auto"


@dataclass(frozen=True)
class StrategyConfig:
    """Server-side aggregation and client selection."""

    name: StrategyName = "fedavg"
    clients_per_round: int | None = field(default=None, metadata=_bounds(ge=1))
    round_timeout: float = field(default=3600.0, metadata=_bounds(gt=0))
    # SecProbe / random_k: keep k of the M = clients_per_round updates (None = all M)
    k: int | None = field(default=None, metadata=_bounds(ge=1))
    selection_epsilon: float = field(default=1.0, metadata=_bounds(gt=0))
    sensitivity: SensitivityName = "paper"
    # Krum, MultiKrum, Bulyan: assumed number f of malicious updates per round
    num_malicious: int = field(default=0, metadata=_bounds(ge=0))
    # FedTrimmedAvg: fraction cut at each end per coordinate
    trim_beta: float = field(default=0.2, metadata=_bounds(ge=0, lt=0.5))


@dataclass(frozen=True)
class UnreliableConfig:
    """Clients whose data is partly garbage (SecProbe's unreliable participants)."""

    fraction: float = field(default=0.0, metadata=_bounds(ge=0, le=1))
    noise_fraction: float = field(default=0.5, metadata=_bounds(ge=0, le=1))
    kind: UnreliableKind = "noise"


@dataclass(frozen=True)
class MaliciousConfig:
    """Clients that upload hostile parameters instead of their trained model."""

    fraction: float = field(default=0.0, metadata=_bounds(ge=0, le=1))
    kind: MaliciousKind = "random"
    scale: float = field(default=10.0, metadata=_bounds(gt=0))


@dataclass(frozen=True)
class AttackConfig:
    """One evasion attack and its budget (:mod:`fedsim.robustness`); L∞ units for all but
    ``pgd_l2``, whose ``epsilon``/``step_size`` are L2 radii."""

    name: AttackName = "pgd"
    epsilon: float = field(default=8 / 255, metadata=_bounds(gt=0))
    step_size: float = field(default=2 / 255, metadata=_bounds(gt=0))
    steps: int = field(default=10, metadata=_bounds(ge=1))


@dataclass(frozen=True)
class AdversarialRoleConfig:
    """Train-time attackers (PSREval): a fraction ``data_fraction`` of each of their batches
    is replaced by adversarial examples labelled with the model's own predictions."""

    fraction: float = field(default=0.0, metadata=_bounds(ge=0, le=1))
    data_fraction: float = field(default=0.2, metadata=_bounds(ge=0, le=1))
    attack: AttackConfig = field(default_factory=AttackConfig)


@dataclass(frozen=True)
class RolesConfig:
    """Which clients are unreliable, malicious or adversarial (assigned from the seed)."""

    unreliable: UnreliableConfig = field(default_factory=UnreliableConfig)
    malicious: MaliciousConfig = field(default_factory=MaliciousConfig)
    adversarial: AdversarialRoleConfig = field(default_factory=AdversarialRoleConfig)


@dataclass(frozen=True)
class SimulationConfig:
    """How the simulation engine runs clients.

    ``num_gpus_per_client`` of ``None`` means: 0 without a visible GPU, otherwise 0.5
    (two clients share one GPU). ``ray_address`` attaches to an existing Ray cluster.
    """

    num_cpus_per_client: float = field(default=1.0, metadata=_bounds(gt=0))
    num_gpus_per_client: float | None = field(default=None, metadata=_bounds(ge=0))
    ray_address: str | None = None


@dataclass(frozen=True)
class QualityGateConfig:
    """Server-side quality of each update, measured on the public validation split.

    ``accuracy``: the update's validation accuracy (SecProbe's utility); ``auc``: its
    validation ROC AUC (binary tasks, accuracy otherwise — more informative than accuracy
    on imbalanced data such as PneumoniaMNIST); ``improvement``: the accuracy minus the
    current global model's, floored at 0.
    ``combine`` joins it with the DP-released informativeness: ``product`` pays
    quality × informativeness, ``threshold`` pays informativeness only to updates whose
    quality is at least ``threshold``.
    """

    measure: QualityMeasure = "accuracy"
    combine: CombineRule = "product"
    threshold: float = field(default=0.5, metadata=_bounds(ge=0, le=1))


@dataclass(frozen=True)
class PruneConfig:
    """Drop a fraction of each client's samples ranked by a metric, after a warm-up.

    At the end of the first round ``>= warmup_rounds`` in which a client trains, it ranks
    its samples by ``metric`` (local, with its trained model) and drops ``fraction`` of
    them (the ``highest`` or ``lowest`` scores); later rounds train on the rest.
    """

    enabled: bool = False
    warmup_rounds: int = field(default=1, metadata=_bounds(ge=1))
    fraction: float = field(default=0.25, metadata=_bounds(ge=0, lt=1))
    metric: ScoreMetric = "loss"
    side: PruneSide = "highest"


@dataclass(frozen=True)
class ValuationConfig:
    """Per-sample scores, their DP release by each client, rewards and pruning.

    Each participating client releases the mean (and, for ``vog``, the variance) of its
    per-sample ``metric`` scores clipped to ``[0, bound]`` with the Laplace mechanism at
    ``epsilon`` per release (:mod:`fedsim.valuation.release`), in ``release_rounds``
    (``None``: every round it trains). The server splits ``reward_budget`` per round among
    the participants (:mod:`strategies.rewards`).
    """

    enabled: bool = False
    metric: ScoreMetric = "loss"
    epsilon: float = field(default=1.0, metadata=_bounds(gt=0))
    bound: float = field(default=1.0, metadata=_bounds(gt=0))
    release_rounds: tuple[int, ...] | None = None
    #: Also release these metrics (each at ``epsilon``, accounted) and report how rewards
    #: by them would rank the clients; only ``metric`` is paid.
    report_metrics: tuple[ScoreMetric, ...] = ()
    #: Clipping bound of each ``report_metrics`` entry (``None``: ``bound`` for all).
    report_bounds: tuple[float, ...] | None = None
    #: VoG's checkpoints: the ends of the local epochs of the round (needs
    #: ``client.local_epochs >= 2``), or the ends of every round the client trained so far
    #: (its trained local model; the running statistics stay on the client between rounds).
    vog_checkpoints: VogCheckpoints = "epochs"
    #: Share of ``epsilon`` spent on the variance (``vog`` only); the rest on the mean.
    variance_share: float = field(default=0.3, metadata=_bounds(gt=0, lt=1))
    reward_budget: float = field(default=100.0, metadata=_bounds(gt=0))
    #: Which reward is paid (all three are computed and logged).
    pay: RewardPart = "combined"
    quality: QualityGateConfig = field(default_factory=QualityGateConfig)
    #: Ground truth for simulations: fraction of each client's samples corrupted, by id.
    graded_corruption: tuple[float, ...] | None = None
    corruption_kind: UnreliableKind = "noise"
    prune: PruneConfig = field(default_factory=PruneConfig)

    @property
    def uses_vog(self) -> bool:
        """Whether VoG is released, reported or prunes in this run."""
        released = self.enabled and "vog" in (self.metric, *self.report_metrics)
        return released or (self.prune.enabled and self.prune.metric == "vog")


@dataclass(frozen=True)
class AdversarialTrainingConfig:
    """Adversarial training: a fraction ``fraction`` of every local batch (PSREval: 0.1–0.4;
    0 = off) is replaced by adversarial examples of those samples, with their true labels."""

    fraction: float = field(default=0.0, metadata=_bounds(ge=0, le=1))
    attack: AttackConfig = field(default_factory=AttackConfig)


@dataclass(frozen=True)
class RobustnessEvaluationConfig:
    """Robustness evaluation of the final model (also ``fedsim evaluate RUN_DIR``)."""

    enabled: bool = False
    attacks: tuple[AttackName, ...] = ("fgsm", "pgd", "pgd_l2", "fab")
    seeds: tuple[int, ...] = (0, 1, 2)
    epsilon: float = field(default=8 / 255, metadata=_bounds(gt=0))
    step_size: float = field(default=2 / 255, metadata=_bounds(gt=0))
    steps: int = field(default=10, metadata=_bounds(ge=1))
    #: L2 radius and step of ``pgd_l2`` (the L∞ numbers above are far too small in L2).
    l2_epsilon: float = field(default=0.5, metadata=_bounds(gt=0))
    l2_step_size: float = field(default=0.125, metadata=_bounds(gt=0))
    #: Also evaluate a post-training static int8 copy (calibrated on the server val split).
    quantize: bool = True
    calibration_samples: int = field(default=256, metadata=_bounds(ge=1))
    #: Another run directory (same model/data) whose final model generates transfer attacks.
    transfer_from: str | None = None
    batch_size: int = field(default=256, metadata=_bounds(ge=1))


@dataclass(frozen=True)
class RobustnessConfig:
    """PSREval in a federation: adversarial training and the end-of-run evaluation."""

    adversarial_training: AdversarialTrainingConfig = field(
        default_factory=AdversarialTrainingConfig
    )
    evaluate: RobustnessEvaluationConfig = field(default_factory=RobustnessEvaluationConfig)


@dataclass(frozen=True)
class AuditConfig:
    """An empirical privacy audit inside the run (``fedsim audit``; :mod:`fedsim.audit`).

    ``canaries`` canaries are drawn, each inserted independently with probability ½: under
    ``dp.mode: central`` canary *clients* (extra federation members whose update is a fixed
    random direction), under DP-SGD canary *records* in the data of client ``client``
    (each contributes a fixed random gradient direction when Poisson-sampled). The auditor
    sees only what the run releases — the global models (central) or the client's round
    updates as the server receives them (DP-SGD) — and turns the canaries' scores into an
    ε estimate and a lower bound at ``confidence``, compared with the claimed ε.
    """

    enabled: bool = False
    canaries: int = field(default=500, metadata=_bounds(ge=10))
    client: int = field(default=0, metadata=_bounds(ge=0))
    confidence: float = field(default=0.95, metadata=_bounds(gt=0, lt=1))
    #: The canary's raw norm as a multiple of the clipping bound (> 1: it is clipped to it).
    scale: float = field(default=10.0, metadata=_bounds(gt=1))


@dataclass(frozen=True)
class Config:
    """One experiment. See ``experiments/quickstart.yaml`` for an annotated example."""

    name: str = "run"
    seed: int = field(default=0, metadata=_bounds(ge=0))
    rounds: int = field(default=3, metadata=_bounds(ge=1))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    dp: DPConfig = field(default_factory=DPConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    roles: RolesConfig = field(default_factory=RolesConfig)
    #: Save the global model after every round to ``checkpoints/round_NNNN.pt`` in the run
    #: directory (plain state_dicts); ``fedsim analyze`` computes VoG from them.
    save_checkpoints: bool = False
    valuation: ValuationConfig = field(default_factory=ValuationConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    @property
    def clients_per_round(self) -> int:
        """Clients sampled each round (all of them when not set)."""
        return self.strategy.clients_per_round or self.data.num_clients

    @property
    def hides_client_size(self) -> bool:
        """Whether nothing a client sends may depend on its size (DP-SGD, add/remove)."""
        dp = self.dp
        return dp.enabled and dp.mode == "sample" and dp.neighbouring == "add_remove"

    @property
    def uniform_weights(self) -> bool:
        """Whether the server averages updates with weight 1 each (central DP, or a hidden
        client size), instead of by their example counts."""
        return self.hides_client_size or (self.dp.enabled and self.dp.mode == "central")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-serialisable)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- parsing


def _describe(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


class _InvalidError(Exception):
    """Internal: a value failed to convert; carries a message without the path."""


def _convert(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    """Convert ``value`` to type ``tp``, appending problems; returns the value or a sentinel."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, problems)  # type: ignore[arg-type]
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise _InvalidError(f"must be {_type_name(tp)}; got {_describe(value)}")
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _InvalidError(f"must be {_type_name(tp)}; got null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path, problems)
            except _InvalidError as exc:
                errors.append(str(exc))
        raise _InvalidError(f"must be {_type_name(tp)}; got {_describe(value)}")
    if origin in (tuple, list):
        (item_tp, *_rest) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise _InvalidError(f"must be a list; got {_describe(value)}")
        out = []
        for i, item in enumerate(value):
            try:
                out.append(_convert(item_tp, item, f"{path}[{i}]", problems))
            except _InvalidError as exc:
                problems.append(f"{path}[{i}] {exc}")
        return tuple(out)
    if tp is bool:
        if not isinstance(value, bool):
            raise _InvalidError(f"must be true or false; got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _InvalidError(f"must be an integer; got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _InvalidError(f"must be a number; got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _InvalidError(f"must be a string; got {_describe(value)}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # programming error


def _check_bounds(meta: Mapping[str, Any], value: Any) -> str | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    rules = (
        ("ge", ">=", value >= meta.get("ge", value)),
        ("gt", ">", "gt" not in meta or value > meta["gt"]),
        ("le", "<=", value <= meta.get("le", value)),
        ("lt", "<", "lt" not in meta or value < meta["lt"]),
    )
    for key, sym, ok in rules:
        if key in meta and not ok:
            return f"must be {sym} {meta[key]}; got {_describe(value)}"
    return None


def _build(cls: type, raw: Any, path: str, problems: list[str]) -> Any:
    """Build dataclass ``cls`` from mapping ``raw``; problems are appended, never raised."""
    prefix = f"{path}." if path else ""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        problems.append(f"{path or 'config'} must be a mapping; got {_describe(raw)}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            valid = ", ".join(sorted(fields))
            problems.append(f"{prefix}{key} is not a known key (valid: {valid})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        fpath = f"{prefix}{name}"
        if name not in raw:
            if dataclasses.is_dataclass(hints[name]):
                kwargs[name] = _build(hints[name], {}, fpath, problems)
            continue
        try:
            value = _convert(hints[name], raw[name], fpath, problems)
        except _InvalidError as exc:
            problems.append(f"{fpath} {exc}")
            continue
        bound_problem = _check_bounds(f.metadata, value)
        if bound_problem:
            problems.append(f"{fpath} {bound_problem}")
            continue
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError:  # a nested section failed; problems already recorded
        return None


def _cross_checks(cfg: Config) -> list[str]:
    """Rules that involve more than one field."""
    problems = []
    if cfg.dp.enabled:
        if (cfg.dp.epsilon is None) == (cfg.dp.noise_multiplier is None):
            problems.append(
                "dp: give exactly one of dp.epsilon or dp.noise_multiplier when dp.enabled; "
                f"got epsilon={cfg.dp.epsilon}, noise_multiplier={cfg.dp.noise_multiplier}"
            )
        if (
            cfg.dp.epsilon is not None
            and cfg.dp.max_epsilon is not None
            and cfg.dp.epsilon > cfg.dp.max_epsilon
        ):
            problems.append(
                f"dp.epsilon must be <= dp.max_epsilon ({cfg.dp.max_epsilon}); got {cfg.dp.epsilon}"
            )
    problems.extend(_dp_mode_checks(cfg))
    cpr = cfg.strategy.clients_per_round
    if cpr is not None and cpr > cfg.data.num_clients:
        problems.append(
            f"strategy.clients_per_round must be <= data.num_clients ({cfg.data.num_clients}); "
            f"got {cpr}"
        )
    if cfg.data.name in ("npz", "imagefolder") and not cfg.data.path:
        problems.append(f"data.path is required when data.name is {cfg.data.name!r}; got null")
    if cfg.data.val_size is not None and cfg.data.val_size >= 1 and cfg.data.val_size % 1:
        problems.append(
            "data.val_size must be a fraction in (0, 1) or a whole number of samples; "
            f"got {cfg.data.val_size}"
        )
    problems.extend(_selection_checks(cfg))
    problems.extend(_valuation_checks(cfg))
    problems.extend(_audit_checks(cfg))
    return problems


def _audit_checks(cfg: Config) -> list[str]:
    """Rules of the audit section."""
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


def _valuation_checks(cfg: Config) -> list[str]:
    """Rules of the valuation section."""
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
    vog_due = val.uses_vog
    if vog_due and val.vog_checkpoints == "epochs" and cfg.client.local_epochs < 2:
        problems.append(
            "client.local_epochs must be >= 2 for the vog metric with "
            "valuation.vog_checkpoints 'epochs' (its checkpoints are the ends of local "
            f"epochs; 'rounds' uses the ends of rounds); got {cfg.client.local_epochs}"
        )
    if vog_due and val.vog_checkpoints == "rounds":
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
    prune = val.prune
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


def _dp_mode_checks(cfg: Config) -> list[str]:
    """Rules of ``dp.mode`` and ``dp.grad_sample_mode``."""
    dp = cfg.dp
    problems = []
    if dp.grad_sample_mode == "ghost" and dp.clipping != "flat":
        problems.append(
            "dp.grad_sample_mode 'ghost' needs dp.clipping 'flat' (Opacus' ghost clipping has "
            f"no per-layer mode); got dp.clipping {dp.clipping!r}"
        )
    if dp.enabled and dp.neighbouring == "replace_one" and dp.accountant == "rdp":
        problems.append(
            "dp.accountant must be 'pld' when dp.neighbouring is 'replace_one' (dp-accounting's "
            "RDP accountant has no Poisson-subsampled Gaussian under replace-one); got 'rdp'"
        )
    hides_n = dp.enabled and dp.mode == "sample" and dp.neighbouring == "add_remove"
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
    if dp.enabled and dp.mode == "central":
        if dp.clipping != "flat":
            problems.append(
                "dp.clipping must be 'flat' when dp.mode is 'central' (the server clips each "
                f"client's whole update to dp.max_grad_norm); got {dp.clipping!r}"
            )
        if cfg.strategy.name != "fedavg":
            problems.append(
                "strategy.name must be 'fedavg' when dp.mode is 'central' (the noise is "
                "calibrated to a uniform mean of the clipped updates); "
                f"got {cfg.strategy.name!r}"
            )
    return problems


def _selection_checks(cfg: Config) -> list[str]:
    """Rules of the selecting/robust strategies and of the client roles."""
    problems = []
    st, m = cfg.strategy, cfg.clients_per_round
    if st.k is not None and st.k > m:
        problems.append(f"strategy.k must be <= strategy.clients_per_round ({m}); got {st.k}")
    f = st.num_malicious
    if st.name in ("krum", "multikrum") and m < 2 * f + 3:
        problems.append(
            f"strategy.clients_per_round must be >= 2 * strategy.num_malicious + 3 "
            f"({2 * f + 3}) for {st.name}; got {m}"
        )
    if st.name == "bulyan" and m < 4 * f + 3:
        problems.append(
            f"strategy.clients_per_round must be >= 4 * strategy.num_malicious + 3 "
            f"({4 * f + 3}) for bulyan; got {m}"
        )
    roles = cfg.roles
    total = roles.unreliable.fraction + roles.malicious.fraction + roles.adversarial.fraction
    if total > 1:
        problems.append(
            "roles.unreliable.fraction + roles.malicious.fraction + roles.adversarial.fraction "
            f"must be <= 1; got {roles.unreliable.fraction} + {roles.malicious.fraction} + "
            f"{roles.adversarial.fraction}"
        )
    return problems


def build_dataclass(cls: type[_T], raw: Any, what: str = "configuration") -> _T:
    """Build the (frozen) dataclass ``cls`` from a nested mapping, by the config's rules.

    Field types (``bool``, ``int``, ``float``, ``str``, ``Literal``, ``X | None``,
    ``tuple[X, ...]``, nested dataclasses) and numeric bounds in field metadata (``ge``,
    ``gt``, ``le``, ``lt``) are checked; unknown keys are rejected. Cross-field rules are
    the caller's.

    Raises
    ------
    ConfigError
        With every problem found, each naming its dotted path; ``what`` heads the message.
    """
    problems: list[str] = []
    built = _build(cls, raw, "", problems)
    if problems or built is None:
        raise ConfigError(problems or [f"{what} could not be built"], what)
    return typing.cast(_T, built)


def from_dict(raw: Any) -> Config:
    """Build and validate a :class:`Config` from a nested mapping.

    Raises
    ------
    ConfigError
        With every problem found, each naming its dotted path.
    """
    cfg = build_dataclass(Config, raw)
    problems = _cross_checks(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


class _Loader(yaml.SafeLoader):
    """YAML 1.1 loader that also reads ``1e-5`` (no dot) as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"dp.epsilon=2"`` into ``("dp.epsilon", 2.0)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError([f"override must look like key=value; got {text!r}"])
    key, _, value = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError([f"override must look like key=value; got {text!r}"])
    try:
        parsed = _yaml_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted ``key=value`` overrides applied."""
    out: dict[str, Any] = _deepcopy(raw)
    problems = []
    for text in overrides:
        key, value = parse_override(text)
        node: Any = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(
                    f"override {key}: {'.'.join(parts[: i + 1])} is not a section; "
                    f"got {_describe(child)}"
                )
                break
            node = child
        else:
            node[parts[-1]] = value
    if problems:
        raise ConfigError(problems)
    return out


def _deepcopy(raw: Any) -> Any:
    if isinstance(raw, Mapping):
        return {k: _deepcopy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deepcopy(v) for v in raw]
    return raw


def read_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Read a YAML mapping, turning I/O and syntax errors into :class:`ConfigError`.

    ``what`` names the file in messages (``"config file"``, ``"site policy file"``).
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError([f"{what} {str(p)!r} cannot be read: {exc.strerror}"]) from None
    try:
        raw = _yaml_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{what} {str(p)!r} is not valid YAML: {exc}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{what} {str(p)!r} must hold a mapping; got {_describe(raw)}"])
    return raw


def load(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config, apply overrides and validate."""
    return from_dict(apply_overrides(read_yaml(path), overrides))


def to_yaml(cfg: Config, extra: Mapping[str, Any] | None = None) -> str:
    """Serialise the resolved config (plus ``extra`` keys such as the package version)."""
    doc: dict[str, Any] = cfg.to_dict()
    if extra:
        doc = {**doc, **extra}
    return yaml.safe_dump(doc, sort_keys=False)


#: Run-config entries that are not config fields: ``out-dir`` tells the ServerApp where
#: to write the run directory.
RUN_CONFIG_EXTRA_KEYS: frozenset[str] = frozenset({"out-dir"})


def from_run_config(run_config: Mapping[str, Any], base_dir: str | Path | None = None) -> Config:
    """Turn Flower's flat ``run_config`` into a :class:`Config`.

    Two forms are understood: ``config-path`` (a YAML file) plus ``overrides``
    (space-separated ``key=value``), and flat dotted keys (``"dp.epsilon": 2.0``), which
    are applied as overrides on top. A relative ``config-path`` is read from ``base_dir``
    (the app's directory: the repository, or the installed FAB under ``flwr run``) when
    given, else from the working directory. Entries in :data:`RUN_CONFIG_EXTRA_KEYS` are
    skipped.
    """
    base: dict[str, Any] = {}
    overrides: list[str] = []
    for key, value in run_config.items():
        if key in RUN_CONFIG_EXTRA_KEYS:
            continue
        if key == "config-path":
            if value:
                path = Path(str(value)).expanduser()
                if not path.is_absolute() and base_dir is not None:
                    path = Path(base_dir) / path
                base = read_yaml(str(path))
        elif key == "overrides":
            overrides.extend(str(value).split())
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            overrides.append(f"{key}={text}")
    return from_dict(apply_overrides(base, overrides))
