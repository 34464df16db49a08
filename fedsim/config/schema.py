"""The typed, frozen schema of one experiment.

Owns every section of the configuration as a frozen dataclass (:class:`Config` at the
root), the ``Literal`` types that name the modes (datasets, strategies, attacks, ...),
the defaults, the numeric bounds of each field (field metadata ``ge``, ``gt``, ``le``,
``lt``, checked by :func:`fedsim.config.parse.build_dataclass`) and the properties
derived from more than one field (:attr:`Config.clients_per_round`, ...). Nothing here
reads YAML or validates: see :mod:`fedsim.config.parse` and :mod:`fedsim.config.rules`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

DatasetName = Literal[
    "pneumoniamnist",
    "fashion-mnist",
    "mnist",
    "cifar10",
    "svhn",
    "npz",
    "imagefolder",
    "tabular",
    "diabetes",
]
#: Datasets whose target is a number (regression; the others are classification).
REGRESSION_DATASETS: frozenset[str] = frozenset({"tabular", "diabetes"})
PartitionName = Literal["iid", "dirichlet", "shards", "natural"]
#: How an image of another size is brought to ``data.image_size`` (fedsim.data.fit).
ResizeName = Literal["stretch", "center_crop", "pad"]
#: How simulated clients run: ``process`` (local worker processes, :mod:`fedsim.procpool`),
#: ``ray`` (Ray actors; a cluster, GPUs), ``auto`` (``process`` unless a Ray address or a
#: GPU share per client is given or a GPU is visible).
SimulationBackend = Literal["auto", "process", "ray"]
ModelName = Literal["cnn", "resnet9", "resnet18", "mlp", "secprobe_mlp", "secprobe_mlp8"]
#: Models whose output layer the functional mechanism can train (``functional_head``).
FUNCTIONAL_MODELS: frozenset[str] = frozenset({"secprobe_mlp", "secprobe_mlp8"})
#: Models that take a tabular row (a ``1 × 1 × d`` input): the perceptrons.
TABULAR_MODELS: frozenset[str] = frozenset({"mlp", *FUNCTIONAL_MODELS})
#: How a client protects its data: DP-SGD (Opacus) or SecProbe's functional mechanism.
ClientMechanism = Literal["dpsgd", "functional"]
StrategyName = Literal[
    "fedavg", "secprobe", "random_k", "krum", "multikrum", "median", "trimmed_mean", "bulyan"
]
SensitivityName = Literal["paper", "tight"]
UnreliableKind = Literal["noise", "label_flip"]
MaliciousKind = Literal["random", "sign_flip", "scale", "nan"]
FaultKind = Literal["crash", "straggle", "exit"]
AccountantName = Literal["rdp", "pld"]
WeightingName = Literal["examples", "uniform"]
CalibrationName = Literal["none", "threshold"]
ServerOptimizerName = Literal["none", "momentum", "adam"]
#: The neighbouring relation every ε is stated under (see fedsim.privacy.accounting).
Relation = Literal["replace_one", "add_remove"]
#: How each relation is printed next to an ε.
RELATION_TEXT: dict[str, str] = {"replace_one": "replace-one", "add_remove": "add/remove-one"}
ClippingName = Literal["flat", "per_layer_uniform", "per_layer_adaptive"]
DPMode = Literal["sample", "central"]
GradSampleMode = Literal["auto", "hooks", "ghost", "bookkeeping"]
ScoreMetric = Literal["vog", "plis", "loss", "grad_norm"]
VogCheckpoints = Literal["epochs", "rounds"]
QualityMeasure = Literal["accuracy", "auc", "improvement"]
CombineRule = Literal["product", "threshold"]
RewardPart = Literal["combined", "quality", "informativeness"]
PruneSide = Literal["highest", "lowest"]
AttackName = Literal["fgsm", "pgd", "pgd_l2", "fab"]


def _bounds(**kw: float) -> dict[str, float]:
    """Field metadata with numeric bounds (``ge``, ``gt``, ``le``, ``lt``)."""
    return kw


# Upper bounds on sizes. Every number in a config is bounded so that no file can ask for
# unbounded work or memory before anything checks it: integers fit in 64 bits and floats
# are finite (fedsim.config.parse), and the counts below carry limits far above any
# experiment here (quickstart: 5 clients, 8 rounds). Batch sizes need none: a batch
# larger than a client's data is one full batch. Seeds need none beyond 64 bits.
#: Most clients in a federation (the simulation holds one node and one partition each).
MAX_CLIENTS = 100_000  # issue: 10,000+ clients on one box; partitioning 1e5 ids is cheap
#: Most federated rounds.
MAX_ROUNDS = 100_000
#: Most local epochs per round.
MAX_LOCAL_EPOCHS = 1_000
#: Most local steps per round (``client.local_steps``).
MAX_LOCAL_STEPS = 1_000_000
#: Most steps of an iterative attack.
MAX_ATTACK_STEPS = 10_000
#: Largest ε a run may target: beyond it DP-SGD protects nothing, and the accountant's
#: work grows without bound as σ shrinks.
MAX_TARGET_EPSILON = 100.0
#: Smallest DP-SGD noise multiplier (σ = 0.2 spends ε ≈ 150 in 160 steps at q = 1/32).
MIN_NOISE_MULTIPLIER = 0.2
#: Largest pure-DP ε of one release or selection.
MAX_EVENT_EPSILON = 1_000.0
#: Smallest fraction of a CPU or GPU a client can ask for (Ray's granularity is 1e-4).
MIN_RESOURCE_FRACTION = 0.01
#: Most CPUs or GPUs one client can ask for.
MAX_CLIENT_RESOURCES = 1_024.0


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how it is split across clients."""

    name: DatasetName = "pneumoniamnist"
    path: str | None = None
    root: str | None = None
    download: bool = True
    num_clients: int = field(default=5, metadata=_bounds(ge=1, le=MAX_CLIENTS))
    partition: PartitionName = "iid"
    alpha: float = field(default=1.0, metadata=_bounds(gt=0))
    shards_per_client: int = field(default=2, metadata=_bounds(ge=1))
    min_partition_size: int = field(default=1, metadata=_bounds(ge=1))
    val_size: float | None = field(default=None, metadata=_bounds(gt=0))
    #: Size of the test split carved when the data has none (plain image folder, npz
    #: without test keys): a count or a fraction in (0, 1); None = min(5000, 10%).
    test_size: float | None = field(default=None, metadata=_bounds(gt=0))
    #: The declared input size: every image is fitted to it (``data.resize``); one
    #: number for a square, or ``[height, width]``. None = the files' own (shared) size.
    image_size: int | tuple[int, ...] | None = None
    #: The declared channels: 1 (grey) or 3 (RGB). None = grey when every image is grey.
    channels: int | None = None
    #: How an image of another size is fitted to ``image_size``: ``stretch`` (exact
    #: size, aspect may change), ``center_crop`` (cover, then cut the centre) or ``pad``
    #: (fit inside, then pad with black).
    resize: ResizeName = "stretch"
    #: Keep a stratified, seeded subset of this many training-pool samples (None = all);
    #: for experiments sized to small machines.
    train_samples: int | None = field(default=None, metadata=_bounds(ge=1))
    #: Evaluate on a stratified, seeded subset of this many test samples (None = all).
    test_samples: int | None = field(default=None, metadata=_bounds(ge=1))
    #: The target column of a ``tabular`` CSV file (None = the last column).
    target: str | None = None

    @property
    def image_hw(self) -> tuple[int, int] | None:
        """``data.image_size`` as ``(height, width)``, or ``None`` when unset."""
        size = self.image_size
        if size is None:
            return None
        if isinstance(size, int):
            return size, size
        return (size[0], size[1]) if len(size) == 2 else None


