"""``fedsim audit`` through fedsim's own code paths: soundness and power.

User level: the real central-DP wrapper (Poisson cohorts, clipping, noise, accounting),
the real canary clients' uploads and the real auditor; the other clients' updates are
synthetic (the audit only sees the mechanism). Sample level: the real local round of the
audited client (Opacus DP-SGD with its canary records) observed as the server sees it.
Power is shown by injecting a broken mechanism — noise smaller than the accountant
assumes — which the audit must report as a VIOLATION, and by a mechanism with almost no
noise, whose estimate must be large.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from strategy_harness import strategy_context

from fedsim import keys
from fedsim.audit.canaries import canary_of, federation_size, inclusion
from fedsim.config import from_dict
from fedsim.seeding import numpy_rng
from strategies.audit import SampleLevelAuditor, UserLevelAuditor, finish_audit
from strategies.registry import build_strategy

SHARED_RAY = True  # its in-process runs share one Ray and warm workers (conftest)
DIM = 2000


def _user_config(seed: int, sigma: float, rounds: int = 6, canaries: int = 400) -> Any:
    return from_dict(
        {
            "seed": seed,
            "rounds": rounds,
            "data": {"num_clients": 20},
            "model": {"name": "mlp"},
            "dp": {"mode": "central", "noise_multiplier": sigma, "delta": 1e-5},
            "strategy": {"clients_per_round": 10},  # q = 0.5
            "audit": {"enabled": True, "canaries": canaries},
        }
    )


def _user_audit(cfg: Any) -> Any:
    """A user-level audit of ``cfg`` through the central-DP wrapper and canary clients."""
    from clients.audit_canaries import canary_upload
    from strategies.central_dp import CentralDP, fedsim_core

    size = federation_size(cfg)
    nodes = {c: 1000 + c for c in range(size)}
    outer = build_strategy(strategy_context(cfg, nodes), seeded=True)
    assert isinstance(outer, CentralDP)
    core = fedsim_core(outer)
    glob = {"w": np.zeros(DIM, np.float32)}
    auditor = UserLevelAuditor(cfg, glob)
    rng = numpy_rng(cfg.seed, "synthetic-updates")
    for rnd in range(1, cfg.rounds + 1):
        record = ArrayRecord({k: Array(v) for k, v in glob.items()})
        msgs = list(outer.configure_train(rnd, record, ConfigRecord(), grid=None))  # type: ignore[arg-type]
        replies = []
        for msg in msgs:
            cid = core.directory.client_of[msg.metadata.dst_node_id]
            canary = canary_of(cfg, cid)
            if canary is None:  # an ordinary client: a small random update
                upload = {"w": glob["w"] + rng.normal(0, 0.01, DIM).astype(np.float32)}
            else:
                upload = canary_upload(cfg, canary, glob)
            metrics = MetricRecord({keys.CLIENT_ID: cid, keys.UNIT_WEIGHT: 1})
            content = RecordDict(
                {
                    keys.ARRAYS: ArrayRecord({k: Array(v) for k, v in upload.items()}),
                    keys.METRICS: metrics,
                }
            )
            replies.append(Message(content, reply_to=msg))
        arrays, _ = outer.aggregate_train(rnd, replies)
        assert arrays is not None
        auditor.on_release(arrays)
        glob = {k: a.numpy() for k, a in arrays.items()}
    return finish_audit(cfg, auditor, outer.ledger)


def test_canary_clients_join_as_extra_members() -> None:
    cfg = _user_config(0, 1.0, canaries=40)
    included = inclusion(0, 40)
    assert federation_size(cfg) == 20 + int(included.sum())
    assert canary_of(cfg, 19) is None
    assert canary_of(cfg, 20) == int(np.flatnonzero(included)[0])


@pytest.mark.usefixtures("task_identity")
def test_user_level_audit_is_sound_on_a_correct_mechanism() -> None:
    """Over several seeds the one-run lower bound never exceeds the claimed ε."""
    for seed in range(3):
        result = _user_audit(_user_config(seed, sigma=1.5))
        assert result.verdict == "consistent"
        assert result.bound.epsilon <= result.claimed_epsilon_add_remove
        assert result.claimed_epsilon_add_remove < result.claimed_epsilon  # replace-one is larger
        assert result.observations == 6


@pytest.mark.slow
@pytest.mark.usefixtures("task_identity")
def test_user_level_audit_has_power() -> None:
    """Little noise (σ = 0.2, the smallest a config accepts; claimed ε above 100): the
    estimate is large (measured 11.2, bound 2.76). Noise ten times smaller than the
    accountant assumes: a VIOLATION."""
    weak = _user_audit(_user_config(1, sigma=0.2))
    assert weak.claimed_epsilon_add_remove > 100
    assert weak.estimate.epsilon > 10 and weak.bound.epsilon > 2

    from fedsim.privacy.central import CentralDpPlan

    honest = _user_config(2, sigma=4.0)
    with pytest.MonkeyPatch.context() as mp:
        # the bug: the release adds noise std σC/10 while the plan (and accountant) say σC
        mp.setattr(
            CentralDpPlan,
            "noise_std",
            property(lambda p: p.noise_multiplier * p.clipping_norm / 10),
        )
        broken = _user_audit(honest)
    assert broken.claimed_epsilon_add_remove < 2.0  # a strong claim ...
    assert broken.verdict == "VIOLATION", broken  # ... that the canaries refute


def _sample_config(seed: int, **dp: Any) -> Any:
    return from_dict(
        {
            "seed": seed,
            "rounds": 3,
            "data": {"num_clients": 2, "train_samples": 400, "test_samples": 50},
            "model": {"name": "mlp"},
            "client": {"local_epochs": 1, "batch_size": 32, "lr": 0.1},
            "dp": {"delta": 1e-5, **dp},
            "audit": {"enabled": True, "canaries": 300},
        }
    )


def _sample_audit(cfg: Any) -> Any:
    """The audited client's rounds through run_local_round, observed as the server does."""
    from client_harness import simulated_round

    from fedsim.models import build_model
    from fedsim.privacy import PrivacyLedger
    from fedsim.workload import dataset_for

    bundle = dataset_for(cfg.data, cfg.seed)
    model = build_model("mlp", bundle.input_shape, bundle.num_classes, seed=0)
    trainable = {k: v.detach().numpy() for k, v in model.named_parameters()}
    auditor = SampleLevelAuditor(cfg, trainable)
    state, ledger = model.state_dict(), PrivacyLedger()
    for rnd in range(1, cfg.rounds + 1):
        out = simulated_round(cfg, cfg.audit.client, state, rnd, ledger)
        assert out.status == "ok" and out.state_dict is not None
        assert out.num_examples == 200  # the canaries are not reported
        reply = Message(
            RecordDict({keys.ARRAYS: ArrayRecord(out.state_dict)}),
            dst_node_id=1,
            message_type="train",
        )
        auditor.on_accepted(ArrayRecord(state), [(cfg.audit.client, reply)])
        state, ledger = out.state_dict, out.ledger
    return finish_audit(cfg, auditor, ledger)


