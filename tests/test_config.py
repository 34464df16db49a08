"""Config loading: types, bounds, unknown keys, overrides, cross-field rules."""

from __future__ import annotations

import dataclasses

import pytest

from fedsim import config as C
from fedsim.errors import ConfigError

BASE = {"dp": {"epsilon": 4.0}}


def test_defaults_and_frozen() -> None:
    cfg = C.from_dict(BASE)
    assert cfg.data.name == "pneumoniamnist"
    assert cfg.clients_per_round == cfg.data.num_clients
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rounds = 5  # type: ignore[misc]


def test_all_problems_reported_together_with_paths() -> None:
    raw = {
        "rounds": 0,
        "bogus": 1,
        "data": {"partition": "random", "num_clients": 2.5, "alpha": -1},
        "dp": {"epsilon": -1, "enabled": "yes"},
        "client": {"lr": "fast"},
    }
    with pytest.raises(ConfigError) as info:
        C.from_dict(raw)
    problems = info.value.problems
    text = "\n".join(problems)
    assert "rounds must be >= 1; got 0" in text
    assert "bogus is not a known key" in text
    assert (
        "data.partition must be one of 'iid', 'dirichlet', 'shards', 'natural'; got 'random'"
        in text
    )
    assert "data.num_clients must be an integer; got 2.5" in text
    assert "data.alpha must be > 0; got -1" in text
    assert "dp.epsilon must be > 0; got -1" in text
    assert "dp.enabled must be true or false; got 'yes'" in text
    assert "client.lr must be a number; got 'fast'" in text
    assert len(problems) == 8


def test_unknown_nested_key_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"dp.epsilonn is not a known key \(valid: .*epsilon"):
        C.from_dict({"dp": {"epsilonn": 4}})


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match=r"exactly one of dp.epsilon or dp.noise_multiplier"):
        C.from_dict({"dp": {"epsilon": 4, "noise_multiplier": 1.0}})
    with pytest.raises(ConfigError, match=r"exactly one of dp.epsilon"):
        C.from_dict({})
    with pytest.raises(
        ConfigError, match=r"strategy.clients_per_round must be <= data.num_clients"
    ):
        C.from_dict({**BASE, "data": {"num_clients": 3}, "strategy": {"clients_per_round": 4}})
    with pytest.raises(ConfigError, match=r"dp.epsilon must be <= dp.max_epsilon"):
        C.from_dict({"dp": {"epsilon": 5, "max_epsilon": 4}})
    with pytest.raises(ConfigError, match=r"data.path is required"):
        C.from_dict({**BASE, "data": {"name": "npz"}})
    # DP off: no epsilon needed
    assert not C.from_dict({"dp": {"enabled": False}}).dp.enabled


def test_overrides_parse_yaml_values_and_nest() -> None:
    raw = C.apply_overrides(
        BASE,
        ["dp.epsilon=2", "rounds=5", "data.partition=dirichlet", "dp.enabled=true", "name=my run"],
    )
    cfg = C.from_dict(raw)
    assert cfg.dp.epsilon == 2.0 and isinstance(cfg.dp.epsilon, float)
    assert cfg.rounds == 5 and cfg.data.partition == "dirichlet" and cfg.name == "my run"
    assert BASE == {"dp": {"epsilon": 4.0}}  # input not mutated


def test_bad_override_is_reported() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        C.apply_overrides(BASE, ["rounds"])
    with pytest.raises(ConfigError, match="rounds is not a section"):
        C.apply_overrides({"rounds": 3}, ["rounds.x=1"])
    with pytest.raises(ConfigError, match=r"dp.nope is not a known key"):
        C.from_dict(C.apply_overrides(BASE, ["dp.nope=1"]))


