"""Targeted tests of `KvEngine`: layout, time index, truncation, retention, durability, poisoning.

Most run over `SimKeyValue` (its stats and crash make the claims observable); the ones about the
real store run over `RocksKeyValue` in tmp_path.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from model.devices.kv import SimKeyValue, SimKvConfig
from model.sim.dist import Dist
from real.node.rocks import RocksKeyValue
from real.storage import (
    BatchTooLarge,
    EngineClosed,
    InvalidArgument,
    InvalidRecord,
    OffsetOutOfRange,
    Record,
    StorageFull,
)
from real.storage.devices import DeviceError, Durable
from real.storage.kvengine import (
    CorruptShard,
    EnginePoisoned,
    KvEngine,
    KvEngineConfig,
    Meta,
    shard_prefix,
)
from real.storage.port import ReopenableEngine
from tests.storage.stateful import FakeClock

ALL = 1 << 30


def rec(ts: int, payload: bytes = b"p") -> Record:
    return Record(-1, ts, None, payload)


def sim_kv(seed: int = 1) -> SimKeyValue:
    return SimKeyValue(random.Random(seed))  # noqa: S311


def engine(kv: SimKeyValue | RocksKeyValue | None = None, shard: str = "s", **config: object
           ) -> KvEngine:
    return KvEngine(kv or sim_kv(), shard, FakeClock(), KvEngineConfig(**config))  # type: ignore


def brute_offset_for_time(records: list[Record], ts: int, end: int) -> int:
    return next((r.offset for r in records if r.timestamp_ms >= ts), end)


# --------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("key", "value"),
    [("fsync", "sometimes"), ("group_commit_ms", -1), ("group_commit_bytes", 0),
     ("records_max_per_append", 0), ("batch_bytes_max", 1.5), ("bytes_max_total", None)],
)
def test_config_errors_name_the_key(key: str, value: object) -> None:
    with pytest.raises(InvalidArgument, match=f"KvEngineConfig.{key}"):
        KvEngineConfig(**{key: value})  # type: ignore[arg-type]


def test_shard_names_are_validated_and_prefixes_are_prefix_free() -> None:
    with pytest.raises(InvalidArgument, match="shard"):
        shard_prefix("")
    with pytest.raises(InvalidArgument, match="1024"):
        shard_prefix("x" * 1025)
    names = ["a", "ab", "a\x00", "b", "é"]
    prefixes = [shard_prefix(n) for n in names]
    for i, p in enumerate(prefixes):
        for j, q in enumerate(prefixes):
            assert i == j or not q.startswith(p), (names[i], names[j])


def test_engine_satisfies_the_ports() -> None:
    eng = engine()
    assert isinstance(eng, ReopenableEngine)
    assert isinstance(eng, Durable)
    assert eng.kind == "rocksdb"


# --------------------------------------------------------------------------------- layout


def test_two_shards_in_one_store_do_not_see_each_other() -> None:
    kv = sim_kv()
    a, ab = engine(kv, "a"), engine(kv, "ab")
    a.append([rec(1, b"a0"), rec(2, b"a1")])
    ab.append([rec(5, b"b0")])
    ab.append([rec(6, b"b1"), rec(7, b"b2")])
    assert [r.payload for r in a.read(0, 10, ALL)] == [b"a0", b"a1"]
    assert [r.payload for r in ab.read(0, 10, ALL)] == [b"b0", b"b1", b"b2"]
    a.truncate(1)
    ab.delete_before(2)
    assert (a.start_offset(), a.end_offset()) == (0, 1)
    assert (ab.start_offset(), ab.end_offset()) == (2, 3)
    assert a.offset_for_time(5) == 1 and ab.offset_for_time(5) == 2
    a.invariants()
    ab.invariants()  # also checks that no foreign key sits under the shard's prefix
    assert [r.payload for r in engine(kv, "ab").read(2, 10, ALL)] == [b"b2"]


def test_one_value_per_append_keyed_by_base_offset() -> None:
    kv = sim_kv()
    eng = engine(kv, "s")
    assert eng.append([rec(1), rec(2), rec(3)]) == 0
    assert eng.append([]) == 3  # stores nothing
    assert eng.append([rec(4)]) == 3
    prefix = shard_prefix("s")
    batch_keys = [k for k, _ in kv.items() if k.startswith(prefix + b"b")]
    assert batch_keys == [prefix + b"b" + base.to_bytes(8, "big") for base in (0, 3)]


def test_read_is_a_seek_not_a_scan_of_the_log() -> None:
    kv = sim_kv()
    eng = engine(kv)
    for i in range(300):
        eng.append([rec(i, bytes(100)), rec(i, bytes(100))])
    before = kv.stats.bytes_read
    got = eng.read(401, 2, ALL)
    assert [r.offset for r in got] == [401, 402]
    assert kv.stats.bytes_read - before < 3 * 300  # about two batches of ~260 bytes, not 600


def test_read_limits_follow_the_port() -> None:
    eng = engine()
    eng.append([rec(0, bytes(10)) for _ in range(3)])
    eng.append([rec(0, bytes(10)) for _ in range(3)])
    size = rec(0, bytes(10)).size()
    assert [r.offset for r in eng.read(1, 10, 2 * size)] == [1, 2]
    assert [r.offset for r in eng.read(2, 10, 3 * size)] == [2, 3, 4]  # crosses a batch
    assert [r.offset for r in eng.read(5, 10, 0)] == [5]  # at least one record
    assert [r.offset for r in eng.read(0, 4, ALL)] == [0, 1, 2, 3]
    assert eng.read(6, 1, 0) == []
    with pytest.raises(OffsetOutOfRange):
        eng.read(7, 1, 0)


def test_limits_reject_and_store_nothing() -> None:
    eng = engine(records_max_per_append=2, bytes_max_total=100, batch_bytes_max=80)
    with pytest.raises(BatchTooLarge, match="records_max_per_append"):
        eng.append([rec(1)] * 3)
    with pytest.raises(BatchTooLarge, match="batch_bytes_max"):
        eng.append([rec(1, bytes(50))])
    eng.append([rec(1, bytes(20))])
    with pytest.raises(StorageFull, match="bytes_max_total"):
        eng.append([rec(1, bytes(40)), rec(1, bytes(20))])
    with pytest.raises(InvalidRecord, match="timestamp_ms"):
        eng.append([rec(-1)])
    assert eng.end_offset() == 1
    eng.invariants()


# ------------------------------------------------------------------------------ truncation


def test_truncate_inside_a_batch_rewrites_it() -> None:
    kv = sim_kv()
    eng = engine(kv)
    eng.append([rec(3, b"a"), rec(9, b"b"), rec(50, b"c"), rec(4, b"d")])
    eng.append([rec(60, b"e")])
    eng.truncate(2)
    assert [r.payload for r in eng.read(0, 10, ALL)] == [b"a", b"b"]
    assert eng.bytes_total() == rec(3, b"a").size() + rec(9, b"b").size()
    assert eng.offset_for_time(10) == 2  # 50 and 60 are gone from the index
    assert eng.offset_for_time(9) == 1
    assert eng.append([rec(7, b"f")]) == 2
    assert eng.offset_for_time(8) == 1
    eng.invariants()
    again = eng.reopen()
    assert [r.payload for r in again.read(0, 10, ALL)] == [b"a", b"b", b"f"]
    assert again.bytes_total() == eng.bytes_total()


def test_truncate_at_a_batch_boundary_and_to_start() -> None:
    eng = engine()
    eng.append([rec(5), rec(6)])
    eng.append([rec(1), rec(2)])
    eng.truncate(2)
    assert eng.end_offset() == 2 and eng.offset_for_time(6) == 1
    eng.invariants()
    eng.truncate(0)
    assert (eng.start_offset(), eng.end_offset(), eng.bytes_total()) == (0, 0, 0)
    assert eng.offset_for_time(0) == 0
    eng.invariants()
    with pytest.raises(OffsetOutOfRange):
        eng.truncate(1)


# ------------------------------------------------------------------------------- retention


def test_delete_before_mid_batch_then_reopen() -> None:
    kv = sim_kv()
    eng = engine(kv)
    eng.append([rec(1, b"a"), rec(2, b"b"), rec(3, b"c")])
    eng.append([rec(4, b"d")])
    eng.delete_before(1)
    eng.delete_before(0)  # at or below start: no-op
    assert eng.start_offset() == 1
    assert eng.bytes_total() == sum(rec(t, p).size() for t, p in [(2, b"b"), (3, b"c"), (4, b"d")])
    eng.close()
    again = eng.reopen()
    again.invariants()
    assert again.start_offset() == 1 and again.end_offset() == 4
    assert [r.payload for r in again.read(1, 10, ALL)] == [b"b", b"c", b"d"]
    with pytest.raises(OffsetOutOfRange):
        again.read(0, 1, ALL)
    assert again.offset_for_time(0) == 1
    again.delete_before(4)
    assert (again.start_offset(), again.end_offset(), again.bytes_total()) == (4, 4, 0)
    assert again.append([rec(9)]) == 4
    again.invariants()
    with pytest.raises(OffsetOutOfRange):
        again.delete_before(6)


def test_time_index_with_non_monotonic_timestamps() -> None:
    batches = [[5, 3], [1], [40, 2], [7], [41, 39], [0], [100], [50, 60]]
    eng = engine()
    log: list[Record] = []
    for ts_list in batches:
        base = eng.append([rec(t) for t in ts_list])
        log += [Record(base + i, t, None, b"p") for i, t in enumerate(ts_list)]
    for ts in range(-1, 103):
        assert eng.offset_for_time(ts) == brute_offset_for_time(log, ts, eng.end_offset()), ts
    # Retention drops the outliers 40 and 41: later entries must be recomputed, not reused.
    for cut in (3, 5, 8, 11):
        eng.delete_before(cut)
        kept = [r for r in log if r.offset >= cut]
        for ts in range(-1, 103):
            got = eng.offset_for_time(ts)
            assert got == brute_offset_for_time(kept, ts, eng.end_offset()), (cut, ts)
        eng.invariants()


def test_offset_for_time_is_a_seek() -> None:
    kv = sim_kv()
    eng = engine(kv)
    for i in range(500):
        eng.append([rec(i * 2), rec(i * 2 + 1)])
    scans, gets = kv.stats.scans, kv.stats.gets
    assert eng.offset_for_time(777) == 777
    assert (kv.stats.scans - scans, kv.stats.gets - gets) == (1, 1)


# ------------------------------------------------------------------------------ durability


def test_always_is_durable_on_every_append() -> None:
    kv = sim_kv()
    eng = engine(kv, fsync="always")
    eng.append([rec(1)])
    assert eng.durable_end() == 1 and kv.unsynced_batches == 0
    assert eng.next_flush_ms() is None


def test_group_commit_lags_then_poll_makes_durable() -> None:
    kv, clock = sim_kv(), FakeClock(100)
    eng = KvEngine(kv, "g", clock, KvEngineConfig(fsync="group", group_commit_ms=5,
                                                  group_commit_bytes=10_000))
    eng.append([rec(1)])
    clock.advance(2)
    eng.append([rec(2)])
    assert (eng.end_offset(), eng.durable_end(), kv.unsynced_batches) == (2, 0, 2)
    assert eng.next_flush_ms() == 105  # from the oldest undurable append
    eng.poll(104)
    assert eng.durable_end() == 0
    syncs = kv.stats.syncs
    eng.poll(105)
    assert (eng.durable_end(), kv.unsynced_batches, kv.stats.syncs) == (2, 0, syncs + 1)
    assert eng.next_flush_ms() is None
    eng.poll(1000)  # idle: no sync
    assert kv.stats.syncs == syncs + 1


def test_group_commit_byte_threshold_is_due_at_once() -> None:
    clock = FakeClock(0)
    eng = KvEngine(sim_kv(), "g", clock, KvEngineConfig(fsync="group", group_commit_ms=1000,
                                                        group_commit_bytes=200))
    eng.append([rec(1, bytes(50))])
    assert eng.next_flush_ms() == 1000
    clock.advance(3)
    eng.append([rec(1, bytes(200))])
    assert eng.next_flush_ms() == 0  # already due
    eng.poll(3)
    assert eng.durable_end() == 2


def test_never_advances_only_on_sync_or_close() -> None:
    kv = sim_kv()
    eng = engine(kv, fsync="never")
    eng.append([rec(1)])
    eng.poll(10**9)
    assert (eng.durable_end(), eng.next_flush_ms()) == (0, None)
    eng.sync()
    assert eng.durable_end() == 1
    eng.append([rec(2)])
    eng.close()
    assert kv.unsynced_batches == 0


@pytest.mark.parametrize("fsync", ["group", "never"])
def test_truncate_and_delete_before_are_durable_on_return(fsync: str) -> None:
    kv = sim_kv()
    eng = engine(kv, fsync=fsync)
    eng.append([rec(1), rec(2), rec(3)])
    eng.append([rec(4)])
    eng.delete_before(1)
    assert kv.unsynced_batches == 0 and eng.durable_end() == 4
    eng.append([rec(5)])
    eng.truncate(3)
    assert kv.unsynced_batches == 0 and eng.durable_end() == 3
    kv.crash()
    again = eng.reopen()
    assert (again.start_offset(), again.end_offset()) == (1, 3)


def test_crash_keeps_a_prefix_of_unsynced_appends() -> None:
    outcomes = set()
    for seed in range(30):
        kv = sim_kv(seed)
        eng = engine(kv, fsync="never")
        eng.append([rec(1)])
        eng.sync()
        for i in range(4):
            eng.append([rec(i), rec(i)])
        kv.crash()
        again = eng.reopen()
        again.invariants()
        assert again.end_offset() in (1, 3, 5, 7, 9)  # whole appends only
        assert again.end_offset() >= 1
        assert again.durable_end() == again.end_offset()
        outcomes.add(again.end_offset())
    assert 1 in outcomes and 9 in outcomes and len(outcomes) >= 4


# ------------------------------------------------------------------------------ errors


def test_device_error_poisons_the_engine() -> None:
    kv = sim_kv()
    eng = engine(kv)
    eng.append([rec(1)])
    kv.inject_error(op="write")
    with pytest.raises(DeviceError, match="injected"):
        eng.append([rec(2)])
    for call in (lambda: eng.append([rec(3)]), lambda: eng.read(0, 1, 1), eng.sync,
                 lambda: eng.truncate(0), lambda: eng.offset_for_time(0), lambda: eng.poll(0)):
        poisoned = r"poisoned by an earlier device error \(in append\).*injected"
        with pytest.raises(EnginePoisoned, match=poisoned):
            call()
    eng.close()
    with pytest.raises(EngineClosed):
        eng.read(0, 1, 1)
    again = eng.reopen()
    assert again.end_offset() == 1  # the failed write had no effect
    again.invariants()


def test_a_failed_group_sync_poisons_and_keeps_durable_end() -> None:
    kv = sim_kv()
    eng = engine(kv, fsync="group", group_commit_ms=1)
    eng.append([rec(1)])
    kv.inject_error(op="sync")
    with pytest.raises(DeviceError):
        eng.poll(5)
    assert eng.durable_end() == 0
    with pytest.raises(EnginePoisoned):
        eng.poll(6)


def test_a_failed_read_poisons_too() -> None:
    kv = sim_kv()
    eng = engine(kv)
    eng.append([rec(1)])
    kv.inject_error(op="scan")
    with pytest.raises(DeviceError):
        eng.read(0, 1, 1)
    with pytest.raises(EnginePoisoned):
        eng.read(0, 1, 1)


def test_recovery_detects_inconsistent_state() -> None:
    kv = sim_kv()
    eng = engine(kv, "s")
    eng.append([rec(1), rec(2)])
    prefix = shard_prefix("s")
    kv.write(deletes=[prefix + b"m"])
    with pytest.raises(CorruptShard, match="no meta"):
        engine(kv, "s")
    kv.write(puts=[(prefix + b"m", b"\x01" + bytes(40))])
    with pytest.raises(CorruptShard, match="meta says empty at 0, but batch key"):
        engine(kv, "s")
    kv.write(puts=[(prefix + b"m", Meta(0, 5, 0, 999, 2).encode())])
    with pytest.raises(CorruptShard, match="ends at 2 with .* meta says end 5"):
        engine(kv, "s")
    kv.write(puts=[(prefix + b"m", Meta(1, 2, 0, 999, 2).encode())])
    with pytest.raises(CorruptShard, match="first batch .* expected offset 1"):
        engine(kv, "s")
    kv.write(puts=[(prefix + b"m", b"\x07" + bytes(40))])
    with pytest.raises(CorruptShard, match="version"):
        engine(kv, "s")


def test_closed_engine_raises() -> None:
    eng = engine()
    eng.close()
    eng.close()  # idempotent
    with pytest.raises(EngineClosed, match="closed rocksdb engine"):
        eng.append([])


# ------------------------------------------------------------------------------ real RocksDB


def test_rocks_survives_closing_and_reopening_the_database(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    kv = RocksKeyValue(path)
    eng = engine(kv, "t/1", fsync="never")
    eng.append([rec(3, b"x"), rec(1, b"y")])
    eng.append([rec(7, b"z")])
    eng.delete_before(1)
    eng.append([rec(2, b"w")])  # not synced: in the WAL, survives a clean process restart
    kv.close()
    kv2 = RocksKeyValue(path)
    again = engine(kv2, "t/1")
    again.invariants()
    assert [r.payload for r in again.read(1, 10, ALL)] == [b"y", b"z", b"w"]
    assert again.offset_for_time(5) == 2
    kv2.close()


def test_sim_latency_is_charged_per_operation() -> None:
    fixed = SimKvConfig(write_latency=Dist("fixed", 0.01), sync_latency=Dist("fixed", 0.1),
                        read_latency=Dist("fixed", 0.005))
    kv = SimKeyValue(random.Random(0), fixed)  # noqa: S311
    eng = engine(kv, fsync="always")
    kv.take_elapsed_us()
    eng.append([rec(1)])
    elapsed = kv.take_elapsed_us()
    assert elapsed >= 10 + 100  # one write, one sync
    assert elapsed < 10 + 100 + 5  # plus bytes at 1 GB/s (well under a microsecond each)
