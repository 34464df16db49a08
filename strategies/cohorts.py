"""Who trains in a round: the cohort samplers of fedsim's strategies (pure, seeded).

- :class:`FixedSizeCohort`: exactly ``size`` of the eligible clients, uniformly without
  replacement (the default; sample-level DP does not rely on how cohorts are drawn).
- :class:`PoissonCohort`: every eligible client independently with probability ``rate``
  (central DP: the accountant's amplification by sampling assumes exactly this).

Both draw from a generator per round (``rng_for_round``): seeded from the root seed in
simulation, from OS entropy where the cohort must stay secret (central DP in deployment).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

RngForRound = Callable[[int], np.random.Generator]


@dataclass(frozen=True)
class FixedSizeCohort:
    """``size`` eligible clients per round, uniformly without replacement (all if fewer)."""

    size: int
    rng_for_round: RngForRound

    def sample(self, eligible: Sequence[int], server_round: int) -> list[int]:
        """The sorted cohort of ``server_round``."""
        k = min(self.size, len(eligible))
        if k == 0:
            return []
        rng = self.rng_for_round(server_round)
        chosen = rng.choice(np.asarray(eligible), size=k, replace=False)
        return sorted(int(c) for c in chosen)


@dataclass(frozen=True)
class PoissonCohort:
    """Every eligible client independently with probability ``rate`` (may be empty)."""

    rate: float
    rng_for_round: RngForRound

    def sample(self, eligible: Sequence[int], server_round: int) -> list[int]:
        """The sorted cohort of ``server_round``."""
        if not eligible:
            return []
        rng = self.rng_for_round(server_round)
        draws = rng.random(len(eligible))
        return sorted(int(c) for c, u in zip(eligible, draws, strict=True) if u < self.rate)


CohortSampler = FixedSizeCohort | PoissonCohort
