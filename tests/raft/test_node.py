"""Unit tests of RaftNode, one feature each (network-level via tests/raft/harness.py)."""

from __future__ import annotations

import random

import pytest

from real.raft import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    ProposalDropped,
    RaftNode,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
)
from real.raft.progress import ProgressState
from tests.raft.harness import Network
from tests.raft.util import cfg, cluster, drain, figure8_setup, lone, sent

# ---------------------------------------------------------------- elections


def test_election_one_leader_and_noop_commits() -> None:
    net = cluster(3)
    net.elect(1)
    leader = net.nodes[1]
    assert leader.term == 2
    assert leader.commit == 2
    assert leader.entries(2, 3) == (Entry(2, 2),)
    for nid in (2, 3):
        assert net.nodes[nid].role is Role.FOLLOWER
        assert net.nodes[nid].leader == 1
        assert net.nodes[nid].commit == 2


def test_randomized_timeout_drawn_from_rng_in_range() -> None:
    seen = set()
    for seed in range(40):
        node = RaftNode(1, cfg(), random.Random(seed), peers=(1, 2, 3))
        due = node.ticks_until_due()
        assert 5 <= due <= 9
        seen.add(due)
        node.tick(due - 1)
        assert node.role is Role.FOLLOWER
        node.tick()
        assert node.role is Role.CANDIDATE
    assert seen == set(range(5, 10))


def test_election_timeout_redrawn_at_each_reset() -> None:
    rng_a, rng_b = random.Random(3), random.Random(3)
    node = RaftNode(1, cfg(), rng_a, peers=(1, 2, 3))
    expected = [rng_b.randint(5, 9) for _ in range(4)]
    dues = [node.ticks_until_due()]
    for _ in range(3):
        node.tick(node.ticks_until_due())  # campaigns: a reset per election
        dues.append(node.ticks_until_due())
    assert dues == expected


def test_single_voter_elects_itself_and_commits() -> None:
    node = lone(peers=(1,))
    node.campaign()
    assert node.role is Role.LEADER
    node.propose(b"a")
    assert node.commit == node.last_index() == 3
    rd = node.ready()
    assert [e.data for e in rd.committed_entries] == [b"", b"a"]


def test_stale_vote_rejected_when_log_behind() -> None:
    net = cluster(3)
    net.elect(1)
    net.partition({3})
    net.nodes[1].propose(b"x")
    net.stabilize()
    net.heal()
    net.nodes[3].campaign()
    net.stabilize()
    assert net.nodes[3].role is not Role.LEADER
    assert net.nodes[1].vote != 3 and net.nodes[2].vote != 3  # deposed 1, but got no votes


# ---------------------------------------------------------------- pre-vote, check-quorum, lease


def test_pre_vote_isolated_node_does_not_bump_term() -> None:
    net = cluster(3, pre_vote=True)
    net.elect(1)
    term = net.nodes[1].term
    net.partition({3})
    for _ in range(10):
        net.nodes[3].tick(9)
        net.stabilize()
    assert net.nodes[3].term == term
    assert net.nodes[3].role is Role.PRE_CANDIDATE
    net.heal()
    net.nodes[1].tick(2)
    net.stabilize()
    assert net.nodes[1].role is Role.LEADER
    assert net.nodes[1].term == term


def test_without_pre_vote_isolated_node_disrupts_on_heal() -> None:
    net = cluster(3)
    net.elect(1)
    term = net.nodes[1].term
    net.partition({3})
    net.nodes[3].tick(9)
    net.stabilize()
    assert net.nodes[3].term == term + 1
    net.heal()
    net.nodes[1].tick(2)
    net.stabilize()
    assert net.nodes[1].role is Role.LEADER  # lower-term messages from 3 are ignored ...
    net.nodes[3].tick(9)
    net.stabilize()
    assert net.nodes[1].term > term  # ... until 3 times out again and deposes the leader


