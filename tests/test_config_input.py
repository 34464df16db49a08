"""No config file or override can cost a run: exit 2 with one clear message, or a config.

One test per kind of hostile input (through the CLI), then hypothesis properties over
configs generated from the schema itself and over raw text and bytes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsim.cli import main
from fedsim.config import from_dict, load, read_yaml
from fedsim.config.io import MAX_CONFIG_BYTES
from fedsim.config.yamlsafe import MAX_DEPTH, safe_load
from fedsim.errors import ConfigError
from fedsim.preflight import preflight
from tests.config_fuzz import configs, dump, outcome, perturbed, yaml_texts

QUICKSTART = "experiments/quickstart.yaml"
FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def rejected(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``fedsim ARGS`` in process; assert exit 2 and return stderr."""
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def write(tmp_path: Path, data: str | bytes, name: str = "c.yaml") -> str:
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"name: x\n\x00\x01\xff", "contains NUL bytes"),
        (b"name: \xff\xfe x\n", "is not UTF-8 text (byte 0xff at offset 6)"),
        ("name: x\n".encode("utf-16"), "is UTF-16"),
        (b"\xef\xbb\xbfname: x\n", "UTF-8 with a byte-order mark"),
        (b"name: x\n" + b"#" * MAX_CONFIG_BYTES, f"at most {MAX_CONFIG_BYTES} bytes"),
    ],
)
def test_binary_non_utf8_and_huge_files_are_named(tmp_path, capsys, data, said) -> None:
    path = write(tmp_path, data)
    err = rejected(capsys, "validate", path)
    assert said in err and repr(path) in err


def test_deep_nesting_is_bounded(tmp_path, capsys) -> None:
    path = write(tmp_path, "seed: " + "[" * 20_000 + "]" * 20_000 + "\n")
    err = rejected(capsys, "validate", path)
    assert f"nests at most {MAX_DEPTH} levels" in err and "line 1" in err


def test_alias_bomb_is_refused_before_expansion(tmp_path, capsys) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    path = write(tmp_path, "\n".join(lines) + "\n")
    start = time.perf_counter()
    err = rejected(capsys, "validate", path)
    assert time.perf_counter() - start < 5
    assert "anchors (&name) are not allowed" in err
    assert "aliases (*name) are not allowed" in rejected(
        capsys, "validate", QUICKSTART, "-o", "seed=*a"
    )


def test_duplicate_key_names_key_and_line(tmp_path, capsys) -> None:
    path = write(tmp_path, "name: x\ndp:\n  epsilon: 1\n  epsilon: 2\n")
    assert "duplicate key 'epsilon' at line 4" in rejected(capsys, "validate", path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rounds: 1:30", "rounds must be an integer; got '1:30'"),
        ("save_checkpoints: yes", "save_checkpoints must be true or false; got 'yes'"),
        ("seed: 0777", "seed must be an integer; got '0777'"),
        ("rounds: 1_000", "rounds must be an integer; got '1_000'"),
        ("dp: {epsilon: .nan}", "dp.epsilon must be a finite number; got '.nan'"),
        ("name: 2001-12-14", None),  # a date stays the string it looks like
    ],
)
def test_yaml_1_1_surprises_stay_strings(tmp_path, capsys, text, message) -> None:
    if message is None:
        assert read_yaml(write(tmp_path, text)) == {"name": "2001-12-14"}
        return
    assert message in rejected(capsys, "validate", write(tmp_path, text))


def test_yaml_1_2_numbers_still_read() -> None:
    assert safe_load("[1e-5, 1.0e-4, .5, -3, +2, 0, true, False, ~, null]") == [
        1e-5,
        1e-4,
        0.5,
        -3,
        2,
        0,
        True,
        False,
        None,
        None,
    ]


@pytest.mark.parametrize("how", ["file", "override"])
def test_non_finite_numbers_are_refused(tmp_path, capsys, how) -> None:
    if how == "file":
        err = rejected(capsys, "validate", write(tmp_path, "dp: {epsilon: 1e999}\n"))
    else:
        err = rejected(capsys, "validate", QUICKSTART, "-o", "dp.epsilon=inf")
    assert "dp.epsilon must be a finite number" in err


def test_preflight_refuses_plans_too_large_to_account(capsys) -> None:
    start = time.perf_counter()
    err = rejected(capsys, "validate", QUICKSTART, "-o", "rounds=100000")
    assert time.perf_counter() - start < 30
    assert "rounds: the config is too large to account" in err
    assert "limit is 1000000" in err


def test_preflight_accepts_a_large_but_accountable_plan() -> None:
    cfg = from_dict({"rounds": 200, "data": {"num_clients": 5}, "dp": {"epsilon": 4.0}})
    assert preflight(cfg).dp_plans


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("simulation.num_cpus_per_client=1e-320", "num_cpus_per_client must be >= 0.01"),
        ("simulation.num_gpus_per_client=0.001", "num_gpus_per_client must be 0 or >= 0.01"),
        ("data.num_clients=1000000", "data.num_clients must be <= 100000"),
        ("rounds=1000000000", "rounds must be <= 100000"),
        ("client.local_epochs=100000", "client.local_epochs must be <= 1000"),
        ("seed=100000000000000000000", "seed must be an integer of at most 64 bits"),
        ("dp.epsilon=1000000", "dp.epsilon must be <= 100.0"),
        ("dp.noise_multiplier=0.01", "dp.noise_multiplier must be >= 0.2"),
    ],
)
def test_absurd_sizes_are_refused(capsys, override, message) -> None:
    assert message in rejected(capsys, "validate", QUICKSTART, "-o", override)


