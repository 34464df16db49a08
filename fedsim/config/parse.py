"""Nested mapping → frozen dataclass tree, with every problem collected.

Owns the generic builder: :func:`build_dataclass` turns a nested mapping (parsed YAML)
into any tree of frozen dataclasses, checking each field against its type annotation
(``bool``, ``int``, ``float``, ``str``, ``Literal``, ``X | None``, ``tuple[X, ...]``,
nested dataclasses; integers fit in 64 bits, every float is finite) and against the
numeric bounds in its field metadata (``ge``, ``gt``, ``le``, ``lt``), and rejecting
unknown keys. It never stops at the first problem: all of
them are collected, each with its dotted path, and raised together as one
:class:`~fedsim.errors.ConfigError`. :func:`from_dict` applies it to
:class:`~fedsim.config.schema.Config` and then runs the cross-field rules of
:mod:`fedsim.config.rules`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from fedsim.config.rules import cross_checks
from fedsim.config.schema import Config
from fedsim.errors import ConfigError

_T = TypeVar("_T")


#: Longest shown value in a message (longer ones are cut, with ``...``).
_SHOWN_CHARS = 80
#: Integer fields hold 64-bit values (what NumPy and torch take as seeds and sizes).
_INT_MAX = 2**63 - 1
#: Spellings of infinity and NaN (strings under YAML 1.2; no float field accepts them).
_NON_FINITE = frozenset({"inf", "infinity", "nan"})


def describe(value: Any) -> str:
    """Show a received value in an error message (strings quoted, the rest as ``str``).

    Long values are cut to :data:`_SHOWN_CHARS` characters:

    >>> describe(list(range(30)))[-24:]
    '1, 2... (110 characters)'
    """
    text = repr(value) if isinstance(value, str) else str(value)
    if len(text) > _SHOWN_CHARS:
        return f"{text[:_SHOWN_CHARS]}... ({len(text)} characters)"
    return text


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


class _InvalidError(Exception):
    """Internal: a value failed to convert; carries a message without the path."""


class _OutOfRangeError(_InvalidError):
    """Internal: a value of the right type that no field accepts (non-finite, > 64 bits)."""


def _convert(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    """Convert ``value`` to type ``tp``, appending problems; returns the value or a sentinel."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, problems)  # type: ignore[arg-type]
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise _InvalidError(f"must be {_type_name(tp)}; got {describe(value)}")
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _InvalidError(f"must be {_type_name(tp)}; got null")
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path, problems)
            except _OutOfRangeError:
                raise
            except _InvalidError:
                continue
        raise _InvalidError(f"must be {_type_name(tp)}; got {describe(value)}")
    if origin in (tuple, list):
        (item_tp, *_rest) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise _InvalidError(f"must be a list; got {describe(value)}")
        out = []
        for i, item in enumerate(value):
            try:
                out.append(_convert(item_tp, item, f"{path}[{i}]", problems))
            except _InvalidError as exc:
                problems.append(f"{path}[{i}] {exc}")
        return tuple(out)
    if tp is bool:
        if not isinstance(value, bool):
            raise _InvalidError(f"must be true or false; got {describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _InvalidError(f"must be an integer; got {describe(value)}")
        if abs(value) > _INT_MAX:
            raise _OutOfRangeError(f"must be an integer of at most 64 bits; got {describe(value)}")
        return value
    if tp is float:
        return _finite_float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _InvalidError(f"must be a string; got {describe(value)}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # programming error


def _finite_float(value: Any) -> float:
    """``value`` as a finite float; every float field of the schema is finite."""
    if isinstance(value, str) and value.strip().lstrip("+-.").lower() in _NON_FINITE:
        raise _OutOfRangeError(f"must be a finite number; got {describe(value)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _InvalidError(f"must be a number; got {describe(value)}")
    try:
        out = float(value)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        raise _OutOfRangeError(f"must be a finite number; got {describe(value)}")
    return out


def _check_bounds(meta: Mapping[str, Any], value: Any) -> str | None:
    """The first bound in field metadata ``meta`` that ``value`` breaks, as a message."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    rules = (
        ("ge", ">=", value >= meta.get("ge", value)),
        ("gt", ">", "gt" not in meta or value > meta["gt"]),
        ("le", "<=", value <= meta.get("le", value)),
        ("lt", "<", "lt" not in meta or value < meta["lt"]),
    )
    for key, sym, ok in rules:
        if key in meta and not ok:
            return f"must be {sym} {meta[key]}; got {describe(value)}"
    return None


def _build(cls: type, raw: Any, path: str, problems: list[str]) -> Any:
    """Build dataclass ``cls`` from mapping ``raw``; problems are appended, never raised."""
    prefix = f"{path}." if path else ""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        problems.append(f"{path or 'config'} must be a mapping; got {describe(raw)}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            valid = ", ".join(sorted(fields))
            problems.append(f"{prefix}{key} is not a known key (valid: {valid})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        fpath = f"{prefix}{name}"
        if name not in raw:
            if dataclasses.is_dataclass(hints[name]):
                kwargs[name] = _build(hints[name], {}, fpath, problems)
            continue
        try:
            value = _convert(hints[name], raw[name], fpath, problems)
        except _InvalidError as exc:
            problems.append(f"{fpath} {exc}")
            continue
        bound_problem = _check_bounds(f.metadata, value)
        if bound_problem:
            problems.append(f"{fpath} {bound_problem}")
            continue
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError:  # a nested section failed; problems already recorded
        return None


def build_dataclass(cls: type[_T], raw: Any, what: str = "configuration") -> _T:
    """Build the (frozen) dataclass ``cls`` from a nested mapping, by the config's rules.

    Field types (``bool``, ``int``, ``float``, ``str``, ``Literal``, ``X | None``,
    ``tuple[X, ...]``, nested dataclasses) and numeric bounds in field metadata (``ge``,
    ``gt``, ``le``, ``lt``) are checked; unknown keys are rejected. Cross-field rules are
    the caller's.

    Raises
    ------
    ConfigError
        With every problem found, each naming its dotted path; ``what`` heads the message.
    """
    problems: list[str] = []
    built = _build(cls, raw, "", problems)
    if problems or built is None:
        raise ConfigError(problems or [f"{what} could not be built"], what)
    return typing.cast(_T, built)


def from_dict(raw: Any) -> Config:
    """Build and validate a :class:`~fedsim.config.schema.Config` from a nested mapping.

    Raises
    ------
    ConfigError
        With every problem found, each naming its dotted path.
    """
    cfg = build_dataclass(Config, raw)
    problems = cross_checks(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg
