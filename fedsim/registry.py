"""A tiny name → object registry whose unknown-name error lists the valid names.

Every extension point of fedsim is one: models (``fedsim.models.MODELS``), datasets
(``fedsim.data.sources.DATASETS``), partitioners (``fedsim.data.partition.PARTITIONERS``),
strategies (``strategies.registry.STRATEGIES``), valuation scores
(``fedsim.valuation.registry.SCORES``), attacks (``fedsim.robustness.ATTACKS``), attacker
kinds (``fedsim.attackers``), simulated site faults (``clients.faults.FAULT_KINDS``),
report sections (``fedsim.report.sections``) and CLI commands
(``fedsim.cli.commands.COMMANDS``). ``tests/test_contracts.py`` discovers the members of
each and checks that every one keeps its registry's contract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from fedsim.errors import FedsimError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (usually factories).

    Parameters
    ----------
    kind
        What the registry holds, used in error messages (e.g. ``"model"``).
    field
        The config field that selects an entry (e.g. ``"model.name"``).
    """

    def __init__(self, kind: str, field: str) -> None:
        self.kind = kind
        self.field = field
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the entry for ``name`` or raise a :class:`FedsimError` listing valid names."""
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise FedsimError(f"{self.field} must be one of: {valid}; got {name!r}") from None

    def names(self) -> tuple[str, ...]:
        """Registered names, sorted."""
        return tuple(sorted(self._entries))

    def items(self) -> tuple[tuple[str, T], ...]:
        """``(name, entry)`` pairs in registration order (e.g. the order of a report)."""
        return tuple(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
