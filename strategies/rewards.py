"""The server's reward book: per-round valuations, budget splits, ``rewards.csv``.

:class:`RewardBook` is the stateful shell around :mod:`fedsim.valuation.rewards`. Each
round, for every accepted update that carries a DP-released valuation, it takes

- the quality gate: the update's validation accuracy (:mod:`strategies.utility`, the
  same utility SecProbe uses — reused from SecProbe's records when it already ran), or
  its improvement over the current global model (``valuation.quality.measure``);
- the informativeness: the client's DP-released mean score;

and splits ``valuation.reward_budget`` in proportion to each part alone and to their
combination. ``valuation.pay`` decides which split is paid; all three are logged.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Message

from fedsim import keys
from fedsim.config import Config
from fedsim.data import DatasetBundle
from fedsim.roles import clean_fraction
from fedsim.summary import ClientValuation
from fedsim.valuation.rewards import REWARD_PARTS, quality_scores, round_rewards, spearman
from strategies.utility import validation_accuracies, validation_quality

logger = logging.getLogger(__name__)

REWARDS_FILE = "rewards.csv"
CSV_COLUMNS = (
    "round",
    "client_id",
    "valuation",
    "valuation_variance",
    "quality",
    "combined",
    "reward_quality",
    "reward_informativeness",
    "reward_combined",
    "reward",
)


@dataclass(frozen=True)
class RewardNote:
    """What the reward book reports about one valued update in a round."""

    quality: float
    reward: float


class RewardBook:
    """Valuations and rewards of a run (only kept on the server, a few numbers a round).

    ``data`` is the server's dataset: the quality gate scores updates on its validation
    split.
    """

    def __init__(self, cfg: Config, data: DatasetBundle) -> None:
        self.cfg = cfg
        self.data = data
        self.rows: list[dict[str, Any]] = []
        # valuation.report_metrics: metric -> rows (round, client, valuation, rewards)
        self.extra_rows: dict[str, list[dict[str, Any]]] = {
            m: [] for m in cfg.valuation.report_metrics
        }

    def value_round(
        self,
        server_round: int,
        accepted: list[tuple[int, Message]],
        global_arrays: ArrayRecord | None,
        known_utility: Mapping[int, float],
    ) -> dict[int, RewardNote]:
        """Value this round's accepted updates; returns what each valued client got."""
        val = self.cfg.valuation
        valued = []
        for cid, msg in accepted:
            metrics = msg.content.metric_records.get(keys.METRICS)
            v = None if metrics is None else metrics.get(keys.VALUATION)
            if v is not None:
                var = metrics.get(keys.VALUATION_VARIANCE) if metrics is not None else None
                valued.append((cid, msg, float(v), None if var is None else float(var)))  # type: ignore[arg-type]
        if not valued:
            return {}
        measure = val.quality.measure
        known = known_utility if measure != "auc" else {}
        missing = [(cid, msg) for cid, msg, _, _ in valued if cid not in known]
        utility = dict(known)
        if missing:
            acc = validation_quality(
                self.cfg.model.name,
                self.data,
                [msg for _, msg in missing],
                "auc" if measure == "auc" else "accuracy",
            )
            utility.update({cid: float(a) for (cid, _), a in zip(missing, acc, strict=True)})
        accuracy = [utility[cid] for cid, _, _, _ in valued]
        global_acc = None
        if val.quality.measure == "improvement" and global_arrays is not None:
            model = self.cfg.model.name
            global_acc = float(validation_accuracies(model, self.data, [global_arrays])[0])
        quality = quality_scores(accuracy, global_acc, val.quality.measure)
        rr = round_rewards(
            [cid for cid, _, _, _ in valued],
            [v for _, _, v, _ in valued],
            quality,
            val.reward_budget,
            val.quality.combine,
            val.quality.threshold,
        )
        paid = rr.paid(val.pay)
        self._value_extra(server_round, [(cid, msg) for cid, msg, _, _ in valued], quality)
        notes: dict[int, RewardNote] = {}
        for i, (cid, _, v, var) in enumerate(valued):
            row = {
                "round": server_round,
                "client_id": cid,
                "valuation": v,
                "valuation_variance": var,
                "quality": float(rr.quality[i]),
                "combined": float(rr.combined[i]),
                "reward_quality": float(rr.reward_quality[i]),
                "reward_informativeness": float(rr.reward_informativeness[i]),
                "reward_combined": float(rr.reward_combined[i]),
                "reward": float(paid[i]),
            }
            self.rows.append(row)
            notes[cid] = RewardNote(quality=float(rr.quality[i]), reward=float(paid[i]))
        logger.info(
            "round %d: rewards %s",
            server_round,
            {cid: round(n.reward, 3) for cid, n in notes.items()},
        )
        return notes

    def _value_extra(
        self, server_round: int, valued: list[tuple[int, Message]], quality: Any
    ) -> None:
        """What rewards by each ``valuation.report_metrics`` entry would have been."""
        val = self.cfg.valuation
        for metric, rows in self.extra_rows.items():
            ids, vs, qs = [], [], []
            for i, (cid, msg) in enumerate(valued):
                metrics = msg.content.metric_records.get(keys.METRICS)
                v = None if metrics is None else metrics.get(keys.extra_valuation(metric))
                if v is not None:
                    ids.append(cid)
                    vs.append(float(v))  # type: ignore[arg-type]
                    qs.append(float(quality[i]))
            if not ids:
                continue
            rr = round_rewards(
                ids, vs, qs, val.reward_budget, val.quality.combine, val.quality.threshold
            )
            for i, cid in enumerate(ids):
                rows.append(
                    {
                        "round": server_round,
                        "client_id": cid,
                        "valuation": vs[i],
                        "reward_informativeness": float(rr.reward_informativeness[i]),
                        "reward_combined": float(rr.reward_combined[i]),
                    }
                )

    # ------------------------------------------------------------------ resume
    def export_state(self) -> dict[str, Any]:
        """The rows so far, as JSON (the run's checkpoint)."""
        return {"rows": list(self.rows), "extra_rows": dict(self.extra_rows)}

    def restore_state(self, doc: Mapping[str, Any]) -> None:
        """Take the rows :meth:`export_state` wrote."""
        self.rows = [dict(r) for r in doc["rows"]]
        self.extra_rows = {m: [dict(r) for r in rows] for m, rows in doc["extra_rows"].items()}

    # ------------------------------------------------------------------ outputs
    def write_csv(self, run_dir: str | Path) -> Path:
        """Write the ledger ``rewards.csv`` (one row per client and round valued)."""
        path = Path(run_dir) / REWARDS_FILE
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS))
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: "" if row[k] is None else row[k] for k in CSV_COLUMNS})
        return path

    def totals(self, column: str, rows: list[dict[str, Any]] | None = None) -> dict[int, float]:
        """Sum of ``column`` per client over all rounds (of ``rows``, default the paid)."""
        out: dict[int, float] = {}
        for row in self.rows if rows is None else rows:
            out[row["client_id"]] = out.get(row["client_id"], 0.0) + float(row[column])
        return out

    def mean_valuation(self) -> dict[int, float]:
        """Mean DP-released valuation per client over its releases (post-processing)."""
        sums, counts = self.totals("valuation"), self.totals_count()
        return {cid: sums[cid] / counts[cid] for cid in sums}

    def totals_count(self) -> dict[int, int]:
        """Number of valued rounds per client."""
        out: dict[int, int] = {}
        for row in self.rows:
            out[row["client_id"]] = out.get(row["client_id"], 0) + 1
        return out

    def summaries(
        self, num_examples: Mapping[int, int]
    ) -> tuple[dict[int, ClientValuation], dict[str, Any]]:
        """Per client: mean valuation, rewards and clean fraction (simulation ground truth,
        from the clients' true sizes ``num_examples``); and the run-level ``valuation``
        section of ``summary.json`` with the rank correlations."""
        cfg = self.cfg
        valuation = self.mean_valuation()
        paid = self.totals("reward")
        parts = {p: self.totals(f"reward_{p}") for p in REWARD_PARTS}
        clean = {cid: clean_fraction(cfg, cid, int(n)) for cid, n in num_examples.items()}
        clients = {
            cid: ClientValuation(
                valuation=valuation.get(cid),
                reward_total=paid.get(cid, 0.0),
                reward_total_quality=parts["quality"].get(cid, 0.0),
                reward_total_informativeness=parts["informativeness"].get(cid, 0.0),
                reward_total_combined=parts["combined"].get(cid, 0.0),
                clean_fraction=clean[cid],
            )
            for cid in clean
        }
        ids = sorted(clean)
        truth = [clean[c] for c in ids]
        corr: dict[str, Any] = {
            "spearman_reward_clean": spearman([paid.get(c, 0.0) for c in ids], truth)
        }
        for p in REWARD_PARTS:
            corr[f"spearman_{p}_clean"] = spearman([parts[p].get(c, 0.0) for c in ids], truth)
        corr["spearman_valuation_clean"] = spearman(
            [valuation.get(c, float("nan")) for c in ids if c in valuation],
            [clean[c] for c in ids if c in valuation],
        )
        by_metric: dict[str, Any] = {}
        for metric, rows in self.extra_rows.items():
            sums = self.totals("valuation", rows)
            counts = self.totals("_one", [{**r, "_one": 1.0} for r in rows])
            ids_m = [c for c in ids if c in sums]
            by_metric[metric] = {
                "spearman_valuation_clean": spearman(
                    [sums[c] / counts[c] for c in ids_m], [clean[c] for c in ids_m]
                ),
                **{
                    f"spearman_{p}_clean": spearman(
                        [self.totals(f"reward_{p}", rows).get(c, 0.0) for c in ids], truth
                    )
                    for p in ("informativeness", "combined")
                },
            }
        section = {
            "by_metric": by_metric,
            "metric": cfg.valuation.metric,
            "epsilon_per_release": cfg.valuation.epsilon,
            "pay": cfg.valuation.pay,
            "reward_paid_total": float(sum(paid.values())),
            **corr,
        }
        return clients, section
