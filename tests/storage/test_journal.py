"""JournalEngine behaviour on real files (`OsFileSystem` in tmp_path): one behaviour each.

Format, rolls by size and age, the sparse indexes, reads and time lookups across segments,
retention and truncation across segments, and the three fsync policies (what is written and synced
when, what `durable_end` / `next_flush_ms` say). Recovery and fault handling: test_journal_recovery.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from real.node.osfs import OsFileSystem
from real.storage import (
    BatchTooLarge,
    EngineClosed,
    InvalidArgument,
    InvalidRecord,
    OffsetOutOfRange,
    Record,
    ReopenableEngine,
    ShardEngine,
    decode_batch_at,
)
from real.storage.devices import Durable
from real.storage.journal import INDEX_CACHE_SEGMENTS, JournalConfig, JournalEngine
from tests.storage.stateful import FakeClock

DIR = "shard"
SEG0 = f"{DIR}/00000000000000000000"


class CountingFs(OsFileSystem):
    """The real filesystem, counting calls per port method (to check when data is synced)."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.calls: Counter[str] = Counter()

    def append(self, path: str, data: bytes) -> int:
        self.calls["append"] += 1
        return super().append(path, data)

    def sync(self, path: str) -> None:
        self.calls["sync"] += 1
        super().sync(path)


def rec(ts: int, payload: bytes = b"p", key: bytes | None = None) -> Record:
    return Record(-1, ts, key, payload)


def big(ts: int, n: int = 950) -> Record:
    return Record(-1, ts, None, bytes([ts % 251]) * n)


def journal(tmp_path: Path, clock: FakeClock | None = None, **config: object) -> JournalEngine:
    fs = CountingFs(str(tmp_path))
    cfg = JournalConfig(**config)  # type: ignore[arg-type]
    return JournalEngine(fs, DIR, clock or FakeClock(), cfg)


def logs(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / DIR).iterdir())


def all_records(engine: JournalEngine) -> list[Record]:
    return engine.read(engine.start_offset(), 1 << 30, 1 << 62)


# ----------------------------------------------------------------------------------- basics


def test_satisfies_the_ports(tmp_path: Path) -> None:
    engine = journal(tmp_path)
    assert isinstance(engine, ShardEngine)
    assert isinstance(engine, ReopenableEngine)
    assert isinstance(engine, Durable)
    assert engine.kind == "file"
    assert (engine.start_offset(), engine.end_offset(), engine.bytes_total()) == (0, 0, 0)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("fsync", "sometimes"),
        ("group_commit_ms", -1),
        ("group_commit_bytes", 0),
        ("segment_bytes", 4095),
        ("segment_bytes", 1 << 31),
        ("segment_ms", 0),
        ("index_interval_bytes", 0),
        ("records_max_per_append", 0),
        ("records_max_per_append", "10"),
    ],
)
def test_config_errors_name_the_key(key: str, value: object) -> None:
    with pytest.raises(InvalidArgument, match=f"^{key} must be"):
        JournalConfig(**{key: value})  # type: ignore[arg-type]


def test_one_append_is_one_tmqb_batch_in_the_segment_file(tmp_path: Path) -> None:
    engine = journal(tmp_path)
    assert engine.append([rec(5, b"a"), rec(3, b"b", key=b"k")]) == 0
    assert engine.append([rec(9, b"c")]) == 2
    assert engine.append([]) == 3
    data = (tmp_path / f"{SEG0}.log").read_bytes()
    first, pos = decode_batch_at(data, 0)
    second, end = decode_batch_at(data, pos)
    assert end == len(data)
    assert [r.offset for r in first + second] == [0, 1, 2]
    assert first[1] == Record(1, 3, b"k", b"b")
    assert logs(tmp_path) == ["00000000000000000000.log"]
    engine.invariants()


def test_append_rejections(tmp_path: Path) -> None:
    engine = journal(tmp_path, records_max_per_append=2)
    with pytest.raises(BatchTooLarge, match="records_max_per_append exceeded: requested 3"):
        engine.append([rec(1)] * 3)
    with pytest.raises(InvalidRecord, match="record 1 has timestamp_ms -1"):
        engine.append([rec(1), rec(-1)])
    with pytest.raises(InvalidRecord, match="item 0 is a str"):
        engine.append(["x"])  # type: ignore[list-item]
    assert engine.end_offset() == 0
    assert (tmp_path / f"{SEG0}.log").stat().st_size == 0


