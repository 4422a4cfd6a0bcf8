"""`HoldingFileSystem`: the power-loss fault for real nodes (in the spirit of Jepsen's lazyfs).

A SIGKILL keeps everything a process wrote to the OS (the page cache survives it), so killing a
node cannot show what a power cut loses. With `[storage] hold_unsynced = true` (flag
`--hold-unsynced`) a node's files go through this layer: what is appended to a file stays in the
process until the file is synced, and only then reaches the OS (written, then fdatasynced). A
SIGKILL of the node then loses exactly the unsynced writes, as the simulator's disk
(`model/devices/fs.py`) loses them on a crash: what the fsync policy never promised.

Reads, sizes and truncation see the held bytes (a process reads its own writes). What is held:
file *contents* appended since the last sync of that file. Not held (they reach the OS at once):
creations, renames and removals of files and directories, so a power cut here keeps directory
entries a real one might lose; the engines fsync their directories where it matters, and the
simulator covers that case. Held bytes are unbounded: a node under fsync "never" holds every
byte it writes (meant for fault drills, not for production).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from real.node.osfs import OsFileSystem
from real.storage.errors import InvalidArgument


class HoldingFileSystem:
    def __init__(self, root: str, handles_max: int = 256) -> None:
        self._os = OsFileSystem(root, handles_max=handles_max)
        self._held: dict[str, bytearray] = {}
        self._lock = threading.Lock()  # sync handles run on worker threads
        self.held_bytes_max = 0

    # ---- pass-through ---------------------------------------------------------------------

    def make_dirs(self, path: str) -> None:
        self._os.make_dirs(path)

    def list_dir(self, path: str) -> list[str]:
        return self._os.list_dir(path)

    def exists(self, path: str) -> bool:
        return path in self._held or self._os.exists(path)

    def sync_dir(self, path: str) -> None:
        self._os.sync_dir(path)

    def remove_dir(self, path: str) -> None:
        self._os.remove_dir(path)

    def close(self, path: str) -> None:
        self._os.close(path)

    def close_all(self) -> None:
        self._os.close_all()

    # ---- contents -------------------------------------------------------------------------

    def _os_size(self, path: str) -> int:
        return self._os.size(path) if self._os.exists(path) else 0

    def size(self, path: str) -> int:
        with self._lock:
            held = self._held.get(path)
            if held is None:
                return self._os.size(path)
            return self._os_size(path) + len(held)

    def read(self, path: str, offset: int, length: int) -> bytes:
        with self._lock:
            held = self._held.get(path)
            if held is None:
                return self._os.read(path, offset, length)
            base = self._os_size(path)
            out = self._os.read(path, offset, length) if offset < base else b""
            if len(out) < length and offset + len(out) >= base:
                start = offset + len(out) - base
                out += bytes(held[start:start + length - len(out)])
            return out

    def append(self, path: str, data: bytes) -> int:
        with self._lock:
            held = self._held.get(path)
            if held is None:
                if not self._os.exists(path):
                    self._os.append(path, b"")  # the file exists at once (not its contents)
                held = self._held[path] = bytearray()
            held += data
            total = sum(len(b) for b in self._held.values())
            self.held_bytes_max = max(self.held_bytes_max, total)
            return self._os_size(path) + len(held)

    def truncate(self, path: str, size: int) -> None:
        if type(size) is not int or size < 0:
            raise InvalidArgument(f"size must be an int >= 0, got {size!r}")
        with self._lock:
            base = self._os_size(path)
            held = self._held.get(path)
            if held is not None and size >= base:
                del held[size - base:]
                return
            self._held.pop(path, None)
            self._os.truncate(path, size)

    def _release(self, path: str) -> None:
        """Hand what `path` holds to the OS (the caller then fdatasyncs it)."""
        held = self._held.pop(path, None)
        if held:
            self._os.append(path, bytes(held))

    def sync(self, path: str) -> None:
        with self._lock:
            self._release(path)
        self._os.sync(path)

    def sync_handle(self, path: str) -> Callable[[], None]:
        """The held bytes go to the OS now (on the caller's thread), the fdatasync runs where
        the returned callable is called; a SIGKILL in between may keep them or not, as a power
        cut during an fsync may."""
        with self._lock:
            self._release(path)
        return self._os.sync_handle(path)

    def rename(self, src: str, dst: str) -> None:
        with self._lock:
            held = self._held.pop(src, None)
            self._held.pop(dst, None)
            self._os.rename(src, dst)
            if held is not None:
                self._held[dst] = held

    def remove(self, path: str) -> None:
        with self._lock:
            self._held.pop(path, None)
            self._os.remove(path)
