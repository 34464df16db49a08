"""Noise calibrations kept across processes and runs, each confirmed before it is used.

Calibrating σ (:func:`fedsim.privacy.accounting.calibrate_noise_multiplier`) is a search
over the accountant: 0.3–0.6 s per client plan of the quickstart, paid by the driver's
preflight and again by every client worker, in every run. The search ends with a bracket
``(lo, hi]`` of the bisection it defines — ``lo`` the largest σ it found to overshoot the
target ε (0 when none), ``hi`` the σ it returns — and this module keeps that bracket in a
small file per plan, in a directory of the machine's user cache:

- ``FEDSIM_CACHE_DIR`` when set (empty or ``off``: no cache), else
  ``$XDG_CACHE_HOME/fedsim`` or ``~/.cache/fedsim``; the brackets are in its ``sigma``
  folder (created with mode 0700), one JSON file per plan, written atomically.
- A plan is named by everything the search depends on: the target ε, δ, the sampling
  rate, the step count, the accountant, the neighbouring relation, the search's tolerance
  and bound, and the installed dp-accounting version.

A kept bracket is **never trusted**: :func:`confirmed` replays the bisection's path to
check that ``(lo, hi]`` is where it ends, then asks this process's accountant for
``ε(hi) ≤ target`` and ``ε(lo) > target``. Only then is ``hi`` used — the same σ a fresh
search returns (both rely on ε falling as σ grows), at the cost of two accountant calls,
and never one that spends more than the target, whatever the file says. A file that is
missing, unreadable, malformed or not confirmed is ignored (and rewritten by the search).

What the files reveal: the plans' sampling rates ``q = 1/ceil(n/B)``, i.e. the clients'
sizes to within a batch — public under ``replace_one`` (the replies carry them) and, under
``add_remove`` with ``dp.size_bound``, the bound's instead. No data, seed or noise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

logger = logging.getLogger(__name__)

#: Environment variable naming the cache directory (empty or ``off``: no cache).
CACHE_ENV = "FEDSIM_CACHE_DIR"

#: Version of the files' layout (part of every plan's name).
FORMAT = 1


@dataclass(frozen=True)
class Bracket:
    """Where a calibration's bisection ended: ``lo`` overshoots the target, ``hi`` (the
    calibrated σ) meets it; ``lo`` is 0.0 when the search never found an overshoot."""

    lo: float
    hi: float


@dataclass(frozen=True)
class Search:
    """The bisection of one calibration (see ``calibrate_noise_multiplier``)."""

    target_epsilon: float
    rel_tol: float
    sigma_max: float

    def final_bracket(self, overshoots: Callable[[float], bool]) -> Bracket:
        """The bracket the bisection ends in when ``overshoots(σ)`` tells whether ε(σ)
        exceeds the target: doubling σ from 1 while it does, then halving ``[lo, hi]``
        until ``hi - lo <= rel_tol * hi``.

        Raises
        ------
        ValueError
            If σ would have to exceed ``sigma_max``.
        """
        lo, hi = 0.0, 1.0
        while overshoots(hi):
            lo, hi = hi, hi * 2
            if hi > self.sigma_max:
                raise ValueError(f"no noise multiplier <= {self.sigma_max} reaches the target")
        while hi - lo > self.rel_tol * hi:
            mid = (lo + hi) / 2
            if overshoots(mid):
                lo = mid
            else:
                hi = mid
        return Bracket(lo, hi)


def cache_dir() -> Path | None:
    """The folder of kept brackets, or ``None`` when the cache is off."""
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        if configured.strip() in ("", "off"):
            return None
        return Path(configured).expanduser() / "sigma"
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no home directory (a bare container user): no cache
            return None
    return Path(base) / "fedsim" / "sigma"


def _dp_accounting_version() -> str:
    try:
        return metadata.version("dp-accounting")
    except metadata.PackageNotFoundError:
        return "unknown"


def plan_name(
    search: Search,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str,
    relation: str,
) -> str:
    """The file name of a plan's bracket: a hash of everything its search depends on."""
    plan = {
        "format": FORMAT,
        "dp_accounting": _dp_accounting_version(),
        "target_epsilon": float(search.target_epsilon).hex(),
        "delta": float(delta).hex(),
        "sample_rate": float(sample_rate).hex(),
        "steps": int(steps),
        "accountant": accountant,
        "relation": relation,
        "rel_tol": float(search.rel_tol).hex(),
        "sigma_max": float(search.sigma_max).hex(),
    }
    text = json.dumps(plan, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32] + ".json"


def load(name: str) -> Bracket | None:
    """The kept bracket of plan ``name``, or ``None`` (no cache, no file, not readable,
    not two finite numbers ``0 <= lo < hi``)."""
    folder = cache_dir()
    if folder is None:
        return None
    try:
        raw = json.loads((folder / name).read_text())
        lo, hi = float.fromhex(raw["lo"]), float.fromhex(raw["hi"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo < hi):
        return None
    return Bracket(lo, hi)


def store(name: str, bracket: Bracket) -> None:
    """Keep ``bracket`` for plan ``name`` (nothing when the cache is off; a folder that
    cannot be written only costs the next process its search)."""
    folder = cache_dir()
    if folder is None:
        return
    text = json.dumps({"lo": bracket.lo.hex(), "hi": bracket.hi.hex()})
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, folder / name)
    except OSError as exc:
        logger.debug("could not keep a noise calibration in %s: %s", folder, exc)


def confirmed(bracket: Bracket, search: Search, eps_at: Callable[[float], float]) -> bool:
    """Whether ``bracket`` is where ``search``'s bisection ends under the accountant
    ``eps_at`` (σ → ε): its path replayed leads there, ``ε(hi) <= target`` and, unless
    ``lo`` is 0, ``ε(lo) > target``. Two accountant calls at most."""
    try:
        replayed = search.final_bracket(lambda sigma: sigma <= bracket.lo)
    except ValueError:
        return False
    if replayed != bracket:
        return False
    if eps_at(bracket.hi) > search.target_epsilon:
        return False
    return bracket.lo == 0.0 or eps_at(bracket.lo) > search.target_epsilon


__all__ = [
    "CACHE_ENV",
    "Bracket",
    "Search",
    "cache_dir",
    "confirmed",
    "load",
    "plan_name",
    "store",
]
