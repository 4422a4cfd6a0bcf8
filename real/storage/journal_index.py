"""Sparse per-segment indexes of the file journal, and their on-disk codec (pure, no I/O).

A `SegmentIndex` holds two sparse maps for one segment, both built by the same deterministic rule
whether batches arrive through `append` or through a recovery scan (so a rebuilt index equals the
one written at roll time, byte for byte):

- Offset index: entries (relative offset of a batch's first record, byte position of the batch).
  Before a batch at position p > 0 is added, an entry for it is recorded if at least
  `interval_bytes` of batches were added since the last entry (position 0 is implicit). A lookup is
  a bisect to the last entry at or below the target, then a forward scan of at most about
  `interval_bytes` plus one batch.
- Time index (Kafka style): entries (running-max timestamp T, relative offset r) meaning "every
  record of the segment at or below r has a timestamp <= T". After a batch is added, an entry
  (running max, last relative offset of the batch) is recorded if the running max grew past the last
  entry's T and at least `interval_bytes` were added since the last time entry. T and r are both
  strictly increasing, so `offset_for_time(ts)` bisects for the last entry with T < ts and scans
  from r + 1; timestamps need not be monotonic.

Sealed-segment index files (written once, at roll time, with `write_file_atomic`), big-endian:

    NNNNNNNNNNNNNNNNNNNN.index      magic "TMQO" | version u8 | base_offset i64 | entry_count u32 |
                                    entries: (relative_offset u32, position u32)* | FOOTER
    NNNNNNNNNNNNNNNNNNNN.timeindex  magic "TMQT" | version u8 | base_offset i64 | entry_count u32 |
                                    entries: (max_timestamp i64, relative_offset u32)* | FOOTER
    FOOTER = record_count u64 | end_offset i64 | bytes_total u64 | max_timestamp i64 |
             log_bytes u64 | crc32c u32

The footer is a `SegmentSummary` of the segment (bytes_total = sum of `Record.size()`, max_timestamp
-1 if empty, log_bytes = size of the .log file), so opening a large log reads only index files. The
CRC-32C covers every byte of the file before it. `decode_index` rejects any inconsistency with
`IndexInvalid` (the engine then rebuilds the index from the log; it is never trusted half-way).
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_right
from dataclasses import dataclass

from real.storage.crc32c import crc32c
from real.storage.errors import StorageError

INDEX_VERSION = 1
OFFSET_MAGIC = b"TMQO"
TIME_MAGIC = b"TMQT"
INDEX_HEAD = struct.Struct(">4sBqI")  # 17 bytes
OFFSET_ENTRY = struct.Struct(">II")  # 8 bytes
TIME_ENTRY = struct.Struct(">qI")  # 12 bytes
FOOTER = struct.Struct(">QqQqQ")  # 40 bytes, then the crc32c u32
CRC_BYTES = 4
U32_MAX = (1 << 32) - 1


class IndexInvalid(StorageError):
    """An index file failed validation; names the file and what was expected. Recoverable."""

    def __init__(self, path: str, expected: str, detail: str = "") -> None:
        self.path = path
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"index {path!r} invalid: expected {expected}{suffix}")


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    """What a sealed segment holds, kept in memory for every segment (40 bytes on disk)."""

    record_count: int
    end_offset: int
    bytes_total: int
    max_timestamp: int
    log_bytes: int


class SegmentIndex:
    """The two sparse maps of one segment plus the running state that decides the next entries."""

    __slots__ = (
        "_bytes_since_offset",
        "_bytes_since_time",
        "interval_bytes",
        "max_timestamp",
        "off_pos",
        "off_rel",
        "time_rel",
        "time_ts",
    )

    def __init__(self, interval_bytes: int) -> None:
        assert interval_bytes >= 1, interval_bytes
        self.interval_bytes = interval_bytes
        self.off_rel = array("q")
        self.off_pos = array("q")
        self.time_ts = array("q")
        self.time_rel = array("q")
        self.max_timestamp = -1
        self._bytes_since_offset = 0
        self._bytes_since_time = 0

    def add_batch(
        self, position: int, first_rel: int, next_rel: int, batch_bytes: int, batch_max_ts: int
    ) -> None:
        """Accounts for a batch of records [first_rel, next_rel) stored at `position`."""
        assert next_rel > first_rel >= 0, (first_rel, next_rel)
        assert batch_bytes > 0 and batch_max_ts >= 0, (batch_bytes, batch_max_ts)
        if position > 0 and self._bytes_since_offset >= self.interval_bytes:
            assert not self.off_pos or self.off_pos[-1] < position
            self.off_rel.append(first_rel)
            self.off_pos.append(position)
            self._bytes_since_offset = 0
        self._bytes_since_offset += batch_bytes
        self._bytes_since_time += batch_bytes
        self.max_timestamp = max(self.max_timestamp, batch_max_ts)
        last_ts = self.time_ts[-1] if self.time_ts else -1
        if self.max_timestamp > last_ts and self._bytes_since_time >= self.interval_bytes:
            self.time_ts.append(self.max_timestamp)
            self.time_rel.append(next_rel - 1)
            self._bytes_since_time = 0

    def position_for(self, rel: int) -> int:
        """Byte position of a batch at or before the one holding relative offset `rel`."""
        at = bisect_right(self.off_rel, rel) - 1
        return self.off_pos[at] if at >= 0 else 0

    def scan_start_for_time(self, ts: int) -> int:
        """A relative offset r such that every record below r has a timestamp < `ts`."""
        at = bisect_right(self.time_ts, ts - 1) - 1  # the last entry with T < ts
        return self.time_rel[at] + 1 if at >= 0 else 0

    def entries(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(offset entries, time entries) as plain lists, for comparisons in tests/invariants."""
        offsets = list(zip(self.off_rel, self.off_pos, strict=True))
        times = list(zip(self.time_ts, self.time_rel, strict=True))
        return offsets, times


