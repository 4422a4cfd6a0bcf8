"""PartitionLog replication over the memory engine and the file journal (real files in tmp_path):
the epoch cache and `epoch_end`, followers copying a leader's `read_shard` pages with
`append_replica`, divergent tails cut by `truncate_shard` (KIP-101 / KIP-279 reconciliation),
idempotent-producer state carried to a follower that becomes leader, and a seeded randomized run
of appends, elections, tail losses and reopens across three replicas."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from real.kafka import errors
from real.kafka.log import NO_EPOCH, AppendResult, CorruptPartition, PartitionLog
from real.kafka.records import HEADER, KRecord, build_batch, split_batches, with_base_offset
from real.node.osfs import OsFileSystem
from real.storage import MemoryEngine, Record
from real.storage.errors import OffsetOutOfRange
from real.storage.journal import JournalConfig, JournalEngine
from real.storage.port import ShardEngine

# ------------------------------------------------------------------------------------ helpers


class Replicas:
    """Opens one shard engine per replica name (file: a journal under tmp_path/<name>); with
    `tail` > 0 every log keeps a tail cache of that many bytes (`PartitionLog.keep_tail`)."""

    def __init__(self, kind: str, root: Path, tail: int = 0) -> None:
        self.kind, self.root, self.tail = kind, root, tail

    def open(self, name: str) -> ShardEngine:
        if self.kind == "memory":
            return MemoryEngine()
        (self.root / name).mkdir(exist_ok=True)
        return JournalEngine(OsFileSystem(str(self.root / name)), "p0", lambda: 0,
                             JournalConfig())

    def log(self, name: str, leader_epoch: int = 0) -> PartitionLog:
        log = PartitionLog(self.open(name), leader_epoch=leader_epoch)
        log.keep_tail(self.tail)
        return log


@pytest.fixture(params=["memory", "file"])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Replicas:
    return Replicas(request.param, tmp_path)


def reopen(log: PartitionLog) -> PartitionLog:
    """A fresh PartitionLog over the same engine (closed and reopened), same leader epoch."""
    engine = log._engine
    log.close()
    return PartitionLog(engine.reopen(), leader_epoch=log.leader_epoch)  # type: ignore[attr-defined]


def checked_reopen(log: PartitionLog) -> PartitionLog:
    """`reopen`, asserting the fresh log rebuilt the same state (the old one is closed); the
    tail cache setting carries over (the cache itself starts empty, as after a restart)."""
    before = snapshot(log)
    again = reopen(log)
    again.keep_tail(log.tail_bytes_max)
    again.invariants()
    assert snapshot(again) == before
    return again


def recs(n: int, tag: int = 0) -> list[KRecord]:
    return [KRecord(i, 1000 + i, b"k%d" % tag, bytes([tag % 256]) * 10) for i in range(n)]


def produce(log: PartitionLog, batch: bytes) -> AppendResult:
    result = log.append(batch, split_batches(batch), 0)
    log.invariants()
    return result


def plain(log: PartitionLog, n: int, tag: int = 0) -> AppendResult:
    result = produce(log, build_batch(recs(n, tag)))
    assert result.error_code == errors.NONE, result
    return result


def idem(pid: int, epoch: int, seq: int, n: int = 2) -> bytes:
    return build_batch(recs(n, tag=seq), producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def stored(log: PartitionLog) -> list[Record]:
    """Every stored record, paged through `read_shard`."""
    out: list[Record] = []
    offset = log.shard_start
    while True:
        page = log.read_shard(offset, 300)
        if not page:
            return out
        assert [r.offset for r in page] == list(range(offset, offset + len(page)))
        out += page
        offset += len(page)


def batch_epochs(log: PartitionLog) -> list[int]:
    """The partition leader epoch in each stored batch header."""
    return [HEADER.unpack_from(rec.payload)[2] for rec in stored(log)]


def snapshot(log: PartitionLog) -> tuple[object, ...]:
    """Everything a reopen must reproduce."""
    return (log.state(), log.epoch_runs(), log.shard_start, log.shard_end, log.log_start_offset,
            log.last_epoch())


def reconcile(leader: PartitionLog, follower: PartitionLog) -> int:
    """KIP-101/KIP-279: cuts the follower's divergent tail; returns the rounds it took.

    The follower asks for its last epoch's end on the leader; the leader's answer (e, end) caps
    the follower at min(end, the follower's own end of e), until the follower's end is that point.
    """
    for rounds in range(1, 100):
        epoch, end = leader.epoch_end(follower.last_epoch())
        point = end if epoch == NO_EPOCH else min(end, follower.epoch_end(epoch)[1])
        point = max(follower.shard_start, min(point, follower.shard_end))
        if point == follower.shard_end:
            return rounds
        follower.truncate_shard(point)
        follower.invariants()
    raise AssertionError("reconciliation did not converge")


def pull(leader: PartitionLog, follower: PartitionLog, bytes_max: int = 1 << 20,
         pages: int | None = None) -> None:
    """The follower copies `pages` (None: all) leader pages after reconciling."""
    reconcile(leader, follower)
    assert_prefix(follower, leader)
    while pages is None or pages > 0:
        page = leader.read_shard(follower.shard_end, bytes_max)
        if not page:
            break
        assert follower.append_replica(page) == page[-1].offset + 1 == follower.shard_end
        follower.invariants()
        pages = None if pages is None else pages - 1
    assert_prefix(follower, leader)


def assert_prefix(follower: PartitionLog, leader: PartitionLog) -> None:
    mine, theirs = stored(follower), stored(leader)
    assert mine == theirs[: len(mine)]
    assert follower.log_end_offset == leader.kafka_offset(follower.shard_end)


def assert_same(follower: PartitionLog, leader: PartitionLog) -> None:
    assert stored(follower) == stored(leader)
    assert follower.state() == leader.state()
    assert follower.epoch_runs() == leader.epoch_runs()
    assert follower.last_epoch() == leader.last_epoch()
    high = leader.log_end_offset
    assert follower.fetch(0, 1 << 20, high) == leader.fetch(0, 1 << 20, high)


def leader_1123(log: PartitionLog) -> PartitionLog:
    """Appends four batches (2, 3, 1, 4 records) at leader epochs 1, 1, 2, 3."""
    for epoch, n in ((1, 2), (1, 3), (2, 1), (3, 4)):
        log.leader_epoch = epoch
        plain(log, n, tag=n)
    assert batch_epochs(log) == [1, 1, 2, 3]
    assert log.epoch_runs() == [(1, 0), (2, 2), (3, 3)]
    return log


# ---------------------------------------------------------------------------------- copying


def test_a_follower_copies_the_leader_byte_for_byte(replicas: Replicas) -> None:
    leader = leader_1123(replicas.log("leader"))
    leader.leader_epoch = 4
    assert produce(leader, idem(7, 0, 0)).base_offset == 10  # an idempotent batch at epoch 4
    follower = replicas.log("follower")
    assert (follower.last_epoch(), follower.epoch_runs()) == (NO_EPOCH, [])
    pull(leader, follower, bytes_max=0)  # one record per page
    assert_same(follower, leader)
    assert batch_epochs(follower) == [1, 1, 2, 3, 4]
    assert (follower.log_start_offset, follower.log_end_offset, follower.shard_end) == (0, 12, 5)
    assert follower.leader_epoch == 0  # replicated batches keep the leader's epochs
    assert_same(checked_reopen(follower), leader)


def test_read_shard_pages_and_bounds(replicas: Replicas) -> None:
    leader = leader_1123(replicas.log("leader"))
    everything = leader.read_shard(0, 1 << 20)
    assert [r.offset for r in everything] == [0, 1, 2, 3]
    assert leader.read_shard(1, 0) == everything[1:2]  # at least one record
    first_two = everything[0].size() + everything[1].size()
    assert leader.read_shard(0, first_two) == everything[:2]
    assert leader.read_shard(0, first_two - 1) == everything[:1]
    assert leader.read_shard(4, 1 << 20) == []  # at the shard end
    for outside in (-1, 5):
        with pytest.raises(OffsetOutOfRange, match=f"read_shard: offset {outside} is out"):
            leader.read_shard(outside, 1 << 20)
    leader.delete_before(5)  # drops shard offsets 0 and 1
    assert leader.shard_start == 2
    with pytest.raises(OffsetOutOfRange):
        leader.read_shard(1, 1 << 20)
    assert leader.read_shard(2, 1 << 20) == everything[2:]


# ----------------------------------------------------------------------------------- epochs


def test_epoch_end_before_inside_and_after_the_stored_epochs(replicas: Replicas) -> None:
    log = replicas.log("leader")
    assert (log.last_epoch(), log.epoch_end(0), log.epoch_end(5)) == (NO_EPOCH, (-1, 0), (-1, 0))
    leader_1123(log)
    assert log.last_epoch() == 3
    assert log.epoch_end(0) == (NO_EPOCH, 0)  # before the first epoch
    assert log.epoch_end(1) == (1, 2)
    assert log.epoch_end(2) == (2, 3)
    assert log.epoch_end(3) == (3, 4)  # the latest ends at the shard end
    log.leader_epoch = 6  # a new leader's epoch, above every stored batch's
    assert log.epoch_end(log.leader_epoch) == (3, 4)
    assert log.epoch_end(5) == (3, 4)
    assert log.last_epoch() == 3
    plain(log, 1)
    assert log.epoch_runs() == [(1, 0), (2, 2), (3, 3), (6, 4)]
    assert log.epoch_end(4) == (3, 4)  # epochs 4 and 5 had no batches: 3 runs until 6 starts
    assert (log.epoch_end(6), log.last_epoch()) == ((6, 5), 6)
    log = checked_reopen(log)


def test_retention_trims_the_first_epoch_run(replicas: Replicas) -> None:
    log = leader_1123(replicas.log("leader"))
    assert log.delete_before(2) == 2  # shard offset 0 goes: epoch 1 now starts at shard 1
    assert log.epoch_runs() == [(1, 1), (2, 2), (3, 3)]
    assert log.epoch_end(0) == (NO_EPOCH, 1)
    assert log.delete_before(5) == 5  # epoch 1 is gone
    assert log.epoch_runs() == [(2, 2), (3, 3)]
    assert log.epoch_end(1) == (NO_EPOCH, 2)
    assert log.delete_before(100) == 6  # the last batch stays
    assert log.epoch_runs() == [(3, 3)]
    log.invariants()
    checked_reopen(log)


def test_legacy_epochs_and_a_leader_epoch_set_backwards(replicas: Replicas) -> None:
    log = replicas.log("leader", leader_epoch=-1)  # a producer's -1, stored as is
    plain(log, 1)
    log.leader_epoch = 0
    plain(log, 1)
    log.leader_epoch = 4
    plain(log, 1)
    log.leader_epoch = 2  # backwards: the batch says 2, the cache keeps epoch 4 running
    plain(log, 1)
    assert batch_epochs(log) == [-1, 0, 4, 2]
    assert log.epoch_runs() == [(-1, 0), (0, 1), (4, 2)]
    assert (log.epoch_end(-1), log.epoch_end(3), log.epoch_end(-2)) == ((-1, 1), (0, 2), (-1, 0))
    log = checked_reopen(log)


# ------------------------------------------------------------------------------- divergence


def test_a_divergent_follower_is_truncated_then_catches_up(replicas: Replicas) -> None:
    leader = replicas.log("leader", leader_epoch=1)
    plain(leader, 2, tag=1)
    plain(leader, 3, tag=2)
    follower = replicas.log("follower")
    pull(leader, follower)
    # the follower led epoch 2 (the leader never had it) and wrote two batches nobody copied
    follower.leader_epoch = 2
    plain(follower, 1, tag=9)
    assert produce(follower, idem(9, 0, 0)).error_code == errors.NONE
    assert sorted(follower.state()[2]) == [9]
    # meanwhile the leader led epoch 3
    leader.leader_epoch = 3
    plain(leader, 4, tag=3)
    assert produce(leader, idem(7, 0, 0)).error_code == errors.NONE
    assert follower.last_epoch() == 2 and leader.epoch_end(2) == (1, 2)
    assert follower.shard_end == 4 and follower.log_end_offset == 8
    assert reconcile(leader, follower) == 2  # truncate to 2, then epoch 1 matches
    assert (follower.shard_end, follower.log_end_offset, follower.last_epoch()) == (2, 5, 1)
    assert follower.state()[2] == {}  # producer 9's batch went with the tail
    follower = checked_reopen(follower)
    pull(leader, follower, bytes_max=0)
    assert_same(follower, leader)
    assert batch_epochs(follower) == [1, 1, 3, 3]


def test_truncate_shard_matches_a_reopened_log(replicas: Replicas) -> None:
    log = replicas.log("leader", leader_epoch=1)
    assert produce(log, idem(7, 0, 0)).error_code == errors.NONE  # shard 0
    plain(log, 2)  # shard 1
    log.leader_epoch = 2
    assert produce(log, idem(7, 0, 2)).error_code == errors.NONE  # shard 2
    assert produce(log, idem(8, 0, 5)).error_code == errors.NONE  # shard 3
    log.leader_epoch = 3
    plain(log, 1)  # shard 4
    for bad in (-1, 6, 2.0):
        with pytest.raises(ValueError, match="truncate_shard: offset"):
            log.truncate_shard(bad)  # type: ignore[arg-type]
    log.truncate_shard(5)  # at the end: nothing changes
    assert log.shard_end == 5
    log.truncate_shard(3)
    assert (log.shard_end, log.log_end_offset, log.epoch_runs()) == (3, 6, [(1, 0), (2, 2)])
    assert sorted(log.state()[2]) == [7] and log.leader_epoch == 3
    log = checked_reopen(log)
    assert (log.shard_end, log.log_end_offset, log.epoch_runs()) == (3, 6, [(1, 0), (2, 2)])
    assert produce(log, idem(7, 0, 2)).duplicate  # the retry is still recognised
    assert produce(log, idem(7, 0, 4)).base_offset == 6  # stored at epoch 3
    assert log.epoch_runs() == [(1, 0), (2, 2), (3, 3)]
    log.truncate_shard(1)
    assert (log.shard_end, log.log_end_offset, log.last_epoch()) == (1, 2, 1)
    assert log.state()[2][7].batches[-1].last_seq == 1
    log = checked_reopen(log)
    log.truncate_shard(0)  # everything: a fresh log over an empty shard
    assert (log.shard_end, log.log_end_offset, log.epoch_runs(), log.state()[2]) == (0, 0, [], {})
    assert (log.last_epoch(), log.epoch_end(3)) == (NO_EPOCH, (NO_EPOCH, 0))
    log.invariants()
    log = checked_reopen(log)


def test_truncate_shard_after_retention(replicas: Replicas) -> None:
    log = leader_1123(replicas.log("leader"))
    log.delete_before(5)  # shard start 2
    with pytest.raises(ValueError, match=r"outside \[2, 4\]"):
        log.truncate_shard(1)
    log.truncate_shard(3)
    assert (log.shard_start, log.log_start_offset, log.log_end_offset) == (2, 5, 6)
    assert log.epoch_runs() == [(2, 2)]
    log = checked_reopen(log)


# ------------------------------------------------------------------------------ idempotence


def test_a_follower_that_becomes_leader_recognises_a_retry(replicas: Replicas) -> None:
    leader = replicas.log("leader", leader_epoch=1)
    assert produce(leader, idem(7, 0, 0)).base_offset == 0
    plain(leader, 3)
    assert produce(leader, idem(7, 0, 2)).base_offset == 5  # its ack is lost; the producer retries
    follower = replicas.log("follower")
    pull(leader, follower)
    assert follower.state() == leader.state()
    # the follower is reopened as the new leader of epoch 2
    new = checked_reopen(follower)
    new.leader_epoch = 2
    assert new.epoch_end(2) == (1, 3)
    retry = produce(new, idem(7, 0, 2))
    assert (retry.error_code, retry.base_offset, retry.duplicate) == (errors.NONE, 5, True)
    assert retry.shard_end == 3 and new.shard_end == 3  # nothing stored
    assert produce(new, idem(7, 0, 3)).error_code == errors.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert produce(new, idem(7, 0, 4)).base_offset == 7
    assert produce(new, idem(7, 1, 0)).base_offset == 9  # an epoch bump
    assert new.epoch_runs() == [(1, 0), (2, 3)]
    # and the old leader, now a follower, takes the new batches
    pull(new, leader)
    assert_same(leader, new)
    assert produce(leader, idem(7, 0, 6)).error_code == errors.INVALID_PRODUCER_EPOCH


# --------------------------------------------------------------------------------- refusals


def test_append_replica_refuses_and_stores_nothing(replicas: Replicas) -> None:
    leader = leader_1123(replicas.log("leader"))
    follower = replicas.log("follower")
    pull(leader, follower, bytes_max=0, pages=1)
    page = leader.read_shard(0, 1 << 20)
    assert follower.shard_end == 1 and follower.append_replica([]) == 1
    good, after = page[1], page[2]
    wrong_base = with_base_offset(good.payload, 3, 1)  # the batch at shard 1 starts at 2
    before = (snapshot(follower), stored(follower))
    cases: list[tuple[list[Record], str]] = [
        (page[2:3], "replica record 0: shard offset 2, expected 1"),  # a gap
        ([good, page[3]], "replica record 1: shard offset 3, expected 2"),
        (page[0:1], "replica record 0: shard offset 0, expected 1"),  # already stored
        ([Record(1, 5, None, wrong_base)], "shard offset 1: batch base offset 3, expected 2"),
        ([good, Record(2, 5, None, b"not a batch")],
         "shard offset 2: payload is not a magic-2 batch"),
        ([good, Record(2, 5, None, after.payload[:-1])], "shard offset 2: batch_length"),
        ([good, Record(2, 5, None, with_base_offset(after.payload, 4, 2))],
         "shard offset 2: batch base offset 4, expected 5"),
    ]
    for records, message in cases:
        with pytest.raises(CorruptPartition, match=message):
            follower.append_replica(records)
        assert (snapshot(follower), stored(follower)) == before
        follower.invariants()
    assert follower.append_replica(page[1:]) == 4
    assert_same(follower, leader)


def engine_pages(log: PartitionLog) -> dict[tuple[int, int], list[Record]]:
    """What the engine itself answers for every offset and a few byte limits."""
    end = log.shard_end
    return {(o, b): log._engine.read(o, end - o, b)
            for o in range(log.shard_start, end) for b in (0, 150, 400, 1 << 20)}


def test_the_tail_cache_answers_as_the_engine_does(replicas: Replicas) -> None:
    """`read_shard` from the tail cache gives the records the engine gives, for every offset
    and byte limit, as the cache fills, is trimmed to its budget, by retention and truncation."""
    log = replicas.log("leader")
    log.keep_tail(700)
    for n in range(1, 9):
        plain(log, n, tag=n)
        tail = log.tail_start
        assert tail is not None and tail <= log.shard_end - 1
        assert sum(r.size() for r in stored(log)[tail - log.shard_start:]) <= 700 or \
            tail == log.shard_end - 1  # the budget, or just the last record
        for (offset, limit), want in engine_pages(log).items():
            assert log.read_shard(offset, limit) == want, (offset, limit)
    assert log.tail_start is not None and log.tail_start > 0  # the budget trimmed the head
    log.delete_before(log.kafka_offset(log.shard_end - 2))
    log.invariants()
    for (offset, limit), want in engine_pages(log).items():
        assert log.read_shard(offset, limit) == want
    log.truncate_shard(log.shard_end - 1)
    assert log.tail_start is None  # truncation empties it
    plain(log, 2)
    assert log.tail_start == log.shard_end - 1
    log.keep_tail(0)
    assert log.tail_start is None and log.tail_bytes_max == 0
    with pytest.raises(ValueError, match="tail bytes_max"):
        log.keep_tail(-1)


def test_a_follower_fills_its_tail_from_the_leaders(replicas: Replicas) -> None:
    """`append_replica` fills the follower's cache too (it serves fetches once it leads)."""
    leader = replicas.log("leader")
    leader.keep_tail(1 << 20)
    leader_1123(leader)
    follower = replicas.log("follower")
    follower.keep_tail(1 << 20)
    pull(leader, follower)
    assert (follower.tail_start, leader.tail_start) == (0, 0)
    assert follower.read_shard(0, 1 << 20) == leader.read_shard(0, 1 << 20)
    follower._engine.read = None  # type: ignore[method-assign]  # the cache alone answers
    assert [r.offset for r in follower.read_shard(1, 1 << 20)] == [1, 2, 3]


def test_an_empty_follower_takes_any_first_base() -> None:
    """An empty shard past offset 0 (a new replica of a log that had retention) cannot know its
    Kafka log end; like a reopen, the first copied batch sets it."""
    leader = leader_1123(PartitionLog(MemoryEngine()))
    leader.delete_before(5)
    follower = PartitionLog(MemoryEngine(start_offset=2))
    assert follower.log_end_offset == 0
    assert follower.append_replica(leader.read_shard(2, 1 << 20)) == 4
    assert (follower.log_start_offset, follower.log_end_offset) == (5, 10)
    assert_same(follower, leader)


# ------------------------------------------------------------------------------- randomized


def _randomized_run(seed: int, make: Replicas, steps: int) -> None:
    """Three replicas; one leader per epoch. Steps: appends on the leader (plain, idempotent,
    retries), partial pulls by followers, elections of any replica (unclean ones included),
    lost follower tails and reopens. Every pull leaves the follower a prefix of the leader."""
    rng = random.Random(seed)
    names = ["a", "b", "c"]
    logs = {name: make.log(name) for name in names}
    leader, epoch = "a", 1
    logs[leader].leader_epoch = epoch
    for _ in range(steps):
        lead = logs[leader]
        followers = [n for n in names if n != leader]
        op = rng.random()
        if op < 0.40:
            pid = rng.choice([-1, 7, 8])
            entry = lead.state()[2].get(pid)
            if pid < 0:
                assert produce(lead, build_batch(recs(rng.randint(1, 4), rng.randrange(256))))
            elif entry is not None and rng.random() < 0.3:  # a retry of the last batch
                old = entry.batches[-1]
                n = old.last_seq - old.first_seq + 1
                dup = produce(lead, idem(pid, entry.epoch, old.first_seq, n))
                assert (dup.error_code, dup.duplicate, dup.base_offset) == (
                    errors.NONE, True, old.base_offset)
            else:
                seq = 0 if entry is None else entry.batches[-1].last_seq + 1
                pepoch = 0 if entry is None else entry.epoch
                if entry is not None and rng.random() < 0.1:
                    seq, pepoch = 0, pepoch + 1
                result = produce(lead, idem(pid, pepoch, seq, rng.randint(1, 3)))
                assert (result.error_code, result.duplicate) == (errors.NONE, False), result
        elif op < 0.75:
            pull(lead, logs[rng.choice(followers)], bytes_max=rng.choice([0, 150, 400, 1 << 20]),
                 pages=rng.choice([1, 2, None]))
        elif op < 0.85:
            leader, epoch = rng.choice(names), epoch + 1
            logs[leader].leader_epoch = epoch
            assert logs[leader].epoch_end(epoch) == (logs[leader].last_epoch(),
                                                      logs[leader].shard_end)
        elif op < 0.93:
            lost = logs[rng.choice(followers)]
            lost.truncate_shard(rng.randint(lost.shard_start, lost.shard_end))
        else:
            name = rng.choice(names)
            logs[name] = checked_reopen(logs[name])
        for log in logs.values():
            log.invariants()
    lead = logs[leader]
    for name in names:
        if name != leader:
            pull(lead, logs[name])
            assert_same(logs[name], lead)


@pytest.mark.parametrize("seed", range(12))
def test_randomized_replication_converges(seed: int, tmp_path: Path) -> None:
    _randomized_run(seed, Replicas("memory", tmp_path), 150)


@pytest.mark.parametrize("seed", range(2))
def test_randomized_replication_converges_on_files(seed: int, tmp_path: Path) -> None:
    _randomized_run(seed, Replicas("file", tmp_path), 60)


@pytest.mark.parametrize("seed", range(6))
def test_randomized_replication_converges_with_tail_caches(seed: int, tmp_path: Path) -> None:
    """The same run with every replica keeping a small tail cache (some pages from the cache,
    some from the engine, some across the boundary)."""
    _randomized_run(seed, Replicas("memory", tmp_path, tail=500), 150)
    (tmp_path / "f").mkdir()
    _randomized_run(seed, Replicas("file", tmp_path / "f", tail=500), 40)
