"""`JournalEngine` (kind "file"): a segmented append-only log over the `FileSystem` port (Kafka's).

On disk, one directory per shard:

    00000000000000000000.log        sealed segment: TMQB batches (record.py), one per append
    00000000000000000000.index      its sparse offset index   } written once at roll time,
    00000000000000000000.timeindex  its sparse time index     } see journal_index.py
    00000000000000004711.log        the active (last) segment: no index files; its indexes live in
                                    memory and are rebuilt by scanning it at open
    log-start.checkpoint            the log start offset (retention inside a segment), see
                                    journal_segment.py; absent = the first segment's base
    destroy.tombstone               empty; exists only while destroy() runs or was cut short

A segment's name is the 20-digit offset of its first record; segment i+1 starts exactly where
segment i ends (a gap is `CorruptLog`). Each batch carries its length and a CRC-32C over header and
body, so recovery can tell a whole batch from a torn one.

Durability (FileSystem vocabulary: `sync` = fdatasync, `sync_dir` = directory entries):

- `fsync="always"`: `append` writes its batch and fdatasyncs before returning; `durable_end()` ==
  `end_offset()` after every append.
- `fsync="group"`: `append` encodes into an in-memory buffer and returns. The buffer is written
  with one `fs.append` and fdatasynced (durable_end advances) by `poll(now_ms)` once the oldest
  buffered append is `group_commit_ms` old, inside `append` once `group_commit_bytes` are buffered,
  and by `sync()`/`close()`/a roll. `next_flush_ms()` is that deadline.
- `fsync="never"`: the same buffer, written (not synced) at the same deadlines; fdatasync and
  durable_end advance only at `sync()`, `close()` and segment rolls.
- `fsync="group"` with `background_sync=True` (the real node's default): the same buffer and
  deadlines, but the owner runs the fdatasync itself, possibly on another thread, so appends
  and reads go on while the disk works. `start_sync(now_ms)` (owner's thread, once
  `next_flush_ms()` is due) writes the buffer and returns a `SyncJob` whose `sync()` fdatasyncs
  (`DetachedSync.sync_handle` when the filesystem has it, else `fs.sync` inline); the owner
  calls `finish_sync(job, error)` afterwards and only then does `durable_end` move to `job.end`.
  One job at a time: while it runs `next_flush_ms()` is None, and the byte threshold only writes
  (no fdatasync inside `append`). `poll`, `sync`, `close` and rolls still commit in place.
  A job made moot by `truncate`/`close`/`destroy` meanwhile moves nothing; a failed one poisons.
- Every policy: a segment is fdatasynced when sealed, before its index files are written and the
  next segment is created (creation is followed by `sync_dir`), so only the active segment can hold
  undurable bytes. `truncate` and `delete_before` are durable when they return. Opening fdatasyncs
  the active segment, so `durable_end()` == `end_offset()` after recovery.
- A `DeviceError` while writing or syncing poisons the engine (fsyncgate: a failed fsync may have
  dropped dirty pages, so it is never retried); every later call raises `EngineFailed` until the
  engine is closed and reopened, which recovers from what the files hold.

Destroy (`destroy()`, the port's): closes the engine without flushing its buffer, then removes
the journal's files behind a tombstone `destroy.tombstone` (created and `sync_dir`ed first: the
commit point; removed last, after the removals are `sync_dir`ed), then the empty directory
(`remove_dir`, `sync_dir` of the parent). Recovery that finds the tombstone finishes the removal
before anything else, so a crash part-way opens either the log as it was or an empty log at 0.

Reads see every appended record, buffered or not (the active segment's bytes are the file's
followed by the buffer). Recovery is the constructor: leftover `*.tmp` files and index files
without a log are removed (other unknown names are left alone); sealed segments wholly below the
checkpointed start (an interrupted `delete_before`) are removed; every segment but the last must
be intact (their index files are verified against the log size and
rebuilt from the log when missing or invalid; a bad batch is `CorruptLog` naming file and byte);
the last segment is scanned: an invalid batch with no valid batch after it is a torn tail and is
truncated away (and synced), one followed by a valid batch is mid-log corruption (`CorruptLog`).

Rolls: before an append that would make the active segment exceed `segment_bytes`, or once its
first append is `segment_ms` old by the injected clock (after a reopen, the age counts from the
open), a non-empty active segment is sealed and a new one starts at the end offset. Memory is
bounded: scans read `CHUNK_BYTES` windows, the write buffer is bounded by `group_commit_bytes`
plus one batch, and at most `INDEX_CACHE_SEGMENTS` sealed indexes are held (least recently used
are dropped and re-read from their files on demand).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from real.storage.devices import (
    Clock,
    DetachedSync,
    DeviceError,
    FileSystem,
    parent_dir,
    write_file_atomic,
    zero_clock,
)
from real.storage.errors import (
    BatchTooLarge,
    EngineClosed,
    InvalidArgument,
    OffsetOutOfRange,
    StorageError,
)
from real.storage.journal_index import (
    OFFSET_MAGIC,
    TIME_MAGIC,
    IndexInvalid,
    SegmentIndex,
    SegmentSummary,
    decode_index,
    encode_index,
)
from real.storage.journal_segment import (
    CHECKPOINT_NAME,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    CorruptLog,
    EngineFailed,
    ReadAt,
    decode_checkpoint,
    encode_checkpoint,
    iter_batches,
    parse_segment_name,
    scan_segment,
    segment_name,
)
from real.storage.port import SyncJob
from real.storage.record import (
    BATCH_RECORDS_MAX,
    Record,
    appendable_size,
    encode_records,
    encode_records_parts,
)

__all__ = [
    "CorruptLog",
    "EngineFailed",
    "JournalConfig",
    "JournalEngine",
    "SyncJob",
    "clear_journal_directory",
    "destroy_journal_directory",
]

FSYNC_POLICIES = ("always", "group", "never")
SEGMENT_BYTES_MIN = 4096
SEGMENT_BYTES_MAX = (1 << 31) - 1  # index positions are u32
INDEX_CACHE_SEGMENTS = 16
TOMBSTONE_NAME = "destroy.tombstone"
TMP_SUFFIX = ".tmp"


@dataclass(frozen=True, slots=True)
class JournalConfig:
    """Knobs of one journal; every error names the key and the expected domain."""

    fsync: str = "always"
    group_commit_ms: int = 5
    group_commit_bytes: int = 1 << 20
    segment_bytes: int = 64 << 20
    segment_ms: int | None = 7 * 24 * 3600 * 1000
    index_interval_bytes: int = 4096
    records_max_per_append: int = 10_000
    background_sync: bool = False

    def __post_init__(self) -> None:
        if self.fsync not in FSYNC_POLICIES:
            expected = list(FSYNC_POLICIES)
            raise InvalidArgument(f"fsync must be one of {expected}, got {self.fsync!r}")
        _int_in("group_commit_ms", self.group_commit_ms, 0, 1 << 40)
        _int_in("group_commit_bytes", self.group_commit_bytes, 1, 1 << 40)
        _int_in("segment_bytes", self.segment_bytes, SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX)
        if self.segment_ms is not None:
            _int_in("segment_ms", self.segment_ms, 1, 1 << 62)
        _int_in("index_interval_bytes", self.index_interval_bytes, 1, SEGMENT_BYTES_MAX)
        _int_in("records_max_per_append", self.records_max_per_append, 1, BATCH_RECORDS_MAX)
        if type(self.background_sync) is not bool:
            raise InvalidArgument(f"background_sync must be a bool, got {self.background_sync!r}")
        if self.background_sync and self.fsync != "group":
            raise InvalidArgument(
                f"background_sync needs fsync 'group', got fsync {self.fsync!r}")


def _int_in(key: str, value: object, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise InvalidArgument(f"{key} must be an int in [{low}, {high}], got {value!r}")


class _Pending:
    """The group-commit write buffer: encoded batches as parts (big payloads are the callers'
    objects), joined once when written or read."""

    __slots__ = ("_parts", "_length")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def add(self, parts: list[bytes], length: int) -> None:
        self._parts += parts
        self._length += length

    def view(self) -> bytes:
        """The buffered bytes (joined once, until the next add)."""
        parts = self._parts
        if len(parts) != 1:
            parts[:] = [b"".join(parts)]
        return parts[0]

    def take(self) -> bytes:
        data = self.view() if self._parts else b""
        self.clear()
        return data

    def clear(self) -> None:
        self._parts = []
        self._length = 0


@dataclass(slots=True)
class _Segment:
    """One segment's summary; `index` is set only for the active segment (sealed ones: cache)."""

    base: int
    path: str
    end: int
    bytes_total: int
    max_ts: int
    log_bytes: int  # bytes in the file; the active segment's buffer comes after them
    index: SegmentIndex | None = None

    def summary(self) -> SegmentSummary:
        count = self.end - self.base
        return SegmentSummary(count, self.end, self.bytes_total, self.max_ts, self.log_bytes)


