"""The version check between the coordinator and the sites: the pure comparison, the
schema hash, and a round through the real strategy and ClientApp (in process) in which
one site refuses a coordinator of another fedsim version and the round goes on."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedsim import __version__, keys
from fedsim.config import from_dict
from fedsim.versions import (
    AppVersion,
    local_version,
    read_version,
    schema_fields,
    schema_hash,
    version_entries,
    version_mismatch,
)

ROOT = Path(__file__).resolve().parents[1]
SITE = AppVersion("0.1.0", "aaaa")


# ---------------------------------------------------------------- the pure comparison
def test_agreeing_versions_pass() -> None:
    assert version_mismatch(AppVersion("0.1.0", "aaaa"), SITE) is None


def test_a_different_fedsim_version_is_refused_naming_both() -> None:
    reason = version_mismatch(AppVersion("0.2.0", "aaaa"), SITE)
    assert reason is not None and reason.startswith("version check: ")
    assert "fedsim '0.2.0'" in reason and "fedsim '0.1.0' installed" in reason


def test_a_different_schema_is_refused_naming_both() -> None:
    reason = version_mismatch(AppVersion("0.1.0", "bbbb"), SITE)
    assert reason is not None
    assert "config schema is 'bbbb'" in reason and "this site's is 'aaaa'" in reason


def test_a_coordinator_naming_no_version_is_refused() -> None:
    reason = version_mismatch(None, SITE)
    assert reason is not None and keys.FEDSIM_VERSION in reason and "0.1.0" in reason


def test_entries_round_trip_and_bad_entries_name_no_version() -> None:
    mine = local_version()
    assert mine.fedsim == __version__
    assert read_version(version_entries(mine)) == mine
    assert read_version({}) is None
    assert read_version({keys.FEDSIM_VERSION: 1, keys.CONFIG_SCHEMA: "x"}) is None
    long = AppVersion("9" * 500, "x")  # a hostile coordinator's text is cut in the reason
    assert len(version_mismatch(long, SITE) or "") < 300


# ---------------------------------------------------------------- the schema hash
@dataclass(frozen=True)
class _Inner:
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class _Schema:
    size: int = field(default=1, metadata={"ge": 0})
    inner: _Inner = field(default_factory=_Inner)


def test_schema_fields_see_types_defaults_bounds_and_modes() -> None:
    base = schema_fields(_Schema)
    assert base == {
        "size": {"type": "int", "default": 1, "bounds": {"ge": 0}},
        "inner.mode": {"type": 'Literal["a", "b"]', "default": "a", "bounds": {}},
    }

    @dataclass(frozen=True)
    class Inner2:
        mode: Literal["a", "b", "c"] = "a"  # a mode added

    variants = [
        dataclasses.make_dataclass("S", [("size", int, field(default=2, metadata={"ge": 0}))]),
        dataclasses.make_dataclass("S", [("size", int, field(default=1, metadata={"ge": 1}))]),
        dataclasses.make_dataclass("S", [("size", float, field(default=1, metadata={"ge": 0}))]),
        dataclasses.make_dataclass("S", [("count", int, field(default=1, metadata={"ge": 0}))]),
    ]
    for variant in variants:
        assert schema_fields(variant) != {"size": base["size"]}
    assert schema_fields(Inner2) != {"mode": base["inner.mode"]}


def test_schema_hash_is_stable_across_processes() -> None:
    """The same install gives the same hash whatever Python's string-hash seed."""
    code = "from fedsim.versions import schema_hash; print(schema_hash())"
    hashes = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        hashes.add(out.stdout.strip())
    assert hashes == {schema_hash()}
    assert len(schema_hash()) == 16


# ---------------------------------------------------------------- through the apps
def _config() -> Any:
    return from_dict(
        {
            "seed": 1,
            "rounds": 1,
            "data": {"name": "pneumoniamnist", "num_clients": 3, "train_samples": 150},
            "model": {"name": "mlp"},
            "client": {"batch_size": 25},
            "dp": {"enabled": False},
            "strategy": {"name": "fedavg"},
        }
    )


