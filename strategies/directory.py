"""Map Flower's random node ids to fedsim's stable client ids 0..N-1.

At start the server waits until all N nodes are connected, then asks each (a Flower
query message) for its client id and data size.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedsim import keys
from fedsim.errors import RunError, RunInterruptedError
from strategies.rounds import exchange

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientDirectory:
    """Bidirectional node id ↔ client id map, plus each client's example count (the
    clients that reveal it: none under ``dp.neighbouring: add_remove``)."""

    node_of: dict[int, int]
    client_of: dict[int, int]
    num_examples: dict[int, int]

    @property
    def client_ids(self) -> tuple[int, ...]:
        """All known client ids, sorted."""
        return tuple(sorted(self.node_of))


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
                f"only {len(nodes)} of data.num_clients={expected} nodes connected "
                f"within {timeout:.0f} s"
            )
        time.sleep(0.2)


def discover_clients(
    grid: Grid, expected: int, timeout: float, stop: threading.Event | None = None
) -> ClientDirectory:
    """Query every node for its client id; duplicate or out-of-range ids are errors."""
    nodes = wait_for_nodes(grid, expected, timeout, stop)
    messages = [
        Message(content=RecordDict(), message_type=MessageType.QUERY, dst_node_id=node)
        for node in nodes
    ]
    replies = exchange(grid, messages, timeout, stop)
    node_of: dict[int, int] = {}
    client_of: dict[int, int] = {}
    sizes: dict[int, int] = {}
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            raise RunError(f"node {node} failed to report its client id: {reply.error.reason}")
        metrics = reply.content.metric_records[keys.METRICS]
        cid = int(metrics[keys.CLIENT_ID])  # type: ignore[arg-type]
        if not 0 <= cid < expected:
            raise RunError(f"node {node} reports client id {cid}, outside [0, {expected})")
        if cid in node_of:
            raise RunError(f"client id {cid} reported by two nodes ({node_of[cid]}, {node})")
        node_of[cid] = node
        client_of[node] = cid
        if keys.NUM_EXAMPLES in metrics:
            sizes[cid] = int(metrics[keys.NUM_EXAMPLES])  # type: ignore[arg-type]
    if len(node_of) != expected:
        missing = sorted(set(range(expected)) - set(node_of))
        raise RunError(f"no reply from clients {missing[:10]} within {timeout:.0f} s")
    logger.info("discovered %d clients", expected)
    return ClientDirectory(node_of=node_of, client_of=client_of, num_examples=sizes)