@dataclass(frozen=True)
class ModelConfig:
    """Which network to train."""

    name: ModelName = "cnn"


@dataclass(frozen=True)
class ClientConfig:
    """Local training on each client."""

    local_epochs: int = field(default=1, metadata=_bounds(ge=1, le=MAX_LOCAL_EPOCHS))
    #: A fixed number of local (DP-)SGD steps per round instead of ``local_epochs`` passes
    #: (None): every client then moves the global model by the same number of steps, so a
    #: large client no longer carries most of the update mass (``n_i/N`` weight × steps).
    local_steps: int | None = field(default=None, metadata=_bounds(ge=1, le=MAX_LOCAL_STEPS))
    batch_size: int = field(default=64, metadata=_bounds(ge=1))
    lr: float = field(default=0.1, metadata=_bounds(gt=0))
    momentum: float = field(default=0.0, metadata=_bounds(ge=0, lt=1))
    #: Clip each batch's gradient to this norm when a client trains without DP-SGD
    #: (``dp.enabled: false`` or central DP): a learning rate tuned for DP-SGD, whose
    #: per-sample gradients are clipped, then stays sound when DP is switched off. ``None``:
    #: no clipping. DP-SGD clients clip per sample to ``dp.max_grad_norm`` instead.
    max_grad_norm: float | None = field(default=None, metadata=_bounds(gt=0))
    #: How the client's training is made differentially private when ``dp.enabled`` (sample
    #: mode): ``dpsgd`` (Opacus) or ``functional`` — SecProbe's functional mechanism
    #: (:mod:`fedsim.privacy.functional`): the loss becomes its second-order Taylor
    #: polynomial in the output layer's weights, Laplace noise of scale Δ/ε_epoch is added
    #: to the polynomial's coefficients of every batch, and only the output layer trains
    #: (the hidden layer stays at the global model's weights: the paper's argument does not
    #: cover training it). ``dp.epsilon`` is split evenly over every planned epoch. Without
    #: ``dp.enabled`` clients train every layer plainly, whatever the mechanism.
    mechanism: ClientMechanism = "dpsgd"


