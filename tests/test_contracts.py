"""Contract tests: every member of every registry keeps its registry's contract.

Members are discovered from the registries themselves (never from hand-kept lists), so a
new model, dataset, partitioner, score, attack, attacker kind, report section or CLI
command is checked as soon as it is registered. The contracts are documented where each
registry is defined. (Strategies: ``strategies.registry.STRATEGIES``, tested with them.)
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fedsim
from clients.faults import FAULT_KINDS
from fedsim.attackers import MALICIOUS_KINDS, UNRELIABLE_KINDS
from fedsim.cli import build_parser, main
from fedsim.cli.commands import COMMANDS
from fedsim.config import (
    FUNCTIONAL_MODELS,
    REGRESSION_DATASETS,
    TABULAR_MODELS,
    AttackName,
    DatasetName,
    FaultKind,
    MaliciousKind,
    ModelName,
    PartitionName,
    ScoreMetric,
    UnreliableKind,
    from_dict,
)
from fedsim.data.partition import PARTITIONERS, partition_indices
from fedsim.data.sources import DATASETS
from fedsim.data.types import SourceArgs, SourceSplits
from fedsim.errors import DataError
from fedsim.models import MODELS, build_model, functional_units, is_dp_compatible
from fedsim.models.base import declares_dp_compatible
from fedsim.registry import Registry
from fedsim.report.sections import RUN_SECTIONS, SWEEP_SECTIONS
from fedsim.robustness import ATTACKS, AttackParams, build_attack, perturbation_norm
from fedsim.rundir import METRICS_FILE
from fedsim.sweep import SWEEP_TABLE_FILE
from fedsim.valuation import SCORES, ScoreTracker

# ------------------------------------------------------------------ config names


LITERALS_AND_REGISTRIES = [
    (ModelName, MODELS),
    (DatasetName, DATASETS),
    (PartitionName, PARTITIONERS),
    (ScoreMetric, SCORES),
    (AttackName, ATTACKS),
    (MaliciousKind, MALICIOUS_KINDS),
    (UnreliableKind, UNRELIABLE_KINDS),
    (FaultKind, FAULT_KINDS),
]


@pytest.mark.parametrize(
    ("literal", "registry"),
    LITERALS_AND_REGISTRIES,
    ids=[r.kind for _, r in LITERALS_AND_REGISTRIES],
)
def test_config_literal_names_equal_the_registry(literal: object, registry: Registry) -> None:
    assert sorted(typing.get_args(literal)) == list(registry.names())


# ------------------------------------------------------------------ models


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize(("shape", "classes"), [((1, 28, 28), 2), ((3, 32, 32), 10)])
def test_model_builds_and_is_opacus_compatible(
    name: str, shape: tuple[int, int, int], classes: int
) -> None:
    model = build_model(name, shape, classes, seed=0)
    with torch.no_grad():
        logits = model(torch.rand(2, *shape))
    assert logits.shape == (2, classes) and bool(torch.isfinite(logits).all())
    twin = build_model(name, shape, classes, seed=0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True)
    )
    if declares_dp_compatible(MODELS.get(name)):
        assert is_dp_compatible(model) == []


@pytest.mark.parametrize("name", MODELS.names())
def test_functional_and_tabular_model_sets_match_the_models(name: str) -> None:
    """FUNCTIONAL_MODELS are exactly the models declaring a functional head (an output layer
    over features in [0, 1]); every TABULAR_MODELS entry takes a 1 × 1 × d row."""
    shape = (1, 1, 10) if name in TABULAR_MODELS else (1, 28, 28)
    model = build_model(name, shape, 1, seed=0)
    declared = bool(getattr(model, "functional_head", False))
    assert declared == (name in FUNCTIONAL_MODELS)
    if declared:
        units, outputs = functional_units(model)
        features = model.features(torch.rand(5, 1, 1, 10))  # type: ignore[operator]
        assert features.shape == (5, units - 1) and outputs == 1
        assert float(features.min()) >= 0.0 and float(features.max()) <= 1.0
    if name in TABULAR_MODELS:
        assert model(torch.rand(3, 1, 1, 10)).shape == (3, 1)


@pytest.mark.parametrize("name", DATASETS.names())
def test_regression_datasets_are_the_float_target_sources(name: str, tmp_path) -> None:
    if name not in REGRESSION_DATASETS:
        return  # classification sources are checked by the data tests
    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i + 1}\n" for i in range(30)))
    args = SourceArgs(path=str(path) if name == "tabular" else None)
    assert DATASETS.get(name)(args).train.task == "regression"


# ------------------------------------------------------------------ partitioners


@pytest.mark.parametrize("name", PARTITIONERS.names())
def test_partitioner_splits_disjoint_covering_reproducible(name: str) -> None:
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(4), 30))
    kw = {"alpha": 1.0, "shards_per_client": 2, "seed": 3, "sites": labels}  # natural: 4 sites
    parts = partition_indices(labels, 4, name, **kw)
    assert len(parts) == 4 and all(p.dtype == np.int64 and len(p) for p in parts)
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)  # disjoint
    assert np.array_equal(np.sort(joined), np.arange(len(labels)))  # covering (120 = 4·2·15)
    again = partition_indices(labels, 4, name, **kw)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


# ------------------------------------------------------------------ datasets


def _write_npz(path: Path) -> str:
    x = np.random.default_rng(0).random((12, 1, 4, 4)).astype(np.float32)
    np.savez(path / "tiny.npz", x_train=x, y_train=np.arange(12) % 3)
    return str(path / "tiny.npz")


def _write_imagefolder(path: Path) -> str:
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (path / "train" / cls).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (4, 4), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(path / "train" / cls / f"{i}.png")
    return str(path)


#: A tiny file for every loader that reads ``data.path`` (checked to be complete below).
TINY_FILES = {"npz": _write_npz, "imagefolder": _write_imagefolder}


@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_loader_never_downloads_and_fails_cleanly(name: str, tmp_path: Path) -> None:
    loader = DATASETS.get(name)
    inspect.signature(loader).bind(SourceArgs())
    try:  # no files and download=False: packaged data or a DataError, nothing else
        out = loader(SourceArgs(root=str(tmp_path), download=False))
    except DataError as exc:
        needs_path = "data.path is required" in str(exc)
        assert needs_path == (name in TINY_FILES), f"{name}: {exc}"
    else:
        assert isinstance(out, SourceSplits) and name not in TINY_FILES


@pytest.mark.parametrize("name", sorted(TINY_FILES))
def test_file_dataset_loads_a_tiny_file(name: str, tmp_path: Path) -> None:
    out = DATASETS.get(name)(SourceArgs(path=TINY_FILES[name](tmp_path), download=False))
    x = out.train.x
    assert x.dtype == np.float32 and x.ndim == 4 and 0.0 <= x.min() <= x.max() <= 1.0
    assert len(out.train) >= 6 and out.train.y.max() < len(out.class_names)


# ------------------------------------------------------------------ valuation scores


SHAPE, CLASSES = (1, 8, 8), 3


def _tiny_batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand((n, *SHAPE), generator=gen), torch.randint(0, CLASSES, (n,), generator=gen)


@pytest.mark.parametrize("name", SCORES.names())
def test_score_contract_and_declared_properties(name: str) -> None:
    score = SCORES.get(name)
    assert score.name == name
    x, y = _tiny_batch()
    checkpoints = [build_model("mlp", SHAPE, CLASSES, seed=s).eval() for s in (0, 1)]
    values = score.batch(checkpoints, x, y)
    assert values.shape == (len(x),) and bool(torch.isfinite(values).all())
    # needs_checkpoints: a spread over >= 2 models; otherwise only the last model counts
    if score.needs_checkpoints:
        with pytest.raises(ValueError):
            score.batch(checkpoints[-1:], x, y)
    else:
        torch.testing.assert_close(score.batch(checkpoints[-1:], x, y), values)
    # requires_dp: stated relative to σ, scaling as 1/σ²; any other ignores σ
    halved = score.batch(checkpoints, x, y, sigma=2.0)
    torch.testing.assert_close(halved, values / 4 if score.requires_dp else values)
    # the tracker's batched (and, for checkpoint scores, online) form agrees
    tracker = ScoreTracker("mlp", SHAPE, CLASSES, x, y, batch_size=4, sigma=2.0)
    for model in checkpoints:
        tracker.record_checkpoint(model.state_dict())
    torch.testing.assert_close(
        tracker.scores(name, checkpoints[-1].state_dict()), halved, rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize("name", SCORES.names())
def test_score_release_carries_a_variance_iff_declared(name: str) -> None:
    from clients.valuation_round import valuation_tasks

    cfg = from_dict(
        {
            "client": {"local_epochs": 2},
            "dp": {"noise_multiplier": 1.0},
            "valuation": {"enabled": True, "metric": name},
        }
    )
    plan = valuation_tasks(cfg, server_round=1, already_pruned=False).release
    assert plan is not None
    assert (plan.epsilon_sumsq > 0) == SCORES.get(name).releases_variance


# ------------------------------------------------------------------ attacks


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_keeps_range_budget_and_inputs(name: str) -> None:
    eps = 0.1
    attack = build_attack(name, AttackParams(epsilon=eps, step_size=eps / 4, steps=3))
    assert attack.name == name
    model = build_model("mlp", SHAPE, CLASSES, seed=0)
    x, y = _tiny_batch()
    x_before = x.clone()
    x_adv = attack(model, x, y, torch.Generator().manual_seed(1))
    assert torch.equal(x, x_before) and x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert float(perturbation_norm(x_adv, x, attack.norm).max()) <= eps + 1e-5
    other = attack(model, x, y, torch.Generator().manual_seed(2))
    assert torch.equal(x_adv, attack(model, x, y, torch.Generator().manual_seed(1)))
    assert torch.equal(x_adv, other) != attack.stochastic  # declared randomness is real


# ------------------------------------------------------------------ attacker kinds


@pytest.mark.parametrize("name", UNRELIABLE_KINDS.names())
def test_unreliable_kind_spoils_only_the_chosen_rows(name: str) -> None:
    x = np.full((10, 1, 4, 4), 0.5, dtype=np.float32)
    y = (np.arange(10) % 3).astype(np.int64)
    idx = np.array([0, 4, 8])
    corrupt = UNRELIABLE_KINDS.get(name)
    out_x, out_y = corrupt(x, y, idx, np.random.default_rng(0), 3)
    assert out_x.shape == x.shape and out_x.dtype == x.dtype
    assert out_y.shape == y.shape and out_y.dtype == y.dtype
    assert out_x.min() >= 0.0 and out_x.max() <= 1.0
    assert np.all(x == 0.5) and np.array_equal(y, np.arange(10) % 3)  # inputs untouched
    keep = np.setdiff1d(np.arange(10), idx)
    assert np.array_equal(out_x[keep], x[keep]) and np.array_equal(out_y[keep], y[keep])
    assert not (np.array_equal(out_x, x) and np.array_equal(out_y, y))  # it does spoil
    again_x, again_y = corrupt(x, y, idx, np.random.default_rng(0), 3)
    assert np.array_equal(out_x, again_x) and np.array_equal(out_y, again_y)


@pytest.mark.parametrize("name", MALICIOUS_KINDS.names())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_malicious_kind_returns_a_tensor_of_the_same_shape(name: str, dtype: torch.dtype) -> None:
    g = torch.zeros((3, 4), dtype=dtype)
    w = torch.full((3, 4), 0.25, dtype=dtype)
    upload = MALICIOUS_KINDS.get(name)
    out = upload(g, w, 2.0, torch.Generator().manual_seed(0))
    assert out.shape == w.shape and out.dtype == w.dtype
    assert not torch.equal(out, w)  # hostile, not the honest upload
    assert bool((g == 0).all()) and bool((w == 0.25).all())  # inputs untouched
    again = upload(g, w, 2.0, torch.Generator().manual_seed(0))
    assert torch.equal(out.nan_to_num(), again.nan_to_num())


# ------------------------------------------------------------------ report sections


@pytest.mark.parametrize(
    ("name", "marker"),
    [(n, METRICS_FILE) for n in RUN_SECTIONS.names()]
    + [(n, SWEEP_TABLE_FILE) for n in SWEEP_SECTIONS.names()],
)
def test_report_section_on_an_empty_directory(name: str, marker: str, tmp_path: Path) -> None:
    (tmp_path / marker).write_text("")
    registry = SWEEP_SECTIONS if marker == SWEEP_TABLE_FILE else RUN_SECTIONS
    text = registry.get(name)(tmp_path)
    assert text is None or isinstance(text, str)


# ------------------------------------------------------------------ CLI commands


def _leaf_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...]
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(path, parser)]
    return [
        leaf
        for name, child in subs[0].choices.items()
        for leaf in _leaf_parsers(child, (*path, name))
    ]


def test_parser_has_exactly_the_registered_commands() -> None:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(sub.choices) == [name for name, _ in COMMANDS.items()]
    for path, leaf in _leaf_parsers(parser, ()):
        assert callable(leaf.get_default("handler")), path


@pytest.mark.parametrize("name", COMMANDS.names())
def test_command_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    leaves = [path for path, _ in _leaf_parsers(build_parser(), ()) if path[0] == name]
    for path in dict.fromkeys([(name,), *leaves]):  # the command, then its sub-commands
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: fedsim {' '.join(path)}" in capsys.readouterr().out


#: Packages a command that trains nothing must not import (torch alone costs ~2.5 s).
HEAVY = ("torch", "flwr", "ray", "opacus", "mlflow")
#: ... and what `fedsim --help` and the light commands need not import either, to start
#: within 0.5 s in a slow hour: numpy (~0.1 s, through the run-directory modules), asyncio
#: (the control tunnel's) and the TLS front's web stack (~0.15 s).
NOT_FOR_LIGHT_COMMANDS = (*HEAVY, "numpy", "asyncio", "httpx", "uvicorn", "starlette")


def _heavy_modules_after(code: str, cwd: Path, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    """Run ``code`` in a fresh interpreter; the ``heavy`` packages it left in sys.modules."""
    root = Path(fedsim.__file__).resolve().parents[1]
    probe = (
        f"{code}\nimport json, sys\n"
        f"heavy = {heavy!r}\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return typing.cast(list[str], json.loads(done.stdout.strip().splitlines()[-1]))


def test_building_the_parser_imports_nothing_heavy() -> None:
    root = Path(fedsim.__file__).resolve().parents[1]
    code = "from fedsim.cli import build_parser; build_parser()"
    assert _heavy_modules_after(code, root, NOT_FOR_LIGHT_COMMANDS) == []


_HELP_AND_LIGHT_COMMANDS = """
import contextlib, io
from fedsim.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    for path in {paths!r}:
        try:
            main([*path, "--help"])
        except SystemExit as exc:
            assert exc.code == 0, (path, exc.code)
    assert main(["certs", "c"]) == 0
    assert main(["node", "keygen", "k/key"]) == 0
    assert main(["superlink", "--certs", "c", "--dry-run"]) == 0
"""


def test_help_and_light_commands_import_nothing_heavy(tmp_path: Path) -> None:
    # `fedsim --help`, `fedsim CMD [SUB] --help` and the commands that need neither torch
    # nor Flower (certificates, node keys, the printed SuperLink command line) start fast
    # only while torch and flwr stay unimported (benchmarks/cli_startup.py times them).
    paths = [
        (),
        *dict.fromkeys(p[:i] for p, _ in _leaf_parsers(build_parser(), ()) for i in (1, len(p))),
    ]
    code = _HELP_AND_LIGHT_COMMANDS.format(paths=paths)
    assert _heavy_modules_after(code, tmp_path, NOT_FOR_LIGHT_COMMANDS) == []
    assert (tmp_path / "c" / "ca.crt").is_file() and (tmp_path / "k" / "key.pub").is_file()
