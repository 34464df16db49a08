"""Uniformly random K of M: DP-FedAvg-style subsampling of uploads, no utility.

The baseline SecProbe is compared with: each round keeps ``strategy.k`` of the accepted
updates, uniformly at random with a generator seeded from the root seed and the round,
and averages them with Flower's FedAvg rule. Every accepted client's
``selection_probability`` is K/M. The choice ignores the data, so it spends no ε.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from fedsim.seeding import numpy_rng
from strategies.base import Accepted, FedsimStrategy, Selection, SelectionNote


class RandomK(FedsimStrategy, FlowerFedAvg):
    """Keep K of the accepted updates uniformly at random (seeded)."""

    def select(self, server_round: int, accepted: Accepted) -> Selection:
        """A seeded uniform sample of K of the accepted updates, in client-id order."""
        m = len(accepted)
        k = self.keep_count(m)
        if k == 0:
            return Selection([])
        idx = numpy_rng(self.cfg.seed, "random-k", server_round).choice(m, size=k, replace=False)
        notes = {cid: SelectionNote(selection_probability=k / m) for cid, _ in accepted}
        return Selection([accepted[int(i)] for i in sorted(idx)], notes)
