"""A real networked federation on loopback: SuperLink + three SuperNodes, TLS, node auth.

Runs the very commands a user runs (``fedsim certs`` / ``fedsim node keygen`` /
``fedsim app keygen|sign`` code, ``fedsim superlink`` with its mTLS front,
``fedsim control-tunnel``, the ``flower-supernode`` command lines of
:mod:`fedsim.deploy.commands` through fedsim's app-checking launcher,
``flwr supernode register`` and ``flwr run``), each SuperNode with its own ``.npz`` file
and state dir, on a signed copy of the app. Checks: a 2-round DP FedAvg run writes the
run directory contract; a SuperNode with an unregistered key is refused; without the
operator certificate nothing reaches the Control API (run, register, list) and the Fleet
port serves no Control route; an unsigned and a wrongly signed app are refused by every
site; ``out-dir`` outside the runs folder or onto an earlier run, and ``config-path``
pointing at the CA key, are refused without echoing the key; a SuperNode claiming a
client id another node holds is refused while the run goes on; a SuperNode restarted
between runs continues from the ε it had spent and refuses to train past
``dp.max_epsilon``; every site's privacy policy refuses a run without DP, and a site
whose own policy caps its lifetime ε refuses the round that would pass it. Every process
is stopped at teardown, also on failure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from fedsim.data import load_dataset
from fedsim.deploy.appsign import SIGNATURE_FILE, make_app_key, sign_app
from fedsim.deploy.bindings import BINDINGS_FILE
from fedsim.deploy.certs import make_certificates, make_operator_certificate
from fedsim.deploy.commands import SuperLinkSpec, SuperNodeSpec, supernode_command
from fedsim.deploy.nodekeys import make_node_key
from fedsim.deploy.state import load_state
from fedsim.privacy import Accounting, SubsampledGaussian
from fedsim.rundir import read_metrics, read_summary
from tests.deploy_procs import Processes, free_port, wait_for_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
# The Flower CLIs of this interpreter's environment: a CI whose PATH lacks the scripts
# directory must fail here, not skip.
SCRIPTS = sysconfig.get_path("scripts")
TOOLS = ("flower-superlink", "flower-supernode", "flwr")
NUM_SITES = 3
SITE_SAMPLES = 64
RUN_TIMEOUT = 420.0
ACCT = Accounting(1e-5)  # the config's δ, replace-one, PLD

CONFIG = """\
name: deploy-e2e
seed: 0
rounds: 2
data: {name: pneumoniamnist, num_clients: 3, test_samples: 100}
model: {name: mlp}
client: {local_epochs: 1, batch_size: 32, lr: 0.1}
dp: {enabled: true, epsilon: 3.0, delta: 1.0e-5, max_epsilon: 100.0}
strategy: {name: fedavg, clients_per_round: 3, round_timeout: 300}
"""


#: The app's files that ``flwr run`` ships (pyproject's fab-include) and its build reads.
APP_FILES = ("pyproject.toml", ".gitignore", "README.md", SIGNATURE_FILE)
APP_DIRS = ("strategies", "clients", "experiments")
#: The e2e config, inside each app copy (config-path must name a file of the app).
APP_CONFIG = "experiments/deploy-e2e.yaml"


def superlink_spec(
    certs: Path,
    host: str,
    port: int,
    database: Path,
    control_port: int = 8001,
    internal_port: int = 9100,
    runs_dir: Path | None = None,
) -> SuperLinkSpec:
    """The SuperLink this test runs; ``docker/docker-compose.yml`` must run the same
    (``tests/test_docker.py`` compares the two command lines)."""
    return SuperLinkSpec(
        certs_dir=certs,
        host=host,
        port=port,
        database=database,
        control_port=control_port,
        internal_port=internal_port,
        runs_dir=runs_dir,
    )


def superlink_cli_args(spec: SuperLinkSpec) -> list[str]:
    """The ``fedsim superlink`` arguments that start ``spec`` (front + SuperLink)."""
    assert spec.certs_dir is not None and spec.database is not None
    assert spec.runs_dir is not None
    return [
        "superlink",
        *("--certs", str(spec.certs_dir), "--host", spec.host, "--port", str(spec.port)),
        *("--control-port", str(spec.control_port)),
        *("--internal-port", str(spec.internal_port)),
        *("--database", str(spec.database), "--runs-dir", str(spec.runs_dir)),
    ]


def site_spec(
    superlink: str,
    client_id: int,
    data: Path,
    state: Path,
    ca: Path,
    key: Path,
    runtime_port: int,
    policy: Path | None = None,
    trusted_keys: Path | None = None,
) -> SuperNodeSpec:
    """One site's SuperNode as this test runs it; each hospital container must run the
    same (``tests/test_docker.py``)."""
    return SuperNodeSpec(
        superlink=superlink,
        client_id=client_id,
        data_path=data,
        state_dir=state,
        root_certificates=ca,
        private_key=key,
        runtime_port=runtime_port,
        policy_path=policy,
        trusted_keys=trusted_keys,
    )


@dataclass
class Federation:
    root: Path
    procs: Processes
    env: dict[str, str]
    port: int
    certs: Path
    keys: Path
    #: the signed copy of the app that every run ships, and the sites' trusted keys
    app: Path
    trusted: Path
    #: ``flwr run --stream`` output of each run, by its ``out`` name
    streams: dict[str, str] = field(default_factory=dict)

    #: runtime API port of each running site, by client id
    runtime_ports: dict[int, int] = field(default_factory=dict)

    def site_spec(
        self, k: int, key: str | None = None, policy: Path | None = None
    ) -> SuperNodeSpec:
        return site_spec(
            superlink=f"127.0.0.1:{self.port}",
            client_id=k,
            data=self.root / f"site{k}" / "data.npz",
            state=self.root / f"site{k}" / "state",
            ca=self.certs / "ca.crt",
            key=self.keys / (key or f"site{k}"),
            runtime_port=free_port(),
            policy=policy,
            trusted_keys=self.trusted,
        )

    def start_site(self, k: int, policy: Path | None = None) -> None:
        spec = self.site_spec(k, policy=policy)
        self.runtime_ports[k] = spec.runtime_port
        self.procs.start(f"site{k}", supernode_command(spec), self.root)

    def flwr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["flwr", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def run_config(self, out: str, overrides: str = "", config: str = APP_CONFIG) -> str:
        return f"config-path='{config}' out-dir='{out}' overrides='{overrides}'"

    def run(self, out: str, overrides: str = "") -> Path:
        out_dir = self.root / "runs" / out
        done = self.flwr(
            "run",
            str(self.app),
            "fedsim-e2e",
            "--run-config",
            self.run_config(out, overrides),
            "--stream",
            timeout=RUN_TIMEOUT,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        self.streams[out] = done.stdout + done.stderr
        if not (out_dir / "summary.json").exists():
            logs = self.procs.log("superlink")[-4000:]
            pytest.fail(f"run {out} wrote no summary.json\n{done.stdout[-3000:]}\n{logs}")
        return out_dir


def write_site_data(root: Path) -> None:
    """Each site's own small .npz, drawn from PneumoniaMNIST's training split."""
    bundle = load_dataset("pneumoniamnist")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(bundle.train))
    for k in range(NUM_SITES):
        part = order[k * SITE_SAMPLES : (k + 1) * SITE_SAMPLES]
        site = root / f"site{k}"
        (site / "state").mkdir(parents=True)
        np.savez(
            site / "data.npz",
            train_images=(bundle.train.x[part, 0] * 255).astype(np.uint8),
            train_labels=bundle.train.y[part],
            class_names=np.array(bundle.class_names),
        )


def copy_app(target: Path) -> Path:
    """A copy of the app (what ``flwr run`` ships) with the e2e config in it."""
    target.mkdir(parents=True)
    for name in APP_FILES:
        shutil.copy2(REPO / name, target / name)
    for name in APP_DIRS:
        shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    (target / APP_CONFIG).write_text(CONFIG)
    return target


def require_flower_tools() -> None:
    """Fail (not skip) unless every Flower CLI is in this interpreter's scripts directory."""
    missing = [name for name in TOOLS if shutil.which(name, path=SCRIPTS) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found in {SCRIPTS}: install fedsim with its dev extra "
            "(pip install -e '.[dev]') into the interpreter that runs the tests"
        )


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    require_flower_tools()
    root = tmp_path_factory.mktemp("federation")
    certs, keys = root / "certs", root / "keys"
    make_certificates(certs, ["localhost"])
    operator = make_operator_certificate(certs, "alice")
    for k in range(NUM_SITES):
        make_node_key(keys / f"site{k}", f"site{k}")
    for name in ("intruder", "rogue"):
        make_node_key(keys / name, name)
    approver = make_app_key(keys / "approver", "approver")
    stranger = make_app_key(keys / "stranger", "stranger")
    # the approved app, an unsigned copy and one signed with a key no site trusts (each
    # in a folder named as Flower wants an app folder)
    app = copy_app(root / "approved" / "fedsim")
    sign_app(app, approver.private)
    copy_app(root / "unsigned" / "fedsim")
    sign_app(copy_app(root / "stranger" / "fedsim"), stranger.private)
    write_site_data(root)

    port, control, internal, tunnel = free_port(), free_port(), free_port(), free_port()
    flwr_home = root / "flwr-home"
    flwr_home.mkdir()
    ca = certs / "ca.crt"
    (flwr_home / "config.toml").write_text(
        '[superlink]\ndefault = "fedsim-e2e"\n\n'
        # the operator: through the control tunnel (mTLS from there on)
        f'[superlink.fedsim-e2e]\naddress = "127.0.0.1:{tunnel}"\ninsecure = true\n\n'
        # a stranger with the public CA certificate but no operator certificate
        f'[superlink.direct]\naddress = "127.0.0.1:{control}"\nroot-certificates = "{ca}"\n\n'
        f'[superlink.fleet]\naddress = "127.0.0.1:{port}"\nroot-certificates = "{ca}"\n'
    )
    env = dict(os.environ)
    env.update(
        # fedsim.deploy.commands and `flwr` below name bare binaries (and the SuperLink starts
        # further Flower processes by name): this interpreter's scripts directory comes first.
        PATH=os.pathsep.join([SCRIPTS, env.get("PATH", "")]).rstrip(os.pathsep),
        FLWR_HOME=str(flwr_home),
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        PYTHONUNBUFFERED="1",
    )
    (root / "logs").mkdir()
    procs = Processes(root / "logs", env)
    fed = Federation(root, procs, env, port, certs, keys, app, approver.public)
    fedsim = [sys.executable, "-m", "fedsim.cli"]
    try:
        link_spec = superlink_spec(
            certs, "127.0.0.1", port, root / "superlink.db", control, internal, root / "runs"
        )
        link = procs.start("superlink", [*fedsim, *superlink_cli_args(link_spec)], root)
        wait_for_port(port, 90.0, link)  # the front listens once the SuperLink does
        tunnel_args = (
            f"control-tunnel --coordinator 127.0.0.1:{control} --ca {ca} "
            f"--cert {operator.cert} --key {operator.key} --port {tunnel}"
        )
        tunnel_proc = procs.start("tunnel", [*fedsim, *tunnel_args.split()], root)
        wait_for_port(tunnel, 30.0, tunnel_proc)
        for k in range(NUM_SITES):
            done = fed.flwr("supernode", "register", str(keys / f"site{k}.pub"), "fedsim-e2e")
            assert done.returncode == 0, done.stdout + done.stderr
        for k in range(NUM_SITES):
            fed.start_site(k)
        yield fed
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def first_run(federation: Federation) -> Path:
    return federation.run("first")


