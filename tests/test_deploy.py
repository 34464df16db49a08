"""Deployment helpers without a network: certificates, node keys, site config and state,
the Flower command lines, the CLI wrappers, and a site's ledger across a restart."""

from __future__ import annotations

import datetime
import ipaddress
import stat
from pathlib import Path

import numpy as np
import pytest
from client_harness import train_config
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_ssh_private_key,
    load_ssh_public_key,
)
from flwr.common.config import parse_config_args

from fedsim import keys
from fedsim.cli import main
from fedsim.config import from_dict, from_run_config
from fedsim.deploy.certs import make_certificates
from fedsim.deploy.commands import (
    SuperLinkSpec,
    SuperNodeSpec,
    node_config_text,
    superlink_command,
    supernode_command,
)
from fedsim.deploy.nodekeys import make_node_key
from fedsim.deploy.site import load_site_data, site_from_node_config
from fedsim.deploy.state import SiteState, load_state, record_round, save_state, state_file
from fedsim.errors import DataError, FedsimError
from fedsim.privacy import Accounting, LaplaceRelease, PrivacyLedger, SubsampledGaussian


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- certificates and keys
def test_certificates_chain_sans_and_private_keys(tmp_path: Path) -> None:
    files = make_certificates(tmp_path / "c", ["link.example.org", "10.0.0.5"])
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"link.example.org", "localhost"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    now = datetime.datetime.now(datetime.UTC)
    assert server.not_valid_before_utc <= now <= server.not_valid_after_utc
    key = load_pem_private_key(files.server_key.read_bytes(), None)
    assert key.public_key().public_numbers() == server.public_key().public_numbers()  # type: ignore[union-attr]
    assert _mode(files.server_key) == 0o600
    assert _mode(files.ca_key) == 0o600
    assert _mode(files.ca_cert) == 0o644


def test_certificates_refuse_to_overwrite_and_bad_hosts(tmp_path: Path) -> None:
    make_certificates(tmp_path, ["a"])
    with pytest.raises(FedsimError, match="--overwrite"):
        make_certificates(tmp_path, ["a"])
    make_certificates(tmp_path, ["b"], overwrite=True)
    with pytest.raises(FedsimError, match="--host"):
        make_certificates(tmp_path / "x", ["https://link:8000"])


