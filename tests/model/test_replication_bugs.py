"""Planted replication bugs are caught by the simulator's checkers on node3-rf3 (the full hunt,
with seeds needed, is `make bughunt`); the same seeds pass without the bug."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.scenario import load, with_bugs
from model.world import World

ROOT = Path(__file__).resolve().parents[2]
RF3 = ROOT / "scenarios" / "sim" / "node3-rf3.toml"


@pytest.mark.parametrize(("bug", "seed", "needle"), [
    ("hw-before-isr", 4, "replication"),
    ("acks-downgrade", 4, "acknowledged record(s) lost"),
])
def test_a_planted_replication_bug_is_caught(bug: str, seed: int, needle: str) -> None:
    result = World(with_bugs(load(RF3), [bug]), seed).run()
    assert result.outcome == "safety", result.detail
    assert needle in result.detail
    assert World(load(RF3), seed).run().outcome == "ok"


def test_an_unknown_replication_bug_is_refused() -> None:
    from model.scenario import ScenarioError, from_dict, read_toml

    raw = read_toml(RF3)
    raw["cluster"]["replication_bugs"] = ["no-such-bug"]
    with pytest.raises(ScenarioError, match="replication_bugs"):
        from_dict(raw, source=str(RF3))


def test_the_tail_cache_runs_in_the_simulator_too() -> None:
    """`[cluster] replica_tail_bytes` turns on the leaders' tail cache the real node uses by
    default: the same checkers pass, and follower fetches read the simulated disks less."""
    import dataclasses

    from model.scenario import from_dict, read_toml

    raw = read_toml(RF3)
    raw["cluster"]["replica_tail_bytes"] = 4 << 20
    cached = from_dict(raw, source=str(RF3))
    assert cached.cluster.replica_tail_bytes == 4 << 20
    plain = load(RF3)
    assert dataclasses.replace(cached, cluster=dataclasses.replace(
        cached.cluster, replica_tail_bytes=0)) == plain
    with_cache, without = World(cached, 2), World(plain, 2)
    assert with_cache.run().outcome == "ok"
    assert without.run().outcome == "ok"
    reads = [sum(h.fs.stats.reads for h in w.nodes.values()) for w in (with_cache, without)]
    assert reads[0] < reads[1], reads
    raw["cluster"]["replica_tail_bytes"] = -1
    from model.scenario import ScenarioError
    with pytest.raises(ScenarioError, match="replica_tail_bytes"):
        from_dict(raw, source=str(RF3))
