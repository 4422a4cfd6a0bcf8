"""Kafka RecordBatch v2 (magic 2): validate without decoding, rewrite offsets, build and decode.

A produce request carries, per partition, a `records` blob of one or more record batches. The
broker stores each batch as the bytes it arrived as (STYLE 21): it checks the header and the
CRC-32C (`split_batches`), rewrites the base offset and leader epoch in place (`with_base_offset`;
the CRC does not cover them), and never touches the records themselves. Decoding
(`decode_batch`) is needed only for timestamp lookups and tests; `build_batch` makes batches for
bridges, the simulator and tests.

Batch header, 61 bytes, big-endian (byte offset: field):

     0 base_offset i64         12 partition_leader_epoch i32   16 magic i8 (= 2)
     8 batch_length i32        17 crc u32 (CRC-32C of bytes 21..end)
    21 attributes i16          23 last_offset_delta i32        27 first_timestamp i64
    35 max_timestamp i64       43 producer_id i64              51 producer_epoch i16
    53 base_sequence i32       57 record_count i32             61 records (maybe compressed)

`batch_length` counts the bytes after itself, so a batch is `12 + batch_length` bytes long.
Attributes: bits 0-2 codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd), bit 3 timestamp type
(1 = LogAppendTime), bit 4 transactional, bit 5 control. Only the records part is compressed.

Each record: length (varint) | attributes i8 | timestamp_delta (varlong) | offset_delta (varint) |
key length (varint, -1 = null) | key | value length (varint, -1 = null) | value |
header count (varint) | per header: key length (varint) | key utf-8 | value length (-1 = null) |
value. Every varint is zigzag-encoded (protobuf `sint`).

Codecs go through `cramjam`: gzip, snappy (raw blocks, and the xerial framing that Java and
kafka-python write: magic b"\\x82SNAPPY\\x00", two int32 versions, then repeated int32-length
raw blocks; `compress` writes xerial, which every client reads), lz4 (the LZ4 *frame* format),
zstd. Decompressed output is capped at `DECOMPRESSED_BYTES_MAX` (checked after decompression, so
it bounds what callers see rather than the codec's transient allocation).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import cramjam

from real.kafka import errors
from real.storage.crc32c import crc32c

HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_BYTES = HEADER.size  # 61
assert HEADER_BYTES == 61
LOG_OVERHEAD = 12  # base_offset + batch_length: the bytes batch_length does not count
MAGIC_AT = 16
CRC_FROM = 21  # the CRC covers attributes .. end
MAGIC = 2

CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD = 0, 1, 2, 3, 4
CODEC_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
CODEC_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08  # set: LogAppendTime (the broker's clock), clear: CreateTime
TRANSACTIONAL_MASK = 0x10
CONTROL_MASK = 0x20

NO_PRODUCER_ID = -1
NO_SEQUENCE = -1
SEQUENCE_MODULUS = 1 << 31  # sequences wrap from 2**31 - 1 to 0
DECOMPRESSED_BYTES_MAX = 64 << 20
XERIAL_MAGIC = b"\x82SNAPPY\x00"
XERIAL_HEADER = XERIAL_MAGIC + struct.pack(">ii", 1, 1)
XERIAL_BLOCK_BYTES = 32 * 1024
_I32 = struct.Struct(">i")
PREFIX = struct.Struct(">qii")  # base_offset, batch_length, partition_leader_epoch
_AFTER_CRC = struct.Struct(">hiqqqhii")  # attributes .. record_count (the CRC'd header part)


class RecordsError(ValueError):
    """A records blob Kafka would reject; `error_code` is the Kafka error for the partition.

    CORRUPT_MESSAGE: bad sizes, CRC, codec id or record encoding. INVALID_RECORD: a well-formed
    batch Kafka refuses from producers (no records, last_offset_delta != count - 1, control
    batch, bad producer fields). UNSUPPORTED_FOR_MESSAGE_FORMAT: magic 0/1 message sets.
    INVALID_TXN_STATE: a transactional batch (transactions are not supported).
    """

    def __init__(self, error_code: int, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


class BatchInfo(NamedTuple):
    """The header of one batch found by `split_batches`; `pos`/`size` locate it in the blob."""

    pos: int
    size: int
    base_offset: int
    last_offset_delta: int
    record_count: int  # not `count`, which would hide tuple.count
    first_timestamp: int
    max_timestamp: int
    attributes: int
    producer_id: int
    producer_epoch: int
    base_sequence: int

    @property
    def compression(self) -> int:
        return self.attributes & CODEC_MASK

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_MASK)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_MASK)

    @property
    def log_append_time(self) -> bool:
        return bool(self.attributes & TIMESTAMP_TYPE_MASK)

    @property
    def last_sequence(self) -> int:
        """The sequence of the batch's last record (wraps modulo 2**31, as Kafka's does)."""
        if self.base_sequence < 0:
            return NO_SEQUENCE
        return (self.base_sequence + self.last_offset_delta) % SEQUENCE_MODULUS


class KRecord(NamedTuple):
    """One decoded Kafka record. Header keys are text; header values and key/value may be null."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


