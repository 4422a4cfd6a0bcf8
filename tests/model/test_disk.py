from __future__ import annotations

import random

import pytest

from model.disk import DiskConfig, DiskFull, PutEntries, PutHardState, PutSnapshot, SimDisk
from real.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta


def ents(lo: int, hi: int, term: int = 1) -> tuple[Entry, ...]:
    return tuple(Entry(term, i, data=f"e{i}".encode()) for i in range(lo, hi + 1))


def disk(torn: bool = False, seed: int = 1, ops_max: int = 100_000) -> SimDisk:
    return SimDisk(1, DiskConfig(torn_writes=torn, unsynced_ops_max=ops_max), random.Random(seed))


def test_synced_writes_survive_a_crash() -> None:
    d = disk()
    d.write(PutEntries(ents(1, 3)))
    d.write(PutHardState(HardState(2, 1, 2)))
    d.sync()
    d.crash()
    st = d.durable_state()
    assert [e.index for e in st.entries] == [1, 2, 3]
    assert st.hard_state == HardState(2, 1, 2)


def test_unsynced_writes_are_lost_on_crash() -> None:
    d = disk()
    d.write(PutEntries(ents(1, 2)))
    d.sync()
    d.write(PutEntries(ents(3, 5)))
    d.write(PutHardState(HardState(3, 2, 0)))
    assert d.unsynced == 2
    d.crash()
    st = d.durable_state()
    assert [e.index for e in st.entries] == [1, 2]
    assert st.hard_state == HardState()
    assert d.lost_ops == 2


def test_torn_crash_keeps_a_prefix_of_unsynced_ops() -> None:
    seen = set()
    for seed in range(40):
        d = disk(torn=True, seed=seed)
        d.write(PutEntries(ents(1, 1)))
        d.write(PutEntries(ents(2, 2)))
        d.write(PutHardState(HardState(5, 1, 2)))
        d.crash()
        st = d.durable_state()
        kept = (len(st.entries), st.hard_state.term)
        assert kept in [(0, 0), (1, 0), (2, 0), (2, 5)], kept  # prefixes only
        seen.add(kept)
    assert len(seen) == 4


def test_entries_overwrite_the_suffix() -> None:
    d = disk()
    d.write(PutEntries(ents(1, 5, term=1)))
    d.write(PutEntries(ents(3, 3, term=2)))
    d.sync()
    st = d.durable_state()
    assert [(e.index, e.term) for e in st.entries] == [(1, 1), (2, 1), (3, 2)]


def test_entries_after_a_gap_are_refused() -> None:
    d = disk()
    d.write(PutEntries(ents(3, 4)))
    with pytest.raises(AssertionError, match="gap"):
        d.sync()


def test_snapshot_install_vs_local_compaction() -> None:
    conf = ConfState((1, 2, 3))
    d = disk()
    d.write(PutEntries(ents(1, 6)))
    d.write(PutSnapshot(Snapshot(SnapshotMeta(4, 1, conf), b"img4"), keep_suffix=True))
    d.sync()
    st = d.durable_state()
    assert st.snapshot is not None and st.snapshot.meta.index == 4
    assert [e.index for e in st.entries] == [5, 6]
    d.write(PutSnapshot(Snapshot(SnapshotMeta(9, 3, conf), b"img9"), keep_suffix=False))
    d.sync()
    st = d.durable_state()
    assert st.snapshot is not None and st.snapshot.data == b"img9"
    assert st.entries == ()


def test_unsynced_buffer_is_bounded() -> None:
    d = disk(ops_max=2)
    d.write(PutHardState(HardState(1, 0, 0)))
    d.write(PutHardState(HardState(2, 0, 0)))
    with pytest.raises(DiskFull, match="unsynced_ops_max=2"):
        d.write(PutHardState(HardState(3, 0, 0)))
