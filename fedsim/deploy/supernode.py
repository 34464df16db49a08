"""``python -m fedsim.deploy.supernode --trusted-keys FILE -- FLOWER_SUPERNODE_ARGS``.

Runs Flower's own SuperNode (``flower-supernode``) with one change: every app bundle
(FAB) it fetches for a new run is checked against the site's trusted app-signing keys
(:func:`fedsim.deploy.appsign.verify_fab`) **before** the SuperNode stores it — and only
a stored FAB is ever handed to a ClientApp process. An app that fails the check is
refused: the SuperNode logs ``fedsim: REFUSED app of run N: <reason>`` and replies to the
server's message with an ``INVALID_FAB`` error carrying that reason, as Flower does for
its own verification; every later message of that run is refused the same way.

The check wraps ``_pull_and_store_message`` of ``flwr.supernode.start_client_internal``
(where Flower verifies FABs itself). That is a private function, so this launcher runs
only on the Flower version it was written against (:data:`FLOWER_VERSION`) and exits
with code 2 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedsim.deploy.appsign import AppRefusedError, load_trusted_keys, verify_fab
from fedsim.errors import FedsimError

#: The Flower version whose SuperNode internals this launcher wraps.
FLOWER_VERSION = "1.41.0"


def _guard(original: Callable[..., Any], trusted: dict[str, Any]) -> Callable[..., Any]:
    """``original`` (Flower's pull-and-store step), refusing FABs not signed by ``trusted``."""
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode
    from flwr.supercore import log
    from flwr.supernode import start_client_internal as internal

    @functools.wraps(original)
    def pull_and_store(**kwargs: Any) -> int | None:
        receive, get_fab = kwargs["receive"], kwargs["get_fab"]
        last: dict[str, Any] = {}

        def receive_noting() -> Any:
            got = receive()
            last["message"] = None if got is None else got[0]
            return got

        def checked_get_fab(fab_hash: str, run_id: int) -> Any:
            fab = get_fab(fab_hash, run_id)
            try:
                kid = verify_fab(fab.content, trusted)
            except AppRefusedError as exc:
                raise _RefusedError(run_id, str(exc)) from None
            log(logging.INFO, "fedsim: app of run %s is signed by trusted key %s", run_id, kid)
            return fab

        kwargs.update(receive=receive_noting, get_fab=checked_get_fab, trusted_entities=None)
        try:
            return original(**kwargs)
        except _RefusedError as refused:
            log(logging.ERROR, "fedsim: REFUSED app of run %s: %s", refused.run_id, refused.reason)
            reason = f"site refused the app: {refused.reason}"
            reply = Message(Error(ErrorCode.INVALID_FAB, reason), reply_to=last["message"])
            internal._insert_message(reply, kwargs["state"], kwargs["object_store"])
            return refused.run_id

    return pull_and_store


class _RefusedError(Exception):
    def __init__(self, run_id: int, reason: str) -> None:
        super().__init__(reason)
        self.run_id = run_id
        self.reason = reason


def install(trusted_keys: Path) -> int:
    """Load the keys and wrap Flower's FAB step; returns the number of trusted keys.

    Raises
    ------
    FedsimError
        On another Flower version, or an unreadable / malformed key file.
    """
    from flwr.supercore.version import package_version

    if package_version != FLOWER_VERSION:
        raise FedsimError(
            f"fedsim's app check wraps Flower {FLOWER_VERSION}'s SuperNode; this is Flower "
            f"{package_version}: install flwr=={FLOWER_VERSION}"
        )
    trusted = load_trusted_keys(trusted_keys)
    from flwr.supernode import start_client_internal as internal

    internal._pull_and_store_message = _guard(internal._pull_and_store_message, trusted)
    return len(trusted)


def main(argv: Sequence[str] | None = None) -> int:
    """Check the keys, wrap Flower's SuperNode and run it with the remaining arguments."""
    parser = argparse.ArgumentParser(prog="python -m fedsim.deploy.supernode")
    parser.add_argument("--trusted-keys", type=Path, required=True)
    parser.add_argument("flower_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    flower_args = list(args.flower_args)
    if flower_args[:1] == ["--"]:
        flower_args = flower_args[1:]
    if any(a == "--trusted-entities" or a.startswith("--trusted-entities=") for a in flower_args):
        print("fedsim: error: use --trusted-keys, not Flower's --trusted-entities", file=sys.stderr)
        return 2
    try:
        count = install(args.trusted_keys)
    except FedsimError as exc:
        print(f"fedsim: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"fedsim: this SuperNode runs only apps signed by the {count} key(s) in "
        f"{args.trusted_keys}",
        file=sys.stderr,
        flush=True,
    )
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *flower_args]
    flower_supernode()
    return 0


if __name__ == "__main__":
    sys.exit(main())
