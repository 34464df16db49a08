"""The robustness section of ``report.md`` (wired into ``fedsim report``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedsim.robustness.evaluate import read_robustness


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def results_table(doc: dict[str, Any]) -> str:
    """The robustness rows of one ``robustness.json`` as a Markdown table (accuracy in %)."""
    lines = [
        "| model | precision | attack | mode | generator | clean | robust (mean ± std) |",
        "|---|---|---|---|---|---:|---:|",
    ]
    for r in doc["rows"]:
        seeds = len(r["robust_accuracy_per_seed"])
        lines.append(
            f"| {r['model']} | {r['precision']} | {r['attack']} | {r['mode']} | "
            f"{r['generator']} | {_pct(r['clean_accuracy'])} | "
            f"{_pct(r['robust_accuracy_mean'])} ± {_pct(r['robust_accuracy_std'])} "
            f"(n={seeds}) |"
        )
    return "\n".join(lines)


def report_section(run_dir: Path) -> str | None:
    """Markdown for the run's ``robustness.json``; ``None`` when the run has none."""
    doc = read_robustness(run_dir)
    if doc is None:
        return None
    parts = ["## Robustness", ""]
    attacks = ", ".join(
        f"{name} ({p['norm']}, ε={p['epsilon']:.4g}, step {p['step_size']:.4g}, {p['steps']} steps)"
        for name, p in doc["attacks"].items()
    )
    parts.append(
        f"Robust accuracy on the whole test split ({doc['test_examples']} examples), "
        f"stochastic attacks repeated over seeds {doc['seeds']}. Attacks: {attacks}."
    )
    q = doc.get("int8")
    if q:
        ops = ", ".join(f"{n}×{k}" for k, n in q["quantized_ops"].items()) or "nothing"
        parts += [
            "",
            f"Post-training static int8 ({q['backend']}, calibrated on the {q['calibration']}): "
            f"{q['bytes_float']:,} → {q['bytes_int8']:,} bytes "
            f"({100 * q['size_reduction']:.1f}% smaller), clean accuracy "
            f"{_pct(doc['clean_accuracy']['float'])}% → {_pct(doc['clean_accuracy']['int8'])}% "
            f"({100 * q['accuracy_change']:+.1f} points). Quantised modules: {ops}; the rest "
            "(e.g. GroupNorm, tanh) stays float. The int8 model has no input gradients, so it "
            "is attacked by transfer from its own float model (and from the transfer source).",
        ]
    sources = doc.get("transfer_from") or []
    if isinstance(sources, str):  # robustness.json written before several sources
        sources = [sources]
    if sources:
        parts += ["", "Transfer sources: " + ", ".join(f"`{s}`" for s in sources) + "."]
    parts += ["", results_table(doc), ""]
    return "\n".join(parts)
