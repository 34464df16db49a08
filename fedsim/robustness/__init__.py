"""Robustness (PSREval, federated): evasion attacks, adversarial training, train-time
attackers, int8 quantisation and the robustness evaluation of finished runs.

Importing this package registers every attack (:data:`ATTACKS`: ``fgsm``, ``pgd``,
``pgd_l2``, ``fab``).
"""

from fedsim.robustness import fab, fgsm, pgd
from fedsim.robustness.base import (
    ATTACKS,
    Attack,
    AttackParams,
    build_attack,
    eval_mode,
    perturbation_norm,
    project,
)

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackParams",
    "build_attack",
    "eval_mode",
    "fab",
    "fgsm",
    "perturbation_norm",
    "pgd",
    "project",
]
