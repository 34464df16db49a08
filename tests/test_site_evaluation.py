"""Federated (per-site) evaluation without Flower: the held-out split, the DP release of a
site's confusion matrix (its noise against the ε charged, by independent computations),
the site's policy and budget gate, and the server's check of evaluate replies."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from client_harness import train_config
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from scipy import stats

from clients.evaluate_round import EvalTask, held_out_matrix, run_site_evaluation
from fedsim import keys
from fedsim.config import from_dict
from fedsim.data import Split
from fedsim.deploy.policy import DEFAULT_POLICY, SitePolicy
from fedsim.errors import ConfigError
from fedsim.models import build_model
from fedsim.privacy import Accounting, EvaluationRelease, PrivacyLedger, SubsampledGaussian
from fedsim.privacy.evaluation import (
    count_sensitivity,
    laplace_scale,
    release_counts,
    release_events,
)
from fedsim.workload import client_holdout, client_split, holdout_indices, training_sizes
from strategies.ledger_check import read_ledger
from strategies.site_eval import EvalReplyRules, check_eval_reply

# --------------------------------------------------------------------------- config


def _cfg(**evaluation: object):
    return from_dict(
        {
            "seed": 5,
            "data": {"name": "pneumoniamnist", "num_clients": 3},
            "model": {"name": "mlp"},
            "dp": {"epsilon": 2.0, "delta": 1e-5},
            "evaluation": {"federated": True, **evaluation},
        }
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"evaluation": {"federated": True, "epsilon": None}, "dp": {"epsilon": 2}},
         "evaluation.epsilon must be > 0 when dp.enabled"),
        ({"evaluation": {"federated": True}, "data": {"name": "diabetes"}, "model":
          {"name": "mlp"}, "dp": {"enabled": False}}, "needs a classification dataset"),
        ({"evaluation": {"federated": True}, "dp": {"mode": "central", "epsilon": 2}},
         "not supported with dp.mode 'central'"),
        ({"evaluation": {"holdout": 1.0}}, "evaluation.holdout"),
    ],
)  # fmt: skip
def test_config_rules(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        from_dict(raw)


def test_due_every_k_rounds_and_the_last() -> None:
    ev = _cfg(every=3).evaluation
    assert [r for r in range(1, 9) if ev.due(r, 8)] == [3, 6, 8]


# --------------------------------------------------------------------------- held-out split


def test_holdout_is_carved_from_the_partition_and_never_trained_on() -> None:
    cfg = _cfg(holdout=0.25)
    plain = dataclasses.replace(
        cfg, evaluation=dataclasses.replace(cfg.evaluation, federated=False)
    )
    for cid in range(3):
        part = client_split(plain, cid)  # the whole partition
        train, held = client_split(cfg, cid), client_holdout(cfg, cid)
        assert len(train) + len(held) == len(part)
        assert len(held) == round(0.25 * len(part))
        kept, held_idx = holdout_indices(cfg, cid, part)
        assert not set(kept) & set(held_idx)  # disjoint, and together the partition
        assert sorted([*kept, *held_idx]) == list(range(len(part)))
        assert np.array_equal(part.x[held_idx], held.x) and np.array_equal(part.x[kept], train.x)
        assert training_sizes(cfg)[cid] == len(train)
        # reproducible from the seed, stratified
        again = holdout_indices(cfg, cid, part)[1]
        assert np.array_equal(again, holdout_indices(cfg, cid, part)[1])
        assert abs(held.y.mean() - part.y.mean()) < 0.02
    assert len(client_holdout(plain, 0)) == 0


# --------------------------------------------------------------------------- the release


def test_sensitivity_and_ledger_events_per_relation() -> None:
    assert count_sensitivity("replace_one") == 2 and count_sensitivity("add_remove") == 1
    assert release_events(0.8, "replace_one") == (EvaluationRelease(0.4, 2),)
    assert release_events(0.8, "add_remove") == (EvaluationRelease(0.8, 1),)
    assert release_events(None, "replace_one") == ()
    for relation in ("replace_one", "add_remove"):
        # at a negligible δ the PLD composition of the events is the pure ε charged
        acct = Accounting(1e-12, "pld", relation)  # type: ignore[arg-type]
        assert acct.epsilon(release_events(0.8, relation)) == pytest.approx(0.8, rel=2e-3)


@pytest.mark.parametrize("relation", ["replace_one", "add_remove"])
def test_noise_is_laplace_at_the_scale_of_the_charged_epsilon(relation: str) -> None:
    epsilon = 0.7
    matrix = np.array([[40, 3], [5, 52]])
    draws = np.stack(
        [
            release_counts(matrix, epsilon, relation, np.random.default_rng(seed))  # type: ignore[arg-type]
            for seed in range(4000)
        ]
    )
    noise = (draws - matrix).ravel()
    # independent: the scale a pure ε-DP Laplace histogram needs, Δ_1 / ε with Δ_1 the
    # largest L1 change of the matrix between neighbours (2 moved counts / 1 added count)
    delta_1 = 2 if relation == "replace_one" else 1
    scale = delta_1 / epsilon
    assert stats.kstest(noise, stats.laplace(scale=scale).cdf).pvalue > 1e-3
    assert noise.std() == pytest.approx(math.sqrt(2) * scale, rel=0.03)
    # and not a narrower one (the test can fail)
    assert stats.kstest(noise, stats.laplace(scale=0.8 * scale).cdf).pvalue < 1e-6


@pytest.mark.parametrize("relation", ["replace_one", "add_remove"])
def test_worst_neighbouring_pair_loses_at_most_the_charged_epsilon(relation: str) -> None:
    """The privacy loss ln p(y | m) / p(y | m') of the released matrix, over a grid of
    outputs y, for the worst neighbours: a record moved between two cells (replace-one)
    or one record added (add/remove); densities from scipy, not from fedsim."""
    epsilon = 1.3
    m = np.array([[10.0, 2.0], [3.0, 7.0]])
    other = m.copy()
    if relation == "replace_one":
        other[0, 0] -= 1
        other[1, 1] += 1
    else:
        other[0, 1] += 1
    scale = laplace_scale(epsilon, relation)  # type: ignore[arg-type]
    grid = np.linspace(-10, 25, 701)
    worst = 0.0
    for y00 in grid[::7]:
        for y11 in grid[::7]:
            y = np.array([[y00, 2.5], [3.0, y11]]) if relation == "replace_one" else None
            if y is None:
                y = np.array([[10.0, y00], [3.0, 7.0]])
            loss = np.sum(stats.laplace.logpdf(y, m, scale) - stats.laplace.logpdf(y, other, scale))
            worst = max(worst, abs(float(loss)))
    assert worst <= epsilon * (1 + 1e-9)
    assert worst == pytest.approx(epsilon, rel=1e-6)  # attained: the charge is not loose


def test_exact_release_without_dp_charges_nothing() -> None:
    counts = release_counts(
        np.array([[1, 2], [3, 4]]), None, "replace_one", np.random.default_rng()
    )
    assert counts.tolist() == [[1.0, 2.0], [3.0, 4.0]]


# --------------------------------------------------------------------------- the site


def _site_run(cfg, ledger: PrivacyLedger, policy: SitePolicy | None = None, root: int = 1):
    model = build_model("mlp", (1, 28, 28), 2, seed=0)
    holdout = Split(np.random.default_rng(0).random((30, 1, 28, 28), np.float32),
                    np.array([0] * 10 + [1] * 20))  # fmt: skip
    task = EvalTask(1, model.state_dict(), ledger)
    outcome = run_site_evaluation(
        cfg, 0, holdout, (1, 28, 28), 2, task, noise_root=root, policy=policy
    )
    return outcome, held_out_matrix(model, holdout, 2)


def test_a_release_is_charged_to_the_ledger_and_composed() -> None:
    cfg = _cfg(epsilon=0.5)
    trained = PrivacyLedger(1.1, (SubsampledGaussian(1.1, 0.05, 40),))
    outcome, exact = _site_run(cfg, trained)
    assert outcome.status == "ok" and outcome.counts is not None
    assert outcome.ledger.events == (*trained.events, EvaluationRelease(0.25, 2))
    acct = Accounting.of(cfg.dp)
    assert outcome.epsilon_total == pytest.approx(outcome.ledger.epsilon_total(acct))
    assert outcome.epsilon_total > trained.epsilon_total(acct)
    assert outcome.epsilon_evaluation == pytest.approx(0.5, rel=2e-3)
    released = np.array(outcome.counts).reshape(2, 2)
    assert not np.array_equal(released, exact)  # noisy
    assert abs(released.sum() - 30) < 60  # around the true size
    again, _ = _site_run(cfg, trained)
    assert again.counts == outcome.counts  # seeded (simulation)
    other, _ = _site_run(cfg, trained, root=2)
    assert other.counts != outcome.counts


def test_a_site_policy_can_refuse_evaluation() -> None:
    cfg = _cfg()
    no_eval = SitePolicy(mechanisms=("dpsgd", "selection", "valuation_release"))
    outcome, _ = _site_run(cfg, PrivacyLedger(), no_eval)
    assert outcome.status == keys.STATUS_REFUSED and outcome.counts is None
    assert "'evaluation'" in outcome.reason
    assert outcome.ledger == PrivacyLedger()  # nothing released, nothing charged
    assert _site_run(cfg, PrivacyLedger(), DEFAULT_POLICY)[0].status == "ok"


def test_evaluation_past_the_budget_is_refused() -> None:
    cfg = _cfg(epsilon=1.0)
    trained = PrivacyLedger(1.1, (SubsampledGaussian(1.1, 0.05, 40),))
    spent = trained.epsilon_total(Accounting.of(cfg.dp))
    capped = SitePolicy(max_epsilon=spent + 0.2)  # the site's lifetime cap
    outcome, _ = _site_run(cfg, trained, capped)
    assert outcome.status == keys.STATUS_REFUSED and outcome.counts is None
    assert "would exceed max_epsilon" in outcome.reason and outcome.ledger == trained
    assert _site_run(cfg, trained, SitePolicy(max_epsilon=spent + 2.0))[0].status == "ok"
    run_cap = dataclasses.replace(cfg, dp=dataclasses.replace(cfg.dp, max_epsilon=spent + 0.2))
    outcome, _ = _site_run(run_cap, trained)  # the run's dp.max_epsilon, no site policy
    assert outcome.status == keys.STATUS_BUDGET_EXHAUSTED and outcome.counts is None


def test_ledger_with_evaluation_events_round_trips_and_is_accepted() -> None:
    ledger = PrivacyLedger(1.0, (SubsampledGaussian(1.0, 0.1, 10), EvaluationRelease(0.5, 2)))
    text = ledger.to_json()
    assert '["eval", 0.5, 2]' in text
    assert PrivacyLedger.from_json(text) == ledger
    assert read_ledger(text).ledger == ledger
    assert ledger.evaluation_events() == (EvaluationRelease(0.5, 2),)


# --------------------------------------------------------------------------- the server's check


def _reply(**metrics: object) -> tuple[dict, dict]:
    base: dict = {keys.CLIENT_ID: 2, keys.EVAL_COUNTS: [5.2, -0.3, 1.0, 7.9],
                  keys.EVAL_EPSILON: 1.0, keys.EPSILON_EVALUATION: 1.0}  # fmt: skip
    base.update(metrics)
    base = {k: v for k, v in base.items() if v is not None}
    ledger = PrivacyLedger(None, (EvaluationRelease(0.5, 2),)).to_json()
    status = {keys.STATUS_CODE: "ok", keys.STATUS_REASON: "", keys.STATUS_LEDGER: ledger}
    return {keys.METRICS: base}, {keys.STATUS: status}


RULES = EvalReplyRules(client_id=2, num_classes=2, epsilon=1.0)


def test_a_good_reply_is_accepted() -> None:
    metrics, configs = _reply()
    verdict = check_eval_reply(metrics, configs, {}, RULES)
    assert verdict.record.status == "ok" and verdict.ledger is not None
    assert verdict.record.metrics is not None
    assert verdict.record.metrics.confusion == ((5.2, -0.3), (1.0, 7.9))
    assert verdict.record.metrics.accuracy == pytest.approx(13.1 / 14.1)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({keys.EVAL_COUNTS: [1.0, 2.0, 3.0]}, "must be a list of 4 numbers"),
        ({keys.EVAL_COUNTS: [1.0, float("nan"), 3.0, 4.0]}, "holds nan"),
        ({keys.EVAL_COUNTS: [1.0, True, 3.0, 4.0]}, "holds a bool"),
        ({keys.EVAL_COUNTS: [1.0, 1e300, 3.0, 4.0]}, "holds 1e+300"),
        ({keys.EVAL_COUNTS: None}, "must be a list of 4 numbers"),
        ({keys.EVAL_EPSILON: 5.0}, "released at epsilon 5.0, but the run asks 1"),
        ({keys.EVAL_EPSILON: None}, "released at epsilon None"),
        ({keys.EPSILON_TOTAL: -1.0}, "metric epsilon-total must be"),
        ({keys.CLIENT_ID: 1}, "metric client-id is 1, not 2"),
        ({"loss": 0.3}, "unexpected metric 'loss'"),
    ],
)
def test_malformed_replies_are_rejected_with_a_reason(change: dict, reason: str) -> None:
    metrics, configs = _reply(**change)
    verdict = check_eval_reply(metrics, configs, {}, RULES)
    assert verdict.record.status == "rejected" and verdict.matrix is None
    assert reason in (verdict.record.rejected_reason or ""), verdict.record.rejected_reason


def test_bad_records_status_and_ledger_are_rejected() -> None:
    metrics, configs = _reply()
    arrays: dict[str, dict] = {keys.ARRAYS: {}}
    assert "ArrayRecords" in str(
        check_eval_reply(metrics, configs, arrays, RULES).record.rejected_reason
    )
    bad = {keys.STATUS: {**configs[keys.STATUS], keys.STATUS_LEDGER: '{"events": [["x"]]}'}}
    assert "privacy ledger refused" in str(
        check_eval_reply(metrics, bad, {}, RULES).record.rejected_reason
    )
    odd = {keys.STATUS: {keys.STATUS_CODE: "weird"}}
    assert check_eval_reply(metrics, odd, {}, RULES).record.status == "rejected"
    refused = {keys.STATUS: {keys.STATUS_CODE: "refused", keys.STATUS_REASON: "site policy: no"}}
    verdict = check_eval_reply({keys.METRICS: {keys.CLIENT_ID: 2}}, refused, {}, RULES)
    assert (
        verdict.record.status == "refused" and verdict.record.rejected_reason == "site policy: no"
    )
    assert json.dumps(verdict.record.to_json())  # JSON-ready


def test_held_out_matrix_counts_every_sample() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    split = Split(np.random.default_rng(1).random((1100, 1, 2, 2), np.float32),
                  np.random.default_rng(2).integers(0, 3, 1100))  # fmt: skip
    matrix = held_out_matrix(model, split, 3, batch_size=512)
    with torch.no_grad():
        predicted = model(torch.from_numpy(split.x)).argmax(1).numpy()
    for t in range(3):
        for p in range(3):
            assert matrix[t, p] == int(np.sum((split.y == t) & (predicted == p)))


# --------------------------------------------------------------------------- a deployed site


def _site_app_call(cfg, node: dict, kind: str, context: Context | None = None) -> Message:
    from clients.client_app import make_client_app

    context = context or Context(
        run_id=7, node_id=5, node_config=node, state=RecordDict(), run_config={}
    )
    arrays = ArrayRecord(build_model("mlp", (1, 28, 28), 2, seed=0).state_dict())
    msg = Message(
        content=RecordDict(
            {keys.ARRAYS: arrays, keys.CONFIG: train_config(1)}  # with the coordinator's version
        ),
        dst_node_id=5,
        message_type=kind,
    )
    reply = make_client_app(cfg)(msg, context)
    assert not reply.has_error(), reply.error
    return reply


def test_a_deployed_site_evaluates_on_its_own_held_out_part(tmp_path, task_identity) -> None:
    """Through the real ClientApp (in process): the site trains on 32 of its 40 records,
    releases noisy counts of the other 8 (from OS entropy), and keeps the charge in its
    state file; a policy without ``evaluation`` refuses and releases nothing."""
    from fedsim.deploy.state import load_state

    rng = np.random.default_rng(0)
    data = tmp_path / "site.npz"
    np.savez(data, train_images=rng.integers(0, 255, (40, 28, 28), dtype=np.uint8),
             train_labels=np.array([0, 1] * 20))  # fmt: skip
    cfg = from_dict(
        {
            "rounds": 2,
            "data": {"num_clients": 2},
            "model": {"name": "mlp"},
            "client": {"batch_size": 10},
            "dp": {"epsilon": 2.0, "delta": 1e-5},
            "evaluation": {"federated": True, "epsilon": 1.0, "holdout": 0.2},
        }
    )
    state = tmp_path / "state"
    node = {keys.NODE_CLIENT_ID: 1, keys.NODE_DATA_PATH: str(data), keys.NODE_STATE_DIR: str(state)}
    query = _site_app_call(cfg, node, "query")
    assert query.content.metric_records[keys.METRICS][keys.NUM_EXAMPLES] == 32
    trained = _site_app_call(cfg, node, "train")
    assert trained.content.metric_records[keys.METRICS][keys.NUM_EXAMPLES] == 32
    before = load_state(state, 1).ledger
    first = _site_app_call(cfg, node, "evaluate")
    second = _site_app_call(cfg, node, "evaluate")
    counts = [
        list(r.content.metric_records[keys.METRICS][keys.EVAL_COUNTS])  # type: ignore[arg-type]
        for r in (first, second)
    ]
    assert len(counts[0]) == 4 and counts[0] != counts[1]  # the site's own noise
    assert abs(sum(counts[0]) - 8) < 40
    after = load_state(state, 1).ledger
    assert after.events == (*before.events, *[EvaluationRelease(0.5, 2)] * 2)
    status = first.content.config_records[keys.STATUS]
    assert read_ledger(status[keys.STATUS_LEDGER]).ledger == before.with_event(
        EvaluationRelease(0.5, 2)
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text("mechanisms: [dpsgd]\n")
    refused = _site_app_call(cfg, {**node, keys.NODE_POLICY_PATH: str(policy)}, "evaluate")
    assert refused.content.config_records[keys.STATUS][keys.STATUS_CODE] == keys.STATUS_REFUSED
    assert keys.EVAL_COUNTS not in refused.content.metric_records[keys.METRICS]
    assert load_state(state, 1).ledger == after


def test_training_indices_point_at_the_training_data() -> None:
    from fedsim.workload import client_indices, dataset_for

    cfg = _cfg()
    pool = dataset_for(cfg.data, cfg.seed).train
    for cid in range(3):
        assert np.array_equal(pool.x[client_indices(cfg, cid)], client_split(cfg, cid).x)


def test_a_resumed_run_gets_its_site_evaluations_back() -> None:
    from fedsim.checkpoint import entry_of
    from fedsim.records import EvalResult, RoundRecord, SiteEvalRecord, SiteEvaluation, SiteMetrics
    from fedsim.round_log import RoundLog

    evaluation = SiteEvaluation(
        sites=(
            SiteEvalRecord(0, "ok", SiteMetrics.of([[3.5, 1.0], [0.2, 4.0]]), 1.0, 1.0, 2.5),
            SiteEvalRecord(2, "refused", rejected_reason="site policy: no"),
        ),
        aggregate=SiteMetrics.of([[3.5, 1.0], [0.2, 4.0]]),
    )
    line = RoundRecord(round=3, test=EvalResult(0.5, 0.7), site_evaluation=evaluation).to_json()
    log = RoundLog()
    log.restore((entry_of(json.loads(json.dumps(line))),))
    assert log.site_evaluations() == {3: evaluation}
    assert log.entry(3).site_evaluation == evaluation


def test_the_server_records_every_site_and_pools_the_releases(task_identity) -> None:
    """SiteEvaluator.collect over real Flower messages: an error reply, a malformed one,
    a late one (absent), a refusal and two releases — the run goes on, the pool holds the
    two releases only, and each release's ledger reaches the strategy."""
    from fedsim.round_log import RoundLog
    from strategies.directory import ClientDirectory
    from strategies.site_eval import SiteEvaluator

    cfg = _cfg(epsilon=1.0)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_clients=6))
    directory = ClientDirectory(
        node_of={c: 10 + c for c in range(6)},
        client_of={10 + c: c for c in range(6)},
        num_examples={},
    )
    ledgers: dict[int, PrivacyLedger] = {}
    evaluator = SiteEvaluator(cfg, directory, RoundLog(), 2, ledgers.__setitem__)
    sent = {
        c: Message(content=RecordDict({}), dst_node_id=10 + c, message_type="evaluate")
        for c in range(6)
    }

    def reply(cid: int, **change: object) -> Message:
        metrics, configs = _reply(**{keys.CLIENT_ID: cid, **change})
        return Message(
            content=RecordDict({keys.METRICS: MetricRecord(metrics[keys.METRICS]),
                                keys.STATUS: ConfigRecord(configs[keys.STATUS])}),
            reply_to=sent[cid],
        )  # fmt: skip

    refusal = Message(
        content=RecordDict(
            {keys.METRICS: MetricRecord({keys.CLIENT_ID: 3}),
             keys.STATUS: ConfigRecord({keys.STATUS_CODE: "budget-exhausted",
                                        keys.STATUS_REASON: "budget exhausted: ..."})}
        ),
        reply_to=sent[3],
    )  # fmt: skip
    replies = [
        reply(0),
        Message(Error(code=0, reason="Traceback\nValueError: disk gone"), reply_to=sent[1]),
        reply(2, **{keys.EVAL_COUNTS: [1.0, float("inf"), 0.0, 2.0]}),
        refusal,
        reply(5, **{keys.EVAL_COUNTS: [2.0, 1.0, 0.5, 3.0]}),
        reply(5),  # a second reply from the same site: ignored
    ]
    addressed = {(10 + c, ""): c for c in range(6)}
    evaluation = evaluator.collect(4, list(range(6)), replies, addressed)
    status = {s.client_id: s.status for s in evaluation.sites}
    assert status == {0: "ok", 1: "failed", 2: "rejected", 3: "budget-exhausted",
                      4: "failed", 5: "ok"}  # fmt: skip
    reasons = {s.client_id: s.rejected_reason for s in evaluation.sites}
    assert reasons[1] == "client error: ValueError: disk gone"
    assert reasons[4] == "no reply before timeout" and "inf" in str(reasons[2])
    assert evaluation.aggregate is not None
    assert evaluation.aggregate.confusion == ((7.2, 0.7), (1.5, 10.9))
    assert set(ledgers) == {0, 5}
