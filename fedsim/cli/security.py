"""``fedsim app keygen|sign|verify`` and ``fedsim control-tunnel``.

Who may run code at the sites: the app-signing keys sites trust
(:mod:`fedsim.deploy.appsign`) and the operator certificates the coordinator's Control
port requires (:mod:`fedsim.deploy.front`). ``fedsim control-tunnel`` lets the ``flwr``
CLI, which cannot present a client certificate, reach that port through 127.0.0.1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsim.cli.base import Command
from fedsim.errors import FedsimError


def _configure_app(app: argparse.ArgumentParser) -> None:
    sub = app.add_subparsers(dest="app_command", required=True)
    keygen = sub.add_parser("keygen", help="create an Ed25519 app-signing key (PATH, PATH.pub)")
    keygen.add_argument("path", type=Path, help="private key file; the public key is PATH.pub")
    keygen.add_argument("--comment", default="", help="comment in the public key")
    keygen.add_argument("--overwrite", action="store_true", help="replace existing files")
    keygen.set_defaults(handler=_cmd_keygen)
    sign = sub.add_parser("sign", help="sign the app (writes app-signature.json into it)")
    sign.add_argument("app_dir", type=Path, nargs="?", default=Path("."), help="app folder (.)")
    sign.add_argument("--key", type=Path, required=True, help="private key from app keygen")
    sign.set_defaults(handler=_cmd_sign)
    verify = sub.add_parser("verify", help="check the app's signature as a site would")
    verify.add_argument("app_dir", type=Path, nargs="?", default=Path("."), help="app folder (.)")
    verify.add_argument("--trusted-keys", type=Path, required=True, metavar="FILE")
    verify.set_defaults(handler=_cmd_verify)


def _configure_tunnel(tunnel: argparse.ArgumentParser) -> None:
    tunnel.add_argument(
        "--coordinator", required=True, metavar="HOST:PORT", help="the Control port (:8001)"
    )
    tunnel.add_argument("--ca", type=Path, required=True, help="the federation's ca.crt")
    tunnel.add_argument("--cert", type=Path, required=True, help="operator-NAME.pem")
    tunnel.add_argument("--key", type=Path, required=True, help="operator-NAME.key")
    tunnel.add_argument(
        "--port", type=int, default=9093, help="local port on 127.0.0.1 for flwr (9093; 0: any)"
    )
    tunnel.set_defaults(handler=_cmd_tunnel)


def _cmd_keygen(args: argparse.Namespace) -> int:
    from fedsim.deploy.appsign import make_app_key

    files = make_app_key(args.path, args.comment, overwrite=args.overwrite)
    print(f"private key  {files.private}  (mode 0600; whoever holds it approves code)")
    print(f"public key   {files.public}  (give to every site: fedsim supernode --trusted-keys)")
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    from fedsim.deploy.appsign import sign_app

    target, kid, count = sign_app(args.app_dir.resolve(), args.key)
    print(f"signed {count} files of the app with key {kid}: {target}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from fedsim.deploy.appsign import build_fab, load_trusted_keys, verify_fab

    kid = verify_fab(build_fab(args.app_dir.resolve()), load_trusted_keys(args.trusted_keys))
    print(f"the app is signed by trusted key {kid}")
    return 0


def _split_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise FedsimError(f"--coordinator must be HOST:PORT; got {text!r}")
    return host.strip("[]"), int(port)


def _cmd_tunnel(args: argparse.Namespace) -> int:
    import ssl

    from fedsim.deploy.front import client_tls_context, serve_tunnel

    host, port = _split_address(args.coordinator)
    missing = [str(p) for p in (args.ca, args.cert, args.key) if not p.is_file()]
    if missing:
        raise FedsimError(f"missing file(s): {', '.join(missing)}")
    try:
        context = client_tls_context(args.ca, args.cert, args.key)
    except (ssl.SSLError, ValueError):
        raise FedsimError(
            f"--ca/--cert/--key: not a CA certificate and an operator certificate and key "
            f"from `fedsim certs --operator` ({args.ca}, {args.cert}, {args.key}; contents "
            "not shown)"
        ) from None

    def ready(bound: int) -> None:
        print(
            f"control tunnel: 127.0.0.1:{bound} -> {host}:{port} (mTLS as {args.cert.name}); "
            f'in $FLWR_HOME/config.toml: address = "127.0.0.1:{bound}", insecure = true',
            file=sys.stderr,
            flush=True,
        )

    import asyncio  # ~0.03 s: only this command needs it

    try:
        asyncio.run(serve_tunnel(args.port, host, port, context, ready))
    except OSError as exc:
        raise FedsimError(
            f"--port {args.port}: cannot listen on 127.0.0.1: {exc.strerror}"
        ) from None
    return 0


APP = Command(
    help="sign apps so that sites run them (keygen, sign, verify)", configure=_configure_app
)
CONTROL_TUNNEL = Command(
    help="forward 127.0.0.1:PORT over mTLS to the coordinator's Control port (for flwr)",
    configure=_configure_tunnel,
)
