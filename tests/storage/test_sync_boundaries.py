"""Where the file journal's durability promise is made (STYLE habit 24): `durable_end` may move
only after the fdatasync that makes those bytes durable has returned, to exactly the end that
sync covered; `ack_end` is `durable_end` except under fsync "never"; recovery keeps no torn bytes.

A filesystem that records the engine's `durable_end()` at the moment each fdatasync starts
catches a `durable_end` moved ahead of (or without) its sync, under every policy and in the
background group commit.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from model.devices.fs import SimFileSystem
from real.storage import MemoryEngine, Record, ShardStore, encode_records
from real.storage.devices import DeviceError
from real.storage.journal import (
    SEGMENT_BYTES_MIN,
    CorruptLog,
    EngineFailed,
    JournalConfig,
    JournalEngine,
)
from tests.storage.stateful import FakeClock
from tests.storage.test_journal_recovery import DIR as DIR_OS
from tests.storage.test_journal_recovery import flip, os_journal, three_segments

DIR = "data/shard"


class WatchingFs(SimFileSystem):
    """Records (path, engine.durable_end(), engine.end_offset()) when each fdatasync starts."""

    def __init__(self, seed: int = 7) -> None:
        super().__init__(random.Random(seed))  # noqa: S311 (simulation)
        self.engine: JournalEngine | None = None
        self.seen: list[tuple[int, int]] = []

    def sync(self, path: str) -> None:
        engine = self.engine
        if engine is not None and path.endswith(".log"):
            self.seen.append((engine._durable_end, engine.end_offset()))  # noqa: SLF001
        super().sync(path)


def rec(ts: int, n: int = 20) -> Record:
    return Record(-1, ts, None, bytes([65 + ts % 26]) * n)


def journal(fsync: str, seed: int = 7,
            **config: object) -> tuple[JournalEngine, WatchingFs, FakeClock]:
    fs, clock = WatchingFs(seed), FakeClock(100)
    engine = JournalEngine(fs, DIR, clock, JournalConfig(fsync=fsync, **config))  # type: ignore[arg-type]
    fs.engine, fs.seen = engine, []
    return engine, fs, clock


def crash(engine: JournalEngine, fs: WatchingFs) -> JournalEngine:
    fs.engine = None
    fs.crash()
    return JournalEngine(fs, DIR, engine.clock, engine.config)


def test_always_moves_durable_end_after_its_sync_to_exactly_the_batch_end() -> None:
    engine, fs, _ = journal("always")
    engine.append([rec(1), rec(2)])
    engine.append([rec(3)])
    assert fs.seen == [(0, 2), (2, 3)], "durable_end moved before (or without) its fdatasync"
    assert engine.durable_end() == engine.ack_end() == 3


def test_group_commit_moves_durable_end_after_the_sync_not_before() -> None:
    engine, fs, clock = journal("group", group_commit_ms=5)
    engine.append([rec(1)])
    engine.append([rec(2)])
    assert engine.durable_end() == 0 and engine.next_flush_ms() == 105
    engine.poll(104)  # one ms short of the deadline: nothing
    assert (engine.durable_end(), fs.seen) == (0, [])
    engine.poll(105)  # exactly at it
    assert fs.seen == [(0, 2)]
    assert engine.durable_end() == engine.ack_end() == 2


def test_a_failed_group_sync_moves_nothing_and_a_crash_keeps_only_the_synced_prefix() -> None:
    engine, fs, _ = journal("group", group_commit_ms=5)
    engine.append([rec(1)])
    engine.sync()
    engine.append([rec(2)])
    fs.inject_eio("sync", DIR)
    with pytest.raises(EngineFailed):
        engine.poll(1 << 40)
    assert engine._durable_end == 1, "durable_end moved although the fdatasync failed"  # noqa: SLF001
    engine = crash(engine, fs)
    assert engine.end_offset() in (1, 2)
    assert engine.durable_end() == engine.end_offset()


def test_background_job_durable_end_stays_until_finish_sync() -> None:
    engine, fs, clock = journal("group", group_commit_ms=5, background_sync=True)
    engine.append([rec(1), rec(2)])
    job = engine.start_sync(105)
    assert job is not None and job.end == 2
    assert engine.durable_end() == engine.ack_end() == 0, "durable before the fdatasync ran"
    engine.append([rec(3)])  # arrives while the job runs
    job.sync()
    assert fs.seen == [(0, 3)], "durable_end had moved when the fdatasync started"
    assert engine.durable_end() == 0, "durable before finish_sync"
    engine.finish_sync(job)
    assert engine.durable_end() == engine.ack_end() == 2  # the job's end, not the log's end
    assert engine.end_offset() == 3


def test_background_job_that_fails_moves_nothing() -> None:
    engine, fs, _ = journal("group", group_commit_ms=5, background_sync=True)
    engine.append([rec(1)])
    job = engine.start_sync(105)
    assert job is not None
    with pytest.raises(EngineFailed):
        engine.finish_sync(job, OSError(5, "EIO"))
    assert engine._durable_end == 0  # noqa: SLF001


def test_a_crash_before_finish_sync_keeps_at_least_durable_end() -> None:
    """What durable_end promised survives a machine crash at any point of a background job."""
    for seed in range(10):
        engine, fs, _ = journal("group", seed, group_commit_ms=5, background_sync=True)
        engine.append([rec(1)])
        job = engine.start_sync(105)
        assert job is not None
        promised = engine.durable_end()
        engine = crash(engine, fs)  # the job never ran its fdatasync
        assert engine.end_offset() >= promised == 0


def test_never_acks_what_was_written_but_durable_end_waits_for_sync() -> None:
    engine, fs, _ = journal("never", group_commit_ms=5)
    engine.append([rec(1)])
    assert (engine.ack_end(), engine.durable_end()) == (0, 0), "acked before it was written"
    engine.poll(104)
    assert engine.ack_end() == 0
    engine.poll(105)  # written to the OS, not synced
    assert (engine.ack_end(), engine.durable_end(), fs.seen) == (1, 0, [])
    engine.sync()
    assert fs.seen == [(0, 1)]
    assert (engine.ack_end(), engine.durable_end()) == (1, 1)


def test_recovery_leaves_no_torn_bytes_behind() -> None:
    """A crash mid-write leaves a torn tail; recovery cuts it, so the next append lands right
    after the last whole batch and a second recovery finds no corruption."""
    for seed in range(12):
        engine, fs, _ = journal("never", seed, group_commit_ms=1)
        for i in range(4):
            engine.append([rec(i, 200)])
            engine.poll(1 << 40)
        engine = crash(engine, fs)
        kept = engine.end_offset()
        assert kept == engine.durable_end()
        engine.append([rec(99)])
        engine.close()
        again = JournalEngine(fs, DIR, engine.clock, engine.config)
        values = [r.timestamp_ms for r in again.read(0, 100, 1 << 30)]
        assert values == [*range(kept), 99], (seed, values)
        again.invariants()


class AckEngine(MemoryEngine):
    """An engine that acknowledges at a point of its own, apart from durable_end."""

    def __init__(self) -> None:
        super().__init__()
        self.acked = 0
        self.durable = 0

    def ack_end(self) -> int:
        return self.acked

    def durable_end(self) -> int:
        return self.durable


def test_shard_store_ack_end_is_the_engines_ack_end_else_its_durable_end() -> None:
    store = ShardStore({"ack": lambda _n: AckEngine(), "memory": lambda _n: MemoryEngine()},
                       default_engine="memory")
    store.create("a", "ack")
    store.create("m")
    engine = store.engine("a")
    assert isinstance(engine, AckEngine)
    store.append("a", [rec(1), rec(2)])
    engine.acked, engine.durable = 2, 1
    assert (store.ack_end("a"), store.durable_end("a")) == (2, 1)
    engine.acked, engine.durable = 0, 2
    assert (store.ack_end("a"), store.durable_end("a")) == (0, 2)
    store.append("m", [rec(1)])
    assert store.ack_end("m") == store.durable_end("m") == 1


def test_buffered_batches_are_indexed_at_their_file_positions() -> None:
    """Batches appended while earlier ones are still buffered get index entries at the file
    position they will have once written: reads from the middle (through the sparse index) and
    after a roll (sealed index files) find the right records."""
    engine, _fs, _ = journal("group", group_commit_ms=1000, index_interval_bytes=64,
                             segment_bytes=4096)
    for i in range(12):
        engine.append([rec(i, 100)])  # all buffered: nothing due for a second
    for start in (0, 5, 11):
        assert [r.timestamp_ms for r in engine.read(start, 2, 1 << 20)][:1] == [start]
    for i in range(12, 60):
        engine.append([rec(i, 100)])  # rolls: the first segment's index is sealed
    for start in (3, 7, 30, 59):
        assert [r.timestamp_ms for r in engine.read(start, 1, 1 << 20)] == [start]
    engine.invariants()


def test_background_appends_below_the_byte_threshold_stay_buffered() -> None:
    engine, fs, _ = journal("group", group_commit_ms=5, background_sync=True,
                            group_commit_bytes=1000)
    path = f"{DIR}/{'0' * 20}.log"
    engine.append([rec(1, 100)])
    assert fs.size(path) == 0, "written before the threshold or the deadline"
    for i in range(2, 12):
        engine.append([rec(i, 100)])
    assert fs.size(path) > 0, "the byte threshold did not write the buffer"
    assert engine.durable_end() == 0  # written, not synced: that is the job's


def test_a_reopened_active_segment_still_rolls_by_age() -> None:
    engine, fs, clock = journal("always", segment_ms=100)
    engine.append([rec(1)])
    engine.close()
    reopened = JournalEngine(fs, DIR, clock, engine.config)
    clock.advance(100)
    reopened.append([rec(2)])
    logs = sorted(n for n in fs.list_dir(DIR) if n.endswith(".log"))
    assert logs == [f"{0:020d}.log", f"{1:020d}.log"], "the recovered segment never aged"


def test_a_batch_at_the_wrong_offset_at_the_end_of_the_active_segment_is_corruption() -> None:
    """Only a batch that does not decode is a torn tail; a whole batch at the wrong offset is
    corruption, even as the last one, and recovery must not cut it (or what follows) away."""
    engine, fs, clock = journal("always")
    engine.append([rec(1)])
    engine.append([rec(2)])
    engine.close()
    path = f"{DIR}/{0:020d}.log"
    fs.append(path, encode_records([rec(7)], base_offset=5))  # offsets 0, 1, then 5
    fs.sync(path)
    with pytest.raises(CorruptLog, match="offset 2, got offset 5"):
        JournalEngine(fs, DIR, clock, engine.config)


def test_damage_in_the_last_batch_of_a_sealed_segment_is_corruption_not_a_torn_tail(
        tmp_path: Path) -> None:
    """Only the active segment can have a torn tail: a sealed one was fdatasynced whole before
    the next was created, so a bad last batch there is corruption (named), never cut away."""
    three_segments(tmp_path)
    log = tmp_path / DIR_OS / "00000000000000000004.log"
    flip(log, 3 * 993 + 100)  # inside record 7, the sealed segment's last batch
    (tmp_path / DIR_OS / "00000000000000000004.index").unlink()  # recovery must scan it
    with pytest.raises(CorruptLog, match="'shard/00000000000000000004.log' at byte 2979"):
        os_journal(tmp_path)


def test_a_sync_with_nothing_new_does_not_fdatasync_again() -> None:
    engine, fs, _ = journal("group", group_commit_ms=5)
    engine.append([rec(1)])
    engine.sync()
    engine.sync()  # nothing appended since: durable_end == end_offset
    engine.poll(1 << 40)
    assert fs.seen == [(0, 1)], "an fdatasync with nothing to make durable"


def test_a_late_owner_still_gets_its_background_job() -> None:
    """start_sync any time at or after the deadline starts the job (not only exactly at it)."""
    engine, _fs, _ = journal("group", group_commit_ms=5, background_sync=True)
    engine.append([rec(1)])
    assert engine.start_sync(104) is None
    job = engine.start_sync(10_000)
    assert job is not None and job.end == 1
    job.sync()
    engine.finish_sync(job)
    assert engine.durable_end() == 1


@pytest.mark.parametrize("fsync", ["always", "group", "never"])
def test_ack_end_and_durable_end_answer_after_close(fsync: str) -> None:
    """A broker may ask where to acknowledge after the store closed its engines (shutdown)."""
    engine, _fs, _ = journal(fsync)
    engine.append([rec(1), rec(2)])
    engine.close()
    assert engine.ack_end() == engine.durable_end() == 2


def test_a_first_batch_larger_than_a_segment_goes_into_the_empty_active_one() -> None:
    engine, fs, _ = journal("always", segment_bytes=SEGMENT_BYTES_MIN)
    engine.append([rec(1, SEGMENT_BYTES_MIN * 2)])  # an empty segment is never rolled
    assert engine.end_offset() == engine.durable_end() == 1
    assert [n for n in fs.list_dir(DIR) if n.endswith(".log")] == [f"{0:020d}.log"]


@pytest.mark.parametrize("background", [False, True])
def test_exactly_group_commit_bytes_buffered_is_enough_to_write(background: bool) -> None:
    one_batch = len(encode_records([rec(1, 100)], base_offset=0))
    engine, fs, _ = journal("group", group_commit_ms=1000, group_commit_bytes=one_batch,
                            background_sync=background)
    engine.append([rec(1, 100)])
    assert fs.size(f"{DIR}/{0:020d}.log") == one_batch, "the threshold was reached, not written"
    assert engine.durable_end() == (0 if background else 1)  # in place: written and synced


def test_next_flush_ms_answers_after_close() -> None:
    engine, _fs, _ = journal("group", group_commit_ms=5)
    engine.append([rec(1)])
    engine.close()
    assert engine.next_flush_ms() is None  # a shell may still poll the store's deadlines


def test_a_failed_background_job_poisons_with_a_device_error_naming_the_segment() -> None:
    engine, _fs, _ = journal("group", group_commit_ms=5, background_sync=True)
    engine.append([rec(1)])
    job = engine.start_sync(105)
    assert job is not None
    with pytest.raises(EngineFailed, match=r"00000000000000000000\.log") as raised:
        engine.finish_sync(job, OSError(5, "EIO"))
    assert isinstance(raised.value.__cause__, DeviceError)


def test_durable_end_never_moves_back_when_a_slow_job_finishes_late() -> None:
    engine, _fs, _ = journal("group", group_commit_ms=5, background_sync=True)
    engine.append([rec(1)])
    job = engine.start_sync(105)
    assert job is not None and job.end == 1
    engine.append([rec(2)])
    engine.sync()  # commits in place while the job still runs
    assert engine.durable_end() == 2
    job.sync()
    engine.finish_sync(job)
    assert engine.durable_end() == 2, "durable_end moved back to the late job's end"
