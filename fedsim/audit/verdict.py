"""Compare a claimed ε with an empirical lower bound."""

from __future__ import annotations

import math
from typing import Literal

Verdict = Literal["consistent", "VIOLATION"]

#: Relative slack (absolute below ε = 1) before a lower bound counts as exceeding a claim.
#: It only absorbs floating-point noise: the bounds here are solved to ~1e-9 and
#: dp-accounting's ε's are reported to far better than 1e-6 relative; it is no statistical
#: margin (the confidence level of the lower bound is that).
VERDICT_TOLERANCE = 1e-6


def verdict(claimed_epsilon: float, lower_bound: float) -> Verdict:
    """``"VIOLATION"`` iff ``lower_bound`` exceeds ``claimed_epsilon``, else ``"consistent"``.

    "Exceeds" means ``lower_bound > claimed_epsilon + VERDICT_TOLERANCE · max(1,
    claimed_epsilon)``. A violation says that, at the confidence of the lower bound, the
    mechanism is not (claimed ε, δ)-DP — a bug in the accounting or the implementation.
    "consistent" is no certificate of privacy: an audit only ever bounds ε from below.

    Parameters
    ----------
    claimed_epsilon
        ε ≥ 0 claimed by the accountant (``inf`` is never violated).
    lower_bound
        Empirical lower bound ≥ 0 at the same δ (e.g. :func:`one_run_lower_bound`).

    Returns
    -------
    Verdict
    """
    for name, value in (("claimed_epsilon", claimed_epsilon), ("lower_bound", lower_bound)):
        if math.isnan(value) or value < 0:
            raise ValueError(f"{name} must be >= 0; got {value}")
    if math.isinf(claimed_epsilon):
        return "consistent"
    slack = VERDICT_TOLERANCE * max(1.0, claimed_epsilon)
    return "VIOLATION" if lower_bound > claimed_epsilon + slack else "consistent"
