"""`Record`, the unit every storage engine stores, and its compact, versioned batch codec.

Batch layout (version 1, big-endian fixed fields; the body uses LEB128 varints, zigzag for signed):

    magic "TMQB" (4) | version u8 | count u32 | base_offset i64 | base_timestamp_ms i64 |
    body_length u32 | crc32c u32 | body (body_length bytes)

The CRC-32C covers every header byte before it plus the body, so any changed byte is detected.
Each record in the body:

    offset delta (zigzag) | timestamp delta (zigzag) | key length + 1 (0 = None) | key |
    payload length | payload | header count | (name length | name utf-8 | value length | value)* |
    producer_id (zigzag) | producer_epoch (zigzag) | sequence (zigzag) |
    meta count | (key length | key utf-8 | value length | value utf-8)*
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from real.storage.crc32c import crc32c
from real.storage.errors import CorruptBatch, InvalidRecord

MAGIC = b"TMQB"
VERSION = 1
HEADER = struct.Struct(">4sBIqqII")
HEADER_BYTES = HEADER.size  # 33
CRC_FIELD_AT = HEADER_BYTES - 4
RECORD_OVERHEAD_BYTES = 24  # accounted per record by `Record.size()`: offsets, ids, lengths
BATCH_RECORDS_MAX = 1 << 20
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


@dataclass(frozen=True, slots=True, init=False)
class Record:
    """One message. `offset` is -1 until an engine assigns it; producer fields are -1 if unset."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    payload: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    producer_id: int = -1
    producer_epoch: int = -1
    sequence: int = -1
    meta: tuple[tuple[str, str], ...] = ()

    def __init__(
        self,
        offset: int,
        timestamp_ms: int,
        key: bytes | None,
        payload: bytes,
        headers: tuple[tuple[str, bytes], ...] = (),
        producer_id: int = -1,
        producer_epoch: int = -1,
        sequence: int = -1,
        meta: tuple[tuple[str, str], ...] = (),
    ) -> None:
        # Frozen, yet built through the slot descriptors directly: a frozen dataclass's generated
        # __init__ goes through object.__setattr__ per field, twice as slow on the hot path.
        _SET_OFFSET(self, offset)
        _SET_TS(self, timestamp_ms)
        _SET_KEY(self, key)
        _SET_PAYLOAD(self, payload)
        _SET_HEADERS(self, headers)
        _SET_PID(self, producer_id)
        _SET_EPOCH(self, producer_epoch)
        _SET_SEQ(self, sequence)
        _SET_META(self, meta)
        self.__post_init__()

    def __post_init__(self) -> None:
        # Fast path (the common record: int fields in range, bytes key/payload, no pairs); any
        # miss falls through to the full check, which names the offending field.
        o, t = self.offset, self.timestamp_ms
        if (
            type(o) is int and type(t) is int and -1 <= o <= I64_MAX and I64_MIN <= t <= I64_MAX
            and type(self.payload) is bytes and (self.key is None or type(self.key) is bytes)
            and self.headers == () and self.meta == ()
            and self.producer_id == -1 and self.producer_epoch == -1 and self.sequence == -1
            and type(self.producer_id) is int
        ):
            return
        self._validate()

    def _validate(self) -> None:
        for name in ("offset", "timestamp_ms", "producer_id", "producer_epoch", "sequence"):
            value = getattr(self, name)
            if type(value) is not int or not I64_MIN <= value <= I64_MAX:
                raise InvalidRecord(f"Record.{name} must be an int64, got {value!r}")
        if self.offset < -1:
            raise InvalidRecord(f"Record.offset must be >= -1, got {self.offset}")
        if self.key is not None and type(self.key) is not bytes:
            raise InvalidRecord(f"Record.key must be bytes or None, got {type(self.key).__name__}")
        if type(self.payload) is not bytes:
            raise InvalidRecord(f"Record.payload must be bytes, got {type(self.payload).__name__}")
        _check_pairs("headers", self.headers, bytes)
        _check_pairs("meta", self.meta, str)

    def at(self, offset: int) -> Record:
        """This record with `offset` (what engines store); cheaper than `dataclasses.replace`."""
        if offset == self.offset:
            return self
        return Record(offset, self.timestamp_ms, self.key, self.payload, self.headers,
                      self.producer_id, self.producer_epoch, self.sequence, self.meta)

    def size(self) -> int:
        """Bytes this record counts against limits: key, payload, headers, meta and overhead."""
        if not self.headers and not self.meta:
            key = self.key
            return RECORD_OVERHEAD_BYTES + len(self.payload) + (0 if key is None else len(key))
        total = RECORD_OVERHEAD_BYTES + len(self.payload) + len(self.key or b"")
        total += sum(len(name.encode()) + len(value) for name, value in self.headers)
        total += sum(len(name.encode()) + len(value.encode()) for name, value in self.meta)
        assert total >= RECORD_OVERHEAD_BYTES
        return total


