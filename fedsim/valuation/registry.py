"""The registry of per-sample valuation scores (:data:`SCORES`) and their contract.

A score is a small object around the pure functions of :mod:`fedsim.valuation.scores`:
its name (the value of ``valuation.metric``), how to compute per-sample scores for a
batch (:meth:`Score.batch`), and three declared properties that the rest of fedsim reads
instead of comparing names:

``needs_checkpoints``
    The score is a spread over ``K >= 2`` checkpoints of the model (VoG), not a function
    of one model: clients record checkpoints for it (the ends of local epochs or of
    rounds, ``valuation.vog_checkpoints``) and ``fedsim analyze`` needs saved ones.
``releases_variance``
    Its paid DP release carries the variance of the clipped scores besides their mean
    (``valuation.variance_share`` of ε; :func:`fedsim.valuation.release.plan_release`).
``requires_dp``
    It is stated relative to the DP-SGD noise multiplier σ (PLIS divides by σ²), so it
    means nothing without DP: scores scale with ``1/σ²``.

``tests/test_contracts.py`` runs every registered score on a tiny model and batch: one
finite value per sample, and each declared property matches what the score does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor, nn

from fedsim.registry import Registry
from fedsim.valuation.scores import (
    grad_norm_scores,
    loss_scores,
    plis,
    true_logit_input_grad,
    vog,
)


class Score(ABC):
    """A per-sample data-valuation score (higher = more difficult / atypical).

    Subclasses set the class attributes and implement :meth:`batch`; they hold no state.
    """

    #: The registered name (``valuation.metric``).
    name: ClassVar[str]
    #: How reports and notes spell it.
    title: ClassVar[str]
    needs_checkpoints: ClassVar[bool] = False
    releases_variance: ClassVar[bool] = False
    requires_dp: ClassVar[bool] = False

    @abstractmethod
    def batch(
        self, checkpoints: Sequence[nn.Module], x: Tensor, y: Tensor, *, sigma: float = 1.0
    ) -> Tensor:
        """Per-sample scores ``(N,)`` of the batch ``(x, y)``.

        Parameters
        ----------
        checkpoints
            Plain models (never Opacus-wrapped), oldest first; the last is the current
            model. A score that ``needs_checkpoints`` uses all of them (at least 2); any
            other uses only the last.
        x, y
            Images ``(N, C, H, W)`` in [0, 1] and integer labels ``(N,)``.
        sigma
            The DP-SGD noise multiplier σ > 0 (1.0 without DP); only scores that
            ``requires_dp`` depend on it.

        Raises
        ------
        ValueError
            On malformed batches, ``sigma <= 0``, or too few checkpoints.
        """


def _current(score: Score, checkpoints: Sequence[nn.Module]) -> nn.Module:
    if not checkpoints:
        raise ValueError(f"{score.name} needs the model to score with; got no checkpoints")
    return checkpoints[-1]


class VoG(Score):
    """Variance of Gradients (Agarwal, D'souza and Hooker, CVPR 2022).

    The pixel-averaged standard deviation, over the checkpoints, of the channel-averaged
    input gradient of the true-class logit (:func:`fedsim.valuation.scores.vog`).
    """

    name = "vog"
    title = "VoG"
    needs_checkpoints = True
    releases_variance = True

    def batch(
        self, checkpoints: Sequence[nn.Module], x: Tensor, y: Tensor, *, sigma: float = 1.0
    ) -> Tensor:
        return vog([true_logit_input_grad(model, x, y) for model in checkpoints])


class PLIS(Score):
    """Privacy-loss input sensitivity (Usynin, Rueckert and Kaissis).

    The spectral norm of the input gradient of ``‖∇θ ℓ‖² / σ²``
    (:func:`fedsim.valuation.scores.plis`).
    """

    name = "plis"
    title = "PLIS"
    requires_dp = True

    def batch(
        self, checkpoints: Sequence[nn.Module], x: Tensor, y: Tensor, *, sigma: float = 1.0
    ) -> Tensor:
        return plis(_current(self, checkpoints), x, y, sigma=sigma)


class Loss(Score):
    """Per-sample cross-entropy (:func:`fedsim.valuation.scores.loss_scores`), a baseline."""

    name = "loss"
    title = "loss"

    def batch(
        self, checkpoints: Sequence[nn.Module], x: Tensor, y: Tensor, *, sigma: float = 1.0
    ) -> Tensor:
        return loss_scores(_current(self, checkpoints), x, y)


class GradNorm(Score):
    """Per-sample unclipped parameter-gradient L2 norm
    (:func:`fedsim.valuation.scores.grad_norm_scores`), a baseline."""

    name = "grad_norm"
    title = "gradient norm"

    def batch(
        self, checkpoints: Sequence[nn.Module], x: Tensor, y: Tensor, *, sigma: float = 1.0
    ) -> Tensor:
        return grad_norm_scores(_current(self, checkpoints), x, y)


SCORES: Registry[Score] = Registry("valuation score", "valuation.metric")
"""Every score by name, registered in the order reports list them."""

for _score in (VoG(), PLIS(), Loss(), GradNorm()):
    SCORES.register(_score.name)(_score)

METRICS: tuple[str, ...] = tuple(name for name, _ in SCORES.items())
"""Names of the registered scores, in the order reports list them."""


def score_named(metric: str) -> Score:
    """The score registered as ``metric``.

    Raises
    ------
    ValueError
        If no score has that name (the message lists the valid names, in report order).
    """
    if metric not in SCORES:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    return SCORES.get(metric)
