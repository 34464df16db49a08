"""The typed, frozen experiment configuration.

A YAML file (plus ``-o key=value`` overrides) becomes one :class:`Config`. Unknown keys,
wrong types and out-of-range values are all collected and reported together, each with
its dotted path, the rule and the value received (:class:`~fedsim.errors.ConfigError`).
Nothing else in fedsim reads raw config dicts: the Flower apps turn their flat
``run_config`` into a :class:`Config` with :func:`from_run_config`.

The package re-exports its public names, so ``from fedsim.config import X`` is the way
in. Its modules:

``schema``
    The frozen dataclasses (:class:`Config` and its sections), the ``Literal`` mode
    names, defaults and numeric bounds (field metadata ``ge``, ``gt``, ``le``, ``lt``).
``parse``
    The generic builder: a nested mapping → any frozen dataclass tree, every problem
    collected (:func:`build_dataclass`); :func:`from_dict` for :class:`Config`.
``rules``
    The cross-field rules, one function per section (:func:`cross_checks` runs them).
``io``
    YAML reading, ``key=value`` overrides, :func:`load` and :func:`to_yaml`.
``run_config``
    Flower's flat ``run_config`` → :class:`Config` (:func:`from_run_config`).

Importing it costs only PyYAML: no torch, Flower or dp-accounting (``fedsim --help``
stays fast).
"""

from fedsim.config.io import apply_overrides, copy_raw, load, parse_override, read_yaml, to_yaml
from fedsim.config.parse import build_dataclass, from_dict
from fedsim.config.rules import cross_checks
from fedsim.config.run_config import RUN_CONFIG_EXTRA_KEYS, from_run_config
from fedsim.config.schema import (
    FUNCTIONAL_MODELS,
    REGRESSION_DATASETS,
    RELATION_TEXT,
    TABULAR_MODELS,
    AccountantName,
    AdversarialRoleConfig,
    AdversarialTrainingConfig,
    AttackConfig,
    AttackName,
    AuditConfig,
    CalibrationName,
    ClientConfig,
    ClientMechanism,
    ClippingName,
    CombineRule,
    Config,
    DataConfig,
    DatasetName,
    DPConfig,
    DPMode,
    EvaluationConfig,
    FaultKind,
    FaultyConfig,
    GradSampleMode,
    MaliciousConfig,
    MaliciousKind,
    ModelConfig,
    ModelName,
    PartitionName,
    PruneConfig,
    PruneSide,
    QualityGateConfig,
    QualityMeasure,
    Relation,
    RewardPart,
    RobustnessConfig,
    RobustnessEvaluationConfig,
    RolesConfig,
    ScoreMetric,
    SensitivityName,
    ServerOptimizerName,
    SimulationConfig,
    StrategyConfig,
    StrategyName,
    TrackingConfig,
    UnreliableConfig,
    UnreliableKind,
    ValuationConfig,
    VogCheckpoints,
    WeightingName,
)

__all__ = [
    "FUNCTIONAL_MODELS",
    "REGRESSION_DATASETS",
    "RELATION_TEXT",
    "RUN_CONFIG_EXTRA_KEYS",
    "TABULAR_MODELS",
    "AccountantName",
    "AdversarialRoleConfig",
    "AdversarialTrainingConfig",
    "AttackConfig",
    "AttackName",
    "AuditConfig",
    "CalibrationName",
    "ClientConfig",
    "ClientMechanism",
    "ClippingName",
    "CombineRule",
    "Config",
    "DPConfig",
    "DPMode",
    "DataConfig",
    "DatasetName",
    "EvaluationConfig",
    "FaultKind",
    "FaultyConfig",
    "GradSampleMode",
    "MaliciousConfig",
    "MaliciousKind",
    "ModelConfig",
    "ModelName",
    "PartitionName",
    "PruneConfig",
    "PruneSide",
    "QualityGateConfig",
    "QualityMeasure",
    "Relation",
    "RewardPart",
    "RobustnessConfig",
    "RobustnessEvaluationConfig",
    "RolesConfig",
    "ScoreMetric",
    "SensitivityName",
    "ServerOptimizerName",
    "SimulationConfig",
    "StrategyConfig",
    "StrategyName",
    "TrackingConfig",
    "UnreliableConfig",
    "UnreliableKind",
    "ValuationConfig",
    "VogCheckpoints",
    "WeightingName",
    "apply_overrides",
    "build_dataclass",
    "copy_raw",
    "cross_checks",
    "from_dict",
    "from_run_config",
    "load",
    "parse_override",
    "read_yaml",
    "to_yaml",
]