(_SET_OFFSET, _SET_TS, _SET_KEY, _SET_PAYLOAD, _SET_HEADERS, _SET_PID, _SET_EPOCH, _SET_SEQ,
 _SET_META) = (
    Record.__dict__[name].__set__
    for name in ("offset", "timestamp_ms", "key", "payload", "headers", "producer_id",
                 "producer_epoch", "sequence", "meta")
)


def appendable_size(index: int, rec: object) -> int:
    """`rec.size()` for item `index` of an append, after the port's checks (a `Record` whose
    timestamp is >= 0); every engine's `append` validates through this one function."""
    if type(rec) is not Record:
        raise InvalidRecord(f"append: item {index} is a {type(rec).__name__}, expected Record")
    if rec.timestamp_ms < 0:
        raise InvalidRecord(
            f"append: record {index} has timestamp_ms {rec.timestamp_ms}, expected >= 0"
        )
    return rec.size()


def _check_pairs(field: str, pairs: object, value_type: type) -> None:
    if type(pairs) is not tuple:
        raise InvalidRecord(f"Record.{field} must be a tuple of pairs, got {type(pairs).__name__}")
    for index, pair in enumerate(pairs):
        ok = type(pair) is tuple and len(pair) == 2
        if not (ok and type(pair[0]) is str and type(pair[1]) is value_type):
            raise InvalidRecord(
                f"Record.{field}[{index}] must be (str, {value_type.__name__}), got {pair!r}"
            )


# ----------------------------------------------------------------------------------- encoding


def _uvarint(out: bytearray, value: int) -> None:
    assert value >= 0, value
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _svarint(out: bytearray, value: int) -> None:
    _uvarint(out, (value << 1) ^ (value >> 127) if value < 0 else value << 1)


def _blob(out: bytearray, data: bytes) -> None:
    _uvarint(out, len(data))
    out += data


def _encode_record(out: bytearray, rec: Record, offset_delta: int, ts_delta: int) -> None:
    _svarint(out, offset_delta)
    _svarint(out, ts_delta)
    _uvarint(out, 0 if rec.key is None else len(rec.key) + 1)
    out += rec.key or b""
    _blob(out, rec.payload)
    _uvarint(out, len(rec.headers))
    for name, value in rec.headers:
        _blob(out, name.encode())
        _blob(out, value)
    _svarint(out, rec.producer_id)
    _svarint(out, rec.producer_epoch)
    _svarint(out, rec.sequence)
    _uvarint(out, len(rec.meta))
    for name, text in rec.meta:
        _blob(out, name.encode())
        _blob(out, text.encode())


_PLAIN_TAIL = b"\x00\x01\x01\x01\x00"  # no headers, producer id/epoch/sequence -1, no meta


def _encode_plain(out: bytearray, rec: Record, offset_delta: int, ts_delta: int) -> None:
    """`_encode_record` for a record without headers, producer fields or meta (the hot path)."""
    _encode_plain_head(out, rec, offset_delta, ts_delta)
    out += rec.payload
    out += _PLAIN_TAIL


def _encode_plain_head(out: bytearray, rec: Record, offset_delta: int, ts_delta: int) -> None:
    """`_encode_plain` up to the payload's length (the payload and the tail follow)."""
    if 0 <= offset_delta < 64:
        out.append(offset_delta << 1)
    else:
        _svarint(out, offset_delta)
    if 0 <= ts_delta < 64:
        out.append(ts_delta << 1)
    else:
        _svarint(out, ts_delta)
    key = rec.key
    if key is None:
        out.append(0)
    else:
        _uvarint(out, len(key) + 1)
        out += key
    n = len(rec.payload)
    if n < 0x80:
        out.append(n)
    elif n < 0x4000:
        out.append((n & 0x7F) | 0x80)
        out.append(n >> 7)
    else:
        _uvarint(out, n)


def encode_records(records: Sequence[Record], base_offset: int | None = None) -> bytes:
    """One batch holding `records` in order (an empty batch is valid).

    With `base_offset`, record i is stored at offset `base_offset + i` whatever its own `offset`
    (engines assign offsets this way without building new `Record`s).
    """
    return b"".join(encode_records_parts(records, base_offset)[0])


SHARED_PAYLOAD_BYTES = 8192
"""`encode_records_parts` hands payloads at least this big back as they are (no copy)."""


