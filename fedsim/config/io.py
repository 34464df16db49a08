"""YAML in and out: reading config files, ``key=value`` overrides, serialisation.

Owns the text side of the configuration: :func:`read_yaml` reads a YAML mapping from a
UTF-8 file of at most :data:`MAX_CONFIG_BYTES`, :func:`parse_override` and
:func:`apply_overrides` apply dotted ``key=value`` overrides to the raw mapping,
:func:`load` chains them with validation, and :func:`to_yaml` writes a resolved
:class:`~fedsim.config.schema.Config` back out (the run directory's ``config.yaml``).
File and override text is parsed by :func:`fedsim.config.yamlsafe.safe_load` (YAML 1.2
scalars; no aliases, anchors, tags or duplicate keys; bounded size and nesting). I/O,
encoding and YAML errors become :class:`~fedsim.errors.ConfigError`.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fedsim.config.parse import describe, from_dict
from fedsim.config.schema import Config
from fedsim.config.yamlsafe import explain, safe_load
from fedsim.errors import ConfigError

#: Largest config file read, in bytes (a config is a few KiB).
MAX_CONFIG_BYTES = 1 << 20

#: An override key: a dotted name such as ``dp.epsilon``.
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")

_OTHER_ENCODINGS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
    (codecs.BOM_UTF8, "UTF-8 with a byte-order mark"),
)


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"dp.epsilon=2"`` into ``("dp.epsilon", 2)``; the value is parsed as YAML.

    The value is read by the rules of a config file
    (:func:`fedsim.config.yamlsafe.safe_load`); an empty value is null.

    Raises
    ------
    ConfigError
        If ``text`` is not ``key=value`` with a dotted key, or the value is not valid
        config YAML (the message names the key).
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError([f"override must look like key=value; got {describe(text)}"])
    if not _KEY_RE.match(key):
        raise ConfigError(
            [f"override key must be a dotted name such as dp.epsilon; got {describe(key)}"]
        )
    if not value.strip():
        return key, None
    try:
        return key, safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(
            [
                f"override {key}: value {describe(value)} is not valid YAML: "
                f"{explain(exc)} (quote it to pass a string)"
            ]
        ) from None


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted ``key=value`` overrides applied.

    Missing sections on the way to a key are created; ``raw`` is left untouched.

    Raises
    ------
    ConfigError
        If an override is not ``key=value`` (see :func:`parse_override`) or a dotted key
        passes through a value that is not a section (every such override at once).
    """
    out: dict[str, Any] = copy_raw(raw)
    problems: list[str] = []
    for text in overrides:
        try:
            key, value = parse_override(text)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
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


def _decode(data: bytes, shown: str) -> str:
    """``data`` as text, if it is UTF-8 without a byte-order mark and without NUL bytes."""
    for bom, name in _OTHER_ENCODINGS:
        if data.startswith(bom):
            raise ConfigError([f"{shown} is {name}; save it as UTF-8 without a byte-order mark"])
    if b"\x00" in data:
        raise ConfigError([f"{shown} contains NUL bytes: it is not a text file"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [
                f"{shown} is not UTF-8 text (byte {data[exc.start]:#04x} at offset "
                f"{exc.start}); save it as UTF-8"
            ]
        ) from None


def read_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Read a YAML mapping, turning I/O, encoding and YAML errors into :class:`ConfigError`.

    ``what`` names the file in messages (``"config file"``, ``"site policy file"``). The
    file must be UTF-8 text (no byte-order mark, no NUL bytes) of at most
    :data:`MAX_CONFIG_BYTES` bytes; it is parsed by
    :func:`fedsim.config.yamlsafe.safe_load`.
    """
    p = Path(path)
    shown = f"{what} {str(p)!r}"
    try:
        with p.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{shown} cannot be read: {exc.strerror}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{shown} must be at most {MAX_CONFIG_BYTES} bytes; it is larger"])
    text = _decode(data, shown)
    try:
        raw = safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{shown} is not valid YAML: {explain(exc)}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        # the type only: the file may be anything (a key, a password file), never echo it
        kind = type(raw).__name__
        raise ConfigError([f"{shown} must hold a mapping (YAML keys and values); got a {kind}"])
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
