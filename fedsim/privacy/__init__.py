"""Privacy accounting: DP events, ε computation, noise calibration and client ledgers."""

from fedsim.privacy.accounting import (
    RELATION_TEXT,
    AccountantName,
    Accounting,
    DpEvent,
    DpSgdSchedule,
    EvaluationRelease,
    FunctionalMechanism,
    LaplaceRelease,
    PureDp,
    Relation,
    SubsampledGaussian,
    calibrate_noise_multiplier,
    clear_caches,
    dp_sgd_schedule,
    epsilon,
)
from fedsim.privacy.ledger import PrivacyLedger

__all__ = [
    "RELATION_TEXT",
    "AccountantName",
    "Accounting",
    "DpEvent",
    "DpSgdSchedule",
    "EvaluationRelease",
    "FunctionalMechanism",
    "LaplaceRelease",
    "PrivacyLedger",
    "PureDp",
    "Relation",
    "SubsampledGaussian",
    "calibrate_noise_multiplier",
    "clear_caches",
    "dp_sgd_schedule",
    "epsilon",
]
