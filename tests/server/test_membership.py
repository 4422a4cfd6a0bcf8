"""Meta Raft membership change through `NodeCore.add_member` / `remove_member`: a blank
joiner becomes a learner, catches up (by snapshot when the log was compacted) and is promoted;
a node leaves (unregistered, removed, its address forgotten); the leader asked to remove itself
hands leadership over first; refusals name the leader; a change that cannot finish times out
and is retried. The same deterministic in-process cluster as test_replication.py.
"""

from __future__ import annotations

import pytest

from real.meta import encode_command
from real.raft.types import Role
from real.server import membership
from real.server.membership import ChangeResult
from tests.server.test_replication import Cluster, ok_base


def change(c: Cluster, node: int, kind: str, target: int, addr: str = "",
           limit_ms: int = 5_000) -> ChangeResult:
    got: list[ChangeResult] = []
    if kind == "add":
        c.cores[node].add_member(target, addr or f"sim-node-{target}:7000", got.append)
    else:
        c.cores[node].remove_member(target, got.append)
    c.settle()
    c.run_until(lambda: bool(got), limit_ms)
    return got[0]


def voters(c: Cluster, n: int) -> tuple[int, ...]:
    return c.cores[n].replica.raft.conf.voters


def test_a_blank_node_joins_as_learner_then_voter_and_everyone_can_reach_it() -> None:
    c = Cluster()
    c.create(2, "t")
    leader = c.meta_leader()
    c.start(4, join=True)
    c.advance(50)
    assert voters(c, 4) == () and c.cores[4].replica.raft.role is Role.FOLLOWER, \
        "a blank joiner must not form a cluster of its own"
    result = change(c, leader, "add", 4, "10.0.0.4:7004")
    assert result.ok, result
    c.advance(20)
    for n in (1, 2, 3, 4):
        assert voters(c, n) == (1, 2, 3, 4), n
        assert c.cores[n].replica.sm.members() == {4: "10.0.0.4:7004"}
        assert (4, "10.0.0.4:7004") in c.members[n] or n == 4
    assert dict(c.members[4]) == {1: "", 2: "", 3: ""}, "the joiner reaches the initial members"
    c.run_until(lambda: c.cores[4].registered, 2_000)
    assert c.cores[4].replica.sm.topic("t") is not None, "the joiner has the meta state"
    assert c.cores[4].replica.sm.digest() == c.cores[leader].replica.sm.digest()
    assert change(c, leader, "add", 4).ok, "adding a voter again is a no-op that succeeds"


def test_a_joiner_catches_up_by_snapshot_when_the_log_was_compacted() -> None:
    c = Cluster()
    for n in c.cores:
        c.cores[n].replica.compact_entries = 5
    for i in range(12):
        c.create(1 + i % 3, f"t{i}", partitions=1)
    leader = c.meta_leader()
    assert c.cores[leader].replica.raft.first_index() > 2, "the log was compacted"
    c.start(4, join=True)
    assert change(c, leader, "add", 4).ok
    assert c.cores[4].replica.sm.topic("t11") is not None
    assert c.cores[4].replica.raft.snapshot is not None


def test_four_voters_keep_a_quorum_with_one_original_node_down() -> None:
    c = Cluster()
    c.start(4, join=True)
    assert change(c, c.meta_leader(), "add", 4).ok
    c.run_until(lambda: c.cores[4].registered, 2_000)
    c.create(c.meta_leader(), "t", partitions=1)
    down = next(n for n in (1, 2, 3) if n != c.meta_leader())
    c.crash(down)
    leader = c.shard("t", 0).leader
    c.run_until(lambda: c.shard("t", 0).leader not in (0, down), 5_000)
    leader = c.shard("t", 0).leader
    corr = c.produce(leader, "t", 0, [b"x"])
    c.run_until(lambda: c.pending_result(leader, corr), 5_000)
    assert ok_base(c.pending.pop(corr)["responses"][0]["partition_responses"][0]) == 0