@pytest.mark.slow
@pytest.mark.usefixtures("task_identity")
def test_sample_level_audit_is_sound_and_detects_broken_noise() -> None:
    for seed in range(2):
        ok = _sample_audit(_sample_config(seed, noise_multiplier=2.0))
        assert ok.verdict == "consistent" and ok.bound.epsilon <= ok.claimed_epsilon_add_remove
    from opacus.optimizers import optimizer as opacus_optimizer

    original = opacus_optimizer._generate_noise

    def tenth(std: float, reference: Any, generator: Any = None, secure_mode: bool = False) -> Any:
        return original(std / 10, reference, generator, secure_mode)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(opacus_optimizer, "_generate_noise", tenth)  # the accountant still sees σ
        broken = _sample_audit(_sample_config(0, noise_multiplier=4.0))
    assert broken.claimed_epsilon_add_remove < 1.5
    assert broken.verdict == "VIOLATION", broken


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["sample", "central"])
def test_fedsim_audit_command(
    tmp_path: Path, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI end to end: a real simulated run with canaries, audit.json, the report
    section, exit code 0 on a correct mechanism."""
    import json

    from fedsim.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "name: audit-e2e\nseed: 0\nrounds: 2\n"
        "data: {name: pneumoniamnist, num_clients: 3, train_samples: 300, test_samples: 50}\n"
        "model: {name: mlp}\nclient: {local_epochs: 1, batch_size: 32, lr: 0.2}\n"
        f"dp: {{epsilon: 4.0, delta: 1.0e-5, mode: {mode}}}\n"
        "strategy: {clients_per_round: 3}\naudit: {canaries: 60}\n"
    )
    code = main(["audit", str(cfg), "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr()
    doc = json.loads((tmp_path / "run" / "audit.json").read_text())
    assert doc["level"] == ("user" if mode == "central" else "sample")
    assert doc["verdict"] == "consistent" and doc["canaries"] == 60
    assert doc["observations"] >= 1
    assert "## Privacy audit" in (tmp_path / "run" / "report.md").read_text()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["audit"]["verdict"] == "consistent"
    if mode == "central":  # the canary clients are declared as such
        roles = {c["role"] for c in summary["clients"].values()}
        assert "canary" in roles
