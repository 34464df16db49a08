"""Who may submit code to the sites: operator certificates, the front's routes, app
signatures, confined run paths and client-id bindings (the pure parts; the loopback
federation in ``test_deploy_e2e.py`` exercises them with real processes)."""

from __future__ import annotations

import io
import json
import shutil
import ssl
import zipfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedsim.cli import main
from fedsim.config import from_run_config
from fedsim.deploy.appsign import (
    SIGNATURE_FILE,
    AppRefusedError,
    app_digest,
    build_fab,
    load_trusted_keys,
    make_app_key,
    sign_app,
    verify_fab,
)
from fedsim.deploy.bindings import assign_clients, load_bindings, save_bindings
from fedsim.deploy.certs import make_certificates, make_operator_certificate
from fedsim.deploy.commands import (
    SuperLinkSpec,
    SuperNodeSpec,
    superlink_command,
    supernode_command,
)
from fedsim.deploy.confine import app_file, run_dir
from fedsim.deploy.front import CONTROL_PREFIXES, FLEET_PREFIXES, allowed
from fedsim.errors import ConfigError, FedsimError, RunError

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- operator certificates
def test_operator_certificate_is_a_client_certificate_of_the_ca(tmp_path: Path) -> None:
    make_certificates(tmp_path, [])
    files = make_operator_certificate(tmp_path, "alice")
    assert files.key.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # a TLS client context accepts the pair
    ssl.create_default_context(cafile=str(tmp_path / "ca.crt")).load_cert_chain(
        str(files.cert), str(files.key)
    )
    with pytest.raises(FedsimError, match="exist"):
        make_operator_certificate(tmp_path, "alice")
    with pytest.raises(FedsimError, match="plain name"):
        make_operator_certificate(tmp_path, "../alice")
    with pytest.raises(FedsimError, match="needs the federation CA"):
        make_operator_certificate(tmp_path / "empty", "bob")


def test_cli_issues_an_operator_certificate(tmp_path: Path, capsys) -> None:
    assert main(["certs", str(tmp_path)]) == 0
    assert main(["certs", str(tmp_path), "--operator", "bob"]) == 0
    assert (tmp_path / "operator-bob.pem").is_file()
    assert "control-tunnel" in capsys.readouterr().out


# ---------------------------------------------------------------- the front's routes
@pytest.mark.parametrize(
    ("path", "fleet", "control"),
    [
        ("/v1/fleet/pull-messages", True, False),
        ("/v1/control/start-run", False, True),
        ("/v1/control/register-node", False, True),
        ("/v1/runtime/get-nodes", False, False),
        ("/health", True, True),
        ("/docs", False, False),
        ("/openapi.json", False, False),
        ("/v1/fleet/../control/start-run", False, False),
        ("/v1/fleet/%2e%2e/control/start-run", False, False),
        ("/v1/fleet/x%2Fy", False, False),
        ("/v1/fleet//x", False, False),
        ("/v1/fleetx/y", False, False),
    ],
)
def test_each_port_forwards_only_its_api(path: str, fleet: bool, control: bool) -> None:
    assert allowed(path, FLEET_PREFIXES) is fleet
    assert allowed(path, CONTROL_PREFIXES) is control


def test_tls_superlink_binds_loopback_behind_the_front(tmp_path: Path) -> None:
    make_certificates(tmp_path, [])
    cmd = superlink_command(SuperLinkSpec(certs_dir=tmp_path, port=8000, internal_port=9100))
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == "9100"
    insecure = superlink_command(SuperLinkSpec(certs_dir=None, node_auth=False))
    assert insecure[insecure.index("--host") + 1] == "0.0.0.0"


