"""Flower's Byzantine-robust aggregators with fedsim's seeded sampling and screening.

- :class:`Krum` (Blanchard et al., NeurIPS 2017): the one update closest to its
  ``M - f - 2`` nearest neighbours; tolerates ``f`` Byzantine updates when ``M >= 2f + 3``.
- :class:`MultiKrum`: the mean of the ``k`` best-scored updates by Krum's score.
- :class:`FedMedian` (Yin et al., ICML 2018): coordinate-wise median.
- :class:`FedTrimmedAvg` (Yin et al., ICML 2018): coordinate-wise mean after cutting a
  fraction ``beta`` at each end.
- :class:`Bulyan` (El Mhamdi et al., ICML 2018): MultiKrum selection of ``M - 2f`` then a
  coordinate-wise trimmed mean around the median; needs ``M >= 4f + 3``.

The rules are Flower's own; the mixin only screens malformed replies first. ``selected``
in metrics.jsonl lists the updates handed to the rule (which may discard some itself).
"""

from __future__ import annotations

from flwr.serverapp.strategy import Bulyan as FlowerBulyan
from flwr.serverapp.strategy import FedMedian as FlowerFedMedian
from flwr.serverapp.strategy import FedTrimmedAvg as FlowerFedTrimmedAvg
from flwr.serverapp.strategy import Krum as FlowerKrum
from flwr.serverapp.strategy import MultiKrum as FlowerMultiKrum

from strategies.base import FedsimStrategyMixin


class Krum(FedsimStrategyMixin, FlowerKrum):
    """Flower's Krum; sampling and screening from :class:`FedsimStrategyMixin`."""


class MultiKrum(FedsimStrategyMixin, FlowerMultiKrum):
    """Flower's MultiKrum; sampling and screening from :class:`FedsimStrategyMixin`."""


class FedMedian(FedsimStrategyMixin, FlowerFedMedian):
    """Flower's FedMedian; sampling and screening from :class:`FedsimStrategyMixin`."""


class FedTrimmedAvg(FedsimStrategyMixin, FlowerFedTrimmedAvg):
    """Flower's FedTrimmedAvg; sampling and screening from :class:`FedsimStrategyMixin`."""


class Bulyan(FedsimStrategyMixin, FlowerBulyan):
    """Flower's Bulyan; sampling and screening from :class:`FedsimStrategyMixin`."""