def test_node_key_is_what_flower_loads(tmp_path: Path) -> None:
    from flwr.cli.supernode.register import try_load_public_key

    files = make_node_key(tmp_path / "site0", comment="site0")
    private = load_ssh_private_key(files.private.read_bytes(), None)
    public = load_ssh_public_key(files.public.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert private.curve.name == "secp384r1"
    assert private.public_key().public_numbers() == public.public_numbers()
    assert try_load_public_key(files.public)  # Flower's own check (NIST curve, OpenSSH)
    assert _mode(files.private) == 0o600
    with pytest.raises(FedsimError, match="exist"):
        make_node_key(tmp_path / "site0")


# ---------------------------------------------------------------- site config and data
def test_site_from_node_config() -> None:
    site = site_from_node_config(
        {"client-id": 2, "data-path": "/d/x.npz", "state-dir": "/s", "data-format": "npz"}
    )
    assert (site.client_id, site.data_path, site.state_dir) == (2, Path("/d/x.npz"), Path("/s"))
    sim = site_from_node_config({"partition-id": 4, "num-partitions": 5})
    assert (sim.client_id, sim.data_path, sim.state_dir) == (4, None, None)
    with pytest.raises(FedsimError, match="client-id"):
        site_from_node_config({})
    with pytest.raises(FedsimError, match="integer"):
        site_from_node_config({"client-id": "x"})
    with pytest.raises(FedsimError, match="data-format"):
        site_from_node_config({"client-id": 0, "data-format": "csv"})


def test_load_site_data_npz(tmp_path: Path) -> None:
    path = tmp_path / "site.npz"
    images = np.zeros((6, 28, 28), dtype=np.uint8)
    np.savez(path, train_images=images, train_labels=np.array([0, 0, 0, 0, 0, 0]),
             class_names=np.array(["normal", "pneumonia"]))  # fmt: skip
    data = load_site_data(path)
    assert len(data.train) == 6
    assert data.num_classes == 2  # from class_names, although the site has one class only
    assert data.input_shape == (1, 28, 28)
    with pytest.raises(DataError, match="node config data-path"):
        load_site_data(tmp_path / "missing.npz")


# ---------------------------------------------------------------- state file
def test_state_round_trip_and_owner(tmp_path: Path) -> None:
    ledger = (
        PrivacyLedger(1.5)
        .with_event(SubsampledGaussian(1.5, 0.1, 20))
        .with_event(LaplaceRelease(0.5, 1))
    )
    state = record_round(SiteState(client_id=3), ledger, run_id=77, trained=True)
    save_state(tmp_path, state)
    assert _mode(state_file(tmp_path)) == 0o600
    again = load_state(tmp_path, 3)
    assert again == state
    acct = Accounting(1e-5)
    assert again.ledger.epsilon_total(acct) == pytest.approx(ledger.epsilon_total(acct))
    assert list(tmp_path.iterdir()) == [state_file(tmp_path)]  # no temporary files left
    with pytest.raises(FedsimError, match="belongs to client 3"):
        load_state(tmp_path, 4)
    assert load_state(tmp_path / "fresh", 1) == SiteState(client_id=1)
    state_file(tmp_path).write_text("{not json")
    with pytest.raises(FedsimError, match="cannot be read"):
        load_state(tmp_path, 3)


def test_ledger_survives_a_restart_and_stops_at_max_epsilon(tmp_path: Path, monkeypatch) -> None:
    """A site's ClientApp, "restarted" between rounds (a fresh Context each time)."""
    from flwr.app import ArrayRecord, Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_run_id", 1), ("_task_id", 1), ("_node_id", 5)):
        monkeypatch.setattr(TaskIdentity, attr, value, raising=False)

    from clients.client_app import make_client_app
    from fedsim.models import build_model

    site = tmp_path / "site"
    rng = np.random.default_rng(0)
    np.savez(site.with_suffix(".npz"), train_images=rng.integers(0, 255, (40, 28, 28),
             dtype=np.uint8), train_labels=rng.integers(0, 2, 40))  # fmt: skip
    cfg = from_dict(
        {
            "rounds": 2,
            "data": {"num_clients": 2},
            "model": {"name": "mlp"},
            "client": {"batch_size": 10},
            "dp": {"epsilon": 2.0, "delta": 1e-5, "max_epsilon": 2.3},
        }
    )
    node_config = {
        keys.NODE_CLIENT_ID: 1,
        keys.NODE_DATA_PATH: str(site.with_suffix(".npz")),
        keys.NODE_STATE_DIR: str(site / "state"),
    }
    arrays = ArrayRecord(build_model("mlp", (1, 28, 28), 2, seed=0).state_dict())
    epsilons, statuses = [], []
    for server_round in (1, 2, 3):
        app = make_client_app(cfg)  # a fresh app and context: nothing kept in memory
        context = Context(
            run_id=100 + server_round,
            node_id=5,
            node_config=node_config,
            state=RecordDict(),
            run_config={},
        )
        msg = Message(
            content=RecordDict(
                {
                    keys.ARRAYS: arrays,
                    keys.CONFIG: train_config(server_round),
                }
            ),
            dst_node_id=5,
            message_type="train",
        )
        reply = app(msg, context)
        assert not reply.has_error(), reply.error
        epsilons.append(float(reply.content.metric_records[keys.METRICS][keys.EPSILON]))
        statuses.append(reply.content.config_records[keys.STATUS][keys.STATUS_CODE])
        assert context.state.config_records.get(keys.STATE_RECORD) is None  # file, not state
    assert statuses == ["ok", "ok", "budget-exhausted"]
    assert epsilons[0] < epsilons[1] == epsilons[2] <= 2.3
    saved = load_state(site / "state", 1)
    assert saved.rounds_trained == 2
    assert saved.ledger.epsilon_dp_sgd(Accounting.of(cfg.dp)) == pytest.approx(epsilons[1])
    assert sorted(saved.runs) == ["101", "102"]


# ---------------------------------------------------------------- commands and CLI
def test_node_config_text_is_parsed_back_by_flower() -> None:
    entries = {"client-id": 3, "data-path": '/a b/"x".npz', "state-dir": "C:\\s t"}
    assert parse_config_args([node_config_text(entries)]) == entries


def test_command_lines(tmp_path: Path) -> None:
    make_certificates(tmp_path, ["link"])
    link = superlink_command(SuperLinkSpec(certs_dir=tmp_path, port=9000))
    assert "--enable-supernode-auth" in link and "--insecure" not in link
    assert link[link.index("--ssl-certfile") + 1] == str(tmp_path / "server.pem")
    assert "--insecure" in superlink_command(SuperLinkSpec(certs_dir=None, node_auth=False))
    with pytest.raises(FedsimError, match="needs TLS"):
        superlink_command(SuperLinkSpec(certs_dir=None))
    with pytest.raises(FedsimError, match="missing"):
        superlink_command(SuperLinkSpec(certs_dir=tmp_path / "none"))
    node = supernode_command(
        SuperNodeSpec("link:9000", 0, Path("/d.npz"), Path("/s"), tmp_path / "ca.crt", None)
    )
    assert node[node.index("--root-certificates") + 1] == str(tmp_path / "ca.crt")
    assert "--insecure" not in node


def test_cli_certs_keygen_and_insecure_warning(tmp_path: Path, capsys) -> None:
    assert main(["certs", str(tmp_path / "certs"), "--host", "link.example.org"]) == 0
    assert main(["node", "keygen", str(tmp_path / "k" / "site0")]) == 0
    assert "flwr supernode register" in capsys.readouterr().out
    assert main(["superlink", "--certs", str(tmp_path / "certs"), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "--enable-supernode-auth" in err and "WARNING" not in err
    assert main(["superlink", "--dry-run"]) == 2  # neither TLS nor --insecure
    assert main(["superlink", "--insecure", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: --insecure" in err and "--insecure" in err
    assert main(["supernode", "--superlink", "l:1", "--client-id", "0", "--insecure",
                 "--dry-run"]) == 0  # fmt: skip
    assert "WARNING: --insecure" in capsys.readouterr().err


def test_run_config_paths_and_extra_keys(tmp_path: Path) -> None:
    (tmp_path / "exp.yaml").write_text("name: here\nrounds: 3\ndp: {enabled: false}\n")
    cfg = from_run_config(
        {"config-path": "exp.yaml", "overrides": "rounds=4", "out-dir": "/x"}, tmp_path
    )
    assert (cfg.name, cfg.rounds) == ("here", 4)


def test_site_lock_is_exclusive(tmp_path: Path) -> None:
    import fcntl

    from fedsim.deploy.state import LOCK_FILE, site_lock

    with (
        site_lock(tmp_path),
        (tmp_path / LOCK_FILE).open("a") as other,
        pytest.raises(BlockingIOError),
    ):
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    with (tmp_path / LOCK_FILE).open("a") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
