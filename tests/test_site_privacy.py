"""A deployed site's privacy, through its real ClientApp (in process, no network): noise
that nobody else can regenerate, and the site's own policy enforced whatever the run asks.
The loopback version with a SuperLink is in test_deploy_e2e.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from client_harness import train_config
from flwr.app import ArrayRecord, Context, Message, RecordDict

from fedsim import keys
from fedsim.config import from_dict
from fedsim.models import build_model


@pytest.fixture
def site(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "site.npz"
    np.savez(
        path,
        train_images=rng.integers(0, 255, (40, 28, 28), dtype=np.uint8),
        train_labels=rng.integers(0, 2, 40),
    )
    return path


def _config(**dp: Any) -> Any:
    base = {"epsilon": 2.0, "delta": 1e-5}
    base.update(dp)
    return from_dict(
        {
            "rounds": 2,
            "data": {"num_clients": 2},
            "model": {"name": "mlp"},
            "client": {"batch_size": 10},
            "dp": base,
        }
    )


def _train(cfg: Any, node_config: dict[str, Any], seeded: bool = False) -> Message:
    from clients.client_app import make_client_app

    app = make_client_app(cfg, seeded_noise=seeded)
    context = Context(
        run_id=7, node_id=5, node_config=node_config, state=RecordDict(), run_config={}
    )
    arrays = ArrayRecord(build_model("mlp", (1, 28, 28), 2, seed=0).state_dict())
    msg = Message(
        content=RecordDict({keys.ARRAYS: arrays, keys.CONFIG: train_config(1)}),
        dst_node_id=5,
        message_type="train",
    )
    reply = app(msg, context)
    assert not reply.has_error(), reply.error
    return reply


def _weights(reply: Message) -> np.ndarray:
    return np.concatenate(
        [a.ravel() for a in reply.content.array_records[keys.ARRAYS].to_numpy_ndarrays()]
    )


def _status(reply: Message) -> tuple[str, str]:
    status = reply.content.config_records[keys.STATUS]
    return str(status[keys.STATUS_CODE]), str(status[keys.STATUS_REASON])


def test_deployed_site_noise_is_not_derived_from_the_config_seed(
    site: Path, task_identity: None
) -> None:
    """Without a state dir too: two rounds from the same config seed and the same global
    model give different updates on a site, identical ones in a fedsim-run simulation."""
    cfg = _config()
    node = {keys.NODE_CLIENT_ID: 1, keys.NODE_DATA_PATH: str(site)}
    a, b = _weights(_train(cfg, node)), _weights(_train(cfg, node))
    assert not np.allclose(a, b)
    s1, s2 = _weights(_train(cfg, node, seeded=True)), _weights(_train(cfg, node, seeded=True))
    np.testing.assert_array_equal(s1, s2)


def test_default_policy_refuses_a_run_without_dp(site: Path, task_identity: None) -> None:
    node = {keys.NODE_CLIENT_ID: 1, keys.NODE_DATA_PATH: str(site)}
    reply = _train(
        from_dict({"rounds": 2, "model": {"name": "mlp"}, "dp": {"enabled": False}}), node
    )
    code, reason = _status(reply)
    assert code == keys.STATUS_REFUSED and "dp_required" in reason
    assert keys.ARRAYS not in reply.content.array_records  # nothing trained, nothing sent
    assert keys.TRAIN_LOSS not in reply.content.metric_records[keys.METRICS]


def test_default_policy_refuses_central_dp_and_a_large_delta(
    site: Path, task_identity: None
) -> None:
    node = {keys.NODE_CLIENT_ID: 1, keys.NODE_DATA_PATH: str(site)}
    code, reason = _status(_train(_config(mode="central"), node))
    assert code == keys.STATUS_REFUSED and "allow_central" in reason
    code, reason = _status(_train(_config(delta=1e-3), node))
    assert code == keys.STATUS_REFUSED and "max_delta" in reason


def test_policy_cap_is_the_sites_lifetime_epsilon(
    site: Path, tmp_path: Path, task_identity: None
) -> None:
    """The run asks for epsilon 2 (and may spend up to 50); the site's policy caps it at 1:
    the site refuses before training, and its ledger stays empty."""
    from fedsim.deploy.state import load_state

    policy = tmp_path / "policy.yaml"
    policy.write_text("max_epsilon: 1.0\n")
    node = {
        keys.NODE_CLIENT_ID: 1,
        keys.NODE_DATA_PATH: str(site),
        keys.NODE_STATE_DIR: str(tmp_path / "state"),
        keys.NODE_POLICY_PATH: str(policy),
    }
    code, reason = _status(_train(_config(max_epsilon=50.0), node))
    assert code == keys.STATUS_REFUSED
    assert "would exceed max_epsilon 1" in reason and "site's max_epsilon" in reason
    assert load_state(tmp_path / "state", 1).ledger.events == ()
    policy.write_text("max_epsilon: 10.0\n")
    assert _status(_train(_config(max_epsilon=50.0), node))[0] == keys.STATUS_OK


def test_unreadable_policy_refuses_every_round(
    site: Path, tmp_path: Path, task_identity: None
) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("max_epsilon: -1\ncolour: red\n")
    node = {keys.NODE_CLIENT_ID: 1, keys.NODE_DATA_PATH: str(site), keys.NODE_POLICY_PATH: str(bad)}
    code, reason = _status(_train(_config(), node))
    assert code == keys.STATUS_REFUSED
    assert "max_epsilon must be > 0" in reason and "colour" in reason


def test_simulated_node_has_no_site_policy(task_identity: None) -> None:
    """A node of Flower's simulation engine (partition-id only) is not a hospital: the
    researcher's own run config decides."""
    cfg = from_dict(
        {
            "rounds": 1,
            "data": {"num_clients": 2},
            "model": {"name": "mlp"},
            "dp": {"enabled": False},
        }
    )
    reply = _train(cfg, {keys.NODE_PARTITION_ID: 0, keys.NODE_NUM_PARTITIONS: 2}, seeded=True)
    assert _status(reply)[0] == keys.STATUS_OK
    assert keys.TRAIN_LOSS in reply.content.metric_records[keys.METRICS]  # no DP promise
