"""Pure checks of a client's train reply, applied by every strategy before any arithmetic.

A bad reply from one client never ends a run: every field is checked here — the records
it carries, the status record (code, reason, ledger), every metric against its domain,
the aggregation weight, the client id, and the uploaded arrays
(:mod:`strategies.uploads`) — and a reply failing any check is *rejected* with a reason
that is logged and written to ``metrics.jsonl`` (``clients.<id>.rejected_reason``). Only
values that passed their check reach a record: a NaN ε is a rejection reason, never a NaN
in ``metrics.jsonl``.

Rules (examples below; the catalogue of hostile replies in ``tests/test_hostile_replies.py``):

- records: exactly the ArrayRecord ``arrays`` and the MetricRecord ``metrics``, and at
  most the ConfigRecord ``status`` (a refusal or an exhausted budget carries no arrays);
- status: ``code`` is one of the client codes, ``reason`` and ``ledger`` are text, no
  other field; the ledger is read by :func:`strategies.ledger_check.read_ledger`;
- metrics: only the keys of :data:`METRIC_DOMAINS` (and ``valuation-<metric>``), each a
  single finite number (not a bool, list or text) in its domain;
- weight: ``num-examples`` a whole number in ``[1, n]`` where n is the size the client
  declared when it joined (else :data:`MAX_COUNT`); ``unit-weight`` exactly 1;
- ``client-id``, when sent, is the id of the node that sent the reply.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsim import keys
from fedsim.privacy import PrivacyLedger
from fedsim.records import ClientRoundRecord
from strategies.ledger_check import LedgerLimits, read_ledger
from strategies.uploads import MAX_STEP_RATIO, update_problem

#: Largest count (examples, steps, ids) a reply may claim: what a signed 32-bit count
#: holds, far beyond any client's data or a run's steps.
MAX_COUNT = 2**31 - 1

#: Status codes a client may send.
STATUS_CODES = (keys.STATUS_OK, keys.STATUS_BUDGET_EXHAUSTED, keys.STATUS_REFUSED)
_STATUS_FIELDS = frozenset({keys.STATUS_CODE, keys.STATUS_REASON, keys.STATUS_LEDGER})


@dataclass(frozen=True)
class Domain:
    """The values one numeric reply field may take: ``[low, high]``, maybe whole."""

    low: float = -math.inf
    high: float = math.inf
    integral: bool = False

    def problem(self, name: str, value: Any) -> str | None:
        """Why ``value`` is not in the domain (``None``: it is).

        >>> Domain(0, 10, integral=True).problem("metric steps", 2.5)
        'metric steps must be an integer in [0, 10]; got 2.5'
        >>> Domain(0).problem("metric epsilon", float("nan"))
        'metric epsilon must be a finite number >= 0; got nan'
        """
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number; got {type(value).__name__} {value!r:.40}"
        finite = isinstance(value, int) or math.isfinite(value)  # ints never overflow here
        whole = isinstance(value, int) or (finite and float(value).is_integer())
        if finite and self.low <= value <= self.high and (whole or not self.integral):
            return None
        return f"{name} must be {self.describe()}; got {value!r:.40}"

    def describe(self) -> str:
        """The domain in words, e.g. ``an integer in [0, 10]``."""
        if self.integral:
            return f"an integer in [{self.low:.0f}, {self.high:.0f}]"
        if self.low == self.high:
            return f"exactly {self.low:g}"
        if math.isinf(self.low) and math.isinf(self.high):
            return "a finite number"
        if math.isinf(self.high):
            return f"a finite number >= {self.low:g}"
        return f"a number in [{self.low:g}, {self.high:g}]"


_COUNT = Domain(0, MAX_COUNT, integral=True)
_NONNEGATIVE = Domain(0)
#: Every metric a train reply may carry, and its domain (``valuation-<metric>``: finite).
METRIC_DOMAINS: Mapping[str, Domain] = {
    keys.CLIENT_ID: _COUNT,
    keys.NUM_EXAMPLES: _COUNT,
    keys.UNIT_WEIGHT: Domain(1, 1),
    keys.TRAIN_LOSS: _NONNEGATIVE,
    keys.TRAIN_SECONDS: _NONNEGATIVE,
    keys.EPSILON: _NONNEGATIVE,
    keys.EPSILON_TOTAL: _NONNEGATIVE,
    keys.DELTA: Domain(0, 1),
    keys.RELATION: Domain(min(keys.RELATION_NAMES), max(keys.RELATION_NAMES), integral=True),
    keys.NOISE_MULTIPLIER: _NONNEGATIVE,
    keys.SAMPLE_RATE: Domain(0, 1),
    keys.STEPS: _COUNT,
    keys.VALUATION: Domain(),
    keys.VALUATION_VARIANCE: _NONNEGATIVE,
    keys.VALUATION_EPSILON: _NONNEGATIVE,
    keys.NUM_PRUNED: _COUNT,
}
_EXTRA_VALUATION = keys.extra_valuation("")


def metric_domain(key: str) -> Domain | None:
    """The domain of a reply metric (``None``: not a metric a client sends)."""
    if key in METRIC_DOMAINS:
        return METRIC_DOMAINS[key]
    return Domain() if key.startswith(_EXTRA_VALUATION) else None


@dataclass(frozen=True)
class MetricCheck:
    """The metrics that passed their check, and the problems with the others."""

    values: Mapping[str, int | float] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def check_metrics(metrics: Mapping[str, Any]) -> MetricCheck:
    """Split a reply's metrics into checked values and problems (every key is looked at).

    >>> check_metrics({"steps": 3, "epsilon": float("inf"), "x": 1}).problems[0]
    'metric epsilon must be a finite number >= 0; got inf'
    """
    values: dict[str, int | float] = {}
    problems: list[str] = []
    for key, value in metrics.items():
        domain = metric_domain(str(key))
        if domain is None:
            problems.append(f"unexpected metric {str(key)!r:.60}")
            continue
        problem = domain.problem(f"metric {key}", value)
        if problem is not None:
            problems.append(problem)
        else:
            values[key] = int(value) if domain.integral else float(value)
    return MetricCheck(values, tuple(problems))


def weight_problem(key: str, value: Any, declared: int | None) -> str | None:
    """Why an aggregation weight is unusable (``None``: it is usable).

    ``num-examples`` must be a whole number in ``[1, declared]`` (the size the client
    declared when it joined, :data:`MAX_COUNT` if unknown); ``unit-weight`` exactly 1.

    >>> weight_problem("num-examples", 30, declared=20)
    'metric num-examples must be an integer in [1, 20]; got 30'
    >>> weight_problem("num-examples", None, declared=20)
    'metric num-examples is missing'
    """
    if value is None:
        return f"metric {key} is missing"
    if key == keys.UNIT_WEIGHT:
        return Domain(1, 1).problem(f"metric {key}", value)
    high = MAX_COUNT if declared is None else min(declared, MAX_COUNT)
    return Domain(1, high, integral=True).problem(f"metric {key}", value)


@dataclass(frozen=True)
class Status:
    """A reply's status record, checked (``code`` is one of :data:`STATUS_CODES`)."""

    code: str = keys.STATUS_OK
    reason: str | None = None
    ledger_text: str | None = None


