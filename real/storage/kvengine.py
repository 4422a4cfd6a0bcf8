"""`KvEngine`: the shard port over a `KeyValue` device (kind "rocksdb"; one RocksDB per node).

Several shards share one key-value store, so every key starts with the shard's prefix
`P = u16 big-endian length of the UTF-8 shard name | the name`. Length-prefixing makes the prefixes
prefix-free: no shard's keys can fall inside another shard's ranges. Under `P` a one-byte tag
splits three key spaces (all integers big-endian, so byte order is numeric order):

    P | "b" | base_offset u64  ->  cum_before u64 | TMQB batch          (one per append)
    P | "m"                    ->  meta (see `Meta`; one per shard)
    P | "t" | ts_max u64       ->  base_offset u64                      (time index)

Batches. Each append stores its records as ONE value: the TMQB batch (`record.encode_records`,
CRC-32C inside) of the records with their assigned offsets, keyed by the offset of its first
record. `cum_before` is the running byte total (by `Record.size()`) of every record ever stored
before this batch, an absolute counter that `delete_before` never resets; it makes `truncate`
O(1) in the number of batches removed: the new total is the cut batch's `cum_before` plus what
the cut keeps. `read(offset)` finds the batch holding `offset` with one reverse scan from
`b|offset+1` (the first key below it), then scans forward. Only `truncate` and `delete_before`
rewrite a batch: the one they cut, re-encoded with the records that survive, so every stored
record always lies in [start, end) and a batch key always equals its first record's offset.

Meta. `version u8 | start u64 | end u64 | cum_start u64 | cum_end u64 | ts_max i64`:
`bytes_total() = cum_end - cum_start`; `ts_max` is the largest timestamp stored (-1 if none).

Time index (Kafka-style, one entry per batch at most): when an append raises the running maximum
timestamp of the log, the entry `t|new_max -> base` is added. Entries therefore increase in both
key and value, and the first entry with key >= ts names the batch holding the first record with
timestamp >= ts (every earlier batch has a running max < ts); `offset_for_time` is one seek, one
get and one batch decode. `truncate` drops the entries of removed batches (a reverse scan over
them) and re-adds the cut batch's entry if it still raises the max. `delete_before` drops the
entries below the cut (a forward scan over them finds the first entry to keep) and recomputes the
entries of the retained batches up to the first old entry at or after the cut (from there on the
old running max is reached again, so later entries stay valid); that recomputation decodes those
batches (normally few; in the worst case, a far-future timestamp now deleted, the retained log).
Timestamps must be >= 0 (the port's rule), so u64 keys sort them numerically.

Atomicity. Every mutation (append, truncate, delete_before) is ONE `kv.write` holding the batch
puts/deletes, the index changes and the new meta, so a crash leaves the state after some prefix
of the mutations, never a mix. In-memory state changes only after the write returns.

Durability (`config.fsync`, the vocabulary shared with the file journal):

- "always": every append is `write(sync=True)`: durable (synced WAL) on return, and
  `durable_end() == end_offset()` after each append.
- "group": appends are `write(sync=False)`; `poll(now_ms)` calls `kv.sync()` once the oldest
  undurable append is `group_commit_ms` old, or at once (`next_flush_ms()` is already due) when
  `group_commit_bytes` of undurable values have accumulated. `durable_end()` advances then.
- "never": appends are `write(sync=False)`; `durable_end()` advances only on `sync()`/`close()`.

`truncate` and `delete_before` are `write(sync=True)` under every policy, so they are durable on
return; a synced write also makes every earlier write durable (the WAL is one sequence), so
`durable_end()` becomes `end_offset()`. Opening a shard that holds data calls `kv.sync()` once:
whatever recovery found (perhaps only in the page cache after a process crash) is then durable.

Destroy (`destroy()`): ONE `write(sync=True)` deleting the range [P, P with its last byte + 1),
i.e. every key of the shard (batches, meta, time index): atomic and durable, so a crash leaves
the whole old shard or nothing, and a fresh engine opens empty at offset 0.

A `DeviceError` from the store poisons the engine: the error propagates, and every later call
but `close()` raises `EnginePoisoned`. `reopen()` recovers a fresh engine from the store.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from real.storage.devices import Clock, DeviceError, KeyValue, zero_clock
from real.storage.errors import (
    BatchTooLarge,
    CorruptBatch,
    EngineClosed,
    InvalidArgument,
    OffsetOutOfRange,
    StorageError,
    StorageFull,
)
from real.storage.record import Record, appendable_size, decode_records, encode_records

SHARD_NAME_BYTES_MAX = 1024
TAG_BATCH, TAG_META, TAG_TIME = b"b", b"m", b"t"
META = struct.Struct(">BQQQQq")
META_VERSION = 1
U64 = struct.Struct(">Q")
CUM_BYTES = U64.size


class EnginePoisoned(StorageError):
    """An earlier `DeviceError` left the engine's view of the store uncertain; reopen it."""