class JournalEngine:
    """A `ShardEngine` + `Durable` over files. The constructor opens (recovers) `directory`."""

    kind = "file"

    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        clock: Clock = zero_clock,
        config: JournalConfig | None = None,
    ) -> None:
        if type(directory) is not str or directory.startswith("/") or directory.endswith("/"):
            raise InvalidArgument(f"directory must be a relative path str, got {directory!r}")
        config = JournalConfig() if config is None else config
        if not isinstance(config, JournalConfig):
            raise InvalidArgument(f"config must be a JournalConfig, got {type(config).__name__}")
        if not callable(clock):
            raise InvalidArgument(f"clock must be a callable returning ms, got {clock!r}")
        self.fs, self.directory, self.clock, self.config = fs, directory, clock, config
        # the FileSystem's DetachedSync extension, if it has one
        self._sync_handle = fs.sync_handle if isinstance(fs, DetachedSync) else None
        self.records_max_per_append = config.records_max_per_append
        self._segments: list[_Segment] = []
        self._bases: list[int] = []
        self._cache: dict[int, SegmentIndex] = {}  # sealed base -> index, LRU order
        self._start = 0
        self._hidden_bytes = 0  # Record.size() sum of the first segment's records below start
        self._pending = _Pending()
        self._pending_since_ms: int | None = None
        self._unsynced_since_ms: int | None = None  # background_sync: oldest append no job covers
        self._job: SyncJob | None = None
        self._epoch = 0  # bumped by truncate/close/destroy (and a delete_before that removes the
        # running job's segment): a running job's end means nothing then
        self._job_path = ""
        self._active_since_ms: int | None = None
        self._durable_end = 0
        self._closed = False
        self._failed: Exception | None = None
        self._recover()
        self._written_end = self._durable_end  # fsync "never": the acknowledgement point
        assert self._durable_end == self.end_offset()
        assert self._segments and self._segments[-1].index is not None

    # ------------------------------------------------------------------------------- recovery

    def _path(self, name: str) -> str:
        return f"{self.directory}/{name}" if self.directory else name

    def _recover(self) -> None:
        fs = self.fs
        self._make_dirs_durable()
        names = fs.list_dir(self.directory)
        if TOMBSTONE_NAME in names:  # a destroy() cut short after its commit point: finish it
            clear_journal_directory(fs, self.directory)
            names = fs.list_dir(self.directory)
        for name in names:
            if name.endswith(TMP_SUFFIX):  # a write_file_atomic cut short by a crash
                fs.remove(self._path(name))
        bases = sorted(b for b in (parse_segment_name(n) for n in names) if b is not None)
        self._remove_orphan_indexes(names, bases)
        checkpoint = None
        if CHECKPOINT_NAME in names:
            path = self._path(CHECKPOINT_NAME)
            checkpoint = decode_checkpoint(path, fs.read(path, 0, 64))
        if not bases:
            if checkpoint is not None:
                raise CorruptLog(self._path(CHECKPOINT_NAME), 0, "a checkpoint but no segments")
            self._create_segment(0)
            self._durable_end = 0
            return
        if checkpoint is not None:
            bases = self._drop_segments_below(bases, checkpoint[0])
        for i, base in enumerate(bases[:-1]):
            self._segments.append(self._open_sealed(base, bases[i + 1]))
        self._segments.append(self._open_active(bases[-1]))
        self._bases = [seg.base for seg in self._segments]
        self._set_start(checkpoint)
        fs.sync(self._segments[-1].path)
        self._durable_end = self.end_offset()

    def _make_dirs_durable(self) -> None:
        """Creates the missing directories of the path and syncs each new entry's parent."""
        missing, path = [], self.directory
        while path and not self.fs.exists(path):
            missing.append(path)
            path = path.rpartition("/")[0]
        if missing:
            self.fs.make_dirs(self.directory)
        for created in reversed(missing):  # parents first: an entry is durable top-down
            self.fs.sync_dir(created.rpartition("/")[0])
        assert self.fs.exists(self.directory) or not self.directory

    def _remove_orphan_indexes(self, names: list[str], bases: list[int]) -> None:
        """Index files whose log is gone (a removal that was cut short) are deleted."""
        logs = {segment_name(base, "") for base in bases}
        orphans = [n for n in names if n.endswith((INDEX_SUFFIX, TIME_INDEX_SUFFIX))]
        orphans = [n for n in orphans if n.partition(".")[0] not in logs]
        for name in orphans:
            self.fs.remove(self._path(name))
        if orphans:
            self.fs.sync_dir(self.directory)

    def _drop_segments_below(self, bases: list[int], start: int) -> list[int]:
        """Finishes a `delete_before` cut short after its checkpoint was written."""
        dropped = 0
        while len(bases) - dropped > 1 and bases[dropped + 1] <= start:
            self._remove_segment_files(bases[dropped])
            dropped += 1
        if dropped:
            self.fs.sync_dir(self.directory)
        return bases[dropped:]

    def _set_start(self, checkpoint: tuple[int, int, int] | None) -> None:
        first = self._segments[0]
        start = first.base if checkpoint is None else checkpoint[0]
        if not first.base <= start <= self.end_offset():
            end = self.end_offset()
            detail = f"start {start} outside the segments' [{first.base}, {end}]"
            raise CorruptLog(self._path(CHECKPOINT_NAME), 0, detail)
        self._start = start
        if start == first.base:
            self._hidden_bytes = 0
        elif checkpoint is not None and checkpoint[1] == first.base:
            self._hidden_bytes = checkpoint[2]
        else:
            self._hidden_bytes = self._sum_sizes(first, first.base, start)

    def _open_sealed(self, base: int, next_base: int) -> _Segment:
        path = self._path(segment_name(base, LOG_SUFFIX))
        size = self.fs.size(path)
        try:
            index, summary = self._load_index(base)
            if summary.log_bytes != size or summary.end_offset != next_base:
                raise IndexInvalid(path, f"log_bytes {size}, end {next_base}", str(summary))
        except IndexInvalid:
            index, summary = self._rebuild_index(base, path, size)
        if summary.end_offset != next_base:
            raise CorruptLog(
                path, size, f"a segment ending at offset {next_base}, got {summary.end_offset}"
            )
        self._cache_put(base, index)
        return _Segment(
            base, path, summary.end_offset, summary.bytes_total, summary.max_timestamp, size
        )

    def _load_index(self, base: int) -> tuple[SegmentIndex, SegmentSummary]:
        """Reads and validates both index files; `IndexInvalid` if either is missing or bad."""
        index = SegmentIndex(self.config.index_interval_bytes)
        summaries = []
        for kind, suffix in ((OFFSET_MAGIC, INDEX_SUFFIX), (TIME_MAGIC, TIME_INDEX_SUFFIX)):
            path = self._path(segment_name(base, suffix))
            if not self.fs.exists(path):
                raise IndexInvalid(path, "the file to exist")
            data = self.fs.read(path, 0, self.fs.size(path))
            summaries.append(decode_index(kind, path, base, data, index))
        if summaries[0] != summaries[1]:
            raise IndexInvalid(self._path(segment_name(base, TIME_INDEX_SUFFIX)), "same footers")
        return index, summaries[0]

    def _rebuild_index(
        self, base: int, path: str, size: int
    ) -> tuple[SegmentIndex, SegmentSummary]:
        """Scans a sealed segment (any bad batch is `CorruptLog`) and rewrites its index files."""
        reader = self._file_reader(path)
        result = scan_segment(reader, path, base, size, self.config.index_interval_bytes, False)
        self._write_index_files(base, result.index, result.summary)
        return result.index, result.summary

    def _write_index_files(self, base: int, index: SegmentIndex, summary: SegmentSummary) -> None:
        for kind, suffix in ((OFFSET_MAGIC, INDEX_SUFFIX), (TIME_MAGIC, TIME_INDEX_SUFFIX)):
            data = encode_index(kind, base, index, summary)
            write_file_atomic(self.fs, self._path(segment_name(base, suffix)), data)

    def _open_active(self, base: int) -> _Segment:
        path = self._path(segment_name(base, LOG_SUFFIX))
        if self._remove_index_files(base):  # left from before a truncate or a cut-short roll
            self.fs.sync_dir(self.directory)
        size = self.fs.size(path)
        reader = self._file_reader(path)
        result = scan_segment(reader, path, base, size, self.config.index_interval_bytes, True)
        if result.valid_bytes < size:  # a torn tail: cut it off, durably
            self.fs.truncate(path, result.valid_bytes)
            self.fs.sync(path)
        summary = result.summary
        seg = _Segment(base, path, summary.end_offset, summary.bytes_total, 0, summary.log_bytes)
        seg.max_ts, seg.index = summary.max_timestamp, result.index
        self._active_since_ms = self.clock() if seg.end > base else None
        return seg

    def _create_segment(self, base: int) -> None:
        """A new empty active segment whose directory entry is durable before any data."""
        path = self._path(segment_name(base, LOG_SUFFIX))
        self.fs.append(path, b"")
        self.fs.sync_dir(self.directory)
        index = SegmentIndex(self.config.index_interval_bytes)
        self._segments.append(_Segment(base, path, base, 0, -1, 0, index))
        self._bases.append(base)
        self._active_since_ms = None

    def _remove_index_files(self, base: int) -> bool:
        removed = False
        for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            path = self._path(segment_name(base, suffix))
            if self.fs.exists(path):
                self.fs.remove(path)
                removed = True
        self._cache.pop(base, None)
        return removed

    def _remove_segment_files(self, base: int) -> None:
        self._remove_index_files(base)
        self.fs.remove(self._path(segment_name(base, LOG_SUFFIX)))

    # ------------------------------------------------------------------------------ the port

    def append(self, records: Sequence[Record]) -> int:
        self._check_usable("append")
        if len(records) > self.records_max_per_append:
            raise BatchTooLarge("records_max_per_append", len(records), self.records_max_per_append)
        base = self.end_offset()
        if not records:
            return base
        total, max_ts = 0, 0
        for i, rec in enumerate(records):
            total += appendable_size(i, rec)
            ts = rec.timestamp_ms
            if ts > max_ts:
                max_ts = ts
        # offsets assigned while encoding; big payloads stay the caller's objects (no copy)
        parts, size = encode_records_parts(records, base_offset=base)
        try:
            self._write_batch(parts, size, base, len(records), total, max_ts)
        except DeviceError as exc:
            raise self._poison("append", exc) from exc
        assert self.end_offset() == base + len(records)
        assert self._durable_end <= self.end_offset()
        return base

    def _write_batch(self, parts: list[bytes], length: int, base: int, count: int, size: int,
                     max_ts: int) -> None:
        seg = self._segments[-1]
        if seg.end > seg.base and self._should_roll(seg, length):
            self._roll()
            seg = self._segments[-1]
        assert seg.index is not None and seg.end == base
        if seg.end == seg.base:
            self._active_since_ms = self.clock()
        position = seg.log_bytes + len(self._pending)
        seg.index.add_batch(position, base - seg.base, base + count - seg.base, length, max_ts)
        seg.end += count
        seg.bytes_total += size
        seg.max_ts = max(seg.max_ts, max_ts)
        policy = self.config.fsync
        if policy == "always":
            seg.log_bytes = self.fs.append(seg.path, b"".join(parts))
            self.fs.sync(seg.path)
            self._durable_end = seg.end
            return
        if self._pending_since_ms is None:
            self._pending_since_ms = self.clock()
        self._pending.add(parts, length)
        if self.config.background_sync:
            if self._unsynced_since_ms is None:
                self._unsynced_since_ms = self._pending_since_ms
            if len(self._pending) >= self.config.group_commit_bytes:
                self._flush_pending()  # the fdatasync is the owner's job (start_sync)
            return
        if len(self._pending) >= self.config.group_commit_bytes:
            self._due_work()

    def _due_work(self) -> None:
        """What a group-commit deadline or byte threshold triggers under the policy."""
        if self.config.fsync == "group":
            self._commit()
        else:
            self._flush_pending()

    def _should_roll(self, seg: _Segment, batch_bytes: int) -> bool:
        if seg.log_bytes + len(self._pending) + batch_bytes > self.config.segment_bytes:
            return True
        age_max, since = self.config.segment_ms, self._active_since_ms
        return age_max is not None and since is not None and self.clock() - since >= age_max

    def _roll(self) -> None:
        """Seals the active segment (sync, index files) and starts an empty one at the end."""
        seg = self._segments[-1]
        assert seg.index is not None and seg.end > seg.base
        self._commit()
        self._write_index_files(seg.base, seg.index, seg.summary())
        self.fs.close(seg.path)
        self._cache_put(seg.base, seg.index)
        seg.index = None
        self._create_segment(seg.end)
        assert self._durable_end == self.end_offset()
        assert not self._pending

    def _flush_pending(self) -> None:
        """Hands the buffer to the OS with one write (not durable yet)."""
        if self._pending:
            seg = self._segments[-1]
            seg.log_bytes = self.fs.append(seg.path, self._pending.take())
        self._pending_since_ms = None
        self._written_end = self.end_offset()

    def _commit(self) -> None:
        """Writes the buffer and fdatasyncs the active segment: durable_end reaches the end."""
        self._flush_pending()
        if self._durable_end < self.end_offset():
            self.fs.sync(self._segments[-1].path)
            self._durable_end = self.end_offset()
        self._unsynced_since_ms = None
        assert not self._pending
        assert self._durable_end == self.end_offset()

    def read(self, offset: int, records_max: int, bytes_max: int) -> list[Record]:
        self._check_usable("read")
        if type(records_max) is not int or records_max < 1:
            raise InvalidArgument(f"records_max must be an int >= 1, got {records_max!r}")
        if type(bytes_max) is not int or bytes_max < 0:
            raise InvalidArgument(f"bytes_max must be an int >= 0, got {bytes_max!r}")
        self._check_offset(offset, "read")
        out: list[Record] = []
        used = 0
        for seg in self._segments[bisect_right(self._bases, offset) - 1 :]:
            low = max(offset, seg.base)
            for rec in self._records_from(seg, low):
                size = rec.size()
                if out and used + size > bytes_max:
                    return out
                out.append(rec)
                used += size
                if len(out) == records_max:
                    return out
        assert not out or out[0].offset == offset
        assert len(out) <= records_max
        return out

    def _records_from(self, seg: _Segment, low: int) -> Iterator[Record]:
        """The segment's records with offset >= `low`, read forward from the index position."""
        if low >= seg.end:
            return
        position = self._index_of(seg).position_for(low - seg.base)
        size = seg.log_bytes + (len(self._pending) if seg is self._segments[-1] else 0)
        for _, records, _ in iter_batches(self._reader(seg), seg.path, position, size):
            if records[-1].offset < low:
                continue
            for rec in records:
                if rec.offset >= low:
                    yield rec

    def offset_for_time(self, ts_ms: int) -> int:
        self._check_usable("offset_for_time")
        if type(ts_ms) is not int:
            raise InvalidArgument(f"ts_ms must be an int, got {ts_ms!r}")
        for seg in self._segments:
            if seg.end == seg.base or seg.max_ts < ts_ms:
                continue
            rel = self._index_of(seg).scan_start_for_time(ts_ms)
            for rec in self._records_from(seg, max(self._start, seg.base + rel)):
                if rec.timestamp_ms >= ts_ms:
                    assert rec.offset >= self._start
                    return rec.offset
        return self.end_offset()

    def start_offset(self) -> int:
        self._check_usable("start_offset", closed_ok=True)
        return self._start

    def end_offset(self) -> int:
        self._check_usable("end_offset", closed_ok=True)
        return self._segments[-1].end

    def bytes_total(self) -> int:
        self._check_usable("bytes_total", closed_ok=True)
        return sum(seg.bytes_total for seg in self._segments) - self._hidden_bytes

    def truncate(self, offset: int) -> None:
        self._check_usable("truncate")
        self._check_offset(offset, "truncate")
        if offset == self.end_offset():
            return
        self._guarded("truncate", self._truncate, offset)
        assert self.end_offset() == offset
        assert self._durable_end == offset

    def _truncate(self, offset: int) -> None:
        """Drops later segments, cuts the one holding `offset` at a batch boundary (re-writing the
        kept head of a split batch), fdatasyncs it; it becomes the active segment."""
        k = bisect_right(self._bases, offset) - 1
        target = self._segments[k]
        cut, kept = self._cut_point(target, offset)
        self._flush_pending()
        for seg in reversed(self._segments[k + 1 :]):
            self._remove_segment_files(seg.base)
        removed = len(self._segments) > k + 1
        if self._remove_index_files(target.base) or removed:
            self.fs.sync_dir(self.directory)
        del self._segments[k + 1 :]
        del self._bases[k + 1 :]
        self.fs.truncate(target.path, cut)
        if kept:
            self.fs.append(target.path, encode_records(kept))
        self.fs.sync(target.path)
        size = self.fs.size(target.path)
        reader = self._file_reader(target.path)
        interval = self.config.index_interval_bytes
        result = scan_segment(reader, target.path, target.base, size, interval, False)
        summary = result.summary
        target.end, target.bytes_total = summary.end_offset, summary.bytes_total
        target.max_ts, target.log_bytes, target.index = summary.max_timestamp, size, result.index
        self._durable_end = self._written_end = target.end
        self._unsynced_since_ms = None
        self._epoch += 1
        self._active_since_ms = self.clock() if target.end > target.base else None

    def _cut_point(self, seg: _Segment, offset: int) -> tuple[int, list[Record]]:
        """Byte position of the batch holding `offset`, and that batch's records below it."""
        if offset == seg.base:
            return 0, []
        position = self._index_of(seg).position_for(offset - seg.base)
        size = seg.log_bytes + (len(self._pending) if seg is self._segments[-1] else 0)
        for pos, records, _ in iter_batches(self._reader(seg), seg.path, position, size):
            if records[-1].offset >= offset:
                return pos, [rec for rec in records if rec.offset < offset]
        raise CorruptLog(seg.path, size, f"a batch holding offset {offset}")

    def delete_before(self, offset: int) -> None:
        self._check_usable("delete_before")
        if type(offset) is not int or offset > self.end_offset():
            raise OffsetOutOfRange(offset, self._start, self.end_offset(), "delete_before")
        if offset <= self._start:
            return
        self._guarded("delete_before", self._delete_before, offset)
        assert self._start == offset
        assert self._segments[0].base <= offset <= self._segments[0].end

    def _delete_before(self, offset: int) -> None:
        """Checkpoints the new start durably, then removes the segments wholly below it."""
        if self._durable_end < offset:  # never checkpoint a start a crash could leave past the end
            self._commit()
        drop = 0
        while drop < len(self._segments) - 1 and self._segments[drop].end <= offset:
            drop += 1
        first = self._segments[drop]
        if offset == first.base:
            hidden = 0
        elif drop == 0:
            hidden = self._hidden_bytes + self._sum_sizes(first, self._start, offset)
        else:
            hidden = self._sum_sizes(first, first.base, offset)
        data = encode_checkpoint(offset, first.base, hidden)
        write_file_atomic(self.fs, self._path(CHECKPOINT_NAME), data)
        if self._job is not None and any(seg.path == self._job_path
                                         for seg in self._segments[:drop]):
            # the running sync job's segment goes: its records are durable already (committed
            # above, or below `_durable_end`), so the job is moot and its sync of a removed
            # file must not poison the engine
            self._epoch += 1
        for seg in self._segments[:drop]:
            self._remove_segment_files(seg.base)
        if drop:
            self.fs.sync_dir(self.directory)
        del self._segments[:drop]
        del self._bases[:drop]
        self._start, self._hidden_bytes = offset, hidden

    def _sum_sizes(self, seg: _Segment, low: int, high: int) -> int:
        total = 0
        for rec in self._records_from(seg, low):
            if rec.offset >= high:
                break
            total += rec.size()
        return total

    def sync(self) -> None:
        self._check_usable("sync")
        try:
            self._commit()
        except DeviceError as exc:
            raise self._poison("sync", exc) from exc

    def close(self) -> None:
        """Makes everything durable (every policy) and releases the active segment's handle."""
        if self._closed:
            return
        self._closed = True
        self._epoch += 1
        try:
            if self._failed is None:
                self._commit()
        except DeviceError as exc:
            raise self._poison("close", exc) from exc
        finally:
            self.fs.close(self._segments[-1].path)

    def destroy(self) -> None:
        """Closes (dropping unsynced appends) and removes the directory; see `destroy_journal_
        directory` for the order and the crash guarantee. Works closed or poisoned; idempotent.

        A `DeviceError` propagates as is (the engine stays closed); call `destroy()` again.
        Afterwards `end_offset()` is 0 and `reopen()` gives an empty log at offset 0."""
        if not self._closed:
            self._closed = True
            self._pending.clear()
            self._pending_since_ms = self._unsynced_since_ms = None
            self.fs.close(self._segments[-1].path)
        self._epoch += 1
        destroy_journal_directory(self.fs, self.directory)
        path = self._path(segment_name(0, LOG_SUFFIX))
        empty = _Segment(0, path, 0, 0, -1, 0, SegmentIndex(self.config.index_interval_bytes))
        self._segments, self._bases, self._cache = [empty], [0], {}
        self._start = self._hidden_bytes = self._durable_end = self._written_end = 0
        self._failed = None  # whatever poisoned it is gone with the files
        assert self.end_offset() == 0
        assert not any(journal_owns(name) for name in self.fs.list_dir(self.directory))

    # ------------------------------------------------------------------------------ Durable

    def durable_end(self) -> int:
        self._check_usable("durable_end", closed_ok=True)
        return self._durable_end

    def ack_end(self) -> int:
        """Where producers may be acknowledged, as the policy promises: `durable_end()` under
        "always" and "group"; under "never" the end of what was written to the OS (it survives a
        crash of the process, not of the machine: Kafka's default), which `poll` moves every
        `group_commit_ms`."""
        self._check_usable("ack_end", closed_ok=True)
        if self.config.fsync == "never":
            return max(self._written_end, self._durable_end)
        return self._durable_end

    def next_flush_ms(self) -> int | None:
        self._check_usable("next_flush_ms", closed_ok=True)
        if self.config.background_sync:
            if self._job is not None or self._unsynced_since_ms is None:
                return None
            return self._unsynced_since_ms + self.config.group_commit_ms
        if self._pending_since_ms is None:
            return None
        return self._pending_since_ms + self.config.group_commit_ms

    def poll(self, now_ms: int) -> None:
        self._check_usable("poll")
        due = self.next_flush_ms()
        if due is None or now_ms < due:
            return
        try:
            self._due_work()
        except DeviceError as exc:
            raise self._poison("poll", exc) from exc
        assert self._pending_since_ms is None
        assert not self._pending

    @property
    def background_sync(self) -> bool:
        return self.config.background_sync

    def start_sync(self, now_ms: int) -> SyncJob | None:
        """Background group commit, step 1 (owner's thread): once `next_flush_ms()` is due,
        writes the buffer and returns the job that makes it durable; None if nothing is due."""
        self._check_usable("start_sync")
        if not self.config.background_sync:
            raise InvalidArgument("start_sync needs background_sync=True")
        due = self.next_flush_ms()
        if due is None or now_ms < due:
            return None
        path = self._segments[-1].path
        try:
            self._flush_pending()
            fs = self.fs
            if self._sync_handle is not None:
                run, detached = self._sync_handle(path), True
            else:
                run, detached = (lambda: fs.sync(path)), False
        except DeviceError as exc:
            raise self._poison("start_sync", exc) from exc
        self._unsynced_since_ms = None
        self._job = SyncJob(self.end_offset(), run, detached, self._epoch)
        self._job_path = path
        assert self._durable_end <= self._job.end
        return self._job

    def finish_sync(self, job: SyncJob, error: BaseException | None = None) -> None:
        """Background group commit, step 3 (owner's thread): `job.sync()` returned (error None)
        or raised `error`. Moves `durable_end` to `job.end`, unless a truncate, close or destroy
        since `start_sync` made the job moot; an error poisons the engine (raises EngineFailed)."""
        if job is not self._job:
            raise InvalidArgument("finish_sync: not the job this engine is running")
        self._job = None
        if job.epoch != self._epoch:
            return
        if error is not None:
            if not isinstance(error, StorageError):
                error = DeviceError("sync", self._segments[-1].path, repr(error))
            raise self._poison("finish_sync", error) from error
        if self._failed is None and job.end > self._durable_end:
            self._durable_end = job.end
        assert self._durable_end <= self.end_offset()

    # ----------------------------------------------------------------------------- test hooks

    def reopen(self) -> JournalEngine:
        """A new engine over the same directory (recovery); only after `close()`."""
        if not self._closed:
            raise InvalidArgument("reopen: close() the engine first")
        return JournalEngine(self.fs, self.directory, self.clock, self.config)

    def invariants(self) -> None:
        """Full consistency check against the files (O(log size)), for tests and debugging."""
        segs = self._segments
        assert segs and self._bases == [seg.base for seg in segs], self._bases
        assert segs[0].base <= self._start <= self.end_offset(), (segs[0].base, self._start)
        assert self._durable_end <= self.end_offset(), (self._durable_end, self.end_offset())
        assert not self._pending or self.config.fsync != "always"
        job = self._job
        assert job is None or job.end <= self.end_offset() or job.epoch != self._epoch
        if self.config.background_sync and self._unsynced_since_ms is None and self._job is None:
            assert self._durable_end == self.end_offset() or self._failed is not None
        assert (self._pending_since_ms is None) == (not self._pending), self._pending_since_ms
        assert len(self._cache) <= INDEX_CACHE_SEGMENTS, len(self._cache)
        for i, seg in enumerate(segs):
            active = i == len(segs) - 1
            assert (seg.index is not None) == active, (seg.base, active)
            assert active or seg.end > seg.base, seg.base
            assert active or segs[i + 1].base == seg.end, (seg.end, segs[i + 1].base)
            assert self.fs.size(seg.path) == seg.log_bytes, (seg.path, seg.log_bytes)
            self._check_segment(seg, active)
        hidden = self._sum_sizes(segs[0], segs[0].base, self._start)
        assert hidden == self._hidden_bytes, (hidden, self._hidden_bytes)

    def _check_segment(self, seg: _Segment, active: bool) -> None:
        size = seg.log_bytes + (len(self._pending) if active else 0)
        interval = self.config.index_interval_bytes
        scan = scan_segment(self._reader(seg), seg.path, seg.base, size, interval, False)
        expected = SegmentSummary(seg.end - seg.base, seg.end, seg.bytes_total, seg.max_ts, size)
        assert scan.summary == expected, (scan.summary, expected)
        assert self._index_of(seg).entries() == scan.index.entries(), seg.path
        if not active:
            index, summary = self._load_index(seg.base)
            assert summary == seg.summary(), (summary, seg.summary())
            assert index.entries() == scan.index.entries(), seg.path

    # -------------------------------------------------------------------------------- helpers

    def _index_of(self, seg: _Segment) -> SegmentIndex:
        if seg.index is not None:
            return seg.index
        index = self._cache.pop(seg.base, None)
        if index is None:
            try:
                index, summary = self._load_index(seg.base)
            except IndexInvalid:
                index, summary = self._rebuild_index(seg.base, seg.path, seg.log_bytes)
            if summary != seg.summary():
                raise CorruptLog(seg.path, 0, f"a segment matching {seg.summary()}, got {summary}")
        self._cache_put(seg.base, index)
        return index

    def _cache_put(self, base: int, index: SegmentIndex) -> None:
        self._cache.pop(base, None)
        self._cache[base] = index
        while len(self._cache) > INDEX_CACHE_SEGMENTS:
            self._cache.pop(next(iter(self._cache)))

    def _file_reader(self, path: str) -> ReadAt:
        fs = self.fs

        def read_at(position: int, length: int) -> bytes:
            return fs.read(path, position, length)

        return read_at

    def _reader(self, seg: _Segment) -> ReadAt:
        """Reads the file, then the write buffer after it (only the active segment has one)."""
        if seg is not self._segments[-1] or not self._pending:
            return self._file_reader(seg.path)
        fs, file_end, pending = self.fs, seg.log_bytes, self._pending

        def read_at(position: int, length: int) -> bytes:
            head = b""
            if position < file_end:
                want = min(length, file_end - position)
                head = fs.read(seg.path, position, want)
                if len(head) != want:
                    raise CorruptLog(seg.path, position + len(head), "bytes written earlier")
            low = max(position, file_end) - file_end
            return head + pending.view()[low : low + length - len(head)]

        return read_at

    def _check_offset(self, offset: int, op: str) -> None:
        if type(offset) is not int or not self._start <= offset <= self.end_offset():
            raise OffsetOutOfRange(offset, self._start, self.end_offset(), op)

    def _check_usable(self, op: str, closed_ok: bool = False) -> None:
        if self._closed and not closed_ok:
            raise EngineClosed(f"{op} on a closed {self.kind} engine over {self.directory!r}")
        if self._failed is not None:
            raise EngineFailed(
                f"{op}: the journal over {self.directory!r} failed earlier ({self._failed}); "
                "close and reopen it to recover from its files"
            )

    def _guarded(self, op: str, action: Callable[[int], None], offset: int) -> None:
        """Runs a mutation; a device error or corruption found on the way poisons the engine."""
        try:
            action(offset)
        except DeviceError as exc:
            raise self._poison(op, exc) from exc
        except CorruptLog as exc:
            self._poison(op, exc)
            raise

    def _poison(self, op: str, exc: StorageError) -> EngineFailed:
        if self._failed is None:
            self._failed = exc
        return EngineFailed(
            f"{op} on the journal over {self.directory!r} failed ({exc}); "
            "the engine is poisoned: close and reopen it to recover from its files"
        )


