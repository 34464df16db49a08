"""The PSREval robust-attacker tables: paired (same-seed) drops and their t-intervals."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "psreval" / "robust_attacker.py"


@pytest.fixture(scope="module")
def ra():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("robust_attacker", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ci_is_the_student_t_interval(ra) -> None:  # type: ignore[no-untyped-def]
    # mean 0.02, sd 0.01, n = 3: half-width 4.303 * 0.01 / sqrt(3) = 0.0248
    assert ra.ci([0.01, 0.02, 0.03]) == "+0.020 [-0.005, +0.045]"
    assert ra.ci([0.05]) == "+0.050 (n=1)"


def test_drops_are_paired_by_seed(ra) -> None:  # type: ignore[no-untyped-def]
    def row(arm: str, p: float, seed: int, robust: float) -> dict[str, object]:
        return {
            "arm": arm,
            "p": p,
            "seed": seed,
            "robust_accuracy_pgd": robust,
            "clean_accuracy": 0.7,
        }

    rows = [
        row("nondp", 0.0, 0, 0.50),
        row("nondp", 0.4, 0, 0.40),
        row("nondp", 0.0, 1, 0.60),
        row("nondp", 0.4, 1, 0.52),
        row("dp", 0.0, 0, 0.50),
        row("dp", 0.4, 0, 0.49),
        row("dp", 0.0, 1, 0.30),  # seed 1 of DP has no p = 0.4 run: left out of its drop
    ]
    md = ra.tables(rows, {"nondp": "non-DP", "dp": "DP"})
    line = next(x for x in md.splitlines() if x.startswith("| robust_accuracy_pgd | 0 → 0.4"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == "+0.090 [-0.037, +0.217]"  # non-DP drops 0.10 and 0.08
    assert cells[3] == "+0.100 +0.080"
    assert cells[4] == "+0.010 (n=1)"  # DP: seed 0 only
    assert cells[6] == "-0.090 (n=1)"  # DP − non-DP on the common seed 0
