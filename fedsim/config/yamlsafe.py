"""A restricted YAML reader for configuration text: plain data, YAML 1.2 scalars, bounded.

Owns :func:`safe_load`, the one place where config text becomes Python values. It reads
with PyYAML's safe loader narrowed to what a config needs, so that no file (or
``-o key=value`` override) can surprise or overwhelm it:

- **YAML 1.2 core scalars.** Only ``true``/``false``, ``null``/``~`` (and empty),
  decimal integers (no leading zeros) and decimal floats (``0.5``, ``1e-5``, ``.5``)
  are converted; everything else is a string. So ``1:30``, ``yes``, ``off``, ``0777``,
  ``1_000``, ``.inf``, ``.nan`` and dates stay strings — and a numeric field then says
  it wants a number — instead of YAML 1.1's 90, True, False, 511, 1000, ∞, NaN, dates.
- **No anchors, aliases or tags** (``&a``, ``*a``, ``!!binary``): a config has no use for
  them, and aliases are how a few lines expand to gigabytes (the "billion laughs").
- **No duplicate keys**: the error names the key and its line.
- **Bounded**: at most :data:`MAX_DEPTH` levels of nesting and :data:`MAX_NODES` values,
  integers of at most :data:`MAX_INT_DIGITS` digits.

Every violation is a :class:`yaml.YAMLError` carrying the line and column; callers turn
it into a :class:`~fedsim.errors.ConfigError` naming the file or the override.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent, CollectionStartEvent, NodeEvent
from yaml.nodes import MappingNode, Node

#: Deepest nesting of mappings and lists (a config uses 4).
MAX_DEPTH = 32
#: Most values (scalars, lists, mappings) in one document (a config uses ~150).
MAX_NODES = 100_000
#: Longest integer, in digits (a config's largest is a 64-bit seed: 19 digits).
MAX_INT_DIGITS = 30

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"

_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL_RE = re.compile(r"^(?:~|null|Null|NULL|)$")
_INT_RE = re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$")
_FLOAT_RE = re.compile(r"^[-+]?(?:\.[0-9]+|(?:0|[1-9][0-9]*)(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")


def _refuse(problem: str, mark: Any) -> ComposerError:
    """The error for a node the config rules refuse, at ``mark``."""
    return ComposerError(None, None, problem, mark)


class _Composer(yaml.composer.Composer):
    """Builds the node graph, refusing aliases, anchors, tags, deep nesting, huge size."""

    _depth = 0
    _nodes = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event: Any = self.peek_event()  # type: ignore[attr-defined]  # Parser's, in _Loader
        if isinstance(event, AliasEvent):
            raise _refuse("aliases (*name) are not allowed in a config", event.start_mark)
        if isinstance(event, NodeEvent) and event.anchor is not None:
            raise _refuse("anchors (&name) are not allowed in a config", event.start_mark)
        tag = getattr(event, "tag", None)
        if tag is not None:
            raise _refuse(f"tags ({tag}) are not allowed in a config", event.start_mark)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _refuse(f"a config holds at most {MAX_NODES} values", event.start_mark)
        nested = isinstance(event, CollectionStartEvent)
        if nested:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise _refuse(
                    f"a config nests at most {MAX_DEPTH} levels of mappings and lists",
                    event.start_mark,
                )
        try:
            return super().compose_node(parent, index)
        finally:
            if nested:
                self._depth -= 1


class _Resolver(yaml.resolver.Resolver):
    """YAML 1.2 core-schema scalars, decimal only (see the module docstring)."""

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012  # PyYAML's class table


for _tag, _regexp, _first in (
    (_BOOL, _BOOL_RE, list("tTfF")),
    (_NULL, _NULL_RE, ["~", "n", "N", ""]),
    (_INT, _INT_RE, list("-+0123456789")),
    (_FLOAT, _FLOAT_RE, list("-+.0123456789")),
):
    _Resolver.add_implicit_resolver(_tag, _regexp, _first)


class _Constructor(yaml.constructor.SafeConstructor):
    """Strings, decimal numbers, booleans, null, lists and mappings without duplicate keys."""

    yaml_constructors: ClassVar[dict[Any, Any]] = {}  # PyYAML's class table

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, MappingNode):
            raise ConstructorError(None, None, "expected a mapping", node.start_mark)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool | type(None)):
                raise ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    "keys must be plain scalars",
                    key_node.start_mark,
                )
            if key in out:
                raise ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            out[key] = self.construct_object(value_node, deep=deep)
        return out

    def construct_yaml_int(self, node: Node) -> int:
        text = str(self.construct_scalar(node))  # type: ignore[arg-type]
        if len(text.lstrip("+-")) > MAX_INT_DIGITS:
            raise ConstructorError(
                None, None, f"integers have at most {MAX_INT_DIGITS} digits", node.start_mark
            )
        return int(text)

    def construct_yaml_float(self, node: Node) -> float:
        return float(str(self.construct_scalar(node)))  # type: ignore[arg-type]

    def construct_yaml_bool(self, node: Node) -> bool:
        return str(self.construct_scalar(node)).lower() == "true"  # type: ignore[arg-type]


_Constructor.yaml_constructors.update(
    {
        _STR: _Constructor.construct_yaml_str,
        _INT: _Constructor.construct_yaml_int,
        _FLOAT: _Constructor.construct_yaml_float,
        _BOOL: _Constructor.construct_yaml_bool,
        _NULL: _Constructor.construct_yaml_null,
        _SEQ: _Constructor.construct_yaml_seq,
        _MAP: _Constructor.construct_yaml_map,
    }
)


class _Loader(
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    _Composer,
    _Constructor,
    _Resolver,
):
    """PyYAML's loader pipeline with the restricted composer, constructor and resolver."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        _Composer.__init__(self)
        _Constructor.__init__(self)
        _Resolver.__init__(self)


def explain(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: what went wrong and where (line and column, 1-based).

    >>> try:
    ...     safe_load("a: 1\\na: 2")
    ... except yaml.YAMLError as exc:
    ...     print(explain(exc))
    duplicate key 'a' at line 2, column 1 (while reading a mapping at line 1, column 1)
    """
    if not isinstance(exc, yaml.MarkedYAMLError):
        return " ".join(str(exc).replace('"<unicode string>", ', "").split())

    def where(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""

    text = exc.problem or "invalid YAML"
    if exc.problem_mark is not None:
        text += f" at {where(exc.problem_mark)}"
    if exc.context:
        text += f" ({exc.context}"
        text += f" at {where(exc.context_mark)})" if exc.context_mark is not None else ")"
    return text


def safe_load(text: str) -> Any:
    """Parse one YAML document of config text by the rules in the module docstring.

    Raises
    ------
    yaml.YAMLError
        If the text is not valid YAML or breaks one of those rules (with its position).
    """
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
