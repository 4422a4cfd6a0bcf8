"""Simulated disk holding one node's durable Raft state (hard state, snapshot, entries).

Writes land in an unsynced buffer (an ordered list of operations). `sync()` makes every buffered
operation durable; the shell waits `fsync_us()` of simulated time first. `crash()` loses the
unsynced buffer, except that with `torn_writes` a random prefix of it survives (a prefix, never a
subset: a disk does not reorder our writes). `durable_state()` rebuilds a `DurableState` from the
durable content only. Bounded: at most `unsynced_ops_max` buffered operations (a shell that
never syncs fails loudly, not silently).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from model.dist import Dist
from real.raft.types import DurableState, Entry, HardState, Snapshot


@dataclass(frozen=True, slots=True)
class DiskConfig:
    fsync: Dist = Dist("uniform", 0.2, 1.0)
    torn_writes: bool = True
    unsynced_ops_max: int = 100_000


@dataclass(frozen=True, slots=True)
class PutEntries:
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class PutHardState:
    hard_state: HardState


@dataclass(frozen=True, slots=True)
class PutSnapshot:
    """`keep_suffix`: local compaction keeps entries after the snapshot; an installed snapshot
    (from the leader) replaces the whole log."""

    snapshot: Snapshot
    keep_suffix: bool


Op = PutEntries | PutHardState | PutSnapshot


class DiskFull(Exception):
    pass


class SimDisk:
    def __init__(self, node_id: int, config: DiskConfig, rng: random.Random) -> None:
        self.node_id = node_id
        self.config = config
        self.rng = rng
        self._hard_state = HardState()
        self._snapshot: Snapshot | None = None
        self._entries: list[Entry] = []
        self._unsynced: list[Op] = []
        self.syncs = 0
        self.lost_ops = 0
        self.torn_kept_ops = 0

    # -- writes ---------------------------------------------------------------------------------

    def write(self, op: Op) -> None:
        if len(self._unsynced) >= self.config.unsynced_ops_max:
            raise DiskFull(f"node {self.node_id}: {len(self._unsynced)} unsynced ops, limit "
                           f"disk.unsynced_ops_max={self.config.unsynced_ops_max}")
        self._unsynced.append(op)

    def fsync_us(self) -> int:
        return self.config.fsync.sample_us(self.rng)

    def sync(self) -> None:
        """Make every buffered op durable (call after waiting `fsync_us()`)."""
        for op in self._unsynced:
            self._apply(op)
        self._unsynced.clear()
        self.syncs += 1

    @property
    def unsynced(self) -> int:
        return len(self._unsynced)

    def crash(self) -> None:
        """Lose the unsynced buffer (a random prefix survives if `torn_writes`)."""
        keep = 0
        if self.config.torn_writes and self._unsynced:
            keep = self.rng.randint(0, len(self._unsynced))
        for op in self._unsynced[:keep]:
            self._apply(op)
        self.torn_kept_ops += keep
        self.lost_ops += len(self._unsynced) - keep
        self._unsynced.clear()

    # -- durable content ------------------------------------------------------------------------

    def _apply(self, op: Op) -> None:
        if isinstance(op, PutHardState):
            self._hard_state = op.hard_state
        elif isinstance(op, PutEntries):
            self._apply_entries(op.entries)
        else:
            self._apply_snapshot(op)

    def _base(self) -> int:
        return self._snapshot.meta.index if self._snapshot is not None else 0

    def _apply_entries(self, entries: tuple[Entry, ...]) -> None:
        if not entries:
            return
        first = entries[0].index
        base = self._base()
        if first <= base:
            entries = tuple(e for e in entries if e.index > base)
            if not entries:
                return
            first = entries[0].index
        assert first <= base + len(self._entries) + 1, (
            f"node {self.node_id}: entries start at {first}, log ends at "
            f"{base + len(self._entries)} (gap)")
        del self._entries[first - base - 1:]
        self._entries.extend(entries)
        assert self._entries[-1].index == base + len(self._entries)

    def _apply_snapshot(self, op: PutSnapshot) -> None:
        meta = op.snapshot.meta
        base = self._base()
        if meta.index <= base:
            return
        kept: list[Entry] = []
        if op.keep_suffix:
            kept = [e for e in self._entries if e.index > meta.index]
        self._snapshot = op.snapshot
        self._entries = kept
        assert not kept or kept[0].index == meta.index + 1, (meta.index, kept[0].index)

    def durable_state(self) -> DurableState:
        hs = self._hard_state
        last = self._base() + len(self._entries)
        # A torn write can keep a commit index beyond the durable log only if the log was durable
        # first (ops are applied in order), so this holds; check it anyway.
        assert hs.commit <= last, f"node {self.node_id}: durable commit {hs.commit} > last {last}"
        return DurableState(hard_state=hs, snapshot=self._snapshot, entries=tuple(self._entries))
