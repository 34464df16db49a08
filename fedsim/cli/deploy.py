"""``fedsim certs``, ``fedsim node keygen``, ``fedsim superlink``, ``fedsim supernode``.

Thin helpers around Flower's deployment engine: certificates and node keys in the
formats Flower expects, and the exact ``flower-superlink`` / ``flower-supernode``
command lines (printed, then executed; ``--dry-run`` only prints them). TLS is the
default; ``--insecure`` must be asked for and prints a warning. ``fedsim supernode``
checks the site's data, state dir and policy (``fedsim site check``) before anything starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fedsim.cli.base import Command
from fedsim.cli.site import add_image_options, check_before_start
from fedsim.errors import FedsimError


def _configure_certs(certs: argparse.ArgumentParser) -> None:
    certs.add_argument(
        "out_dir", type=Path, help="folder for ca.crt, ca.key, server.pem, server.key"
    )
    certs.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="hostname or IP address the SuperNodes dial (repeatable; localhost and "
        "127.0.0.1 are always included)",
    )
    certs.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    certs.add_argument("--overwrite", action="store_true", help="replace existing files")
    certs.set_defaults(handler=_cmd_certs)


def _configure_node(node: argparse.ArgumentParser) -> None:
    node_sub = node.add_subparsers(dest="node_command", required=True)
    keygen = node_sub.add_parser(
        "keygen", help="create an ECDSA P-384 key pair (PATH, PATH.pub) for a SuperNode"
    )
    keygen.add_argument("path", type=Path, help="private key file; the public key is PATH.pub")
    keygen.add_argument("--comment", default="", help="comment in the public key, e.g. the site")
    keygen.add_argument("--overwrite", action="store_true", help="replace existing files")
    keygen.set_defaults(handler=_cmd_keygen)


def _configure_superlink(link: argparse.ArgumentParser) -> None:
    link.add_argument("--certs", type=Path, help="folder written by `fedsim certs`")
    link.add_argument("--insecure", action="store_true", help="no TLS (test networks only)")
    link.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    link.add_argument("--port", type=int, default=8000, help="Flower's HTTP API port (8000)")
    link.add_argument("--database", type=Path, help="SuperLink state database (default: memory)")
    link.add_argument(
        "--no-node-auth", action="store_true", help="accept any SuperNode (not recommended)"
    )
    link.add_argument("--dry-run", action="store_true", help="only print the command")
    link.set_defaults(handler=_cmd_superlink)


def _configure_supernode(node_run: argparse.ArgumentParser) -> None:
    node_run.add_argument("--superlink", required=True, help="SuperLink address host:port")
    node_run.add_argument("--client-id", type=int, required=True, help="stable id 0..N-1")
    node_run.add_argument("--data", type=Path, help="the site's .npz file or image folder")
    node_run.add_argument("--data-format", choices=["npz", "imagefolder"])
    add_image_options(node_run)
    node_run.add_argument("--state", type=Path, help="the site's state dir (privacy ledger)")
    node_run.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="the site's privacy policy (YAML), enforced in every round whatever the run's "
        "config asks (default: DP-SGD required, replace-one, delta <= 1e-5, no central DP)",
    )
    node_run.add_argument("--ca", type=Path, help="CA certificate (ca.crt) of the SuperLink")
    node_run.add_argument("--key", type=Path, help="private key from `fedsim node keygen`")
    node_run.add_argument("--insecure", action="store_true", help="no TLS (test networks only)")
    node_run.add_argument(
        "--runtime-port", type=int, default=9094, help="local port of the node's runtime API"
    )
    node_run.add_argument("--dry-run", action="store_true", help="only print the command")
    node_run.set_defaults(handler=_cmd_supernode)


def _cmd_certs(args: argparse.Namespace) -> int:
    from fedsim.deploy.certs import make_certificates

    files = make_certificates(args.out_dir, args.host, days=args.days, overwrite=args.overwrite)
    print(f"CA certificate      {files.ca_cert}  (give to every SuperNode and to flwr)")
    print(f"CA key              {files.ca_key}  (mode 0600; keep offline)")
    print(f"server certificate  {files.server_cert}")
    print(f"server key          {files.server_key}  (mode 0600; SuperLink only)")
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    from fedsim.deploy.nodekeys import make_node_key

    files = make_node_key(args.path, args.comment, overwrite=args.overwrite)
    print(f"private key  {files.private}  (mode 0600; stays at the site)")
    print(f"public key   {files.public}")
    print(f"register it with the SuperLink: flwr supernode register {files.public} <connection>")
    return 0


def _exec(cmd: list[str], dry_run: bool) -> int:
    from fedsim.deploy.commands import shell_text

    print(f"+ {shell_text(cmd)}", file=sys.stderr, flush=True)
    if dry_run:
        return 0
    try:
        os.execvp(cmd[0], cmd)
    except FileNotFoundError:
        raise FedsimError(
            f"{cmd[0]} not found: install fedsim's dependencies (flwr 1.41)"
        ) from None
    return 0  # not reached


def _cmd_superlink(args: argparse.Namespace) -> int:
    from fedsim.deploy.commands import INSECURE_WARNING, SuperLinkSpec, superlink_command

    if args.insecure == (args.certs is not None):
        raise FedsimError("give either --certs DIR (TLS, the default) or --insecure")
    if args.insecure:
        print(INSECURE_WARNING, file=sys.stderr)
    spec = SuperLinkSpec(
        certs_dir=args.certs,
        host=args.host,
        port=args.port,
        database=args.database,
        node_auth=not (args.no_node_auth or args.insecure),
    )
    return _exec(superlink_command(spec), args.dry_run)


def _cmd_supernode(args: argparse.Namespace) -> int:
    from fedsim.deploy.commands import INSECURE_WARNING, SuperNodeSpec, supernode_command

    if args.insecure == (args.ca is not None):
        raise FedsimError("give either --ca ca.crt (TLS, the default) or --insecure")
    if args.insecure:
        print(INSECURE_WARNING, file=sys.stderr)
        if args.key is not None:
            raise FedsimError("--key (SuperNode authentication) needs TLS; drop --insecure")
    if args.client_id < 0:
        raise FedsimError(f"--client-id must be >= 0; got {args.client_id}")
    policy_path = None if args.policy is None else args.policy.resolve()
    check_before_start(args)  # data, state dir and policy, as the ClientApp will use them
    spec = SuperNodeSpec(
        superlink=args.superlink,
        client_id=args.client_id,
        data_path=None if args.data is None else args.data.resolve(),
        state_dir=None if args.state is None else args.state.resolve(),
        root_certificates=args.ca,
        private_key=args.key,
        runtime_port=args.runtime_port,
        data_format=args.data_format,
        policy_path=policy_path,
    )
    return _exec(supernode_command(spec), args.dry_run)


CERTS = Command(
    help="create a CA and a SuperLink TLS certificate (ca.crt, server.pem/key)",
    configure=_configure_certs,
)
NODE = Command(help="SuperNode authentication keys", configure=_configure_node)
SUPERLINK = Command(
    help="start flower-superlink with TLS and node auth", configure=_configure_superlink
)
SUPERNODE = Command(help="start flower-supernode for one site", configure=_configure_supernode)
