"""RecordBatch v2: interop with kafka-python's and aiokafka's batch code for every codec, the
header checks of `split_batches` (one per rejection), offset rewriting and the codecs' framings."""

from __future__ import annotations

import struct

import cramjam
import pytest
from aiokafka.record import default_records as aio
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record import default_records as kp

from real.kafka import errors
from real.kafka.records import (
    CODEC_GZIP,
    CODEC_NONE,
    CODEC_SNAPPY,
    CODEC_ZSTD,
    CONTROL_MASK,
    HEADER,
    TIMESTAMP_TYPE_MASK,
    TRANSACTIONAL_MASK,
    XERIAL_MAGIC,
    KRecord,
    RecordsError,
    build_batch,
    compress,
    decode_batch,
    decode_batches,
    decompress,
    split_batches,
    with_base_offset,
)
from real.storage.crc32c import crc32c

CODECS = [0, 1, 2, 3, 4]
CODEC_IDS = ["none", "gzip", "snappy", "lz4", "zstd"]


def sample(n: int = 6, base_ts: int = 1_700_000_000_000) -> list[KRecord]:
    return [
        KRecord(i, base_ts + (i * 7) % 5, None if i == 2 else b"key%d" % i,
                None if i == 3 else b"value-%d-" % i + b"x" * (i * 40),
                (("trace", b"t%d" % i), ("empty", None)) if i % 2 else ())
        for i in range(n)
    ]


def reframe(batch: bytes, *, attributes: int | None = None, body: bytes | None = None,
            count: int | None = None, last_delta: int | None = None,
            pid: tuple[int, int, int] | None = None) -> bytes:
    """`batch` with header fields replaced and a fresh, correct CRC and length."""
    fields = list(HEADER.unpack_from(batch))
    if attributes is not None:
        fields[5] = attributes
    if last_delta is not None:
        fields[6] = last_delta
    if pid is not None:
        fields[9], fields[10], fields[11] = pid
    if count is not None:
        fields[12] = count
    body = batch[61:] if body is None else body
    fields[1] = 49 + len(body)
    head = bytearray(HEADER.pack(*fields))
    crc = crc32c(bytes(head[21:]) + body)
    struct.pack_into(">I", head, 17, crc)
    return bytes(head) + body


# ------------------------------------------------------------------------------- interop


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
def test_kafka_python_reads_our_batches(codec: int) -> None:
    recs = sample()
    ours = build_batch(recs, base_offset=100, compression=codec, producer_id=9,
                       producer_epoch=2, base_sequence=17)
    theirs = kp.DefaultRecordBatch(bytearray(ours))
    assert theirs.validate_crc()
    assert (theirs.base_offset, theirs.compression_type) == (100, codec)
    assert (theirs.producer_id, theirs.producer_epoch, theirs.base_sequence) == (9, 2, 17)
    assert theirs.last_offset_delta == len(recs) - 1
    assert theirs.max_timestamp == max(r.timestamp_ms for r in recs)
    got = [(r.offset, r.timestamp, r.key, r.value, [tuple(h) for h in r.headers])
           for r in theirs]
    assert got == [(100 + r.offset, r.timestamp_ms, r.key, r.value, list(r.headers))
                   for r in recs]


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
def test_we_read_kafka_python_batches(codec: int) -> None:
    recs = sample()
    builder = kp.DefaultRecordBatchBuilder(
        magic=2, compression_type=codec, is_transactional=False, producer_id=4,
        producer_epoch=0, base_sequence=2**31 - 3, batch_size=1 << 20)
    for r in recs:
        assert builder.append(r.offset, r.timestamp_ms, r.key, r.value, list(r.headers))
    data = bytes(builder.build())
    (info,) = split_batches(data)
    assert (info.pos, info.size, info.record_count, info.compression) == (
        0, len(data), len(recs), codec)
    assert (info.producer_id, info.producer_epoch, info.base_sequence) == (4, 0, 2**31 - 3)
    assert info.last_sequence == 2  # 2**31 - 3 + 5 wraps modulo 2**31
    assert info.first_timestamp == recs[0].timestamp_ms
    assert info.max_timestamp == max(r.timestamp_ms for r in recs)
    assert decode_batch(data) == recs


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
def test_aiokafka_round_trips_both_ways(codec: int) -> None:
    recs = sample()
    builder = aio.DefaultRecordBatchBuilder(2, codec, 0, -1, -1, -1, 1 << 20)
    for r in recs:
        assert builder.append(r.offset, r.timestamp_ms, r.key, r.value, list(r.headers))
    data = bytes(builder.build())
    (info,) = split_batches(data)
    assert (info.producer_id, info.base_sequence, info.compression) == (-1, -1, codec)
    assert decode_batch(data) == recs
    ours = build_batch(recs, base_offset=7, compression=codec)
    theirs = aio.DefaultRecordBatch(ours)
    assert theirs.validate_crc()
    assert (theirs.base_offset, theirs.compression_type, theirs.next_offset) == (7, codec, 13)
    got = [(r.offset, r.timestamp, r.key, r.value, list(map(tuple, r.headers))) for r in theirs]
    assert got == [(7 + r.offset, r.timestamp_ms, r.key, r.value, list(r.headers)) for r in recs]


