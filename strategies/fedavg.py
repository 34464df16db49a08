"""FedAvg (McMahan et al., 2017) with fedsim's seeded sampling and reply screening.

The aggregation rule is Flower's: the example-weighted mean of the accepted updates.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from strategies.base import FedsimStrategy


class FedAvg(FedsimStrategy, FlowerFedAvg):
    """Flower's FedAvg; sampling, screening and the round template from
    :class:`~strategies.base.FedsimStrategy`."""