# ------------------------------------------------------------------------------- validation


def split_batches(data: bytes | bytearray | memoryview, *, produce: bool = True) -> list[BatchInfo]:
    """Locates and validates every batch in `data` without decoding any record.

    Checks per batch: magic 2, `batch_length` within the data, CRC-32C, a known codec,
    `record_count >= 1`, `last_offset_delta == record_count - 1`, producer fields consistent
    (producer_id -1, or >= 0 with epoch >= 0 and base_sequence >= 0).

    `produce=True` (what a broker applies to a Produce request) also rejects: an empty blob,
    a truncated trailing batch, control batches (INVALID_RECORD, as Kafka) and transactional
    batches (INVALID_TXN_STATE: there is no transaction coordinator). Note Kafka additionally
    requires exactly one batch per partition from Produce v3+ (INVALID_RECORD); that count check
    is the caller's, since logs and bridges append several. `produce=False` reads a fetch
    response: a truncated trailing batch (brokers may cut one at max_bytes) is skipped, control
    and transactional batches are returned.
    Raises `RecordsError` naming the batch's byte position.
    """
    buf = data if type(data) is bytes else memoryview(data)
    total = len(buf)
    pos = 0
    out: list[BatchInfo] = []
    unpack, new, check = HEADER.unpack_from, tuple.__new__, crc32c
    refused = (CONTROL_MASK | TRANSACTIONAL_MASK) if produce else 0
    while pos < total:
        if total - pos < HEADER_BYTES:  # too short for a header: the slow path says why
            if _check_prefix(buf, pos, total, produce) is None:
                break
        (base_offset, length, _epoch, magic, crc, attributes, last_delta, first_ts, max_ts, pid,
         epoch, base_seq, count) = unpack(buf, pos)
        size = LOG_OVERHEAD + length
        if magic != MAGIC or length < HEADER_BYTES - LOG_OVERHEAD or size > total - pos:
            if _check_prefix(buf, pos, total, produce) is None:
                break
        if check(buf[pos + CRC_FROM : pos + size]) != crc:
            actual = check(buf[pos + CRC_FROM : pos + size])
            raise RecordsError(
                errors.CORRUPT_MESSAGE,
                f"batch at byte {pos}: crc32c {crc:#010x} in header, computed {actual:#010x}",
            )
        info = new(BatchInfo, (pos, size, base_offset, last_delta, count, first_ts, max_ts,
                               attributes, pid, epoch, base_seq))
        if not (
            attributes & CODEC_MASK <= CODEC_ZSTD and count >= 1 and last_delta == count - 1
            and not attributes & refused
            and (pid == NO_PRODUCER_ID or (pid >= 0 and epoch >= 0 and base_seq >= 0))
        ):
            _check_fields(info, produce)  # raises, naming the field
        out.append(info)
        pos += size
    if produce and not out:
        raise RecordsError(errors.INVALID_RECORD, "produce records hold no record batch")
    return out


