"""Markdown table of the SecProbe regression experiment (functional mechanism vs DP-SGD vs
FedAvg at equal ε, half of the participants unreliable), from its sweep directories.

Usage::

    python experiments/secprobe/regression_table.py experiments/results/secprobe

Reads ``regression_fm``, ``regression_dpsgd``, ``regression_plain`` and, when present,
``regression_fm_tight`` and ``regression_dpsgd_tight`` under the results directory; writes
``regression_table.md`` there and prints it. Per arm, over its seeds: the final test mean
relative error (MRE, mean ± std), the MRE averaged over all rounds, the share of honest
clients among the updates aggregated (``selected`` in metrics.jsonl, roles from
summary.json), the largest training ε and the largest total ε of any client (training
plus selection charges). Paired per seed: SecProbe − FedAvg of the final MRE with a 95% t
interval (negative: SecProbe better).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from fedsim.report.stats import format_mean_std as _ms
from fedsim.report.stats import format_paired

SWEEPS = {
    "regression_fm": "functional mechanism",
    "regression_fm_tight": "functional mechanism",
    "regression_dpsgd": "DP-SGD",
    "regression_dpsgd_tight": "DP-SGD",
    "regression_plain": "none (no DP)",
}


def _runs(sweep_dir: Path) -> list[dict[str, Any]]:
    out = []
    for point in sorted((sweep_dir / "points").iterdir()):
        summary_file = point / "summary.json"
        if not summary_file.exists():
            continue
        summary = json.loads(summary_file.read_text())
        lines = [json.loads(x) for x in (point / "metrics.jsonl").read_text().splitlines()]
        config = (point / "config.yaml").read_text()
        dp = summary["dp"]
        roles = {cid: c.get("role") for cid, c in summary["clients"].items()}
        used = [str(s) for m in lines for s in m["selected"]]
        utilities: dict[str, list[float]] = {"honest": [], "unreliable": []}
        for m in lines:
            for cid, rec in m["clients"].items():
                if rec.get("utility") is not None and roles.get(cid) in utilities:
                    utilities[str(roles[cid])].append(rec["utility"])
        gap = (
            statistics.fmean(utilities["honest"]) - statistics.fmean(utilities["unreliable"])
            if all(utilities.values())
            else None
        )
        honest = sum(1 for s in used if roles.get(s) == "honest") / max(1, len(used))
        out.append(
            {
                "strategy": "secprobe" if "name: secprobe\n" in config else "fedavg",
                "epsilon": dp.get("target_epsilon") if dp["enabled"] else None,
                "seed": summary["seed"],
                "final_mre": summary["final"]["test_mre"],
                "mean_mre": statistics.fmean(m["test_mre"] for m in lines),
                "honest": honest,
                "gap": gap,
                "eps_train": dp.get("max_epsilon_spent"),
                "eps_total": dp.get("max_epsilon_total"),
            }
        )
    return out


def _largest(group: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in group if r[key] is not None]
    return f"{max(values):.2f}" if values else "–"


def _paired(sec: list[dict[str, Any]], avg: list[dict[str, Any]]) -> str:
    by_seed = {r["seed"]: r["final_mre"] for r in avg}
    diffs = [r["final_mre"] - by_seed[r["seed"]] for r in sec if r["seed"] in by_seed]
    return format_paired(diffs)


def table(results: Path) -> str:
    """The Markdown table of every arm found under ``results``."""
    rows = [
        "| clients' mechanism | target ε | strategy (Δu) | final MRE | MRE over rounds | "
        "honest share of used updates | max training ε | max total ε | SecProbe − FedAvg "
        "(final MRE, paired, 95% CI) | utility gap honest − unreliable |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sweep, mechanism in SWEEPS.items():
        sweep_dir = results / sweep
        if not (sweep_dir / "points").is_dir():
            continue
        runs = _runs(sweep_dir)
        sensitivity = "1/n_val" if sweep.endswith("_tight") else "1"
        for eps in sorted({r["epsilon"] for r in runs}, key=lambda e: (e is None, e)):
            arm = [r for r in runs if r["epsilon"] == eps]
            fedavg = [r for r in arm if r["strategy"] == "fedavg"]
            for strategy in ("secprobe", "fedavg"):
                group = [r for r in arm if r["strategy"] == strategy]
                if not group:
                    continue
                paired = _paired(group, fedavg) if strategy == "secprobe" else ""
                if strategy == "secprobe" and not fedavg:
                    base = [
                        r
                        for r in _runs(results / sweep.removesuffix("_tight"))
                        if r["epsilon"] == eps and r["strategy"] == "fedavg"
                    ]
                    paired = _paired(group, base)
                label = f"secprobe (Δu = {sensitivity})" if strategy == "secprobe" else "fedavg"
                rows.append(
                    f"| {mechanism} | {eps if eps is not None else '–'} | {label} | "
                    f"{_ms([r['final_mre'] for r in group])} | "
                    f"{_ms([r['mean_mre'] for r in group])} | "
                    f"{_ms([r['honest'] for r in group])} | "
                    f"{_largest(group, 'eps_train')} | {_largest(group, 'eps_total')} | {paired} | "
                    f"{_ms([r['gap'] for r in group if r['gap'] is not None])} |"
                )
    return "\n".join(rows) + "\n"


def main() -> None:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("experiments/results/secprobe")
    text = table(results)
    (results / "regression_table.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