@pytest.mark.parametrize(
    "name", ["../../tmp/evil", "/abs/path", "'a\\b'", "'.'", "'..'", "''", '"a\\0b"', '"a\\nb"']
)
def test_name_must_be_a_plain_file_name(capsys, name) -> None:
    assert "- name must " in rejected(capsys, "validate", QUICKSTART, "-o", f"name={name}")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rounds", "override must look like key=value; got 'rounds'"),
        ("=3", "override must look like key=value"),
        (
            "dp..epsilon=1",
            "override key must be a dotted name such as dp.epsilon; got 'dp..epsilon'",
        ),
        ("rounds.x=1", "override rounds.x: rounds is not a section; got 8"),
        ("dp.epsilonn=1", "dp.epsilonn is not a known key"),
        ("seed=[[[", "override seed: value '[[[' is not valid YAML"),
        ("name=!!python/object:os.system x", "override name: value"),
    ],
)
def test_bad_overrides_name_the_key(capsys, override, message) -> None:
    assert message in rejected(capsys, "validate", QUICKSTART, "-o", override)


def test_secprobe_budget_without_room_for_selection(capsys) -> None:
    err = rejected(
        capsys,
        "validate",
        QUICKSTART,
        *("-o", "strategy.name=secprobe", "-o", "strategy.k=2"),
    )
    assert "dp.max_epsilon must be > dp.epsilon for strategy.name 'secprobe'" in err
    assert "dp.max_epsilon=4.0, dp.epsilon=4.0" in err


def test_real_cli_process_has_no_traceback(tmp_path) -> None:
    path = write(tmp_path, b"a: &a [1]\nb: [*a, *a]\n\xff")
    proc = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "validate", path],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "is not UTF-8 text" in proc.stderr


@FUZZ
@given(raw=configs() | perturbed(read_yaml(QUICKSTART)))
def test_generated_configs_load_or_are_rejected(tmp_path, raw) -> None:
    path = tmp_path / "gen.yaml"
    path.write_text(dump(raw), encoding="utf-8")
    result, seconds = outcome(path)
    assert result in ("ok", "rejected"), result
    assert seconds < 5


@FUZZ
@given(data=st.binary(max_size=300) | yaml_texts().map(lambda t: t.encode()))
def test_raw_bytes_and_yaml_syntax_load_or_are_rejected(tmp_path, data) -> None:
    path = tmp_path / "raw.yaml"
    path.write_bytes(data)
    result, seconds = outcome(path)
    assert result in ("ok", "rejected"), result
    assert seconds < 5


@FUZZ
@given(
    key=st.sampled_from(["rounds", "dp.epsilon", "name", "data", "strategy.k", "x.y", "a..b", ""]),
    value=yaml_texts(),
)
def test_overrides_load_or_are_rejected(key, value) -> None:
    result, _ = outcome(Path(QUICKSTART), [f"{key}={value}"])
    assert result in ("ok", "rejected"), result


def test_loaded_config_is_what_the_file_says(tmp_path) -> None:
    path = write(tmp_path, "rounds: 4\ndp: {epsilon: 2.5, delta: 1.0e-5}\nname: my-run\n")
    cfg = load(path)
    assert (cfg.rounds, cfg.dp.epsilon, cfg.dp.delta, cfg.name) == (4, 2.5, 1e-5, "my-run")
    with pytest.raises(ConfigError):
        load(path, ["rounds=0"])
    assert yaml.safe_load(dump({"a": 1})) == {"a": 1}


@pytest.mark.parametrize(
    ("overrides", "warned"),
    [
        ({}, True),  # DP-SGD's 4 + 8 releases of 1 > the cap of 4: training stops early
        ({"dp": {"max_epsilon": 12.0}}, False),
        (
            {"valuation": {"enabled": True, "release_rounds": [8]}, "dp": {"max_epsilon": 5.0}},
            False,
        ),
        (
            {"valuation": {"enabled": True, "report_metrics": ["loss"]}, "dp": {"max_epsilon": 12}},
            True,
        ),
    ],
)
def test_validate_says_when_valuation_releases_can_stop_training(
    overrides: dict, warned: bool
) -> None:
    """``fedsim validate`` states what the valuation releases cost and, when they and
    DP-SGD's target can pass ``dp.max_epsilon``, that clients may stop before the end."""
    base = {
        "rounds": 8,
        "data": {"name": "pneumoniamnist", "num_clients": 3},
        "model": {"name": "mlp"},
        "client": {"local_epochs": 2},
        "dp": {"epsilon": 4.0, "max_epsilon": 4.0},
        "valuation": {"enabled": True},
    }
    for key, value in overrides.items():
        base[key] = {**base[key], **value}
    lines = preflight(from_dict(base)).lines()
    text = next(t for t in lines if t.startswith("valuation:"))
    assert ("may stop training" in text) is warned
    releases = len(base["valuation"].get("release_rounds", range(8)))
    per = 1 + len(base["valuation"].get("report_metrics", []))
    assert f"at most {releases * per:g} per client" in text


def test_validate_says_nothing_of_valuation_when_it_is_off() -> None:
    cfg = from_dict(
        {
            "data": {"name": "pneumoniamnist", "num_clients": 3},
            "model": {"name": "mlp"},
            "dp": {"epsilon": 4.0, "max_epsilon": 4.0},
        }
    )
    assert not any(t.startswith("valuation:") for t in preflight(cfg).lines())
