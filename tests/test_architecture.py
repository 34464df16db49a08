"""The architecture's rules, checked: import directions, the strategy template, the
published run-directory schemas, and no global-RNG model initialisation in library code."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import jsonschema
import pytest

from fedsim.config import from_dict
from fedsim.records import ClientRoundRecord, EvalResult, RoundRecord
from fedsim.schemas import (
    METRICS_SCHEMA_FILE,
    SUMMARY_SCHEMA_FILE,
    metrics_line_schema,
    summary_schema,
)
from fedsim.summary import build_summary
from strategies.base import FedsimStrategy
from strategies.central_dp import fedsim_core
from strategies.registry import STRATEGIES, build_strategy

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_import_directions() -> None:
    """``fedsim`` never imports ``strategies`` or ``clients`` except in the one module that
    assembles a simulation (``fedsim/run.py``); the server and client sides never import
    each other (they share only ``fedsim``: message keys and pure helpers)."""
    problems = []
    for path in sorted((ROOT / "fedsim").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        bad = _imports(path) & {"strategies", "clients"}
        if bad and rel != "fedsim/run.py":
            problems.append(f"{rel} imports {sorted(bad)}")
    for side, other in (("strategies", "clients"), ("clients", "strategies")):
        for path in sorted((ROOT / side).rglob("*.py")):
            if other in _imports(path):
                problems.append(f"{path.relative_to(ROOT).as_posix()} imports {other}")
    assert not problems, problems


def test_library_code_builds_models_from_a_seed() -> None:
    """Every ``build_model`` call in library code passes ``seed=`` (no global torch RNG)."""
    calls = []
    for package in ("fedsim", "strategies", "clients"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "id", getattr(node.func, "attr", None)) == "build_model"
                    and not any(k.arg == "seed" for k in node.keywords)
                ):
                    calls.append(f"{path.relative_to(ROOT).as_posix()}:{node.lineno}")
    assert not calls, calls


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_follows_the_template(name: str) -> None:
    """Each registered strategy is a :class:`FedsimStrategy` built fully by its factory,
    keeps the round template (it may override ``select``/``aggregate``/``kept_by_rule``,
    never ``aggregate_train`` or ``configure_train``) and reports to the round log."""
    from strategy_harness import strategy_context

    cfg = from_dict(
        {
            "data": {"num_clients": 7},
            "model": {"name": "mlp"},
            "dp": {"enabled": False},
            "strategy": {"name": name, "k": 3, "num_malicious": 1},
        }
    )
    ctx = strategy_context(cfg)
    core = fedsim_core(build_strategy(ctx))
    assert isinstance(core, FedsimStrategy)
    assert type(core).aggregate_train is FedsimStrategy.aggregate_train
    assert type(core).configure_train is FedsimStrategy.configure_train
    assert core.log is ctx.log and core.directory is ctx.directory


def test_strategy_literal_equals_the_registry() -> None:
    import typing

    from fedsim.config import StrategyName

    assert sorted(typing.get_args(StrategyName)) == list(STRATEGIES.names())


def test_published_schemas_are_the_generated_ones() -> None:
    for name, schema in ((METRICS_SCHEMA_FILE, metrics_line_schema()),
                         (SUMMARY_SCHEMA_FILE, summary_schema())):  # fmt: skip
        committed = json.loads((ROOT / "schemas" / name).read_text(encoding="utf-8"))
        assert committed == schema, f"regenerate with: python -m fedsim.schemas schemas ({name})"
        jsonschema.Draft202012Validator.check_schema(committed)


def test_records_validate_and_unknown_fields_do_not() -> None:
    cfg = from_dict({"rounds": 1, "data": {"num_clients": 2}, "dp": {"epsilon": 2.0}})
    rec = ClientRoundRecord(client_id=0, status="ok", num_examples=10, epsilon=1.0)
    line = RoundRecord(round=1, test=EvalResult(0.5, 0.7, 0.6), sampled=(0,), clients=(rec,))
    jsonschema.validate(line.to_json(), metrics_line_schema())
    summary = build_summary(
        cfg, {0: EvalResult(0.4, 0.9), 1: EvalResult(0.5, 0.7)}, {1: (rec,)}, {0: 10}, (0, 1), 1.0
    ).to_json()
    jsonschema.validate(summary, summary_schema())
    summary["clients"]["0"]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(summary, summary_schema())
