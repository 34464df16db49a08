"""A site's own privacy policy: the policy file, the round check, and ``--policy``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from fedsim import keys
from fedsim.cli import main
from fedsim.deploy.commands import SuperNodeSpec, supernode_command
from fedsim.deploy.policy import (
    DEFAULT_POLICY,
    MECHANISMS,
    RoundRequest,
    SitePolicy,
    effective_max_epsilon,
    load_policy,
    refusal,
)
from fedsim.deploy.site import site_from_node_config
from fedsim.errors import FedsimError

#: A round that the default policy accepts: DP-SGD, replace-one, δ = 1e-5, ε within cap.
COMPLIANT = RoundRequest(
    dp_enabled=True,
    mode="sample",
    neighbouring="replace_one",
    delta=1e-5,
    mechanisms=("dpsgd",),
    projected_epsilon=3.0,
    config_max_epsilon=4.0,
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def _supernode(*extra: str) -> list[str]:
    return ["supernode", "--superlink", "l:1", "--client-id", "0", "--insecure", *extra]


# ---------------------------------------------------------------- the policy file
def test_load_policy_reads_every_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "dp_required: false\nneighbouring: [replace_one, add_remove]\nmax_epsilon: 8\n"
        "max_delta: 1e-6\nallow_central: true\nmechanisms: [dpsgd, selection]\n",
    )
    assert load_policy(path) == SitePolicy(
        dp_required=False,
        neighbouring=("replace_one", "add_remove"),
        max_epsilon=8.0,
        max_delta=1e-6,
        allow_central=True,
        mechanisms=("dpsgd", "selection"),
    )
    assert load_policy(_write(tmp_path, "max_epsilon: 2.5\n")) == dataclasses.replace(
        DEFAULT_POLICY, max_epsilon=2.5
    )
    assert load_policy(_write(tmp_path, "")) == DEFAULT_POLICY


def test_load_policy_lists_every_problem_with_its_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "dp_required: maybe\nmax_epsilon: -1\nmax_delta: 2\nneighbouring: [swap_two]\n"
        "colour: red\n",
    )
    with pytest.raises(FedsimError) as info:
        load_policy(path)
    message = str(info.value)
    assert f"invalid site policy {str(path)!r} (5 problems)" in message
    assert "colour is not a known key (valid: allow_central, dp_required," in message
    assert "dp_required must be true or false; got 'maybe'" in message
    assert "max_epsilon must be > 0; got -1.0" in message
    assert "max_delta must be < 1; got 2.0" in message
    assert "neighbouring[0] must be one of 'replace_one', 'add_remove'; got 'swap_two'" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("mechanisms: [valuation_release]\n", "mechanisms must include 'dpsgd'"),
        ("neighbouring: []\n", "neighbouring must list at least one relation"),
        ("max_epsilon: [1]\n", "max_epsilon must be float or null; got [1]"),
        ("- a list\n", "must hold a mapping"),
        ("dp_required: [\n", "is not valid YAML"),
    ],
)
def test_load_policy_rejects(tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(FedsimError, match="invalid site policy") as info:
        load_policy(path)
    assert fragment in str(info.value)


def test_load_policy_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FedsimError, match="cannot be read"):
        load_policy(tmp_path / "absent.yaml")


# ---------------------------------------------------------------- the round check
def test_default_policy_accepts_a_compliant_round() -> None:
    assert refusal(DEFAULT_POLICY, COMPLIANT) is None
    with_all = dataclasses.replace(COMPLIANT, mechanisms=MECHANISMS, projected_epsilon=4.0)
    assert refusal(DEFAULT_POLICY, with_all) is None  # exactly at the cap is allowed


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"dp_enabled": False, "mechanisms": (), "projected_epsilon": None},
            "site policy: dp_required is true but the run asks dp.enabled=false",
        ),
        (
            {"mode": "central", "mechanisms": ()},
            "site policy: allow_central is false but the run asks dp.mode='central'",
        ),
        (
            {"neighbouring": "add_remove"},
            "site policy: neighbouring allows ['replace_one'] but the run states epsilon "
            "under 'add_remove'",
        ),
        ({"delta": 1e-4}, "site policy: max_delta is 1e-05 but the run asks dp.delta=0.0001"),
        (
            {"projected_epsilon": 5.2},
            "site policy: projected lifetime epsilon 5.2 would exceed max_epsilon 4 "
            "(the run's dp.max_epsilon)",
        ),
        (
            {"projected_epsilon": float("nan")},
            "site policy: projected lifetime epsilon nan would exceed max_epsilon 4",
        ),
    ],
)
def test_default_policy_refuses(change: dict[str, object], reason: str) -> None:
    text = refusal(DEFAULT_POLICY, dataclasses.replace(COMPLIANT, **change))  # type: ignore[arg-type]
    assert text is not None and text.startswith(reason)
    assert text.count("; ") == 0  # one rule broken, one reason


def test_every_broken_rule_is_reported() -> None:
    request = dataclasses.replace(COMPLIANT, neighbouring="add_remove", delta=1e-3)
    text = refusal(DEFAULT_POLICY, request)
    assert text is not None
    assert text.startswith("site policy: neighbouring allows")
    assert "; max_delta is 1e-05 but the run asks dp.delta=0.001" in text


def test_mechanisms_and_opt_ins() -> None:
    no_release = SitePolicy(mechanisms=("dpsgd", "selection"))
    asks = dataclasses.replace(COMPLIANT, mechanisms=("dpsgd", "valuation_release"))
    assert refusal(no_release, asks) == (
        "site policy: mechanisms allows ['dpsgd', 'selection'] but the run asks 'valuation_release'"
    )
    assert refusal(DEFAULT_POLICY, asks) is None
    central = dataclasses.replace(COMPLIANT, mode="central", mechanisms=())
    assert refusal(SitePolicy(allow_central=True), central) is None
    wide = SitePolicy(neighbouring=("replace_one", "add_remove"), max_delta=1e-4)
    assert (
        refusal(wide, dataclasses.replace(COMPLIANT, neighbouring="add_remove", delta=1e-4)) is None
    )


def test_non_dp_round_needs_an_opt_out_and_no_cap_of_the_site() -> None:
    plain = dataclasses.replace(
        COMPLIANT,
        dp_enabled=False,
        mechanisms=(),
        projected_epsilon=None,
        neighbouring="add_remove",  # no ε is stated: relation and δ do not matter
        delta=0.5,
    )
    assert refusal(SitePolicy(dp_required=False), plain) is None
    capped = refusal(SitePolicy(dp_required=False, max_epsilon=6.0), plain)
    assert capped == (
        "site policy: max_epsilon 6 caps the site's lifetime epsilon but the run's round has "
        "no epsilon the site can account (dp.enabled=false, dp.mode='sample')"
    )


def test_the_run_can_lower_the_cap_never_raise_it() -> None:
    site = SitePolicy(max_epsilon=4.0)
    assert effective_max_epsilon(site, None) == 4.0
    assert effective_max_epsilon(site, 2.0) == 2.0
    assert effective_max_epsilon(site, 100.0) == 4.0
    assert effective_max_epsilon(DEFAULT_POLICY, 3.0) == 3.0
    assert effective_max_epsilon(DEFAULT_POLICY, None) is None
    raised = dataclasses.replace(COMPLIANT, projected_epsilon=5.2, config_max_epsilon=100.0)
    assert refusal(site, raised) == (
        "site policy: projected lifetime epsilon 5.2 would exceed max_epsilon 4 "
        "(the site's max_epsilon)"
    )
    lowered = dataclasses.replace(COMPLIANT, projected_epsilon=3.0, config_max_epsilon=2.0)
    text = refusal(site, lowered)
    assert text is not None and "max_epsilon 2 (the run's dp.max_epsilon)" in text
    unlimited = dataclasses.replace(COMPLIANT, projected_epsilon=50.0, config_max_epsilon=None)
    assert refusal(DEFAULT_POLICY, unlimited) is None


# ---------------------------------------------------------------- node config and CLI
def test_policy_path_in_node_config_and_command(tmp_path: Path) -> None:
    site = site_from_node_config({"client-id": 1, keys.NODE_POLICY_PATH: "/site/policy.yaml"})
    assert site.policy_path == Path("/site/policy.yaml")
    assert site_from_node_config({"client-id": 1}).policy_path is None
    spec = SuperNodeSpec("l:1", 1, None, Path("/s"), None, None, policy_path=Path("/p y.yaml"))
    cmd = supernode_command(spec)
    entries = parse_config_args([cmd[cmd.index("--node-config") + 1]])
    assert entries[keys.NODE_POLICY_PATH] == "/p y.yaml"
    assert site_from_node_config(entries).policy_path == Path("/p y.yaml")


def test_cli_bad_policy_exits_2_without_traceback(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, "max_epsilon: -1\nflavour: strict\n")
    assert main(_supernode("--policy", str(path), "--dry-run")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "flower-supernode" not in err  # nothing was started
    assert "max_epsilon must be > 0; got -1.0" in err and "flavour is not a known key" in err
    assert main(_supernode("--policy", str(tmp_path / "absent.yaml"), "--dry-run")) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_cli_good_policy_goes_into_the_node_config(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, "max_epsilon: 8\nmechanisms: [dpsgd]\n")
    # A lifetime cap needs the site's persistent ledger.
    assert main(_supernode("--policy", str(path), "--dry-run")) == 2
    assert "give --state DIR" in capsys.readouterr().err
    state = tmp_path / "state"
    assert main(_supernode("--policy", str(path), "--state", str(state), "--dry-run")) == 0
    err = capsys.readouterr().err
    command = next(line for line in err.splitlines() if line.startswith("+ flower-supernode"))
    assert f'policy-path="{path.resolve()}"' in command
    assert "max_epsilon (lifetime)=8" in err and "mechanisms=dpsgd" in err
    assert main(_supernode("--dry-run")) == 0
    err = capsys.readouterr().err
    assert "policy-path" not in err and "site policy: none given, the default" in err