def _check_prefix(buf: bytes | memoryview, pos: int, total: int, produce: bool) -> int | None:
    """Why the batch at `pos` cannot be read: raises, or None for a tolerated truncated tail."""
    left = total - pos
    if left < MAGIC_AT + 1:
        _truncated(pos, f"a batch header, only {left} bytes left", produce)
        return None
    magic = buf[pos + MAGIC_AT]
    if magic != MAGIC:
        if magic in (0, 1):
            raise RecordsError(
                errors.UNSUPPORTED_FOR_MESSAGE_FORMAT,
                f"batch at byte {pos}: message format v{magic} is not supported (magic 2 only)",
            )
        raise RecordsError(errors.CORRUPT_MESSAGE, f"batch at byte {pos}: magic {magic}, want 2")
    length = _I32.unpack_from(buf, pos + 8)[0]
    if length < HEADER_BYTES - LOG_OVERHEAD:
        raise RecordsError(
            errors.CORRUPT_MESSAGE, f"batch at byte {pos}: batch_length {length} < 49"
        )
    if LOG_OVERHEAD + length > left:
        _truncated(pos, f"{LOG_OVERHEAD + length} bytes of batch, only {left} left", produce)
        return None
    raise AssertionError(f"batch at byte {pos} has a valid prefix")  # pragma: no cover


def _truncated(pos: int, what: str, produce: bool) -> None:
    """Raises for a produce; a fetch tolerates the truncated tail."""
    if produce:
        raise RecordsError(errors.CORRUPT_MESSAGE, f"batch at byte {pos} truncated: want {what}")


def _check_fields(info: BatchInfo, produce: bool) -> None:
    at = f"batch at byte {info.pos}"
    if info.attributes & CODEC_MASK > CODEC_ZSTD:
        raise RecordsError(errors.CORRUPT_MESSAGE, f"{at}: unknown codec {info.compression}")
    if info.record_count < 1:
        raise RecordsError(errors.INVALID_RECORD, f"{at}: record_count {info.record_count} < 1")
    if info.last_offset_delta != info.record_count - 1:
        raise RecordsError(
            errors.INVALID_RECORD,
            f"{at}: last_offset_delta {info.last_offset_delta} != record_count "
            f"{info.record_count} - 1",
        )
    if info.producer_id < NO_PRODUCER_ID or (
        info.producer_id >= 0 and (info.producer_epoch < 0 or info.base_sequence < 0)
    ):
        raise RecordsError(
            errors.INVALID_RECORD,
            f"{at}: producer_id {info.producer_id} epoch {info.producer_epoch} "
            f"base_sequence {info.base_sequence} (an idempotent batch needs all three >= 0)",
        )
    if produce and info.is_control:
        raise RecordsError(errors.INVALID_RECORD, f"{at}: clients may not write control batches")
    if produce and info.is_transactional:
        raise RecordsError(
            errors.INVALID_TXN_STATE, f"{at}: transactional batches are not supported"
        )


def with_base_offset(
    batch: bytes | bytearray | memoryview, base_offset: int, leader_epoch: int = 0
) -> bytes:
    """The batch with bytes 0-8 (base offset) and 12-16 (leader epoch) replaced; one copy.

    The CRC covers bytes 21..end only, so it stays valid. `batch` must be one whole batch.
    """
    head = PREFIX.pack(base_offset, _I32.unpack_from(batch, 8)[0], leader_epoch)
    out = head + batch[LOG_OVERHEAD + 4 :]
    assert len(out) == len(batch)
    return out


# --------------------------------------------------------------------------------- codecs


def compress(codec: int, data: bytes | bytearray | memoryview) -> bytes:
    """`data` compressed with Kafka codec `codec` (snappy: xerial framing, 32 KiB blocks)."""
    if codec == CODEC_GZIP:
        return bytes(cramjam.gzip.compress(data))
    if codec == CODEC_SNAPPY:
        raw = memoryview(data)
        parts = [XERIAL_HEADER]
        for start in range(0, len(raw), XERIAL_BLOCK_BYTES):
            block = bytes(cramjam.snappy.compress_raw(raw[start : start + XERIAL_BLOCK_BYTES]))
            parts += (_I32.pack(len(block)), block)
        return b"".join(parts)
    if codec == CODEC_LZ4:
        return bytes(cramjam.lz4.compress(data))
    if codec == CODEC_ZSTD:
        return bytes(cramjam.zstd.compress(data))
    if codec == CODEC_NONE:
        return bytes(data)
    raise RecordsError(errors.CORRUPT_MESSAGE, f"unknown codec {codec}")


