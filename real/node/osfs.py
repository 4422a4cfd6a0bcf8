"""`OsFileSystem`: the `FileSystem` port over a real directory (the real shell's disk).

Paths are relative to `root`. Append handles are cached (one fd per open file, `O_APPEND`), so a
journal's active segment costs one `write` per append; `close(path)` releases a handle. Every OS
error surfaces as `DeviceError`/`NotFound` naming the operation and path. Synchronous on purpose:
callers that must not block an event loop run it in a worker thread.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from real.storage.devices import DeviceError, NotFound
from real.storage.errors import InvalidArgument

HANDLES_MAX_DEFAULT = 256


class OsFileSystem:
    def __init__(self, root: str, handles_max: int = HANDLES_MAX_DEFAULT) -> None:
        if handles_max < 1:
            raise ValueError(f"handles_max must be >= 1, got {handles_max}")
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        self.handles_max = handles_max
        self._fds: dict[str, int] = {}  # path -> O_APPEND|O_RDWR fd, insertion order = LRU order

    def _abs(self, path: str) -> str:
        if path.startswith("/") or ".." in path.split("/"):
            raise DeviceError("resolve", path, "paths must be relative, without '..'")
        return os.path.join(self.root, path) if path else self.root

    def _fd(self, path: str, create: bool, op: str) -> int:
        fd = self._fds.pop(path, None)
        if fd is None:
            flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
            try:
                fd = os.open(self._abs(path), flags, 0o644)
            except FileNotFoundError:
                raise NotFound(op, path) from None
            except OSError as exc:
                raise DeviceError(op, path, _describe(exc)) from None
            while len(self._fds) >= self.handles_max:
                os.close(self._fds.pop(next(iter(self._fds))))
        self._fds[path] = fd  # most recently used last
        return fd

    # ------------------------------------------------------------------------------ the port

    def make_dirs(self, path: str) -> None:
        try:
            os.makedirs(self._abs(path), exist_ok=True)
        except OSError as exc:
            raise DeviceError("make_dirs", path, _describe(exc)) from None

    def list_dir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self._abs(path)))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise DeviceError("list_dir", path, _describe(exc)) from None

    def exists(self, path: str) -> bool:
        return os.path.exists(self._abs(path))

    def size(self, path: str) -> int:
        try:
            return os.stat(self._abs(path)).st_size
        except FileNotFoundError:
            raise NotFound("size", path) from None
        except OSError as exc:
            raise DeviceError("size", path, _describe(exc)) from None

    def read(self, path: str, offset: int, length: int) -> bytes:
        _non_negative("offset", offset)
        _non_negative("length", length)
        fd = self._fd(path, create=False, op="read")
        try:
            return os.pread(fd, length, offset)
        except OSError as exc:
            raise DeviceError("read", path, _describe(exc)) from None

    def append(self, path: str, data: bytes) -> int:
        fd = self._fd(path, create=True, op="append")
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            return os.lseek(fd, 0, os.SEEK_END)
        except OSError as exc:
            raise DeviceError("append", path, _describe(exc)) from None

    def truncate(self, path: str, size: int) -> None:
        _non_negative("size", size)
        fd = self._fd(path, create=False, op="truncate")
        try:
            os.ftruncate(fd, size)
        except OSError as exc:
            raise DeviceError("truncate", path, _describe(exc)) from None

    def sync(self, path: str) -> None:
        fd = self._fd(path, create=False, op="sync")
        try:
            os.fdatasync(fd)
        except OSError as exc:
            raise DeviceError("sync", path, _describe(exc)) from None

    def sync_handle(self, path: str) -> Callable[[], None]:
        """`DetachedSync`: a duplicate of the file's descriptor, fdatasynced (then closed) by the
        returned one-shot callable on any thread; closing or replacing `path`'s cached handle
        meanwhile cannot redirect it to another file."""
        fd = self._fd(path, create=False, op="sync")
        try:
            dup = os.dup(fd)
        except OSError as exc:
            raise DeviceError("sync", path, _describe(exc)) from None

        def sync() -> None:
            try:
                os.fdatasync(dup)
            except OSError as exc:
                raise DeviceError("sync", path, _describe(exc)) from None
            finally:
                os.close(dup)

        return sync

    def sync_dir(self, path: str) -> None:
        try:
            fd = os.open(self._abs(path), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise NotFound("sync_dir", path) from None
        except OSError as exc:
            raise DeviceError("sync_dir", path, _describe(exc)) from None

    def rename(self, src: str, dst: str) -> None:
        self.close(src)
        self.close(dst)
        try:
            os.replace(self._abs(src), self._abs(dst))
        except FileNotFoundError:
            raise NotFound("rename", src) from None
        except OSError as exc:
            raise DeviceError("rename", src, _describe(exc)) from None

    def remove(self, path: str) -> None:
        self.close(path)
        try:
            os.remove(self._abs(path))
        except FileNotFoundError:
            raise NotFound("remove", path) from None
        except OSError as exc:
            raise DeviceError("remove", path, _describe(exc)) from None

    def remove_dir(self, path: str) -> None:
        if not path:
            raise DeviceError("remove_dir", path, "the root cannot be removed")
        try:
            os.rmdir(self._abs(path))
        except FileNotFoundError:
            raise NotFound("remove_dir", path) from None
        except OSError as exc:  # ENOTEMPTY, ENOTDIR, ...
            raise DeviceError("remove_dir", path, _describe(exc)) from None

    def close(self, path: str) -> None:
        fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def close_all(self) -> None:
        for path in list(self._fds):
            self.close(path)


def _non_negative(name: str, value: int) -> None:
    if type(value) is not int or value < 0:
        raise InvalidArgument(f"{name} must be an int >= 0, got {value!r}")


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "E?")
    return f"{name}: {exc.strerror}"
