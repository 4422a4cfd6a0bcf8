"""`RocksKeyValue`: the `KeyValue` port over one RocksDB (through `rocksdict`), a node's store.

Raw mode: keys and values are stored as the exact bytes given (no pickling). One `write` is one
RocksDB `WriteBatch` (range deletions, then deletes, then puts, in that order) written with
`WriteOptions.sync` set as asked, so it is atomic; `sync=True` fsyncs the WAL before returning
(and with it every earlier write). `sync()` is `flush_wal(sync=True)`: the WAL so far is fsynced.
A `sync=False` write is in the WAL in the OS page cache when `write` returns: it survives the
process dying, not the machine. Recovery replays the WAL in point-in-time mode: a torn WAL tail
is dropped at the first bad record, so what survives is a prefix of the writes.

Scans run in chunks (1, 2, 4, ... up to `scan_chunk_max` pairs or `scan_chunk_bytes`), each from
a fresh RocksDB iterator that is released before the chunk is yielded: a caller that stops early
never pins a RocksDB iterator (which would keep the DB, and its LOCK file, alive after `close()`),
and a write between chunks may show up in later chunks. Bounds are enforced here, not through
`ReadOptions.iterate_lower_bound` (which this rocksdict version does not apply to reverse scans).

Tuning for an append-only log (every shard appends at its own key range's end; retention deletes
ranges at the front): bigger memtables (`write_buffer_bytes`, default 64 MiB, up to 4 of them) so
flushes are rare and large; no compression by default (payloads are often compressed already, and
CPU is scarce; pass `compression=True` for LZ4); level compaction with dynamic level bytes
(ordered inserts make most compactions trivial moves, and range tombstones drop whole files);
64 KiB blocks (values are whole batches, read sequentially); 2 background jobs (small machines).
Every rocksdict exception becomes `DeviceError` naming the operation and the DB path.
Synchronous on purpose: shells that must not block an event loop call it from a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import rocksdict

from real.storage.devices import DeviceError, check_key, check_write

WRITE_BUFFER_BYTES_DEFAULT = 64 << 20
BLOCK_BYTES_DEFAULT = 64 << 10
SCAN_CHUNK_MAX_DEFAULT = 64
SCAN_CHUNK_BYTES_DEFAULT = 4 << 20


class RocksKeyValue:
    def __init__(
        self,
        path: str,
        write_buffer_bytes: int = WRITE_BUFFER_BYTES_DEFAULT,
        compression: bool = False,
        block_bytes: int = BLOCK_BYTES_DEFAULT,
        background_jobs: int = 2,
        scan_chunk_max: int = SCAN_CHUNK_MAX_DEFAULT,
        scan_chunk_bytes: int = SCAN_CHUNK_BYTES_DEFAULT,
    ) -> None:
        for name, value in (("write_buffer_bytes", write_buffer_bytes),
                            ("block_bytes", block_bytes), ("background_jobs", background_jobs),
                            ("scan_chunk_max", scan_chunk_max),
                            ("scan_chunk_bytes", scan_chunk_bytes)):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.path = path
        self.scan_chunk_max = scan_chunk_max
        self.scan_chunk_bytes = scan_chunk_bytes
        options = _options(write_buffer_bytes, compression, block_bytes, background_jobs)
        try:
            self._db: rocksdict.Rdict | None = rocksdict.Rdict(path, options)
        except Exception as exc:  # rocksdict raises bare Exception for I/O and lock errors
            raise DeviceError("open", path, _describe(exc)) from None
        self._sync_opts = rocksdict.WriteOptions()
        self._sync_opts.sync = True
        self._async_opts = rocksdict.WriteOptions()
        self._async_opts.sync = False

    # ------------------------------------------------------------------------------ the port

    def get(self, key: bytes) -> bytes | None:
        check_key("get", key)
        db = self._open_db("get")
        try:
            return db.get(key)
        except Exception as exc:
            raise DeviceError("get", self.path, _describe(exc)) from None

    def write(
        self,
        puts: Sequence[tuple[bytes, bytes]] = (),
        deletes: Sequence[bytes] = (),
        delete_ranges: Sequence[tuple[bytes, bytes]] = (),
        sync: bool = False,
    ) -> None:
        check_write(puts, deletes, delete_ranges)
        db = self._open_db("write")
        batch = rocksdict.WriteBatch(raw_mode=True)
        for lo, hi in delete_ranges:
            batch.delete_range(lo, hi)
        for key in deletes:
            batch.delete(key)
        for key, value in puts:
            batch.put(key, value)
        try:
            db.write(batch, self._sync_opts if sync else self._async_opts)
        except Exception as exc:
            raise DeviceError("write", self.path, _describe(exc)) from None

    def scan(
        self, start: bytes, end: bytes, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        check_key("scan", start)
        check_key("scan", end)
        self._open_db("scan")  # a closed store fails at the call, not at the first next()
        return self._chunks(start, end, reverse)

    def sync(self) -> None:
        db = self._open_db("sync")
        try:
            db.flush_wal(True)
        except Exception as exc:
            raise DeviceError("sync", self.path, _describe(exc)) from None

    def close(self) -> None:
        """Flushes nothing beyond what RocksDB does on close; unsynced writes stay in the WAL."""
        db, self._db = self._db, None
        if db is None:
            return
        try:
            db.close()
        except Exception as exc:
            raise DeviceError("close", self.path, _describe(exc)) from None

    # ------------------------------------------------------------------------------ internals

    def _open_db(self, op: str) -> rocksdict.Rdict:
        if self._db is None:
            raise DeviceError(op, self.path, "store is closed")
        return self._db

    def _chunks(self, start: bytes, end: bytes, reverse: bool) -> Iterator[tuple[bytes, bytes]]:
        after: bytes | None = None  # the last key yielded
        want = 1
        while True:
            chunk, more = self._chunk(start, end, reverse, after, want)
            yield from chunk
            if not more:
                return
            after = chunk[-1][0]
            want = min(want * 2, self.scan_chunk_max)

    def _chunk(self, start: bytes, end: bytes, reverse: bool, after: bytes | None,
               want: int) -> tuple[list[tuple[bytes, bytes]], bool]:
        """Up to `want` pairs in [start, end) strictly beyond `after`, from a fresh iterator;
        and whether the range may hold more (the chunk stopped at `want` or at the byte cap)."""
        db = self._open_db("scan")
        out: list[tuple[bytes, bytes]] = []
        size = 0
        try:
            it = db.iter(_bounds(start, end))
            if reverse:
                bound = end if after is None else after
                it.seek_for_prev(bound)
                if it.valid() and it.key() >= bound:
                    it.prev()
            else:
                it.seek(start if after is None else after + b"\x00")
            while it.valid():
                key = it.key()
                if not start <= key < end:
                    break
                if len(out) == want or size >= self.scan_chunk_bytes:
                    return out, True
                value = it.value()
                out.append((key, value))
                size += len(key) + len(value)
                if reverse:
                    it.prev()
                else:
                    it.next()
            it.status()
        except Exception as exc:
            raise DeviceError("scan", self.path, _describe(exc)) from None
        return out, False


def _options(write_buffer_bytes: int, compression: bool, block_bytes: int,
             background_jobs: int) -> rocksdict.Options:
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(write_buffer_bytes)
    options.set_max_write_buffer_number(4)
    options.set_target_file_size_base(write_buffer_bytes)
    options.set_level_compaction_dynamic_level_bytes(True)
    options.set_max_background_jobs(background_jobs)
    options.set_wal_recovery_mode(rocksdict.DBRecoveryMode.point_in_time())
    kind = rocksdict.DBCompressionType.lz4() if compression else rocksdict.DBCompressionType.none()
    options.set_compression_type(kind)
    table = rocksdict.BlockBasedOptions()
    table.set_block_size(block_bytes)
    options.set_block_based_table_factory(table)
    options.set_keep_log_file_num(4)
    return options


def _bounds(start: bytes, end: bytes) -> rocksdict.ReadOptions:
    read = rocksdict.ReadOptions()
    read.set_iterate_lower_bound(start)
    read.set_iterate_upper_bound(end)
    return read


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