def test_run_writes_the_run_directory_contract(first_run: Path) -> None:
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "model.pt"):
        assert (first_run / name).is_file(), name
    # the coordinator remembers which node holds which client id
    bindings = json.loads((first_run.parent / BINDINGS_FILE).read_text())
    assert sorted(bindings) == ["0", "1", "2"]
    rounds = read_metrics(first_run)
    assert [r["round"] for r in rounds] == [1, 2]
    for record in rounds:
        assert sorted(record["selected"]) == [0, 1, 2]
        for cid in ("0", "1", "2"):
            client = record["clients"][cid]
            assert client["status"] == "ok"
            assert client["num_examples"] == SITE_SAMPLES  # each site's own file
            assert 0 < client["epsilon"] < 100
    summary = read_summary(first_run)
    assert summary["rounds"] == 2
    assert 0.0 <= summary["final"]["test_accuracy"] <= 1.0
    state = torch.load(first_run / "model.pt", map_location="cpu")
    assert all(not k.startswith("_module.") for k in state)


def test_the_run_log_has_a_progress_line_per_round(federation: Federation, first_run: Path) -> None:
    # Flower's stream shows each ServerApp log record twice (its console handler and its
    # log uploader, in two formats), its own records and ours alike: compare the messages
    found = [
        line[line.index("round ") :]
        for line in federation.streams["first"].splitlines()
        if re.search(r"round \d+/2  acc ", line)
    ]
    lines = list(dict.fromkeys(found))
    # round 0 (the initial model), then one line per round
    assert [line.split()[1] for line in lines] == ["0/2", "1/2", "2/2"], federation.streams["first"]
    assert lines[0].endswith("(initial model)")
    assert all(re.search(r"max eps .* s/round, ETA \d+\w*\)$", line) for line in lines[1:])