def read_status(record: Mapping[str, Any] | None) -> Status | str:
    """The checked status record (a missing record means ``ok``), or the problem.

    >>> read_status({"reason": "x"})
    "status record has no 'code'"
    >>> read_status({"code": "refused", "reason": "policy"}).code
    'refused'
    """
    if record is None:
        return Status()
    unknown = sorted(str(k) for k in record if k not in _STATUS_FIELDS)
    if unknown:
        return f"status record has unexpected fields {unknown[:3]}"
    if keys.STATUS_CODE not in record:
        return f"status record has no {keys.STATUS_CODE!r}"
    code, reason = record[keys.STATUS_CODE], record.get(keys.STATUS_REASON)
    ledger = record.get(keys.STATUS_LEDGER)
    if not isinstance(code, str) or code not in STATUS_CODES:
        return f"status code must be one of {list(STATUS_CODES)}; got {code!r:.40}"
    for name, value in ((keys.STATUS_REASON, reason), (keys.STATUS_LEDGER, ledger)):
        if value is not None and not isinstance(value, str):
            return f"status {name} must be text; got {type(value).__name__}"
    return Status(code, reason, ledger)


def records_problem(
    arrays: Collection[str], metrics: Collection[str], configs: Collection[str], *, trained: bool
) -> str | None:
    """Why a reply's records are not the expected ones (names of each record kind).

    >>> records_problem(["arrays"], ["metrics"], ["status", "extra"], trained=True)
    "reply has unexpected ConfigRecords ['extra']"
    """
    if list(metrics) != [keys.METRICS]:
        return f"reply must carry exactly one MetricRecord named 'metrics'; got {sorted(metrics)}"
    if set(configs) - {keys.STATUS}:
        return f"reply has unexpected ConfigRecords {sorted(set(configs) - {keys.STATUS})[:3]}"
    if trained and list(arrays) != [keys.ARRAYS]:
        return f"reply must carry exactly one ArrayRecord named 'arrays'; got {sorted(arrays)}"
    if not trained and arrays:
        return f"a reply without training carries ArrayRecords {sorted(arrays)[:3]}"
    return None


