"""The real shell of the meta Raft log: a lock file, `OsFileSystem` and `RaftLog`.

The record format, recovery and compaction live in the pure `real.server.raftlog.RaftLog`, which the
simulator runs too (over `model.devices.fs.SimFileSystem`). This module adds what only a real disk
needs: an exclusive `flock` on `<directory>/LOCK`, so two processes never share a data directory.

API (what `real/node/server.py` and `MetaReplica` use):

    disk = RaftDisk(directory)       # creates and locks `directory`, recovers `raft.log` in it
    disk.recovery                    # Recovery(durable, records, truncated_bytes)
    disk.durable() -> DurableState
    disk.save(snapshot=, entries=, hard_state=, sync=)
    disk.sync(); disk.rewrite(snapshot); disk.close()
    disk.dir, disk.path, disk.bytes, disk.entry_count, disk.log (the RaftLog)

Errors: `DiskError` (locked, bad magic, an I/O failure while opening), `DiskCorruption` (mid-log
corruption; the message names the file and byte positions), `real.storage.devices.DeviceError`
for an I/O failure after opening. Syncs are fdatasync (`OsFileSystem.sync`): enough for an
append-only file, whose size change it flushes.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from real.node.osfs import OsFileSystem
from real.raft.types import DurableState, Entry, HardState, Snapshot
from real.server.raftlog import (
    LOG_NAME,
    MAGIC,
    DiskCorruption,
    DiskError,
    RaftLog,
    Recovery,
    decode_payload,
    encode_entry,
    encode_hard_state,
    encode_record,
    encode_snapshot,
    fold,
    next_valid_record,
    replay,
    scan,
)
from real.storage.devices import DeviceError

__all__ = [
    "LOCK_NAME", "LOG_NAME", "MAGIC", "DiskCorruption", "DiskError", "RaftDisk", "Recovery",
    "decode_payload", "encode_entry", "encode_hard_state", "encode_record", "encode_snapshot",
    "fold", "next_valid_record", "replay", "scan",
]

LOCK_NAME = "LOCK"


class RaftDisk:
    """The meta group's stable storage under `directory` (created if missing, locked)."""

    def __init__(self, directory: Path, hold_unsynced: bool = False) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(self.dir / LOCK_NAME)
        self.path = self.dir / LOG_NAME
        if hold_unsynced:  # the power-loss fault (real/node/holdfs.py)
            from real.node.holdfs import HoldingFileSystem

            self._fs: OsFileSystem | HoldingFileSystem = HoldingFileSystem(
                str(self.dir), handles_max=4)
        else:
            self._fs = OsFileSystem(str(self.dir), handles_max=4)
        try:
            self.log = RaftLog(self._fs, "")
        except DiskError as exc:
            self._release()
            raise type(exc)(f"{self.dir}/{exc}") from None
        except DeviceError as exc:  # unreadable at startup: the CLI reports DiskError, exit 1
            self._release()
            raise DiskError(f"{self.dir}: {exc}") from exc
        except BaseException:
            self._release()
            raise
        self.recovery: Recovery = self.log.recovery

    @property
    def bytes(self) -> int:
        return self.log.bytes

    @property
    def entry_count(self) -> int:
        return self.log.entry_count

    def durable(self) -> DurableState:
        return self.log.durable()

    def save(self, *, snapshot: Snapshot | None = None, entries: tuple[Entry, ...] = (),
             hard_state: HardState | None = None, sync: bool) -> None:
        """Append snapshot, entries, hard state (in that order); fsync if `sync`."""
        self.log.save(snapshot=snapshot, entries=entries, hard_state=hard_state, sync=sync)

    def rewrite(self, snapshot: Snapshot) -> None:
        """Compact: keep `snapshot`, the hard state and the entries after the snapshot."""
        self.log.rewrite(snapshot)

    def sync(self) -> None:
        self.log.sync()

    def close(self) -> None:
        if self._lock_fd >= 0:
            self.log.close()
        self._release()

    def _release(self) -> None:
        self._fs.close_all()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise DiskError(f"{path.parent}: in use by another process (lock {path.name})") from exc
    return fd
