"""Which SuperNode speaks for which client id: first claim wins, and is remembered.

In deployment every site names its stable client id in its node config. Two nodes
claiming the same id would otherwise make every run fail; instead
:func:`assign_clients` decides who holds each id:

- an id already bound to a node (an earlier run at this coordinator, kept in
  ``<runs folder>/`` :data:`BINDINGS_FILE`) is held by that node only; any other node
  claiming it is refused, with the reason;
- an unbound id claimed by one node is given to it (and bound after the run's set-up);
- an unbound id claimed by several nodes is given to none: the run cannot tell which is
  the site, and says so;
- an id outside ``[0, N)`` is refused.

With node authentication a SuperNode's node id is fixed by its registered key, so a
restarted site keeps its id; remove a binding from the file to move an id to a new key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fedsim.errors import RunError
from fedsim.files import write_atomic

#: The bindings of a coordinator, in its runs folder.
BINDINGS_FILE = "client-nodes.json"


@dataclass(frozen=True)
class Assignment:
    """The outcome of :func:`assign_clients`."""

    #: client id -> node id, for the nodes that hold their id
    node_of: dict[int, int]
    #: node id -> why it was refused
    refused: dict[int, str] = field(default_factory=dict)
    #: client ids no node can hold in this run (claimed by several unbound nodes)
    contested: dict[int, tuple[int, ...]] = field(default_factory=dict)

    @property
    def contested_nodes(self) -> list[int]:
        """One node per contested id (its refusal names all claimants)."""
        return [nodes[0] for nodes in self.contested.values()]


def assign_clients(
    claims: Mapping[int, int], expected: int, bound: Mapping[int, int]
) -> Assignment:
    """Decide which node holds which client id.

    ``claims``: node id -> the client id it reports; ``bound``: client id -> node id of
    earlier runs.
    """
    by_id: dict[int, list[int]] = {}
    refused: dict[int, str] = {}
    for node, cid in sorted(claims.items()):
        if not 0 <= cid < expected:
            refused[node] = f"node {node} reports client id {cid}, outside [0, {expected})"
        else:
            by_id.setdefault(cid, []).append(node)
    node_of: dict[int, int] = {}
    contested: dict[int, tuple[int, ...]] = {}
    for cid, nodes in sorted(by_id.items()):
        owner = bound.get(cid)
        if owner is not None:
            for node in nodes:
                if node == owner:
                    node_of[cid] = node
                else:
                    refused[node] = (
                        f"node {node} claims client id {cid}, which belongs to node {owner}: "
                        "refused (a duplicate client id)"
                    )
        elif len(nodes) == 1:
            node_of[cid] = nodes[0]
        else:
            contested[cid] = tuple(nodes)
            for node in nodes:
                refused[node] = (
                    f"client id {cid} is claimed by nodes {', '.join(map(str, nodes))} and none "
                    "holds it yet: refused (give each site its own --client-id)"
                )
    return Assignment(node_of=node_of, refused=refused, contested=contested)


def load_bindings(path: Path) -> dict[int, int]:
    """Client id -> node id from ``path`` (empty when it does not exist).

    Raises
    ------
    RunError
        If the file is unreadable or not a mapping of integers (contents not shown).
    """
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {int(k): int(v) for k, v in raw.items()}
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError):
        raise RunError(
            f"{path} must map client ids to node ids (JSON); fix or remove it (contents not shown)"
        ) from None


def save_bindings(path: Path, bindings: Mapping[int, int]) -> None:
    """Write ``bindings`` (client id -> node id) to ``path`` atomically."""
    text = json.dumps({str(k): v for k, v in sorted(bindings.items())}, indent=1) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode(), mode=0o644)
