"""`S3Engine` behaviour over `SimObjectStore`: layout, durability, I/O shape, faults, corruption."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.devices.objstore import LIST_KEY_BYTES, SimObjectStore
from real.storage import BatchTooLarge, EngineClosed, InvalidArgument, Record, ShardEngine
from real.storage.devices import DeviceError, Durable, TransientDeviceError
from real.storage.s3engine import (
    TRAILER,
    EnginePoisoned,
    S3Engine,
    S3EngineConfig,
    S3LogCorrupt,
    decode_footer,
    encode_object,
)
from tests.storage.stateful import FakeClock


def recs(n: int, ts: int = 0, payload: bytes = b"x" * 40) -> list[Record]:
    return [Record(-1, ts + i, None, payload) for i in range(n)]


def make(config: S3EngineConfig | None = None, clock: FakeClock | None = None):
    store = SimObjectStore(random.Random(7))
    engine = S3Engine(store, "topic/0", clock or FakeClock(), config or S3EngineConfig())
    return store, engine


def data_keys(store: SimObjectStore) -> list[str]:
    return [k for k in store.keys() if k.endswith(".tmqs")]


def test_is_a_shard_engine_and_durable() -> None:
    _, engine = make()
    assert isinstance(engine, ShardEngine)
    assert isinstance(engine, Durable)
    assert engine.kind == "s3"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("linger_ms", -1),
        ("flush_bytes", 0),
        ("index_interval_bytes", 0),
        ("records_max_per_append", 0),
        ("retries", -1),
        ("footer_cache_max", 0),
        ("footer_read_bytes", 3),
        ("linger_ms", 1.5),
    ],
)
def test_config_errors_name_the_key(key: str, value: object) -> None:
    with pytest.raises(InvalidArgument, match=f"S3EngineConfig.{key} must be"):
        S3EngineConfig(**{key: value})


def test_bad_prefix_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="prefix"):
        S3Engine(SimObjectStore(random.Random(0)), "ends/")


def test_immediate_append_puts_one_object_per_append_with_documented_key() -> None:
    store, engine = make()
    assert engine.append(recs(3)) == 0
    assert engine.append(recs(2)) == 3
    assert data_keys(store) == [
        "topic/0/00000000000000000000.tmqs",
        "topic/0/00000000000000000003.tmqs",
    ]
    assert engine.durable_end() == engine.end_offset() == 5
    assert engine.next_flush_ms() is None
    assert [r.offset for r in engine.read(0, 10, 10_000)] == [0, 1, 2, 3, 4]


def test_object_layout_batches_footer_trailer() -> None:
    records = [Record(10 + i, [5, 3, 9, 1][i], None, b"p" * 30) for i in range(4)]
    data, footer = encode_object(records, index_interval_bytes=100)  # 2 records per batch
    assert [e.base for e in footer.entries] == [10, 12]
    assert [e.ts_max for e in footer.entries] == [5, 9]  # running max
    assert footer.bytes_total == sum(r.size() for r in records)
    length, magic, _ = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    assert magic == b"TMQS"
    assert length + TRAILER.size + footer.data_length == len(data)
    assert decode_footer("k", data) == footer
    assert decode_footer("k", data[-(length + TRAILER.size) :]) == footer


def test_footer_crc_detects_a_flipped_byte() -> None:
    data, _ = encode_object(recs_with_offsets(3), 50)
    bad = bytearray(data)
    bad[-TRAILER.size - 5] ^= 0x01
    with pytest.raises(S3LogCorrupt, match="crc32c"):
        decode_footer("obj", bytes(bad))


def recs_with_offsets(n: int, base: int = 0) -> list[Record]:
    return [Record(base + i, i, None, b"y" * 20) for i in range(n)]


def test_linger_buffers_until_poll_deadline_and_reads_see_the_buffer() -> None:
    clock = FakeClock(100)
    store, engine = make(S3EngineConfig(linger_ms=10), clock)
    engine.append(recs(2))
    clock.advance(4)
    engine.append(recs(1))
    assert data_keys(store) == []
    assert engine.durable_end() == 0 and engine.end_offset() == 3
    assert [r.offset for r in engine.read(1, 5, 10_000)] == [1, 2]
    assert engine.next_flush_ms() == 110  # oldest buffered append + linger
    engine.poll(109)
    assert data_keys(store) == []
    engine.poll(110)
    assert data_keys(store) == ["topic/0/00000000000000000000.tmqs"]
    assert engine.durable_end() == 3
    assert engine.next_flush_ms() is None


def test_flush_bytes_flushes_at_once_and_splits_objects() -> None:
    size = recs(1)[0].size()
    store, engine = make(S3EngineConfig(linger_ms=1000, flush_bytes=3 * size))
    engine.append(recs(2))
    assert data_keys(store) == []
    engine.append(recs(5))  # buffer of 7 records >= 3 records' worth: flush in objects of 3
    assert len(data_keys(store)) == 3
    assert engine.durable_end() == 7
    assert [r.offset for r in engine.read(0, 100, 1 << 20)] == list(range(7))


def test_sync_and_close_flush_and_crash_loses_only_the_buffer() -> None:
    store, engine = make(S3EngineConfig(linger_ms=50))
    engine.append(recs(3))
    engine.sync()
    assert engine.durable_end() == 3
    engine.append(recs(2))
    crashed = S3Engine(store, "topic/0", config=engine.config)
    assert (crashed.start_offset(), crashed.end_offset()) == (0, 3)
    engine.close()
    reopened = engine.reopen()
    assert reopened.end_offset() == 5
    with pytest.raises(EngineClosed):
        engine.append([])


def test_read_does_one_ranged_get_of_only_the_needed_batches() -> None:
    size = recs(1)[0].size()
    store, engine = make(S3EngineConfig(linger_ms=1, index_interval_bytes=2 * size))
    engine.append(recs(20))
    engine.sync()  # one object of 10 batches of 2 records
    reopened = S3Engine(store, "topic/0", config=engine.config)
    store.take_elapsed_us()
    before = store.stats.requests["get"], store.stats.bytes_down
    got = reopened.read(7, 3, 1 << 20)
    assert [r.offset for r in got] == [7, 8, 9]
    gets = store.stats.requests["get"] - before[0]
    down = store.stats.bytes_down - before[1]
    assert gets == 1, gets  # footer cached at open
    assert 0 < down < len(store.raw(data_keys(store)[0])) // 3, down
    assert store.take_elapsed_us() > 0


def test_read_limits_by_bytes_across_objects() -> None:
    _, engine = make()
    for _ in range(4):
        engine.append(recs(3))
    size = recs(1)[0].size()
    got = engine.read(2, 100, 4 * size)
    assert [r.offset for r in got] == [2, 3, 4, 5]
    assert [r.offset for r in engine.read(2, 100, 0)] == [2]  # always at least one
    assert engine.read(12, 5, 100) == []


def test_open_reads_only_footers_with_one_suffix_get_each() -> None:
    store, engine = make()
    for _ in range(5):
        engine.append(recs(2, payload=b"z" * 5000))
    store.stats.requests["get"] = 0
    store.stats.bytes_down = 0
    reopened = S3Engine(store, "topic/0", config=S3EngineConfig(footer_read_bytes=256))
    assert reopened.end_offset() == 10
    assert store.stats.requests["get"] == 5  # one per data object; no start object is listed
    listed = 5 * LIST_KEY_BYTES  # the LIST response
    assert store.stats.bytes_down == 5 * 256 + listed, store.stats.bytes_down


def test_large_footer_needs_a_second_get() -> None:
    config = S3EngineConfig(linger_ms=1, index_interval_bytes=1, footer_read_bytes=64)
    store, engine = make(config)
    engine.append(recs(30))
    engine.sync()
    store.stats.requests["get"] = 0
    assert S3Engine(store, "topic/0", config=config).end_offset() == 30
    assert store.stats.requests["get"] == 2


def test_offset_for_time_uses_running_max_and_skips_deleted_records() -> None:
    size = recs(1)[0].size()
    store, engine = make(S3EngineConfig(linger_ms=1, index_interval_bytes=2 * size))
    stamps = [50, 1, 2, 3, 60, 4, 70, 5]
    engine.append([Record(-1, ts, None, b"x" * 40) for ts in stamps])
    engine.sync()
    assert engine.offset_for_time(0) == 0
    assert engine.offset_for_time(55) == 4
    assert engine.offset_for_time(65) == 6
    assert engine.offset_for_time(71) == 8
    engine.delete_before(1)  # the record with ts 50 is gone; its batch still holds it
    assert engine.offset_for_time(10) == 4
    engine.append([Record(-1, 99, None, b"")])
    assert engine.offset_for_time(80) == 8  # found in the newest object


def test_truncate_deletes_higher_objects_and_rewrites_the_straddling_one() -> None:
    store, engine = make()
    for _ in range(4):
        engine.append(recs(3))  # objects at 0, 3, 6, 9
    engine.truncate(4)
    assert data_keys(store) == [
        "topic/0/00000000000000000000.tmqs",
        "topic/0/00000000000000000003.tmqs",
    ]
    assert engine.end_offset() == engine.durable_end() == 4
    reopened = S3Engine(store, "topic/0")
    assert reopened.end_offset() == 4
    assert [r.offset for r in reopened.read(0, 10, 1 << 20)] == [0, 1, 2, 3]
    assert engine.append(recs(1)) == 4


def test_truncate_of_buffered_records_needs_no_request() -> None:
    store, engine = make(S3EngineConfig(linger_ms=10))
    engine.append(recs(5))
    before = sum(store.stats.requests.values())
    engine.truncate(2)
    assert sum(store.stats.requests.values()) == before
    assert engine.end_offset() == 2
    engine.sync()
    assert S3Engine(store, "topic/0").end_offset() == 2


def test_delete_before_writes_start_then_deletes_whole_objects() -> None:
    store, engine = make()
    for _ in range(3):
        engine.append(recs(3))
    size = recs(1)[0].size()
    engine.delete_before(4)
    assert "topic/0/start" in store.keys()
    assert data_keys(store)[0] == "topic/0/00000000000000000003.tmqs"
    assert engine.bytes_total() == 5 * size
    reopened = S3Engine(store, "topic/0")
    assert (reopened.start_offset(), reopened.end_offset()) == (4, 9)
    assert reopened.bytes_total() == 5 * size
    assert reopened.read(4, 1, 0)[0].offset == 4


def test_open_deletes_objects_left_below_start_by_an_interrupted_delete_before() -> None:
    store, engine = make()
    for _ in range(3):
        engine.append(recs(3))
    store.fail_next("delete", 1, transient=False)  # start is written, the deletion fails
    with pytest.raises(DeviceError):
        engine.delete_before(6)
    with pytest.raises(EnginePoisoned):
        engine.read(6, 1, 1)
    reopened = S3Engine(store, "topic/0")
    assert (reopened.start_offset(), reopened.end_offset()) == (6, 9)
    assert data_keys(store) == ["topic/0/00000000000000000006.tmqs"]


def test_transient_errors_are_retried_without_sleeping() -> None:
    store, engine = make(S3EngineConfig(retries=2))
    store.fail_next("put", 2)
    assert engine.append(recs(1)) == 0
    assert store.stats.transient_errors == 2
    assert engine.durable_end() == 1


def test_persistent_failure_poisons_until_reopen() -> None:
    store, engine = make(S3EngineConfig(retries=2))
    store.fail_next("put", 3)
    with pytest.raises(TransientDeviceError):
        engine.append(recs(1))
    for call in (lambda: engine.append([]), lambda: engine.read(0, 1, 1), engine.sync):
        with pytest.raises(EnginePoisoned, match="poisoned by"):
            call()
    assert S3Engine(store, "topic/0").end_offset() == 0


def test_batch_too_large_is_rejected_before_any_request() -> None:
    store, engine = make(S3EngineConfig(records_max_per_append=2))
    with pytest.raises(BatchTooLarge):
        engine.append(recs(3))
    assert store.keys() == []


def test_gap_between_objects_is_reported_with_both_keys() -> None:
    store, engine = make()
    for _ in range(3):
        engine.append(recs(2))
    store.delete("topic/0/00000000000000000002.tmqs")
    with pytest.raises(S3LogCorrupt, match=r"gap: topic/0/0+\.tmqs ends at 2 but topic/0/0+4"):
        S3Engine(store, "topic/0")


def test_overlap_and_bad_start_are_reported() -> None:
    store, engine = make()
    engine.append(recs(3))
    data, _ = encode_object(recs_with_offsets(2, base=2), 100)
    store.put("topic/0/00000000000000000002.tmqs", data)
    with pytest.raises(S3LogCorrupt, match="overlap"):
        S3Engine(store, "topic/0")
    other = SimObjectStore(random.Random(0))
    data, _ = encode_object(recs_with_offsets(2, base=5), 100)
    other.put("p/00000000000000000005.tmqs", data)
    with pytest.raises(S3LogCorrupt, match="gap: p/start says the log starts at 0"):
        S3Engine(other, "p")


def test_corrupt_batch_is_detected_on_read() -> None:
    store, engine = make()
    engine.append(recs(3))
    key = data_keys(store)[0]
    bad = bytearray(store.raw(key))
    bad[40] ^= 0xFF
    store.corrupt(key, bytes(bad))
    with pytest.raises(S3LogCorrupt, match="crc32c"):
        S3Engine(store, "topic/0").read(0, 10, 10_000)


def test_footer_cache_is_bounded() -> None:
    store, engine = make(S3EngineConfig(footer_cache_max=2))
    for _ in range(6):
        engine.append(recs(1))
    engine.invariants()
    assert len(engine._footers) == 2
    store.stats.requests["get"] = 0
    assert engine.read(0, 1, 1)[0].offset == 0  # footer miss, a small object: one whole GET
    assert store.stats.requests["get"] == 1
    assert len(engine._footers) == 2
    big, _ = make(S3EngineConfig(footer_cache_max=2, index_interval_bytes=64))
    large = S3Engine(big, "topic/0", config=S3EngineConfig(footer_cache_max=2,
                                                           index_interval_bytes=64))
    for _ in range(4):
        large.append(recs(3))
    large._footers.clear()
    big.stats.requests["get"] = 0
    assert large.read(0, 1, 1)[0].offset == 0  # footer miss: suffix GET + data GET
    assert big.stats.requests["get"] == 2


def test_prefixes_are_independent() -> None:
    store = SimObjectStore(random.Random(1))
    a = S3Engine(store, "a")
    b = S3Engine(store, "a-b")  # "a-b/" does not start with "a/"
    a.append(recs(2))
    b.append(recs(5))
    assert S3Engine(store, "a").end_offset() == 2
    assert S3Engine(store, "a-b").end_offset() == 5


@settings(max_examples=40, deadline=None)
@given(
    payloads=st.lists(st.integers(0, 80), min_size=1, max_size=40),
    interval=st.integers(1, 200),
    flush_records=st.integers(1, 40),
    start=st.integers(0, 39),
    records_max=st.integers(1, 50),
    bytes_max=st.integers(0, 2000),
)
def test_reads_match_a_list_for_any_batching(
    payloads: list[int],
    interval: int,
    flush_records: int,
    start: int,
    records_max: int,
    bytes_max: int,
) -> None:
    """Byte- and count-bounded reads from every offset over objects of many batches."""
    config = S3EngineConfig(linger_ms=1, index_interval_bytes=interval)
    store = SimObjectStore(random.Random(0))
    engine = S3Engine(store, "r", config=config)
    log = [Record(i, n % 7, None, b"q" * n) for i, n in enumerate(payloads)]
    for lo in range(0, len(log), flush_records):
        engine.append(log[lo : lo + flush_records])
        engine.sync()
    start = min(start, len(log))
    engine.delete_before(start)
    for engine_now in (engine, S3Engine(store, "r", config=config)):
        for offset in range(start, len(log) + 1):
            expected: list[Record] = []
            used = 0
            for rec in log[offset:]:
                if len(expected) == records_max or (expected and used + rec.size() > bytes_max):
                    break
                expected.append(rec)
                used += rec.size()
            assert engine_now.read(offset, records_max, bytes_max) == expected, offset
        for ts in range(-1, 8):
            hits = [r.offset for r in log[start:] if r.timestamp_ms >= ts]
            assert engine_now.offset_for_time(ts) == (hits[0] if hits else len(log)), ts


def test_truncate_interrupted_part_way_opens_to_a_contiguous_prefix() -> None:
    store, engine = make()
    for _ in range(4):
        engine.append(recs(3))  # objects at 0, 3, 6, 9
    store.fail_next("delete", 1, transient=False)  # the first delete (object 9) fails
    with pytest.raises(DeviceError):
        engine.truncate(4)
    assert S3Engine(store, "topic/0").end_offset() == 12
    engine = S3Engine(store, "topic/0")
    store.fail_next("put", 1, transient=False)  # objects 9 and 6 go, the rewrite of 3 fails
    with pytest.raises(DeviceError):
        engine.truncate(4)
    reopened = S3Engine(store, "topic/0")
    assert reopened.end_offset() == 6
    assert [r.offset for r in reopened.read(0, 100, 1 << 20)] == list(range(6))


def test_s3_factory_plugs_into_shard_store() -> None:
    from real.storage import ShardStore
    from real.storage.s3engine import s3_factory

    store = SimObjectStore(random.Random(0))
    shards = ShardStore(factories={"s3": s3_factory(store, "node-1")}, default_engine="s3")
    shards.create("orders")
    assert shards.append("orders", recs(2)) == 0
    assert "node-1/orders/00000000000000000000.tmqs" in store.keys()
