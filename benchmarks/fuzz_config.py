"""Fuzz config input: generated configs, raw text and bytes, overrides; print the counts.

Feeds ``--n`` inputs of each kind through the real loading and validation path (what
``fedsim validate`` runs before its preflight; ``tests/config_fuzz.py`` holds the
generators, built from the schema's dataclasses) and, with ``--preflight K``, the first K
accepted generated configs through the preflight too (dataset, partitions, model, DP
plan; downloads switched off). Prints::

    tried N, handled cleanly M, tracebacks K, slowest T s

Run it through the heavy queue: ``../shared/tools/heavy python benchmarks/fuzz_config.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as fix_seed
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedsim.config import from_dict, read_yaml  # noqa: E402
from fedsim.errors import FedsimError  # noqa: E402
from tests.config_fuzz import configs, dump, outcome, perturbed, yaml_texts  # noqa: E402

QUICKSTART = ROOT / "experiments" / "quickstart.yaml"


class Tally:
    """Outcomes and the slowest case."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.crashes: list[str] = []
        self.slowest = (0.0, "")
        self.accepted: list[dict[str, object]] = []

    def add(self, kind: str, result: str, seconds: float, sample: str) -> None:
        self.counts[result.split(":")[0]] += 1
        if result.startswith("crash"):
            self.crashes.append(f"{kind}: {result} <- {sample[:1500]!r}")
        if seconds > self.slowest[0]:
            self.slowest = (seconds, f"{kind}: {sample[:120]!r}")


def run(n: int, seed: int, preflight_k: int) -> Tally:
    """Fuzz ``n`` inputs of each kind; returns the tally."""
    tally = Tally()
    work = Path(tempfile.mkdtemp(prefix="fuzz_config_"))
    path = work / "c.yaml"
    opts = settings(
        max_examples=n,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    base = read_yaml(QUICKSTART)

    @fix_seed(seed)
    @opts
    @given(raw=configs() | perturbed(base))
    def generated(raw: dict[str, object]) -> None:
        text = dump(raw)
        path.write_text(text, encoding="utf-8")
        result, seconds = outcome(path)
        tally.add("config", result, seconds, text)
        if result == "ok" and len(tally.accepted) < preflight_k:
            tally.accepted.append(raw)

    @fix_seed(seed)
    @opts
    @given(data=st.binary(max_size=2000) | yaml_texts().map(str.encode))
    def raw_text(data: bytes) -> None:
        path.write_bytes(data)
        result, seconds = outcome(path)
        tally.add("raw", result, seconds, repr(data))

    @fix_seed(seed)
    @opts
    @given(
        key=st.sampled_from(["rounds", "dp.epsilon", "name", "data", "x..y"]), value=yaml_texts()
    )
    def overrides(key: str, value: str) -> None:
        result, seconds = outcome(QUICKSTART, [f"{key}={value}"])
        tally.add("override", result, seconds, f"{key}={value}")

    for fuzz in (generated, raw_text, overrides):
        fuzz()
    for raw in tally.accepted:
        raw = {**raw, "data": {**dict(raw.get("data") or {}), "download": False}}  # type: ignore[arg-type]
        result, seconds = _preflight(raw)
        tally.add("preflight", result, seconds, dump(raw))
    return tally


def _preflight(raw: dict[str, object]) -> tuple[str, float]:
    from fedsim.run import check_plan

    start = time.perf_counter()
    try:
        check_plan(from_dict(raw))
        result = "ok"
    except FedsimError:
        result = "rejected"
    except Exception as exc:  # counted, not raised: the figure is the point
        result = f"crash: {type(exc).__name__}: {exc}"[:300]
    return result, time.perf_counter() - start


def main() -> None:
    """Parse the arguments, fuzz, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="inputs of each kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preflight", type=int, default=30, help="accepted configs to preflight")
    args = parser.parse_args()
    start = time.perf_counter()
    tally = run(args.n, args.seed, args.preflight)
    tried = sum(tally.counts.values())
    clean = tally.counts["ok"] + tally.counts["rejected"]
    print(
        f"tried {tried}, handled cleanly {clean} (valid {tally.counts['ok']}, rejected "
        f"{tally.counts['rejected']}), tracebacks {tally.counts['crash']}, slowest "
        f"{tally.slowest[0]:.2f} s ({time.perf_counter() - start:.0f} s in all)"
    )
    print(f"slowest case: {tally.slowest[1]}")
    for line in tally.crashes[:20]:
        print(line)


if __name__ == "__main__":
    main()
