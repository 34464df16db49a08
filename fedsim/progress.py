"""One plain progress line per round, with the time per round and an ETA.

``fedsim run`` writes these lines to stderr whether or not it is a terminal (batch jobs,
``nohup`` and CI logs get them too), ``fedsim sweep`` prefixes them with the point, and
the ServerApp under ``flwr run`` logs them (:mod:`strategies.server_app`). E.g.::

    round 3/8  acc 0.8120  loss 0.4101  auc 0.903  max eps 2.104 (DP-SGD 2.104,
    replace-one)  (5/5 updates, 12.3 s/round, ETA 1m02s)

(one line; wrapped here).

:class:`RoundProgress` only formats; writing the line is the caller's business.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedsim.config import RELATION_TEXT, Config
from fedsim.records import RoundRecord
from fedsim.rundir import OPTIONAL_TEST_METRICS


def duration_text(seconds: float) -> str:
    """A short duration: ``42s``, ``1m02s``, ``2h05m``.

    >>> duration_text(41.6), duration_text(62), duration_text(7500)
    ('42s', '1m02s', '2h05m')
    """
    total = max(0, round(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def epsilon_text(cfg: Config, record: RoundRecord) -> str:
    """The round line's privacy part: the largest composed ε of any client (all of its
    events), the DP-SGD part, and the relation — or, without DP, the selection ε."""
    if not cfg.dp.enabled:
        sel = [c.epsilon_selection for c in record.clients if c.epsilon_selection is not None]
        return f"  selection eps {max(sel):.3f} (no DP on updates)" if sel else ""
    total = [c.epsilon_total for c in record.clients if c.epsilon_total is not None]
    if record.site_evaluation is not None:  # the sites' totals after this round's release
        sites = record.site_evaluation.sites
        total += [s.epsilon_total for s in sites if s.epsilon_total is not None]
    sgd = [c.epsilon for c in record.clients if c.epsilon is not None]
    if not total and not sgd:
        return ""
    relation = RELATION_TEXT[cfg.dp.neighbouring]
    if cfg.dp.mode == "central":
        return f"  eps {max(sgd):.3f} (user-level, {relation})"
    top = max(total) if total else max(sgd)
    label = training_label(cfg)
    return f"  max eps {top:.3f} ({label} {max(sgd) if sgd else 0.0:.3f}, {relation})"


def training_label(cfg: Config) -> str:
    """How the clients' own training ε is named: ``DP-SGD`` or ``FM`` (functional
    mechanism, ``client.mechanism: functional``)."""
    return "FM" if cfg.functional_mechanism else "DP-SGD"


def test_text(record: RoundRecord) -> str:
    """The round line's evaluation part: accuracy, loss, the optional test metrics and,
    for binary tasks, each class's recall (``recall 0.712/0.934``)."""
    doc = record.to_json()
    extra = "".join(
        f"  {short} {doc[key]:.3f}"
        for key, _, short in OPTIONAL_TEST_METRICS
        if doc.get(key) is not None
    )
    recalls = record.test.class_recall
    if recalls is not None:
        extra += "  recall " + "/".join("-" if r is None else f"{r:.3f}" for r in recalls)
    return f"acc {record.test.accuracy:.4f}  loss {record.test.loss:.4f}{extra}"


def site_text(record: RoundRecord) -> str:
    """The round line's federated-evaluation part: the sites' pooled accuracy and how many
    sites released (``sites acc 0.8120 (3/3)``); empty without a site evaluation."""
    evaluation = record.site_evaluation
    if evaluation is None:
        return ""
    released = sum(1 for s in evaluation.sites if s.metrics is not None)
    aggregate = evaluation.aggregate
    acc = "n/a" if aggregate is None or aggregate.accuracy is None else f"{aggregate.accuracy:.4f}"
    return f"  sites acc {acc} ({released}/{len(evaluation.sites)})"


class RoundProgress:
    """Formats each round's progress line; keeps the round times seen for the ETA.

    The ETA is the mean time of the rounds seen so far (by this process: a resumed run
    starts afresh) times the rounds left of ``cfg.rounds``.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._seconds: list[float] = []

    def line(self, record: RoundRecord) -> str:
        """The line of ``record`` (no newline); round 0 is the initial model."""
        if record.round == 0:
            return f"round 0/{self.cfg.rounds}  {test_text(record)}  (initial model)"
        self._seconds.append(record.seconds)
        per_round = sum(self._seconds) / len(self._seconds)
        left = max(0, self.cfg.rounds - record.round)
        return (
            f"round {record.round}/{self.cfg.rounds}  {test_text(record)}{site_text(record)}"
            f"{epsilon_text(self.cfg, record)}  "
            f"({len(record.selected)}/{len(record.sampled)} updates, {per_round:.1f} s/round, "
            f"ETA {duration_text(per_round * left)})"
        )


def final_epsilon_text(cfg: Config, summary: Mapping[str, Any]) -> str:
    """The final line's privacy part (see :func:`epsilon_text`)."""
    dp = summary["dp"]
    assert isinstance(dp, dict)  # the summary's own structure, not user input
    total, sgd = dp.get("max_epsilon_total"), dp.get("max_epsilon_spent")
    if not cfg.dp.enabled:
        sel = summary.get("selection_epsilon_total")
        return f", selection epsilon {sel:.3f} (no DP on updates)" if sel else ""
    if sgd is None:
        return ""
    relation = RELATION_TEXT[cfg.dp.neighbouring]
    if cfg.dp.mode == "central":
        return f", user-level epsilon {sgd:.3f} (delta {cfg.dp.delta:g}, {relation})"
    return (
        f", max epsilon {total if total is not None else sgd:.3f} of which "
        f"{training_label(cfg)} {sgd:.3f} "
        f"(delta {cfg.dp.delta:g}, {relation})"
    )


def final_line(cfg: Config, out_dir: str | Path, summary: Mapping[str, Any]) -> str:
    """The run's last line (``fedsim run`` prints it, the ServerApp under ``flwr run``
    logs it): run directory, rounds, final test accuracy, ε and wall time."""
    final = summary.get("final") or {}
    acc = final.get("test_accuracy")
    acc_text = f"{acc:.4f}" if acc is not None else "n/a"
    return (
        f"{out_dir}: {summary['rounds']} rounds, test accuracy {acc_text}"
        f"{final_epsilon_text(cfg, summary)}, {summary['wall_seconds']:.1f} s"
    )
