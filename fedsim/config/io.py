"""YAML in and out: reading config files, ``key=value`` overrides, serialisation.

Owns the text side of the configuration: :func:`read_yaml` reads a YAML mapping (with
``1e-5`` read as a float, as YAML 1.2 does), :func:`parse_override` and
:func:`apply_overrides` apply dotted ``key=value`` overrides to the raw mapping,
:func:`load` chains them with validation, and :func:`to_yaml` writes a resolved
:class:`~fedsim.config.schema.Config` back out (the run directory's ``config.yaml``).
I/O and YAML syntax errors become :class:`~fedsim.errors.ConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fedsim.config.parse import describe, from_dict
from fedsim.config.schema import Config
from fedsim.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """YAML 1.1 loader that also reads ``1e-5`` (no dot) as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"dp.epsilon=2"`` into ``("dp.epsilon", 2.0)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError([f"override must look like key=value; got {text!r}"])
    key, _, value = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError([f"override must look like key=value; got {text!r}"])
    try:
        parsed = _yaml_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted ``key=value`` overrides applied.

    Missing sections on the way to a key are created; ``raw`` is left untouched.

    Raises
    ------
    ConfigError
        If an override is not ``key=value`` or a dotted key passes through a value that
        is not a section (every such override at once).
    """
    out: dict[str, Any] = copy_raw(raw)
    problems = []
    for text in overrides:
        key, value = parse_override(text)
        node: Any = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(
                    f"override {key}: {'.'.join(parts[: i + 1])} is not a section; "
                    f"got {describe(child)}"
                )
                break
            node = child
        else:
            node[parts[-1]] = value
    if problems:
        raise ConfigError(problems)
    return out


def copy_raw(raw: Any) -> Any:
    """Copy a raw (parsed-YAML) config tree: mappings become new dicts, lists new lists.

    Other values (scalars, tuples) are shared, so the copy can be edited section by
    section without touching ``raw``.
    """
    if isinstance(raw, Mapping):
        return {k: copy_raw(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [copy_raw(v) for v in raw]
    return raw


def read_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Read a YAML mapping, turning I/O and syntax errors into :class:`ConfigError`.

    ``what`` names the file in messages (``"config file"``, ``"site policy file"``).
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError([f"{what} {str(p)!r} cannot be read: {exc.strerror}"]) from None
    try:
        raw = _yaml_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{what} {str(p)!r} is not valid YAML: {exc}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{what} {str(p)!r} must hold a mapping; got {describe(raw)}"])
    return raw


def load(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config, apply overrides and validate.

    Raises
    ------
    ConfigError
        If the file cannot be read or parsed, an override is malformed, or the result is
        not a valid :class:`~fedsim.config.schema.Config` (every problem at once).
    """
    return from_dict(apply_overrides(read_yaml(path), overrides))


def to_yaml(cfg: Config, extra: Mapping[str, Any] | None = None) -> str:
    """Serialise the resolved config (plus ``extra`` keys such as the package version)."""
    doc: dict[str, Any] = cfg.to_dict()
    if extra:
        doc = {**doc, **extra}
    return yaml.safe_dump(doc, sort_keys=False)