@dataclass(frozen=True)
class DPConfig:
    """Sample-level DP-SGD on every client (Opacus).

    Give either ``epsilon`` (σ is calibrated once per client over all planned rounds) or
    ``noise_multiplier`` (σ fixed; ε is whatever the accountant says).
    """

    enabled: bool = True
    epsilon: float | None = field(default=None, metadata=_bounds(gt=0, le=MAX_TARGET_EPSILON))
    delta: float = field(default=1e-5, metadata=_bounds(gt=0, lt=1))
    noise_multiplier: float | None = field(default=None, metadata=_bounds(ge=MIN_NOISE_MULTIPLIER))
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
    #: them; ``ghost`` clips without materialising them (flat clipping only, two backward
    #: passes); ``bookkeeping`` is ghost clipping in one backward pass (same clipped sums,
    #: noise and accounting); ``auto`` is bookkeeping (else ghost) for flat clipping when the
    #: model supports it and was measured faster with it (``cnn``, ``mlp``), hooks otherwise.
    grad_sample_mode: GradSampleMode = "auto"


@dataclass(frozen=True)
class StrategyConfig:
    """Server-side aggregation and client selection."""

    name: StrategyName = "fedavg"
    clients_per_round: int | None = field(default=None, metadata=_bounds(ge=1))
    round_timeout: float = field(default=3600.0, metadata=_bounds(gt=0))
    # SecProbe / random_k: keep k of the M = clients_per_round updates (None = all M)
    k: int | None = field(default=None, metadata=_bounds(ge=1))
    selection_epsilon: float = field(default=1.0, metadata=_bounds(gt=0, le=MAX_EVENT_EPSILON))
    sensitivity: SensitivityName = "paper"
    #: How FedAvg-style rules weigh the updates: by ``examples`` (n_i / N, Flower's
    #: default) or ``uniform`` (1 each; always so under central DP or a hidden size).
    weighting: WeightingName = "examples"
    #: ``threshold``: the model the server evaluates and releases (every round's
    #: evaluation, the final ``model.pt``) gets the binary decision threshold with the best
    #: balanced accuracy on the server's public validation split (:mod:`fedsim.calibration`;
    #: post-processing of the released model, no privacy cost; the clients keep training
    #: the uncalibrated model). ``none``: keep it.
    calibrate: CalibrationName = "none"
    #: Step the global model with the aggregate's pseudo-gradient (:mod:`fedsim.server_opt`):
    #: ``momentum`` (FedAvgM) or ``adam`` (FedAdam); ``none``: the aggregate is the model.
    server_optimizer: ServerOptimizerName = "none"
    #: η of the server optimizer (FedAvgM: 1.0 is FedAvg's step; FedAdam: ~0.01-0.1).
    server_lr: float = field(default=1.0, metadata=_bounds(gt=0))
    #: β₁ (momentum) of the server optimizer.
    server_momentum: float = field(default=0.9, metadata=_bounds(ge=0, lt=1))
    #: β₂ and τ of FedAdam.
    server_beta2: float = field(default=0.99, metadata=_bounds(ge=0, lt=1))
    server_tau: float = field(default=1e-3, metadata=_bounds(gt=0))
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
class FaultyConfig:
    """Clients whose site fails (``fedsim run`` simulations only; :mod:`clients.faults`).

    ``round(fraction · N)`` clients, chosen from the seed independently of the other
    roles, fail in each round with probability ``probability``: ``crash`` (the ClientApp
    raises), ``straggle`` (it answers only after ``strategy.round_timeout``) or ``exit``
    (its worker process dies and is replaced).
    """

    fraction: float = field(default=0.0, metadata=_bounds(ge=0, le=1))
    kind: FaultKind = "crash"
    probability: float = field(default=1.0, metadata=_bounds(ge=0, le=1))


