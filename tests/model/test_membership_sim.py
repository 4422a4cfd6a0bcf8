"""Meta membership change in the simulator (scenarios/sim/node3-membership.toml): a spare node
joins blank under crashes and partitions and becomes a voter; a member leaves (the leader too:
it hands leadership over first) and is stopped for good; the Raft, replication and Kafka
checkers pass; a node that left is never restarted; same seed, same trace across processes
and hash seeds."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from model.scenario import ScenarioError, from_dict, load, read_toml
from model.world import World
from tests.model.helpers import trace_hash_in_process

ROOT = Path(__file__).resolve().parents[2]
MEMBERSHIP = ROOT / "scenarios" / "sim" / "node3-membership.toml"


@functools.lru_cache(maxsize=2)
def run(seed: int) -> tuple[World, Any, list[dict[str, Any]]]:
    world = World(load(MEMBERSHIP), seed, keep_trace=True)
    result = world.run()
    assert world.trace.lines is not None
    return world, result, [json.loads(line) for line in world.trace.lines]


@pytest.mark.parametrize("seed", [1, 8])
def test_a_spare_joins_and_a_member_leaves_under_faults(seed: int) -> None:
    world, result, events = run(seed)
    assert result.outcome == "ok", result.detail
    assert world.member_stats["joined"] == 1 and world.member_stats["left"] == 1
    (gone,) = world.left
    done = [e for e in events if e["kind"] == "membership" and e["ok"]]
    assert [(e["change"], e["member"]) for e in done] == [("add", 4), ("remove", gone)]
    assert gone != world.clients_node
    leader = world.find_leader()
    assert leader is not None and leader != gone
    assert world.raft(leader).conf.voters == tuple(sorted({1, 2, 3, 4} - {gone}))
    assert not world.nodes[gone].up, "a node that left is not restarted (not even by heal)"
    stop = next(e["t"] for e in events if e["kind"] == "stop" and e["node"] == gone)
    assert not [e for e in events if e["kind"] == "start" and e["node"] == gone
                and e["t"] > stop]
    assert result.stats["kafka"]["lost"] == 0


def test_the_leader_asked_to_leave_hands_over_first() -> None:
    world, result, events = run(1)
    assert result.outcome == "ok", result.detail
    handed = [e for e in events if e["kind"] == "membership" and not e["ok"]
              and "handed the meta leadership" in e["message"]]
    assert handed, "seed 1 removes the meta leader"
    (gone,) = world.left
    assert handed[0]["member"] == gone


def test_spares_are_validated() -> None:
    raw = read_toml(MEMBERSHIP)
    raw["cluster"]["spares"] = 7
    with pytest.raises(ScenarioError, match="spares must be 0..6"):
        from_dict(raw)


def test_membership_runs_are_deterministic_across_processes_and_hash_seeds() -> None:
    first = trace_hash_in_process(MEMBERSHIP, 1, "1")
    assert first == trace_hash_in_process(MEMBERSHIP, 1, "2")
    assert World(load(MEMBERSHIP), 1).run().trace_hash == first
