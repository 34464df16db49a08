"""The decision threshold of a binary classifier, chosen on the server's validation split.

A federated model can rank well (high AUC) and still sit at the majority class: its
decision threshold follows the training prior its updates carried (label skew amplified by
FedAvg, a train/test prior shift). ``strategy.calibrate: threshold`` moves the threshold
after every aggregation to the one that maximises balanced accuracy (the mean of the two
recalls, which does not depend on the class prior) on the server's public validation
split, by shifting the output layer's two biases. It costs the clients no privacy: only
the server's own data and the released global model are used.
"""

from __future__ import annotations

import numpy as np

__all__ = ["balanced_threshold", "shift_binary_bias"]


def balanced_threshold(margins: np.ndarray, labels: np.ndarray) -> float:
    """The threshold ``t`` on ``margins`` (logit of class 1 minus logit of class 0) whose
    rule "class 1 iff margin > t" has the largest balanced accuracy on ``labels``.

    Ties go to the threshold closest to 0 (the uncalibrated rule); ``0.0`` when a class is
    missing from ``labels``.

    >>> balanced_threshold(np.array([-2.0, -1.0, 0.5, 1.0, 3.0]), np.array([0, 0, 0, 1, 1]))
    0.75
    """
    margins = np.asarray(margins, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return 0.0
    order = np.argsort(margins, kind="stable")
    m, y = margins[order], labels[order]
    # threshold between m[i-1] and m[i]: the first i samples are predicted 0
    below_neg = np.concatenate([[0], np.cumsum(~y)])  # true negatives
    below_pos = np.concatenate([[0], np.cumsum(y)])  # false negatives
    balanced = 0.5 * (below_neg / neg + (pos - below_pos) / pos)
    # only cuts between distinct margins are realisable
    cuts = np.concatenate([[True], m[1:] != m[:-1], [True]])
    thresholds = np.concatenate([[m[0] - 1.0], (m[:-1] + m[1:]) / 2.0, [m[-1] + 1.0]])
    best = balanced[cuts].max()
    candidates = thresholds[cuts & (balanced >= best - 1e-12)]
    return float(candidates[np.argmin(np.abs(candidates))])


def shift_binary_bias(bias: np.ndarray, threshold: float) -> np.ndarray:
    """Output biases of a two-class model whose margin is moved down by ``threshold``
    (half on each class, so their mean is unchanged)."""
    if bias.shape != (2,):
        raise ValueError(f"need the two biases of a binary output layer; got shape {bias.shape}")
    return bias + np.array([threshold / 2.0, -threshold / 2.0], dtype=bias.dtype)
