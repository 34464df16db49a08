"""The client's valuation work in one round: scores, DP release, pruning decision.

:func:`clients.local_round.run_local_round` asks :func:`valuation_tasks` what is due in
this round, hands :meth:`RoundScorer.epoch_hook` to the training loop (VoG checkpoints
at the ends of local epochs, on a plain model copy) and calls :meth:`RoundScorer.finish`
after training. Scores use the client's *trained* local model of the round. With
``valuation.vog_checkpoints: rounds`` the checkpoint is taken in :meth:`RoundScorer.finish`
with the round's trained model, and VoG's running statistics (:meth:`RoundScorer.vog_state`,
indexed by the client's original sample order) stay on the client between rounds.

Privacy: the release is a Laplace mechanism (:mod:`fedsim.valuation.release`) whose
events enter the client's ledger. The pruning ranking stays on the client and is not
released; only the DP-SGD model trained afterwards leaves it. Because pruning keeps a
*quantile*, replacing one sample can move at most one other sample across the cut: the
kept sets of two replace-one neighbours are replace-one neighbours themselves, so the
later rounds are accounted as replace-one events at the new rate (README, "Privacy: what
the ε means"); under ``add_remove`` pruning is a config error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from fedsim.config import Config, ScoreMetric
from fedsim.data import Split
from fedsim.privacy import LaplaceRelease
from fedsim.seeding import numpy_rng
from fedsim.valuation.local import prune_indices
from fedsim.valuation.registry import SCORES
from fedsim.valuation.release import (
    ReleasedValuation,
    ReleasePlan,
    is_release_round,
    plan_release,
    release_valuation,
)
from fedsim.valuation.tracker import ScoreTracker


@dataclass(frozen=True)
class ValuationTasks:
    """What is due in this round: a release (with its plan) and/or the pruning decision."""

    release: ReleasePlan | None
    prune: bool
    #: ``valuation.report_metrics`` released too (reported, not paid)
    extra: tuple[tuple[ScoreMetric, ReleasePlan], ...] = ()

    def events(self) -> tuple[LaplaceRelease, ...]:
        """Ledger events of the releases (empty without one)."""
        out = () if self.release is None else self.release.events()
        for _, plan in self.extra:
            out = (*out, *plan.events())
        return out


def valuation_tasks(cfg: Config, server_round: int, already_pruned: bool) -> ValuationTasks:
    """The valuation work of a client that trains in ``server_round``."""
    val = cfg.valuation
    plan = None
    extra: list[tuple[ScoreMetric, ReleasePlan]] = []
    if val.enabled and is_release_round(server_round, val.release_rounds):
        paid = SCORES.get(val.metric)
        plan = plan_release(val.epsilon, val.bound, paid.releases_variance, val.variance_share)
        # report_metrics are released as a mean only, whatever the score
        bounds = val.report_bounds or (val.bound,) * len(val.report_metrics)
        for m, b in zip(val.report_metrics, bounds, strict=True):
            extra.append((m, plan_release(val.epsilon, b, False)))
    prune = val.prune.enabled and not already_pruned and server_round >= val.prune.warmup_rounds
    return ValuationTasks(release=plan, prune=prune, extra=tuple(extra))


def round_vog(cfg: Config) -> bool:
    """Whether VoG is used with checkpoints at the ends of rounds."""
    return cfg.valuation.uses_vog and cfg.valuation.vog_checkpoints == "rounds"


def due_metrics(cfg: Config, tasks: ValuationTasks) -> tuple[ScoreMetric, ...]:
    """Metrics to compute this round (release metric first, then the pruning metric)."""
    out: list[ScoreMetric] = []
    if tasks.release is not None:
        out.append(cfg.valuation.metric)
    for m, _ in tasks.extra:
        if m not in out:
            out.append(m)
    if tasks.prune and cfg.valuation.prune.metric not in out:
        out.append(cfg.valuation.prune.metric)
    return tuple(out)


@dataclass(frozen=True)
class ValuationResult:
    """The round's release (or ``None``) and newly dropped indices (or ``None``)."""

    released: ReleasedValuation | None
    dropped: tuple[int, ...] | None
    #: DP means of ``valuation.report_metrics``
    extra: dict[str, float] | None = None