def test_read_limits_are_kafka_style(tmp_path: Path) -> None:
    engine = journal(tmp_path)
    engine.append([rec(1, b"x" * 100), rec(2, b"y"), rec(3, b"z")])
    assert [r.offset for r in engine.read(0, 10, 1)] == [0]
    assert [r.offset for r in engine.read(1, 10, 2 * rec(0, b"y").size())] == [1, 2]
    assert [r.offset for r in engine.read(1, 1, 1 << 20)] == [1]
    assert engine.read(3, 10, 0) == []
    with pytest.raises(OffsetOutOfRange, match="offset 4 is out of range; log start=0 end=3"):
        engine.read(4, 1, 1)
    with pytest.raises(InvalidArgument, match="records_max must be"):
        engine.read(0, 0, 1)
    with pytest.raises(InvalidArgument, match="bytes_max must be"):
        engine.read(0, 1, -1)


def test_closed_engine_raises_and_reopen_needs_close(tmp_path: Path) -> None:
    engine = journal(tmp_path)
    engine.append([rec(1)])
    with pytest.raises(InvalidArgument, match="close"):
        engine.reopen()
    engine.close()
    engine.close()  # idempotent
    for call in (lambda: engine.append([]), lambda: engine.read(0, 1, 1), engine.sync):
        with pytest.raises(EngineClosed, match="closed file engine over 'shard'"):
            call()
    again = engine.reopen()
    assert all_records(again) == [Record(0, 1, None, b"p")]


# ------------------------------------------------------------------------------------ rolls


def test_roll_by_size_keeps_segments_under_segment_bytes(tmp_path: Path) -> None:
    engine = journal(tmp_path, segment_bytes=4096, index_interval_bytes=512)
    for i in range(20):
        engine.append([big(i)])
    names = logs(tmp_path)
    bases = [int(n[:20]) for n in names if n.endswith(".log")]
    assert bases == [0, 4, 8, 12, 16]  # 4 batches of 993 bytes fit in 4096
    for base in bases:
        assert (tmp_path / DIR / f"{base:020d}.log").stat().st_size <= 4096
    sealed = [f"{b:020d}{s}" for b in bases[:-1] for s in (".index", ".timeindex")]
    assert sorted(sealed + [f"{b:020d}.log" for b in bases]) == names
    assert [r.payload[0] for r in all_records(engine)] == list(range(20))
    engine.invariants()


def test_a_batch_larger_than_a_segment_gets_a_segment_of_its_own(tmp_path: Path) -> None:
    engine = journal(tmp_path, segment_bytes=4096)
    engine.append([rec(1)])
    engine.append([big(2, 10_000)])
    engine.append([rec(3)])
    assert [n for n in logs(tmp_path) if n.endswith(".log")] == [
        "00000000000000000000.log",
        "00000000000000000001.log",
        "00000000000000000002.log",
    ]
    assert [r.timestamp_ms for r in all_records(engine)] == [1, 2, 3]
    engine.invariants()


def test_roll_by_age_follows_the_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock(1000)
    engine = journal(tmp_path, clock, segment_ms=100)
    engine.append([rec(1)])  # the segment's first append: t=1000
    clock.advance(99)
    engine.append([rec(2)])
    assert len(logs(tmp_path)) == 1
    clock.advance(1)
    engine.append([rec(3)])  # 100 ms old: rolls first
    assert [n for n in logs(tmp_path) if n.endswith(".log")][-1] == "00000000000000000002.log"
    clock.advance(10_000)
    engine.append([rec(4)])  # the new segment's age counts from its first append (t=1100)
    assert len([n for n in logs(tmp_path) if n.endswith(".log")]) == 3
    engine.invariants()


def test_no_age_roll_when_segment_ms_is_none(tmp_path: Path) -> None:
    clock = FakeClock()
    engine = journal(tmp_path, clock, segment_ms=None)
    engine.append([rec(1)])
    clock.advance(1 << 40)
    engine.append([rec(2)])
    assert logs(tmp_path) == ["00000000000000000000.log"]


# ---------------------------------------------------------------------------------- indexes


