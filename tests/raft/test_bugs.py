"""Each planted Bug is reachable: a deterministic interaction where it deviates from the fix."""

from __future__ import annotations

import random

import pytest

from real.raft import (
    Bug,
    ConfState,
    DurableState,
    Entry,
    HardState,
    Message,
    MsgType,
    RaftNode,
    Role,
    Snapshot,
    SnapshotMeta,
)
from tests.raft.harness import Network, with_bugs
from tests.raft.util import cfg, drain, figure8_setup, sent


def _follower_with_log(bugs: frozenset[Bug], terms: list[int], term: int) -> RaftNode:
    """Node 2 of (1,2,3) whose log after the bootstrap snapshot has entries of `terms`."""
    ents = tuple(Entry(t, i + 2, data=b"e%d" % (i + 2)) for i, t in enumerate(terms))
    snap = Snapshot(SnapshotMeta(1, 1, ConfState((1, 2, 3))), b"")
    durable = DurableState(HardState(term, 0, 1), snap, ents)
    node = RaftNode(2, cfg(bugs=bugs), random.Random(1), durable)
    drain(node)
    return node


@pytest.mark.parametrize("buggy", [False, True])
def test_vote_without_log_check(buggy: bool) -> None:
    bugs = frozenset({Bug.VOTE_WITHOUT_LOG_CHECK}) if buggy else frozenset()
    node = _follower_with_log(bugs, [2, 2], term=2)
    node.step(Message(MsgType.VOTE, 3, 2, 3, log_term=1, index=1))
    resp = sent(drain(node), MsgType.VOTE_RESP)
    assert len(resp) == 1
    assert resp[0].reject is not buggy
    assert node.vote == (3 if buggy else 0)


@pytest.mark.parametrize("buggy", [False, True])
def test_commit_old_term_by_count(buggy: bool) -> None:
    bugs = frozenset({Bug.COMMIT_OLD_TERM_BY_COUNT}) if buggy else frozenset()
    net = figure8_setup(cfg(bugs=bugs))
    assert net.nodes[2].commit == (3 if buggy else 2)


@pytest.mark.parametrize("buggy", [False, True])
def test_vote_not_persisted_allows_double_vote_after_restart(buggy: bool) -> None:
    bugs = frozenset({Bug.VOTE_NOT_PERSISTED}) if buggy else frozenset()
    net = Network(cfg(bugs=bugs), seed=0)
    for i in (1, 2, 3):
        net.add_node(i, (1, 2, 3))
    net.stabilize()
    voter = net.nodes[2]
    voter.step(Message(MsgType.VOTE, 1, 2, 2, log_term=1, index=1))
    rds = net.process_ready(2)
    assert sent(rds, MsgType.VOTE_RESP)[0].reject is False
    assert rds[0].hard_state is not None
    assert rds[0].hard_state.vote == (0 if buggy else 1)
    net.crash(2)
    voter = net.restart(2)
    voter.step(Message(MsgType.VOTE, 3, 2, 2, log_term=1, index=1))
    resp = sent(net.process_ready(2), MsgType.VOTE_RESP)
    assert resp[0].reject is not buggy  # buggy: two votes in term 2


@pytest.mark.parametrize("buggy", [False, True])
def test_accept_stale_term_append(buggy: bool) -> None:
    bugs = frozenset({Bug.ACCEPT_STALE_TERM_APPEND}) if buggy else frozenset()
    node = _follower_with_log(bugs, [2], term=5)
    node.step(Message(MsgType.APPEND, 1, 2, 3, log_term=2, index=2,
                      entries=(Entry(3, 3, data=b"stale"),)))
    assert node.last_index() == (3 if buggy else 2)
    resp = sent(drain(node), MsgType.APPEND_RESP)
    assert all(m.term == 5 for m in resp)
    assert node.term == 5


@pytest.mark.parametrize("buggy", [False, True])
def test_no_truncate_on_conflict(buggy: bool) -> None:
    bugs = frozenset({Bug.NO_TRUNCATE_ON_CONFLICT}) if buggy else frozenset()
    node = _follower_with_log(bugs, [2, 2, 2], term=3)
    node.step(Message(MsgType.APPEND, 1, 2, 3, log_term=2, index=2,
                      entries=(Entry(3, 3, data=b"new"),)))
    assert node.last_index() == (4 if buggy else 3)
    assert node.term_at(3) == 3
    if buggy:
        assert node.term_at(4) == 2  # stale suffix survives after a newer entry


@pytest.mark.parametrize("buggy", [False, True])
def test_commit_beyond_match(buggy: bool) -> None:
    bugs = frozenset({Bug.COMMIT_BEYOND_MATCH}) if buggy else frozenset()
    node = _follower_with_log(bugs, [2, 2], term=3)
    # Leader of term 3 probes at (2, 2), its commit is 3 (its own entry 3, not ours).
    node.step(Message(MsgType.APPEND, 1, 2, 3, log_term=2, index=2, commit=3))
    assert node.commit == (3 if buggy else 2)


def test_bugs_off_by_default() -> None:
    assert cfg().bugs == frozenset()
    assert with_bugs(cfg(), Bug.VOTE_NOT_PERSISTED).bugs == {Bug.VOTE_NOT_PERSISTED}
    assert Role.LEADER.value == "leader"