def test_raw_snappy_as_librdkafka_writes_it_decodes() -> None:
    recs = sample()
    plain = build_batch(recs)
    raw = bytes(cramjam.snappy.compress_raw(plain[61:]))
    batch = reframe(plain, attributes=CODEC_SNAPPY, body=raw)
    assert not raw.startswith(XERIAL_MAGIC)
    assert decode_batch(batch) == recs
    assert kp.DefaultRecordBatch(bytearray(batch)).validate_crc()


def test_xerial_snappy_spans_several_blocks() -> None:
    data = bytes(range(256)) * 600  # 150 KiB: five 32 KiB blocks
    packed = compress(CODEC_SNAPPY, data)
    assert packed.startswith(XERIAL_MAGIC)
    assert decompress(CODEC_SNAPPY, packed) == data
    assert decompress(CODEC_SNAPPY, bytes(cramjam.snappy.compress_raw(data))) == data


@pytest.mark.parametrize("codec", CODECS[1:], ids=CODEC_IDS[1:])
def test_decompress_limits_and_garbage(codec: int) -> None:
    packed = compress(codec, b"\x00" * 100_000)
    assert decompress(codec, packed) == b"\x00" * 100_000
    with pytest.raises(RecordsError, match="exceed 1000 bytes") as info:
        decompress(codec, packed, max_bytes=1000)
    assert info.value.error_code == errors.CORRUPT_MESSAGE
    with pytest.raises(RecordsError, match="does not decode|xerial|exceed") as info:
        decompress(codec, b"\x82SNAPPY\x00" + b"\xff" * 40 if codec == 2 else b"\xff" * 40)
    assert info.value.error_code == errors.CORRUPT_MESSAGE


@given(st.lists(st.tuples(
    st.integers(-(2**40), 2**40), st.none() | st.binary(max_size=300),
    st.none() | st.binary(max_size=300),
    st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=8)), max_size=3),
), min_size=1, max_size=8), st.sampled_from(CODECS))
@settings(max_examples=60, deadline=None)
def test_build_decode_round_trip(items: list, codec: int) -> None:
    recs = [KRecord(i, ts, k, v, tuple(h)) for i, (ts, k, v, h) in enumerate(items)]
    batch = build_batch(recs, base_offset=2**40, compression=codec)
    assert decode_batch(batch) == [r._replace(offset=2**40 + r.offset) for r in recs]
    assert kp.DefaultRecordBatch(bytearray(batch)).validate_crc()


# ----------------------------------------------------------------------------- validation


def test_split_finds_every_batch_of_a_blob() -> None:
    a, b = build_batch(sample(3)), build_batch(sample(1), compression=CODEC_GZIP)
    infos = split_batches(a + b)
    assert [(i.pos, i.size, i.record_count) for i in infos] == [(0, len(a), 3), (len(a), len(b), 1)]
    assert decode_batches(memoryview(a + b)) == sample(3) + sample(1)


def expect(data: bytes, code: int, match: str, produce: bool = True) -> None:
    with pytest.raises(RecordsError, match=match) as info:
        split_batches(data, produce=produce)
    assert info.value.error_code == code