def test_sealed_indexes_are_sparse_and_lookups_are_exact(tmp_path: Path) -> None:
    engine = journal(tmp_path, segment_bytes=16 * 1024, index_interval_bytes=1024)
    timestamps = [(i * 7919) % 500 for i in range(600)]  # non-monotonic
    for at in range(0, 600, 3):
        engine.append([rec(ts, b"v" * 60) for ts in timestamps[at : at + 3]])
    engine.invariants()
    index = (tmp_path / f"{SEG0}.index").stat().st_size
    assert 17 + 44 + 8 * 10 < index < 17 + 44 + 8 * 16  # ~15 entries for 16 KiB, not 200
    for ts in (-5, 0, 1, 250, 498, 499, 500):
        hits = [i for i, t in enumerate(timestamps) if t >= ts]
        assert engine.offset_for_time(ts) == (hits[0] if hits else 600), ts
    for offset in (0, 1, 299, 433, 599):
        assert engine.read(offset, 2, 1 << 20)[0].timestamp_ms == timestamps[offset]


def test_reads_and_time_lookups_cross_segments(tmp_path: Path) -> None:
    engine = journal(tmp_path, segment_bytes=4096, index_interval_bytes=64)
    for i in range(12):
        engine.append([big(100 - i, 700), big(200 + i, 700)])
    assert len([n for n in logs(tmp_path) if n.endswith(".log")]) > 4
    got = engine.read(3, 100, 1 << 30)
    assert [r.offset for r in got] == list(range(3, 24))
    assert engine.offset_for_time(205) == 11  # the first record with ts >= 205
    assert engine.offset_for_time(101) == 1
    assert engine.offset_for_time(212) == 24
    engine.invariants()


def test_the_sealed_index_cache_is_bounded(tmp_path: Path) -> None:
    engine = journal(tmp_path, segment_bytes=4096)
    for i in range(4 * (INDEX_CACHE_SEGMENTS + 4)):
        engine.append([big(i)])
    engine.close()
    engine = engine.reopen()
    assert len(engine._cache) == INDEX_CACHE_SEGMENTS
    assert [r.payload[0] for r in engine.read(0, 4, 1 << 20)] == [0, 1, 2, 3]
    assert engine.offset_for_time(3) == 3
    assert len(engine._cache) == INDEX_CACHE_SEGMENTS
    engine.invariants()


# ---------------------------------------------------------------------- retention, truncate


def test_retention_removes_whole_segments_and_checkpoints_the_start(tmp_path: Path) -> None:
    engine = journal(tmp_path, segment_bytes=4096)
    for i in range(12):
        engine.append([big(i)])
    sizes = [r.size() for r in all_records(engine)]
    engine.delete_before(6)  # segments [0,4) go; [4,8) keeps 2 hidden records
    assert logs(tmp_path)[0] == "00000000000000000004.index"
    assert "log-start.checkpoint" in logs(tmp_path)
    assert engine.bytes_total() == sum(sizes[6:])
    assert engine.offset_for_time(0) == 6  # hidden records are not found by time either
    with pytest.raises(OffsetOutOfRange, match="log start=6 end=12"):
        engine.read(5, 1, 1)
    engine.delete_before(3)  # below start: no-op
    engine.close()
    engine = engine.reopen()
    assert (engine.start_offset(), engine.bytes_total()) == (6, sum(sizes[6:]))
    assert [r.offset for r in all_records(engine)] == list(range(6, 12))
    engine.delete_before(12)
    assert (engine.start_offset(), engine.end_offset(), engine.bytes_total()) == (12, 12, 0)
    assert engine.append([rec(1)]) == 12
    engine.invariants()


def test_truncate_into_a_sealed_segment_splits_a_batch(tmp_path: Path) -> None:
    engine = journal(tmp_path, segment_bytes=4096)
    for i in range(0, 12, 2):
        engine.append([big(i, 900), big(i + 1, 900)])
    assert len([n for n in logs(tmp_path) if n.endswith(".log")]) == 3
    engine.truncate(3)  # inside the batch [2, 4) of the first segment
    assert logs(tmp_path) == ["00000000000000000000.log"]  # the rest and the indexes are gone
    assert [r.payload[0] for r in all_records(engine)] == [0, 1, 2]
    assert engine.durable_end() == 3
    assert engine.append([big(42)]) == 3
    engine.close()
    engine = engine.reopen()
    assert [r.payload[0] for r in all_records(engine)] == [0, 1, 2, 42]
    engine.truncate(0)
    assert engine.end_offset() == 0
    engine.invariants()