@dataclass(frozen=True)
class ReplyRules:
    """What a reply is checked against this round (see :func:`check_reply`)."""

    reference: Mapping[str, np.ndarray]
    reference_norm: float
    weight_key: str
    client_id: int
    declared_examples: int | None = None
    ledger_limits: LedgerLimits = field(default_factory=LedgerLimits)
    #: bound on an upload's step relative to the global model (``inf``: none, where every
    #: update is clipped anyway, as under central DP)
    max_step_ratio: float = MAX_STEP_RATIO


@dataclass(frozen=True)
class Verdict:
    """What the server makes of one reply.

    ``status`` is the client's code if the reply is well formed, else ``rejected``;
    ``metrics`` holds only checked values; ``ledger`` is the client's checked ledger (kept
    even when the upload is rejected: the client spent that privacy anyway).
    """

    status: str
    metrics: Mapping[str, int | float] | None
    reason: str | None = None
    ledger: PrivacyLedger | None = None
    update: Mapping[str, np.ndarray] | None = None


def check_reply(
    arrays: Mapping[str, Mapping[str, Any]],
    metrics: Mapping[str, Mapping[str, Any]],
    configs: Mapping[str, Mapping[str, Any]],
    rules: ReplyRules,
    decode: Callable[[Any], Mapping[str, np.ndarray]],
) -> Verdict:
    """Every check of one reply, in order; the first problem rejects it.

    ``arrays`` / ``metrics`` / ``configs`` are the reply's records by name (Flower's
    ``content.array_records`` etc.); ``decode(array_record)`` turns the ArrayRecord into
    NumPy arrays, and may raise (then the reply is rejected with the error).
    """
    status = read_status(configs.get(keys.STATUS))
    raw = metrics.get(keys.METRICS)
    checked = check_metrics(raw) if raw is not None else MetricCheck()
    if isinstance(status, str):
        return Verdict("rejected", checked.values, status)
    trained = status.code == keys.STATUS_OK
    problem = records_problem(arrays, metrics, configs, trained=trained)
    if problem is not None:
        return Verdict("rejected", checked.values, problem)
    if not trained:  # a refusal or an exhausted budget: recorded, never aggregated
        return Verdict(status.code, checked.values, status.reason or status.code)
    ledger = None
    if status.ledger_text is not None:
        read = read_ledger(status.ledger_text, rules.ledger_limits)
        if read.problem is not None:
            return Verdict("rejected", checked.values, f"privacy ledger refused: {read.problem}")
        ledger = read.ledger
    weight = raw.get(rules.weight_key) if raw else None
    problem = _first(
        checked.problems,
        weight_problem(rules.weight_key, weight, rules.declared_examples),
        _client_id_problem(checked.values.get(keys.CLIENT_ID), rules.client_id),
    )
    if problem is not None:
        return Verdict("rejected", checked.values, problem, ledger)
    try:
        update = decode(arrays[keys.ARRAYS])
    except Exception as exc:  # any undecodable payload is the client's fault: rejected
        return Verdict("rejected", checked.values, f"arrays cannot be decoded: {exc}"[:300], ledger)
    problem = update_problem(update, rules.reference, rules.reference_norm, rules.max_step_ratio)
    if problem is not None:
        return Verdict("rejected", checked.values, problem, ledger)
    return Verdict(keys.STATUS_OK, checked.values, None, ledger, update)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAISED = re.compile(r"^([\w.]*(?:Error|Exception|Interrupt|Exit))(?:\([\w.]+\))?: (\S.*)$")


