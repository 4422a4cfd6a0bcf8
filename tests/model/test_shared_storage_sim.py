"""Kafka partitions on a shared object store in the simulator (scenarios/sim/node3-s3.toml):
three nodes share one `SimObjectStore`; partitions move to live nodes when their leader dies,
under a new epoch; the Kafka checker finds no acknowledged record lost or duplicated; same
seed, same trace across processes and hash seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.scenario import ScenarioError, from_dict, load, read_toml
from model.world import World
from tests.model.helpers import trace_hash_in_process

ROOT = Path(__file__).resolve().parents[2]
S3 = ROOT / "scenarios" / "sim" / "node3-s3.toml"


def test_shared_partitions_move_to_live_nodes_and_lose_nothing() -> None:
    world = World(load(S3), 2, keep_trace=True)
    result = world.run()
    assert result.outcome == "ok", result.detail
    kafka = result.stats["kafka"]
    assert kafka["acked"] > 0 and kafka["lost"] == 0 and kafka["duplicates_idempotent"] == 0
    assert world.trace.lines is not None
    lines = [json.loads(line) for line in world.trace.lines]
    moves = [e for e in lines if e["kind"] == "node-log" and "shared storage" in e["line"]]
    assert moves, "a leader died: the controller handed its partitions to live nodes"
    assert world.store is not None
    markers = [k for k in world.store.keys() if "/epoch-" in k]
    assert any(k.endswith("epoch-0000000002") for k in markers), markers
    leader = world.find_leader()
    assert leader is not None
    core = world.nodes[leader].core
    assert core is not None
    topic = core.replica.sm.topic("events")
    assert topic is not None and all(topic.shared(i) for i in range(len(topic.shards)))
    for shard in topic.shards:  # after heal every partition has a live leader
        assert shard.leader and world.nodes[shard.leader].up, topic


def test_only_s3_may_be_the_scenarios_kafka_engine() -> None:
    raw = read_toml(S3)
    raw["kafka"]["default_engine"] = "file"
    with pytest.raises(ScenarioError, match="set by the simulator"):
        from_dict(raw)


def test_shared_storage_runs_are_deterministic_across_processes_and_hash_seeds() -> None:
    first = trace_hash_in_process(S3, 2, "1")
    assert first == trace_hash_in_process(S3, 2, "2")
    assert World(load(S3), 2).run().trace_hash == first
