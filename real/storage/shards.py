"""`ShardStore`: named shards (an MQTT topic, a Kafka partition) each over its own engine.

Engines come from factories keyed by kind (`"memory"` built in; the file journal, RocksDB and S3
engines register theirs). A factory opens (recovers) whatever its engine finds at the shard's
location (a directory, a key prefix, an object prefix). Shard names are iterated sorted, never as
a set.

Lifecycle. The shard catalogue itself lives in the meta service; this store only holds the open
engines of one node:

- `create(name)`: a NEW shard. Its factory must return an engine at offset 0 holding nothing;
  leftover data (a crash between a meta-service delete and the engine's destroy, a name reused
  without a delete) is refused with `ShardDataExists`, never silently adopted.
- `attach(name)`: re-opens an EXISTING shard after a node restart: the factory recovers whatever
  is there (perhaps nothing), and no emptiness is required.
- `delete(name)`: `engine.destroy()`: the data is removed durably before the shard leaves the
  store, so a later `create` of the name starts empty. If destroy fails (a device error), the
  shard stays listed with its engine closed: retry `delete`.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from real.storage.errors import (
    InvalidArgument,
    ShardExists,
    StorageError,
    StorageFull,
    UnknownEngine,
    UnknownShard,
)
from real.storage.memory import MemoryEngine
from real.storage.port import (
    BackgroundSyncEngine,
    DurableEngine,
    ShardEngine,
    SyncJob,
    runs_background_sync,
)
from real.storage.record import Record

EngineFactory = Callable[..., DurableEngine]
"""Shard name -> its engine, opened (recovered); keyword arguments (`attach`'s) go through,
e.g. `epoch` for a shard on shared storage."""
SHARDS_MAX_DEFAULT = 100_000
SHARD_NAME_BYTES_MAX = 1024
RETENTION_SCAN_RECORDS = 1024


class ShardDataExists(ShardExists):
    """`create` found durable data where a new shard should start empty; names what it found."""

    def __init__(self, name: str, engine: str, start: int, end: int) -> None:
        super().__init__(name)
        self.engine = engine
        self.start_offset = start
        self.end_offset = end
        self.args = (
            f"create: shard {name!r} already has data in its {engine!r} engine (offsets "
            f"[{start}, {end}), expected an empty log at 0); attach it to re-open it, or "
            f"delete it first",
        )


@dataclass(frozen=True, slots=True)
class ShardInfo:
    name: str
    engine: str
    start_offset: int
    end_offset: int
    records: int
    bytes: int


def default_factories() -> dict[str, EngineFactory]:
    return {"memory": lambda _name: MemoryEngine()}


class ShardStore:
    def __init__(
        self,
        factories: Mapping[str, EngineFactory] | None = None,
        default_engine: str = "memory",
        shards_max: int = SHARDS_MAX_DEFAULT,
    ) -> None:
        self._factories = dict(default_factories() if factories is None else factories)
        if default_engine not in self._factories:
            raise UnknownEngine(default_engine, sorted(self._factories))
        if type(shards_max) is not int or shards_max < 1:
            raise InvalidArgument(f"shards_max must be an int >= 1, got {shards_max!r}")
        self.default_engine = default_engine
        self.shards_max = shards_max
        self._shards: dict[str, tuple[str, DurableEngine]] = {}
        self.sync_failures: list[tuple[str, str]] = []
        """(shard, error) of engines that failed in `start_syncs`; the caller drains it."""

    # ------------------------------------------------------------------------------- catalogue

    def create(self, name: str, engine: str | None = None) -> ShardInfo:
        """Opens a new, empty shard; `ShardDataExists` (engine closed) if data is already there."""
        kind = self._check_new(name, engine)
        opened = self._factories[kind](name)
        start, end = opened.start_offset(), opened.end_offset()
        if start != 0 or end != 0:
            opened.close()
            raise ShardDataExists(name, kind, start, end)
        self._shards[name] = (kind, opened)
        info = self.describe(name)
        assert info.records == 0 and info.end_offset == 0, info
        assert info.engine == kind
        return info

    def attach(self, name: str, engine: str | None = None, **open_args: Any) -> ShardInfo:
        """Re-opens an existing shard (node restart): the factory recovers whatever is there.
        `open_args` go to the factory (`epoch=E`: a shared S3 shard led under epoch E)."""
        kind = self._check_new(name, engine)
        self._shards[name] = (kind, self._factories[kind](name, **open_args))
        info = self.describe(name)
        assert info.engine == kind
        assert info.start_offset <= info.end_offset, info
        return info

    def detach(self, name: str) -> None:
        """Closes the shard's engine and forgets it; the data stays (this node stops serving a
        shard that lives on shared storage). A failing close is the caller's to report."""
        _kind, engine = self._lookup(name)
        del self._shards[name]
        engine.close()

    def delete(self, name: str) -> None:
        """Destroys the shard's data durably, then forgets it (kept listed if destroy fails)."""
        _kind, engine = self._lookup(name)
        engine.destroy()
        del self._shards[name]
        assert name not in self._shards

    def _check_new(self, name: str, engine: str | None) -> str:
        _check_name(name)
        kind = self.default_engine if engine is None else engine
        if kind not in self._factories:
            raise UnknownEngine(kind, sorted(self._factories))
        if name in self._shards:
            raise ShardExists(name)
        if len(self._shards) >= self.shards_max:
            raise StorageFull("shards_max", len(self._shards) + 1, self.shards_max)
        return kind

    def list(self) -> list[str]:
        return sorted(self._shards)

    def describe(self, name: str) -> ShardInfo:
        kind, engine = self._lookup(name)
        start, end = engine.start_offset(), engine.end_offset()
        return ShardInfo(name, kind, start, end, end - start, engine.bytes_total())

    def engine(self, name: str) -> DurableEngine:
        return self._lookup(name)[1]

    # ------------------------------------------------------------------------------- data path

    def append(self, name: str, records: Sequence[Record]) -> int:
        return self.engine(name).append(records)

    def read(
        self, name: str, offset: int, records_max: int, bytes_max: int
    ) -> builtins.list[Record]:
        return self.engine(name).read(offset, records_max, bytes_max)

    def offset_for_time(self, name: str, ts_ms: int) -> int:
        return self.engine(name).offset_for_time(ts_ms)

    def sync(self, name: str) -> None:
        self.engine(name).sync()

    # ------------------------------------------------------------------------------- durability
    # `append` returns once the records are accepted; an offset is acknowledged (durable per the
    # shard's engine and policy) once it is below `durable_end(name)`. The shell drives group
    # commit and S3 linger for every shard: sleep until `next_flush_ms()`, then `poll(now)` (or
    # `start_syncs(now)`, to run the file journal's fdatasyncs off the shell's thread).

    def durable_end(self, name: str) -> int:
        return self.engine(name).durable_end()

    def ack_end(self, name: str) -> int:
        """Where a broker may acknowledge appends to `name`: the engine's `ack_end()` (the file
        journal under fsync "never": written to the OS), else its `durable_end()`."""
        engine = self.engine(name)
        ack_end: Callable[[], int] | None = getattr(engine, "ack_end", None)
        return ack_end() if ack_end is not None else engine.durable_end()

    def next_flush_ms(self) -> int | None:
        """The earliest deadline of any shard's pending group commit or linger (None if idle).
        A poisoned engine has none (it fails its own requests; it must not stop the others)."""
        due = None
        for name in self.list():
            try:
                at = self._shards[name][1].next_flush_ms()
            except StorageError:
                continue
            if at is not None and (due is None or at < due):
                due = at
        return due

    def poll(self, now_ms: int) -> builtins.list[str]:
        """Does the due work of every shard whose deadline has passed; returns their names."""
        polled = []
        for name in self.list():
            engine = self._shards[name][1]
            due = engine.next_flush_ms()
            if due is not None and due <= now_ms:
                engine.poll(now_ms)
                polled.append(name)
        return polled

    def start_syncs(
        self, now_ms: int
    ) -> builtins.list[tuple[str, BackgroundSyncEngine, SyncJob]]:
        """`poll` for a shell that runs fdatasyncs away from its thread: a due shard whose engine
        has `background_sync` (the file journal's option) starts a job, returned as (name,
        engine, job): run `job.sync()`, then `engine.finish_sync(job, error)`. Other due shards
        are polled in place. A shard whose engine fails (and poisons itself) is skipped and its
        error appended to `sync_failures` (the caller reports them); the others go on."""
        jobs: builtins.list[tuple[str, BackgroundSyncEngine, SyncJob]] = []
        for name in self.list():
            engine = self._shards[name][1]
            try:
                due = engine.next_flush_ms()
                if due is None or due > now_ms:
                    continue
                if runs_background_sync(engine):
                    job = engine.start_sync(now_ms)
                    if job is not None:
                        jobs.append((name, engine, job))
                else:
                    engine.poll(now_ms)
            except StorageError as exc:
                self.sync_failures.append((name, str(exc)))
        return jobs

    def close(self) -> None:
        """Closes every engine (in name order); the catalogue stays readable."""
        for name in self.list():
            self._shards[name][1].close()

    # ------------------------------------------------------------------------------- retention

    def apply_retention(
        self,
        name: str,
        before_offset: int | None = None,
        before_time_ms: int | None = None,
        max_bytes: int | None = None,
    ) -> int:
        """Drops records by any of the three rules (the strictest wins); returns the new start.

        `before_offset` drops offsets below it (clamped to end); `before_time_ms` drops the prefix
        before the first record with timestamp >= it; `max_bytes` drops the oldest records until the
        rest total at most `max_bytes`.
        """
        engine = self.engine(name)
        start, end = engine.start_offset(), engine.end_offset()
        cut = start
        if before_offset is not None:
            cut = max(cut, min(before_offset, end))
        if before_time_ms is not None:
            cut = max(cut, engine.offset_for_time(before_time_ms))
        if max_bytes is not None:
            if type(max_bytes) is not int or max_bytes < 0:
                raise InvalidArgument(f"max_bytes must be an int >= 0, got {max_bytes!r}")
            cut = max(cut, _offset_for_bytes(engine, max_bytes))
        if cut > start:
            engine.delete_before(cut)
        assert engine.start_offset() == cut, (engine.start_offset(), cut)
        assert engine.end_offset() == end
        return cut

    def _lookup(self, name: str) -> tuple[str, DurableEngine]:
        try:
            return self._shards[name]
        except KeyError:
            raise UnknownShard(name) from None


def _offset_for_bytes(engine: ShardEngine, max_bytes: int) -> int:
    """The lowest offset from which the rest of the log totals at most `max_bytes`."""
    excess = engine.bytes_total() - max_bytes
    offset, end = engine.start_offset(), engine.end_offset()
    while excess > 0 and offset < end:
        for rec in engine.read(offset, RETENTION_SCAN_RECORDS, max(excess, 1)):
            if excess <= 0:
                break
            excess -= rec.size()
            offset = rec.offset + 1
    assert excess <= 0, excess
    assert offset <= end
    return offset


def _check_name(name: str) -> None:
    if type(name) is not str or not name:
        raise InvalidArgument(f"shard name must be a non-empty str, got {name!r}")
    if len(name.encode()) > SHARD_NAME_BYTES_MAX:
        raise InvalidArgument(f"shard name {name[:40]!r}... exceeds {SHARD_NAME_BYTES_MAX} bytes")