@dataclass(frozen=True)
class AttackConfig:
    """One evasion attack and its budget (:mod:`fedsim.robustness`); L∞ units for all but
    ``pgd_l2``, whose ``epsilon``/``step_size`` are L2 radii."""

    name: AttackName = "pgd"
    epsilon: float = field(default=8 / 255, metadata=_bounds(gt=0))
    step_size: float = field(default=2 / 255, metadata=_bounds(gt=0))
    steps: int = field(default=10, metadata=_bounds(ge=1, le=MAX_ATTACK_STEPS))


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
    faulty: FaultyConfig = field(default_factory=FaultyConfig)


@dataclass(frozen=True)
class SimulationConfig:
    """How the simulation engine runs clients.

    ``num_gpus_per_client`` of ``None`` means: 0 without a visible GPU, otherwise 0.5
    (two clients share one GPU). ``ray_address`` attaches to an existing Ray cluster.
    ``backend``: see :data:`SimulationBackend`.
    """

    backend: SimulationBackend = "auto"

    num_cpus_per_client: float = field(
        default=1.0, metadata=_bounds(ge=MIN_RESOURCE_FRACTION, le=MAX_CLIENT_RESOURCES)
    )
    #: 0 or at least ``MIN_RESOURCE_FRACTION`` (checked in :mod:`fedsim.config.rules`).
    num_gpus_per_client: float | None = field(
        default=None, metadata=_bounds(ge=0, le=MAX_CLIENT_RESOURCES)
    )
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

    #: ``auc`` by default: on 10 quickstart clients (4 with 70% noise or flipped labels),
    #: VoG × AUC paid honest clients more than unreliable ones in 100% of the pairs over 3
    #: seeds each, loss × accuracy in 35% (noise; experiments/README.md).
    measure: QualityMeasure = "auc"
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
    #: ``vog`` by default (with the ``auc`` quality gate): loss pays noisy clients, whose
    #: mean loss is high (the "noise is difficult" failure; experiments/README.md).
    metric: ScoreMetric = "vog"
    epsilon: float = field(default=1.0, metadata=_bounds(gt=0, le=MAX_EVENT_EPSILON))
    #: The clip bound of the released scores; 0.5 is sized for VoG on the CNN (set it from
    #: the scores' percentiles for another metric or model).
    bound: float = field(default=0.5, metadata=_bounds(gt=0))
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
    steps: int = field(default=10, metadata=_bounds(ge=1, le=MAX_ATTACK_STEPS))
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
    canaries: int = field(default=500, metadata=_bounds(ge=10, le=MAX_CLIENTS * 10))
    client: int = field(default=0, metadata=_bounds(ge=0))
    confidence: float = field(default=0.95, metadata=_bounds(gt=0, lt=1))
    #: The canary's raw norm as a multiple of the clipping bound (> 1: it is clipped to it).
    scale: float = field(default=10.0, metadata=_bounds(gt=1))


