"""``fedsim certs``, ``fedsim node keygen``, ``fedsim superlink``, ``fedsim supernode``.

Thin helpers around Flower's deployment engine: certificates and node keys in the
formats Flower expects, and the exact ``flower-superlink`` / ``flower-supernode``
command lines (printed, then executed; ``--dry-run`` only prints them). TLS is the
default; ``--insecure`` must be asked for and prints a warning. ``fedsim supernode``
checks the site's data, state dir and policy (``fedsim site check``) before anything starts.

With TLS, ``fedsim superlink`` runs ``flower-superlink`` on 127.0.0.1 behind fedsim's
front (:mod:`fedsim.deploy.front`: Fleet port for sites, Control port for operator
certificates only), and ``fedsim supernode`` needs ``--trusted-keys`` (apps signed with
``fedsim app sign``) unless ``--allow-unsigned-apps`` is given.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fedsim.cli.base import Command
from fedsim.cli.site import check_before_start
from fedsim.errors import FedsimError
from fedsim.keys import RUNS_DIR_ENV


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
    certs.add_argument(
        "--operator",
        metavar="NAME",
        help="instead: issue, with the CA in OUT_DIR, a client certificate for operator NAME "
        "(operator-NAME.pem/.key), required on the coordinator's Control port",
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
    link.add_argument(
        "--port", type=int, default=8000, help="Fleet port, for the sites' SuperNodes (8000)"
    )
    link.add_argument(
        "--control-port",
        type=int,
        default=8001,
        help="Control port (flwr run/ls/stop/log, node registration): operator certificates "
        "only, via `fedsim control-tunnel` (8001)",
    )
    link.add_argument(
        "--internal-port",
        type=int,
        default=9100,
        help="loopback port of flower-superlink behind the front (9100)",
    )
    link.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        help="the only folder where ServerApps write run directories (default ./runs)",
    )
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
        "--trusted-keys",
        type=Path,
        metavar="FILE",
        help="app-signing public keys (from `fedsim app keygen`, one per line): this site runs "
        "only apps signed with one of them",
    )
    node_run.add_argument(
        "--allow-unsigned-apps",
        action="store_true",
        help="run any app the coordinator sends (test federations only)",
    )
    node_run.add_argument(
        "--runtime-port", type=int, default=9094, help="local port of the node's runtime API"
    )
    node_run.add_argument("--dry-run", action="store_true", help="only print the command")
    node_run.set_defaults(handler=_cmd_supernode)


def _cmd_certs(args: argparse.Namespace) -> int:
    from fedsim.deploy.certs import make_certificates, make_operator_certificate

    if args.operator is not None:
        if args.host:
            raise FedsimError("--host names the SuperLink; it does not go with --operator")
        op = make_operator_certificate(
            args.out_dir, args.operator, days=args.days, overwrite=args.overwrite
        )
        print(f"operator certificate  {op.cert}")
        print(f"operator key          {op.key}  (mode 0600; give only to {args.operator})")
        print(
            "use them with: fedsim control-tunnel --coordinator HOST:8001 --ca ca.crt "
            f"--cert {op.cert.name} --key {op.key.name}"
        )
        return 0

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
    from fedsim.deploy.commands import (
        INSECURE_WARNING,
        SuperLinkSpec,
        front_spec,
        shell_text,
        superlink_command,
    )

    if args.insecure == (args.certs is not None):
        raise FedsimError("give either --certs DIR (TLS, the default) or --insecure")
    runs_dir = args.runs_dir.expanduser().resolve()
    if runs_dir.exists() and not runs_dir.is_dir():
        raise FedsimError(f"--runs-dir must be a folder; got the file {str(runs_dir)!r}")
    os.environ[RUNS_DIR_ENV] = str(runs_dir)  # inherited by the ServerApp processes
    if args.insecure:
        print(INSECURE_WARNING, file=sys.stderr)
        print(
            "WARNING: --insecure: the Control API is open to anyone who reaches this port: "
            "they can run code at every site.",
            file=sys.stderr,
        )
    spec = SuperLinkSpec(
        certs_dir=args.certs,
        host=args.host,
        port=args.port,
        database=args.database,
        node_auth=not (args.no_node_auth or args.insecure),
        control_port=args.control_port,
        internal_port=args.internal_port,
        runs_dir=runs_dir,
    )
    cmd = superlink_command(spec)
    if args.insecure:
        return _exec(cmd, args.dry_run)
    front = front_spec(spec)
    print(f"+ {shell_text(cmd)}", file=sys.stderr)
    print(
        f"fedsim front: Fleet https://{front.host}:{front.fleet_port} (sites: /v1/fleet only), "
        f"Control https://{front.host}:{front.control_port} (operator certificates only) "
        f"-> flower-superlink on 127.0.0.1:{front.upstream_port}; run directories in {runs_dir}",
        file=sys.stderr,
        flush=True,
    )
    if args.dry_run:
        return 0
    from fedsim.deploy.coordinator import run_coordinator

    return run_coordinator(cmd, front)


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
    if args.trusted_keys is not None and args.allow_unsigned_apps:
        raise FedsimError("give either --trusted-keys FILE or --allow-unsigned-apps, not both")
    if args.trusted_keys is None and not args.insecure and not args.allow_unsigned_apps:
        raise FedsimError(
            "give --trusted-keys FILE (the app-signing keys this site trusts; see `fedsim app "
            "keygen`), or --allow-unsigned-apps to run whatever code the coordinator sends"
        )
    if args.trusted_keys is None:
        print(
            "WARNING: this SuperNode runs any app the coordinator sends (no --trusted-keys)",
            file=sys.stderr,
        )
    else:
        from fedsim.deploy.appsign import load_trusted_keys

        load_trusted_keys(args.trusted_keys)  # a clear error now, not in the launcher
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
        trusted_keys=None if args.trusted_keys is None else args.trusted_keys.resolve(),
    )
    return _exec(supernode_command(spec), args.dry_run)


CERTS = Command(
    help="create a CA and a SuperLink TLS certificate (ca.crt, server.pem/key)",
    configure=_configure_certs,
)
NODE = Command(help="SuperNode authentication keys", configure=_configure_node)
SUPERLINK = Command(
    help="start flower-superlink (TLS, node auth) behind fedsim's front (mTLS Control port)",
    configure=_configure_superlink,
)
SUPERNODE = Command(help="start flower-supernode for one site", configure=_configure_supernode)