def test_corrupt_sizes_and_crc_are_corrupt_message() -> None:
    good = build_batch(sample(2))
    expect(good[:-1], errors.CORRUPT_MESSAGE, "truncated: want")
    expect(good + good[:30], errors.CORRUPT_MESSAGE, f"batch at byte {len(good)} truncated")
    expect(good + b"\x00" * 10, errors.CORRUPT_MESSAGE, "only 10 bytes left")
    short = bytearray(good)
    struct.pack_into(">i", short, 8, 48)
    expect(bytes(short), errors.CORRUPT_MESSAGE, "batch_length 48 < 49")
    flipped = bytearray(good)
    flipped[-1] ^= 1
    expect(bytes(flipped), errors.CORRUPT_MESSAGE, "crc32c .* computed")
    expect(reframe(good, attributes=5), errors.CORRUPT_MESSAGE, "unknown codec 5")
    bad_magic = bytearray(good)
    bad_magic[16] = 3
    expect(bytes(bad_magic), errors.CORRUPT_MESSAGE, "magic 3, want 2")


def test_legacy_message_sets_are_unsupported_format() -> None:
    legacy = bytearray(build_batch(sample(1)))
    legacy[16] = 1
    expect(bytes(legacy), errors.UNSUPPORTED_FOR_MESSAGE_FORMAT, "v1 is not supported")
    legacy[16] = 0
    expect(bytes(legacy), errors.UNSUPPORTED_FOR_MESSAGE_FORMAT, "v0 is not supported")


def test_batches_kafka_refuses_from_producers_are_invalid_record() -> None:
    good = build_batch(sample(3))
    expect(b"", errors.INVALID_RECORD, "no record batch")
    assert split_batches(b"", produce=False) == []
    expect(reframe(good, count=0, last_delta=-1), errors.INVALID_RECORD, "record_count 0 < 1")
    expect(reframe(good, last_delta=1), errors.INVALID_RECORD, "last_offset_delta 1 != ")
    expect(reframe(good, pid=(5, -1, 0)), errors.INVALID_RECORD, "producer_id 5 epoch -1")
    expect(reframe(good, pid=(5, 0, -1)), errors.INVALID_RECORD, "base_sequence -1")
    expect(reframe(good, pid=(-2, -1, -1)), errors.INVALID_RECORD, "producer_id -2")
    control = reframe(good, attributes=CONTROL_MASK)
    expect(control, errors.INVALID_RECORD, "control batches")
    txn = reframe(good, attributes=TRANSACTIONAL_MASK, pid=(1, 0, 0))
    expect(txn, errors.INVALID_TXN_STATE, "transactional")
    assert [i.is_control for i in split_batches(control, produce=False)] == [True]
    assert [i.is_transactional for i in split_batches(txn, produce=False)] == [True]


def test_a_fetch_response_may_end_in_a_cut_batch() -> None:
    a = build_batch(sample(2))
    infos = split_batches(a + a[:40], produce=False)
    assert [(i.pos, i.size) for i in infos] == [(0, len(a))]
    assert decode_batches(a + a[:40]) == sample(2)


def test_bad_record_encoding_is_corrupt_even_with_a_valid_crc() -> None:
    good = build_batch(sample(3))
    for body in (good[61:-3], good[61:] + b"\x00", b"\x7f" + good[62:]):
        with pytest.raises(RecordsError) as info:
            decode_batch(reframe(good, body=body))
        assert info.value.error_code == errors.CORRUPT_MESSAGE
    with pytest.raises(RecordsError, match="one whole batch"):
        decode_batch(good + good)


def test_log_append_time_batches_give_records_the_max_timestamp() -> None:
    recs = sample(3)
    batch = reframe(build_batch(recs), attributes=TIMESTAMP_TYPE_MASK)
    (info,) = split_batches(batch)
    assert info.log_append_time
    assert {r.timestamp_ms for r in decode_batch(batch)} == {info.max_timestamp}


def test_with_base_offset_rewrites_offset_and_epoch_keeping_the_crc() -> None:
    batch = build_batch(sample(4), compression=CODEC_ZSTD)
    moved = with_base_offset(memoryview(batch), 1234, leader_epoch=3)
    assert moved[8:12] == batch[8:12]
    assert moved[16:] == batch[16:]
    (info,) = split_batches(moved)
    assert info.base_offset == 1234
    assert HEADER.unpack_from(moved)[2] == 3
    assert [r.offset for r in decode_batch(moved)] == [1234, 1235, 1236, 1237]
    assert kp.DefaultRecordBatch(bytearray(moved)).validate_crc()


def test_build_batch_rejects_nothing_and_unknown_codecs() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        build_batch([])
    with pytest.raises(ValueError, match="compression must be one of"):
        build_batch(sample(1), compression=7)
    assert split_batches(build_batch(sample(1), compression=CODEC_NONE))[0].compression == 0