#: Schemes ``tracking.tracking_uri`` may use (MLflow's own stores and servers).
TRACKING_URI_SCHEMES: tuple[str, ...] = (
    "http",
    "https",
    "sqlite",
    "postgresql",
    "mysql",
    "mssql",
    "file",
    "databricks",
)


@dataclass(frozen=True)
class TrackingConfig:
    """Experiment tracking beside the run directory (:mod:`fedsim.tracking`).

    ``mlflow``: log the config (params), every round's metrics and ε per client, and the
    run's files (artifacts) to MLflow (the ``tracking`` extra: ``pip install
    "fedsim[tracking]"``). ``tracking_uri``: an MLflow tracking URI (``http://host:5000``,
    ``sqlite:///path/mlflow.db``, ...); empty: a local store ``mlflow/`` next to the run
    directory (a sweep's: in the sweep directory). ``experiment``: the MLflow experiment
    (empty: the config's ``name``). A tracking failure never ends the run: one warning,
    and the run goes on untracked.
    """

    mlflow: bool = False
    tracking_uri: str = ""
    experiment: str = ""


@dataclass(frozen=True)
class EvaluationConfig:
    """Federated (per-site) evaluation next to the server's central test evaluation.

    With ``federated``, every ``every`` rounds (and after the last round) a ``fraction``
    of the clients, sampled from the seed, evaluate the global model on their own
    held-out split — a simulated client's is ``holdout`` of its partition (stratified,
    from the seed, never trained on); a deployed site carves the same fraction of its
    file. A site releases only its confusion matrix with Laplace noise of scale Δ/ε
    (Δ = 2 under replace-one, 1 under add/remove), an ``epsilon``-DP event in its privacy
    ledger (:mod:`fedsim.privacy.evaluation`); ``epsilon: null`` releases exact counts and
    is allowed only without ``dp.enabled``.
    """

    #: Ask the sites to evaluate the global model (Flower evaluate messages).
    federated: bool = False
    #: Evaluate after every ``every``-th round (and after the last).
    every: int = field(default=1, metadata=_bounds(ge=1, le=MAX_ROUNDS))
    #: Fraction of the clients asked each time (at least one), sampled from the seed.
    fraction: float = field(default=1.0, metadata=_bounds(gt=0, le=1))
    #: Fraction of each site's data held out for its evaluation (never trained on).
    holdout: float = field(default=0.2, metadata=_bounds(gt=0, lt=1))
    #: ε of one site's release (Laplace noise on its confusion matrix); ``null``: exact
    #: counts, only without ``dp.enabled``.
    epsilon: float | None = field(default=1.0, metadata=_bounds(gt=0, le=MAX_EVENT_EPSILON))

    def due(self, server_round: int, last_round: int) -> bool:
        """Whether the sites evaluate the global model after ``server_round``.

        >>> EvaluationConfig(federated=True, every=3).due(3, 8), EvaluationConfig().due(3, 8)
        (True, False)
        """
        if not self.federated:
            return False
        return server_round % self.every == 0 or server_round == last_round


@dataclass(frozen=True)
class Config:
    """One experiment. See ``experiments/quickstart.yaml`` for an annotated example."""

    name: str = "run"
    seed: int = field(default=0, metadata=_bounds(ge=0))
    rounds: int = field(default=3, metadata=_bounds(ge=1, le=MAX_ROUNDS))
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
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @property
    def task(self) -> Literal["classification", "regression"]:
        """What the model predicts: a class, or a number (``tabular``, ``diabetes``)."""
        return "regression" if self.data.name in REGRESSION_DATASETS else "classification"

    @property
    def functional_mechanism(self) -> bool:
        """Whether clients train with SecProbe's functional mechanism instead of DP-SGD."""
        dp = self.dp
        return dp.enabled and dp.mode == "sample" and self.client.mechanism == "functional"

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
        """Whether the server averages updates with weight 1 each (central DP, a hidden
        client size, or ``strategy.weighting: uniform``), instead of by their example
        counts."""
        central = self.dp.enabled and self.dp.mode == "central"
        return self.hides_client_size or central or self.strategy.weighting == "uniform"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-serialisable)."""
        return dataclasses.asdict(self)
