"""SecProbe: private selection of reliable participants (Zhao et al., IEEE TIFS 2020).

Each round the server scores every accepted upload by its accuracy on the server's
auxiliary validation split (for regression: the mean of ``1 - min(1, |ŷ - y| / y)``,
:func:`fedsim.selection.regression_utility`, Δu = 1 as in the paper), samples K of the
M uploads without replacement with the exponential mechanism at
``strategy.selection_epsilon`` (probability ``∝ exp(ε·u/(2KΔu))`` per draw, drawn as
Gumbel-top-K, :mod:`fedsim.selection`), and averages the K chosen with Flower's FedAvg
rule.

Guarantee: the set of selected clients is ε-DP with respect to one validation record per
round (K draws at ε/K each, basic composition); over R rounds the selection spends R·ε
(basic composition, logged per round and as ``selection_epsilon_total`` in summary.json).
A round where K ≥ M selects everyone deterministically and spends nothing.

The selection also depends on each participant's upload, through its own utility only;
with respect to a participant it is ``ε·1/(2Δu)``-DP per round
(:func:`fedsim.selection.participant_epsilon`: ε with the paper's Δu = 1/2,
``ε·n/2`` with the tight Δu = 1/n). That pure-DP event is charged to every scored
participant's server-side ledger and composed into its ``epsilon_total``
(:meth:`~strategies.base.FedsimStrategyMixin.charge_selection`).

Logged per client: ``utility`` and ``selection_probability``, the probability of being
among the K. It is exact (enumeration of ordered selections) for M ≤ 8 and a seeded Monte
Carlo estimate (20,000 Gumbel-top-K draws) above.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from fedsim.config import Config
from fedsim.seeding import numpy_rng
from fedsim.selection import (
    participant_epsilon,
    sample_k_gumbel,
    selection_inclusion_probabilities,
    utility_sensitivity,
)
from strategies.base import Accepted, FedsimStrategy, Selection, SelectionNote
from strategies.utility import validation_accuracies

logger = logging.getLogger(__name__)


class SecProbe(FedsimStrategy, FlowerFedAvg):
    """Exponential-mechanism selection of K of M updates by validation accuracy."""

    def utilities(self, accepted: Accepted) -> np.ndarray:
        """Validation accuracy of each accepted update (in ``accepted`` order)."""
        msgs = [msg for _, msg in accepted]
        return validation_accuracies(self.cfg.model.name, self.context.data, msgs)

    def sensitivity(self) -> float:
        """Δu of the validation utility (``strategy.sensitivity`` over the val split): the
        accuracy, or for regression SecProbe's clipped relative-error score (Eq. 6)."""
        data = self.context.data
        return utility_sensitivity(len(data.val), self.cfg.strategy.sensitivity, data.task)

    def selection_epsilon_ahead(self, num_sampled: int) -> float:
        """Participant ε of this round's draw if K < M (M at most ``num_sampled``)."""
        if self.keep_count(num_sampled) >= num_sampled:
            return 0.0
        return participant_epsilon(self.cfg.strategy.selection_epsilon, self.sensitivity())

    def select(self, server_round: int, accepted: Accepted) -> Selection:
        """Keep K of the accepted updates, drawn with the exponential mechanism."""
        m = len(accepted)
        if m == 0:
            return Selection([])
        st = self.cfg.strategy
        k = self.keep_count(m)
        eps = st.selection_epsilon
        sens = self.sensitivity()
        u = self.utilities(accepted)
        if k < m:
            picked = sample_k_gumbel(
                u, eps, k, sens, numpy_rng(self.cfg.seed, "secprobe", server_round)
            )
            spent = eps
            self.charge_selection((cid for cid, _ in accepted), participant_epsilon(eps, sens))
        else:
            picked = np.arange(m)
            spent = 0.0
        incl = selection_inclusion_probabilities(
            u, eps, k, sens, numpy_rng(self.cfg.seed, "secprobe-inclusion", server_round)
        )
        notes = {
            cid: SelectionNote(utility=float(u[i]), selection_probability=float(incl[i]))
            for i, (cid, _) in enumerate(accepted)
        }
        chosen = sorted(int(i) for i in picked)
        logger.info(
            "round %d: secprobe utilities %s, kept %d of %d: %s (eps %.3g, sensitivity %.3g)",
            server_round,
            np.round(u, 4).tolist(),
            k,
            m,
            [accepted[i][0] for i in chosen],
            eps,
            sens,
        )
        return Selection([accepted[i] for i in chosen], notes, spent)


def secprobe_rules(cfg: Config) -> list[str]:
    """SecProbe's config rule: a DP-SGD budget that leaves room for the selection charges.

    With ``dp.epsilon``, σ is calibrated so that DP-SGD alone spends ``dp.epsilon`` over
    all rounds; when SecProbe keeps K < M updates each round also charges every scored
    participant at least ``strategy.selection_epsilon``
    (:func:`fedsim.selection.participant_epsilon`, Δu ≤ 1/2). A ``dp.max_epsilon`` of at
    most ``dp.epsilon`` then stops every client before the planned rounds are done.
    """
    dp, st = cfg.dp, cfg.strategy
    charged = st.k is not None and st.k < cfg.clients_per_round
    if not (dp.enabled and dp.mode == "sample" and charged):
        return []
    if dp.epsilon is None or dp.max_epsilon is None or dp.max_epsilon > dp.epsilon:
        return []
    return [
        "dp.max_epsilon must be > dp.epsilon for strategy.name 'secprobe' with strategy.k < "
        "strategy.clients_per_round (DP-SGD alone spends dp.epsilon over the rounds and each "
        f"selection charges at least strategy.selection_epsilon={st.selection_epsilon} more, "
        f"so clients would stop training early); got dp.max_epsilon={dp.max_epsilon}, "
        f"dp.epsilon={dp.epsilon}"
    ]
