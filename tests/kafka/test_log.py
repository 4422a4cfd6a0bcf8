"""PartitionLog over the memory engine and the file journal (real files in tmp_path): offsets,
fetch bounds, the high watermark, idempotent producers, reopen, retention, limits; plus a bench of
the produce and fetch paths (`-m bench`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record import default_records as kp

from real.kafka import errors
from real.kafka.log import (
    PRODUCER_BATCHES,
    AppendResult,
    CorruptPartition,
    PartitionLog,
)
from real.kafka.records import (
    CODEC_LZ4,
    HEADER,
    KRecord,
    build_batch,
    decode_batch,
    decode_batches,
    split_batches,
)
from real.node.osfs import OsFileSystem
from real.storage import MemoryEngine, Record
from real.storage.journal import JournalConfig, JournalEngine
from real.storage.port import ShardEngine


class Engines:
    """Opens and reopens one shard's engine of a given kind (file: a journal in tmp_path)."""

    def __init__(self, kind: str, root: Path, **journal: object) -> None:
        self.kind, self.root, self.now_ms = kind, root, 0
        self.journal = JournalConfig(**journal)  # type: ignore[arg-type]

    def open(self) -> ShardEngine:
        if self.kind == "memory":
            return MemoryEngine()
        return JournalEngine(OsFileSystem(str(self.root)), "p0", lambda: self.now_ms, self.journal)

    def reopen(self, log: PartitionLog) -> PartitionLog:
        engine = log._engine
        log.close()
        fresh = engine.reopen()  # type: ignore[attr-defined]
        return PartitionLog(fresh)


@pytest.fixture(params=["memory", "file"])
def engines(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engines]:
    yield Engines(request.param, tmp_path)


def recs(n: int, ts: int = 1000, size: int = 10, tag: int = 0) -> list[KRecord]:
    return [KRecord(i, ts + i, b"k%d" % tag, bytes([tag % 256]) * size) for i in range(n)]


def produce(log: PartitionLog, batch: bytes, now_ms: int = 0) -> AppendResult:
    return log.append(batch, split_batches(batch), now_ms)


