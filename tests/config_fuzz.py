"""Hypothesis strategies for config input, built from the schema's own dataclasses.

:func:`configs` walks :class:`fedsim.config.Config` and its sections (their type hints
and bound metadata) and draws raw config mappings whose values are valid, on or just past
a bound, of the wrong type, non-finite, huge, or nested junk; :func:`yaml_texts` and
raw bytes cover the parser. :func:`outcome` feeds one input through the real loading and
validation path and classifies what happened. Shared by ``tests/test_config_input.py``
and ``benchmarks/fuzz_config.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from hypothesis import strategies as st

from fedsim.config import Config, load
from fedsim.errors import FedsimError

#: Anything a YAML file could hold, nested a little.
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["1:30", "yes", "off", "0777", "1_000", ".inf", "-.nan", "~", "2001-12-14"])
)
JUNK = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)


def _numbers(tp: type, meta: typing.Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Values of a numeric field: in range, on and just past each bound, extremes."""
    edges: list[Any] = []
    for key in ("ge", "gt", "le", "lt"):
        if key in meta:
            b = meta[key]
            edges += [b, b - 1, b + 1] if tp is int else [b, b * (1 - 1e-9), b * (1 + 1e-9), -b]
    if tp is int:
        extremes = [0, -1, 2**63 - 1, 2**63, -(2**63) - 1, 10**40]
        edges = [int(e) for e in edges]
        return st.sampled_from(edges + extremes) | st.integers(-1000, 10**6)
    extremes = [0.0, -0.0, 1e-320, 5e-324, 1e308, float("inf"), float("-inf"), float("nan")]
    return st.sampled_from(edges + extremes) | st.floats(allow_nan=True, allow_infinity=True)


def field_values(tp: Any, meta: typing.Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Mostly-plausible values for a field of type ``tp``, and sometimes junk."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        plausible: st.SearchStrategy[Any] = sections(typing.cast(type, tp))
    elif origin is Literal:
        plausible = st.sampled_from(typing.get_args(tp))
    elif origin in (Union, types.UnionType):
        plausible = st.one_of(
            [st.none()]
            + [field_values(a, meta) for a in typing.get_args(tp) if a is not type(None)]
        )
    elif origin in (tuple, list):
        item = typing.get_args(tp)[0]
        plausible = st.lists(field_values(item, {}), max_size=6)
    elif tp is bool:
        plausible = st.booleans()
    elif tp in (int, float):
        plausible = _numbers(tp, meta)
    elif tp is str:
        plausible = st.text(max_size=30) | st.sampled_from(["run", "../x", "/abs", ".", "a\x00b"])
    else:
        plausible = JUNK
    return st.one_of(plausible, plausible, plausible, JUNK)


def sections(cls: type) -> st.SearchStrategy[dict[str, Any]]:
    """Raw mappings for dataclass ``cls``: any subset of its fields, rarely an unknown key."""
    hints = typing.get_type_hints(cls)
    optional = {f.name: field_values(hints[f.name], f.metadata) for f in dataclasses.fields(cls)}
    known = st.fixed_dictionaries({}, optional=optional)
    unknown = st.dictionaries(st.text(max_size=8), JUNK, max_size=1)
    return st.builds(lambda a, b: {**b, **a}, known, unknown)


def configs() -> st.SearchStrategy[dict[str, Any]]:
    """Raw top-level configs (mappings) drawn from :class:`~fedsim.config.Config`."""
    return sections(Config)


def _leaf_fields(cls: type, prefix: str = "") -> list[tuple[str, Any, typing.Mapping[str, Any]]]:
    """(dotted path, type, bound metadata) of every non-section field under ``cls``."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _leaf_fields(typing.cast(type, tp), f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", tp, f.metadata))
    return out


LEAVES = _leaf_fields(Config)


def perturbed(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with one to three fields set to drawn values (often still a valid config)."""
    one = st.sampled_from(LEAVES).flatmap(
        lambda leaf: st.tuples(st.just(leaf[0]), field_values(leaf[1], leaf[2]))
    )

    def apply(changes: list[tuple[str, Any]]) -> dict[str, Any]:
        out = copy.deepcopy(base)
        for path, value in changes:
            *sections_, last = path.split(".")
            node = out
            for part in sections_:
                node = node.setdefault(part, {})
            node[last] = value
        return out

    return st.lists(one, min_size=1, max_size=3).map(apply)


def yaml_texts() -> st.SearchStrategy[str]:
    """Text made of YAML's syntax characters, digits and a few letters."""
    return st.text(alphabet=list("[]{}:,-&*!|>'\"#\n\t ?%@`~.eE+01239abnulrt_\\"), max_size=200)


def dump(raw: Any) -> str:
    """YAML text of a raw config (as a user could write it)."""
    return yaml.safe_dump(raw, allow_unicode=True)


def outcome(path: Path, overrides: typing.Sequence[str] = ()) -> tuple[str, float]:
    """Load and validate ``path`` as ``fedsim validate`` does before its preflight.

    Returns ``("ok" | "rejected" | "crash: <ExceptionType>", seconds)``; a
    :class:`~fedsim.errors.FedsimError` is a clean rejection, anything else a crash.
    """
    from fedsim.run import check_config

    start = time.perf_counter()
    try:
        check_config(load(path, overrides))
        result = "ok"
    except FedsimError:
        result = "rejected"
    except Exception as exc:  # the property under test: nothing else may escape
        result = f"crash: {type(exc).__name__}: {exc}"[:300]
    return result, time.perf_counter() - start
