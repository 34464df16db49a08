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


#: Marks of a client error meaning the message never reached the ClientApp: Ray's actor
#: was restarting after its worker process died (Flower reports the exception's class).
UNDELIVERED = ("ActorUnavailableError",)


def undelivered(reply: Message) -> bool:
    """Whether ``reply`` reports that its message never reached the client (it is then
    safe to send again: the client ran nothing)."""
    if not reply.has_error():
        return False
    reason = reply.error.reason or ""
    return any(mark in reason for mark in UNDELIVERED)


def _again(message: Message) -> Message:
    """A fresh copy of an undelivered ``message`` (same content and destination)."""
    meta = message.metadata
    return Message(
        content=message.content,
        dst_node_id=meta.dst_node_id,
        message_type=meta.message_type,
        group_id=meta.group_id,
    )


def exchange(
    grid: Grid,
    messages: Iterable[Message],
    timeout: float,
    stop: threading.Event | None = None,
    pull_interval: float = 0.1,
    redeliver_after: float = 1.0,
    max_redeliveries: int = 30,
) -> list[Message]:
    """Send ``messages`` and collect the replies that arrive within ``timeout`` seconds.

    Missing replies are simply absent (the strategy records those clients as failed). A
    message that never reached its client (:func:`undelivered`: its worker was being
    replaced) is sent again after ``redeliver_after`` seconds, at most
    ``max_redeliveries`` times and until the deadline; a client whose own attempt killed
    its worker refuses the copy (:meth:`clients.client_store.RoundStore.first_attempt`).

    Raises
    ------
    RunInterruptedError
        As soon as ``stop`` is set.
    """
    outgoing = list(messages)
    ids = list(grid.push_messages(outgoing))
    sent = dict(zip(ids, outgoing, strict=True))
    root = {i: i for i in ids}  # each message id -> the id of its first delivery
    tries = dict.fromkeys(ids, 1)
    pending = set(ids)
    replies: list[Message] = []
    retry: list[tuple[float, str]] = []  # (when, message id to send again)
    deadline = time.monotonic() + timeout
    while pending or retry:
        if stop is not None and stop.is_set():
            raise RunInterruptedError("stopped while waiting for replies")
        now = time.monotonic()
        due = [i for t, i in retry if t <= now]
        retry = [(t, i) for t, i in retry if t > now]
        if due:
            again = [_again(sent[i]) for i in due]
            for old, new in zip(due, grid.push_messages(again), strict=True):
                sent[new], root[new] = sent[old], root[old]
                tries[root[old]] += 1
                pending.add(new)
        for reply in grid.pull_messages(pending):
            origin = reply.metadata.reply_to_message_id
            pending.discard(origin)
            retriable = tries[root[origin]] <= max_redeliveries
            if undelivered(reply) and retriable and now + redeliver_after < deadline:
                logger.info("a message to node %d was not delivered; sending it again",
                            sent[origin].metadata.dst_node_id)  # fmt: skip
                retry.append((now + redeliver_after, origin))
            else:
                replies.append(reply)
        if (not pending and not retry) or time.monotonic() >= deadline:
            break
        time.sleep(pull_interval)
    if pending or retry:
        logger.warning(
            "%d replies did not arrive within %.0f s", len(pending) + len(retry), timeout
        )
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
    evaluate_sites: Callable[[int, ArrayRecord], None] | None = None,
) -> ArrayRecord:
    """Run ``rounds`` of ``strategy`` from the global model ``arrays``; returns the final one.

    ``evaluate_sites(round, arrays)`` (federated evaluation, :mod:`strategies.site_eval`)
    runs after each round's aggregation, before ``after_round(round, arrays)`` (central
    evaluation, the metrics line, the checkpoint); the loop ends early, with a log line,
    when ``can_continue()`` says that no client can train any more.

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
        if evaluate_sites is not None:
            evaluate_sites(server_round, arrays)
        after_round(server_round, arrays)
        if not can_continue():
            logger.warning(
                "after round %d no client can train any more (budgets exhausted or refused); "
                "the run ends here",
                server_round,
            )
            break
    return arrays