def decompress(
    codec: int, data: bytes | bytearray | memoryview, max_bytes: int = DECOMPRESSED_BYTES_MAX
) -> bytes:
    """Inverse of `compress` for any framing clients send (snappy: raw or xerial).

    Raises `RecordsError(CORRUPT_MESSAGE)` on undecodable input or output over `max_bytes`.
    """
    try:
        if codec == CODEC_SNAPPY:
            out = _snappy_decode(bytes(data), max_bytes)
        elif codec == CODEC_GZIP:
            out = bytes(cramjam.gzip.decompress(data))
        elif codec == CODEC_LZ4:
            out = bytes(cramjam.lz4.decompress(data))
        elif codec == CODEC_ZSTD:
            out = bytes(cramjam.zstd.decompress(data))
        elif codec == CODEC_NONE:
            out = bytes(data)
        else:
            raise RecordsError(errors.CORRUPT_MESSAGE, f"unknown codec {codec}")
    except RecordsError:
        raise
    except Exception as exc:  # cramjam raises its own DecompressionError / ValueError
        name = CODEC_NAMES[codec]
        raise RecordsError(errors.CORRUPT_MESSAGE, f"{name} data does not decode: {exc}") from None
    if len(out) > max_bytes:
        raise RecordsError(
            errors.CORRUPT_MESSAGE, f"decompressed records exceed {max_bytes} bytes"
        )
    return out


def _snappy_decode(data: bytes, max_bytes: int) -> bytes:
    if not data.startswith(XERIAL_MAGIC):
        if cramjam.snappy.decompress_raw_len(data) > max_bytes:
            raise RecordsError(
                errors.CORRUPT_MESSAGE, f"decompressed records exceed {max_bytes} bytes"
            )
        return bytes(cramjam.snappy.decompress_raw(data))
    if len(data) < len(XERIAL_HEADER):
        raise RecordsError(errors.CORRUPT_MESSAGE, "xerial snappy header truncated")
    pos, parts, total = len(XERIAL_HEADER), [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise RecordsError(errors.CORRUPT_MESSAGE, f"xerial block length cut at byte {pos}")
        n = _I32.unpack_from(data, pos)[0]
        if n < 0 or pos + 4 + n > len(data):
            raise RecordsError(errors.CORRUPT_MESSAGE, f"xerial block at byte {pos}: length {n}")
        block = data[pos + 4 : pos + 4 + n]
        total += cramjam.snappy.decompress_raw_len(block)
        if total > max_bytes:
            raise RecordsError(
                errors.CORRUPT_MESSAGE, f"decompressed records exceed {max_bytes} bytes"
            )
        parts.append(bytes(cramjam.snappy.decompress_raw(block)))
        pos += 4 + n
    return b"".join(parts)


# ------------------------------------------------------------------------------- building


def _put_varint(out: bytearray, value: int) -> None:
    """Appends `value` (a signed 64-bit int) zigzag-encoded as a base-128 varint."""
    raw = (value << 1) ^ (value >> 63)
    while raw >= 0x80:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)


def _put_bytes(out: bytearray, data: bytes | None) -> None:
    if data is None:
        out.append(1)  # zigzag(-1)
        return
    _put_varint(out, len(data))
    out += data


def _encode_record(out: bytearray, rec: KRecord, offset_delta: int, ts_delta: int) -> None:
    body = bytearray(b"\x00")  # record attributes: unused, always 0
    _put_varint(body, ts_delta)
    _put_varint(body, offset_delta)
    _put_bytes(body, rec.key)
    _put_bytes(body, rec.value)
    _put_varint(body, len(rec.headers))
    for name, value in rec.headers:
        _put_bytes(body, name.encode())
        _put_bytes(body, value)
    _put_varint(out, len(body))
    out += body


def build_batch(
    records: list[KRecord],
    base_offset: int = 0,
    compression: int = CODEC_NONE,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = -1,
    base_sequence: int = NO_SEQUENCE,
) -> bytes:
    """One CreateTime batch holding `records`, as a producer would send it.

    Offset deltas are 0, 1, ... (each record's own `offset` is ignored); the first timestamp is
    records[0]'s, the max timestamp the largest. partition_leader_epoch is -1 (a producer's).
    """
    if not records:
        raise ValueError("build_batch needs at least one record")
    if compression not in CODEC_NAMES:
        raise ValueError(f"compression must be one of {sorted(CODEC_NAMES)}, got {compression}")
    first_ts = records[0].timestamp_ms
    max_ts = max(rec.timestamp_ms for rec in records)
    body = bytearray()
    for i, rec in enumerate(records):
        _encode_record(body, rec, i, rec.timestamp_ms - first_ts)
    payload = compress(compression, body) if compression else bytes(body)
    after = _AFTER_CRC.pack(compression, len(records) - 1, first_ts, max_ts, producer_id,
                            producer_epoch, base_sequence, len(records)) + payload
    length = 4 + 1 + 4 + len(after)  # leader epoch, magic, crc, then the CRC'd part
    out = PREFIX.pack(base_offset, length, -1) + bytes([MAGIC]) + struct.pack(
        ">I", crc32c(after)) + after
    assert len(out) == LOG_OVERHEAD + length
    assert len(out) == HEADER_BYTES + len(payload)
    return out