def idem(pid: int, epoch: int, seq: int, n: int = 2) -> bytes:
    return build_batch(recs(n, tag=seq), producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def all_records(log: PartitionLog) -> list[KRecord]:
    code, data = log.fetch(log.log_start_offset, 1 << 30, log.log_end_offset)
    assert code == errors.NONE
    return decode_batches(data)


# ----------------------------------------------------------------------------- append/fetch


def test_append_assigns_kafka_offsets_and_rewrites_stored_headers(engines: Engines) -> None:
    log = PartitionLog(engines.open())
    assert (log.log_start_offset, log.log_end_offset, log.shard_end) == (0, 0, 0)
    first = produce(log, build_batch(recs(3)))
    second = produce(log, build_batch(recs(5, tag=1), base_offset=999, compression=CODEC_LZ4))
    assert first == AppendResult(errors.NONE, 0, -1, 0, 1)
    assert second == AppendResult(errors.NONE, 3, -1, 0, 2)
    assert (log.log_end_offset, log.shard_end) == (8, 2)
    code, data = log.fetch(0, 1 << 20, 8)
    infos = split_batches(data, produce=False)
    assert code == errors.NONE
    assert [(i.base_offset, HEADER.unpack_from(data, i.pos)[2]) for i in infos] == [(0, 0), (3, 0)]
    for info in infos:  # the stored bytes still carry a CRC that Kafka clients accept
        one = bytearray(data[info.pos : info.pos + info.size])
        assert kp.DefaultRecordBatch(one).validate_crc()
    assert [r.offset for r in decode_batches(data)] == list(range(8))
    log.invariants()


def test_fetch_bounds(engines: Engines) -> None:
    log = PartitionLog(engines.open())
    batches = [build_batch(recs(4, size=500, tag=t)) for t in range(3)]  # offsets 0-3, 4-7, 8-11
    for batch in batches:
        assert produce(log, batch).error_code == errors.NONE
    # max_bytes below the first batch still returns that one whole batch
    assert log.fetch(0, 1, 12) == (errors.NONE, log.fetch(0, 1, 4)[1])
    assert len(log.fetch(0, 1, 12)[1]) == len(batches[0])
    # an offset inside a batch returns the whole batch (clients skip the records below it)
    assert [r.offset for r in decode_batches(log.fetch(6, 1 << 20, 12)[1])] == list(range(4, 12))
    # upto = the high watermark: batches past it stay invisible, even when max_bytes allows them
    assert [r.offset for r in decode_batches(log.fetch(0, 1 << 20, 8)[1])] == list(range(8))
    assert log.fetch(8, 1 << 20, 8) == (errors.NONE, b"")
    assert log.fetch(0, 1 << 20, 6)[1] == log.fetch(0, 1 << 20, 4)[1]  # a cut batch is withheld
    assert log.fetch(12, 1 << 20, 12) == (errors.NONE, b"")
    assert log.fetch(13, 1 << 20, 12) == (errors.OFFSET_OUT_OF_RANGE, b"")
    assert log.fetch(-1, 1 << 20, 12) == (errors.OFFSET_OUT_OF_RANGE, b"")
    # two batches fit in max_bytes; the engine counts 24 bytes of overhead per batch
    two = len(batches[0]) + len(batches[1]) + 48
    assert len(decode_batches(log.fetch(0, two, 12)[1])) == 8
    assert len(decode_batches(log.fetch(0, two - 1, 12)[1])) == 4


def test_high_watermark_follows_the_journal_group_commit(tmp_path: Path) -> None:
    engines = Engines("file", tmp_path, fsync="group", group_commit_ms=5)
    engine = engines.open()
    log = PartitionLog(engine)
    first = produce(log, build_batch(recs(3)))
    engine.poll(10)  # the first batch becomes durable
    second = produce(log, build_batch(recs(2)))
    assert (first.shard_end, second.shard_end) == (1, 2)
    assert engine.durable_end() == 1  # type: ignore[attr-defined]
    assert log.high_watermark(engine.durable_end()) == 3  # type: ignore[attr-defined]
    assert len(decode_batches(log.fetch(0, 1 << 20, 3)[1])) == 3
    engine.sync()
    assert log.high_watermark(engine.durable_end()) == 5  # type: ignore[attr-defined]
    assert log.high_watermark(0) == 0


def test_reopen_rebuilds_the_same_index_and_producer_state(engines: Engines) -> None:
    log = PartitionLog(engines.open())
    for seq in range(0, 14, 2):
        assert produce(log, idem(7, 0, seq)).error_code == errors.NONE
    assert produce(log, idem(8, 3, 40, n=1)).error_code == errors.NONE
    assert produce(log, build_batch(recs(3))).error_code == errors.NONE
    before, records = log.state(), all_records(log)
    again = engines.reopen(log)
    again.invariants()
    assert again.state() == before
    assert all_records(again) == records
    assert (again.log_start_offset, again.log_end_offset) == (0, 18)
    # the rebuilt producer state still recognises a retry and still checks the sequence
    assert produce(again, idem(7, 0, 12)).duplicate
    assert produce(again, idem(7, 0, 15)).error_code == errors.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert produce(again, idem(7, 0, 14)).base_offset == 18


def test_a_shard_that_holds_no_kafka_batches_is_refused() -> None:
    engine = MemoryEngine()
    engine.append([Record(-1, 1, None, b"not a batch")])
    with pytest.raises(CorruptPartition, match="shard offset 0: payload is not a magic-2 batch"):
        PartitionLog(engine)
    gap = MemoryEngine()
    gap.append([Record(-1, 1, None, build_batch(recs(2), base_offset=b)) for b in (0, 5)])
    with pytest.raises(CorruptPartition, match="shard offset 1: batch base offset 5, expected 2"):
        PartitionLog(gap)


# ------------------------------------------------------------------------------ idempotence


def test_duplicates_of_the_last_five_batches_return_their_original_offsets(
    engines: Engines,
) -> None:
    log = PartitionLog(engines.open())
    firsts = [produce(log, idem(1, 0, seq)).base_offset for seq in range(0, 12, 2)]  # 6 batches
    assert firsts == list(range(0, 12, 2))
    end = (log.log_end_offset, log.shard_end)
    for seq in range(2, 12, 2):  # the last five are remembered
        dup = produce(log, idem(1, 0, seq))
        assert (dup.error_code, dup.base_offset, dup.duplicate) == (errors.NONE, seq, True)
        assert dup.shard_end == seq // 2 + 1  # what must be durable: the original's record
    assert (log.log_end_offset, log.shard_end) == end  # nothing was stored
    oldest = produce(log, idem(1, 0, 0))  # forgotten: now just out of order
    assert oldest.error_code == errors.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert oldest.base_offset == -1
    assert produce(log, idem(1, 0, 12)).base_offset == 12


def test_sequence_gaps_epochs_and_unknown_producers(engines: Engines) -> None:
    log = PartitionLog(engines.open())
    assert produce(log, idem(1, 0, 42)).error_code == errors.NONE  # unknown pid: any sequence
    gap = produce(log, idem(1, 0, 45))
    assert (gap.error_code, gap.error_message) == (
        errors.OUT_OF_ORDER_SEQUENCE_NUMBER, "producer 1 sequence 45, expected 44")
    assert produce(log, idem(1, 1, 5)).error_code == errors.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert produce(log, idem(1, 1, 0)).error_code == errors.NONE  # a bump restarts at 0
    fenced = produce(log, idem(1, 0, 44))
    assert fenced.error_code == errors.INVALID_PRODUCER_EPOCH
    assert produce(log, idem(1, 1, 42)).error_code == errors.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert produce(log, idem(1, 1, 2)).error_code == errors.NONE
    assert log.log_end_offset == 6


def test_sequences_wrap_at_two_to_the_31(engines: Engines) -> None:
    log = PartitionLog(engines.open())
    assert produce(log, idem(3, 0, 2**31 - 2, n=3)).error_code == errors.NONE  # ends at seq 0
    assert produce(log, idem(3, 0, 0)).error_code == errors.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert produce(log, idem(3, 0, 1)).base_offset == 3
    assert produce(log, idem(3, 0, 2**31 - 2, n=3)).duplicate


def test_a_multi_batch_append_is_all_or_nothing(engines: Engines) -> None:
    log = PartitionLog(engines.open())
    good = idem(5, 0, 0) + idem(5, 0, 2)  # the second follows the first inside one append
    assert produce(log, good) == AppendResult(errors.NONE, 0, -1, 0, 2)
    bad = idem(5, 0, 4) + idem(5, 0, 9)
    assert produce(log, bad).error_code == errors.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert (log.log_end_offset, log.shard_end) == (4, 2)
    assert produce(log, idem(5, 0, 4)).base_offset == 4  # the rejected append left no state


def test_producer_state_is_bounded(engines: Engines) -> None:
    log = PartitionLog(engines.open(), producers_max=2)
    for pid in (1, 2, 3):
        assert produce(log, idem(pid, 0, 0)).error_code == errors.NONE
    assert sorted(log.state()[2]) == [2, 3]  # pid 1 appended least recently
    assert not produce(log, idem(1, 0, 0)).duplicate  # forgotten: unknown again, so accepted
    assert produce(log, idem(3, 0, 0)).duplicate
    assert all(len(p.batches) <= PRODUCER_BATCHES for p in log.state()[2].values())


# ------------------------------------------------------------------------------ time, limits


def test_offset_for_time_decodes_the_straddling_batch(engines: Engines) -> None:
    log = PartitionLog(engines.open())
    produce(log, build_batch([KRecord(0, t, None, b"x") for t in (100, 90, 130)]))  # 0-2
    produce(log, build_batch([KRecord(0, t, None, b"y") for t in (120, 200, 150)]))  # 3-5
    produce(log, build_batch([KRecord(0, t, None, b"z") for t in (-5, -3)]))  # 6-7, clamped
    assert log.offset_for_time(0) == (0, 100)
    assert log.offset_for_time(95) == (0, 100)
    assert log.offset_for_time(101) == (2, 130)
    assert log.offset_for_time(131) == (4, 200)
    assert log.offset_for_time(200) == (4, 200)
    assert log.offset_for_time(201) == (-1, -1)


def test_negative_timestamps_are_clamped_only_in_the_shard_record() -> None:
    engine = MemoryEngine()
    log = PartitionLog(engine)
    produce(log, build_batch([KRecord(0, -1, None, b"a")]))
    (stored,) = engine.read(0, 1, 1 << 20)
    assert stored.timestamp_ms == 0
    assert decode_batch(stored.payload)[0].timestamp_ms == -1


def test_limits_become_kafka_errors_and_store_nothing() -> None:
    log = PartitionLog(MemoryEngine(bytes_max_total=2000), batch_bytes_max=1500)
    big = produce(log, build_batch(recs(2, size=800)))
    assert (big.error_code, big.base_offset) == (errors.MESSAGE_TOO_LARGE, -1)
    assert produce(log, build_batch(recs(1, size=1000))).error_code == errors.NONE
    full = produce(log, build_batch(recs(1, size=1000)))
    assert full.error_code == errors.KAFKA_STORAGE_ERROR
    assert "bytes_max_total" in (full.error_message or "")
    many = PartitionLog(MemoryEngine(records_max_per_append=1))
    two = build_batch(recs(1)) + build_batch(recs(1))
    assert produce(many, two).error_code == errors.RECORD_LIST_TOO_LARGE
    assert many.log_end_offset == 0
    assert log.append(b"", [], 0).error_code == errors.INVALID_RECORD


def test_append_records_bridges_plain_records(engines: Engines) -> None:
    log = PartitionLog(engines.open())
    result = log.append_records([KRecord(0, -1, None, b"a"), KRecord(0, 7, b"k", None)], 500)
    assert (result.error_code, result.base_offset) == (errors.NONE, 0)
    assert [(r.timestamp_ms, r.key, r.value) for r in all_records(log)] == [
        (500, None, b"a"), (7, b"k", None)]
    assert log.append_records([], 0).error_code == errors.INVALID_RECORD


# -------------------------------------------------------------------------------- retention


def test_delete_before_drops_whole_batches_and_keeps_the_last(engines: Engines) -> None:
    log = PartitionLog(engines.open())
    produce(log, idem(1, 0, 0, n=3))  # 0-2
    produce(log, build_batch(recs(3)))  # 3-5
    produce(log, idem(2, 0, 0, n=3))  # 6-8
    assert log.delete_before(4) == 3  # the batch holding 4 stays
    assert log.fetch(2, 1 << 20, 9) == (errors.OFFSET_OUT_OF_RANGE, b"")
    assert [r.offset for r in all_records(log)] == list(range(3, 9))
    assert sorted(log.state()[2]) == [2]  # producer 1's batches are gone: forgotten
    assert log.delete_before(100) == 6  # never the last batch
    assert log.delete_before(2) == 6  # below the start: no-op
    again = engines.reopen(log)
    assert (again.log_start_offset, again.log_end_offset, again.shard_end) == (6, 9, 3)
    assert again.state() == log.state()
    assert produce(again, build_batch(recs(1))).base_offset == 9
    assert again.high_watermark(2) == 6
    again.invariants()


# --------------------------------------------------------------------------- model check


@given(st.lists(st.tuples(st.integers(1, 5), st.sampled_from([0, 1, 3])), min_size=1,
                max_size=12), st.integers(0, 30), st.integers(0, 2000))
@settings(max_examples=40, deadline=None)
def test_fetch_matches_a_list_model(sizes: list[tuple[int, int]], start: int,
                                    max_bytes: int) -> None:
    log = PartitionLog(MemoryEngine())
    model: list[tuple[int, int]] = []  # (kafka offset, batch number) per record
    sizes_bytes: list[int] = []
    for number, (n, codec) in enumerate(sizes):
        batch = build_batch(recs(n, size=50, tag=number), compression=codec)
        assert produce(log, batch).base_offset == len(model)
        model += [(len(model) + i, number) for i in range(n)]
        sizes_bytes.append(len(batch))
    start = min(start, len(model))
    code, data = log.fetch(start, max_bytes, len(model))
    got = [(r.offset, r.value[0]) for r in decode_batches(data)]
    assert code == errors.NONE
    if start == len(model):
        assert got == []
        return
    first = model[start][1]
    taken, used = 1, 24 + sizes_bytes[first]  # Kafka style: at least one batch
    while first + taken < len(sizes_bytes) and used + 24 + sizes_bytes[first + taken] <= max_bytes:
        used += 24 + sizes_bytes[first + taken]
        taken += 1
    assert got == [m for m in model if first <= m[1] < first + taken]
    assert got[0][0] <= start < got[-1][0] + 1

# --------------------------------------------------------------------------------- speed


def timed(fn: Callable[[], object], n: int, repeat: int = 5) -> float:
    """Seconds per call: the best of `repeat` runs of n calls (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


@pytest.mark.bench
def test_bench_produce_and_fetch_paths() -> None:
    batch = build_batch([KRecord(i, 1000, None, bytes(1024)) for i in range(16)])
    assert 16 * 1024 < len(batch) < 17 * 1024
    n, repeat = 1000, 5
    split = timed(lambda: split_batches(batch), n, repeat)
    # growing: every stored batch is a fresh 16 KiB object, so first-touch page faults count
    log = PartitionLog(MemoryEngine(bytes_max_total=1 << 31))
    total = timed(lambda: log.append(batch, split_batches(batch), 0), n, repeat)
    bare = MemoryEngine(bytes_max_total=1 << 31)  # the engine's own append, records prebuilt
    ready = iter([Record(i, 1000, None, batch) for i in range(n * repeat)])
    engine_only = timed(lambda: bare.append([next(ready)]), n, repeat)
    fetch = timed(lambda: log.fetch(0, 1 << 20, log.log_end_offset), 100)
    assert len(log.fetch(0, 1 << 20, log.log_end_offset)[1]) > (1 << 20) - len(batch)
    # steady state: retention keeps each log at <= 64 batches, so freed memory is reused
    steady_log = PartitionLog(MemoryEngine(bytes_max_total=1 << 31))

    def steady() -> None:
        steady_log.append(batch, split_batches(batch), 0)
        if steady_log.shard_end % 64 == 0:
            steady_log.delete_before(steady_log.log_end_offset)

    steady_total = timed(steady, n, repeat)
    bare2 = MemoryEngine(bytes_max_total=1 << 31)
    ready2 = iter([Record(i, 1000, None, batch) for i in range(n * repeat)])

    def bare_steady() -> None:
        bare2.append([next(ready2)])
        if bare2.end_offset() % 64 == 0:
            bare2.delete_before(bare2.end_offset() - 1)

    steady_engine = timed(bare_steady, n, repeat)
    mb = len(batch) / 1e6
    print(f"\nsplit_batches {split * 1e6:.1f} us\n"
          f"growing log: split+append {total * 1e6:.1f} us/batch ({16 / total:,.0f} records/s, "
          f"{mb / total:,.0f} MB/s), engine alone {engine_only * 1e6:.1f} us, path minus engine "
          f"{(total - engine_only) * 1e6:.1f} us\n"
          f"steady state: split+append {steady_total * 1e6:.1f} us ({16 / steady_total:,.0f} "
          f"records/s, {mb / steady_total:,.0f} MB/s), engine alone {steady_engine * 1e6:.1f} us,"
          f" path minus engine {(steady_total - steady_engine) * 1e6:.1f} us\n"
          f"fetch 1 MiB {fetch * 1e6:.0f} us ({1.048576 / fetch:,.0f} MB/s)")
    # target 20 us; this shared 2-core VM runs Python ~4x slower than a desktop and is noisy
    assert steady_total - steady_engine < 25e-6