def test_yaml_file_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        C.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        C.load(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        C.load(listy)


def test_roundtrip_through_yaml(tmp_path) -> None:
    cfg = C.from_dict({**BASE, "rounds": 7, "data": {"partition": "shards"}})
    path = tmp_path / "c.yaml"
    path.write_text(C.to_yaml(cfg))
    assert C.load(path) == cfg


def test_quickstart_config_is_valid() -> None:
    cfg = C.load("experiments/quickstart.yaml")
    assert cfg.data.name == "pneumoniamnist" and cfg.data.num_clients == 5
    assert cfg.data.partition == "dirichlet" and cfg.data.alpha == 1.0
    assert cfg.model.name == "cnn" and cfg.dp.epsilon == 4.0 and cfg.dp.delta == 1e-4


def test_from_run_config_flat_keys(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("dp:\n  epsilon: 3\nrounds: 4\n")
    cfg = C.from_run_config(
        {
            "config-path": str(path),
            "overrides": "rounds=2 seed=9",
            "data.num_clients": 3,
            "dp.delta": 1e-6,
        }
    )
    assert (cfg.rounds, cfg.seed, cfg.data.num_clients, cfg.dp.delta) == (2, 9, 3, 1e-6)


def test_selection_and_roles_defaults() -> None:
    cfg = C.from_dict(BASE)
    assert cfg.strategy.k is None and cfg.strategy.selection_epsilon == 1.0
    assert cfg.strategy.sensitivity == "paper" and cfg.strategy.num_malicious == 0
    assert cfg.roles.unreliable.fraction == 0.0 and cfg.roles.malicious.fraction == 0.0
    assert cfg.roles.unreliable.kind == "noise" and cfg.roles.malicious.kind == "random"


@pytest.mark.parametrize(
    "name", ["fedavg", "secprobe", "random_k", "krum", "multikrum", "median", "trimmed_mean"]
)
def test_every_strategy_name_accepted(name: str) -> None:
    cfg = C.from_dict({**BASE, "strategy": {"name": name, "k": 2}})
    assert cfg.strategy.name == name


def test_selection_and_roles_bounds_reported_with_paths() -> None:
    raw = {
        **BASE,
        "strategy": {
            "name": "probe",
            "k": 0,
            "selection_epsilon": 0,
            "sensitivity": "loose",
            "num_malicious": -1,
            "trim_beta": 0.5,
        },
        "roles": {
            "unreliable": {"fraction": 1.5, "noise_fraction": -0.1, "kind": "blur"},
            "malicious": {"kind": "zeros", "scale": 0, "extra": 1},
        },
    }
    with pytest.raises(ConfigError) as info:
        C.from_dict(raw)
    text = "\n".join(info.value.problems)
    assert "strategy.name must be one of 'fedavg', 'secprobe'" in text
    assert "strategy.k must be >= 1; got 0" in text
    assert "strategy.selection_epsilon must be > 0; got 0" in text
    assert "strategy.sensitivity must be one of 'paper', 'tight'; got 'loose'" in text
    assert "strategy.num_malicious must be >= 0; got -1" in text
    assert "strategy.trim_beta must be < 0.5; got 0.5" in text
    assert "roles.unreliable.fraction must be <= 1; got 1.5" in text
    assert "roles.unreliable.noise_fraction must be >= 0; got -0.1" in text
    assert "roles.unreliable.kind must be one of 'noise', 'label_flip'; got 'blur'" in text
    assert (
        "roles.malicious.kind must be one of 'random', 'sign_flip', 'scale', 'nan'; got 'zeros'"
        in text
    )
    assert "roles.malicious.scale must be > 0; got 0" in text
    assert "roles.malicious.extra is not a known key" in text


@pytest.mark.parametrize(
    "strategy,roles,message",
    [
        ({"clients_per_round": 4, "k": 5}, {}, "strategy.k must be <= strategy.clients_per_round"),
        ({"k": 6}, {}, "strategy.k must be <= strategy.clients_per_round (5); got 6"),
        ({"name": "bulyan", "num_malicious": 1}, {}, ">= 4 * strategy.num_malicious + 3 (7)"),
        ({"name": "krum", "num_malicious": 2}, {}, ">= 2 * strategy.num_malicious + 3 (7)"),
        (
            {},
            {"unreliable": {"fraction": 0.6}, "malicious": {"fraction": 0.5}},
            "roles.unreliable.fraction + roles.malicious.fraction + roles.adversarial.fraction "
            "must be <= 1",
        ),
    ],
)
def test_selection_cross_checks(strategy: dict, roles: dict, message: str) -> None:
    """Generic rules come from the config package, a strategy's own rules from its factory
    (``strategies.registry``), both checked before a run (``fedsim.run.check_config``)."""
    from fedsim.run import check_config

    with pytest.raises(ConfigError) as info:
        check_config(C.from_dict({**BASE, "strategy": strategy, "roles": roles}))
    assert any(message in p for p in info.value.problems), info.value.problems


def test_bulyan_and_krum_accept_enough_clients() -> None:
    raw = {**BASE, "data": {"num_clients": 7}}
    cfg = C.from_dict({**raw, "strategy": {"name": "bulyan", "num_malicious": 1}})
    assert cfg.clients_per_round == 7
    cfg = C.from_dict({**raw, "strategy": {"name": "multikrum", "num_malicious": 2, "k": 3}})
    assert cfg.strategy.k == 3


def test_dp_clipping_variants() -> None:
    assert C.from_dict(BASE).dp.clipping == "flat"
    for variant in ("flat", "per_layer_uniform", "per_layer_adaptive"):
        cfg = C.from_dict({"dp": {"epsilon": 4.0, "clipping": variant}})
        assert cfg.dp.clipping == variant
    raw = C.apply_overrides(BASE, ["dp.clipping=per_layer_adaptive", "dp.adaptive_samples=64"])
    cfg = C.from_dict(raw)
    assert (cfg.dp.clipping, cfg.dp.adaptive_samples) == ("per_layer_adaptive", 64)


def test_dp_clipping_rejects_unknown_variant_and_bad_sample_count() -> None:
    with pytest.raises(ConfigError) as info:
        C.from_dict({"dp": {"epsilon": 4.0, "clipping": "per_layer", "adaptive_samples": 0}})
    problems = info.value.problems
    assert any(
        p.startswith("dp.clipping must be one of 'flat', 'per_layer_uniform'") for p in problems
    ), problems
    assert any("dp.adaptive_samples must be >= 1; got 0" in p for p in problems), problems


def test_every_committed_experiment_config_is_valid() -> None:
    """Each YAML under experiments/ loads; a sweep config expands to valid points."""
    from pathlib import Path

    from fedsim.sweep import expand, split_sweep

    configs = [p for p in sorted(Path("experiments").rglob("*.yaml")) if "results" not in p.parts]
    assert len(configs) >= 10
    for path in configs:
        raw = C.read_yaml(path)
        if "sweep" in raw:
            assert expand(*split_sweep(raw)), path
        else:
            C.from_dict(raw)
