"""Segment-level pieces of the file journal: names, the batch scanner, recovery scans, checkpoint.

Pure: every function reads bytes through a `ReadAt(position, length) -> bytes` callable (the engine
binds it to `FileSystem.read` plus its in-memory write buffer), so memory stays bounded by one
`CHUNK_BYTES` window or one batch, whichever is larger; no sealed segment is ever held whole.

Log start checkpoint `log-start.checkpoint` (33 bytes, big-endian, replaced with
`write_file_atomic`):

    magic "TMQS" | version u8 | start_offset i64 | segment_base i64 | hidden_bytes u64 | crc32c u32

`segment_base` is the base of the segment holding `start_offset` when it was written, and
`hidden_bytes` the sum of `Record.size()` of that segment's records below `start_offset` (still in
the file, no longer in the log), so `bytes_total` stays exact after reopening without a scan.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from real.storage.crc32c import crc32c
from real.storage.errors import CorruptBatch, StorageError
from real.storage.journal_index import SegmentIndex, SegmentSummary
from real.storage.record import HEADER, HEADER_BYTES, MAGIC, Record, decode_batch_at

ReadAt = Callable[[int, int], bytes]
CHUNK_BYTES = 64 * 1024
OFFSET_DIGITS = 20
LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
CHECKPOINT_NAME = "log-start.checkpoint"
CHECKPOINT = struct.Struct(">4sBqqQ")
CHECKPOINT_MAGIC = b"TMQS"
CHECKPOINT_VERSION = 1


class CorruptLog(StorageError):
    """A segment or checkpoint holds bytes that cannot be what the journal wrote.

    Names the file and byte position; the journal never truncates past such damage silently.
    """

    def __init__(self, path: str, position: int, detail: str) -> None:
        self.path = path
        self.position = position
        super().__init__(f"corrupt log {path!r} at byte {position}: {detail}")


class EngineFailed(StorageError):
    """A device error (a failed fsync or write) poisoned the engine: it must be reopened.

    After a failed fsync the kernel may have dropped the dirty pages, so a retry that "succeeds"
    would lie about durability (PostgreSQL's fsyncgate); only recovery from the files is safe.
    """


class _OffsetGap(CorruptLog):
    """A valid batch at the wrong offset: never a torn write, always corruption."""


def segment_name(base: int, suffix: str) -> str:
    assert 0 <= base < 10**OFFSET_DIGITS, base
    return f"{base:0{OFFSET_DIGITS}d}{suffix}"


def parse_segment_name(name: str) -> int | None:
    """The base offset of a `.log` file name, None for any other name."""
    stem, dot, ext = name.partition(".")
    if dot + ext != LOG_SUFFIX or len(stem) != OFFSET_DIGITS or not stem.isdigit():
        return None
    return int(stem)


def encode_checkpoint(start: int, segment_base: int, hidden_bytes: int) -> bytes:
    assert 0 <= segment_base <= start, (segment_base, start)
    assert hidden_bytes >= 0, hidden_bytes
    head = CHECKPOINT.pack(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, start, segment_base, hidden_bytes)
    return head + crc32c(head).to_bytes(4, "big")


def decode_checkpoint(path: str, data: bytes) -> tuple[int, int, int]:
    """(start_offset, segment_base, hidden_bytes); any damage is `CorruptLog` (it is written
    atomically, so a bad checkpoint is never a torn write)."""
    if len(data) != CHECKPOINT.size + 4:
        raise CorruptLog(path, 0, f"expected {CHECKPOINT.size + 4} bytes, got {len(data)}")
    stored, computed = int.from_bytes(data[-4:], "big"), crc32c(data[:-4])
    if stored != computed:
        raise CorruptLog(path, CHECKPOINT.size, f"crc32c {stored:#010x}, computed {computed:#010x}")
    magic, version, start, base, hidden = CHECKPOINT.unpack_from(data, 0)
    if (magic, version) != (CHECKPOINT_MAGIC, CHECKPOINT_VERSION) or not 0 <= base <= start:
        raise CorruptLog(path, 0, f"expected {CHECKPOINT_MAGIC!r} v1 with base <= start")
    return start, base, hidden


# ------------------------------------------------------------------------------- batch scanning


def iter_batches(
    read_at: ReadAt, path: str, pos: int, stop: int
) -> Iterator[tuple[int, list[Record], int]]:
    """Yields (position, records, end position) of each batch in [pos, stop); stop is a batch end.

    Reads `CHUNK_BYTES` at a time (more for a larger batch). Anything that is not a whole valid
    batch raises `CorruptLog` naming `path` and the batch's position.
    """
    buf, buf_at = b"", pos
    while pos < stop:
        if pos + HEADER_BYTES > buf_at + len(buf):
            buf, buf_at = read_at(pos, min(stop - pos, CHUNK_BYTES)), pos
        if pos + HEADER_BYTES > buf_at + len(buf):
            have = buf_at + len(buf) - pos
            raise CorruptLog(path, pos, f"a {HEADER_BYTES}-byte batch header, {have} bytes left")
        magic, _, count, _, _, body_len, _ = HEADER.unpack_from(buf, pos - buf_at)
        end = pos + HEADER_BYTES + body_len
        if magic != MAGIC or end > stop or count < 1:
            what = f"magic {magic!r}, {count} records, {end - pos} bytes"
            raise CorruptLog(path, pos, f"a batch of >= 1 record ending by byte {stop} ({what})")
        if end > buf_at + len(buf):
            buf, buf_at = read_at(pos, max(end - pos, min(stop - pos, CHUNK_BYTES))), pos
        if end > buf_at + len(buf):
            raise CorruptLog(path, pos, f"a {end - pos}-byte batch, the file ended first")
        try:
            records, _ = decode_batch_at(buf[pos - buf_at : end - buf_at])
        except CorruptBatch as exc:
            raise CorruptLog(path, pos, f"a valid batch: {exc}") from None
        yield pos, records, end
        pos = end


@dataclass(slots=True)
class ScanResult:
    """What a full scan of one segment found; `valid_bytes` < the file size only for a torn tail."""

    index: SegmentIndex
    summary: SegmentSummary
    valid_bytes: int


def scan_segment(
    read_at: ReadAt, path: str, base: int, size: int, interval_bytes: int, torn_tail_ok: bool
) -> ScanResult:
    """Decodes every batch of a segment, checking contiguous offsets from `base`, and rebuilds its
    index and summary. With `torn_tail_ok` (the last segment), an invalid batch with no valid batch
    after it ends the scan (`valid_bytes` = its position); otherwise it raises `CorruptLog`.
    """
    index = SegmentIndex(interval_bytes)
    expected, valid, bytes_total = base, 0, 0
    try:
        for pos, records, end in iter_batches(read_at, path, 0, size):
            if records[0].offset != expected:
                got = records[0].offset
                raise _OffsetGap(path, pos, f"a batch at offset {expected}, got offset {got}")
            batch_max_ts = max(rec.timestamp_ms for rec in records)
            bytes_total += sum(rec.size() for rec in records)
            next_offset = expected + len(records)
            index.add_batch(pos, expected - base, next_offset - base, end - pos, batch_max_ts)
            expected, valid = next_offset, end
    except CorruptLog as exc:
        if not torn_tail_ok or isinstance(exc, _OffsetGap) or exc.position != valid:
            raise
        later = find_valid_batch(read_at, path, valid + 1, size, expected)
        if later is not None:
            raise CorruptLog(
                path, valid, f"mid-log corruption: a valid batch follows at byte {later} ({exc})"
            ) from None
    summary = SegmentSummary(expected - base, expected, bytes_total, index.max_timestamp, valid)
    assert valid <= size, (valid, size)
    assert summary.record_count >= 0
    return ScanResult(index, summary, valid)


def find_valid_batch(read_at: ReadAt, path: str, pos: int, stop: int, after: int) -> int | None:
    """Position of the first whole valid batch in [pos, stop) whose base offset exceeds `after`.

    Requiring base > `after` (the offset the bad batch should have started at; every journal
    batch holds >= 1 record) keeps a TMQB batch embedded in some payload from passing for a
    journal batch in the common case.
    """
    overlap = len(MAGIC) - 1
    while pos < stop:
        chunk = read_at(pos, min(stop - pos, CHUNK_BYTES))
        if not chunk:
            return None
        hit = chunk.find(MAGIC)
        while hit >= 0:
            if _valid_batch_at(read_at, path, pos + hit, stop, after):
                return pos + hit
            hit = chunk.find(MAGIC, hit + 1)
        if pos + len(chunk) >= stop:
            return None
        pos += max(1, len(chunk) - overlap)
    return None


def _valid_batch_at(read_at: ReadAt, path: str, pos: int, stop: int, after: int) -> bool:
    try:
        for _, records, _ in iter_batches(read_at, path, pos, stop):
            return records[0].offset > after
    except CorruptLog:
        return False
    return False