def test_pre_vote_responses_do_not_change_receiver_term() -> None:
    node = lone(peers=(1, 2, 3), pre_vote=True)
    node.step(Message(MsgType.PRE_VOTE, 2, 1, 5, log_term=1, index=1))
    assert node.term == 1
    rd = drain(node)
    resp = sent(rd, MsgType.PRE_VOTE_RESP)
    assert len(resp) == 1
    assert not resp[0].reject and resp[0].term == 5


def test_check_quorum_leader_steps_down_when_isolated() -> None:
    net = cluster(3, check_quorum=True)
    net.elect(1)
    net.partition({1})
    leader = net.nodes[1]
    for _ in range(10):
        leader.tick(1)
        net.stabilize()
        if leader.role is not Role.LEADER:
            break
    assert leader.role is Role.FOLLOWER
    assert leader.leader == NONE


def test_check_quorum_leader_stays_when_connected() -> None:
    net = cluster(3, check_quorum=True)
    net.elect(1)
    for _ in range(30):
        net.nodes[1].tick(1)
        net.stabilize()
    assert net.nodes[1].role is Role.LEADER


def test_lease_follower_ignores_vote_unless_transfer() -> None:
    net = cluster(3, check_quorum=True)
    net.elect(1)
    follower = net.nodes[2]
    term = follower.term
    follower.step(Message(MsgType.VOTE, 3, 2, term + 1, log_term=9, index=9))
    assert follower.term == term
    assert follower.vote == 1
    assert not any(m.type is MsgType.VOTE_RESP for m in follower.ready().messages)
    follower.step(Message(MsgType.VOTE, 3, 2, term + 1, log_term=9, index=9, context=b"transfer"))
    assert follower.term == term + 1
    assert follower.vote == 3


def test_lease_expires_after_election_tick_min() -> None:
    net = cluster(3, check_quorum=True)
    net.elect(1)
    net.process_ready(1)
    net.msgs.clear()
    follower = net.nodes[2]
    term = follower.term
    follower.tick(5)
    follower.step(Message(MsgType.VOTE, 3, 2, term + 1, log_term=9, index=9))
    assert follower.term == term + 1


# ---------------------------------------------------------------- replication


def test_conflicting_logs_are_repaired_with_backtracking() -> None:
    net = cluster(3)
    net.elect(1)
    net.partition({1})
    for i in range(5):
        net.nodes[1].propose(b"stale%d" % i)
    net.stabilize()
    net.nodes[2].campaign()
    net.stabilize()
    assert net.nodes[2].role is Role.LEADER
    for i in range(3):
        net.nodes[2].propose(b"new%d" % i)
    net.stabilize()
    net.heal()
    rejects = []
    for _ in range(3):
        net.nodes[2].tick(2)
        for nid in net.up():
            rejects += [m for rd in net.process_ready(nid) for m in rd.messages if m.reject]
        net.stabilize()
    logs = {nid: net.nodes[nid].entries(1, 100) for nid in (1, 2, 3)}
    assert logs[1] == logs[2] == logs[3]
    assert not any(e.data.startswith(b"stale") for e in logs[1])
    assert net.nodes[1].commit == net.nodes[2].commit
    assert len(rejects) <= 2  # a hint skips the whole stale run


def test_figure8_leader_does_not_commit_old_term_by_counting() -> None:
    net = figure8_setup(cfg())
    assert net.nodes[2].commit == 2
    assert net.nodes[2].role is Role.LEADER


def test_heartbeat_commit_is_capped_at_match() -> None:
    net = cluster(3)
    net.elect(1)
    net.partition({3})
    net.nodes[1].propose(b"a")
    net.stabilize()
    net.heal()
    net.nodes[1].tick(2)
    heartbeats = sent(net.process_ready(1), MsgType.HEARTBEAT)
    by_dst = {m.dst: m.commit for m in heartbeats}
    assert by_dst[2] == 3
    assert by_dst[3] == 2


def test_inflight_limit_pauses_replication() -> None:
    net = cluster(3, max_inflight_msgs=2)
    net.elect(1)
    leader = net.nodes[1]
    appends = []
    for i in range(5):
        leader.propose(b"p%d" % i)
        appends += [m for m in sent(net.process_ready(1), MsgType.APPEND) if m.dst == 2]
    assert len(appends) == 2
    pr = leader.progress(2)
    assert pr is not None and pr.state is ProgressState.REPLICATE and pr.is_paused()
    net.stabilize()
    assert net.nodes[2].last_index() == leader.last_index()


