"""model/checkers/replication.py on hand-made logs: what commits, what may be truncated, what a
new leader must hold."""

from __future__ import annotations

import pytest

from model.checkers.raft import SafetyViolation
from model.checkers.replication import ReplicationChecker
from real.storage.record import Record

K = ("t", 0)


class Log:
    def __init__(self, *payloads: bytes) -> None:
        self.records = [Record(i, 0, None, p) for i, p in enumerate(payloads)]
        self.shard_start = 0

    @property
    def shard_end(self) -> int:
        return len(self.records)

    def read_shard(self, offset: int, _bytes_max: int) -> list[Record]:
        return self.records[offset:]


def test_committed_records_must_reach_every_new_leader_unchanged() -> None:
    c = ReplicationChecker()
    leader = Log(b"a", b"b", b"c")
    c.on_hw(1, K, 1, 0, 2, leader)
    c.on_hw(1, K, 1, 2, 3, leader)
    assert c.stats.committed == 3
    c.on_lead(2, K, 2, (2, 3), Log(b"a", b"b", b"c", b"d"))  # holds it all, and more
    with pytest.raises(SafetyViolation, match="before the committed end"):
        c.on_lead(3, K, 3, (3,), Log(b"a", b"b"))
    with pytest.raises(SafetyViolation, match="divergent committed prefixes"):
        c.on_lead(3, K, 3, (3,), Log(b"a", b"X", b"c"))
    with pytest.raises(SafetyViolation, match="outside the in-sync set"):
        c.on_lead(3, K, 3, (1, 2), Log(b"a", b"b", b"c"))


def test_a_leader_of_a_superseded_epoch_needs_only_what_earlier_epochs_committed() -> None:
    """node3-rf3 seed 65: node 2 applied its epoch-2 election late, after node 3 had led epoch 3
    and committed more. Epoch 2's leader must hold what epochs 1 committed, not what epoch 3
    did (it cannot commit anything: epoch 3's replicas do not follow it); a leader of epoch 4
    must hold all of it."""
    c = ReplicationChecker()
    c.on_hw(1, K, 1, 0, 2, Log(b"a", b"b"))
    c.on_hw(3, K, 3, 2, 4, Log(b"a", b"b", b"c", b"d"))
    c.on_lead(2, K, 2, (2, 3), Log(b"a", b"b"))  # late, superseded: holds epoch 1's commits
    c.on_lead(2, K, 2, (2, 3), Log(b"a", b"b", b"x"))  # a stray tail past them is its own
    with pytest.raises(SafetyViolation, match="before the committed end 2"):
        c.on_lead(2, K, 2, (2, 3), Log(b"a"))
    with pytest.raises(SafetyViolation, match="before the committed end 4"):
        c.on_lead(1, K, 4, (1,), Log(b"a", b"b", b"c"))


def test_a_truncation_may_drop_only_records_that_are_not_the_committed_ones() -> None:
    c = ReplicationChecker()
    c.on_hw(1, K, 1, 0, 2, Log(b"a", b"b"))
    c.on_truncate(2, K, 1, Log(b"a", b"stray", b"x"))  # offset 1 differs: an old epoch's tail
    with pytest.raises(SafetyViolation, match="dropping the committed record at 1"):
        c.on_truncate(3, K, 1, Log(b"a", b"b"))


def test_the_high_watermark_never_moves_back_and_committed_bytes_never_change() -> None:
    c = ReplicationChecker()
    c.on_hw(1, K, 1, 0, 2, Log(b"a", b"b"))
    with pytest.raises(SafetyViolation, match="went back"):
        c.on_hw(1, K, 1, 2, 1, Log(b"a", b"b"))
    c2 = ReplicationChecker()
    c2.on_hw(1, K, 1, 0, 2, Log(b"a", b"b"))
    with pytest.raises(SafetyViolation, match="other bytes"):
        c2.on_hw(2, K, 2, 0, 3, Log(b"a", b"Z", b"c"))