def journal_owns(name: str) -> bool:
    """Whether a directory entry is one the journal writes (others are left alone)."""
    if name in (CHECKPOINT_NAME, TOMBSTONE_NAME) or name.endswith(TMP_SUFFIX):
        return True
    return parse_segment_name(name) is not None or name.endswith((INDEX_SUFFIX, TIME_INDEX_SUFFIX))


def clear_journal_directory(fs: FileSystem, directory: str) -> None:
    """Removes every journal file of `directory` durably, behind a tombstone; keeps the directory.

    1. Creates `destroy.tombstone` (empty) and `sync_dir`s: the commit point. From here on any
       recovery (`JournalEngine.__init__`) finishes the destroy before reading anything.
    2. Removes the segments (highest base first), index files, checkpoint and `*.tmp` files;
       `sync_dir`. Their order does not matter: the tombstone covers every partial state (a real
       filesystem may persist the removals of one directory in any order until the sync).
    3. Removes the tombstone; `sync_dir`. Only now, after step 2 is durable, may it go.

    A crash before step 1's `sync_dir` leaves the log as it was (nothing was removed); after it,
    recovery opens an empty log at offset 0. Entries the journal does not own stay.
    """
    names = [name for name in fs.list_dir(directory) if journal_owns(name)]
    if not names:
        return
    doomed = [name for name in names if name != TOMBSTONE_NAME]
    tombstone = _join(directory, TOMBSTONE_NAME)
    if TOMBSTONE_NAME not in names:
        fs.append(tombstone, b"")
        fs.close(tombstone)
        fs.sync_dir(directory)
    for name in reversed(doomed):
        fs.remove(_join(directory, name))
    if doomed:
        fs.sync_dir(directory)
    fs.remove(tombstone)
    fs.sync_dir(directory)
    assert not any(journal_owns(name) for name in fs.list_dir(directory))
    assert not fs.exists(tombstone)


def destroy_journal_directory(fs: FileSystem, directory: str) -> None:
    """`clear_journal_directory`, then (if it is now empty and not the root) `remove_dir` of the
    directory and `sync_dir` of its parent. Idempotent: a missing directory is a no-op. A crash
    between the two leaves an empty directory, which opens as an empty log at offset 0."""
    clear_journal_directory(fs, directory)
    if directory and fs.exists(directory) and not fs.list_dir(directory):
        fs.remove_dir(directory)
        fs.sync_dir(parent_dir(directory))
    assert not fs.exists(_join(directory, TOMBSTONE_NAME))


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name