def _client_reply(cfg: Any, msg: Message, client_id: int) -> Message:
    from clients.client_app import make_client_app

    context = Context(
        run_id=1,
        node_id=msg.metadata.dst_node_id,
        node_config={keys.NODE_PARTITION_ID: client_id, keys.NODE_NUM_PARTITIONS: 3},
        state=RecordDict(),
        run_config={},
    )
    reply = make_client_app(cfg, seeded_noise=True)(msg, context)
    assert not reply.has_error(), reply.error
    return reply


def _with_version(msg: Message, version: dict[str, str] | None) -> Message:
    """``msg`` as a coordinator of another version (``None``: an older one) sends it."""
    config = ConfigRecord(dict(msg.content.config_records[keys.CONFIG]))
    for key in (keys.FEDSIM_VERSION, keys.CONFIG_SCHEMA):
        del config[key]
    if version is not None:
        config.update(version)
    content = RecordDict({keys.ARRAYS: msg.content.array_records[keys.ARRAYS], keys.CONFIG: config})
    return Message(content=content, dst_node_id=msg.metadata.dst_node_id, message_type="train")


def test_a_site_refuses_another_version_and_the_round_goes_on(task_identity: None) -> None:
    from strategy_harness import strategy_context

    from fedsim.models import build_model
    from strategies.central_dp import fedsim_core
    from strategies.registry import build_strategy

    cfg = _config()
    ctx = strategy_context(cfg)
    strategy = build_strategy(ctx)
    state = build_model("mlp", (1, 28, 28), 2, seed=0).state_dict()
    sent = list(strategy.configure_train(1, ArrayRecord(state), ConfigRecord(), None))  # type: ignore[arg-type]
    assert len(sent) == 3
    for msg in sent:  # the server names its version in every train message
        assert read_version(msg.content.config_records[keys.CONFIG]) == local_version()
    other = version_entries(AppVersion("0.0.1", local_version().schema))
    replies = []
    for msg in sent:
        cid = ctx.directory.client_of[msg.metadata.dst_node_id]
        if cid == 0:  # a site whose installed fedsim differs from the coordinator's
            reply = _client_reply(cfg, _with_version(msg, other), cid)
            status = reply.content.config_records[keys.STATUS]
            assert status[keys.STATUS_CODE] == keys.STATUS_REFUSED
            assert "coordinator runs fedsim '0.0.1'" in str(status[keys.STATUS_REASON])
            assert not reply.content.array_records  # nothing trained, nothing sent
            # the refusal answers the message it was sent, as Flower routes it back
            reply = Message(content=reply.content, reply_to=msg)
        else:
            reply = _client_reply(cfg, msg, cid)
        replies.append(reply)
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None  # the two others were aggregated
    records = {r.client_id: r for r in ctx.log.entry(1).clients}
    assert records[0].status == "refused"
    assert "version check: the coordinator runs fedsim '0.0.1'" in (
        records[0].rejected_reason or ""
    )
    assert records[1].status == records[2].status == "ok"
    assert ctx.log.entry(1).selected == (1, 2)
    assert 0 not in fedsim_core(strategy).eligible_clients()  # not asked again in this run


def test_a_message_without_a_version_is_refused_by_the_client_app(task_identity: None) -> None:
    cfg = _config()
    arrays = ArrayRecord({})
    msg = Message(
        content=RecordDict(
            {keys.ARRAYS: arrays, keys.CONFIG: ConfigRecord({keys.SERVER_ROUND: 1})}
        ),
        dst_node_id=5,
        message_type="train",
    )
    reply = _client_reply(cfg, msg, 1)
    status = reply.content.config_records[keys.STATUS]
    assert status[keys.STATUS_CODE] == keys.STATUS_REFUSED
    assert "names no fedsim version" in str(status[keys.STATUS_REASON])
