"""One node's lifecycle inside a running world (a `NodeCore` on its `SimHost`): pause with a
bounded inbox, crash and restart from what its disk holds, the Ready loop's order."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import small_scenario

from model.world import RAFT_LOG, World
from real.raft import RaftNode
from real.raft.types import Message, MsgType, Ready
from real.server.raftlog import RaftLog

MS = 1000


def started_world(**kw: object) -> World:
    s = small_scenario(faults={"enabled": False}, duration_ms=10_000.0, **kw)
    w = World(s, 1)
    for nid in w.node_ids:
        w.start(nid)
    w.env.process(w.client.run())
    w.env.run(until=1_000 * MS)
    assert w.find_leader() is not None
    return w


def applied(w: World, nid: int) -> int:
    raft = w.raft(nid)
    assert raft is not None, nid
    return int(raft.applied)


def test_pause_bounds_the_inbox_and_resume_catches_up() -> None:
    w = started_world(cluster={"inbox_max": 8})
    leader = w.find_leader()
    nid = next(n for n in w.node_ids if n != leader)
    follower = w.nodes[nid]
    w.pause(nid)
    before = applied(w, nid)
    w.env.run(until=2_000 * MS)
    assert applied(w, nid) == before  # no processing while paused
    assert len(follower.inbox) == 8
    assert follower.stats.inbox_rejected > 0
    assert w.find_leader() != nid and nid not in w.self_declared_leaders()
    w.resume(nid)
    w.env.run(until=3_000 * MS)
    assert not follower.inbox
    assert applied(w, nid) > before
    new_leader = w.find_leader()
    assert new_leader is not None
    assert abs(applied(w, nid) - applied(w, new_leader)) <= 3


def test_crash_loses_volatile_state_and_restart_uses_durable_state() -> None:
    w = started_world()
    leader = w.find_leader()
    nid = next(n for n in w.node_ids if n != leader)
    victim = w.nodes[nid]
    durable_before = RaftLog(victim.fs, "meta").durable()
    w.crash(nid)
    assert victim.core is None and w.raft(nid) is None and not victim.inbox
    assert victim.fs.unsynced_ops(RAFT_LOG) == 0  # power loss: what survived is durable
    heartbeat = Message(type=MsgType.HEARTBEAT, src=leader or 1, dst=nid, term=1)
    assert victim.deliver(heartbeat) is False  # a down node refuses arrivals (counted)
    assert victim.stats.dropped_dead >= 1
    w.env.run(until=2_000 * MS)
    restored = RaftLog(victim.fs, "meta").durable()
    assert restored.hard_state.term >= durable_before.hard_state.term
    w.start(nid)
    w.env.run(until=2_100 * MS)  # recovery reads the disk (simulated time)
    raft = w.raft(nid)
    assert raft is not None and raft.term >= restored.hard_state.term
    w.env.run(until=3_000 * MS)
    new_leader = w.find_leader()
    assert new_leader is not None
    assert abs(applied(w, nid) - applied(w, new_leader)) <= 3


def test_crashing_the_leader_elects_another() -> None:
    w = started_world()
    old = w.find_leader()
    assert old is not None
    w.crash(old)
    w.env.run(until=3_000 * MS)
    new = w.find_leader()
    assert new is not None and new != old
    raft = w.raft(new)
    assert raft is not None and raft.term > 1


def test_ready_loop_persists_then_fsyncs_then_sends_then_advances(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The etcd loop order in the hosted node: every message of a Ready leaves the machine only
    after that Ready was written (and fdatasynced when must_sync), and advance() comes once per
    Ready. (The host transmits after the whole input, so sends follow the advance.)"""
    log: list[tuple[str, int, int]] = []  # (what, node, ready number)
    readies: dict[int, int] = {}
    real_ready, real_advance = RaftNode.ready, RaftNode.advance
    real_save = RaftLog.save

    def ready(self: Any) -> Ready:
        readies[self.id] = readies.get(self.id, 0) + 1
        rd = real_ready(self)
        log.append(("ready-sync" if rd.must_sync else "ready", self.id, readies[self.id]))
        return rd

    def advance(self: Any, rd: Ready) -> None:
        log.append(("advance", self.id, readies[self.id]))
        real_advance(self, rd)

    monkeypatch.setattr(RaftNode, "ready", ready)
    monkeypatch.setattr(RaftNode, "advance", advance)
    w = World(small_scenario(faults={"enabled": False}, duration_ms=3_000.0), 3)
    node_of = {id(host.fs): nid for nid, host in w.nodes.items()}

    def save(self: Any, **kw: Any) -> None:
        nid = node_of[id(self.fs)]
        log.append(("write", nid, readies.get(nid, 0)))
        real_save(self, **kw)
        if kw["sync"]:
            log.append(("sync", nid, readies.get(nid, 0)))

    monkeypatch.setattr(RaftLog, "save", save)
    real_send = w.net.send

    def send(src: int, dst: int, m: object) -> bool:
        log.append(("send", src, readies[src]))
        return real_send(src, dst, m)

    monkeypatch.setattr(w.net, "send", send)
    for nid in w.node_ids:
        w.start(nid)
    w.env.process(w.client.run())
    w.env.run(until=2_000 * MS)
    assert w.find_leader() is not None
    for nid in w.node_ids:
        by_ready: dict[int, list[str]] = {}
        for what, node, n in log:
            if node == nid:
                by_ready.setdefault(n, []).append(what)
        checked = 0
        for n, steps in by_ready.items():
            if n == 0 or "advance" not in steps:
                continue  # recovery writes, or a Ready still in flight at the end of the run
            first_send = steps.index("send") if "send" in steps else len(steps)
            assert "write" not in steps[first_send:], steps
            if steps[0] == "ready-sync" and "send" in steps:
                assert "sync" in steps[:first_send], steps
                checked += 1
            assert steps.count("advance") == 1
        assert checked > 0, f"node {nid}: no synced Ready with messages was observed"


def test_power_losses_crash_the_real_raft_log_format_and_it_recovers() -> None:
    """Crashes under faults lose and tear appends of each node's real `raft.log` (on its
    SimFileSystem); every restart recovers through RaftLog; at the end each live node's file
    decodes to what its Raft log holds."""
    lost = torn = crashes = compactions = 0
    for seed in (1, 2, 3):
        w = World(small_scenario(), seed)
        result = w.run()
        assert result.outcome == "ok", result.detail
        compactions += result.stats["nodes"]["compactions"]
        for nid in w.node_ids:
            host = w.nodes[nid]
            crashes += host.fs.stats.crashes
            lost += host.fs.stats.bytes_lost
            torn += host.fs.stats.torn_bytes_kept
            raft = w.raft(nid)
            if raft is not None:
                durable = RaftLog(host.fs, "meta").durable()
                assert durable.hard_state.term == raft.term
                last = durable.entries[-1].index if durable.entries else (
                    durable.snapshot.meta.index if durable.snapshot else 0)
                assert last == raft.last_index()
    assert crashes >= 5 and compactions >= 5, (crashes, compactions)
    assert lost > 0 and torn > 0, (lost, torn)
