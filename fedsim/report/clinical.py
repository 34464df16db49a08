"""Report sections of the clinical metrics and of the federated (per-site) evaluation.

:func:`clinical_section` — for binary tasks, the central test's sensitivity, specificity,
precision, F1 and confusion matrix per round (class 1 positive, :mod:`fedsim.clinical`).
:func:`site_evaluation_section` — the sites' evaluation on their own held-out records
(``evaluation.federated``): the pooled metrics per round next to the central test, each
site's last evaluation, and what each site released at which ε
(:mod:`fedsim.privacy.evaluation`); ``sites.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedsim.config import RELATION_TEXT
from fedsim.report.markdown import integer_rounds, markdown_table, new_figure, save_figure
from fedsim.report.setup import run_config
from fedsim.rundir import CLINICAL_TEST_METRICS, read_metrics


def clinical_section(run_dir: Path) -> str | None:
    """The central test's clinical metrics per round and its last confusion matrix
    (``None`` unless the rounds carry ``test_confusion``: binary tasks)."""
    metrics = [m for m in read_metrics(run_dir) if m.get("test_confusion") is not None]
    if not metrics:
        return None
    rows = [
        (
            m["round"],
            *(m.get(key) for key, _, _ in CLINICAL_TEST_METRICS),
            *(m["test_confusion"][k] for k in ("tn", "fp", "fn", "tp")),
        )
        for m in metrics
    ]
    header = ("round", *(label for _, label, _ in CLINICAL_TEST_METRICS), "tn", "fp", "fn", "tp")
    last = metrics[-1]["test_confusion"]
    matrix = markdown_table(
        ("true \\ predicted", "0 (negative)", "1 (positive)"),
        [("0 (negative)", last["tn"], last["fp"]), ("1 (positive)", last["fn"], last["tp"])],
    )
    return (
        "## Clinical metrics (central test)\n\n"
        "Class 1 is the positive class (PneumoniaMNIST: pneumonia). Sensitivity = "
        "tp/(tp+fn), specificity = tn/(tn+fp), precision = tp/(tp+fp), "
        "F1 = 2tp/(2tp+fp+fn); `–` where a denominator is 0.\n\n"
        f"{markdown_table(header, rows)}\n"
        f"Confusion matrix after round {metrics[-1]['round']}:\n\n{matrix}"
    )


_SITE_RATES = (
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("f1", "F1"),
)


def _release_text(run_dir: Path) -> str:
    """What a site released and at which ε (from ``config.yaml``)."""
    cfg = run_config(run_dir)
    if cfg is None:
        return ""
    ev = cfg.evaluation
    if ev.epsilon is None:
        return (
            "Each site released its exact confusion matrix (`evaluation.epsilon: null`, a "
            "run without DP): the sites' held-out records are not protected.\n"
        )
    relation = RELATION_TEXT[cfg.dp.neighbouring]
    scale = (2.0 if cfg.dp.neighbouring == "replace_one" else 1.0) / ev.epsilon
    return (
        "Each site released only its confusion matrix on its held-out records "
        f"({ev.holdout:g} of its data, never trained on), every cell with Laplace noise of "
        f"scale {scale:.4g}: an ε = {ev.epsilon:g} release ({relation}) per evaluation, "
        "charged to the site's privacy ledger and composed with its training "
        "(`epsilon_evaluation`; the clients' ε total includes it). The metrics are computed "
        "from the noisy counts (negative counts as 0); the aggregate pools the sites' "
        "matrices, i.e. weighs each site by its noisy number of examples.\n"
    )


def _plot(run_dir: Path, rounds: list[dict[str, Any]]) -> str:
    fig, ax = new_figure(6.0, 3.4)
    xs = [m["round"] for m in rounds]
    ax.plot(xs, [m.get("test_accuracy") for m in rounds], marker="o", label="central test")
    pooled = [((m["site_evaluation"].get("aggregate") or {}).get("accuracy")) for m in rounds]
    ax.plot(xs, [float("nan") if v is None else v for v in pooled], marker="s",
            label="sites (pooled)")  # fmt: skip
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    integer_rounds(ax)
    ax.legend(fontsize="small")
    return save_figure(fig, run_dir / "sites.png")


def site_evaluation_section(run_dir: Path) -> str | None:
    """The federated evaluation (``None`` without one)."""
    rounds = [m for m in read_metrics(run_dir) if m.get("site_evaluation")]
    if not rounds:
        return None
    image = _plot(run_dir, rounds)
    per_round = []
    for m in rounds:
        block = m["site_evaluation"]
        sites = block.get("sites") or {}
        agg = block.get("aggregate") or {}
        released = sum(1 for s in sites.values() if s.get("metrics") is not None)
        per_round.append(
            (
                m["round"],
                f"{released}/{len(sites)}",
                agg.get("num_examples"),
                *(agg.get(key) for key, _ in _SITE_RATES),
                m.get("test_accuracy"),
            )
        )
    header = ("round", "sites released", "noisy n", *(f"sites {lbl}" for _, lbl in _SITE_RATES))
    last = rounds[-1]
    site_rows = []
    for cid, site in sorted(last["site_evaluation"]["sites"].items(), key=lambda kv: int(kv[0])):
        got = site.get("metrics") or {}
        site_rows.append(
            (
                cid,
                site.get("status"),
                got.get("num_examples"),
                *(got.get(key) for key, _ in _SITE_RATES),
                site.get("epsilon"),
                site.get("epsilon_evaluation"),
                site.get("epsilon_total"),
                site.get("rejected_reason") or "",
            )
        )
    site_header = (
        "site", "status", "noisy n", *(lbl for _, lbl in _SITE_RATES),
        "ε this release", "ε evaluation", "ε total", "reason",
    )  # fmt: skip
    return (
        "## Per-site evaluation\n\n"
        f"![central test and sites' pooled accuracy per round]({image})\n\n"
        f"{_release_text(run_dir)}\n"
        f"{markdown_table((*header, 'central test accuracy'), per_round)}\n"
        f"Each site after round {last['round']}:\n\n{markdown_table(site_header, site_rows)}"
    )
