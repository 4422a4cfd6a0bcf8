"""`SimKeyValue`: the `KeyValue` port for the simulator, a sorted map that loses unsynced writes.

Model. Two sorted maps: the *visible* one every read sees, and the *durable* one (what the disk
would hold after a machine crash). Each `write` is an atomic batch (range deletions [lo, hi), then
deletes, then puts, in that order) applied to the visible map at once. A `write(sync=True)` or a
`sync()` makes every batch so far durable, in order (RocksDB's WAL is one sequence: syncing it
syncs everything before). Unsynced batches queue in order. `crash()` simulates a machine crash
and restart: the unsynced queue is lost, except that (with `keep_unsynced_prefix`) a random
prefix of it survives, never a subset and never part of a batch; the visible map becomes the
durable one and the store is open again.

Time. Operations do not block; each adds its simulated cost to a meter that the shell drains with
`take_elapsed_us()` and waits out (`env.timeout`). Costs: `write_latency` per `write`, plus the
bytes written at `write_bytes_per_ms`; `sync_latency` per synced write or `sync()`;
`read_latency` per `get` or `scan` start, plus the bytes returned at `read_bytes_per_ms`.

Default calibration (RocksDB on a datacenter NVMe SSD, called through rocksdict from Python):
a non-synced write (memtable insert + WAL append to the page cache) is ~10-30 us; a WAL
fdatasync on NVMe with power-loss protection is ~50-150 us (consumer drives without it: 0.5-2 ms);
a get/seek served from the memtable or block cache is ~5-20 us; sequential bandwidth ~1-2 GB/s.
These are plausible placeholders, to be replaced by measurements (scenarios/bench/storage.py).

Faults: `inject_error(count, op)` makes the next `count` calls (of `op`, or of any operation)
raise `DeviceError` without effect. Bounded: at most `unsynced_batches_max` unsynced batches (a
writer that never syncs fails loudly with `DeviceError`, rather than growing without bound).
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from model.sim.dist import Dist
from real.storage.devices import DeviceError, check_key, check_write

TARGET = "sim-kv"
OPS = ("get", "scan", "sync", "write")


@dataclass(frozen=True, slots=True)
class SimKvConfig:
    write_latency: Dist = Dist("lognormal", 0.02, 0.4, 5.0)
    sync_latency: Dist = Dist("lognormal", 0.1, 0.5, 20.0)
    read_latency: Dist = Dist("lognormal", 0.01, 0.5, 5.0)
    write_bytes_per_ms: int = 1_000_000  # 1 GB/s
    read_bytes_per_ms: int = 2_000_000  # 2 GB/s
    keep_unsynced_prefix: bool = True
    unsynced_batches_max: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("write_latency", "sync_latency", "read_latency"):
            if not isinstance(getattr(self, name), Dist):
                raise ValueError(f"SimKvConfig.{name} must be a Dist, got {getattr(self, name)!r}")
        for name in ("write_bytes_per_ms", "read_bytes_per_ms", "unsynced_batches_max"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"SimKvConfig.{name} must be an int >= 1, got {value!r}")


@dataclass(slots=True)
class SimKvStats:
    gets: int = 0
    scans: int = 0
    writes: int = 0
    synced_writes: int = 0
    syncs: int = 0
    bytes_written: int = 0
    bytes_read: int = 0
    crashes: int = 0
    batches_lost: int = 0
    batches_kept: int = 0  # unsynced batches that survived a crash (the random prefix)
    injected_errors: int = 0


@dataclass(frozen=True, slots=True)
class _Batch:
    puts: tuple[tuple[bytes, bytes], ...]
    deletes: tuple[bytes, ...]
    delete_ranges: tuple[tuple[bytes, bytes], ...]

    def size(self) -> int:
        total = sum(len(k) + len(v) for k, v in self.puts) + sum(len(k) for k in self.deletes)
        return total + sum(len(lo) + len(hi) for lo, hi in self.delete_ranges)


@dataclass(slots=True)
class _SortedMap:
    """A dict plus its keys in sorted order; appends at the end (a log's pattern) are O(1)."""

    keys: list[bytes] = field(default_factory=list)
    values: dict[bytes, bytes] = field(default_factory=dict)

    def apply(self, batch: _Batch) -> None:
        for lo, hi in batch.delete_ranges:
            i, j = bisect_left(self.keys, lo), bisect_left(self.keys, hi)
            for key in self.keys[i:j]:
                del self.values[key]
            del self.keys[i:j]
        for key in batch.deletes:
            if self.values.pop(key, None) is not None:
                del self.keys[bisect_left(self.keys, key)]
        for key, value in batch.puts:
            if key not in self.values:
                if not self.keys or key > self.keys[-1]:
                    self.keys.append(key)
                else:
                    self.keys.insert(bisect_left(self.keys, key), key)
            self.values[key] = value
        assert len(self.keys) == len(self.values)

    def copy(self) -> _SortedMap:
        return _SortedMap(list(self.keys), dict(self.values))


class SimKeyValue:
    """`SimKeyValue(rng, config=SimKvConfig())`: see the module docstring."""

    def __init__(self, rng: random.Random, config: SimKvConfig | None = None) -> None:
        if not isinstance(rng, random.Random):
            raise ValueError(f"rng must be a random.Random, got {type(rng).__name__}")
        self.rng = rng
        self.config = SimKvConfig() if config is None else config
        self.stats = SimKvStats()
        self._visible = _SortedMap()
        self._durable = _SortedMap()
        self._unsynced: list[_Batch] = []
        self._elapsed_us = 0
        self._errors_left = 0
        self._error_op: str | None = None
        self._closed = False

    # ------------------------------------------------------------------------------ the port

    def get(self, key: bytes) -> bytes | None:
        check_key("get", key)
        self._enter("get", key)
        self.stats.gets += 1
        value = self._visible.values.get(key)
        self._charge_read(self.config.read_latency.sample_us(self.rng), value)
        return value

    def write(
        self,
        puts: Sequence[tuple[bytes, bytes]] = (),
        deletes: Sequence[bytes] = (),
        delete_ranges: Sequence[tuple[bytes, bytes]] = (),
        sync: bool = False,
    ) -> None:
        batch = _make_batch(puts, deletes, delete_ranges)
        self._enter("write", f"{len(batch.puts)} puts")
        if not sync and len(self._unsynced) >= self.config.unsynced_batches_max:
            raise DeviceError("write", TARGET, f"{len(self._unsynced)} unsynced batches, limit "
                              f"unsynced_batches_max={self.config.unsynced_batches_max}")
        size = batch.size()
        self._elapsed_us += self.config.write_latency.sample_us(self.rng)
        self._elapsed_us += size * 1000 // self.config.write_bytes_per_ms
        self.stats.writes += 1
        self.stats.bytes_written += size
        self._visible.apply(batch)
        self._unsynced.append(batch)
        if sync:
            self.stats.synced_writes += 1
            self._make_durable()

    def scan(
        self, start: bytes, end: bytes, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Lazy: each step re-seeks just past the last key returned, so a write made between
        steps may show up in later steps (RocksKeyValue behaves alike; do not rely on either)."""
        check_key("scan", start)
        check_key("scan", end)
        self._enter("scan", start)
        self.stats.scans += 1
        self._elapsed_us += self.config.read_latency.sample_us(self.rng)
        return self._iterate(start, end, reverse)

    def sync(self) -> None:
        self._enter("sync", "wal")
        self._make_durable()

    def close(self) -> None:
        self._closed = True

    # ------------------------------------------------------------------------------ simulation

    def crash(self) -> None:
        """Machine crash and restart: unsynced batches are lost but for a random prefix."""
        keep = 0
        if self.config.keep_unsynced_prefix and self._unsynced:
            keep = self.rng.randint(0, len(self._unsynced))
        for batch in self._unsynced[:keep]:
            self._durable.apply(batch)
        self.stats.crashes += 1
        self.stats.batches_kept += keep
        self.stats.batches_lost += len(self._unsynced) - keep
        self._unsynced.clear()
        self._visible = self._durable.copy()
        self._closed = False
        assert self._visible.keys == self._durable.keys
        assert not self._unsynced

    def take_elapsed_us(self) -> int:
        """Simulated microseconds the operations since the last call cost (and reset to 0)."""
        elapsed, self._elapsed_us = self._elapsed_us, 0
        assert elapsed >= 0
        return elapsed

    def inject_error(self, count: int = 1, op: str | None = None) -> None:
        """The next `count` calls of `op` (any of `OPS` if None) raise `DeviceError`, no effect."""
        if type(count) is not int or count < 1:
            raise ValueError(f"count must be an int >= 1, got {count!r}")
        if op is not None and op not in OPS:
            raise ValueError(f"op must be one of {list(OPS)} or None, got {op!r}")
        self._errors_left, self._error_op = count, op

    def items(self, durable: bool = False) -> list[tuple[bytes, bytes]]:
        """Every pair in key order: what reads see, or (`durable`) what a crash would keep."""
        source = self._durable if durable else self._visible
        return [(key, source.values[key]) for key in source.keys]

    @property
    def unsynced_batches(self) -> int:
        return len(self._unsynced)

    # ------------------------------------------------------------------------------ internals

    def _enter(self, op: str, target: object) -> None:
        if self._closed:
            raise DeviceError(op, TARGET, "store is closed")
        if self._errors_left and self._error_op in (None, op):
            self._errors_left -= 1
            self.stats.injected_errors += 1
            raise DeviceError(op, TARGET, f"injected error ({target!r})")

    def _make_durable(self) -> None:
        for batch in self._unsynced:
            self._durable.apply(batch)
        self._unsynced.clear()
        self.stats.syncs += 1
        self._elapsed_us += self.config.sync_latency.sample_us(self.rng)

    def _charge_read(self, latency_us: int, value: bytes | None) -> None:
        size = 0 if value is None else len(value)
        self.stats.bytes_read += size
        self._elapsed_us += latency_us + size * 1000 // self.config.read_bytes_per_ms

    def _iterate(self, start: bytes, end: bytes, reverse: bool) -> Iterator[tuple[bytes, bytes]]:
        last: bytes | None = None
        while True:
            keys = self._visible.keys  # a crash may have replaced the map
            if reverse:
                i = bisect_left(keys, end if last is None else last) - 1
                if i < 0 or keys[i] < start:
                    return
            else:
                i = bisect_left(keys, start) if last is None else bisect_right(keys, last)
                if i >= len(keys) or keys[i] >= end:
                    return
            last = keys[i]
            value = self._visible.values[last]
            self._charge_read(0, value)
            yield last, value


def _make_batch(
    puts: Sequence[tuple[bytes, bytes]],
    deletes: Sequence[bytes],
    delete_ranges: Sequence[tuple[bytes, bytes]],
) -> _Batch:
    check_write(puts, deletes, delete_ranges)
    return _Batch(tuple(puts), tuple(deletes), tuple(delete_ranges))
