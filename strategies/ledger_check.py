"""Pure check of the privacy ledger a client sends in its reply's status record.

The server composes a client's ledger with its own selection events into the client's
``epsilon_total``; a ledger that cannot be read, or whose events are outside what any
DP-SGD client or release can produce, must neither crash that accounting nor make it
run for hours. :func:`read_ledger` parses the JSON with every field checked and returns
the ledger or the reason it is refused; the server then keeps the client's previous
ledger and rejects the reply.

The limits (:class:`LedgerLimits`) are what an honest client stays far inside and what
keeps one event's accounting bounded: σ ≥ 0.1 (below it a Gaussian's privacy-loss
distribution needs millions of grid points, and one step alone is worth ε > 100),
pure-DP / Laplace events of ε ≤ 100 each (the accountant overflows near ε = 700), at
most 10⁷ DP-SGD steps and 10⁴ releases in all, and 10⁴ events.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from fedsim.privacy import PrivacyLedger
from fedsim.privacy.accounting import (
    DpEvent,
    EvaluationRelease,
    FunctionalMechanism,
    LaplaceRelease,
    PureDp,
    SubsampledGaussian,
)


@dataclass(frozen=True)
class LedgerLimits:
    """What a client's ledger may claim (see the module docstring)."""

    min_noise_multiplier: float = 0.1
    max_release_epsilon: float = 100.0
    max_steps: int = 10**7
    max_releases: int = 10**4
    max_events: int = 10**4
    max_chars: int = 2_000_000


@dataclass(frozen=True)
class LedgerCheck:
    """A parsed ledger, or why it was refused (exactly one is set)."""

    ledger: PrivacyLedger | None = None
    problem: str | None = None


def _real(value: Any) -> bool:
    """A JSON number (not a bool), finite (Python ints always are)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def _count(value: Any, limit: int) -> bool:
    if not _real(value):
        return False
    return (isinstance(value, int) or float(value).is_integer()) and 0 <= value <= limit


def _event(raw: Any, limits: LedgerLimits) -> DpEvent | str:
    """One event from its JSON list, or the problem with it."""
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], str):
        return f"event {raw!r:.60} is not a [kind, ...] list"
    kind, args = raw[0], raw[1:]
    if kind == "sgm":
        if len(args) != 3 or not all(_real(a) for a in args):
            return f"sgm event needs [sigma, q, steps]; got {raw!r:.80}"
        sigma, q, steps = args
        if not sigma >= limits.min_noise_multiplier:
            return f"sgm noise multiplier must be >= {limits.min_noise_multiplier}; got {sigma}"
        if not 0 < q <= 1:
            return f"sgm sample rate must be in (0, 1]; got {q}"
        if not _count(steps, limits.max_steps):
            return f"sgm steps must be an integer in [0, {limits.max_steps}]; got {steps}"
        return SubsampledGaussian(float(sigma), float(q), int(steps))
    if kind in ("laplace", "pure", "fm", "eval"):
        if len(args) != 2 or not all(_real(a) for a in args):
            return f"{kind} event needs [epsilon, count]; got {raw!r:.80}"
        eps, count = args
        if not 0 < eps <= limits.max_release_epsilon:
            return f"{kind} epsilon must be in (0, {limits.max_release_epsilon:g}]; got {eps}"
        if not _count(count, limits.max_releases):
            return f"{kind} count must be an integer in [0, {limits.max_releases}]; got {count}"
        if kind == "laplace":
            return LaplaceRelease(float(eps), int(count))
        if kind == "fm":
            return FunctionalMechanism(float(eps), int(count))
        if kind == "eval":
            return EvaluationRelease(float(eps), int(count))
        return PureDp(float(eps), int(count))
    return f"unknown privacy event kind {kind!r:.40}"


def read_ledger(text: Any, limits: LedgerLimits | None = None) -> LedgerCheck:
    """The ledger a client sent (:meth:`PrivacyLedger.to_json` text), every field checked.

    >>> read_ledger('{"sigma": 1.0, "events": [["sgm", 1.0, 0.1, 20]]}').ledger.dp_sgd_steps
    20
    >>> read_ledger('{"sigma": 1.0, "events": [["sgm", 1.0, 2.0, 20]]}').problem
    'sgm sample rate must be in (0, 1]; got 2.0'
    """
    limits = limits or LedgerLimits()
    if not isinstance(text, str):
        return LedgerCheck(problem=f"ledger must be JSON text; got {type(text).__name__}")
    if len(text) > limits.max_chars:
        return LedgerCheck(problem=f"ledger has {len(text)} characters (> {limits.max_chars})")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # not JSON, or nested beyond Python's stack
        return LedgerCheck(problem=f"ledger is not JSON: {type(exc).__name__}: {exc}"[:200])
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        return LedgerCheck(problem="ledger must be an object with an 'events' list")
    unknown = sorted(set(doc) - {"sigma", "events"})
    if unknown:
        return LedgerCheck(problem=f"ledger has unknown fields {unknown[:3]}")
    sigma = doc.get("sigma")
    if sigma is not None and not (_real(sigma) and sigma > 0):
        return LedgerCheck(problem=f"ledger sigma must be a number > 0 or null; got {sigma!r:.40}")
    raw_events = doc["events"]
    if len(raw_events) > limits.max_events:
        return LedgerCheck(problem=f"ledger has {len(raw_events)} events (> {limits.max_events})")
    events: list[DpEvent] = []
    for raw in raw_events:
        event = _event(raw, limits)
        if isinstance(event, str):
            return LedgerCheck(problem=event)
        events.append(event)
    steps = sum(e.steps for e in events if isinstance(e, SubsampledGaussian))
    releases = sum(e.count for e in events if not isinstance(e, SubsampledGaussian))
    if steps > limits.max_steps:
        return LedgerCheck(problem=f"ledger claims {steps} DP-SGD steps (> {limits.max_steps})")
    if releases > limits.max_releases:
        return LedgerCheck(problem=f"ledger claims {releases} releases (> {limits.max_releases})")
    return LedgerCheck(
        ledger=PrivacyLedger(
            noise_multiplier=None if sigma is None else float(sigma), events=tuple(events)
        )
    )