def client_error_text(reason: str | None, limit: int = 300) -> str:
    """The line that says what went wrong in a client's error reply (Flower sends a whole
    traceback, with terminal colours): the first ``SomeError: message`` line, else the
    first line; at most ``limit`` characters.

    >>> client_error_text("ray::Actor.run()\\n  File x\\nfoo.BarError: disk gone\\nmore")
    'foo.BarError: disk gone'
    """
    text = _ANSI.sub("", (reason or "").replace("\\n", "\n"))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in lines:
        if _RAISED.match(line):
            return line[:limit]
    return (lines[0] if lines else "no reason given")[:limit]


def _first(problems: tuple[str, ...], *more: str | None) -> str | None:
    found = [*problems, *(p for p in more if p is not None)]
    if not found:
        return None
    return found[0] if len(found) == 1 else f"{found[0]} (and {len(found) - 1} more)"


def _client_id_problem(sent: int | float | None, client_id: int) -> str | None:
    if sent is None or sent == client_id:
        return None
    return f"metric {keys.CLIENT_ID} is {sent:g} but the reply came from client {client_id}"


def record_from_metrics(
    client_id: int,
    status: str,
    metrics: Mapping[str, int | float] | None,
    reason: str | None = None,
) -> ClientRoundRecord:
    """A :class:`ClientRoundRecord` from a reply's *checked* metrics
    (:attr:`Verdict.metrics`); a value that failed its check is simply absent."""
    m = metrics or {}
    epsilon = m.get(keys.EPSILON)
    code = m.get(keys.RELATION)
    relation = None if epsilon is None or code is None else keys.RELATION_NAMES[int(code)]

    def whole(key: str) -> int | None:
        value = m.get(key)
        return None if value is None else int(value)

    return ClientRoundRecord(
        client_id=client_id,
        status=status,  # type: ignore[arg-type]
        num_examples=whole(keys.NUM_EXAMPLES) if metrics is not None else 0,
        train_loss=m.get(keys.TRAIN_LOSS),
        epsilon=epsilon,
        epsilon_total=m.get(keys.EPSILON_TOTAL),
        delta=m.get(keys.DELTA),
        relation=relation,
        noise_multiplier=m.get(keys.NOISE_MULTIPLIER),
        sample_rate=m.get(keys.SAMPLE_RATE),
        steps=whole(keys.STEPS),
        train_seconds=m.get(keys.TRAIN_SECONDS),
        rejected_reason=reason,
        valuation=m.get(keys.VALUATION),
        valuation_variance=m.get(keys.VALUATION_VARIANCE),
        valuation_epsilon=m.get(keys.VALUATION_EPSILON),
        num_pruned=whole(keys.NUM_PRUNED),
    )
