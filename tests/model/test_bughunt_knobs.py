"""Knobs added for bug hunting: APPEND size / inflight limits reach RaftConfig; isolate_leader."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from helpers import small_scenario

from model.scenario import ScenarioError, from_dict
from model.world import World, raft_config


def test_append_limits_reach_raft_config() -> None:
    s = small_scenario(cluster={"max_size_per_msg": 1, "max_inflight_msgs": 2})
    cfg = raft_config(s)
    assert (cfg.max_size_per_msg, cfg.max_inflight_msgs) == (1, 2)
    default = raft_config(small_scenario())
    assert (default.max_size_per_msg, default.max_inflight_msgs) == (1 << 20, 256)


def test_append_limits_must_be_positive() -> None:
    with pytest.raises(ScenarioError, match="max_size_per_msg and max_inflight_msgs"):
        from_dict({"cluster": {"max_inflight_msgs": 0}})


def _isolating(**cluster: int) -> object:
    return small_scenario(cluster=cluster, faults={"weights": {"isolate_leader": 1},
                                                   "partition_ms": [100, 300]})


def test_isolate_leader_cuts_the_leader_off_and_is_deterministic() -> None:
    out = StringIO()
    a = World(_isolating(), 3, trace_out=out).run()
    b = World(_isolating(), 3).run()
    assert a.outcome == "ok", a.detail
    assert a.trace_hash == b.trace_hash
    faults = [e for e in map(json.loads, out.getvalue().splitlines()) if e["kind"] == "fault"]
    isolations = [e for e in faults if e["fault"] == "isolate_leader"]
    assert isolations, faults
    for e in isolations:
        assert e["node"] not in e["b"] and len(e["b"]) == 2


def test_tick_skipping_same_trace_with_small_appends_and_isolation() -> None:
    import dataclasses

    s = _isolating(max_size_per_msg=1, max_inflight_msgs=1)
    one = dataclasses.replace(s, cluster=dataclasses.replace(s.cluster, tick_skipping=False))
    skip, tick = World(s, 5).run(), World(one, 5).run()
    assert skip.trace_hash == tick.trace_hash
    assert skip.outcome == "ok", skip.detail
