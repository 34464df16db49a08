"""Statistics of an empirical privacy audit (``fedsim audit``): pure, side-effect-free.

- :mod:`fedsim.audit.gaussian` — δ(ε) and ε(δ) of μ-GDP, and ε of a pair of Gaussians with
  unequal variances (exact hockey-stick divergence).
- :mod:`fedsim.audit.one_shot` — Andrew et al.'s one-shot ε *estimate* (ICLR 2024).
- :mod:`fedsim.audit.one_run` — Steinke, Nasr & Jagielski's one-run ε *lower bound*
  (NeurIPS 2023).
- :mod:`fedsim.audit.verdict` — claimed ε against a lower bound.
"""

from fedsim.audit.gaussian import epsilon_between_gaussians, gaussian_delta, gaussian_epsilon
from fedsim.audit.one_run import (
    DEFAULT_GUESS_FRACTIONS,
    OneRunAudit,
    best_guess_bound,
    one_run_lower_bound,
    one_run_p_value,
)
from fedsim.audit.one_shot import BootstrapInterval, OneShotEstimate, one_shot_estimate
from fedsim.audit.verdict import VERDICT_TOLERANCE, Verdict, verdict

__all__ = [
    "DEFAULT_GUESS_FRACTIONS",
    "VERDICT_TOLERANCE",
    "BootstrapInterval",
    "OneRunAudit",
    "OneShotEstimate",
    "Verdict",
    "best_guess_bound",
    "epsilon_between_gaussians",
    "gaussian_delta",
    "gaussian_epsilon",
    "one_run_lower_bound",
    "one_run_p_value",
    "one_shot_estimate",
    "verdict",
]