def test_the_containers_health_checks_pass_on_the_loopback_federation(
    federation: Federation, first_run: Path
) -> None:
    """Each compose health check, run as the container runs it (``python -m
    fedsim.deploy.health ...``) with this federation's address in place of the
    container's, passes against the running SuperLink and SuperNodes; a port nobody
    serves fails it."""
    from fedsim.deploy.compose import ComposeSpec, compose_config

    services = compose_config(ComposeSpec())["services"]
    link_check = services["superlink"]["healthcheck"]["test"][1:]
    site_check = services["hospital-0"]["healthcheck"]["test"][1:]

    def local(check: list[str], url: str) -> list[str]:
        swap = {"python": sys.executable, "/certs/ca.crt": str(federation.certs / "ca.crt")}
        return [url if arg.endswith("/health") else swap.get(arg, arg) for arg in check]

    checks = [local(link_check, f"https://localhost:{federation.port}/health")]
    for k in range(NUM_SITES):
        checks.append(local(site_check, f"http://127.0.0.1:{federation.runtime_ports[k]}/health"))
    checks.append(local(site_check, f"http://127.0.0.1:{free_port()}/health"))
    codes = [
        subprocess.run(cmd, env=federation.env, capture_output=True, timeout=60).returncode
        for cmd in checks
    ]
    assert codes == [0] * (1 + NUM_SITES) + [1]


