"""``fedsim compose``: write the Docker Compose file of an N-hospital federation.

The file is generated (:mod:`fedsim.deploy.compose`) so that it cannot drift from the
commands fedsim runs; ``docker/docker-compose.yml`` is ``fedsim compose --sites 3``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsim.cli.base import Command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sites", type=int, default=3, help="number of hospitals (default 3)")
    p.add_argument(
        "--host-port", type=int, default=8000, help="host port of the SuperLink (default 8000)"
    )
    p.add_argument(
        "--out",
        type=Path,
        help="write here (e.g. docker/docker-compose.yml; paths in it are relative to "
        "docker/) instead of printing",
    )
    p.set_defaults(handler=_cmd_compose)


def _cmd_compose(args: argparse.Namespace) -> int:
    from fedsim.deploy.compose import ComposeSpec, compose_text

    text = compose_text(ComposeSpec(sites=args.sites, host_port=args.host_port))
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


COMPOSE = Command(
    help="write the Docker Compose file of a SuperLink and N hospitals",
    configure=_configure,
)
