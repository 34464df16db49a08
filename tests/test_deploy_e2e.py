"""A real networked federation on loopback: SuperLink + three SuperNodes, TLS, node auth.

Runs the very commands a user runs (``fedsim certs`` / ``fedsim node keygen`` code, the
``flower-superlink`` / ``flower-supernode`` command lines of
:mod:`fedsim.deploy.commands`, ``flwr supernode register`` and ``flwr run .``), each
SuperNode with its own ``.npz`` file and state dir. Checks: a 2-round DP FedAvg run
writes the run directory contract; a SuperNode with an unregistered key is refused; a
SuperNode restarted between runs continues from the ε it had spent and refuses to train
past ``dp.max_epsilon``; every site's privacy policy refuses a run without DP, and a site
whose own policy caps its lifetime ε refuses the round that would pass it. Every process
is stopped at teardown, also on failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from fedsim.data import load_dataset
from fedsim.deploy.certs import make_certificates
from fedsim.deploy.commands import (
    SuperLinkSpec,
    SuperNodeSpec,
    superlink_command,
    supernode_command,
)
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


def superlink_spec(certs: Path, host: str, port: int, database: Path) -> SuperLinkSpec:
    """The SuperLink this test runs; ``docker/docker-compose.yml`` must run the same
    (``tests/test_docker.py`` compares the two command lines)."""
    return SuperLinkSpec(certs_dir=certs, host=host, port=port, database=database)


def site_spec(
    superlink: str,
    client_id: int,
    data: Path,
    state: Path,
    ca: Path,
    key: Path,
    runtime_port: int,
    policy: Path | None = None,
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
    )


@dataclass
class Federation:
    root: Path
    procs: Processes
    env: dict[str, str]
    port: int
    certs: Path
    keys: Path
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

    def run(self, out: str, overrides: str = "") -> Path:
        out_dir = self.root / "runs" / out
        run_config = (
            f"config-path='{self.root / 'config.yaml'}' out-dir='{out_dir}' overrides='{overrides}'"
        )
        done = self.flwr(
            "run",
            str(REPO),
            "fedsim-e2e",
            "--run-config",
            run_config,
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
    for k in range(NUM_SITES):
        make_node_key(keys / f"site{k}", f"site{k}")
    make_node_key(keys / "intruder", "intruder")
    write_site_data(root)
    (root / "config.yaml").write_text(CONFIG)

    port = free_port()
    flwr_home = root / "flwr-home"
    flwr_home.mkdir()
    (flwr_home / "config.toml").write_text(
        '[superlink]\ndefault = "fedsim-e2e"\n\n'
        "[superlink.fedsim-e2e]\n"
        f'address = "127.0.0.1:{port}"\n'
        f'root-certificates = "{certs / "ca.crt"}"\n'
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
    fed = Federation(root, procs, env, port, certs, keys)
    try:
        link = procs.start(
            "superlink",
            superlink_command(superlink_spec(certs, "127.0.0.1", port, root / "superlink.db")),
            root,
        )
        wait_for_port(port, 60.0, link)
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


def test_site_policies_refuse_what_they_do_not_allow(
    federation: Federation, first_run: Path
) -> None:
    """The coordinator asks for a run without DP: every site's (default) policy refuses it,
    trains nothing and says why. Then site 1 restarts with its own policy capping its
    lifetime ε just above what it has spent: it refuses the next DP round while the other
    sites train. No ledger moves on a refusal."""
    states = {k: federation.root / f"site{k}" / "state" for k in range(NUM_SITES)}
    before = {k: load_state(states[k], k).ledger for k in range(NUM_SITES)}
    no_dp = federation.run("no-dp", overrides="dp.enabled=false rounds=1")
    clients = read_metrics(no_dp)[0]["clients"]
    for cid in ("0", "1", "2"):
        assert clients[cid]["status"] == "refused"
        assert "dp_required" in clients[cid]["rejected_reason"]
    assert read_metrics(no_dp)[0]["selected"] == []
    assert {k: load_state(states[k], k).ledger for k in range(NUM_SITES)} == before

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
