"""``fedsim superlink`` with TLS: ``flower-superlink`` on loopback, fedsim's front outside.

:func:`run_coordinator` starts ``flower-superlink`` (bound to 127.0.0.1), waits until it
listens, then serves the front (:func:`fedsim.deploy.front.serve_front`) until it is
stopped or the SuperLink exits, and always stops the SuperLink (and so its SuperExec)
on the way out. Flower's internal gRPC switches (``FLWR_INTERNAL_GRPC_*``), which would
open further network ports, are removed from the SuperLink's environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time

from fedsim.deploy.front import serve_front
from fedsim.deploy.front_spec import FrontSpec
from fedsim.errors import FedsimError

#: Seconds to wait for ``flower-superlink`` to listen.
START_TIMEOUT = 90.0


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def superlink_env() -> dict[str, str]:
    """This process's environment without Flower's internal gRPC API switches."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FLWR_INTERNAL_GRPC_")}


def run_coordinator(cmd: list[str], front: FrontSpec) -> int:
    """Run ``cmd`` (``flower-superlink`` on ``front.upstream_port``) behind ``front``.

    Raises
    ------
    FedsimError
        If the SuperLink cannot be started or does not listen in time.
    """
    if _listening(front.upstream_port):
        raise FedsimError(f"--internal-port {front.upstream_port} is already in use on 127.0.0.1")
    try:
        child = subprocess.Popen(cmd, env=superlink_env())
    except FileNotFoundError:
        raise FedsimError(f"{cmd[0]} not found: install fedsim's dependencies") from None
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(front.upstream_port):
            if child.poll() is not None:
                raise FedsimError(f"flower-superlink exited with code {child.returncode}")
            if time.monotonic() > deadline:
                raise FedsimError(f"flower-superlink did not listen within {START_TIMEOUT:.0f} s")
            time.sleep(0.2)
        print("fedsim front: ready", file=sys.stderr, flush=True)
        return asyncio.run(serve_front(front, child))
    finally:
        if child.poll() is None:
            child.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
        if child.poll() is None:
            child.kill()
            child.wait(timeout=5)