def test_max_size_per_msg_limits_append_but_sends_one_entry() -> None:
    net = cluster(3, max_size_per_msg=1)
    net.elect(1)
    net.partition({3})
    for i in range(4):
        net.nodes[1].propose(b"p%d" % i)
    net.stabilize()
    net.heal()
    net.nodes[1].tick(2)
    sizes = []
    for _ in range(20):
        for nid in net.up():
            sizes += [len(m.entries) for m in sent(net.process_ready(nid), MsgType.APPEND)
                      if m.dst == 3 and m.entries]
        for nid in net.up():
            net.deliver(nid)
    assert sizes and set(sizes) == {1}
    assert net.nodes[3].last_index() == net.nodes[1].last_index()


def test_max_uncommitted_bytes_rejects_proposals() -> None:
    net = cluster(3, max_uncommitted_bytes=100)
    net.elect(1)
    net.partition({1})
    leader = net.nodes[1]
    leader.propose(b"x" * 60)  # the first one always fits
    with pytest.raises(ProposalDropped, match="max_uncommitted_bytes"):
        leader.propose(b"y" * 60)
    net.heal()
    net.stabilize()
    leader.tick(2)
    net.stabilize()
    assert leader.commit == leader.last_index()
    leader.propose(b"y" * 60)


def test_propose_without_leader_is_dropped_and_follower_forwards() -> None:
    net = cluster(3)
    with pytest.raises(ProposalDropped):
        net.nodes[1].propose(b"a")
    net.elect(1)
    net.nodes[2].propose(b"fwd")
    fwd = sent(net.process_ready(2), MsgType.PROPOSE)
    assert len(fwd) == 1
    assert fwd[0].dst == 1 and fwd[0].term == 0
    net.stabilize()
    assert net.applied[3][-1] == b"fwd"


# ---------------------------------------------------------------- snapshots


def test_snapshot_sent_to_lagging_follower_and_installed() -> None:
    net = cluster(3)
    net.elect(1)
    net.partition({3})
    for i in range(5):
        net.nodes[1].propose(b"v%d" % i)
    net.stabilize()
    net.compact(1, 6)
    assert net.nodes[1].first_index() == 7
    net.heal()
    net.nodes[1].propose(b"after")
    snaps = []
    for _ in range(10):
        for nid in net.up():
            for rd in net.process_ready(nid):
                snaps += [m for m in rd.messages if m.type is MsgType.SNAPSHOT]
                if nid == 3 and rd.snapshot is not None:
                    assert rd.must_sync
        for nid in net.up():
            net.deliver(nid)
    net.stabilize()
    assert len(snaps) == 1 and snaps[0].dst == 3
    follower = net.nodes[3]
    assert follower.snapshot is not None and follower.snapshot.meta.index == 6
    assert net.applied[3] == net.applied[1]
    assert follower.conf == net.nodes[1].conf


def test_compact_rejects_beyond_applied() -> None:
    net = cluster(3)
    net.elect(1)
    with pytest.raises(AssertionError):
        net.nodes[1].compact(10, b"")


def test_restart_from_snapshot_and_log() -> None:
    net = cluster(3)
    net.elect(1)
    for i in range(3):
        net.nodes[1].propose(b"v%d" % i)
    net.stabilize()
    net.compact(2, 3)
    net.crash(2)
    net.restart(2)
    node = net.nodes[2]
    assert node.first_index() == 4
    assert node.last_index() == 5
    net.stabilize()
    assert net.applied[2] == [b"v0", b"v1", b"v2"]


