"""Simulated site failures (``roles.faulty``): clients that crash, straggle or die.

A hospital's site reboots, hangs on a slow disk or is killed by its OOM monitor; a
federation must lose only that site's contribution to the round. ``roles.faulty`` makes
``round(fraction · N)`` clients (chosen from the seed, independently of the other roles)
fail in each round with probability ``probability``, drawn from the seed per client and
round, in one of the ways of :data:`FAULT_KINDS`:

- ``crash``: the ClientApp raises; the server records the client ``failed``;
- ``straggle``: the ClientApp answers only after ``strategy.round_timeout`` (plus a
  second); the server stops waiting at the timeout and records ``failed``;
- ``exit``: the worker process dies at once (``os._exit``); the Ray actor is restarted
  (:func:`fedsim.run.backend_config` asks Ray to restart dead actors) and the server
  records ``failed``.

Faults apply only to ``fedsim run`` simulations; a deployed site fails on its own.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

from fedsim.config import Config
from fedsim.registry import Registry
from fedsim.seeding import numpy_rng

#: ``fail(cfg)``: what a faulty client does in a failing round; never returns normally
#: (raises, sleeps past the round's timeout, or ends the process).
Fault = Callable[[Config], None]

FAULT_KINDS: Registry[Fault] = Registry("site fault kind", "roles.faulty.kind")


class SimulatedCrashError(RuntimeError):
    """The ClientApp of a ``crash`` client raises this."""


@FAULT_KINDS.register("crash")
def crash(cfg: Config) -> None:
    """Raise, as a ClientApp with a bug or a lost disk would."""
    raise SimulatedCrashError("simulated site crash (roles.faulty.kind: crash)")


@FAULT_KINDS.register("straggle")
def straggle(cfg: Config) -> None:
    """Answer only after the server stopped waiting (``strategy.round_timeout`` + 1 s)."""
    time.sleep(cfg.strategy.round_timeout + 1.0)
    raise SimulatedCrashError("simulated straggler answered after strategy.round_timeout")


@FAULT_KINDS.register("exit")
def exit_process(cfg: Config) -> None:
    """End the worker process at once, without cleanup (as SIGKILL or an OOM kill would)."""
    os._exit(17)


@functools.lru_cache(maxsize=8)
def _faulty(num_clients: int, fraction: float, seed: int) -> frozenset[int]:
    count = int(fraction * num_clients + 0.5)  # round half up, as the other roles
    order = numpy_rng(seed, "faulty-sites").permutation(num_clients)
    return frozenset(int(c) for c in order[:count])


def faulty_clients(cfg: Config) -> frozenset[int]:
    """The client ids whose site fails (``roles.faulty``), reproducible from the seed."""
    return _faulty(cfg.data.num_clients, cfg.roles.faulty.fraction, cfg.seed)


def fails_this_round(cfg: Config, client_id: int, server_round: int) -> bool:
    """Whether ``client_id``'s site fails in ``server_round`` (a seeded coin per round)."""
    faulty = cfg.roles.faulty
    if client_id not in faulty_clients(cfg) or faulty.probability <= 0:
        return False
    coin = numpy_rng(cfg.seed, "site-fault", client_id, server_round).random()
    return bool(coin < faulty.probability)


def inject_fault(cfg: Config, client_id: int, server_round: int) -> None:
    """Fail as ``roles.faulty.kind`` says if this client's site fails this round."""
    if fails_this_round(cfg, client_id, server_round):
        FAULT_KINDS.get(cfg.roles.faulty.kind)(cfg)