def test_a_follower_leaves_and_is_forgotten() -> None:
    c = Cluster()
    c.start(4, join=True)
    leader = c.meta_leader()
    assert change(c, leader, "add", 4).ok
    c.run_until(lambda: c.cores[4].registered, 2_000)
    result = change(c, leader, "remove", 4)
    assert result.ok, result
    for n in (1, 2, 3):
        assert voters(c, n) == (1, 2, 3)
        assert c.cores[n].replica.sm.members() == {}
        assert c.cores[n].replica.sm.node(4) is None, "the leaving node is unregistered"
        assert all(nid != 4 for nid, _ in c.members[n]), "peers stop dialling it"
    gone = next(n for n in (1, 2, 3) if n != leader)  # an initial member leaves too
    assert change(c, leader, "remove", gone).ok
    assert voters(c, leader) == tuple(sorted({1, 2, 3} - {gone}))
    assert change(c, leader, "remove", gone).ok, "removing again is a no-op that succeeds"


def test_the_leader_hands_over_before_it_is_removed() -> None:
    c = Cluster()
    old = c.meta_leader()
    result = change(c, old, "remove", old)
    assert not result.ok and result.leader not in (0, old), result
    c.run_until(lambda: c.cores[result.leader].replica.raft.role is Role.LEADER, 2_000)
    again = change(c, result.leader, "remove", old)
    assert again.ok, again
    rest = tuple(n for n in (1, 2, 3) if n != old)
    assert all(voters(c, n) == rest for n in rest)
    assert c.cores[old].replica.raft.role is not Role.LEADER
    c.advance(2_000)
    assert c.meta_ok(list(rest)), "the two left elect and keep one leader"


def test_refusals_name_the_leader_and_one_change_runs_at_a_time() -> None:
    c = Cluster()
    leader = c.meta_leader()
    follower = next(n for n in (1, 2, 3) if n != leader)
    got: list[ChangeResult] = []
    c.cores[follower].add_member(4, "x:1", got.append)
    assert got and not got[0].ok and got[0].leader == leader, got
    c.cores[leader].add_member(4, "x:1", got.append)  # node 4 is not running: stays pending
    c.cores[leader].remove_member(2, got.append)
    assert len(got) == 2 and "busy" in got[1].message, got


def test_a_join_that_cannot_catch_up_times_out_harmlessly_and_a_retry_completes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(membership, "CHANGE_DEADLINE_MS", 1_500)
    c = Cluster()
    leader = c.meta_leader()
    result = change(c, leader, "add", 4, limit_ms=2_000)
    assert not result.ok and "timed out" in result.message and "catch-up" in result.message
    assert c.cores[leader].replica.raft.conf.learners == (4,), "left behind as a learner"
    c.create(leader, "t", partitions=1)  # the learner has no vote: meta still commits
    c.start(4, join=True)
    assert change(c, leader, "add", 4).ok
    assert voters(c, leader) == (1, 2, 3, 4)


def test_a_restarted_joiner_keeps_its_membership() -> None:
    c = Cluster()
    c.start(4, join=True)
    assert change(c, c.meta_leader(), "add", 4).ok
    c.advance(50)
    c.crash(4)
    c.start(4, join=True)  # the durable Raft state wins over `join`
    assert voters(c, 4) == (1, 2, 3, 4)
    c.advance(200)
    assert c.cores[4].replica.raft.leader == c.meta_leader()


def test_a_node_holding_the_only_copy_of_a_partition_cannot_leave() -> None:
    c = Cluster()
    c.create(1, "t", partitions=1)  # replication factor 3
    leader = c.meta_leader()
    target = c.shard("t", 0).leader
    # its followers fell out of sync: the in-sync set is the target alone (set through meta,
    # as the leader's replicator would)
    s = c.shard("t", 0)
    got: list = []
    c.cores[leader].propose(encode_command("shard.set_isr", topic="t", shard=0, leader=target,
                                           epoch=s.epoch, version=s.version, isr=[target]),
                            got.append)
    c.settle()
    assert got and got[0].ok, got
    result = change(c, leader, "remove", target)
    assert not result.ok and "only copy of t/0" in result.message, result
    assert voters(c, leader) == (1, 2, 3), "nothing changed"
    assert c.cores[leader].replica.sm.node(target) is not None