def test_unregistered_node_is_refused(federation: Federation, first_run: Path) -> None:
    spec = federation.site_spec(0, key="intruder")
    cmd = [*supernode_command(spec), "--max-retries", "2", "--max-wait-time", "30"]
    proc = federation.procs.start("intruder", cmd, federation.root)
    try:
        code = proc.wait(timeout=120)
    finally:
        federation.procs.stop("intruder")
    assert code != 0
    assert "Failed to activate SuperNode" in federation.procs.log("intruder")
    listed = federation.flwr("supernode", "ls", "fedsim-e2e", "--format", "json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert len(json.loads(listed.stdout)["nodes"]) == NUM_SITES


def test_control_api_needs_the_operator_certificate(
    federation: Federation, first_run: Path
) -> None:
    """With the public CA certificate only — directly at the Control port, or at the
    Fleet port — a stranger can neither list runs, register a node key nor submit."""
    rogue_key = str(federation.keys / "intruder.pub")
    for connection in ("direct", "fleet"):
        for args in (
            ("ls", connection),
            ("supernode", "register", rogue_key, connection),
            ("run", str(federation.app), connection, "--run-config", federation.run_config("x")),
        ):
            done = federation.flwr(*args)
            assert done.returncode != 0, (args, done.stdout, done.stderr)
            assert "Successfully" not in done.stdout + done.stderr
    fleet = httpx.post(
        f"https://127.0.0.1:{federation.port}/v1/control/list-runs",
        verify=str(federation.certs / "ca.crt"),
        timeout=10,
    )
    assert fleet.status_code == 404
    listed = federation.flwr("supernode", "ls", "fedsim-e2e", "--format", "json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert len(json.loads(listed.stdout)["nodes"]) == NUM_SITES  # nothing registered
    runs = federation.flwr("ls", "fedsim-e2e", "--format", "json")
    assert runs.returncode == 0 and len(json.loads(runs.stdout)["runs"]) == 1  # the first


def submit(federation: Federation, app: Path, run_config: str) -> int:
    """Start a run without waiting for it; returns its run id."""
    done = federation.flwr(
        "run", str(app), "fedsim-e2e", "--run-config", run_config, "--format", "json"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return int(json.loads(done.stdout)["run-id"])


def test_bad_apps_and_paths_are_refused(federation: Federation, first_run: Path) -> None:
    """Submitted together, each refused run ends by itself: every site refuses the
    unsigned and the wrongly signed app before any of its code runs; the ServerApp
    refuses an out-dir outside the runs folder or onto the first run, and a
    config-path at the CA key, without echoing the key."""
    root = federation.root
    key_text = (federation.certs / "ca.key").read_text()
    key_body = "".join(key_text.strip().splitlines()[1:-1])[:40]
    runs = {
        "unsigned": submit(federation, root / "unsigned" / "fedsim", federation.run_config("u")),
        "stranger": submit(federation, root / "stranger" / "fedsim", federation.run_config("s")),
        "escape": submit(federation, federation.app, federation.run_config("../escaped")),
        "overwrite": submit(federation, federation.app, federation.run_config("first")),
        "ca-key": submit(
            federation,
            federation.app,
            federation.run_config("k", config=str(federation.certs / "ca.key")),
        ),
    }
    streams = {
        name: subprocess.Popen(
            ["flwr", "log", str(run_id), "fedsim-e2e", "--stream"],
            env=federation.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, run_id in runs.items()
    }
    logs = {name: proc.communicate(timeout=RUN_TIMEOUT)[0] for name, proc in streams.items()}
    for name, reason in (
        ("unsigned", "the app is not signed"),
        ("stranger", "which this site does not trust"),
    ):
        refusal = re.search(r"site refused the app: (.*)", logs[name])
        assert refusal is not None and reason in refusal.group(1), logs[name]
        for k in range(NUM_SITES):
            site_log = federation.procs.log(f"site{k}")
            line = re.search(rf"fedsim: REFUSED app of run {runs[name]}: (.*)", site_log)
            assert line is not None and reason in line.group(1), site_log[-3000:]
    assert "out-dir must be a folder inside the coordinator's runs folder" in logs["escape"]
    assert not (root / "escaped").exists()
    assert "already exists and is not an empty folder" in logs["overwrite"]
    assert len(read_metrics(first_run)) == 2  # the first run's files are untouched
    assert "config-path must name a file inside the app" in logs["ca-key"], logs["ca-key"]
    for text in [*logs.values(), federation.procs.log("superlink")]:
        assert key_body not in text and "PRIVATE KEY" not in text


def test_restarted_node_keeps_its_spent_epsilon(federation: Federation, first_run: Path) -> None:
    state_dir = federation.root / "site0" / "state"
    before = load_state(state_dir, 0)
    spent = read_summary(first_run)["clients"]["0"]["epsilon_spent"]
    assert before.rounds_trained == 2
    assert before.ledger.epsilon_dp_sgd(ACCT) == pytest.approx(spent)

    # The budget admits exactly one more round: round 3 stays below it, round 4 would not.
    last = before.ledger.events[-1]
    assert isinstance(last, SubsampledGaussian)
    per_round = SubsampledGaussian(last.noise_multiplier, last.sample_rate, last.steps // 2)
    third = before.ledger.with_event(per_round)
    eps3 = third.epsilon_dp_sgd(ACCT)
    eps4 = third.with_event(per_round).epsilon_dp_sgd(ACCT)
    budget = (eps3 + eps4) / 2

    federation.procs.stop("site0")
    federation.start_site(0)
    second = federation.run("second", overrides=f"dp.max_epsilon={budget}")

    rounds = read_metrics(second)
    first_round, second_round = rounds[0]["clients"]["0"], rounds[1]["clients"]["0"]
    assert first_round["status"] == "ok"
    assert first_round["epsilon"] > spent
    assert first_round["epsilon"] == pytest.approx(eps3, rel=1e-6)
    assert second_round["status"] == "budget-exhausted"
    assert second_round["epsilon"] == pytest.approx(eps3, rel=1e-6)
    after = load_state(state_dir, 0)
    assert after.rounds_trained == 3
    assert len(after.runs) == 2
    assert after.ledger.epsilon_dp_sgd(ACCT) <= budget
    assert read_summary(second)["clients"]["0"]["epsilon_spent"] == pytest.approx(eps3, rel=1e-6)


def start_rogue(federation: Federation) -> None:
    """A registered node (its own key) claiming client id 0, which site 0 holds."""
    done = federation.flwr(
        "supernode", "register", str(federation.keys / "rogue.pub"), "fedsim-e2e"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    spec = dataclasses.replace(federation.site_spec(0, key="rogue"), state_dir=None)
    federation.procs.start("rogue", supernode_command(spec), federation.root)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = federation.flwr("supernode", "ls", "fedsim-e2e", "--format", "json")
        nodes = json.loads(listed.stdout)["nodes"] if listed.returncode == 0 else []
        if sum(node["status"] == "online" for node in nodes) == NUM_SITES + 1:
            return
        time.sleep(1)
    pytest.fail("the rogue node did not come online\n" + federation.procs.log("rogue")[-3000:])


def test_site_policies_refuse_what_they_do_not_allow(
    federation: Federation, first_run: Path
) -> None:
    """The coordinator asks for a run without DP: every site's (default) policy refuses it,
    trains nothing and says why. Then site 1 restarts with its own policy capping its
    lifetime ε just above what it has spent: it refuses the next DP round while the other
    sites train. No ledger moves on a refusal."""
    states = {k: federation.root / f"site{k}" / "state" for k in range(NUM_SITES)}
    before = {k: load_state(states[k], k).ledger for k in range(NUM_SITES)}
    start_rogue(federation)
    no_dp = federation.run("no-dp", overrides="dp.enabled=false rounds=1")
    clients = read_metrics(no_dp)[0]["clients"]
    for cid in ("0", "1", "2"):
        assert clients[cid]["status"] == "refused"
        assert "dp_required" in clients[cid]["rejected_reason"]
    assert read_metrics(no_dp)[0]["selected"] == []
    assert {k: load_state(states[k], k).ledger for k in range(NUM_SITES)} == before
    # the rogue node claimed site 0's client id: refused, and the run went on without it
    assert "claims client id 0, which belongs to node" in federation.streams["no-dp"]
    federation.procs.stop("rogue")

    spent = before[1].epsilon_dp_sgd(ACCT)
    policy = federation.root / "site1" / "policy.yaml"
    policy.write_text(f"max_epsilon: {spent + 0.01}\n")
    federation.procs.stop("site1")
    federation.start_site(1, policy=policy)
    capped = federation.run("capped", overrides="rounds=1")
    clients = read_metrics(capped)[0]["clients"]
    assert clients["1"]["status"] == "refused"
    assert "would exceed max_epsilon" in clients["1"]["rejected_reason"]
    assert clients["2"]["status"] == "ok"
    assert load_state(states[1], 1).ledger == before[1]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