def test_restart_after_torn_write_adopts_the_stored_entries_term() -> None:
    """A crash kept a Ready's term-3 entries but lost the HardState(term=3, vote=2) written after
    them. The node must come back in term 3 (no vote: that Ready's vote response was never sent)
    and persist the term before sending anything."""
    conf = ConfState((1, 2, 3))
    snap = Snapshot(SnapshotMeta(1, 1, conf), b"")
    entries = (Entry(2, 2), Entry(3, 3, data=b"x"))
    durable = DurableState(HardState(term=2, vote=1, commit=1), snap, entries)
    node = RaftNode(1, cfg(), random.Random(1), durable)
    assert node.term == 3
    assert node.vote == 0
    assert node.has_ready()
    rd = node.ready()
    assert rd.hard_state == HardState(term=3, vote=0, commit=1)
    assert rd.must_sync
    node.advance(rd)
    node.invariants()


# ---------------------------------------------------------------- membership


def _add_joiner(net: Network, nid: int) -> None:
    net.add_node(nid, ())
    net.process_ready(nid)


def test_add_voter_joiner_catches_up_via_snapshot() -> None:
    net = cluster(3)
    net.elect(1)
    net.nodes[1].propose(b"a")
    net.stabilize()
    _add_joiner(net, 4)
    net.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 4))
    net.stabilize()
    for nid in (1, 2, 3, 4):
        assert net.nodes[nid].conf.voters == (1, 2, 3, 4)
    assert net.applied[4] == [b"a"]
    net.nodes[1].propose(b"b")
    net.stabilize()
    assert net.applied[4] == [b"a", b"b"]


def test_conf_change_one_at_a_time_and_needs_current_term_commit() -> None:
    net = cluster(3)
    net.nodes[1].campaign()
    net.process_ready(1)
    net.deliver(2)
    net.process_ready(2)
    net.deliver(1)
    leader = net.nodes[1]
    assert leader.role is Role.LEADER
    with pytest.raises(ProposalDropped, match="committed"):
        leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    net.stabilize()
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    assert leader.conf.learners == (4,)  # effective on append
    with pytest.raises(ProposalDropped, match="uncommitted"):
        leader.propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 5))
    net.stabilize()
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 5))
    with pytest.raises(ProposalDropped):
        net.nodes[2].propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 6))


def test_remove_leader_steps_down_after_commit() -> None:
    net = cluster(3, pre_vote=True, check_quorum=True)
    net.elect(1)
    leader = net.nodes[1]
    leader.propose_conf_change(ConfChange(ConfChangeType.REMOVE_VOTER, 1))
    assert leader.role is Role.LEADER
    assert leader.conf.voters == (2, 3)
    net.stabilize()
    assert leader.role is Role.FOLLOWER
    for _ in range(40):
        for nid in net.up():
            net.nodes[nid].tick(1)
        net.stabilize()
    new = net.leader()
    assert new is not None and new.id in (2, 3)
    term = new.term
    for _ in range(5):
        leader.tick(9)
        net.stabilize()
    assert new.role is Role.LEADER and new.term == term  # removed node does not disrupt


def test_remove_follower_stops_heartbeats() -> None:
    net = cluster(3)
    net.elect(1)
    net.nodes[1].propose_conf_change(ConfChange(ConfChangeType.REMOVE_VOTER, 3))
    net.stabilize()
    net.nodes[1].tick(2)
    assert all(m.dst != 3 for m in sent(net.process_ready(1)))
    assert net.nodes[1].conf.voters == (1, 2)


def test_conf_change_reverted_on_truncation() -> None:
    net = cluster(3)
    net.elect(1)
    net.partition({1})
    net.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 9))
    net.stabilize()
    assert net.nodes[1].conf.learners == (9,)
    net.nodes[2].campaign()
    net.stabilize()
    net.heal()
    net.nodes[2].propose(b"x")
    net.nodes[2].tick(2)
    net.stabilize()
    assert net.nodes[1].conf.learners == ()
    assert net.nodes[1].role is Role.FOLLOWER


# ---------------------------------------------------------------- read index


def test_read_index_on_leader_needs_heartbeat_quorum() -> None:
    net = cluster(3)
    net.elect(1)
    leader = net.nodes[1]
    leader.read_index(b"r1")
    hbs = sent(net.process_ready(1), MsgType.HEARTBEAT)
    assert {m.context for m in hbs} == {b"r1"}
    assert net.read_states[1] == []
    net.stabilize()
    assert net.read_states[1] == [ReadState(leader.commit, b"r1")]


