"""MemoryEngine unit tests: one behaviour or limit path each."""

from __future__ import annotations

import pytest

from real.storage import (
    BatchTooLarge,
    EngineClosed,
    InvalidArgument,
    InvalidRecord,
    MemoryEngine,
    OffsetOutOfRange,
    Record,
    ReopenableEngine,
    ShardEngine,
    StorageFull,
)


def rec(ts: int, payload: bytes = b"p") -> Record:
    return Record(-1, ts, None, payload)


def test_satisfies_the_port() -> None:
    engine = MemoryEngine()
    assert isinstance(engine, ShardEngine)
    assert isinstance(engine, ReopenableEngine)


def test_append_assigns_contiguous_offsets() -> None:
    engine = MemoryEngine(start_offset=10)
    assert engine.append([rec(1), rec(2)]) == 10
    assert engine.append([rec(3)]) == 12
    assert engine.append([]) == 13
    assert [r.offset for r in engine.read(10, 10, 1 << 20)] == [10, 11, 12]
    engine.invariants()


def test_read_returns_one_oversized_record_kafka_style() -> None:
    engine = MemoryEngine()
    engine.append([rec(1, b"x" * 100), rec(2, b"y")])
    assert [r.offset for r in engine.read(0, 10, 1)] == [0]
    assert [r.offset for r in engine.read(0, 10, rec(0, b"x" * 100).size())] == [0]
    assert engine.read(2, 10, 0) == []


def test_read_out_of_range_names_start_and_end() -> None:
    engine = MemoryEngine()
    engine.append([rec(1), rec(2), rec(3)])
    engine.delete_before(1)
    with pytest.raises(OffsetOutOfRange, match="offset 0 is out of range; log start=1 end=3"):
        engine.read(0, 1, 100)
    with pytest.raises(OffsetOutOfRange, match="offset 4 is out of range"):
        engine.read(4, 1, 100)


def test_offset_for_time_with_non_monotonic_timestamps() -> None:
    engine = MemoryEngine()
    engine.append([rec(5), rec(3), rec(9), rec(7)])
    assert [engine.offset_for_time(t) for t in (0, 5, 6, 8, 9, 10)] == [0, 0, 2, 2, 2, 4]
    engine.delete_before(1)  # indexes rebuilt: the 5 at offset 0 is gone
    assert engine.offset_for_time(4) == 2
    assert engine.offset_for_time(3) == 1


def test_batch_too_large_is_rejected_whole() -> None:
    engine = MemoryEngine(records_max_per_append=2)
    with pytest.raises(BatchTooLarge, match="records_max_per_append exceeded: requested 3"):
        engine.append([rec(1)] * 3)
    assert engine.end_offset() == 0
    assert engine.append([rec(1)] * 2) == 0


def test_storage_full_rejects_without_dropping() -> None:
    one = rec(1).size()
    engine = MemoryEngine(bytes_max_total=3 * one)
    engine.append([rec(1), rec(2)])
    with pytest.raises(StorageFull, match=f"bytes_max_total exceeded: requested {4 * one}"):
        engine.append([rec(3), rec(4)])
    assert engine.end_offset() == 2
    assert engine.bytes_total() == 2 * one
    engine.delete_before(2)  # retention frees room
    engine.append([rec(3), rec(4), rec(5)])
    engine.invariants()


def test_truncate_and_delete_before_bounds() -> None:
    engine = MemoryEngine()
    engine.append([rec(1), rec(2), rec(3)])
    engine.truncate(2)
    assert engine.end_offset() == 2
    with pytest.raises(OffsetOutOfRange, match="truncate: offset 3"):
        engine.truncate(3)
    with pytest.raises(OffsetOutOfRange, match="delete_before: offset 5"):
        engine.delete_before(5)
    engine.delete_before(2)
    assert (engine.start_offset(), engine.end_offset(), engine.bytes_total()) == (2, 2, 0)
    with pytest.raises(OffsetOutOfRange, match="truncate: offset 1"):
        engine.truncate(1)


def test_timestamps_must_be_given() -> None:
    engine = MemoryEngine()
    with pytest.raises(InvalidRecord, match="record 1 has timestamp_ms -1"):
        engine.append([rec(1), rec(-1)])
    with pytest.raises(InvalidRecord, match="item 0 is a str"):
        engine.append(["nope"])  # type: ignore[list-item]
    assert engine.end_offset() == 0


def test_closed_engine_refuses_and_reopen_restores() -> None:
    engine = MemoryEngine()
    engine.append([rec(1)])
    engine.close()
    with pytest.raises(EngineClosed, match="read on a closed memory engine"):
        engine.read(0, 1, 1)
    assert engine.reopen() is engine
    assert engine.read(0, 1, 1)[0].timestamp_ms == 1


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"records_max_per_append": 0}, "records_max_per_append"), ({"bytes_max_total": -1}, "bytes")],
)
def test_bad_limits_name_the_argument(kwargs: dict[str, int], name: str) -> None:
    with pytest.raises(InvalidArgument, match=name):
        MemoryEngine(**kwargs)
    engine = MemoryEngine()
    with pytest.raises(InvalidArgument, match="records_max must be an int >= 1"):
        engine.read(0, 0, 10)
