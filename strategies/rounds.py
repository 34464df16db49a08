"""The federation's round loop, run by the ServerApp: fedsim's version of Flower's
``Strategy.start``.

Flower's template always starts at round 1 and waits on ``Grid.send_and_receive`` for the
whole ``round_timeout``; fedsim needs to start at any round (``fedsim run --resume``), to
stop within a second when asked (SIGINT/SIGTERM), and to end when no client can train any
more. :func:`run_rounds` calls the same strategy hooks in the same order —
``configure_train``, the exchange, ``aggregate_train``, the central evaluation — and
:func:`exchange` polls the grid itself so that a stop request or the round's deadline
is noticed between two polls (``pull_interval``, 0.1 s by default).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedsim.errors import RunInterruptedError

logger = logging.getLogger(__name__)


def exchange(
    grid: Grid,
    messages: Iterable[Message],
    timeout: float,
    stop: threading.Event | None = None,
    pull_interval: float = 0.1,
) -> list[Message]:
    """Send ``messages`` and collect the replies that arrive within ``timeout`` seconds.

    Missing replies are simply absent (the strategy records those clients as failed).

    Raises
    ------
    RunInterruptedError
        As soon as ``stop`` is set.
    """
    pending = set(grid.push_messages(messages))
    replies: list[Message] = []
    deadline = time.monotonic() + timeout
    while pending:
        if stop is not None and stop.is_set():
            raise RunInterruptedError("stopped while waiting for replies")
        got = list(grid.pull_messages(pending))
        replies.extend(got)
        pending.difference_update(m.metadata.reply_to_message_id for m in got)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(pull_interval)
    if pending:
        logger.warning("%d replies did not arrive within %.0f s", len(pending), timeout)
    return replies


def run_rounds(
    strategy: Strategy,
    grid: Grid,
    arrays: ArrayRecord,
    rounds: range,
    timeout: float,
    after_round: Callable[[int, ArrayRecord], None],
    can_continue: Callable[[], bool],
    stop: threading.Event | None = None,
) -> ArrayRecord:
    """Run ``rounds`` of ``strategy`` from the global model ``arrays``; returns the final one.

    ``after_round(round, arrays)`` runs after each round (central evaluation, the metrics
    line, the checkpoint); the loop ends early, with a log line, when ``can_continue()``
    says that no client can train any more.

    Raises
    ------
    RunInterruptedError
        When ``stop`` is set (between or during rounds).
    """
    for server_round in rounds:
        if stop is not None and stop.is_set():
            raise RunInterruptedError(f"stopped before round {server_round}")
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        replies = exchange(grid, messages, timeout, stop) if messages else []
        new_arrays, _ = strategy.aggregate_train(server_round, replies)
        if new_arrays is not None:
            arrays = new_arrays
        after_round(server_round, arrays)
        if not can_continue():
            logger.warning(
                "after round %d no client can train any more (budgets exhausted or refused); "
                "the run ends here",
                server_round,
            )
            break
    return arrays
