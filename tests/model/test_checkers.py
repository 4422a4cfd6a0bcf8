"""Each checker fed a synthetic history: quiet on a good one, loud on its violation."""

from __future__ import annotations

import pytest

from model.checkers.raft import Checkers, SafetyViolation
from real.raft.types import ConfState, Entry, Role, Snapshot, SnapshotMeta


def e(index: int, term: int, data: bytes = b"") -> Entry:
    return Entry(term, index, data=data or f"d{index}t{term}".encode())


def test_good_history_passes() -> None:
    c = Checkers()
    log = (e(1, 1), e(2, 1), e(3, 2))
    c.on_role(1, 1, Role.LEADER)
    for n in (1, 2, 3):
        c.on_entries(n, log)
    for n in (1, 2):
        for entry in log[:2]:
            c.on_apply(n, entry, 1)
    c.on_role(2, 2, Role.LEADER)
    c.on_new_leader(2, 2)
    c.on_role(2, 2, Role.LEADER)  # the same leader reported again is fine
    assert c.sm.max_index == 2
    assert c.election.leaders == {1: 1, 2: 2}


def test_election_safety_two_leaders_in_a_term() -> None:
    c = Checkers()
    c.on_role(1, 4, Role.LEADER)
    c.on_role(2, 4, Role.FOLLOWER)
    with pytest.raises(SafetyViolation, match="nodes 1 and 2 both leader in term 4"):
        c.on_role(2, 4, Role.LEADER)


def test_log_matching_same_index_term_different_data() -> None:
    c = Checkers()
    c.on_entries(1, (e(1, 1), e(2, 1, b"x")))
    with pytest.raises(SafetyViolation, match="log-matching.*index 2 term 1"):
        c.on_entries(2, (e(1, 1), e(2, 1, b"y")))


def test_log_matching_same_entry_different_prefix() -> None:
    c = Checkers()
    c.on_entries(1, (e(1, 1, b"a"), e(2, 2, b"z")))
    with pytest.raises(SafetyViolation, match="log-matching"):
        c.on_entries(2, (e(1, 1, b"b"), e(2, 2, b"z")))


def test_log_matching_allows_overwriting_an_uncommitted_suffix() -> None:
    c = Checkers()
    c.on_entries(1, (e(1, 1), e(2, 1), e(3, 1)))
    c.on_entries(1, (e(2, 2), e(3, 2)))  # truncates 2..3 of term 1
    c.on_entries(2, (e(1, 1), e(2, 2)))
    assert c.logs.chain(1).last_index() == 3
    assert c.logs.chain(1).terms == [1, 2, 2]


def test_log_matching_gap_is_caught() -> None:
    c = Checkers()
    c.on_entries(1, (e(1, 1),))
    with pytest.raises(SafetyViolation, match="gap"):
        c.on_entries(1, (e(3, 1),))


def test_log_matching_across_restart_and_snapshot() -> None:
    c = Checkers()
    log = tuple(e(i, 1) for i in range(1, 6))
    c.on_entries(1, log)
    snap = Snapshot(SnapshotMeta(3, 1, ConfState((1, 2))), b"")
    c.on_snapshot(1, snap, keep_suffix=True)
    c.on_restart(2, snap, log[3:])  # node 2 restarts from the same snapshot + entries
    assert c.logs.chain(2).chain_at(5) == c.logs.chain(1).chain_at(5)
    c.on_entries(2, (e(6, 1, b"other"),))
    with pytest.raises(SafetyViolation, match="log-matching"):
        c.on_entries(1, (e(6, 1, b"mine"),))


def test_state_machine_safety_different_entries_at_one_index() -> None:
    c = Checkers()
    c.on_apply(1, e(7, 3, b"a"), 9)
    c.on_apply(2, e(7, 3, b"a"), 9)
    with pytest.raises(SafetyViolation, match="state-machine-safety.*index 7"):
        c.on_apply(3, e(7, 4, b"b"), 9)


def test_leader_completeness_short_log() -> None:
    c = Checkers()
    log = (e(1, 1), e(2, 1), e(3, 1))
    c.on_entries(1, log)
    c.on_entries(2, log[:1])
    for entry in log:
        c.on_apply(1, entry, 1)
    c.on_role(2, 2, Role.LEADER)
    with pytest.raises(SafetyViolation, match="leader-completeness.*last index 1 < committed"):
        c.on_new_leader(2, 2)


def test_leader_completeness_wrong_entry_at_committed_index() -> None:
    c = Checkers()
    c.on_entries(1, (e(1, 1), e(2, 1)))
    c.on_apply(1, e(1, 1), 1)
    c.on_apply(1, e(2, 1), 1)
    c.on_entries(3, (e(1, 1), e(2, 2)))  # same length, but term 2 at the committed index
    with pytest.raises(SafetyViolation, match="without the entry committed at index 2"):
        c.on_new_leader(3, 3)


def test_leader_completeness_ignores_commits_of_later_terms() -> None:
    # Node 3 wins term 5 late (its vote responses were delayed) after the term-6 leader committed
    # index 3; Raft only promises entries committed in terms < 5. Regression: seed 357 of
    # raft-election was once flagged for this.
    c = Checkers()
    c.on_entries(1, (e(1, 1), e(2, 1), e(3, 6)))
    c.on_apply(1, e(1, 1), 2)
    c.on_apply(1, e(2, 1), 2)
    c.on_apply(1, e(3, 6), 6)
    c.on_entries(3, (e(1, 1), e(2, 1)))
    c.on_new_leader(3, 5)
    with pytest.raises(SafetyViolation, match="leader-completeness"):
        c.on_new_leader(3, 7)
