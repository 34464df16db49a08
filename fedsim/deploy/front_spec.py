"""What the coordinator's TLS front (:mod:`fedsim.deploy.front`) serves: its ports and
files. Apart from the front so that the commands that only describe it (``fedsim
superlink --dry-run``) do not import its web stack (httpx, uvicorn, starlette: ~0.15 s)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FrontSpec:
    """Ports and files of the coordinator's front (see :mod:`fedsim.deploy.front`)."""

    host: str
    fleet_port: int
    control_port: int
    upstream_port: int
    ca_cert: Path
    server_cert: Path
    server_key: Path
