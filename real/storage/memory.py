"""`MemoryEngine`: the port over a Python list, with O(log n) reads by bytes and by time.

State: `_records[i]` has offset `_start + i`; `_ts_max[i]` is the running maximum timestamp of
`_records[0..i]` (so `offset_for_time` is a bisect even when timestamps go backwards); `_cum[i]` is
the running total of `Record.size()` (so a byte-limited read is a bisect). `truncate` cuts the tail
of all three; `delete_before` rebuilds the two indexes over what is left (O(n), retention is rare).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from real.storage.errors import (
    BatchTooLarge,
    EngineClosed,
    InvalidArgument,
    OffsetOutOfRange,
    StorageFull,
)
from real.storage.record import Record, appendable_size

RECORDS_MAX_PER_APPEND_DEFAULT = 10_000
BYTES_MAX_TOTAL_DEFAULT = 256 * 1024 * 1024


class MemoryEngine:
    kind = "memory"

    def __init__(
        self,
        records_max_per_append: int = RECORDS_MAX_PER_APPEND_DEFAULT,
        bytes_max_total: int = BYTES_MAX_TOTAL_DEFAULT,
        start_offset: int = 0,
    ) -> None:
        _positive("records_max_per_append", records_max_per_append)
        _positive("bytes_max_total", bytes_max_total)
        if type(start_offset) is not int or start_offset < 0:
            raise InvalidArgument(f"start_offset must be an int >= 0, got {start_offset!r}")
        self.records_max_per_append = records_max_per_append
        self.bytes_max_total = bytes_max_total
        self._start = start_offset
        self._records: list[Record] = []
        self._ts_max: list[int] = []
        self._cum: list[int] = []
        self._closed = False

    # ------------------------------------------------------------------------------ the port

    def append(self, records: Sequence[Record]) -> int:
        self._check_open("append")
        base = self.end_offset()
        if len(records) > self.records_max_per_append:
            raise BatchTooLarge("records_max_per_append", len(records), self.records_max_per_append)
        sizes = [appendable_size(i, rec) for i, rec in enumerate(records)]
        requested = self.bytes_total() + sum(sizes)
        if requested > self.bytes_max_total:
            raise StorageFull("bytes_max_total", requested, self.bytes_max_total)
        total = self.bytes_total()
        ts_max = self._ts_max[-1] if self._ts_max else -1
        for i, (rec, size) in enumerate(zip(records, sizes, strict=True)):
            stored = rec.at(base + i)
            total += size
            ts_max = max(ts_max, rec.timestamp_ms)
            self._records.append(stored)
            self._cum.append(total)
            self._ts_max.append(ts_max)
        assert self.end_offset() == base + len(records)
        assert self.bytes_total() == requested
        return base

    def read(self, offset: int, records_max: int, bytes_max: int) -> list[Record]:
        self._check_open("read")
        _positive("records_max", records_max)
        if type(bytes_max) is not int or bytes_max < 0:
            raise InvalidArgument(f"bytes_max must be an int >= 0, got {bytes_max!r}")
        index = self._index(offset, "read")
        if index == len(self._records):
            return []
        before = self._cum[index - 1] if index else 0
        fits = bisect_right(self._cum, before + bytes_max, lo=index) - index
        count = min(records_max, max(1, fits))
        out = self._records[index : index + count]
        assert out and out[0].offset == offset
        assert len(out) <= records_max
        return out

    def offset_for_time(self, ts_ms: int) -> int:
        self._check_open("offset_for_time")
        if type(ts_ms) is not int:
            raise InvalidArgument(f"ts_ms must be an int, got {ts_ms!r}")
        index = bisect_left(self._ts_max, ts_ms)
        assert index == len(self._records) or self._records[index].timestamp_ms >= ts_ms
        assert index == 0 or self._ts_max[index - 1] < ts_ms
        return self._start + index

    def start_offset(self) -> int:
        return self._start

    def end_offset(self) -> int:
        return self._start + len(self._records)

    def bytes_total(self) -> int:
        return self._cum[-1] if self._cum else 0

    def truncate(self, offset: int) -> None:
        self._check_open("truncate")
        index = self._index(offset, "truncate")
        del self._records[index:]
        del self._ts_max[index:]
        del self._cum[index:]
        assert self.end_offset() == offset
        assert len(self._cum) == len(self._records)

    def delete_before(self, offset: int) -> None:
        self._check_open("delete_before")
        if type(offset) is not int or offset > self.end_offset():
            raise OffsetOutOfRange(offset, self._start, self.end_offset(), "delete_before")
        if offset <= self._start:
            return
        kept = self._records[offset - self._start :]
        self._start = offset
        self._records, self._ts_max, self._cum = [], [], []
        ts_max, total = -1, 0
        for rec in kept:
            ts_max, total = max(ts_max, rec.timestamp_ms), total + rec.size()
            self._records.append(rec)
            self._ts_max.append(ts_max)
            self._cum.append(total)
        assert self.start_offset() == offset
        assert not kept or kept[0].offset == offset

    def sync(self) -> None:
        self._check_open("sync")

    # The `Durable` protocol: memory's durability point is `append` returning (a process crash
    # loses everything; the engine promises nothing beyond the process).
    def durable_end(self) -> int:
        return self.end_offset()

    def next_flush_ms(self) -> int | None:
        return None

    def poll(self, now_ms: int) -> None:
        self._check_open("poll")

    def close(self) -> None:
        self._closed = True

    def destroy(self) -> None:
        """Closes and drops every record; `reopen()` then gives an empty log at offset 0.

        Memory holds no state beyond the process, so this is all destroying means here."""
        self._closed = True
        self._start = 0
        self._records, self._ts_max, self._cum = [], [], []
        assert self.end_offset() == 0
        assert self.bytes_total() == 0

    # ----------------------------------------------------------------------------- test hooks

    def reopen(self) -> MemoryEngine:
        """Memory is its own durable state: reopening just clears the closed flag."""
        self._closed = False
        return self

    def invariants(self) -> None:
        """Full O(n) consistency check, for tests and debugging."""
        n = len(self._records)
        assert len(self._ts_max) == n, (len(self._ts_max), n)
        assert len(self._cum) == n, (len(self._cum), n)
        assert self._start >= 0, self._start
        assert self.bytes_total() <= self.bytes_max_total, self.bytes_total()
        ts_max, total = -1, 0
        for i, rec in enumerate(self._records):
            ts_max, total = max(ts_max, rec.timestamp_ms), total + rec.size()
            assert rec.offset == self._start + i, (rec.offset, self._start, i)
            assert self._ts_max[i] == ts_max, (i, self._ts_max[i], ts_max)
            assert self._cum[i] == total, (i, self._cum[i], total)

    # -------------------------------------------------------------------------------- helpers

    def _check_open(self, op: str) -> None:
        if self._closed:
            raise EngineClosed(f"{op} on a closed {self.kind} engine")

    def _index(self, offset: int, op: str) -> int:
        """List index of `offset`; start <= offset <= end or OffsetOutOfRange."""
        if type(offset) is not int or not self._start <= offset <= self.end_offset():
            raise OffsetOutOfRange(offset, self._start, self.end_offset(), op)
        return offset - self._start


def _positive(name: str, value: int) -> None:
    if type(value) is not int or value < 1:
        raise InvalidArgument(f"{name} must be an int >= 1, got {value!r}")

