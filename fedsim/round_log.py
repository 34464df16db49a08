"""The one owner of what happened in each round.

The ServerApp creates one :class:`RoundLog` per run and hands it to the strategy it
builds. The strategy reports each round to it exactly twice — the cohort it sampled
(:meth:`RoundLog.sampled`) and the finished round (:meth:`RoundLog.close`, a frozen
:class:`RoundEntry`) — and the ServerApp reads it to write ``metrics.jsonl`` and
``summary.json``. Nothing else keeps per-round bookkeeping, so a new strategy (or a
wrapper such as central DP) has one place to report to and one frozen value to build.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from fedsim.records import ClientRoundRecord, SiteEvaluation


@dataclass(frozen=True)
class RoundEntry:
    """One finished round as the server saw it.

    Attributes
    ----------
    round
        The server round (1-based).
    sampled
        Client ids the round's instruction went to.
    selected
        Client ids whose updates the aggregation rule used.
    clients
        One record per sampled client (and any other client that replied).
    selection_epsilon
        ε a private selection rule spent this round (``None``: no private selection).
    aggregation_note
        Why the round's aggregate is not the rule's own (too few updates for the rule:
        a fallback, or the global model kept; a non-finite aggregate discarded);
        ``None`` for a normal round.
    site_evaluation
        The sites' evaluation of the round's global model (``evaluation.federated``;
        reported by :mod:`strategies.site_eval` after the round closed).
    """

    round: int
    sampled: tuple[int, ...] = ()
    selected: tuple[int, ...] = ()
    clients: tuple[ClientRoundRecord, ...] = field(default_factory=tuple)
    selection_epsilon: float | None = None
    aggregation_note: str | None = None
    site_evaluation: SiteEvaluation | None = None


class RoundLog:
    """Round entries of one run, in the order the rounds happened."""

    def __init__(self) -> None:
        self._sampled: dict[int, tuple[int, ...]] = {}
        self._entries: dict[int, RoundEntry] = {}
        self._site_evaluations: dict[int, SiteEvaluation] = {}

    def sampled(self, server_round: int, client_ids: tuple[int, ...]) -> None:
        """Record the cohort of ``server_round`` (before its replies arrive)."""
        self._sampled[server_round] = tuple(client_ids)

    def cohort(self, server_round: int) -> tuple[int, ...]:
        """The cohort recorded for ``server_round`` (empty if none)."""
        return self._sampled.get(server_round, ())

    def close(self, entry: RoundEntry) -> None:
        """Record the finished round ``entry.round`` (once)."""
        if entry.round in self._entries:
            raise ValueError(f"round {entry.round} was already closed")
        self._entries[entry.round] = entry

    def evaluated(self, server_round: int, evaluation: SiteEvaluation) -> None:
        """Record the sites' evaluation of the global model after ``server_round``."""
        self._site_evaluations[server_round] = evaluation

    def entry(self, server_round: int) -> RoundEntry:
        """The round's entry (with its site evaluation); a round that was never closed
        (nobody trained) has its cohort and nothing else."""
        closed = self._entries.get(server_round)
        entry = (
            closed if closed is not None else RoundEntry(server_round, self.cohort(server_round))
        )
        evaluation = self._site_evaluations.get(server_round)
        return entry if evaluation is None else replace(entry, site_evaluation=evaluation)

    def site_evaluations(self) -> Mapping[int, SiteEvaluation]:
        """Per evaluated round, the sites' evaluation, in round order."""
        return dict(sorted(self._site_evaluations.items()))

    def restore(self, entries: tuple[RoundEntry, ...]) -> None:
        """Take the completed rounds of an interrupted run (``fedsim run --resume``)."""
        for entry in entries:
            self._sampled[entry.round] = entry.sampled
            self._entries[entry.round] = entry
            if entry.site_evaluation is not None:
                self._site_evaluations[entry.round] = entry.site_evaluation

    def rounds(self) -> tuple[int, ...]:
        """Closed rounds, in order."""
        return tuple(sorted(self._entries))

    def client_records(self) -> Mapping[int, tuple[ClientRoundRecord, ...]]:
        """Per closed round, its client records (the input of the run summary)."""
        return {r: self._entries[r].clients for r in self.rounds()}

    def selection_epsilons(self) -> Mapping[int, float]:
        """Per round, the ε a private selection spent (rounds without one are absent)."""
        return {
            r: e.selection_epsilon
            for r, e in sorted(self._entries.items())
            if e.selection_epsilon is not None
        }
