"""Privacy accounting: DP events, ε computation, noise calibration and client ledgers."""

from fedsim.privacy.accounting import (
    AccountantName,
    DpEvent,
    DpSgdSchedule,
    LaplaceRelease,
    PureDp,
    SubsampledGaussian,
    calibrate_noise_multiplier,
    dp_sgd_schedule,
    epsilon,
)
from fedsim.privacy.ledger import PrivacyLedger

__all__ = [
    "AccountantName",
    "DpEvent",
    "DpSgdSchedule",
    "LaplaceRelease",
    "PrivacyLedger",
    "PureDp",
    "SubsampledGaussian",
    "calibrate_noise_multiplier",
    "dp_sgd_schedule",
    "epsilon",
]