def encode_records_parts(
    records: Sequence[Record], base_offset: int | None = None
) -> tuple[list[bytes], int]:
    """`encode_records` as (parts, total length): the batch is `b"".join(parts)`, but payloads of
    `SHARED_PAYLOAD_BYTES` or more are parts of their own, the caller's objects uncopied (the file
    journal buffers parts and joins them once per write)."""
    if len(records) > BATCH_RECORDS_MAX:
        raise InvalidRecord(f"batch of {len(records)} records exceeds {BATCH_RECORDS_MAX}")
    if base_offset is None:
        base_offset = records[0].offset if records else 0
        assigned = False
    else:
        if type(base_offset) is not int or not 0 <= base_offset <= I64_MAX - len(records):
            raise InvalidRecord(f"base_offset must be an int64 >= 0, got {base_offset!r}")
        assigned = True
    base_ts = records[0].timestamp_ms if records else 0
    parts: list[bytes] = []
    body = bytearray()
    length = 0
    for i, rec in enumerate(records):
        if type(rec) is not Record:
            raise InvalidRecord(f"expected Record, got {type(rec).__name__}")
        offset_delta = i if assigned else rec.offset - base_offset
        payload = rec.payload
        if rec.headers == () and rec.meta == () and rec.producer_id == -1 and (
            rec.producer_epoch == -1 and rec.sequence == -1
        ):
            if len(payload) >= SHARED_PAYLOAD_BYTES and type(payload) is bytes:
                _encode_plain_head(body, rec, offset_delta, rec.timestamp_ms - base_ts)
                length += len(body) + len(payload)
                parts += (bytes(body), payload)
                body = bytearray(_PLAIN_TAIL)
            else:
                _encode_plain(body, rec, offset_delta, rec.timestamp_ms - base_ts)
        else:
            _encode_record(body, rec, offset_delta, rec.timestamp_ms - base_ts)
    if body:
        length += len(body)
        parts.append(bytes(body))
    fields = (MAGIC, VERSION, len(records), base_offset, base_ts, length)
    head = HEADER.pack(*fields, 0)[:CRC_FIELD_AT]
    crc = crc32c(head)
    for part in parts:
        crc = crc32c(part, crc)
    return [head, crc.to_bytes(4, "big"), *parts], HEADER_BYTES + length


# ----------------------------------------------------------------------------------- decoding

VARINT_BYTES_MAX = 10


