"""Which fedsim the coordinator and a site run, and whether they agree.

In deployment the coordinator's ServerApp travels to the sites in a FAB, but the
``fedsim`` package itself — the config schema, the data loaders, the privacy accounting —
is whatever each site installed. Both sides parse the same run config into a
:class:`~fedsim.config.Config` and must read it the same way, so every train message
carries the coordinator's :class:`AppVersion` (:func:`version_entries`) and the site's
ClientApp trains only when its own equals it (:func:`version_mismatch`); otherwise it
replies ``refused`` with the reason, which the server logs and writes to
``metrics.jsonl`` like any refusal.

The schema hash (:func:`schema_hash`) is a stable digest of the config schema: every
field of the :class:`~fedsim.config.Config` tree with its dotted path, its type (the
allowed names of a ``Literal`` included), its default and its numeric bounds. Two
installs that would parse one YAML file into different configs — a field added, renamed
or retyped, a default or a bound changed, a mode added — get different hashes; an edit
that changes neither (a comment, a docstring) does not.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

from fedsim import __version__, keys
from fedsim.config import Config


@dataclass(frozen=True)
class AppVersion:
    """The fedsim version and config-schema hash of one side of a federation."""

    fedsim: str
    schema: str

    def describe(self) -> str:
        """E.g. ``fedsim 0.1.0, config schema 3f2a...``."""
        return f"fedsim {self.fedsim}, config schema {self.schema}"


def _type_text(tp: Any) -> str:
    """A Python-version-independent text of a type annotation."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "Literal[" + ", ".join(json.dumps(a) for a in typing.get_args(tp)) + "]"
    if origin in (Union, types.UnionType):
        return " | ".join(sorted(_type_text(a) for a in typing.get_args(tp)))
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[" + ", ".join(_type_text(a) for a in typing.get_args(tp)) + "]"
    if tp is type(None):
        return "None"
    if tp is Ellipsis:
        return "..."
    return str(getattr(tp, "__qualname__", tp))


def _plain(value: Any) -> Any:
    """``value`` as JSON-able data with a stable order (sets sorted)."""
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return repr(value)  # floats (repr round-trips exactly); nothing else occurs


def schema_fields(cls: type = Config, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every leaf field of the dataclass tree ``cls``: dotted path → type, default, bounds."""
    hints = typing.get_type_hints(cls)
    out: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            out.update(schema_fields(tp, f"{path}."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "<required>"
        out[path] = {
            "type": _type_text(tp),
            "default": _plain(default),
            "bounds": _plain(dict(f.metadata)),
        }
    return out


@functools.cache
def schema_hash() -> str:
    """The first 16 hex digits of the SHA-256 of :func:`schema_fields` (canonical JSON)."""
    text = json.dumps(schema_fields(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def local_version() -> AppVersion:
    """This install's fedsim version and config-schema hash."""
    return AppVersion(fedsim=__version__, schema=schema_hash())


def version_entries(version: AppVersion) -> dict[str, str]:
    """The entries a train message's config carries to name the coordinator's version."""
    return {keys.FEDSIM_VERSION: version.fedsim, keys.CONFIG_SCHEMA: version.schema}


def read_version(config: Mapping[str, Any]) -> AppVersion | None:
    """The coordinator's version from a train config (``None`` when it names none)."""
    fedsim, schema = config.get(keys.FEDSIM_VERSION), config.get(keys.CONFIG_SCHEMA)
    if not isinstance(fedsim, str) or not isinstance(schema, str):
        return None
    return AppVersion(fedsim=fedsim, schema=schema)


def version_mismatch(coordinator: AppVersion | None, site: AppVersion) -> str | None:
    """Why a site running ``site`` must not train for ``coordinator`` (``None``: they agree).

    >>> version_mismatch(AppVersion("1.0", "ab"), AppVersion("1.0", "ab")) is None
    True
    >>> version_mismatch(AppVersion("1.1", "ab"), AppVersion("1.0", "ab"))[:68]
    "version check: the coordinator runs fedsim '1.1' but this site has f"
    """
    if coordinator is None:
        return (
            f"version check: the train message names no fedsim version or config schema "
            f"(config keys {keys.FEDSIM_VERSION!r}, {keys.CONFIG_SCHEMA!r}); this site runs "
            f"{site.describe()} and trains only for a coordinator that names the same"
        )
    if coordinator.fedsim != site.fedsim:
        return (
            f"version check: the coordinator runs fedsim {coordinator.fedsim!r:.40} but this "
            f"site has fedsim {site.fedsim!r} installed; install the coordinator's version "
            "at the site"
        )
    if coordinator.schema != site.schema:
        return (
            f"version check: the coordinator's config schema is {coordinator.schema!r:.40} but "
            f"this site's is {site.schema!r} (both fedsim {site.fedsim}: one side runs "
            "modified code); install the same fedsim on both sides"
        )
    return None
