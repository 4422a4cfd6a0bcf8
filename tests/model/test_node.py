"""One node's lifecycle inside a running world: pause with a bounded inbox, crash and restart."""

from __future__ import annotations

from helpers import small_scenario

from model.world import World

MS = 1000


def started_world(**kw: object) -> World:
    s = small_scenario(faults={"enabled": False}, duration_ms=10_000.0, **kw)
    w = World(s, 1)
    for nid in w.node_ids:
        w.nodes[nid].start()
    w.env.process(w.client.run())
    w.env.run(until=1_000 * MS)
    assert w.find_leader() is not None
    return w


def test_pause_bounds_the_inbox_and_resume_catches_up() -> None:
    w = started_world(cluster={"inbox_max": 8})
    leader = w.find_leader()
    follower = w.nodes[next(n for n in w.node_ids if n != leader)]
    follower.pause()
    applied = follower.applied
    w.env.run(until=2_000 * MS)
    assert follower.applied == applied  # no processing while paused
    assert len(follower.inbox) == 8
    assert follower.stats.inbox_rejected > 0
    follower.resume()
    w.env.run(until=3_000 * MS)
    assert not follower.inbox
    assert follower.applied > applied
    assert abs(follower.applied - w.nodes[w.find_leader()].applied) <= 3


def test_crash_loses_volatile_state_and_restart_uses_durable_state() -> None:
    w = started_world()
    leader = w.find_leader()
    victim = w.nodes[next(n for n in w.node_ids if n != leader)]
    durable_before = victim.disk.durable_state()
    victim.crash()
    assert victim.raft is None and not victim.inbox
    assert victim.disk.unsynced == 0
    assert victim.deliver(object()) is False  # a down node refuses arrivals (counted)
    assert victim.stats.dropped_dead == 1
    w.env.run(until=2_000 * MS)
    victim.start()
    restored = victim.disk.durable_state()
    assert restored.hard_state.term >= durable_before.hard_state.term
    assert victim.raft.term == restored.hard_state.term
    w.env.run(until=3_000 * MS)
    assert abs(victim.applied - w.nodes[w.find_leader()].applied) <= 3


def test_crashing_the_leader_elects_another() -> None:
    w = started_world()
    old = w.find_leader()
    assert old is not None
    w.nodes[old].crash()
    w.env.run(until=3_000 * MS)
    new = w.find_leader()
    assert new is not None and new != old
    assert w.nodes[new].raft.term > 1
