"""Aggregation guards of the round template: what a round does when its rule cannot run
as designed, or its result must not become the global model.

- Too few updates for the rule (:meth:`~strategies.base.FedsimStrategy.min_updates`:
  Krum and MultiKrum need ``2f + 3``, Bulyan ``4f + 3``; one rejected reply in a cohort of
  exactly that size is enough to fall short): :func:`fallback` aggregates the
  coordinate-wise median of the accepted updates when at least ``2f + 1`` remain — the
  median's breakdown point is ½, so it still tolerates the ``f`` malicious updates the
  rule was configured for (Yin et al., ICML 2018), and it is the limit of Bulyan's own
  second stage — and keeps the global model otherwise.
- A non-finite (or mis-shaped) aggregate: :func:`guarded` keeps the global model.

Both say why in the round's entry (``aggregation_note`` in ``metrics.jsonl``) and the log;
``selected`` then lists the updates the median used, or nothing when the global model is
kept. Rounds whose rule runs normally are untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord

from fedsim import keys
from strategies.uploads import aggregate_problem, coordinate_median

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundOutcome:
    """A round's aggregate, the clients whose updates it used, and why it departs from
    the rule (``note``; ``None`` for a normal round). ``arrays is None``: the global
    model is kept."""

    arrays: ArrayRecord | None = None
    metrics: MetricRecord | None = None
    used: tuple[int, ...] = ()
    note: str | None = None


def _arrays(msg: Message) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in msg.content.array_records[keys.ARRAYS].items()}


def array_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord of NumPy arrays (the server's aggregates and releases)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def fallback(
    chosen: Sequence[tuple[int, Message]],
    need: int,
    num_malicious: int,
    rule: str,
    reference: dict[str, np.ndarray],
) -> RoundOutcome:
    """The round's outcome when ``rule`` needs ``need`` updates and fewer were accepted."""
    f, m = num_malicious, len(chosen)
    why = f"{rule} needs {need} updates to tolerate f = {f}; {m} accepted"
    if m < 2 * f + 1:
        return RoundOutcome(note=f"{why}, fewer than 2f + 1 = {2 * f + 1}: global model kept")
    median = coordinate_median([_arrays(msg) for _, msg in chosen])
    arrays = array_record(median)
    used = tuple(cid for cid, _ in chosen)
    return guarded(
        RoundOutcome(arrays, None, used, f"{why}: aggregated with the coordinate-wise median"),
        reference,
    )


def guarded(outcome: RoundOutcome, reference: dict[str, np.ndarray]) -> RoundOutcome:
    """``outcome``, or — if its aggregate is missing, non-finite or mis-shaped — the
    global model kept, with the reason."""
    if outcome.arrays is None:
        if not outcome.used:
            return outcome
        return RoundOutcome(note="the rule produced no aggregate: global model kept")
    problem = aggregate_problem({k: a.numpy() for k, a in outcome.arrays.items()}, reference)
    if problem is None:
        return outcome
    return RoundOutcome(note=f"{problem}: global model kept")


def common_metric_keys(chosen: Sequence[tuple[int, Message]]) -> tuple[str, ...]:
    """Make the chosen replies' MetricRecords share their keys (Flower's rules refuse to
    average records with different keys); returns the keys dropped.

    Replies are already checked, so every key is a known metric; they differ only if
    some clients send an optional metric that others do not. The replies' records were
    written before, so only Flower's averaged train metrics lose those keys.
    """
    if not chosen:
        return ()
    key_sets = [set(msg.content.metric_records[keys.METRICS]) for _, msg in chosen]
    common = set.intersection(*key_sets)
    dropped = sorted(set.union(*key_sets) - common)
    for _, msg in chosen:
        record = msg.content.metric_records[keys.METRICS]
        for key in dropped:
            if key in record:
                del record[key]
    return tuple(dropped)