# ------------------------------------------------------------------------------- decoding


def _get_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(zigzag-decoded value, next position); IndexError if the buffer ends mid-varint."""
    byte = buf[pos]
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos + 1
    raw = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        raw |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (raw >> 1) ^ -(raw & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError(f"varint longer than 10 bytes at byte {pos}")


def _get_bytes(buf: bytes, pos: int, end: int, what: str) -> tuple[bytes | None, int]:
    n, pos = _get_varint(buf, pos)
    if n == -1:
        return None, pos
    if n < -1 or pos + n > end:
        raise ValueError(f"{what} length {n} at byte {pos} overruns the record")
    return buf[pos : pos + n], pos + n


def _decode_record(buf: bytes, pos: int, base_offset: int, base_ts: int,
                   append_ts: int | None) -> tuple[KRecord, int]:
    length, pos = _get_varint(buf, pos)
    end = pos + length
    if length < 1 or end > len(buf):
        raise ValueError(f"record length {length} at byte {pos} overruns the batch")
    pos += 1  # attributes
    ts_delta, pos = _get_varint(buf, pos)
    offset_delta, pos = _get_varint(buf, pos)
    key, pos = _get_bytes(buf, pos, end, "key")
    value, pos = _get_bytes(buf, pos, end, "value")
    count, pos = _get_varint(buf, pos)
    if count < 0 or count > end - pos:
        raise ValueError(f"header count {count} at byte {pos}")
    headers = []
    for _ in range(count):
        name, pos = _get_bytes(buf, pos, end, "header key")
        if name is None:
            raise ValueError(f"null header key before byte {pos}")
        hval, pos = _get_bytes(buf, pos, end, "header value")
        headers.append((name.decode(), hval))
    if pos != end:
        raise ValueError(f"record ends at byte {pos}, its length says {end}")
    ts = base_ts + ts_delta if append_ts is None else append_ts
    return KRecord(base_offset + offset_delta, ts, key, value, tuple(headers)), end


def decode_batch(batch: bytes | bytearray | memoryview) -> list[KRecord]:
    """Every record of exactly one batch (header and CRC checked, decompressed as needed).

    LogAppendTime batches give each record the batch's max timestamp (Kafka's rule).
    Raises `RecordsError(CORRUPT_MESSAGE)` if the bytes are not one valid batch.
    """
    buf = batch if type(batch) is bytes else bytes(batch)
    infos = split_batches(buf, produce=False)
    if len(infos) != 1 or infos[0].size != len(buf):
        raise RecordsError(errors.CORRUPT_MESSAGE, f"expected one whole batch of {len(buf)} bytes")
    info = infos[0]
    body = buf[HEADER_BYTES:]
    if info.compression:
        body = decompress(info.compression, body)
    append_ts = info.max_timestamp if info.log_append_time else None
    out, pos = [], 0
    try:
        for _ in range(info.record_count):
            rec, pos = _decode_record(body, pos, info.base_offset, info.first_timestamp,
                                      append_ts)
            out.append(rec)
    except (IndexError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise RecordsError(
            errors.CORRUPT_MESSAGE, f"record {len(out)} of batch does not decode: {exc}"
        ) from None
    if pos != len(body):
        raise RecordsError(
            errors.CORRUPT_MESSAGE, f"{len(body) - pos} bytes after the {info.record_count} records"
        )
    assert len(out) == info.record_count
    return out


def decode_batches(data: bytes | bytearray | memoryview) -> list[KRecord]:
    """Every record of every whole batch in a fetch-response blob (a truncated tail is skipped)."""
    view = memoryview(data)
    out: list[KRecord] = []
    for info in split_batches(view, produce=False):
        out += decode_batch(view[info.pos : info.pos + info.size])
    return out