class _Reader:
    """Cursor over one batch body; every failure names the absolute byte offset."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int, end: int) -> None:
        assert 0 <= pos <= end <= len(buf)
        self.buf, self.pos, self.end = buf, pos, end

    def uvarint(self, what: str) -> int:
        start, value = self.pos, 0
        for index in range(VARINT_BYTES_MAX):
            if self.pos >= self.end:
                raise CorruptBatch(self.pos, f"{what} (varint)", "body ended")
            byte = self.buf[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << (7 * index)
            if not byte & 0x80:
                return value
        raise CorruptBatch(start, f"{what} (varint of at most {VARINT_BYTES_MAX} bytes)")

    def svarint(self, what: str) -> int:
        raw = self.uvarint(what)
        return (raw >> 1) ^ -(raw & 1)

    def take(self, length: int, what: str) -> bytes:
        if length > self.end - self.pos:
            have = self.end - self.pos
            raise CorruptBatch(self.pos, f"{length} bytes of {what}", f"only {have} left")
        data = self.buf[self.pos : self.pos + length]
        self.pos += length
        return data

    def blob(self, what: str) -> bytes:
        return self.take(self.uvarint(f"{what} length"), what)

    def text(self, what: str) -> str:
        at = self.pos
        raw = self.blob(what)
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise CorruptBatch(at, f"{what} as UTF-8", str(exc)) from None


def _decode_record(rd: _Reader, index: int, base_offset: int, base_ts: int) -> Record:
    at = rd.pos
    where = f"record {index}"
    offset = base_offset + rd.svarint(f"{where} offset delta")
    timestamp = base_ts + rd.svarint(f"{where} timestamp delta")
    key_len = rd.uvarint(f"{where} key length")
    key = None if key_len == 0 else rd.take(key_len - 1, f"{where} key")
    payload = rd.blob(f"{where} payload")
    headers = []
    for h in range(rd.uvarint(f"{where} header count")):
        headers.append((rd.text(f"{where} header {h} name"), rd.blob(f"{where} header {h} value")))
    producer_id = rd.svarint(f"{where} producer_id")
    epoch = rd.svarint(f"{where} epoch")
    sequence = rd.svarint(f"{where} sequence")
    meta = []
    for m in range(rd.uvarint(f"{where} meta count")):
        meta.append((rd.text(f"{where} meta {m} key"), rd.text(f"{where} meta {m} value")))
    try:
        return Record(offset, timestamp, key, payload, tuple(headers), producer_id, epoch, sequence,
                      tuple(meta))
    except InvalidRecord as exc:
        raise CorruptBatch(at, f"a valid {where}", str(exc)) from None


def _decode_header(buf: bytes, pos: int) -> tuple[int, int, int, int, int]:
    """Checks magic, version, length and CRC; returns (count, base_offset, base_ts, body, end)."""
    if len(buf) - pos < HEADER_BYTES:
        raise CorruptBatch(pos, f"a {HEADER_BYTES}-byte batch header", f"{len(buf) - pos} left")
    magic, version, count, base_offset, base_ts, body_len, crc = HEADER.unpack_from(buf, pos)
    if magic != MAGIC:
        raise CorruptBatch(pos, f"magic {MAGIC!r}", f"got {magic!r}")
    if version != VERSION:
        raise CorruptBatch(pos + 4, f"version {VERSION}", f"got {version}")
    body = pos + HEADER_BYTES
    if body_len > len(buf) - body:
        raise CorruptBatch(body, f"a body of {body_len} bytes", f"{len(buf) - body} left")
    end = body + body_len
    actual = crc32c(buf[body:end], crc32c(buf[pos : pos + CRC_FIELD_AT]))
    if actual != crc:
        raise CorruptBatch(pos + CRC_FIELD_AT, f"crc32c {crc:#010x}", f"computed {actual:#010x}")
    if count > min(BATCH_RECORDS_MAX, body_len):
        raise CorruptBatch(pos + 5, f"a record count <= {min(BATCH_RECORDS_MAX, body_len)}")
    return count, base_offset, base_ts, body, end


class _Slow(Exception):
    """The fast decoder met something unusual; the checked decoder takes over (and names it)."""


def _fast_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 7 * VARINT_BYTES_MAX:
            raise _Slow


def _decode_fast(buf: bytes, pos: int, end: int, count: int, base_offset: int,
                 base_ts: int) -> list[Record]:
    """Decodes plain records (no headers/producer/meta) without per-field bookkeeping."""
    out = []
    new = Record
    for _ in range(count):
        if pos >= end:
            raise _Slow
        raw = buf[pos]
        if raw < 0x80:
            pos += 1
        else:
            raw, pos = _fast_varint(buf, pos)
        offset = base_offset + ((raw >> 1) ^ -(raw & 1))
        raw = buf[pos]
        if raw < 0x80:
            pos += 1
        else:
            raw, pos = _fast_varint(buf, pos)
        ts = base_ts + ((raw >> 1) ^ -(raw & 1))
        klen = buf[pos]
        if klen < 0x80:
            pos += 1
        else:
            klen, pos = _fast_varint(buf, pos)
        if klen:
            key: bytes | None = buf[pos : pos + klen - 1]
            pos += klen - 1
        else:
            key = None
        n = buf[pos]
        if n < 0x80:
            pos += 1
        else:
            n, pos = _fast_varint(buf, pos)
        payload = buf[pos : pos + n]
        pos += n
        if buf[pos : pos + 5] != _PLAIN_TAIL or pos + 5 > end or len(payload) != n:
            raise _Slow
        pos += 5
        out.append(new(offset, ts, key, payload))
    if pos != end:
        raise _Slow
    return out


def decode_batch_at(data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[list[Record], int]:
    """Decodes the batch starting at byte `pos`; returns its records and the byte after it."""
    buf = data if type(data) is bytes else bytes(data)
    if not 0 <= pos <= len(buf):
        raise CorruptBatch(pos, f"a batch start within 0..{len(buf)}")
    count, base_offset, base_ts, body, end = _decode_header(buf, pos)
    try:
        return _decode_fast(buf, body, end, count, base_offset, base_ts), end
    except (_Slow, IndexError, InvalidRecord):
        pass  # unusual records, or corruption the CRC missed: decode with full checks
    rd = _Reader(buf, body, end)
    records = [_decode_record(rd, i, base_offset, base_ts) for i in range(count)]
    if rd.pos != end:
        raise CorruptBatch(rd.pos, f"end of body after {count} records", f"{end - rd.pos} extra")
    assert len(records) == count
    assert rd.pos == end
    return records, end


def decode_records(data: bytes | bytearray | memoryview) -> list[Record]:
    """Decodes exactly one batch; trailing bytes are corruption."""
    records, end = decode_batch_at(data, 0)
    if end != len(data):
        raise CorruptBatch(end, "end of input after one batch", f"{len(data) - end} extra bytes")
    return records
