"""Flower's flat ``run_config`` → :class:`~fedsim.config.schema.Config`.

Owns the one place where the Flower apps' configuration enters fedsim: the ServerApp and
the ClientApp call :func:`from_run_config` on their ``context.run_config`` and pass the
typed config on; nothing deeper reads raw run-config keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedsim.config.io import apply_overrides, read_yaml
from fedsim.config.parse import from_dict
from fedsim.config.schema import Config
from fedsim.deploy.confine import app_file

#: Run-config entries that are not config fields: ``out-dir`` tells the ServerApp where
#: to write the run directory.
RUN_CONFIG_EXTRA_KEYS: frozenset[str] = frozenset({"out-dir"})


def from_run_config(run_config: Mapping[str, Any], base_dir: str | Path | None = None) -> Config:
    """Turn Flower's flat ``run_config`` into a :class:`~fedsim.config.schema.Config`.

    Two forms are understood: ``config-path`` (a YAML file) plus ``overrides``
    (space-separated ``key=value``), and flat dotted keys (``"dp.epsilon": 2.0``), which
    are applied as overrides on top. With ``base_dir`` (the app's directory: the
    repository, or the installed FAB under ``flwr run``) ``config-path`` must name a file
    inside it, relative paths counting from it (:func:`fedsim.deploy.confine.app_file`);
    without, it is read as given. Entries in :data:`RUN_CONFIG_EXTRA_KEYS` are skipped.

    Raises
    ------
    ConfigError
        If the file cannot be read or lies outside ``base_dir``, an override is malformed
        or the config is invalid.
    """
    base: dict[str, Any] = {}
    overrides: list[str] = []
    for key, value in run_config.items():
        if key in RUN_CONFIG_EXTRA_KEYS:
            continue
        if key == "config-path":
            if value:
                path = Path(str(value)).expanduser()
                if base_dir is not None:
                    path = app_file(str(value), Path(base_dir))
                base = read_yaml(str(path))
        elif key == "overrides":
            overrides.extend(str(value).split())
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            overrides.append(f"{key}={text}")
    return from_dict(apply_overrides(base, overrides))
