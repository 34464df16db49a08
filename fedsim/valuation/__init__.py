"""Data valuation: per-sample scores (VoG, PLIS, loss, gradient norm) and their analysis.

Per-sample score API (stable; :mod:`fedsim.valuation.scores`, pure functions over a
*plain* ``nn.Module``, never an Opacus-wrapped one; every result is per sample, so a batch
equals a one-at-a-time loop; higher = more difficult/atypical)::

    true_logit_input_grad(model, x, y) -> Tensor   # (N,C,H,W): d logit_y / d x, batched
    vog(input_grads: Sequence[Tensor]) -> Tensor   # K>=2 checkpoints of (N,C,H,W) -> (N,)
    plis(model, x, y, sigma=1.0) -> Tensor         # (N,) spectral norm of channel-mean d PL/dx,
                                                   #      PL = ||grad_theta loss||^2 / sigma^2
    loss_scores(model, x, y) -> Tensor             # (N,) per-sample cross-entropy
    grad_norm_scores(model, x, y) -> Tensor        # (N,) per-sample param-grad L2 norm (unclipped)
    classwise_minmax(scores, labels) -> Tensor     # (N,) [0,1] within each class (display and
                                                   #      ranking only: never DP-release these)

The registry (:mod:`fedsim.valuation.registry`): one :class:`Score` object per metric,
with ``batch(checkpoints, x, y, sigma=1.0)`` and the declared properties
``needs_checkpoints`` (VoG), ``releases_variance`` (VoG) and ``requires_dp`` (PLIS)::

    SCORES.get("plis") -> Score                    # unknown names list the valid ones
    METRICS = ("vog", "plis", "loss", "grad_norm") # the registered names, report order

The stateful shell (:mod:`fedsim.valuation.tracker`)::

    t = ScoreTracker(model_name, input_shape, num_classes, x, y, batch_size=128, sigma=1.0)
    t.record_checkpoint(plain_state_dict)    # one VoG checkpoint (end of a local epoch/round)
    t.num_checkpoints                        # int
    t.vog() -> Tensor                        # (N,), needs >= 2 checkpoints
    t.scores(metric, state_dict=None)        # (N,) any metric of METRICS, in batches
    t.all_scores(state_dict, metrics=METRICS) -> dict[str, Tensor]  # vog only if >= 2 ckpts
    t.vog_state() / t.load_vog_state(d)      # the VoG accumulator as numpy arrays, to keep
                                             # in a client's state between rounds
    t.reset_checkpoints()

``x``/``y`` may be numpy arrays (e.g. a :class:`fedsim.data.Split`'s ``x``/``y``). The
tracker builds one plain model with :func:`fedsim.models.build_model` and loads each
state_dict into it (it rejects keys with Opacus' ``_module.`` prefix: pass
``clients.opacus_adapter.plain_state_dict(model)``).

Selection-consistency analysis (``fedsim analyze``): :mod:`fedsim.valuation.consistency`.
"""

from fedsim.valuation.registry import METRICS, SCORES, Score
from fedsim.valuation.scores import (
    classwise_minmax,
    grad_norm_scores,
    loss_scores,
    plis,
    true_logit_input_grad,
    vog,
)
from fedsim.valuation.tracker import ScoreTracker

__all__ = [
    "METRICS",
    "SCORES",
    "Score",
    "ScoreTracker",
    "classwise_minmax",
    "grad_norm_scores",
    "loss_scores",
    "plis",
    "true_logit_input_grad",
    "vog",
]