class CorruptShard(StorageError):
    """Recovery or `invariants()` found stored state that contradicts the layout; names the key."""


class FsyncPolicy(enum.Enum):
    ALWAYS = "always"
    GROUP = "group"
    NEVER = "never"


@dataclass(frozen=True, slots=True)
class KvEngineConfig:
    """Validated on construction; errors name the key.

    - `fsync`: "always" | "group" | "never" (see the module docstring).
    - `group_commit_ms`, `group_commit_bytes`: the group-commit deadline and byte threshold.
    - `records_max_per_append`: larger appends raise `BatchTooLarge`.
    - `batch_bytes_max`: an append whose encoded value is larger raises `BatchTooLarge` (RocksDB
      handles big values poorly; the broker's own request limits sit far below this).
    - `bytes_max_total`: appends that would push `bytes_total()` past it raise `StorageFull`.
    """

    fsync: str = "always"
    group_commit_ms: int = 2
    group_commit_bytes: int = 1 << 20
    records_max_per_append: int = 10_000
    batch_bytes_max: int = 16 << 20
    bytes_max_total: int = 1 << 40

    def __post_init__(self) -> None:
        if self.fsync not in [p.value for p in FsyncPolicy]:
            expected = [p.value for p in FsyncPolicy]
            raise InvalidArgument(f"KvEngineConfig.fsync must be one of {expected}, "
                                  f"got {self.fsync!r}")
        if type(self.group_commit_ms) is not int or self.group_commit_ms < 0:
            raise InvalidArgument(
                f"KvEngineConfig.group_commit_ms must be an int >= 0, got {self.group_commit_ms!r}"
            )
        for name in ("group_commit_bytes", "records_max_per_append", "batch_bytes_max",
                     "bytes_max_total"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise InvalidArgument(f"KvEngineConfig.{name} must be an int >= 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class Meta:
    start: int
    end: int
    cum_start: int
    cum_end: int
    ts_max: int

    def encode(self) -> bytes:
        return META.pack(META_VERSION, self.start, self.end, self.cum_start, self.cum_end,
                         self.ts_max)

    @staticmethod
    def decode(raw: bytes, shard: str) -> Meta:
        if len(raw) != META.size or raw[0] != META_VERSION:
            raise CorruptShard(f"shard {shard!r}: meta value of {len(raw)} bytes, version "
                               f"{raw[:1]!r}; expected {META.size} bytes, version {META_VERSION}")
        _, start, end, cum_start, cum_end, ts_max = META.unpack(raw)
        if not (start <= end and cum_start <= cum_end and ts_max >= -1):
            raise CorruptShard(f"shard {shard!r}: inconsistent meta start={start} end={end} "
                               f"cum_start={cum_start} cum_end={cum_end} ts_max={ts_max}")
        return Meta(start, end, cum_start, cum_end, ts_max)


def shard_prefix(shard: str) -> bytes:
    """`u16 length | UTF-8 name`: prefix-free, so shards never see each other's keys."""
    if type(shard) is not str or not shard:
        raise InvalidArgument(f"shard must be a non-empty str, got {shard!r}")
    raw = shard.encode()
    if len(raw) > SHARD_NAME_BYTES_MAX:
        raise InvalidArgument(
            f"shard name is {len(raw)} UTF-8 bytes, expected at most {SHARD_NAME_BYTES_MAX}"
        )
    return len(raw).to_bytes(2, "big") + raw


class KvEngine:
    """The `ShardEngine` (and `Durable`) port over one shard's keys in a shared `KeyValue`.

    `KvEngine(kv, shard, clock=zero_clock, config=KvEngineConfig())`. The engine never closes `kv`
    (other shards share it); its owner does, after closing the engines.
    """

    kind = "rocksdb"

    def __init__(
        self,
        kv: KeyValue,
        shard: str,
        clock: Clock = zero_clock,
        config: KvEngineConfig | None = None,
    ) -> None:
        config = KvEngineConfig() if config is None else config
        if not isinstance(config, KvEngineConfig):
            raise InvalidArgument(f"config must be a KvEngineConfig, got {type(config).__name__}")
        if not isinstance(kv, KeyValue):
            raise InvalidArgument(f"kv must implement the KeyValue port, got {type(kv).__name__}")
        self.kv = kv
        self.shard = shard
        self.clock = clock
        self.config = config
        self._policy = FsyncPolicy(config.fsync)
        prefix = shard_prefix(shard)
        self._meta_key = prefix + TAG_META
        self._batch_lo, self._batch_hi = prefix + TAG_BATCH, prefix + _next_tag(TAG_BATCH)
        self._time_lo, self._time_hi = prefix + TAG_TIME, prefix + _next_tag(TAG_TIME)
        self._prefix = prefix
        self._closed = False
        self._poison: DeviceError | None = None
        self._poison_op = ""
        self._pending_since_ms: int | None = None  # clock() at the oldest undurable append
        self._pending_bytes = 0
        self._meta = self._recover()
        self._durable_end = self._meta.end
        assert self._meta.start <= self._durable_end <= self._meta.end
        assert self._pending_since_ms is None

    @property
    def records_max_per_append(self) -> int:
        return self.config.records_max_per_append

    @property
    def bytes_max_total(self) -> int:
        return self.config.bytes_max_total

    # ------------------------------------------------------------------------------ the port

    def append(self, records: Sequence[Record]) -> int:
        self._check_usable("append")
        meta = self._meta
        limit = self.config.records_max_per_append
        if len(records) > limit:
            raise BatchTooLarge("records_max_per_append", len(records), limit)
        sizes = [appendable_size(i, rec) for i, rec in enumerate(records)]
        if not records:
            return meta.end
        requested = meta.cum_end - meta.cum_start + sum(sizes)
        if requested > self.config.bytes_max_total:
            raise StorageFull("bytes_max_total", requested, self.config.bytes_max_total)
        base = meta.end
        stored = [r.at(base + i)
                  for i, r in enumerate(records)]
        value = U64.pack(meta.cum_end) + encode_records(stored)
        if len(value) > self.config.batch_bytes_max:
            raise BatchTooLarge("batch_bytes_max", len(value), self.config.batch_bytes_max)
        puts = [(self._batch_key(base), value)]
        batch_max = max(r.timestamp_ms for r in stored)
        if batch_max > meta.ts_max:
            puts.append((self._time_key(batch_max), U64.pack(base)))
        new = Meta(meta.start, base + len(stored), meta.cum_start, meta.cum_end + sum(sizes),
                   max(meta.ts_max, batch_max))
        puts.append((self._meta_key, new.encode()))
        synced = self._policy is FsyncPolicy.ALWAYS
        self._write("append", puts=puts, sync=synced)
        self._meta = new
        if synced:
            self._durable_end = new.end
        else:
            self._note_pending(len(value))
        assert self.end_offset() == base + len(records)
        assert self.bytes_total() == requested
        return base

    def read(self, offset: int, records_max: int, bytes_max: int) -> list[Record]:
        self._check_usable("read")
        if type(records_max) is not int or records_max < 1:
            raise InvalidArgument(f"records_max must be an int >= 1, got {records_max!r}")
        if type(bytes_max) is not int or bytes_max < 0:
            raise InvalidArgument(f"bytes_max must be an int >= 0, got {bytes_max!r}")
        self._check_offset(offset, "read")
        if offset == self._meta.end:
            return []
        out: list[Record] = []
        used = 0
        for _, value in self._batches_from(offset):
            for rec in self._decode(value, "read"):
                if rec.offset < offset:
                    continue
                if len(out) == records_max or (out and used + rec.size() > bytes_max):
                    break
                out.append(rec)
                used += rec.size()
            else:
                continue
            break
        assert out and out[0].offset == offset, (offset, out[:1])
        assert len(out) <= records_max
        return out

    def offset_for_time(self, ts_ms: int) -> int:
        self._check_usable("offset_for_time")
        if type(ts_ms) is not int:
            raise InvalidArgument(f"ts_ms must be an int, got {ts_ms!r}")
        meta = self._meta
        if ts_ms > meta.ts_max:
            return meta.end
        if ts_ms <= 0:
            return meta.start  # every stored timestamp is >= 0, and the log is not empty
        hit = self._first(self._time_key(ts_ms), self._time_hi, reverse=False, op="offset_for_time")
        assert hit is not None, f"ts {ts_ms} <= ts_max {meta.ts_max} but no index entry"
        base = U64.unpack(hit[1])[0]
        value = self._get(self._batch_key(base), "offset_for_time")
        if value is None:
            raise CorruptShard(f"shard {self.shard!r}: time index names batch {base}, not stored")
        for rec in self._decode(value, "offset_for_time"):
            if rec.timestamp_ms >= ts_ms:
                assert meta.start <= rec.offset < meta.end
                return rec.offset
        raise CorruptShard(f"shard {self.shard!r}: index entry {hit[0]!r} names batch {base} "
                           f"holding no timestamp >= {ts_ms}")

    def start_offset(self) -> int:
        return self._meta.start

    def end_offset(self) -> int:
        return self._meta.end

    def bytes_total(self) -> int:
        return self._meta.cum_end - self._meta.cum_start

    def truncate(self, offset: int) -> None:
        self._check_usable("truncate")
        self._check_offset(offset, "truncate")
        meta = self._meta
        if offset == meta.end:
            return
        if offset == meta.start:
            empty = Meta(meta.start, meta.start, meta.cum_start, meta.cum_start, -1)
            self._clear("truncate", empty)
            return
        found = self._first(self._batch_lo, self._batch_key(offset), reverse=True, op="truncate")
        assert found is not None, f"no batch below {offset} in [{meta.start}, {meta.end})"
        base = self._base_of(found[0])
        cum_before = U64.unpack_from(found[1])[0]
        records = self._decode(found[1], "truncate")
        kept = [r for r in records if r.offset < offset]
        assert kept and kept[0].offset == base
        cut = len(kept) < len(records)  # else `offset` is a batch boundary: nothing to rewrite
        puts = []
        index_lo, ts_max = self._index_tail_from(base if cut else offset)
        if cut:
            puts.append((self._batch_key(base), U64.pack(cum_before) + encode_records(kept)))
            kept_max = max(r.timestamp_ms for r in kept)
            if kept_max > ts_max:
                puts.append((self._time_key(kept_max), U64.pack(base)))
                ts_max = kept_max
        ranges = [(self._batch_key(offset), self._batch_hi), (index_lo, self._time_hi)]
        cum_end = cum_before + sum(r.size() for r in kept)
        new = Meta(meta.start, offset, meta.cum_start, cum_end, ts_max)
        puts.append((self._meta_key, new.encode()))
        self._write("truncate", puts=puts, delete_ranges=ranges, sync=True)
        self._set_durable(new)
        assert self.end_offset() == offset
        assert self.bytes_total() >= 0

    def delete_before(self, offset: int) -> None:
        self._check_usable("delete_before")
        meta = self._meta
        if type(offset) is not int or offset > meta.end:
            raise OffsetOutOfRange(offset, meta.start, meta.end, "delete_before")
        if offset <= meta.start:
            return
        if offset == meta.end:
            self._clear("delete_before", Meta(meta.end, meta.end, meta.cum_end, meta.cum_end, -1))
            return
        found = self._first(self._batch_lo, self._batch_key(offset + 1), True, "delete_before")
        assert found is not None, f"no batch holds {offset} in [{meta.start}, {meta.end})"
        base = self._base_of(found[0])
        cum_before = U64.unpack_from(found[1])[0]
        records = self._decode(found[1], "delete_before")
        kept = [r for r in records if r.offset >= offset]
        cum_start = cum_before + sum(r.size() for r in records if r.offset < offset)
        puts = []
        if base < offset:
            puts.append((self._batch_key(offset), U64.pack(cum_start) + encode_records(kept)))
        ranges = [(self._batch_lo, self._batch_key(offset))]
        index_puts, index_hi, ts_max = self._rebuild_index_head(offset, kept)
        ranges.append((self._time_lo, index_hi))
        puts += index_puts
        new = Meta(offset, meta.end, cum_start, meta.cum_end, ts_max)
        puts.append((self._meta_key, new.encode()))
        self._write("delete_before", puts=puts, delete_ranges=ranges, sync=True)
        self._set_durable(new)
        assert self.start_offset() == offset
        assert self.bytes_total() >= 0

    def sync(self) -> None:
        self._check_usable("sync")
        self._sync_kv("sync")

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._poison is None:
                self._sync_kv("close")
        finally:
            self._closed = True

    def destroy(self) -> None:
        """Closes (unsynced appends are dropped with the rest) and deletes the shard's whole key
        range [P, P+1) (batches, meta, time index, anything else under the prefix) with ONE
        `write(sync=True)`: atomic and durable, so a crash leaves the old shard or none, and a
        fresh engine then opens empty at offset 0. Works closed or poisoned; idempotent (each
        call is one synced range deletion). A `DeviceError` propagates; call it again."""
        self._closed = True
        self._pending_since_ms, self._pending_bytes = None, 0
        lo, hi = self._prefix, _prefix_end(self._prefix)
        self._write("destroy", puts=[], delete_ranges=[(lo, hi)], sync=True)
        self._meta = Meta(0, 0, 0, 0, -1)
        self._durable_end = 0
        assert self.end_offset() == 0
        assert self._first(lo, hi, False, "destroy") is None

    # ------------------------------------------------------------------------------ durability

    def durable_end(self) -> int:
        return self._durable_end

    def next_flush_ms(self) -> int | None:
        if self._policy is not FsyncPolicy.GROUP or self._pending_since_ms is None:
            return None
        if self._pending_bytes >= self.config.group_commit_bytes:
            return self._pending_since_ms  # due at once
        return self._pending_since_ms + self.config.group_commit_ms

    def poll(self, now_ms: int) -> None:
        self._check_usable("poll")
        due = self.next_flush_ms()
        if due is not None and now_ms >= due:
            self._sync_kv("poll")
            assert self.next_flush_ms() is None
            assert self._durable_end == self._meta.end

    # ----------------------------------------------------------------------------- test hooks

    def reopen(self) -> KvEngine:
        """A fresh engine recovered from the store (what a restarted node would build)."""
        return KvEngine(self.kv, self.shard, self.clock, self.config)

    def invariants(self) -> None:
        """Full O(n) check of the stored shard against the cached meta, for tests and debugging."""
        meta = self._meta
        assert meta.start <= self._durable_end <= meta.end, (meta, self._durable_end)
        assert (self._pending_since_ms is None) == (self._pending_bytes == 0), self._pending_bytes
        if self._poison is not None or self._closed:
            return
        stored = self._get(self._meta_key, "invariants")
        assert stored is None and meta == Meta(0, 0, 0, 0, -1) or stored == meta.encode(), stored
        expect_offset, cum, running, index = meta.start, meta.cum_start, -1, []
        for key, value in self._scan(self._batch_lo, self._batch_hi, False, "invariants"):
            assert self._base_of(key) == expect_offset, (key, expect_offset)
            assert U64.unpack_from(value)[0] == cum, (key, cum)
            records = self._decode(value, "invariants")
            assert records, f"empty batch at {key!r}"
            assert [r.offset for r in records] == list(range(expect_offset,
                                                             expect_offset + len(records)))
            batch_max = max(r.timestamp_ms for r in records)
            if batch_max > running:
                index.append((self._time_key(batch_max), U64.pack(expect_offset)))
                running = batch_max
            expect_offset += len(records)
            cum += sum(r.size() for r in records)
        assert expect_offset == meta.end, (expect_offset, meta)
        assert cum == meta.cum_end, (cum, meta)
        assert running == meta.ts_max, (running, meta)
        assert list(self._scan(self._time_lo, self._time_hi, False, "invariants")) == index
        others = [k for k, _ in self._scan(self._prefix, self._prefix + b"\xff", False, "inv")
                  if k[len(self._prefix):len(self._prefix) + 1] not in (TAG_BATCH, TAG_TIME)
                  and k != self._meta_key]
        assert others == [], others

    # ------------------------------------------------------------------------------ internals

    def _recover(self) -> Meta:
        """Reads the meta and checks it against the first and last batch (two seeks, one decode)."""
        raw = self._get(self._meta_key, "open")
        if raw is None:
            stray = self._first(self._prefix, self._prefix + b"\xff", False, "open")
            if stray is not None:
                raise CorruptShard(f"shard {self.shard!r}: key {stray[0]!r} stored but no meta")
            return Meta(0, 0, 0, 0, -1)
        meta = Meta.decode(raw, self.shard)
        first = self._first(self._batch_lo, self._batch_hi, False, "open")
        last = self._first(self._batch_lo, self._batch_hi, True, "open")
        if meta.start == meta.end:
            if first is not None:
                raise CorruptShard(f"shard {self.shard!r}: meta says empty at {meta.end}, "
                                   f"but batch key {first[0]!r} is stored")
            return meta
        if first is None or last is None or self._base_of(first[0]) != meta.start:
            raise CorruptShard(f"shard {self.shard!r}: first batch "
                               f"{first and first[0]!r}, expected offset {meta.start}")
        records = self._decode(last[1], "open")
        cum = U64.unpack_from(last[1])[0] + sum(r.size() for r in records)
        if records[-1].offset + 1 != meta.end or cum != meta.cum_end:
            raise CorruptShard(f"shard {self.shard!r}: last batch {last[0]!r} ends at "
                               f"{records[-1].offset + 1} with {cum} bytes, meta says "
                               f"end {meta.end}, {meta.cum_end} bytes")
        self._sync_device("open")  # whatever recovery found is durable from here on
        return meta

    def _rebuild_index_head(self, offset: int, kept: list[Record]) -> tuple[list, bytes, int]:
        """Time-index entries for the retained head after `delete_before(offset)`.

        Returns (entries to put, the upper bound of the old entries to delete, the new ts_max).
        Old entries whose batch starts at or after `offset` stay valid from the first one on;
        batches before that one (the rewritten `kept` batch first) are decoded to recompute.
        """
        keep_from: tuple[bytes, int] | None = None
        for key, value in self._scan(self._time_lo, self._time_hi, False, "delete_before"):
            if U64.unpack(value)[0] >= offset:
                keep_from = (key, U64.unpack(value)[0])
                break
        stop = self._meta.end if keep_from is None else keep_from[1]
        puts: list[tuple[bytes, bytes]] = []
        running = -1
        if offset < stop:  # else the kept batch's own old entry is the first one kept
            running = max(r.timestamp_ms for r in kept)
            puts.append((self._time_key(running), U64.pack(offset)))
        if kept[-1].offset + 1 < stop:
            lo, hi = self._batch_key(kept[-1].offset + 1), self._batch_key(stop)
            for key, value in self._scan(lo, hi, False, "delete_before"):
                batch_max = max(r.timestamp_ms for r in self._decode(value, "delete_before"))
                if batch_max > running:
                    puts.append((self._time_key(batch_max), U64.pack(self._base_of(key))))
                    running = batch_max
        if keep_from is None:
            return puts, self._time_hi, running
        assert running < self._ts_of(keep_from[0]), (running, keep_from)
        return puts, keep_from[0], self._meta.ts_max

    def _index_tail_from(self, base: int) -> tuple[bytes, int]:
        """The lowest index key naming a batch >= `base`, and the key before it as ts (or -1)."""
        lowest = self._time_hi
        for key, value in self._scan(self._time_lo, self._time_hi, True, "truncate"):
            if U64.unpack(value)[0] < base:
                return lowest, self._ts_of(key)
            lowest = key
        return lowest, -1

    def _clear(self, op: str, new: Meta) -> None:
        ranges = [(self._batch_lo, self._batch_hi), (self._time_lo, self._time_hi)]
        self._write(op, puts=[(self._meta_key, new.encode())], delete_ranges=ranges, sync=True)
        self._set_durable(new)
        assert self._meta.start == self._meta.end
        assert self.bytes_total() == 0

    def _set_durable(self, new: Meta) -> None:
        """After a synced write: it and every earlier write are durable."""
        self._meta = new
        self._durable_end = new.end
        self._pending_since_ms, self._pending_bytes = None, 0

    def _note_pending(self, value_bytes: int) -> None:
        if self._pending_since_ms is None:
            self._pending_since_ms = self.clock()
        self._pending_bytes += value_bytes

    def _sync_kv(self, op: str) -> None:
        if self._durable_end == self._meta.end and self._pending_since_ms is None:
            return
        self._sync_device(op)
        self._durable_end = self._meta.end
        self._pending_since_ms, self._pending_bytes = None, 0

    def _sync_device(self, op: str) -> None:
        try:
            self.kv.sync()
        except DeviceError as exc:
            self._poison, self._poison_op = exc, op
            raise

    def _write(self, op: str, puts: list[tuple[bytes, bytes]],
               delete_ranges: Sequence[tuple[bytes, bytes]] = (), sync: bool = False) -> None:
        try:
            self.kv.write(puts=puts, delete_ranges=delete_ranges, sync=sync)
        except DeviceError as exc:
            self._poison, self._poison_op = exc, op
            raise

    def _get(self, key: bytes, op: str) -> bytes | None:
        try:
            return self.kv.get(key)
        except DeviceError as exc:
            self._poison, self._poison_op = exc, op
            raise

    def _scan(self, lo: bytes, hi: bytes, reverse: bool, op: str):  # noqa: ANN202 (generator)
        try:
            yield from self.kv.scan(lo, hi, reverse=reverse)
        except DeviceError as exc:
            self._poison, self._poison_op = exc, op
            raise

    def _first(self, lo: bytes, hi: bytes, reverse: bool, op: str) -> tuple[bytes, bytes] | None:
        for pair in self._scan(lo, hi, reverse, op):
            return pair
        return None

    def _batches_from(self, offset: int):  # noqa: ANN202 (generator)
        """The batch holding `offset`, then every later batch, as (key, value)."""
        found = self._first(self._batch_lo, self._batch_key(offset + 1), True, "read")
        if found is None:
            raise CorruptShard(f"shard {self.shard!r}: no batch holds offset {offset}")
        yield found
        yield from self._scan(self._batch_key(self._base_of(found[0]) + 1),
                              self._batch_key(self._meta.end), False, "read")

    def _decode(self, value: bytes, op: str) -> list[Record]:
        try:
            return decode_records(memoryview(value)[CUM_BYTES:])
        except CorruptBatch as exc:
            raise CorruptShard(f"shard {self.shard!r}: {op}: {exc}") from exc

    def _batch_key(self, offset: int) -> bytes:
        return self._batch_lo + U64.pack(offset)

    def _time_key(self, ts_ms: int) -> bytes:
        return self._time_lo + U64.pack(ts_ms)

    def _base_of(self, key: bytes) -> int:
        return U64.unpack_from(key, len(self._batch_lo))[0]

    def _ts_of(self, key: bytes) -> int:
        return U64.unpack_from(key, len(self._time_lo))[0]

    def _check_usable(self, op: str) -> None:
        if self._closed:
            raise EngineClosed(f"{op} on a closed {self.kind} engine (shard {self.shard!r})")
        if self._poison is not None:
            raise EnginePoisoned(f"{op} on {self.kind} shard {self.shard!r}: engine poisoned by "
                                 f"an earlier device error (in {self._poison_op}): "
                                 f"{self._poison}; reopen it")

    def _check_offset(self, offset: int, op: str) -> None:
        meta = self._meta
        if type(offset) is not int or not meta.start <= offset <= meta.end:
            raise OffsetOutOfRange(offset, meta.start, meta.end, op)


def _prefix_end(prefix: bytes) -> bytes:
    """The least key above every key starting with `prefix` (its last byte, a UTF-8 byte of the
    name, is never 0xff, so incrementing it is enough)."""
    assert prefix and prefix[-1] != 0xFF, prefix
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _next_tag(tag: bytes) -> bytes:
    """The exclusive upper bound of a tag's key range."""
    return bytes([tag[0] + 1])

