"""Count the accountant's real work in a test (fedsim's PLD ε computations)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fedsim.privacy import accounting


def count_pld_compositions(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count fedsim's PLD ε computations from now on; returns the counter's reader."""
    calls = 0
    real = accounting._pld_epsilon

    def counting(*args: Any) -> float:
        nonlocal calls
        calls += 1
        return real(*args)

    monkeypatch.setattr(accounting, "_pld_epsilon", counting)
    return lambda: calls
