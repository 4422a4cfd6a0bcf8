"""`SimFileSystem`: the `FileSystem` port in memory, with power loss, torn writes, EIO and bit rot.

This docstring is the contract engines are tested against in the simulator. It models a POSIX
filesystem the way a careful engine must assume it behaves (ext4/XFS without data journalling).

**Tree.** Directories are explicit. The root `""` always exists; `make_dirs` creates the missing
directories of a path; creating a file (`append`) in a missing directory raises `NotFound`, like
the OS. `list_dir` of a missing directory is `[]`. Paths are '/'-separated and relative: a leading
'/', a '..', a '.' or an empty segment raises `DeviceError("resolve", path, ...)`.

**Inodes and durability.** Each file is an inode with *current* content (what reads see) and
*durable* content (what survives power loss). `append` and `truncate` change the current content
at once and queue a content operation (append bytes / truncate to a size) on the inode's ordered
list of unsynced operations. `sync(path)` (fdatasync) makes the inode's current content durable
and empties the list. Each directory maps names to inodes (or directories) and keeps a durable
copy of that mapping; `sync_dir(dir)` copies the current mapping into the durable one. So a file
created but whose directory was never synced vanishes on a crash (even if its content was synced),
a removed file whose directory was not synced reappears (with its durable content), and a rename
not followed by `sync_dir` is undone. `make_dirs` follows the same rule: a new directory is an
entry of its parent, durable only once the parent is synced (`SimFsConfig.make_dirs_durable=True`
relaxes this); `remove_dir` (empty directories only) is an entry removal in the parent, durable
once the parent is synced. `rename` works within one directory only (the port's contract) and may
replace a file or an empty directory.

**Crash (`crash()`, power loss).** Every directory reachable from the root through *durable*
mappings takes its durable mapping back; everything else is gone. Every surviving file gets its
durable content plus a random prefix of its unsynced operation list: the first k operations, k
uniform in [0, n]. With `torn_writes`, if operation k (the first dropped) is an append, a random
byte prefix of it, 0 to len-1 bytes, survives too: a prefix, never a reordering or a hole.
Files are independent (no ordering across files). After recovery every file is fully durable.

**Writeback.** Like the kernel's periodic writeback, once an inode has more than
`writeback_ops_max` unsynced operations the oldest half become durable without a `sync` (still a
prefix, so the crash rule above holds). This also bounds the memory the model keeps per file.

**Faults.** `inject_eio(op, path_prefix, count)`: the next `count` calls of port method `op`
whose path (the source for `rename`) starts with `path_prefix` raise `DeviceError` with detail
"EIO (injected)" and change nothing. `capacity_bytes`: an `append` or growing `truncate` that
would take the total current size of all files past it raises `DeviceError` ("ENOSPC: ...") and
changes nothing. `flip_bit(path, byte_offset, bit)` flips one bit of the file as stored: in the
current content and, where the durable content reaches that offset, in the durable content too
(an unsynced append covering the offset replays the flipped byte on a crash).

**Time.** Every call samples a latency and adds it to a meter that `take_elapsed_us()` drains;
the SimPy shell then waits that long. Costs, with bandwidths in MB/s = 10^6 bytes/s, so one byte
costs 1/bandwidth microseconds:

- `append`: `write_latency` + len / `write_bandwidth_mb_s` (a copy into the page cache);
- `truncate`: `write_latency`;
- `sync`: `sync_latency` + dirty bytes / `sync_bandwidth_mb_s` (the device write); a sync with
  nothing unsynced costs `meta_latency` only; `sync_dir`: `sync_latency` (or `meta_latency` if
  the mapping is unchanged);
- `read`: `read_latency` + returned bytes / `read_bandwidth_mb_s`;
- everything else (`make_dirs`, `list_dir`, `exists`, `size`, `rename`, `remove`, `remove_dir`,
  `close`):
  `meta_latency`.

Defaults are plausible for a local NVMe SSD without power-loss protection: fdatasync lognormal
with median 0.3 ms (sigma 0.6, capped at 20 ms), 1000 MB/s device writes, 2000 MB/s page-cache
copies, 4 us syscalls. Build a config from a benchmark with `SimFsConfig.from_measurements`.

**Determinism.** All randomness comes from the injected `rng`: two child streams are drawn from
it at construction, one for latencies and one for faults (crash prefixes, torn lengths), so
changing a latency distribution does not change which bytes a crash keeps. No set iteration, no
hashing: same seed and same calls => same bytes, same errors, same times.

**Cost.** Content is a `bytearray` per file; an append copies only its bytes. Unsynced appends
are kept as (position, length) ranges into the current content, copied only when a truncate cuts
into them; durable content is kept as a prefix length shared with the current content plus the
bytes that differ. So append, sync and crash cost O(bytes involved), not O(file size).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from model.sim.dist import Dist
from real.storage.devices import DeviceError, NotFound
from real.storage.errors import InvalidArgument

PORT_OPS = sorted(
    ["append", "close", "exists", "list_dir", "make_dirs", "read", "remove", "remove_dir",
     "rename", "size", "sync", "sync_dir", "truncate"]
)
EIO_DETAIL = "EIO (injected)"
ENOSPC_DETAIL = "ENOSPC: No space left on device"
_Z_P99 = 2.3263478740408408  # the standard normal's 99th percentile


@dataclass(frozen=True, slots=True)
class SimFsConfig:
    """Latencies are `model.sim.dist.Dist` (ms parameters, µs samples); bandwidths in 10^6
    bytes/s."""

    torn_writes: bool = True
    write_latency: Dist = Dist("uniform", 0.002, 0.006)
    write_bandwidth_mb_s: float = 2000.0
    sync_latency: Dist = Dist("lognormal", 0.3, 0.6, 20.0)
    sync_bandwidth_mb_s: float = 1000.0
    read_latency: Dist = Dist("uniform", 0.002, 0.006)
    read_bandwidth_mb_s: float = 4000.0
    meta_latency: Dist = Dist("uniform", 0.002, 0.006)
    capacity_bytes: int | None = None
    make_dirs_durable: bool = False
    writeback_ops_max: int = 4096

    def __post_init__(self) -> None:
        for name in ["write_bandwidth_mb_s", "sync_bandwidth_mb_s", "read_bandwidth_mb_s"]:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise InvalidArgument(f"{name} must be a number > 0, got {value!r}")
        for name in ["write_latency", "sync_latency", "read_latency", "meta_latency"]:
            value = getattr(self, name)
            if not isinstance(value, Dist):
                raise InvalidArgument(f"{name} must be a model.sim.dist.Dist, got {value!r}")
        cap = self.capacity_bytes
        if cap is not None and (type(cap) is not int or cap < 0):
            raise InvalidArgument(f"capacity_bytes must be None or an int >= 0, got {cap!r}")
        if type(self.writeback_ops_max) is not int or self.writeback_ops_max < 2:
            raise InvalidArgument(
                f"writeback_ops_max must be an int >= 2, got {self.writeback_ops_max!r}"
            )

    @staticmethod
    def from_measurements(
        fdatasync_p50_ms: float,
        fdatasync_p99_ms: float,
        device_write_mb_s: float,
        page_cache_write_mb_s: float = 2000.0,
        read_mb_s: float = 4000.0,
        syscall_ms: float = 0.004,
        **overrides: object,
    ) -> SimFsConfig:
        """A config from a disk benchmark: fdatasync latency percentiles (ms) become a lognormal
        (sigma = ln(p99/p50) / z_0.99, capped at 10 x p99); `device_write_mb_s` is the bandwidth
        a sync pays for its dirty bytes; `syscall_ms` the fixed cost of the other calls."""
        if not 0 < fdatasync_p50_ms <= fdatasync_p99_ms:
            raise InvalidArgument(
                f"need 0 < fdatasync_p50_ms <= fdatasync_p99_ms, got {fdatasync_p50_ms}, "
                f"{fdatasync_p99_ms}"
            )
        if syscall_ms < 0:
            raise InvalidArgument(f"syscall_ms must be >= 0, got {syscall_ms}")
        sigma = math.log(fdatasync_p99_ms / fdatasync_p50_ms) / _Z_P99
        syscall = Dist("fixed", syscall_ms)
        fields: dict[str, Any] = {  # SimFsConfig's keywords, checked by its __post_init__
            "sync_latency": Dist("lognormal", fdatasync_p50_ms, sigma, 10 * fdatasync_p99_ms),
            "sync_bandwidth_mb_s": device_write_mb_s,
            "write_bandwidth_mb_s": page_cache_write_mb_s,
            "read_bandwidth_mb_s": read_mb_s,
            "write_latency": syscall,
            "read_latency": syscall,
            "meta_latency": syscall,
        }
        unknown = sorted(k for k in overrides if k not in SimFsConfig.__dataclass_fields__)
        if unknown:
            raise InvalidArgument(f"from_measurements: unknown SimFsConfig field(s) {unknown}")
        fields.update(overrides)
        return SimFsConfig(**fields)


@dataclass(slots=True)
class SimFsStats:
    appends: int = 0
    bytes_written: int = 0
    truncates: int = 0
    syncs: int = 0
    dir_syncs: int = 0
    reads: int = 0
    bytes_read: int = 0
    crashes: int = 0
    torn_bytes_kept: int = 0
    bytes_lost: int = 0
    writebacks: int = 0
    eio_raised: int = 0
    enospc_raised: int = 0


# ------------------------------------------------------------------------------ internal state


@dataclass(slots=True)
class _Append:
    """Unsynced append of `length` bytes at `pos`. While `saved` is None the bytes are
    `data[pos:pos + length]` of the inode's current content; a truncate that cuts into that range
    copies them into `saved` first."""

    pos: int
    length: int
    saved: bytes | None = None


@dataclass(frozen=True, slots=True)
class _Truncate:
    size: int


_Op = _Append | _Truncate


@dataclass(slots=True, eq=False)
class _Inode:
    """Durable content = `data[:shared] + tail`; `ops` replayed on it give `data`."""

    ino: int
    data: bytearray = field(default_factory=bytearray)
    shared: int = 0
    tail: bytes = b""
    ops: list[_Op] = field(default_factory=list)

    def payload(self, op: _Append) -> bytes:
        if op.saved is not None:
            return op.saved
        return bytes(self.data[op.pos : op.pos + op.length])

    def durable_size(self) -> int:
        return self.shared + len(self.tail)


@dataclass(slots=True, eq=False)
class _Dir:
    ino: int
    entries: dict[str, _Inode | _Dir] = field(default_factory=dict)
    durable: dict[str, _Inode | _Dir] = field(default_factory=dict)


@dataclass(slots=True)
class _EioRule:
    op: str
    path_prefix: str
    remaining: int


def _replay(inode: _Inode, ops: list[_Op]) -> tuple[int, bytearray]:
    """Durable content + `ops`, as (length shared with `inode.data`, bytes after it)."""
    shared, tail = inode.shared, bytearray(inode.tail)
    for op in ops:
        if isinstance(op, _Append):
            assert op.pos == shared + len(tail), (inode.ino, op, shared, len(tail))
            if not tail and op.saved is None:
                shared += op.length  # the bytes are data[pos:pos+length]: still shared
            else:
                tail += inode.payload(op)
        elif op.size <= shared:
            shared = op.size
            tail.clear()
        elif op.size <= shared + len(tail):
            del tail[op.size - shared :]
        else:
            tail.extend(bytes(op.size - shared - len(tail)))
    assert shared <= len(inode.data), (inode.ino, shared, len(inode.data))
    return shared, tail


def _split(path: str) -> list[str]:
    if not isinstance(path, str):
        raise DeviceError("resolve", repr(path), "a path must be a str")
    if path == "":
        return []
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise DeviceError(
            "resolve", path, "paths must be relative, without '..', '.' or empty segments"
        )
    return parts


def _non_negative(name: str, value: object) -> int:
    if type(value) is not int or value < 0:
        raise InvalidArgument(f"{name} must be an int >= 0, got {value!r}")
    return value


class SimFileSystem:
    """Implements `real.storage.devices.FileSystem`; see the module docstring for semantics."""

    def __init__(self, rng: random.Random, config: SimFsConfig | None = None) -> None:
        if not isinstance(rng, random.Random):
            raise InvalidArgument(f"rng must be a random.Random, got {type(rng).__name__}")
        config = SimFsConfig() if config is None else config
        if not isinstance(config, SimFsConfig):
            raise InvalidArgument(f"config must be a SimFsConfig, got {type(config).__name__}")
        self.config = config
        self._latency_rng = random.Random(rng.getrandbits(64))  # noqa: S311 (simulation)
        self._fault_rng = random.Random(rng.getrandbits(64))  # noqa: S311
        self._next_ino = 1
        self._root = _Dir(self._new_ino())
        self._used = 0
        self._elapsed_us = 0
        self._eio: list[_EioRule] = []
        self.stats = SimFsStats()

    # ------------------------------------------------------------------------------ the port

    def make_dirs(self, path: str) -> None:
        parts = self._enter("make_dirs", path, self.config.meta_latency)
        node = self._root
        for i, name in enumerate(parts):
            child = node.entries.get(name)
            if child is None:
                child = _Dir(self._new_ino())
                node.entries[name] = child
                if self.config.make_dirs_durable:
                    node.durable[name] = child
            if isinstance(child, _Inode):
                last = i == len(parts) - 1
                detail = "EEXIST: File exists" if last else "ENOTDIR: Not a directory"
                raise DeviceError("make_dirs", path, detail)
            node = child
        assert isinstance(node, _Dir)

    def list_dir(self, path: str) -> list[str]:
        parts = self._enter("list_dir", path, self.config.meta_latency)
        node = self._walk("list_dir", path, parts, missing_ok=True)
        if node is None:
            return []
        if isinstance(node, _Inode):
            raise DeviceError("list_dir", path, "ENOTDIR: Not a directory")
        return sorted(node.entries)

    def exists(self, path: str) -> bool:
        parts = self._enter("exists", path, self.config.meta_latency)
        try:
            return self._walk("exists", path, parts, missing_ok=True) is not None
        except DeviceError:  # a file in the middle of the path: ENOTDIR, i.e. does not exist
            return False

    def size(self, path: str) -> int:
        parts = self._enter("size", path, self.config.meta_latency)
        return len(self._file("size", path, parts).data)

    def read(self, path: str, offset: int, length: int) -> bytes:
        _non_negative("offset", offset)
        _non_negative("length", length)
        parts = self._enter("read", path, self.config.read_latency)
        inode = self._file("read", path, parts)
        out = bytes(inode.data[offset : offset + length])
        self._charge(self._transfer_us(len(out), self.config.read_bandwidth_mb_s))
        self.stats.reads += 1
        self.stats.bytes_read += len(out)
        assert len(out) <= length
        assert len(out) == length or offset + len(out) >= len(inode.data)
        return out

    def append(self, path: str, data: bytes) -> int:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"data must be bytes-like, got {type(data).__name__}")
        view = memoryview(data).cast("B")
        parts = self._split_and_check("append", path)
        cost = self._sample(self.config.write_latency)
        self._charge(cost + self._transfer_us(len(view), self.config.write_bandwidth_mb_s))
        self._check_space("append", path, len(view))
        inode = self._file("append", path, parts, create=True)
        self._used += len(view)
        pos = len(inode.data)
        inode.data += view
        if len(view):
            self._queue(inode, _Append(pos, len(view)))
        self.stats.appends += 1
        self.stats.bytes_written += len(view)
        assert len(inode.data) == pos + len(view)
        return len(inode.data)

    def truncate(self, path: str, size: int) -> None:
        _non_negative("size", size)
        parts = self._enter("truncate", path, self.config.write_latency)
        inode = self._file("truncate", path, parts)
        old = len(inode.data)
        if size > old:
            self._check_space("truncate", path, size - old)
            inode.data.extend(bytes(size - old))
        elif size < old:
            self._cut(inode, size)
        self._used += size - old
        self._queue(inode, _Truncate(size))
        self.stats.truncates += 1
        assert len(inode.data) == size
        assert inode.shared <= size

    def sync(self, path: str) -> None:
        parts = self._split_and_check("sync", path)
        inode = self._file("sync", path, parts)
        if inode.ops:  # else durable == current already (writeback never empties the list)
            dirty = sum(op.length for op in inode.ops if isinstance(op, _Append))
            cost = self._sample(self.config.sync_latency)
            self._charge(cost + self._transfer_us(dirty, self.config.sync_bandwidth_mb_s))
        else:
            self._charge(self._sample(self.config.meta_latency))
        inode.ops.clear()
        inode.shared = len(inode.data)
        inode.tail = b""
        self.stats.syncs += 1
        assert inode.durable_size() == len(inode.data)

    def sync_dir(self, path: str) -> None:
        parts = self._split_and_check("sync_dir", path)
        node = self._walk("sync_dir", path, parts)
        if isinstance(node, _Inode):
            raise DeviceError("sync_dir", path, "ENOTDIR: Not a directory")
        assert isinstance(node, _Dir)
        changed = node.durable != node.entries
        latency = self.config.sync_latency if changed else self.config.meta_latency
        self._charge(self._sample(latency))
        node.durable = dict(node.entries)
        self.stats.dir_syncs += 1
        assert node.durable == node.entries

    def rename(self, src: str, dst: str) -> None:
        src_parts = self._enter("rename", src, self.config.meta_latency)
        dst_parts = _split(dst)
        if not src_parts or not dst_parts or src_parts[:-1] != dst_parts[:-1]:
            raise DeviceError("rename", src, f"to {dst!r}: the port renames within one directory")
        parent = self._walk("rename", src, src_parts[:-1])
        assert isinstance(parent, _Dir)  # _walk raises unless every component is a directory
        node = parent.entries.get(src_parts[-1])
        if node is None:
            raise NotFound("rename", src)
        old = parent.entries.get(dst_parts[-1])
        if old is node:
            return
        if isinstance(old, _Dir) and (isinstance(node, _Inode) or old.entries):
            detail = "EISDIR: Is a directory" if isinstance(node, _Inode) else "ENOTEMPTY"
            raise DeviceError("rename", src, f"to {dst!r}: {detail}")
        if isinstance(old, _Inode) and isinstance(node, _Dir):
            raise DeviceError("rename", src, f"to {dst!r}: ENOTDIR: Not a directory")
        if isinstance(old, _Inode):
            self._used -= len(old.data)
        parent.entries[dst_parts[-1]] = node
        del parent.entries[src_parts[-1]]
        assert parent.entries[dst_parts[-1]] is node
        assert src_parts[-1] not in parent.entries

    def remove(self, path: str) -> None:
        parts = self._enter("remove", path, self.config.meta_latency)
        inode = self._file("remove", path, parts)
        parent = self._walk("remove", path, parts[:-1])
        assert isinstance(parent, _Dir)
        del parent.entries[parts[-1]]
        self._used -= len(inode.data)
        assert self._used >= 0

    def remove_dir(self, path: str) -> None:
        """rmdir: drops the empty directory's entry from its parent (durable on `sync_dir` of
        the parent; a crash before that brings it back with its durable mapping)."""
        parts = self._enter("remove_dir", path, self.config.meta_latency)
        if not parts:
            raise DeviceError("remove_dir", path, "EBUSY: the root cannot be removed")
        node = self._walk("remove_dir", path, parts)
        if isinstance(node, _Inode):
            raise DeviceError("remove_dir", path, "ENOTDIR: Not a directory")
        assert isinstance(node, _Dir)
        if node.entries:
            raise DeviceError("remove_dir", path, "ENOTEMPTY: Directory not empty")
        parent = self._walk("remove_dir", path, parts[:-1])
        assert isinstance(parent, _Dir)
        del parent.entries[parts[-1]]
        assert parts[-1] not in parent.entries
        assert not node.entries

    def close(self, path: str) -> None:
        self._enter("close", path, self.config.meta_latency)

    # ------------------------------------------------------------------------------ faults

    def crash(self) -> None:
        """Machine crash (power loss), then recovery: see the module docstring."""
        self.stats.crashes += 1
        self._used = self._recover_dir(self._root)
        assert self._used == self._recount(self._root)

    def inject_eio(self, op: str, path_prefix: str = "", count: int = 1) -> None:
        if op not in PORT_OPS:
            raise InvalidArgument(f"op must be one of {PORT_OPS}, got {op!r}")
        if not isinstance(path_prefix, str):
            raise InvalidArgument(f"path_prefix must be a str, got {path_prefix!r}")
        if type(count) is not int or count < 1:
            raise InvalidArgument(f"count must be an int >= 1, got {count!r}")
        self._eio.append(_EioRule(op, path_prefix, count))

    def flip_bit(self, path: str, byte_offset: int, bit: int = 0) -> None:
        inode = self._file("flip_bit", path, _split(path))
        _non_negative("byte_offset", byte_offset)
        if byte_offset >= len(inode.data):
            raise InvalidArgument(
                f"byte_offset must be < the size of {path!r} ({len(inode.data)}), got {byte_offset}"
            )
        if type(bit) is not int or not 0 <= bit < 8:
            raise InvalidArgument(f"bit must be an int in [0, 8), got {bit!r}")
        mask = 1 << bit
        inode.data[byte_offset] ^= mask  # also the durable byte if byte_offset < inode.shared
        at = byte_offset - inode.shared
        if 0 <= at < len(inode.tail):
            tail = bytearray(inode.tail)
            tail[at] ^= mask
            inode.tail = bytes(tail)

    # ------------------------------------------------------------------------------ inspection

    def sample_sync_us(self) -> int:
        """One fdatasync latency (`sync_latency`), charged to nobody: a host that runs a sync in
        the background waits this long before it runs `sync` and reports the completion."""
        return self._sample(self.config.sync_latency)

    def take_elapsed_us(self) -> int:
        """Simulated time charged since the last call (µs); resets the meter."""
        elapsed, self._elapsed_us = self._elapsed_us, 0
        assert elapsed >= 0
        return elapsed

    def used_bytes(self) -> int:
        """Total current size of every file in the tree (what `capacity_bytes` limits)."""
        return self._used

    def unsynced_ops(self, path: str) -> int:
        """How many content operations of `path` a crash could still lose."""
        return len(self._file("unsynced_ops", path, _split(path)).ops)

    def files(self) -> dict[str, bytes]:
        """Every file's current content by path, sorted; charges no time (a test helper)."""
        out: dict[str, bytes] = {}
        stack: list[tuple[str, _Dir]] = [("", self._root)]
        while stack:
            prefix, node = stack.pop()
            for name in sorted(node.entries):
                child = node.entries[name]
                full = f"{prefix}{name}"
                if isinstance(child, _Dir):
                    stack.append((full + "/", child))
                else:
                    out[full] = bytes(child.data)
        return dict(sorted(out.items()))

    def invariants(self) -> None:
        """Checks the internal state: byte accounting and that replaying each inode's unsynced
        operations on its durable content gives its current content. O(total bytes)."""
        assert self._used == self._recount(self._root), (self._used, self._recount(self._root))
        stack = [self._root]
        while stack:
            node = stack.pop()
            for name in sorted(node.entries):
                child = node.entries[name]
                if isinstance(child, _Dir):
                    stack.append(child)
                    continue
                shared, tail = _replay(child, child.ops)
                assert bytes(child.data[:shared]) + tail == child.data, (name, child.ino)
                assert len(child.ops) <= self.config.writeback_ops_max, (name, len(child.ops))

    # ------------------------------------------------------------------------------ internals

    def _new_ino(self) -> int:
        ino = self._next_ino
        self._next_ino += 1
        return ino

    def _sample(self, dist: Dist) -> int:
        return dist.sample_us(self._latency_rng)

    def _charge(self, us: int) -> None:
        assert us >= 0, us
        self._elapsed_us += us

    @staticmethod
    def _transfer_us(nbytes: int, mb_s: float) -> int:
        return round(nbytes / mb_s)  # 1 MB/s is 1 byte per microsecond

    def _split_and_check(self, op: str, path: str) -> list[str]:
        """Validates `path`, then fails the call if an injected EIO matches (nothing changed)."""
        parts = _split(path)
        for i, rule in enumerate(self._eio):
            if rule.op == op and path.startswith(rule.path_prefix):
                rule.remaining -= 1
                if rule.remaining == 0:
                    del self._eio[i]
                self.stats.eio_raised += 1
                self._charge(self._sample(self.config.meta_latency))
                raise DeviceError(op, path, EIO_DETAIL)
        return parts

    def _enter(self, op: str, path: str, latency: Dist) -> list[str]:
        parts = self._split_and_check(op, path)
        self._charge(self._sample(latency))
        return parts

    def _walk(
        self, op: str, path: str, parts: list[str], missing_ok: bool = False
    ) -> _Inode | _Dir | None:
        """The node at `parts` in the current tree; NotFound (or None if `missing_ok`)."""
        node: _Inode | _Dir = self._root
        for i, name in enumerate(parts):
            if isinstance(node, _Inode):
                raise DeviceError(op, path, f"ENOTDIR: {'/'.join(parts[:i])!r} is a file")
            child = node.entries.get(name)
            if child is None:
                if missing_ok:
                    return None
                raise NotFound(op, path)
            node = child
        return node

    def _file(self, op: str, path: str, parts: list[str], create: bool = False) -> _Inode:
        if not parts:
            raise DeviceError(op, path, "EISDIR: Is a directory")
        parent = self._walk(op, path, parts[:-1])
        if isinstance(parent, _Inode):
            raise DeviceError(op, path, "ENOTDIR: Not a directory")
        assert isinstance(parent, _Dir)
        node = parent.entries.get(parts[-1])
        if node is None and create:
            node = _Inode(self._new_ino())
            parent.entries[parts[-1]] = node
        if node is None:
            raise NotFound(op, path)
        if isinstance(node, _Dir):
            raise DeviceError(op, path, "EISDIR: Is a directory")
        return node

    def _check_space(self, op: str, path: str, nbytes: int) -> None:
        cap = self.config.capacity_bytes
        if cap is not None and self._used + nbytes > cap:
            self.stats.enospc_raised += 1
            raise DeviceError(op, path, f"{ENOSPC_DETAIL} ({self._used} + {nbytes} > {cap})")

    def _cut(self, inode: _Inode, size: int) -> None:
        """Shrinks current content to `size`, first saving every byte something still needs:
        the durable bytes beyond `size` and the payloads of unsynced appends cut into."""
        if size < inode.shared:
            inode.tail = bytes(inode.data[size : inode.shared]) + inode.tail
            inode.shared = size
        for op in inode.ops:
            if isinstance(op, _Append) and op.saved is None and op.pos + op.length > size:
                op.saved = bytes(inode.data[op.pos : op.pos + op.length])
        del inode.data[size:]

    def _queue(self, inode: _Inode, op: _Op) -> None:
        inode.ops.append(op)
        if len(inode.ops) > self.config.writeback_ops_max:
            half = len(inode.ops) // 2
            shared, tail = _replay(inode, inode.ops[:half])
            inode.shared, inode.tail = shared, bytes(tail)
            del inode.ops[:half]
            self.stats.writebacks += 1
        assert len(inode.ops) <= self.config.writeback_ops_max

    def _recover_dir(self, node: _Dir) -> int:
        """Reverts `node` and everything under it to what survives power loss; returns bytes."""
        node.entries = {name: node.durable[name] for name in sorted(node.durable)}
        total = 0
        for child in node.entries.values():
            total += self._recover_dir(child) if isinstance(child, _Dir) else self._recover(child)
        return total

    def _recover(self, inode: _Inode) -> int:
        ops = inode.ops
        keep = self._fault_rng.randint(0, len(ops))
        shared, tail = _replay(inode, ops[:keep])
        torn = 0
        if self.config.torn_writes and keep < len(ops) and isinstance(ops[keep], _Append):
            first_dropped = ops[keep]
            assert isinstance(first_dropped, _Append)
            torn = self._fault_rng.randint(0, first_dropped.length - 1)
            tail += inode.payload(first_dropped)[:torn]
        lost = sum(op.length for op in ops[keep:] if isinstance(op, _Append)) - torn
        del inode.data[shared:]
        inode.data += tail
        inode.shared, inode.tail, inode.ops = len(inode.data), b"", []
        self.stats.torn_bytes_kept += torn
        self.stats.bytes_lost += lost
        assert lost >= 0
        return len(inode.data)

    @staticmethod
    def _recount(node: _Dir) -> int:
        total = 0
        for child in node.entries.values():
            total += SimFileSystem._recount(child) if isinstance(child, _Dir) else len(child.data)
        return total
