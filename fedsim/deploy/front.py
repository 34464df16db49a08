"""The coordinator's TLS front: who may reach which of the SuperLink's APIs.

Flower 1.41's SuperLink serves its Fleet API (SuperNodes), Control API (``flwr run``,
``flwr supernode register``, ``flwr ls``/``stop``/``log``) and Runtime API (its own
ServerApp processes) on one HTTP(S) port, and the open-source Control API has no account
authentication. ``fedsim superlink`` therefore binds ``flower-superlink`` to 127.0.0.1
only and puts this front on the network:

- the **Fleet port** (server TLS) forwards only ``/v1/fleet/*`` and ``/health``: sites
  connect here, and node authentication still happens at the SuperLink;
- the **Control port** requires a TLS client certificate issued by the federation CA
  (``fedsim certs DIR --operator NAME``) and forwards only ``/v1/control/*`` and
  ``/health``. Without such a certificate the TLS handshake fails: nothing is submitted,
  registered, listed or stopped.

Anything else gets ``404`` with no detail. Responses are streamed (``flwr run --stream``,
``flwr log``).

The ``flwr`` CLI cannot present a client certificate, so an operator runs
:func:`serve_tunnel` (``fedsim control-tunnel``): a loopback listener whose every
connection is carried over mTLS to the Control port; ``flwr`` then talks plain HTTP to
127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fedsim.deploy.front_spec import FrontSpec

logger = logging.getLogger(__name__)

FLEET_PREFIXES: tuple[str, ...] = ("/v1/fleet/",)
CONTROL_PREFIXES: tuple[str, ...] = ("/v1/control/",)
OPEN_PATHS: frozenset[str] = frozenset({"/health"})

#: Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus those the
#: proxy sets itself.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def allowed(path: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``path`` may pass a front that serves ``prefixes`` (plus :data:`OPEN_PATHS`).

    Paths with dot segments or encoded slashes are refused whatever their prefix, so no
    path can name one API and reach another.
    """
    if path in OPEN_PATHS:
        return True
    lowered = path.lower()
    if "/./" in path or "/../" in path or path.endswith(("/.", "/..")) or "%2f" in lowered:
        return False
    if "%2e" in lowered or "//" in path or "\\" in path:
        return False
    return path.startswith(prefixes)


def proxy_app(upstream: httpx.AsyncClient, prefixes: tuple[str, ...], name: str) -> Starlette:
    """An ASGI app forwarding the requests :func:`allowed` admits to ``upstream``."""

    async def forward(request: Request) -> Response:
        path = request.url.path
        if not allowed(path, prefixes):
            logger.warning("%s port: refused %s %s", name, request.method, path)
            return JSONResponse({"detail": "not served on this port"}, status_code=404)
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS]
        outgoing = upstream.build_request(
            request.method,
            httpx.URL(path=path, query=request.url.query.encode()),
            headers=headers,
            content=await request.body(),
        )
        try:
            reply = await upstream.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            logger.error("%s port: the SuperLink did not answer %s: %s", name, path, exc)
            return JSONResponse({"detail": "SuperLink unavailable"}, status_code=502)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in reply.aiter_raw():
                    yield chunk
            finally:
                await reply.aclose()

        out_headers = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP_HEADERS}
        if "content-length" in reply.headers:
            out_headers["content-length"] = reply.headers["content-length"]
        return StreamingResponse(body(), status_code=reply.status_code, headers=out_headers)

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    routes = [Route("/{path:path}", forward, methods=methods)]
    return Starlette(routes=routes)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve_front`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def front_configs(spec: FrontSpec, upstream: httpx.AsyncClient) -> list[uvicorn.Config]:
    """The uvicorn configs of the Fleet port and the Control port."""
    common = {
        "host": spec.host,
        "ssl_certfile": str(spec.server_cert),
        "ssl_keyfile": str(spec.server_key),
        "ssl_ca_certs": str(spec.ca_cert),
        "log_config": None,
        "access_log": False,
        "lifespan": "off",
    }
    fleet = uvicorn.Config(
        proxy_app(upstream, FLEET_PREFIXES, "fleet"),
        port=spec.fleet_port,
        ssl_cert_reqs=ssl.CERT_NONE,
        **common,  # type: ignore[arg-type]
    )
    control = uvicorn.Config(
        proxy_app(upstream, CONTROL_PREFIXES, "control"),
        port=spec.control_port,
        ssl_cert_reqs=ssl.CERT_REQUIRED,  # an operator certificate of the federation CA
        **common,  # type: ignore[arg-type]
    )
    return [fleet, control]


def upstream_client(spec: FrontSpec) -> httpx.AsyncClient:
    """The client the front forwards with: TLS to the loopback SuperLink, CA-verified."""
    context = ssl.create_default_context(cafile=str(spec.ca_cert))
    return httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{spec.upstream_port}",
        verify=context,
        timeout=httpx.Timeout(30.0, read=None),
        follow_redirects=False,
    )


async def serve_front(spec: FrontSpec, child: subprocess.Popen[bytes] | None = None) -> int:
    """Serve both ports until SIGTERM/SIGINT, or until ``child`` (the SuperLink) exits.

    Returns the child's exit code (0 when the front was asked to stop).
    """
    upstream = upstream_client(spec)
    servers = [_Server(config) for config in front_configs(spec, upstream)]

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)

    async def watch() -> None:
        while not all(s.should_exit for s in servers):
            if child is not None and child.poll() is not None:
                logger.error("flower-superlink exited with code %s", child.returncode)
                stop()
            await asyncio.sleep(0.5)

    try:
        await asyncio.gather(*(s.serve() for s in servers), watch())
    finally:
        await upstream.aclose()
    return 0 if child is None or child.returncode is None else child.returncode


def client_tls_context(ca_cert: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS client context that verifies the coordinator and presents ``cert``."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    context.load_cert_chain(str(cert), str(key))
    return context


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, ssl.SSLError, RuntimeError):
            writer.close()


async def serve_tunnel(
    listen_port: int,
    host: str,
    port: int,
    context: ssl.SSLContext,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Carry every connection to 127.0.0.1:``listen_port`` over mTLS to ``host:port``.

    ``ready`` is called with the bound port once the listener is up.
    """

    async def handle(local_r: asyncio.StreamReader, local_w: asyncio.StreamWriter) -> None:
        try:
            remote_r, remote_w = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=host
            )
        except (OSError, ssl.SSLError) as exc:
            logger.error("control tunnel: cannot reach %s:%d over mTLS: %s", host, port, exc)
            local_w.close()
            return
        await asyncio.gather(_pipe(local_r, remote_w), _pipe(remote_r, local_w))

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    bound = int(server.sockets[0].getsockname()[1])
    if ready is not None:
        ready(bound)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.close)
    async with server:
        with contextlib.suppress(asyncio.CancelledError):
            await server.serve_forever()