def test_read_index_forwarded_from_follower() -> None:
    net = cluster(3)
    net.elect(1)
    net.nodes[3].read_index(b"f")
    net.stabilize()
    assert net.read_states[3] == [ReadState(2, b"f")]
    assert net.read_states[1] == []


def test_read_index_single_voter_immediate() -> None:
    node = lone(peers=(1,))
    node.campaign()
    drain(node)
    node.read_index(b"s")
    rd = node.ready()
    assert rd.read_states == (ReadState(2, b"s"),)


def test_read_index_deferred_until_current_term_commit() -> None:
    net = cluster(3)
    net.nodes[1].campaign()
    net.process_ready(1)
    net.deliver(2)
    net.deliver(3)
    net.process_ready(2)
    net.process_ready(3)
    net.deliver(1)
    leader = net.nodes[1]
    assert leader.role is Role.LEADER and leader.commit == 1
    leader.read_index(b"early")
    net.stabilize()
    assert net.read_states[1] == [ReadState(2, b"early")]


def test_read_index_limit_rejects() -> None:
    net = cluster(3, max_pending_reads=2)
    net.elect(1)
    leader = net.nodes[1]
    leader.read_index(b"a")
    leader.read_index(b"b")
    with pytest.raises(ProposalDropped, match="max_pending_reads"):
        leader.read_index(b"c")
    net.stabilize()
    assert [r.context for r in net.read_states[1]] == [b"a", b"b"]
    leader.read_index(b"c")


# ---------------------------------------------------------------- leadership transfer


def test_transfer_leadership_to_caught_up_follower() -> None:
    net = cluster(3, pre_vote=True, check_quorum=True)
    net.elect(1)
    net.nodes[1].transfer_leadership(3)
    with pytest.raises(ProposalDropped, match="transfer"):
        net.nodes[1].propose(b"x")
    net.stabilize()
    assert net.nodes[3].role is Role.LEADER
    assert net.nodes[1].role is Role.FOLLOWER
    assert net.nodes[1].leader == 3


def test_transfer_leadership_catches_target_up_first() -> None:
    net = cluster(3)
    net.elect(1)
    net.partition({3})
    net.nodes[1].propose(b"x")
    net.stabilize()
    net.heal()
    net.nodes[1].transfer_leadership(3)
    net.stabilize()
    assert net.nodes[3].role is Role.LEADER
    assert net.applied[3] == [b"x"]


def test_transfer_leadership_aborts_after_election_tick_min() -> None:
    net = cluster(3)
    net.elect(1)
    net.partition({3})
    leader = net.nodes[1]
    leader.propose(b"x")
    net.stabilize()
    leader.transfer_leadership(3)
    assert leader.lead_transferee == 3
    leader.tick(4)
    assert leader.lead_transferee == 3
    leader.tick(1)
    assert leader.lead_transferee == NONE
    leader.propose(b"y")


# ---------------------------------------------------------------- ticks


def _scripted_run(batched: bool) -> list[object]:
    net = cluster(3, seed=5, pre_vote=True, check_quorum=True)
    trace: list[object] = []
    for step in range(60):
        for nid in net.up():
            n = 1 + (step * nid) % 4
            if batched:
                net.nodes[nid].tick(n)
            else:
                for _ in range(n):
                    net.nodes[nid].tick()
        if step == 30:
            net.partition({1})
        if step == 45:
            net.heal()
        for nid in net.up():
            trace += net.process_ready(nid)
        for nid in net.up():
            net.deliver(nid)
        trace.append(tuple((n.term, n.role, n.ticks_until_due()) for n in net.nodes.values()))
    return trace


def test_tick_n_equals_n_single_ticks() -> None:
    assert _scripted_run(batched=True) == _scripted_run(batched=False)


