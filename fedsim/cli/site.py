"""``fedsim site check``: check a site's data, state dir and policy before it joins.

The same check runs in ``fedsim supernode`` before Flower starts
(:func:`check_before_start`); see :mod:`fedsim.deploy.sitecheck`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsim.cli.base import Command


def _configure_site(site: argparse.ArgumentParser) -> None:
    sub = site.add_subparsers(dest="site_command", required=True)
    check = sub.add_parser(
        "check",
        help="load the site's data as its ClientApp will, check its state dir and policy",
        description="Load the site's data exactly as its ClientApp will, check the state "
        "directory (writable, lockable, its ledger and the epsilon spent) and the privacy "
        "policy, and print a summary. Exit code 2 on any problem.",
    )
    check.add_argument(
        "--data", type=Path, required=True, help="the site's .npz file or image folder"
    )
    check.add_argument("--data-format", choices=["npz", "imagefolder"])
    check.add_argument("--state", type=Path, help="the site's state dir (privacy ledger)")
    check.add_argument("--policy", type=Path, metavar="FILE", help="the site's policy (YAML)")
    check.add_argument(
        "--client-id", type=int, help="the site's client id (checked against its state file)"
    )
    check.set_defaults(handler=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from fedsim.deploy.sitecheck import check_site

    report = check_site(args.data, args.state, args.policy, args.client_id, args.data_format)
    for line in report.lines():
        print(line)
    print("site check passed")
    return 0


def check_before_start(args: argparse.Namespace) -> None:
    """``fedsim supernode``'s check of its site (``--data``, ``--data-format``,
    ``--state``, ``--policy``, ``--client-id``); the summary goes to stderr.

    Raises
    ------
    FedsimError
        On any problem (the CLI exits with code 2 before anything starts).
    """
    from fedsim.deploy.sitecheck import check_site

    report = check_site(args.data, args.state, args.policy, args.client_id, args.data_format)
    for line in report.lines():
        print(line, file=sys.stderr)


SITE = Command(
    help="check a site (data, state dir, policy) before its SuperNode starts",
    configure=_configure_site,
)
