"""The one narrow port every shard engine implements (STYLE 14).

Offsets are contiguous: a shard holds exactly the records with offsets in [start, end). `append`
assigns the next offsets; `delete_before` (retention) advances start; `truncate` lowers end.
Engines never read a clock: timestamps arrive inside records, and retention times are arguments.
Engines that need disks will take a FileSystem port; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeGuard, runtime_checkable

from real.storage.devices import Durable
from real.storage.record import Record


@runtime_checkable
class ShardEngine(Protocol):
    """A single append-only log of records.

    - `append(records)`: assigns offsets end, end+1, ...; returns the base offset. Every record must
      carry `timestamp_ms >= 0`. Rejects with `BatchTooLarge`/`StorageFull`, never drops.
      An empty append stores nothing and returns `end_offset()`.
    - `read(offset, records_max, bytes_max)`: records from `offset` in order, at most `records_max`,
      stopping before `bytes_max` (by `Record.size()`) is exceeded, but always at least one record
      if any exists at `offset` (Kafka style). `offset == end` gives []; outside [start, end]
      raises `OffsetOutOfRange`.
    - `offset_for_time(ts_ms)`: the first offset whose timestamp is >= ts_ms, or `end_offset()`.
      Timestamps need not be monotonic.
    - `truncate(offset)`: drops records >= offset; start <= offset <= end.
    - `delete_before(offset)`: drops records < offset (start advances); offset <= end.
      An offset at or below start is a no-op.
    - `bytes_total()`: sum of `Record.size()` of the stored records.
    - `sync()`: makes every accepted append durable. `close()`: later calls raise `EngineClosed`.
    - `destroy()`: closes the engine (unsynced appends are discarded, not flushed) and removes
      ALL of its durable state, durably: when it returns, a fresh engine over the same location
      (directory, key prefix, object prefix) opens empty at offset 0, even after a machine crash.
      Works on an open, closed or poisoned engine and is idempotent. A crash (or a device error)
      part-way leaves, once a fresh engine recovers, either the log exactly as a crash at the
      call would have left it or an empty log at offset 0: never a gap, a prefix or a
      corruption error. Each engine documents how (a tombstone for files and objects, one
      atomic write for key-value). After a failed destroy, call it again.
    """

    kind: str

    def append(self, records: Sequence[Record]) -> int: ...

    def read(self, offset: int, records_max: int, bytes_max: int) -> list[Record]: ...

    def offset_for_time(self, ts_ms: int) -> int: ...

    def start_offset(self) -> int: ...

    def end_offset(self) -> int: ...

    def bytes_total(self) -> int: ...

    def truncate(self, offset: int) -> None: ...

    def delete_before(self, offset: int) -> None: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...

    def destroy(self) -> None: ...


@runtime_checkable
class ReopenableEngine(ShardEngine, Protocol):
    """Test hook: `reopen()` after `close()` gives an engine over the same durable state.

    Whatever was synced must survive; the memory engine returns itself. After `destroy()`,
    `reopen()` gives an empty engine at offset 0.
    """

    def reopen(self) -> ShardEngine: ...

    def invariants(self) -> None: ...


@runtime_checkable
class DurableEngine(ShardEngine, Durable, Protocol):
    """A `ShardEngine` that is also `Durable`: what a `ShardStore` holds (every engine is both)."""


@dataclass(frozen=True, slots=True)
class SyncJob:
    """One background group commit (see `real.storage.journal`): call `sync()` once, on any
    thread if `detached` (else on the owner's), then hand the job back with `finish_sync`."""

    end: int  # durable_end once the job has finished
    sync: Callable[[], None]
    detached: bool
    epoch: int


@runtime_checkable
class BackgroundSyncEngine(DurableEngine, Protocol):
    """Optional engine extension (the file journal): group commit run away from the owner's
    thread. When `background_sync` is true, a due engine is not `poll`ed: `start_sync(now_ms)`
    writes the buffer and returns the job (None if nothing is due), the job's `sync()` runs, and
    `finish_sync(job, error)` moves `durable_end` (or poisons the engine on `error`)."""

    @property
    def background_sync(self) -> bool: ...

    def start_sync(self, now_ms: int) -> SyncJob | None: ...

    def finish_sync(self, job: SyncJob, error: BaseException | None = None) -> None: ...


def runs_background_sync(engine: ShardEngine) -> TypeGuard[BackgroundSyncEngine]:
    """Whether `engine` has background group commit switched on. A plain attribute read: an
    isinstance check against the runtime-checkable protocol costs ~100x more, per due shard."""
    return bool(getattr(engine, "background_sync", False))
