"""DP release of a site's evaluation: its confusion matrix with Laplace noise.

In federated evaluation (``evaluation.federated``) a site evaluates the global model on
its own held-out records. The model is public (the server sent it); what the reply
discloses about the site's data is a function of its held-out records, which DP-SGD's ε
does not cover. A site therefore releases **only its K × K confusion matrix**
``m[true, predicted]``, every cell with independent Laplace noise, and nothing else —
not its loss, not its exact size. Accuracy, balanced accuracy, per-class recall,
sensitivity, specificity, precision, F1 and the (noisy) number of examples are derived
from the noisy matrix by anyone (post-processing, :mod:`fedsim.clinical`).

Sensitivity and ε
-----------------
The matrix is a histogram of the held-out records (each record adds 1 to one cell).

- ``add_remove``: one record more or less changes one cell by 1 (L1 sensitivity Δ = 1);
  noise of scale ``1/ε`` per cell is one Laplace mechanism of parameter ``ε`` — the
  ledger event ``EvaluationRelease(ε)``.
- ``replace_one``: the replaced record leaves one cell and enters another (Δ = 2, or 0
  when it lands in the same cell); noise of scale ``2/ε`` per cell makes the privacy
  loss the sum of two independent Laplace losses of parameter ``ε/2`` on the two cells
  that differ (the others cancel) — exactly the ledger events
  ``EvaluationRelease(ε/2, count=2)``, ε-DP by composition, and composed as such by the
  PLD accountant.

Each release is charged to the site's privacy ledger at the run's relation and composed
with its DP-SGD steps and other releases (:class:`~fedsim.privacy.ledger.PrivacyLedger`).
That composition is conservative: a held-out record is never trained on, so a record's
loss is really the larger of the two parts, not their sum.

``epsilon=None`` releases the exact counts and charges nothing: only for runs without
``dp.enabled`` (the config refuses it otherwise), whose updates protect nothing either.

Like every Laplace release in fedsim the noise is floating point (NumPy's sampler): a
site's noise comes from OS entropy in deployment and from the seed in simulation.
"""

from __future__ import annotations

import numpy as np

from fedsim.config import Relation
from fedsim.privacy.accounting import EvaluationRelease


def count_sensitivity(relation: Relation) -> int:
    """L1 sensitivity of a confusion matrix (a histogram) under ``relation``.

    >>> count_sensitivity("replace_one"), count_sensitivity("add_remove")
    (2, 1)
    """
    return 2 if relation == "replace_one" else 1


def laplace_scale(epsilon: float, relation: Relation) -> float:
    """Per-cell Laplace scale ``Δ/ε`` of an ``epsilon``-DP release.

    >>> laplace_scale(0.5, "replace_one")
    4.0
    """
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0; got {epsilon}")
    return count_sensitivity(relation) / epsilon


def release_events(epsilon: float | None, relation: Relation) -> tuple[EvaluationRelease, ...]:
    """The ledger events of one release (none for an exact release, ``epsilon=None``).

    >>> release_events(1.0, "replace_one")
    (EvaluationRelease(epsilon=0.5, count=2),)
    >>> release_events(1.0, "add_remove")
    (EvaluationRelease(epsilon=1.0, count=1),)
    """
    if epsilon is None:
        return ()
    if relation == "replace_one":
        return (EvaluationRelease(epsilon / 2.0, 2),)
    return (EvaluationRelease(epsilon, 1),)


def release_counts(
    matrix: np.ndarray, epsilon: float | None, relation: Relation, rng: np.random.Generator
) -> np.ndarray:
    """The released matrix: ``matrix`` plus Laplace noise of scale Δ/ε on every cell
    (float64; the exact counts when ``epsilon`` is ``None``)."""
    counts = np.asarray(matrix, dtype=np.float64)
    if epsilon is None:
        return counts.copy()
    return counts + rng.laplace(0.0, laplace_scale(epsilon, relation), size=counts.shape)