@pytest.mark.parametrize("role", ["follower", "leader", "learner"])
def test_ticks_until_due_is_quiet_before_due(role: str) -> None:
    for seed in range(5):
        net = cluster(3, seed=seed, check_quorum=True)
        if role == "leader":
            net.elect(1)
        if role == "learner":
            net.elect(2)
            net.nodes[2].propose_conf_change(ConfChange(ConfChangeType.REMOVE_VOTER, 1))
            net.stabilize()
        node = net.nodes[1]
        net.process_ready(1)
        net.msgs.clear()
        for _ in range(6):
            due = node.ticks_until_due()
            assert due >= 1
            before = (node.role, node.term, node.leader)
            node.tick(due - 1)
            assert not node.has_ready()
            assert (node.role, node.term, node.leader) == before
            node.tick(1)
            net.process_ready(1)
            net.msgs.clear()


def test_leader_due_is_heartbeat() -> None:
    net = cluster(3)
    net.elect(1)
    net.process_ready(1)
    node = net.nodes[1]
    assert node.ticks_until_due() == 2
    node.tick(2)
    assert len(sent([node.ready()], MsgType.HEARTBEAT)) == 2


# ---------------------------------------------------------------- persist before send


def test_granted_vote_in_same_ready_as_its_hard_state() -> None:
    node = lone(node_id=2)
    node.step(Message(MsgType.VOTE, 1, 2, 2, log_term=1, index=1))
    rd = node.ready()
    resp = [m for m in rd.messages if m.type is MsgType.VOTE_RESP]
    assert len(resp) == 1 and not resp[0].reject
    assert rd.hard_state is not None
    assert rd.hard_state.vote == 1 and rd.hard_state.term == 2
    assert rd.must_sync


def test_commit_only_ready_does_not_need_sync() -> None:
    net = cluster(3)
    net.elect(1)
    net.nodes[1].propose(b"a")
    net.process_ready(1)
    net.deliver(2)
    net.process_ready(2)
    net.deliver(1)
    rds = net.process_ready(1)
    assert rds[0].hard_state is not None and rds[0].hard_state.commit == 3
    assert not rds[0].entries
    assert not rds[0].must_sync


def test_append_ack_in_same_ready_as_entries() -> None:
    net = cluster(3)
    net.elect(1)
    net.nodes[1].propose(b"a")
    net.process_ready(1)
    net.deliver(2)
    rd = net.nodes[2].ready()
    acks = [m for m in rd.messages if m.type is MsgType.APPEND_RESP]
    assert acks and acks[0].index == 3
    assert rd.entries[-1].index == 3 and rd.must_sync


# ---------------------------------------------------------------- robustness


def test_messages_for_others_or_from_nobody_are_ignored() -> None:
    node = lone()
    node.step(Message(MsgType.VOTE, 2, 3, 9, log_term=9, index=9))
    node.step(Message(MsgType.VOTE, NONE, 1, 9, log_term=9, index=9))
    node.step(Message(MsgType.APPEND, 1, 1, 9))
    node.step(Message(MsgType.APPEND_RESP, 2, 1, 0))
    assert node.term == 1
    assert not node.has_ready()


def test_duplicate_and_reordered_messages_are_safe() -> None:
    net = cluster(3)
    net.elect(1)
    for i in range(3):
        net.nodes[1].propose(b"d%d" % i)
    net.process_ready(1)
    msgs = list(net.msgs)
    for m in reversed(msgs + msgs):
        net.nodes[m.dst].step(m)
    net.msgs.clear()
    net.stabilize()
    net.nodes[1].tick(2)
    net.stabilize()
    assert net.applied[2] == [b"d0", b"d1", b"d2"]


def test_conf_entry_kind_roundtrip() -> None:
    cc = ConfChange(ConfChangeType.ADD_LEARNER, 7)
    assert ConfChange.decode(cc.encode()) == cc
    assert EntryKind.CONF_CHANGE.value == "conf-change"


def test_restart_with_conf_change_entries_in_log() -> None:
    net = cluster(3)
    net.elect(1)
    net.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    net.stabilize()
    net.crash(2)
    node = net.restart(2)
    assert node.conf.learners == (4,)
    assert node.conf.voters == (1, 2, 3)
