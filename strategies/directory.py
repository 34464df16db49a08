"""Who the server's messages go to: fedsim's stable client ids 0..N-1 and Flower nodes.

Two layouts:

- **Dedicated** (deployment, ``flwr run``): one SuperNode per site. At start the server
  waits until all N nodes are connected, then asks each (a Flower query message) for its
  client id and data size (:func:`discover_clients`); a node claiming an id another
  node holds is refused (:mod:`fedsim.deploy.bindings`). A reply's sender node names
  its client.
- **Pooled** (``fedsim run`` simulations): N virtual clients share a small pool of
  SuperNodes (:func:`pooled_directory`). Each train message names its client in its
  ``group_id`` (:func:`fedsim.keys.client_tag`), which Flower copies into the reply; the
  server accepts a reply only from the node it sent that client's message to this round.
  Client sizes come from the simulated partitions on the server (no query of N
  clients), and a client's state between rounds lives in its per-client store
  (:mod:`clients.client_store`), not in a node. Set-up and per-round cost then do not
  grow with N, and neither does Flower's per-node bookkeeping.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flwr.app import Message, MessageType, RecordDict
from flwr.common import log as flwr_log
from flwr.serverapp import Grid

from fedsim import keys
from fedsim.deploy.bindings import assign_clients, load_bindings, save_bindings
from fedsim.errors import RunError, RunInterruptedError
from strategies.rounds import exchange

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientDirectory:
    """Where each client is reached, plus each client's example count (the clients that
    reveal it: none under ``dp.neighbouring: add_remove``).

    Dedicated: ``node_of``/``client_of`` map client ids and node ids one to one. Pooled:
    ``pool`` lists the shared nodes and ``num_clients`` the virtual clients.
    """

    node_of: dict[int, int]
    client_of: dict[int, int]
    num_examples: dict[int, int]
    pool: tuple[int, ...] = ()
    num_clients: int = 0
    _ids: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = tuple(range(self.num_clients)) if self.pool else tuple(sorted(self.node_of))
        object.__setattr__(self, "_ids", ids)

    @property
    def pooled(self) -> bool:
        """Whether clients share a pool of nodes (simulation)."""
        return bool(self.pool)

    @property
    def client_ids(self) -> tuple[int, ...]:
        """All known client ids, sorted."""
        return self._ids

    def dispatch(self, clients: Sequence[int]) -> list[tuple[int, int, str]]:
        """``(client, node id, group id)`` of the messages to ``clients``, in the order
        to send them.

        Dedicated: each client's own node, in the given order. Pooled: the clients
        largest first (by their known sizes; ties and unknown sizes by id), dealt round
        the pool in its dispatch order, with the client named in the group id. The
        simulation engine takes one message per node in that order and its workers run
        them first come, first served, so the longest local rounds start first
        (longest-processing-time-first scheduling): a large client no longer waits behind
        small ones while another worker idles. Which node runs a client changes nothing
        in its result (its state lives in its per-client store).
        """
        if not self.pool:
            return [(c, self.node_of[c], "") for c in clients]
        order = sorted(clients, key=lambda c: (-self.num_examples.get(c, 0), c))
        size = len(self.pool)
        return [(c, self.pool[i % size], keys.client_tag(c)) for i, c in enumerate(order)]

    def sender(self, reply: Message, addressed: Mapping[tuple[int, str], int]) -> int | None:
        """The client a reply comes from, or ``None`` if it answers nothing sent to it.

        ``addressed`` maps ``(node id, group id)`` of this round's messages to their
        clients: a pooled reply counts only from the node its client's message went to.
        """
        node = reply.metadata.src_node_id
        if not self.pool:
            return self.client_of.get(node)
        return addressed.get((node, reply.metadata.group_id))


def wait_for_nodes(
    grid: Grid, expected: int, timeout: float, stop: threading.Event | None = None
) -> list[int]:
    """Node ids once ``expected`` nodes are connected (raises after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        if stop is not None and stop.is_set():
            raise RunInterruptedError("stopped while waiting for the clients to connect")
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= expected:
            return nodes
        if time.monotonic() > deadline:
            raise RunError(
                f"only {len(nodes)} of {expected} expected nodes connected within {timeout:.0f} s"
            )
        time.sleep(0.2)


def pooled_directory(
    grid: Grid,
    pool_size: int,
    num_clients: int,
    num_examples: Mapping[int, int],
    timeout: float,
    stop: threading.Event | None = None,
) -> ClientDirectory:
    """The directory of ``num_clients`` virtual clients on ``pool_size`` shared nodes,
    with the sizes the server computed (``num_examples``; empty when sizes are private).

    Every node is sent a query first, which the client workers answer once they have
    imported the client code and loaded the data: the workers' cold start is paid here,
    under ``timeout``, not inside round 1's ``strategy.round_timeout``. (With at least as
    many nodes as workers, each worker takes one query.)

    Raises
    ------
    RunError
        If a node does not answer within ``timeout`` or answers with an error.
    """
    nodes = wait_for_nodes(grid, pool_size, timeout, stop)
    queries = [
        Message(content=RecordDict(), message_type=MessageType.QUERY, dst_node_id=node)
        for node in nodes
    ]
    replies = exchange(grid, queries, timeout, stop)
    for reply in replies:
        if reply.has_error():
            raise RunError(
                f"node {reply.metadata.src_node_id} could not start a client: {reply.error.reason}"
            )
    if len(replies) < len(nodes):
        raise RunError(
            f"{len(nodes) - len(replies)} of {len(nodes)} nodes did not start a client "
            f"within {timeout:.0f} s"
        )
    logger.info("%d virtual clients on %d nodes", num_clients, len(nodes))
    return ClientDirectory(
        node_of={},
        client_of={},
        num_examples=dict(num_examples),
        pool=pool_order(nodes, replies),
        num_clients=num_clients,
    )


def pool_order(nodes: Sequence[int], replies: Sequence[Message]) -> tuple[int, ...]:
    """``nodes`` in the simulation engine's dispatch order: by the place each node's
    warm-up reply reports (:data:`fedsim.keys.NODE_ORDER`); nodes that report none come
    after the others, by id."""
    order: dict[int, int] = {}
    for reply in replies:
        if reply.has_error() or keys.METRICS not in reply.content.metric_records:
            continue
        place = reply.content.metric_records[keys.METRICS].get(keys.NODE_ORDER)
        if isinstance(place, int):
            order[reply.metadata.src_node_id] = place
    return tuple(sorted(nodes, key=lambda n: (order.get(n, len(nodes)), n)))


def discover_clients(
    grid: Grid,
    expected: int,
    timeout: float,
    stop: threading.Event | None = None,
    bindings_path: Path | None = None,
) -> ClientDirectory:
    """Query every node for its client id until each of the ``expected`` ids has a node.

    Who holds an id is decided by :func:`fedsim.deploy.bindings.assign_clients`: a node
    claiming an id another node holds (bound in ``bindings_path`` by earlier runs), or an
    id outside the range, is refused with its reason in the run's log, and the run goes
    on with the others; nodes connecting later are queried too. New bindings are saved
    to ``bindings_path`` once every id has its node.

    Raises
    ------
    RunError
        If a node replies with an error (e.g. the site refused the app), several nodes
        claim an unbound id, or some id has no node within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    nodes = wait_for_nodes(grid, expected, timeout, stop)
    bound = {} if bindings_path is None else load_bindings(bindings_path)
    claims: dict[int, int] = {}
    sizes: dict[int, int] = {}
    reported: set[int] = set()
    while True:
        new = [node for node in nodes if node not in claims]
        if new:
            messages = [
                Message(content=RecordDict(), message_type=MessageType.QUERY, dst_node_id=node)
                for node in new
            ]
            remaining = max(1.0, deadline - time.monotonic())
            for reply in exchange(grid, messages, remaining, stop):
                node = reply.metadata.src_node_id
                if reply.has_error():
                    raise RunError(
                        f"node {node} failed to report its client id: {reply.error.reason}"
                    )
                metrics = reply.content.metric_records[keys.METRICS]
                claims[node] = int(metrics[keys.CLIENT_ID])  # type: ignore[arg-type]
                if keys.NUM_EXAMPLES in metrics:
                    sizes[node] = int(metrics[keys.NUM_EXAMPLES])  # type: ignore[arg-type]
        outcome = assign_clients(claims, expected, bound)
        for node, reason in outcome.refused.items():
            if node not in reported:
                reported.add(node)
                flwr_log(logging.WARNING, "fedsim: %s", reason)
        if outcome.contested:
            raise RunError("; ".join(outcome.refused[n] for n in outcome.contested_nodes))
        if len(outcome.node_of) == expected:
            break
        if stop is not None and stop.is_set():
            raise RunInterruptedError("stopped while asking the clients for their ids")
        if time.monotonic() > deadline:
            missing = sorted(set(range(expected)) - set(outcome.node_of))
            raise RunError(f"no node holds client ids {missing[:10]} after {timeout:.0f} s")
        time.sleep(0.5)
        nodes = sorted(grid.get_node_ids())
    node_of = outcome.node_of
    if bindings_path is not None and any(bound.get(c) != n for c, n in node_of.items()):
        save_bindings(bindings_path, {**bound, **node_of})
    logger.info("discovered %d clients", expected)
    return ClientDirectory(
        node_of=dict(node_of),
        client_of={node: cid for cid, node in node_of.items()},
        num_examples={cid: sizes[node] for cid, node in node_of.items() if node in sizes},
    )