class RoundScorer:
    """Computes the due metrics with a :class:`~fedsim.valuation.tracker.ScoreTracker`.

    Parameters
    ----------
    cfg
        The run config.
    split
        The samples the client trains on this round.
    input_shape, num_classes
        To build the tracker's plain model copy.
    metrics
        What to compute (:func:`due_metrics`); nothing happens when empty.
    sigma
        The client's DP-SGD noise multiplier (PLIS divides by σ²; 1.0 without DP).
    noise_seed
        Root seed of the release noise: ``cfg.seed`` in simulation, the site's own secret
        on a deployed site (so that the coordinator cannot reproduce the noise).
    kept
        Original indices of ``split``'s rows (the client's data minus pruned samples).
    vog_state
        VoG's running statistics from earlier rounds, over the client's original samples
        (``valuation.vog_checkpoints: rounds``; ``None`` at the first round).
    """

    def __init__(
        self,
        cfg: Config,
        split: Split,
        input_shape: tuple[int, int, int],
        num_classes: int,
        metrics: tuple[ScoreMetric, ...],
        sigma: float = 1.0,
        noise_seed: int | None = None,
        kept: np.ndarray | None = None,
        vog_state: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.cfg = cfg
        self.noise_seed = cfg.seed if noise_seed is None else noise_seed
        self.metrics = metrics
        self.by_round = round_vog(cfg)
        self.kept = np.arange(len(split)) if kept is None else np.asarray(kept)
        self.previous = vog_state
        self.tracker = (
            ScoreTracker(cfg.model.name, input_shape, num_classes, split.x, split.y, sigma=sigma)
            if metrics or self.by_round
            else None
        )
        if self.by_round and vog_state is not None and self.tracker is not None:
            count = int(np.asarray(vog_state["count"]).reshape(-1)[0])
            rows = {"count": np.asarray(vog_state["count"])}
            if count:
                rows |= {k: np.asarray(vog_state[k])[self.kept] for k in ("mean", "m2")}
            self.tracker.load_vog_state(rows)

    def epoch_hook(
        self, current_state: Callable[[], Mapping[str, torch.Tensor]]
    ) -> Callable[[int], None] | None:
        """A training-loop callback taking a VoG checkpoint (``None`` if VoG is not due)."""
        tracker = self.tracker
        checkpointed = any(SCORES.get(m).needs_checkpoints for m in self.metrics)
        if tracker is None or not checkpointed or self.by_round:
            return None

        def hook(_epoch: int) -> None:
            tracker.record_checkpoint(current_state())

        return hook

    def scores(self, trained: Mapping[str, torch.Tensor]) -> dict[ScoreMetric, np.ndarray]:
        """Raw per-sample scores of every due metric with the trained model."""
        tracker = self.tracker
        if tracker is None:
            return {}
        tracker.load(trained)

        def score(m: ScoreMetric) -> np.ndarray:
            if SCORES.get(m).needs_checkpoints and self.by_round and tracker.num_checkpoints < 2:
                # one round seen (a client that missed rounds): the spread over a single
                # checkpoint is 0 for every sample
                return np.zeros(len(tracker), dtype=np.float64)
            return tracker.scores(m).detach().cpu().numpy().astype(np.float64)

        return {m: score(m) for m in self.metrics}

    def vog_state(self) -> dict[str, np.ndarray] | None:
        """VoG's running statistics over the client's original samples, to keep for the
        next round (``None`` unless ``valuation.vog_checkpoints: rounds``)."""
        if not self.by_round or self.tracker is None:
            return None
        rows = self.tracker.vog_state()
        if int(rows["count"][0]) == 0:
            return rows
        previous = self.previous or {}
        out = {"count": rows["count"]}
        for k in ("mean", "m2"):
            # rows of pruned samples keep their old values; they are never read again
            full = np.array(previous[k]) if k in previous else np.zeros_like(rows[k])
            full[self.kept] = rows[k]
            out[k] = full
        return out

    def finish(
        self,
        tasks: ValuationTasks,
        trained: Mapping[str, torch.Tensor],
        client_id: int,
        server_round: int,
    ) -> ValuationResult:
        """Release and/or decide the pruning (dropped indices are original ones)."""
        if self.by_round and self.tracker is not None:
            self.tracker.record_checkpoint(trained)
        scores = self.scores(trained)
        released = None
        if tasks.release is not None:
            rng = numpy_rng(self.noise_seed, "valuation-release", client_id, server_round)
            released = release_valuation(scores[self.cfg.valuation.metric], tasks.release, rng)
        extra: dict[str, float] = {}
        for m, plan in tasks.extra:
            rng = numpy_rng(self.noise_seed, f"valuation-release-{m}", client_id, server_round)
            extra[m] = release_valuation(scores[m], plan, rng).mean
        dropped = None
        if tasks.prune:
            pr = self.cfg.valuation.prune
            rows = prune_indices(scores[pr.metric], pr.fraction, pr.side)
            dropped = tuple(int(i) for i in np.sort(self.kept[rows]))
        return ValuationResult(released=released, dropped=dropped, extra=extra or None)
