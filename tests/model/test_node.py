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
    durable_before = victim.log.durable()
    path = victim.log.path
    victim.crash()
    assert victim.raft is None and not victim.inbox and victim.log is None
    assert victim.fs.unsynced_ops(path) == 0  # power loss: what survived is durable
    assert victim.deliver(object()) is False  # a down node refuses arrivals (counted)
    assert victim.stats.dropped_dead == 1
    w.env.run(until=2_000 * MS)
    victim.start()
    restored = victim.log.recovery.durable
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


def test_ready_loop_persists_then_fsyncs_then_sends_then_advances() -> None:
    """The etcd loop order in the model shell: every message of a Ready leaves only after all of
    that Ready's writes, and after the fsync when must_sync; advance() comes once, last."""
    log: list[tuple[str, int, int]] = []  # (what, node, ready number)
    s = small_scenario(faults={"enabled": False}, duration_ms=3_000.0)
    w = World(s, 3)
    readies: dict[int, int] = {}

    def instrument(node: object) -> None:
        nid, disk, raft = node.id, node.log, node.raft  # type: ignore[attr-defined]
        real_ready, real_advance = raft.ready, raft.advance
        real_write, real_sync = disk.save, disk.sync

        def ready() -> object:
            readies[nid] = readies.get(nid, 0) + 1
            rd = real_ready()
            log.append(("ready-sync" if rd.must_sync else "ready", nid, readies[nid]))
            return rd

        def advance(rd: object) -> None:
            log.append(("advance", nid, readies[nid]))
            real_advance(rd)

        raft.ready, raft.advance = ready, advance
        disk.save = lambda **kw: (log.append(("write", nid, readies[nid])), real_write(**kw))[1]
        disk.sync = lambda: (log.append(("sync", nid, readies[nid])), real_sync())[1]

    for nid in w.node_ids:
        w.nodes[nid].start()
        instrument(w.nodes[nid])
    real_send = w.net.send
    w.net.send = lambda src, dst, m: (log.append(("send", src, readies[src])),  # type: ignore
                                      real_send(src, dst, m))[1]
    w.env.process(w.client.run())
    w.env.run(until=2_000 * MS)
    assert w.find_leader() is not None
    for nid in w.node_ids:
        mine = [(what, n) for what, node, n in log if node == nid]
        by_ready: dict[int, list[str]] = {}
        for what, n in mine:
            by_ready.setdefault(n, []).append(what)
        checked = 0
        for steps in by_ready.values():
            if steps[-1] != "advance":
                continue  # a Ready still in flight at the end of the run
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
    decodes to exactly what its log holds."""
    from real.server.raftlog import RaftLog

    lost = torn = crashes = compactions = 0
    for seed in (1, 2, 3):
        w = World(small_scenario(), seed)
        assert w.run().outcome == "ok"
        for nid in w.node_ids:
            node = w.nodes[nid]
            crashes += node.fs.stats.crashes
            lost += node.fs.stats.bytes_lost
            torn += node.fs.stats.torn_bytes_kept
            compactions += node.stats.compactions
            if node.alive:
                assert RaftLog(node.fs, "meta").durable() == node.log.durable()
    assert crashes >= 5 and compactions >= 5, (crashes, compactions)
    assert lost > 0 and torn > 0, (lost, torn)
