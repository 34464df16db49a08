"""A client's privacy ledger: every DP event it took part in, composed into one ε.

The ledger is a frozen value; adding an event returns a new ledger. It serialises to a
small JSON string so that it can live in Flower's per-node ``context.state`` (simulation)
or in a state file (deployment) and survive across rounds and restarts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

from fedsim.privacy.accounting import (
    Accounting,
    DpEvent,
    EvaluationRelease,
    FunctionalMechanism,
    LaplaceRelease,
    PureDp,
    SubsampledGaussian,
)


@dataclass(frozen=True)
class PrivacyLedger:
    """All privacy events of one client.

    Attributes
    ----------
    noise_multiplier
        The client's DP-SGD σ, fixed at its first training round (``None`` before).
    events
        DP-SGD and release events in the order they happened.
    """

    noise_multiplier: float | None = None
    events: tuple[DpEvent, ...] = ()

    def with_noise_multiplier(self, sigma: float) -> PrivacyLedger:
        """Fix σ (only once)."""
        if self.noise_multiplier is not None and self.noise_multiplier != sigma:
            raise ValueError("the noise multiplier of a client is fixed once")
        return replace(self, noise_multiplier=sigma)

    def with_event(self, event: DpEvent) -> PrivacyLedger:
        """Append ``event``; consecutive DP-SGD events with equal (σ, q) are merged."""
        if (
            isinstance(event, SubsampledGaussian)
            and self.events
            and isinstance(self.events[-1], SubsampledGaussian)
            and self.events[-1].noise_multiplier == event.noise_multiplier
            and self.events[-1].sample_rate == event.sample_rate
        ):
            last = self.events[-1]
            merged = replace(last, steps=last.steps + event.steps)
            return replace(self, events=(*self.events[:-1], merged))
        return replace(self, events=(*self.events, event))

    @property
    def dp_sgd_steps(self) -> int:
        """Total DP-SGD steps taken."""
        return sum(e.steps for e in self.events if isinstance(e, SubsampledGaussian))

    def dp_sgd_events(self) -> tuple[SubsampledGaussian, ...]:
        """The DP-SGD part of the ledger."""
        return tuple(e for e in self.events if isinstance(e, SubsampledGaussian))

    def epsilon_dp_sgd(self, accounting: Accounting) -> float:
        """ε of the DP-SGD steps alone."""
        return accounting.epsilon(self.dp_sgd_events())

    def training_events(self) -> tuple[DpEvent, ...]:
        """The events of the client's private training: DP-SGD steps and functional-
        mechanism epochs (not its valuation releases)."""
        return tuple(
            e for e in self.events if isinstance(e, SubsampledGaussian | FunctionalMechanism)
        )

    def epsilon_training(self, accounting: Accounting) -> float:
        """ε of the client's private training alone (DP-SGD or the functional mechanism)."""
        return accounting.epsilon(self.training_events())

    def evaluation_events(self) -> tuple[EvaluationRelease, ...]:
        """The releases of the client's per-site evaluations."""
        return tuple(e for e in self.events if isinstance(e, EvaluationRelease))

    def with_events(self, events: Sequence[DpEvent]) -> PrivacyLedger:
        """Append every event of ``events`` in order (see :meth:`with_event`)."""
        ledger = self
        for event in events:
            ledger = ledger.with_event(event)
        return ledger

    def epsilon_total(self, accounting: Accounting) -> float:
        """ε of every event in the ledger, composed."""
        return accounting.epsilon(self.events)

    # ------------------------------------------------------------------ serialisation
    def to_json(self) -> str:
        """Compact JSON, the inverse of :meth:`from_json`."""
        evs = []
        for e in self.events:
            if isinstance(e, SubsampledGaussian):
                evs.append(["sgm", e.noise_multiplier, e.sample_rate, e.steps])
            elif isinstance(e, FunctionalMechanism):
                evs.append(["fm", e.epsilon, e.count])
            elif isinstance(e, PureDp):
                evs.append(["pure", e.epsilon, e.count])
            elif isinstance(e, EvaluationRelease):
                evs.append(["eval", e.epsilon, e.count])
            else:
                evs.append(["laplace", e.epsilon, e.count])
        return json.dumps({"sigma": self.noise_multiplier, "events": evs})

    @classmethod
    def from_json(cls, text: str) -> PrivacyLedger:
        """Parse a ledger written by :meth:`to_json`."""
        doc = json.loads(text)
        events: list[DpEvent] = []
        for ev in doc["events"]:
            if ev[0] == "sgm":
                events.append(SubsampledGaussian(float(ev[1]), float(ev[2]), int(ev[3])))
            elif ev[0] == "laplace":
                events.append(LaplaceRelease(float(ev[1]), int(ev[2])))
            elif ev[0] == "pure":
                events.append(PureDp(float(ev[1]), int(ev[2])))
            elif ev[0] == "eval":
                events.append(EvaluationRelease(float(ev[1]), int(ev[2])))
            elif ev[0] == "fm":
                events.append(FunctionalMechanism(float(ev[1]), int(ev[2])))
            else:
                raise ValueError(f"unknown privacy event kind {ev[0]!r}")
        sigma = doc.get("sigma")
        return cls(noise_multiplier=None if sigma is None else float(sigma), events=tuple(events))
