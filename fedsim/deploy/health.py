"""The containers' health probe: ``GET /health`` of a Flower 1.41 API server.

Flower 1.41 serves ``GET /health`` (200, empty body) on the SuperLink's HTTPS API port
and on the SuperNode's local runtime API (plain HTTP on 127.0.0.1:9094), as soon as the
server accepts requests. ``docker/docker-compose.yml`` runs
``python -m fedsim.deploy.health URL [--ca FILE]`` as each service's health check, so the
hospitals start only once the SuperLink answers (``depends_on: service_healthy``)
instead of crash-looping until it does. Exit code 0: healthy; 1: not (the reason on
stderr). Imports nothing heavy: it runs every few seconds.
"""

from __future__ import annotations

import argparse
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path


def probe(url: str, ca: Path | None = None, timeout: float = 5.0) -> str | None:
    """``None`` when ``url`` answers 200, else why not.

    Parameters
    ----------
    url
        ``https://localhost:8000/health`` (SuperLink) or ``http://127.0.0.1:9094/health``
        (SuperNode runtime API).
    ca
        CA certificate that signed the server's certificate (``https`` only); the
        system's trust store when ``None``.
    timeout
        Seconds to wait for the answer.
    """
    context = None
    if url.startswith("https://"):
        context = ssl.create_default_context(cafile=None if ca is None else str(ca))
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return f"{url} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{url} is not reachable: {reason}"
    return None if status == 200 else f"{url} answered HTTP {status}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fedsim.deploy.health URL [--ca FILE] [--timeout S]``; 0 when healthy."""
    parser = argparse.ArgumentParser(prog="python -m fedsim.deploy.health")
    parser.add_argument("url", help="the /health URL of a SuperLink or SuperNode")
    parser.add_argument("--ca", type=Path, help="CA certificate (https URLs)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    args = parser.parse_args(argv)
    if args.ca is not None and not args.ca.is_file():
        sys.stderr.write(f"--ca: no such file: {args.ca}\n")
        return 2
    reason = probe(args.url, args.ca, args.timeout)
    if reason is not None:
        sys.stderr.write(reason + "\n")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover - the container's entry
    sys.exit(main())