def encode_index(kind: bytes, base: int, index: SegmentIndex, summary: SegmentSummary) -> bytes:
    """The bytes of an `.index` (kind OFFSET_MAGIC) or `.timeindex` (TIME_MAGIC) file."""
    assert kind in (OFFSET_MAGIC, TIME_MAGIC), kind
    if kind == OFFSET_MAGIC:
        pairs, entry = zip(index.off_rel, index.off_pos, strict=True), OFFSET_ENTRY
    else:
        pairs, entry = zip(index.time_ts, index.time_rel, strict=True), TIME_ENTRY
    body = bytearray()
    count = 0
    for pair in pairs:
        body += entry.pack(*pair)
        count += 1
    out = bytearray(INDEX_HEAD.pack(kind, INDEX_VERSION, base, count))
    out += body
    out += FOOTER.pack(
        summary.record_count,
        summary.end_offset,
        summary.bytes_total,
        summary.max_timestamp,
        summary.log_bytes,
    )
    out += crc32c(out).to_bytes(CRC_BYTES, "big")
    assert len(out) == INDEX_HEAD.size + count * entry.size + FOOTER.size + CRC_BYTES
    return bytes(out)


def decode_index(
    kind: bytes, path: str, base: int, data: bytes, index: SegmentIndex
) -> SegmentSummary:
    """Validates an index file and loads its entries into `index`; returns the footer summary."""
    entry = OFFSET_ENTRY if kind == OFFSET_MAGIC else TIME_ENTRY
    fixed = INDEX_HEAD.size + FOOTER.size + CRC_BYTES
    if len(data) < fixed:
        raise IndexInvalid(path, f"at least {fixed} bytes", f"got {len(data)}")
    stored_crc = int.from_bytes(data[-CRC_BYTES:], "big")
    if crc32c(data[:-CRC_BYTES]) != stored_crc:
        raise IndexInvalid(path, f"crc32c {stored_crc:#010x}", "checksum mismatch")
    magic, version, file_base, count = INDEX_HEAD.unpack_from(data, 0)
    if (magic, version, file_base) != (kind, INDEX_VERSION, base):
        raise IndexInvalid(path, f"{kind!r} v{INDEX_VERSION} base {base}", f"{magic!r} {file_base}")
    if len(data) != fixed + count * entry.size:
        raise IndexInvalid(path, f"{fixed + count * entry.size} bytes for {count} entries")
    summary = SegmentSummary(*FOOTER.unpack_from(data, len(data) - FOOTER.size - CRC_BYTES))
    if summary.end_offset != base + summary.record_count or summary.record_count < 1:
        raise IndexInvalid(path, f"end_offset = {base} + record_count >= 1", str(summary))
    firsts, seconds = array("q"), array("q")
    entries = data[INDEX_HEAD.size : len(data) - FOOTER.size - CRC_BYTES]
    for first, second in entry.iter_unpack(entries):
        firsts.append(first)
        seconds.append(second)
    if kind == OFFSET_MAGIC:
        index.off_rel, index.off_pos = firsts, seconds
        _check_increasing(path, "relative offsets", firsts, summary.record_count)
        _check_increasing(path, "positions", seconds, summary.log_bytes)
    else:
        index.time_ts, index.time_rel = firsts, seconds
        _check_increasing(path, "timestamps", firsts, summary.max_timestamp + 1)
        _check_increasing(path, "relative offsets", seconds, summary.record_count)
    index.max_timestamp = summary.max_timestamp
    assert len(firsts) == len(seconds) == count
    return summary


def _check_increasing(path: str, what: str, values: array[int], bound: int) -> None:
    previous = -1
    for value in values:
        if not previous < value < bound:
            raise IndexInvalid(path, f"strictly increasing {what} below {bound}", f"got {value}")
        previous = value
