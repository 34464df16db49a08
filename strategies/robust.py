"""Flower's Byzantine-robust aggregators with fedsim's seeded sampling and screening.

- :class:`Krum` (Blanchard et al., NeurIPS 2017): the one update closest to its
  ``M - f - 2`` nearest neighbours; tolerates ``f`` Byzantine updates when ``M >= 2f + 3``.
- :class:`MultiKrum`: the mean of the ``k`` best-scored updates by Krum's score.
- :class:`FedMedian` (Yin et al., ICML 2018): coordinate-wise median.
- :class:`FedTrimmedAvg` (Yin et al., ICML 2018): coordinate-wise mean after cutting a
  fraction ``beta`` at each end.
- :class:`Bulyan` (El Mhamdi et al., ICML 2018): MultiKrum selection of ``M - 2f`` then a
  coordinate-wise trimmed mean around the median; needs ``M >= 4f + 3``.

The rules are Flower's own; :class:`~strategies.base.FedsimStrategy` screens every reply
first. When screening leaves fewer updates than a rule needs for its guarantee
(:meth:`min_updates`: ``2f + 3`` for Krum and MultiKrum, ``4f + 3`` for Bulyan — one
rejected reply in a cohort of exactly that size is enough), the round does not run the
rule on too few updates (Flower's Bulyan would skip every such round, Krum's scores
would be meaningless): it aggregates the coordinate-wise median of the accepted updates
if at least ``2f + 1`` remain, and keeps the global model otherwise
(:func:`strategies.guards.fallback`; ``aggregation_note`` in metrics.jsonl says which).
Median and trimmed mean need no minimum. ``selected``
in metrics.jsonl lists the updates the rule used: for Krum and MultiKrum the ones Flower's
``select_multikrum`` keeps (found here with the same function, then handed to Flower's
rule, which keeps all of them again), for Bulyan the ``M - 2f`` its selection rule keeps
(all of which enter the coordinate-wise trimmed mean), and every update for the
coordinate-wise rules (median, trimmed mean), which use all of them.
"""

from __future__ import annotations

from flwr.serverapp.strategy import Bulyan as FlowerBulyan
from flwr.serverapp.strategy import FedMedian as FlowerFedMedian
from flwr.serverapp.strategy import FedTrimmedAvg as FlowerFedTrimmedAvg
from flwr.serverapp.strategy import Krum as FlowerKrum
from flwr.serverapp.strategy import MultiKrum as FlowerMultiKrum
from flwr.serverapp.strategy.multikrum import select_multikrum

from strategies.base import Accepted, FedsimStrategy, Selection


def _kept(chosen: Accepted, num_malicious: int, keep: int) -> Accepted:
    """The ``(client id, message)`` pairs whose contents ``select_multikrum`` returns."""
    if not chosen:
        return []
    kept = select_multikrum([msg.content for _, msg in chosen], num_malicious, keep)
    ids = {id(content) for content in kept}
    return [(cid, msg) for cid, msg in chosen if id(msg.content) in ids]


class MultiKrum(FedsimStrategy, FlowerMultiKrum):
    """Flower's MultiKrum; sampling and screening from :class:`FedsimStrategy`."""

    def min_updates(self) -> int:
        """Krum's scores tolerate ``f`` malicious updates among ``M >= 2f + 3``."""
        return 2 * self.num_malicious_nodes + 3

    def select(self, server_round: int, accepted: Accepted) -> Selection:
        """The updates Krum's scores keep (Flower's rule then averages exactly these)."""
        keep = min(self.num_nodes_to_select, len(accepted))
        return Selection(_kept(accepted, self.num_malicious_nodes, keep))


class Krum(MultiKrum, FlowerKrum):
    """Flower's Krum; sampling and screening from :class:`FedsimStrategy`."""


class FedMedian(FedsimStrategy, FlowerFedMedian):
    """Flower's FedMedian; sampling and screening from :class:`FedsimStrategy`."""


class FedTrimmedAvg(FedsimStrategy, FlowerFedTrimmedAvg):
    """Flower's FedTrimmedAvg; sampling and screening from :class:`FedsimStrategy`."""


class Bulyan(FedsimStrategy, FlowerBulyan):
    """Flower's Bulyan; sampling and screening from :class:`FedsimStrategy`."""

    def min_updates(self) -> int:
        """Bulyan tolerates ``f`` malicious updates among ``M >= 4f + 3``."""
        return 4 * self.num_malicious_nodes + 3

    def kept_by_rule(self, chosen: Accepted) -> tuple[int, ...]:
        """The ``M - 2f`` updates Bulyan's selection rule keeps (none if ``M < 4f + 3``)."""
        f = self.num_malicious_nodes
        if len(chosen) < 4 * f + 3:
            return ()
        theta = len(chosen) - 2 * f
        kept = self.selection_rule([msg.content for _, msg in chosen], f, theta)
        ids = {id(content) for content in kept}
        return tuple(cid for cid, msg in chosen if id(msg.content) in ids)
