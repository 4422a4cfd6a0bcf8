"""The three device ports engines reach storage through (STYLE 14): files, key-value, objects.

Engines take one of these (plus a `Clock`) in their constructor and never import `os`, `rocksdict`
or `boto3`. The real shell passes `real.node.osfs.OsFileSystem`, `real.node.rocks.RocksKeyValue` and
`real.node.s3.S3ObjectStore`; the simulator passes `model.devices.fs.SimFileSystem`,
`model.devices.kv.SimKeyValue` and `model.devices.objstore.SimObjectStore`, which lose unsynced data
on a crash and charge simulated time.

Durability vocabulary shared by every implementation:

- FileSystem: `append` hands bytes to the OS (they survive the *process* dying, not the machine);
  `sync(path)` (fdatasync) makes a file's content durable; `sync_dir(dir)` makes creations, removals
  and renames of entries in that directory durable (a `remove_dir(d)` is an entry removal in d's
  parent). A simulated crash reverts each file to its last
  synced content (optionally keeping a torn prefix of the unsynced writes) and each directory to its
  last synced entries.
- KeyValue: `write(..., sync=True)` is durable on return; `sync=False` writes survive a process
  crash (RocksDB's WAL is in the page cache) but not a machine crash until `sync()`. Each `write`
  is atomic.
- ObjectStore: `put` is durable and visible on return (S3's strong read-after-write consistency);
  an object is replaced whole, never partially.

Errors: implementations raise `DeviceError` (or a subclass) for I/O failures, never OSError or a
client library's exception, so engines can poison themselves after, e.g., a failed fsync.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, runtime_checkable

from real.storage.errors import StorageError

Clock = Callable[[], int]
"""Milliseconds on a monotonic clock: the loop clock in `real/`, simulated time in `model/`."""


def zero_clock() -> int:
    return 0


class DeviceError(StorageError):
    """An I/O operation failed (EIO, ENOSPC, a refused request); names the operation and target."""

    def __init__(self, op: str, target: str, detail: str) -> None:
        self.op = op
        self.target = target
        self.detail = detail
        super().__init__(f"{op} {target!r} failed: {detail}")


class NotFound(DeviceError):
    """The file or object does not exist."""

    def __init__(self, op: str, target: str) -> None:
        super().__init__(op, target, "not found")


class TransientDeviceError(DeviceError):
    """A failure worth retrying (an S3 503 SlowDown, a throttled request)."""


@runtime_checkable
class FileSystem(Protocol):
    """Paths are '/'-separated and relative to the filesystem's root; no '..' segments."""

    def make_dirs(self, path: str) -> None: ...

    def list_dir(self, path: str) -> list[str]:
        """Sorted entry names; [] if the directory does not exist."""
        ...

    def exists(self, path: str) -> bool: ...

    def size(self, path: str) -> int:
        """Raises `NotFound`."""
        ...

    def read(self, path: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset` (short only at end of file). Raises `NotFound`."""
        ...

    def append(self, path: str, data: bytes) -> int:
        """Writes `data` at the end of the file (creating it); returns the new size."""
        ...

    def truncate(self, path: str, size: int) -> None: ...

    def sync(self, path: str) -> None:
        """fdatasync: the file's content so far is durable."""
        ...

    def sync_dir(self, path: str) -> None:
        """Entry creations, removals and renames in directory `path` so far are durable."""
        ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically replaces `dst` (same directory)."""
        ...

    def remove(self, path: str) -> None:
        """Raises `NotFound`."""
        ...

    def remove_dir(self, path: str) -> None:
        """Removes the EMPTY directory `path` (rmdir): `NotFound` if missing, `DeviceError` if
        it is a file, holds entries, or is the root. Durable once `sync_dir` of its parent."""
        ...

    def close(self, path: str) -> None:
        """Releases any handle cached for `path` (a no-op if none)."""
        ...


@runtime_checkable
class DetachedSync(Protocol):
    """Optional `FileSystem` extension: an fdatasync that can run away from the owner's thread.

    `sync_handle(path)` runs on the owner's thread and returns a one-shot callable; calling it
    (on any thread, exactly once) makes at least the content `path` had when the handle was taken
    durable, even if the owner appends to, truncates or closes `path` meanwhile. It raises
    `DeviceError` like `sync`. Without this extension a journal's background sync runs `sync`
    inline on the owner's thread (same durability, no overlap)."""

    def sync_handle(self, path: str) -> Callable[[], None]: ...


def write_file_atomic(fs: FileSystem, path: str, data: bytes) -> None:
    """Replaces `path` with `data` durably: temp file, sync, rename, sync the directory."""
    tmp = path + ".tmp"
    if fs.exists(tmp):
        fs.remove(tmp)
    fs.append(tmp, data)
    fs.sync(tmp)
    fs.close(tmp)
    fs.rename(tmp, path)
    fs.sync_dir(parent_dir(path))


def parent_dir(path: str) -> str:
    head, _, _ = path.rpartition("/")
    return head


@runtime_checkable
class KeyValue(Protocol):
    """An ordered byte-string map (RocksDB's model): atomic write batches, ordered range scans."""

    def get(self, key: bytes) -> bytes | None: ...

    def write(
        self,
        puts: Sequence[tuple[bytes, bytes]] = (),
        deletes: Sequence[bytes] = (),
        delete_ranges: Sequence[tuple[bytes, bytes]] = (),
        sync: bool = False,
    ) -> None:
        """One atomic batch: range deletions [lo, hi), then deletes, then puts."""
        ...

    def scan(
        self, start: bytes, end: bytes, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with start <= key < end, ascending (or descending if `reverse`)."""
        ...

    def sync(self) -> None:
        """Every write so far is durable (syncs the write-ahead log)."""
        ...

    def close(self) -> None: ...


def check_key(op: str, key: object) -> None:
    """The KeyValue port's key rule, shared by every implementation."""
    if type(key) is not bytes:
        raise TypeError(f"{op}: keys must be bytes, got {type(key).__name__}")


def check_write(
    puts: Sequence[tuple[bytes, bytes]],
    deletes: Sequence[bytes],
    delete_ranges: Sequence[tuple[bytes, bytes]],
) -> None:
    """The KeyValue port's argument rules for `write`, shared by every implementation."""
    for index, pair in enumerate(puts):
        if not (type(pair) is tuple and len(pair) == 2 and type(pair[0]) is bytes
                and type(pair[1]) is bytes):
            raise TypeError(f"write: puts[{index}] must be (bytes, bytes), got {pair!r:.80}")
    for index, key in enumerate(deletes):
        if type(key) is not bytes:
            raise TypeError(f"write: deletes[{index}] must be bytes, got {key!r:.80}")
    for index, pair in enumerate(delete_ranges):
        if not (type(pair) is tuple and len(pair) == 2 and type(pair[0]) is bytes
                and type(pair[1]) is bytes):
            raise TypeError(f"write: delete_ranges[{index}] must be (bytes, bytes), got {pair!r}")
        if pair[0] > pair[1]:
            raise ValueError(f"write: delete_ranges[{index}] has lo {pair[0]!r} > hi {pair[1]!r}")


@runtime_checkable
class ObjectStore(Protocol):
    """A flat namespace of immutable-once-written objects (S3's model)."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of the object (end None = to its end); a negative `start` with
        `end=None` means the last -start bytes. Raises `NotFound`."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Keys starting with `prefix`, sorted."""
        ...

    def delete(self, key: str) -> None:
        """Idempotent: deleting a missing key is not an error."""
        ...


@runtime_checkable
class Durable(Protocol):
    """What engines with a durability point beyond `append` returning expose to their shell.

    - `durable_end()`: every offset below it has reached the engine's durability point (fsync for
      the file journal, a synced WAL for RocksDB, a completed PUT for S3). Producers that promise
      durability acknowledge an offset only once it is below `durable_end()`.
    - `next_flush_ms()`: when `poll` has work (a group-commit or linger deadline), None if idle.
    - `poll(now_ms)`: does the due work; cheap when there is none.
    """

    def durable_end(self) -> int: ...

    def next_flush_ms(self) -> int | None: ...

    def poll(self, now_ms: int) -> None: ...
