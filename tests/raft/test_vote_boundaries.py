"""The Raft vote's log up-to-date check at its boundaries (Raft §5.4.1; STYLE habit 24).

A voter whose log ends at (term 2, index 3) is asked for its vote by candidates whose last entry
is one step either side of that point: a higher last term wins whatever the length, an equal last
term needs an index at least as high, a lower last term loses whatever the length. The same rule
holds for pre-votes. Dropping the check, or moving any of its comparisons by one (`>` to `>=`,
`>=` to `>`, `or` to `and`), grants or refuses a vote here that it must not.
"""

from __future__ import annotations

import random

import pytest

from real.raft import (
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
from tests.raft.util import cfg, cluster, drain, lone, sent

LAST_TERM, LAST_INDEX = 2, 3


def voter(**kw: object) -> RaftNode:
    """Node 2 of (1,2,3) at term 2, no vote, log: snapshot at 1, entries (2, t2) (3, t2)."""
    ents = (Entry(2, 2, data=b"e2"), Entry(2, 3, data=b"e3"))
    snap = Snapshot(SnapshotMeta(1, 1, ConfState((1, 2, 3))), b"")
    node = RaftNode(2, cfg(**kw), random.Random(1),
                    DurableState(HardState(2, 0, 1), snap, ents))
    drain(node)
    assert (node.last_index(), node.term) == (LAST_INDEX, 2)
    return node


CASES = [
    # (candidate's last log term, last log index, granted?)
    (LAST_TERM + 1, 1, True),  # newer term, shorter log
    (LAST_TERM + 1, LAST_INDEX + 5, True),
    (LAST_TERM, LAST_INDEX + 1, True),  # same term, one longer
    (LAST_TERM, LAST_INDEX, True),  # same term, same length: exactly up to date
    (LAST_TERM, LAST_INDEX - 1, False),  # same term, one shorter
    (LAST_TERM - 1, LAST_INDEX + 5, False),  # older term, longer log
    (LAST_TERM - 1, LAST_INDEX, False),
]


@pytest.mark.parametrize(("log_term", "index", "granted"), CASES)
def test_vote_is_granted_only_to_an_up_to_date_log(log_term: int, index: int,
                                                   granted: bool) -> None:
    node = voter()
    node.step(Message(MsgType.VOTE, 3, 2, 3, log_term=log_term, index=index))
    (resp,) = sent(drain(node), MsgType.VOTE_RESP)
    assert resp.reject is not granted, (log_term, index)
    assert node.vote == (3 if granted else 0)
    assert node.term == 3  # the higher term is adopted either way


@pytest.mark.parametrize(("log_term", "index", "granted"), CASES)
def test_pre_vote_applies_the_same_log_check(log_term: int, index: int, granted: bool) -> None:
    node = voter(pre_vote=True)
    node.step(Message(MsgType.PRE_VOTE, 3, 2, 3, log_term=log_term, index=index))
    (resp,) = sent(drain(node), MsgType.PRE_VOTE_RESP)
    assert resp.reject is not granted, (log_term, index)
    assert (node.term, node.vote) == (2, 0)  # a pre-vote changes neither


def test_a_refused_candidate_cannot_win_and_the_up_to_date_one_can() -> None:
    """Both voters refuse the stale candidate; the one with the longest log then wins."""
    stale = Message(MsgType.VOTE, 3, 2, 3, log_term=LAST_TERM, index=LAST_INDEX - 1)
    node = voter()
    node.step(stale)
    assert sent(drain(node), MsgType.VOTE_RESP)[0].reject
    fresh = Message(MsgType.VOTE, 1, 2, 4, log_term=LAST_TERM, index=LAST_INDEX)
    node.step(fresh)
    (resp,) = sent(drain(node), MsgType.VOTE_RESP)
    assert not resp.reject and node.vote == 1 and node.term == 4


def candidate(voters: int) -> RaftNode:
    node = lone(1, tuple(range(1, voters + 1)))
    node.campaign()
    drain(node)
    assert node.role is Role.CANDIDATE
    return node


def answer(node: RaftNode, src: int, granted: bool) -> None:
    node.step(Message(MsgType.VOTE_RESP, src, 1, node.term, reject=not granted))
    drain(node)


def test_a_candidate_of_five_survives_one_and_two_rejections_and_wins_with_three() -> None:
    node = candidate(5)
    answer(node, 2, False)
    answer(node, 3, False)
    assert node.role is Role.CANDIDATE, "lost before a majority had refused"
    answer(node, 4, True)
    assert node.role is Role.CANDIDATE
    answer(node, 5, True)
    assert node.role is Role.LEADER


def test_a_candidate_steps_down_exactly_when_a_majority_refuses() -> None:
    node = candidate(3)
    answer(node, 2, False)
    assert node.role is Role.CANDIDATE
    answer(node, 3, False)
    assert node.role is Role.FOLLOWER, "still campaigning after a majority refused"


def test_the_lease_ends_at_election_tick_min_and_stays_ended() -> None:
    """check_quorum: a follower ignores a disruptive VOTE only while it heard from its leader
    less than election_tick_min ticks ago; one tick later it considers it."""
    net = cluster(3, check_quorum=True, election_tick_max=40)
    net.elect(1)
    net.process_ready(1)
    net.msgs.clear()
    follower = net.nodes[2]
    term = follower.term
    follower.tick(6)  # election_tick_min + 1
    assert follower.role is Role.FOLLOWER and follower.term == term  # its own timeout is later
    follower.step(Message(MsgType.VOTE, 3, 2, term + 1, log_term=9, index=9))
    assert follower.term == term + 1, "a vote request ignored after the lease ended"
    assert follower.vote == 3


def test_a_deposed_leader_starts_a_fresh_election_timer() -> None:
    """A leader that sees a higher term becomes a follower with a whole timeout ahead of it, even
    when it refuses the vote (a granted vote would restart the timer anyway)."""
    net = cluster(3)
    net.elect(1)
    leader = net.nodes[1]
    leader.tick(4)  # elapsed 4 of election_tick_min 5
    leader.step(Message(MsgType.VOTE, 3, 1, leader.term + 1, log_term=0, index=0))  # stale log
    (resp,) = sent(drain(leader), MsgType.VOTE_RESP)
    assert resp.reject and leader.role is Role.FOLLOWER
    assert leader.ticks_until_due() >= 5, "the deposed leader kept its old election timer"


def test_a_pre_vote_at_the_voters_own_term_does_not_override_its_vote() -> None:
    """A pre-vote is granted past a vote already given only for a higher term than the voter's."""
    node = voter(pre_vote=True)
    node.step(Message(MsgType.VOTE, 1, 2, 2, log_term=LAST_TERM, index=LAST_INDEX))
    assert not sent(drain(node), MsgType.VOTE_RESP)[0].reject and node.vote == 1
    node.step(Message(MsgType.PRE_VOTE, 3, 2, 2, log_term=LAST_TERM, index=LAST_INDEX))
    (resp,) = sent(drain(node), MsgType.PRE_VOTE_RESP)
    assert resp.reject, "pre-vote granted at the voter's term although it voted for 1"
    node.step(Message(MsgType.PRE_VOTE, 3, 2, 3, log_term=LAST_TERM, index=LAST_INDEX))
    (resp,) = sent(drain(node), MsgType.PRE_VOTE_RESP)
    assert not resp.reject and (node.term, node.vote) == (2, 1)
