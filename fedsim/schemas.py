"""JSON Schemas of ``metrics.jsonl`` lines and ``summary.json``, derived from the records.

The run directory's two JSON documents are written from frozen records
(:class:`~fedsim.records.RoundRecord` / :class:`~fedsim.records.ClientRoundRecord`,
:class:`~fedsim.summary.RunSummary`). This module turns those records' field types into
JSON Schemas (draft 2020-12), so the published files in ``schemas/`` cannot drift from the
code: ``python -m fedsim.schemas schemas/`` rewrites them, and a test checks both that the
committed files equal the generated ones and that a real run's files validate.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from fedsim.records import ClientRoundRecord, SiteEvalRecord, SiteMetrics
from fedsim.summary import ClientSummary, ClientValuation, DpSummary

DRAFT = "https://json-schema.org/draft/2020-12/schema"
METRICS_SCHEMA_FILE = "metrics-line.schema.json"
SUMMARY_SCHEMA_FILE = "summary.schema.json"

_SCALARS: dict[Any, str] = {bool: "boolean", int: "integer", float: "number", str: "string"}


def type_schema(tp: Any) -> dict[str, Any]:
    """The JSON Schema of one Python type annotation (scalars, Optional, Literal, tuples)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return {"enum": list(typing.get_args(tp))}
    if origin in (Union, types.UnionType):
        options = [type_schema(a) for a in typing.get_args(tp)]
        kinds = [o["type"] for o in options if set(o) == {"type"}]
        if len(kinds) == len(options):
            return {
                "type": [k for kind in kinds for k in ([kind] if isinstance(kind, str) else kind)]
            }
        return {"anyOf": options}
    if origin in (tuple, list):
        (item, *_rest) = typing.get_args(tp) or (Any,)
        return {"type": "array", "items": type_schema(item)}
    if tp is type(None):
        return {"type": "null"}
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if tp is Any:
        return {}
    raise TypeError(f"no JSON Schema for {tp!r}")  # a programming error: extend the map


def _fields(cls: type, skip: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    hints = typing.get_type_hints(cls)
    return {
        f.name: type_schema(hints[f.name]) for f in dataclasses.fields(cls) if f.name not in skip
    }


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": sorted(properties) if required is None else required,
        "additionalProperties": False,
    }


def _test_properties() -> dict[str, Any]:
    """The ``test_*`` fields of :meth:`EvalResult.test_json` (all but the first two optional)."""
    number = {"type": "number"}
    confusion = {"type": "integer", "minimum": 0}
    return {
        "test_accuracy": number,
        "test_loss": number,
        "test_auc": number,
        "test_mre": number,
        "test_balanced_accuracy": number,
        "test_recall": {"type": "array", "items": {"type": ["number", "null"]}},
        "test_sensitivity": number,
        "test_specificity": number,
        "test_precision": number,
        "test_f1": number,
        "test_confusion": _object({k: confusion for k in ("tn", "fp", "fn", "tp")}),
    }


def site_metrics_schema() -> dict[str, Any]:
    """The schema of a :class:`SiteMetrics` object (``null`` allowed)."""
    props = _fields(SiteMetrics)
    props["confusion"] = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
    schema = _object(props)
    schema["type"] = ["object", "null"]
    return schema


def site_evaluation_schema() -> dict[str, Any]:
    """The schema of a ``metrics.jsonl`` line's ``site_evaluation`` block."""
    site = _object(
        {
            **_fields(SiteEvalRecord, skip=("client_id", "metrics")),
            "metrics": site_metrics_schema(),
        }
    )
    return _object(
        {
            "aggregate": site_metrics_schema(),
            "sites": {
                "type": "object",
                "patternProperties": {"^[0-9]+$": site},
                "additionalProperties": False,
            },
        }
    )


def metrics_line_schema() -> dict[str, Any]:
    """The schema of one ``metrics.jsonl`` line (:meth:`RoundRecord.to_json`)."""
    number = {"type": "number"}
    ids = {"type": "array", "items": {"type": "integer"}}
    client = _object(_fields(ClientRoundRecord, skip=("client_id",)))
    props = {
        "round": {"type": "integer", "minimum": 1},
        **_test_properties(),
        "sampled": ids,
        "selected": ids,
        "seconds": number,
        "selection_epsilon": number,
        "aggregation_note": {"type": "string"},
        "clients": {
            "type": "object",
            "patternProperties": {"^[0-9]+$": client},
            "additionalProperties": False,
        },
        "site_evaluation": site_evaluation_schema(),
    }
    required = ["round", "test_accuracy", "test_loss", "sampled", "selected", "seconds", "clients"]
    return {"$schema": DRAFT, "title": "fedsim metrics.jsonl line", **_object(props, required)}


def summary_schema() -> dict[str, Any]:
    """The schema of ``summary.json`` (:meth:`RunSummary.to_json`)."""
    evaluation = {
        "type": ["object", "null"],
        "properties": _test_properties(),
        "required": ["test_accuracy", "test_loss"],
        "additionalProperties": False,
    }
    client_props = _fields(ClientSummary, skip=("valuation",))
    client_props["valuation"] = {"type": ["number", "null"]}
    client_props["reward_total"] = {"type": "number"}
    extra = _fields(ClientValuation, skip=("valuation", "reward_total"))
    client = _object({**client_props, **extra}, sorted(client_props))
    section = {"type": "object"}  # contributed sections: documented by their owners
    props = {
        "name": {"type": "string"},
        "fedsim_version": {"type": "string"},
        "seed": {"type": "integer"},
        "rounds": {"type": "integer", "minimum": 0},
        "wall_seconds": {"type": "number"},
        "final": evaluation,
        "initial": evaluation,
        "dp": _object(_fields(DpSummary)),
        "selection_epsilon_total": {"type": ["number", "null"]},
        "clients": {
            "type": "object",
            "patternProperties": {"^[0-9]+$": client},
            "additionalProperties": False,
        },
        "client_faults": {
            "type": "object",
            "properties": {"failed": {"type": "integer"}, "rejected": {"type": "integer"}},
            "required": ["failed", "rejected"],
            "additionalProperties": False,
        },
        "ended_early": {"type": ["string", "null"]},
        "valuation": section,
        "robustness": section,
        "audit": section,
        "site_evaluation": _object(
            {
                "rounds": {"type": "array", "items": {"type": "integer"}},
                "final_round": {"type": "integer"},
                "final": site_metrics_schema(),
                "sites": {"type": "object"},  # as in metrics.jsonl's site_evaluation.sites
            }
        ),
    }
    optional = ("valuation", "robustness", "audit", "site_evaluation")
    required = [k for k in props if k not in optional]
    return {"$schema": DRAFT, "title": "fedsim summary.json", **_object(props, required)}


def write_schemas(directory: str | Path) -> list[Path]:
    """Write both schemas into ``directory``; returns the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in ((METRICS_SCHEMA_FILE, metrics_line_schema()),
                         (SUMMARY_SCHEMA_FILE, summary_schema())):  # fmt: skip
        path = out / name
        path.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":  # pragma: no cover - the regeneration command
    for written in write_schemas(sys.argv[1] if len(sys.argv) > 1 else "schemas"):
        sys.stdout.write(f"{written}\n")
