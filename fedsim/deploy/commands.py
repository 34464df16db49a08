"""The Flower commands of a fedsim federation, built in one place.

``fedsim superlink`` / ``fedsim supernode``, the e2e tests and ``docker/`` all run
exactly these ``flower-superlink`` / ``flower-supernode`` command lines; the wrappers
print them first, so nothing of Flower's CLI is hidden.

TLS is on unless ``insecure`` is set, and SuperNode authentication is on whenever TLS
is (Flower requires TLS for it). With TLS, ``flower-superlink`` listens on 127.0.0.1 only
(``internal_port``) and fedsim's front (:mod:`fedsim.deploy.front`) serves the network:
the Fleet API on ``port`` and the Control API, for operator certificates only, on
``control_port``. With ``trusted_keys`` a SuperNode runs through
:mod:`fedsim.deploy.supernode`, which refuses every app not signed by one of those keys
(:mod:`fedsim.deploy.appsign`).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedsim import keys
from fedsim.deploy.certs import CA_CERT, SERVER_CERT, SERVER_KEY
from fedsim.deploy.front_spec import FrontSpec
from fedsim.errors import FedsimError

INSECURE_WARNING = (
    "WARNING: --insecure: TLS is OFF. Model updates, metrics and the run config travel "
    "unencrypted and SuperNode authentication is impossible. Use this only on a trusted "
    "test network."
)


@dataclass(frozen=True)
class SuperLinkSpec:
    """How to start the SuperLink of the coordinating site."""

    certs_dir: Path | None
    host: str = "0.0.0.0"
    port: int = 8000
    database: Path | None = None
    node_auth: bool = True
    #: TLS only: the front's Control port (operator certificates) and the loopback port
    #: of ``flower-superlink`` behind the front
    control_port: int = 8001
    internal_port: int = 9100
    #: where ServerApps may write run directories (``FEDSIM_RUNS_DIR``)
    runs_dir: Path | None = None


@dataclass(frozen=True)
class SuperNodeSpec:
    """How to start one site's SuperNode."""

    superlink: str
    client_id: int
    data_path: Path | None
    state_dir: Path | None
    root_certificates: Path | None
    private_key: Path | None
    runtime_port: int = 9094
    data_format: str | None = None
    policy_path: Path | None = None
    #: the app-signing public keys this site trusts; ``None``: any app runs (not advised)
    trusted_keys: Path | None = None


def front_spec(spec: SuperLinkSpec) -> FrontSpec:
    """The front of a TLS SuperLink (``spec.certs_dir`` set)."""
    if spec.certs_dir is None:
        raise FedsimError("the TLS front needs --certs")
    ports = {spec.port, spec.control_port, spec.internal_port}
    if len(ports) != 3:
        raise FedsimError(
            f"--port, --control-port and --internal-port must differ; got {spec.port}, "
            f"{spec.control_port}, {spec.internal_port}"
        )
    return FrontSpec(
        host=spec.host,
        fleet_port=spec.port,
        control_port=spec.control_port,
        upstream_port=spec.internal_port,
        ca_cert=spec.certs_dir / CA_CERT,
        server_cert=spec.certs_dir / SERVER_CERT,
        server_key=spec.certs_dir / SERVER_KEY,
    )


def superlink_command(spec: SuperLinkSpec) -> list[str]:
    """The ``flower-superlink`` command line for ``spec`` (``certs_dir=None``: insecure).

    With TLS it binds 127.0.0.1:``internal_port``, behind fedsim's front.
    """
    if spec.certs_dir is None:
        cmd = ["flower-superlink", "--host", spec.host, "--port", str(spec.port)]
    else:
        cmd = ["flower-superlink", "--host", "127.0.0.1", "--port", str(spec.internal_port)]
    if spec.certs_dir is None:
        if spec.node_auth:
            raise FedsimError("SuperNode authentication needs TLS: give --certs or --no-node-auth")
        cmd.append("--insecure")
    else:
        _require_files(spec.certs_dir, (CA_CERT, SERVER_CERT, SERVER_KEY))
        cmd += [
            "--ssl-ca-certfile",
            str(spec.certs_dir / CA_CERT),
            "--ssl-certfile",
            str(spec.certs_dir / SERVER_CERT),
            "--ssl-keyfile",
            str(spec.certs_dir / SERVER_KEY),
        ]
        if spec.node_auth:
            cmd.append("--enable-supernode-auth")
    if spec.database is not None:
        cmd += ["--database", str(spec.database)]
    # fedsim and its pinned dependencies are installed at every site: no `uv sync` per run.
    cmd.append("--disable-runtime-dependency-installation")
    return cmd


def node_config_text(entries: Mapping[str, object]) -> str:
    """A ``--node-config`` string that Flower parses back into ``entries``.

    Strings become TOML strings: double-quoted (backslashes escaped), or single-quoted
    literals when they hold a double quote; Flower's parser cannot take both quotes.
    """
    parts = []
    for key, value in entries.items():
        if not isinstance(value, str):
            parts.append(f"{key}={value}")
        elif '"' not in value:
            parts.append(f'{key}="{value.replace(chr(92), chr(92) * 2)}"')
        elif "'" not in value:
            parts.append(f"{key}='{value}'")
        else:
            raise FedsimError(f"node config {key} cannot hold both quote characters; got {value!r}")
    return " ".join(parts)


def supernode_command(spec: SuperNodeSpec) -> list[str]:
    """The ``flower-supernode`` command line for ``spec``.

    ``root_certificates=None`` means insecure (no TLS, no node key).
    """
    entries: dict[str, object] = {keys.NODE_CLIENT_ID: spec.client_id}
    if spec.data_path is not None:
        entries[keys.NODE_DATA_PATH] = str(spec.data_path)
    if spec.data_format is not None:
        entries[keys.NODE_DATA_FORMAT] = spec.data_format
    if spec.state_dir is not None:
        entries[keys.NODE_STATE_DIR] = str(spec.state_dir)
    if spec.policy_path is not None:
        entries[keys.NODE_POLICY_PATH] = str(spec.policy_path)
    if spec.trusted_keys is None:
        cmd = ["flower-supernode"]
    else:
        _require_files(spec.trusted_keys.parent, (spec.trusted_keys.name,))
        cmd = [
            sys.executable,
            "-m",
            "fedsim.deploy.supernode",
            "--trusted-keys",
            str(spec.trusted_keys),
            "--",
        ]
    cmd += ["--superlink", spec.superlink]
    if spec.root_certificates is None:
        cmd.append("--insecure")
    else:
        _require_files(spec.root_certificates.parent, (spec.root_certificates.name,))
        cmd += ["--root-certificates", str(spec.root_certificates)]
    if spec.private_key is not None:
        if spec.root_certificates is None:
            raise FedsimError("--key (SuperNode authentication) needs TLS: give --ca")
        _require_files(spec.private_key.parent, (spec.private_key.name,))
        cmd += ["--auth-supernode-private-key", str(spec.private_key)]
    cmd += ["--port", str(spec.runtime_port), "--node-config", node_config_text(entries)]
    return cmd


def shell_text(cmd: list[str]) -> str:
    """``cmd`` as one copy-pasteable shell line."""
    return shlex.join(cmd)


def _require_files(folder: Path, names: tuple[str, ...]) -> None:
    missing = [str(folder / n) for n in names if not (folder / n).is_file()]
    if missing:
        raise FedsimError(f"missing file(s): {', '.join(missing)} (see `fedsim certs`)")
