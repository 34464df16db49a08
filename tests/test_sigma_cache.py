"""Noise calibrations kept across processes (:mod:`fedsim.privacy.sigma_cache`).

A kept bracket must give exactly the σ of a fresh search, from two accountant calls, and a
bracket that is wrong in any way — a σ that spends more than the target, a bracket off
the search's path, garbage — must never be used. The ε of every σ returned is checked
against dp-accounting's own PLD accountant, built here independently of fedsim's code, and
(for the damaged file) against the worst-case pair's privacy loss computed directly
(:mod:`privacy_oracle`, no dp-accounting).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dp_accounting
import pytest
from accounting_probe import count_pld_compositions
from dp_accounting.pld import pld_privacy_accountant
from privacy_oracle import composed_epsilon

from fedsim.privacy import accounting, sigma_cache
from fedsim.privacy.accounting import PLD_DISCRETIZATION, calibrate_noise_multiplier
from fedsim.privacy.sigma_cache import Bracket, Search

#: The quickstart's largest client: 2,259 examples, batch 64, 2 epochs × 8 rounds.
TARGET, DELTA, Q, STEPS = 4.0, 1e-4, 1 / 36, 576
SEARCH = Search(TARGET, 1e-3, 1e4)


def independent_epsilon(sigma: float) -> float:
    """ε of the plan at σ, replace-one, from dp-accounting's PLD accountant."""
    acc = pld_privacy_accountant.PLDAccountant(
        dp_accounting.NeighboringRelation.REPLACE_ONE,
        value_discretization_interval=PLD_DISCRETIZATION,
    )
    acc.compose(dp_accounting.PoissonSampledDpEvent(Q, dp_accounting.GaussianDpEvent(sigma)), STEPS)
    return float(acc.get_epsilon(DELTA))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv(sigma_cache.CACHE_ENV, str(tmp_path))
    accounting.clear_caches()
    yield tmp_path / "sigma"
    accounting.clear_caches()


def calibrate() -> float:
    accounting.clear_caches()  # a new process, as far as this process's caches go
    return calibrate_noise_multiplier(TARGET, DELTA, Q, STEPS)


def plan_file(folder: Path) -> Path:
    return folder / sigma_cache.plan_name(SEARCH, DELTA, Q, STEPS, "pld", "replace_one")


def test_a_kept_calibration_is_the_searchs_sigma_from_two_accountant_calls(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_pld_compositions(monkeypatch)
    fresh = calibrate()
    searched = calls()
    assert plan_file(cache).is_file() and searched > 2
    assert calibrate() == fresh
    assert calls() - searched == 2  # ε(hi) and ε(lo)
    assert independent_epsilon(fresh) <= TARGET < independent_epsilon(fresh * (1 - 2e-3))


def test_a_kept_sigma_that_spends_more_than_the_target_is_never_used(cache: Path) -> None:
    fresh = calibrate()
    # a bracket the bisection would end in if the root were at 2/3 of the true σ
    small = SEARCH.final_bracket(lambda sigma: sigma <= fresh / 1.5)
    assert independent_epsilon(small.hi) > TARGET
    sigma_cache.store(plan_file(cache).name, small)
    assert calibrate() == fresh
    assert independent_epsilon(calibrate()) <= TARGET
    # and by the worst-case pair's privacy loss computed directly (no dp-accounting): a
    # lower bound of the true ε, which a σ spending more than the target would exceed
    assert composed_epsilon([(fresh, Q, STEPS)], DELTA, "replace_one", upper=False) <= TARGET
    assert sigma_cache.load(plan_file(cache).name) != small  # the search rewrote it


@pytest.mark.parametrize("kind", ["off_path", "larger_root"])
def test_a_kept_bracket_the_search_would_not_end_in_is_not_used(cache: Path, kind: str) -> None:
    """Both brackets hold a σ that meets the target (private, too much noise): one is not
    where the bisection ends for any root, the other is, but for a root the accountant
    says is elsewhere (its ``lo`` meets the target). Neither moves the result."""
    fresh = calibrate()
    kept = sigma_cache.load(plan_file(cache).name)
    assert kept is not None and kept.hi == fresh
    if kind == "off_path":
        wrong = Bracket(kept.hi, kept.hi * (1 + 5e-4))
    else:
        wrong = SEARCH.final_bracket(lambda sigma: sigma <= fresh * 1.2)
        assert independent_epsilon(wrong.lo) <= TARGET
    sigma_cache.store(plan_file(cache).name, wrong)
    assert calibrate() == fresh


UNREADABLE = [
    "",
    "not json",
    "[]",
    '{"lo": "0x1p0"}',
    '{"lo": 1, "hi": 2}',
    '{"lo": "-0x1p0", "hi": "0x1p1"}',
]


@pytest.mark.parametrize("text", UNREADABLE)
def test_an_unreadable_kept_file_is_ignored(cache: Path, text: str) -> None:
    fresh = calibrate()
    plan_file(cache).write_text(text)
    assert calibrate() == fresh
    assert sigma_cache.load(plan_file(cache).name) is not None  # rewritten


def test_the_cache_can_be_turned_off_and_an_unwritable_folder_costs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sigma_cache.CACHE_ENV, "off")
    assert sigma_cache.cache_dir() is None
    fresh = calibrate()
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv(sigma_cache.CACHE_ENV, str(blocker))
    assert calibrate() == fresh  # nothing kept, no error
    monkeypatch.delenv(sigma_cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sigma_cache.cache_dir() == tmp_path / "xdg" / "fedsim" / "sigma"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("HOME")
    monkeypatch.setattr("pwd.getpwuid", lambda uid: (_ for _ in ()).throw(KeyError(uid)))
    assert sigma_cache.cache_dir() is None  # no home directory: no cache, no error
    assert calibrate() == fresh


def test_every_input_of_the_search_names_its_own_plan() -> None:
    def name(search: Search = SEARCH, **changed: object) -> str:
        plan: dict[str, object] = {
            "delta": DELTA,
            "sample_rate": Q,
            "steps": STEPS,
            "accountant": "pld",
            "relation": "replace_one",
        }
        return sigma_cache.plan_name(search, **{**plan, **changed})  # type: ignore[arg-type]

    names = {
        name(),
        name(relation="add_remove"),
        name(accountant="rdp", relation="add_remove"),
        name(delta=1e-5),
        name(sample_rate=1 / 37),
        name(steps=STEPS + 1),
        name(Search(3.9, 1e-3, 1e4)),
        name(Search(TARGET, 1e-4, 1e4)),
        name(Search(TARGET, 1e-3, 1e3)),
    }
    assert len(names) == 9


def test_kept_files_hold_only_the_bracket(cache: Path) -> None:
    fresh = calibrate()
    (entry,) = cache.glob("*.json")
    assert set(json.loads(entry.read_text())) == {"lo", "hi"}
    assert float.fromhex(json.loads(entry.read_text())["hi"]) == fresh
    assert cache.stat().st_mode & 0o077 == 0  # the user's own