def test_cli_superlink_dry_run_names_both_ports(tmp_path: Path, capsys) -> None:
    make_certificates(tmp_path, [])
    argv = ["superlink", "--certs", str(tmp_path), "--runs-dir", str(tmp_path / "r"), "--dry-run"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "Control https://0.0.0.0:8001 (operator certificates only)" in err
    assert "--host 127.0.0.1 --port 9100" in err
    assert main([*argv[:-1], "--control-port", "8000", "--dry-run"]) == 2


# ---------------------------------------------------------------- app signatures
@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the app's FAB files, in a folder named as Flower wants it."""
    target = tmp_path_factory.mktemp("app") / "fedsim"
    target.mkdir()
    for name in ("pyproject.toml", ".gitignore", "README.md", SIGNATURE_FILE):
        shutil.copy2(REPO / name, target / name)
    for name in ("strategies", "clients", "experiments"):
        shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _rezip(fab: bytes, change: dict[str, bytes], extra: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(fab)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, change.get(info.filename, src.read(info)))
        for name, content in extra:
            dst.writestr(name, content)
    return out.getvalue()


@pytest.mark.filterwarnings("ignore:Duplicate name")  # the forged bundle below has one
def test_signed_app_verifies_and_every_change_breaks_it(app: Path, tmp_path: Path) -> None:
    key = make_app_key(tmp_path / "approver")
    other = make_app_key(tmp_path / "other")
    trusted = load_trusted_keys(key.public)
    with pytest.raises(AppRefusedError, match="not signed"):
        verify_fab(build_fab(app), trusted)  # the shipped placeholder
    sign_app(app, key.private)
    fab = build_fab(app)
    assert verify_fab(fab, trusted)
    code = "clients/client_app.py"
    for altered in (
        _rezip(fab, {code: b"import os\n"}, []),  # changed code
        _rezip(fab, {}, [("clients/extra.py", b"x = 1\n")]),  # added code
        _rezip(fab, {"pyproject.toml": b"[project]\nname='x'\n"}, []),  # other entry points
    ):
        with pytest.raises(AppRefusedError, match="does not match its files"):
            verify_fab(altered, trusted)
    with pytest.raises(AppRefusedError, match="twice"):
        verify_fab(_rezip(fab, {}, [(code, b"import os\n")]), trusted)
    with pytest.raises(AppRefusedError, match="does not trust"):
        verify_fab(fab, load_trusted_keys(other.public))
    with pytest.raises(AppRefusedError, match="not a readable zip"):
        verify_fab(b"PK\x03\x04 not really", trusted)
    # the signature file and Flower's manifest are not signed, everything else is
    with zipfile.ZipFile(io.BytesIO(fab)) as archive:
        members = [(i.filename, archive.read(i)) for i in archive.infolist()]
    signed = json.loads(dict(members)[SIGNATURE_FILE])
    assert code in signed["files"] and SIGNATURE_FILE not in signed["files"]
    assert app_digest(members).hex() == signed["digest"]


def test_cli_app_keygen_sign_verify(app: Path, tmp_path: Path, capsys) -> None:
    assert main(["app", "keygen", str(tmp_path / "k")]) == 0
    assert main(["app", "sign", str(app), "--key", str(tmp_path / "k")]) == 0
    assert main(["app", "verify", str(app), "--trusted-keys", str(tmp_path / "k.pub")]) == 0
    assert "signed by trusted key" in capsys.readouterr().out
    secret = "hunter2-secret-line"
    (tmp_path / "bad.pub").write_text(secret + "\n")
    assert main(["app", "verify", str(app), "--trusted-keys", str(tmp_path / "bad.pub")]) == 2
    err = capsys.readouterr().err
    assert "line 1: not an ssh-ed25519 public key" in err and secret not in err


def test_site_command_runs_the_checking_launcher(tmp_path: Path, capsys) -> None:
    make_certificates(tmp_path, [])
    keys = make_app_key(tmp_path / "approver")
    spec = SuperNodeSpec("l:1", 0, None, None, tmp_path / "ca.crt", None, trusted_keys=keys.public)
    cmd = supernode_command(spec)
    assert cmd[1:5] == ["-m", "fedsim.deploy.supernode", "--trusted-keys", str(keys.public)]
    assert "--root-certificates" in cmd
    base = ["supernode", "--superlink", "l:1", "--client-id", "0", "--ca", str(tmp_path / "ca.crt")]
    assert main([*base, "--dry-run"]) == 2  # TLS without trusted keys: refused
    assert "give --trusted-keys FILE" in capsys.readouterr().err
    assert main([*base, "--trusted-keys", str(keys.public), "--dry-run"]) == 0
    assert main([*base, "--allow-unsigned-apps", "--dry-run"]) == 0
    assert "runs any app" in capsys.readouterr().err


# ---------------------------------------------------------------- confined paths
def test_config_path_stays_in_the_app_and_is_never_echoed(tmp_path: Path) -> None:
    make_certificates(tmp_path / "certs", [])
    app_dir = tmp_path / "app"
    (app_dir / "experiments").mkdir(parents=True)
    (app_dir / "experiments" / "x.yaml").write_text("name: x\n")
    assert app_file("experiments/x.yaml", app_dir) == (app_dir / "experiments" / "x.yaml")
    key = tmp_path / "certs" / "ca.key"
    for given in (str(key), "../certs/ca.key", "experiments/../../certs/ca.key"):
        with pytest.raises(ConfigError, match="config-path must name a file inside the app"):
            from_run_config({"config-path": given}, app_dir)
    (app_dir / "link.yaml").symlink_to(key)
    with pytest.raises(ConfigError, match="inside the app"):
        from_run_config({"config-path": "link.yaml"}, app_dir)
    # outside an app (fedsim's own tests and tools) a non-YAML file is named, not shown
    with pytest.raises(ConfigError) as caught:
        from_run_config({"config-path": str(key)})
    body = "".join(key.read_text().splitlines()[1:-1])[:30]
    assert "must hold a mapping" in str(caught.value) and body not in str(caught.value)


def test_out_dir_stays_in_the_runs_folder_and_never_reuses_a_run(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    assert run_dir("", "exp-7", root) == root / "exp-7"
    assert run_dir("a/b", "exp-7", root) == root / "a" / "b"
    assert run_dir(str(root / "c"), "exp-7", root) == root / "c"
    for given in ("../x", "/etc", str(tmp_path), ".", "a/../../x"):
        with pytest.raises(RunError, match="inside the coordinator's runs folder"):
            run_dir(given, "exp-7", root)
    (root / "done").mkdir(parents=True)
    (root / "done" / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(RunError, match="already exists"):
        run_dir("done", "exp-7", root)
    (root / "escape").symlink_to(tmp_path)
    with pytest.raises(RunError, match="inside"):
        run_dir("escape/x", "exp-7", root)


# ---------------------------------------------------------------- client-id bindings
def test_a_bound_client_id_refuses_other_nodes() -> None:
    out = assign_clients({10: 0, 11: 1, 99: 0}, 2, bound={0: 10})
    assert out.node_of == {0: 10, 1: 11}
    assert "belongs to node 10" in out.refused[99] and not out.contested


def test_unbound_duplicates_and_out_of_range_ids() -> None:
    out = assign_clients({10: 0, 11: 0, 12: 1, 13: 5}, 2, bound={})
    assert out.node_of == {1: 12}
    assert out.contested == {0: (10, 11)}
    assert "claimed by nodes 10, 11" in out.refused[10]
    assert "outside [0, 2)" in out.refused[13]


def test_bindings_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    assert load_bindings(path) == {}
    save_bindings(path, {1: 22, 0: 11})
    assert load_bindings(path) == {0: 11, 1: 22}
    path.write_text("[1, 2]")
    with pytest.raises(RunError, match="contents not shown"):
        load_bindings(path)


def test_launcher_refuses_other_flower_versions_and_flower_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import flwr.supercore.version

    from fedsim.deploy import supernode

    keys = make_app_key(tmp_path / "approver")
    monkeypatch.setattr(flwr.supercore.version, "package_version", "1.42.0")
    with pytest.raises(FedsimError, match=r"this is Flower 1\.42\.0"):
        supernode.install(keys.public)
    argv = ["--trusted-keys", str(keys.public), "--", "--trusted-entities", "x.yaml"]
    assert supernode.main(argv) == 2
    assert "not Flower's --trusted-entities" in capsys.readouterr().err