def test_truncate_to_a_segment_base_leaves_an_empty_active_segment(tmp_path: Path) -> None:
    engine = journal(tmp_path, segment_bytes=4096)
    for i in range(9):
        engine.append([big(i)])
    engine.truncate(4)
    assert [n for n in logs(tmp_path) if n.endswith(".log")] == [
        "00000000000000000000.log",
        "00000000000000000004.log",
    ]
    assert (tmp_path / DIR / "00000000000000000004.log").stat().st_size == 0
    engine.close()
    engine = engine.reopen()
    assert engine.end_offset() == 4
    engine.invariants()


def test_truncate_out_of_range(tmp_path: Path) -> None:
    engine = journal(tmp_path)
    engine.append([rec(1), rec(2)])
    engine.delete_before(1)
    for offset in (0, 3):
        with pytest.raises(OffsetOutOfRange, match=f"truncate: offset {offset}"):
            engine.truncate(offset)


# --------------------------------------------------------------------------- fsync policies


def test_always_writes_and_syncs_inside_append(tmp_path: Path) -> None:
    engine = journal(tmp_path, fsync="always")
    fs = engine.fs
    assert isinstance(fs, CountingFs)
    before = fs.calls.copy()
    engine.append([rec(1)])
    engine.append([rec(2)])
    assert fs.calls["append"] - before["append"] == 2
    assert fs.calls["sync"] - before["sync"] == 2
    assert engine.durable_end() == 2
    assert engine.next_flush_ms() is None


def test_group_commit_lags_until_the_deadline(tmp_path: Path) -> None:
    clock = FakeClock(500)
    engine = journal(tmp_path, clock, fsync="group", group_commit_ms=5)
    fs = engine.fs
    assert isinstance(fs, CountingFs)
    before = fs.calls.copy()
    engine.append([rec(1)])
    clock.advance(3)
    engine.append([rec(2)])
    assert engine.durable_end() == 0
    assert engine.next_flush_ms() == 505  # from the oldest undurable append
    assert engine.read(0, 10, 1 << 20)[1].timestamp_ms == 2  # buffered records are readable
    assert (tmp_path / f"{SEG0}.log").stat().st_size == 0
    engine.poll(504)
    assert engine.durable_end() == 0
    engine.poll(505)
    assert engine.durable_end() == 2
    assert engine.next_flush_ms() is None
    assert fs.calls["append"] - before["append"] == 1  # one write for both batches
    assert fs.calls["sync"] - before["sync"] == 1
    engine.invariants()


def test_group_commit_byte_threshold_commits_inside_append(tmp_path: Path) -> None:
    engine = journal(tmp_path, fsync="group", group_commit_bytes=2900)
    engine.append([big(1)])
    engine.append([big(2)])
    assert engine.durable_end() == 0
    engine.append([big(3)])  # 2979 bytes buffered
    assert engine.durable_end() == 3
    assert engine.next_flush_ms() is None


def test_never_writes_at_the_deadline_but_syncs_only_on_request(tmp_path: Path) -> None:
    clock = FakeClock()
    engine = journal(tmp_path, clock, fsync="never", group_commit_ms=5)
    fs = engine.fs
    assert isinstance(fs, CountingFs)
    before = fs.calls.copy()
    engine.append([rec(1)])
    assert engine.next_flush_ms() == 5
    engine.poll(5)  # written to the OS, not synced
    assert (tmp_path / f"{SEG0}.log").stat().st_size > 0
    assert (engine.durable_end(), engine.next_flush_ms()) == (0, None)
    assert fs.calls["sync"] == before["sync"]
    engine.sync()
    assert engine.durable_end() == 1
    engine.append([rec(2)])
    engine.close()
    engine = engine.reopen()
    assert [r.timestamp_ms for r in all_records(engine)] == [1, 2]
    assert engine.durable_end() == 2


def test_roll_syncs_the_sealed_segment_under_every_policy(tmp_path: Path) -> None:
    engine = journal(tmp_path, fsync="never", segment_bytes=4096)
    for i in range(4):
        engine.append([big(i)])
    assert engine.durable_end() == 0
    engine.append([big(4)])  # rolls: the first segment is synced before the next is created
    assert engine.durable_end() == 4
    engine.invariants()


def test_delete_before_makes_the_new_start_durable_first(tmp_path: Path) -> None:
    engine = journal(tmp_path, fsync="never")
    engine.append([rec(1), rec(2), rec(3)])
    assert engine.durable_end() == 0
    engine.delete_before(2)
    assert engine.durable_end() == 3  # a crash can never leave the start past the end
    assert engine.bytes_total() == rec(3).size()
