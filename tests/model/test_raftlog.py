"""RaftLog over both FileSystems: the same bytes on a real and a simulated disk, and the real
format crashed by the simulated one (torn records, unsynced loss, power cuts inside `rewrite`)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from model.devices.fs import SimFileSystem, SimFsConfig
from real.node.osfs import OsFileSystem
from real.raft.types import (
    ConfState,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from real.server.raftlog import (
    MAGIC,
    DiskCorruption,
    RaftLog,
    encode_entry,
    encode_hard_state,
)

DIR = "meta"
PATH = f"{DIR}/raft.log"


def e(index: int, term: int = 1, data: bytes = b"") -> Entry:
    return Entry(term, index, EntryKind.NORMAL, data or f"cmd{index}".encode())


def snap(index: int, term: int = 1) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ConfState((1, 2, 3), ())), b"image@%d" % index)


def sim(seed: int = 1, torn: bool = True) -> SimFileSystem:
    return SimFileSystem(random.Random(seed), SimFsConfig(torn_writes=torn))


def os_fs(tmp_path: Path) -> OsFileSystem:
    return OsFileSystem(str(tmp_path))


FACTORIES: dict[str, Callable[[Path], Any]] = {"os": os_fs, "sim": lambda _tmp: sim()}


def script(log: RaftLog) -> None:
    """Overwrites, a conf change, an installed snapshot, a compaction, appends after it."""
    log.save(entries=(e(1), e(2), e(3)), hard_state=HardState(1, 1, 0), sync=True)
    log.save(entries=(e(2, 2), e(3, 2)), hard_state=HardState(2, 2, 2), sync=False)
    log.save(entries=(Entry(2, 4, EntryKind.CONF_CHANGE, b"add-voter:4"),), sync=True)
    log.save(snapshot=snap(10, 3), entries=(e(11, 3), e(12, 3)),
             hard_state=HardState(3, 0, 11), sync=True)
    log.rewrite(snap(11, 3))
    log.save(entries=(e(13, 3, b"y" * 300),), hard_state=HardState(3, 0, 13), sync=True)


SCRIPT_STATE = DurableState(HardState(3, 0, 13), snap(11, 3), (e(12, 3), e(13, 3, b"y" * 300)))


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_same_script_same_state_and_reopen_on_every_filesystem(tmp_path: Path, kind: str) -> None:
    fs = FACTORIES[kind](tmp_path)
    log = RaftLog(fs, DIR)
    assert log.durable() == DurableState() and log.recovery.records == 0
    script(log)
    assert log.durable() == SCRIPT_STATE
    assert log.entry_count == 2 and log.bytes == fs.size(PATH)
    log.close()
    again = RaftLog(fs, DIR)
    assert again.durable() == SCRIPT_STATE
    assert again.recovery.records == 5 and again.recovery.truncated_bytes == 0
    assert not fs.exists(PATH + ".tmp")
    again.close()


def test_both_filesystems_hold_the_same_bytes(tmp_path: Path) -> None:
    real, simulated = os_fs(tmp_path), sim()
    for fs in (real, simulated):
        log = RaftLog(fs, DIR)
        script(log)
        log.close()
    on_disk = (tmp_path / PATH).read_bytes()
    assert on_disk == simulated.files()[PATH]
    assert on_disk.startswith(MAGIC) and len(on_disk) > 300


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_mid_log_corruption_is_refused_on_every_filesystem(tmp_path: Path, kind: str) -> None:
    fs = FACTORIES[kind](tmp_path)
    log = RaftLog(fs, DIR)
    log.save(entries=(e(1),), sync=True)
    log.save(entries=(e(2),), hard_state=HardState(1, 1, 2), sync=True)
    log.close()
    at = len(MAGIC) + len(encode_entry(e(1))) - 1  # the last byte of entry 1
    before = fs.read(PATH, 0, fs.size(PATH))
    damaged = bytearray(before)
    damaged[at] ^= 0x04
    fs.truncate(PATH, 0)
    fs.append(PATH, bytes(damaged))
    fs.sync(PATH)
    fs.close(PATH)
    with pytest.raises(DiskCorruption, match=rf"{PATH}: bad record at byte {len(MAGIC)} but a "
                       rf"valid record follows at byte \d+"):
        RaftLog(fs, DIR)
    assert fs.read(PATH, 0, fs.size(PATH)) == bytes(damaged), "nothing truncated"


def test_a_torn_write_inside_a_record_is_dropped_on_recovery() -> None:
    """Power loss while a Ready's one append is unsynced: the torn bytes of the record are cut
    off at recovery and the synced records survive whole."""
    big = e(3, 1, b"z" * 4000)
    torn_seen = 0
    for seed in range(40):
        fs = sim(seed)
        log = RaftLog(fs, DIR)
        log.save(entries=(e(1), e(2)), hard_state=HardState(1, 1, 1), sync=True)
        synced_size = log.bytes
        log.save(entries=(big,), hard_state=HardState(1, 1, 3), sync=False)
        fs.crash()
        size = fs.size(PATH)
        again = RaftLog(fs, DIR)
        state = again.durable()
        if synced_size < size < log.bytes - len(encode_hard_state(HardState(1, 1, 3))):
            torn_seen += 1  # cut inside the entry record
            assert again.recovery.truncated_bytes == size - synced_size
            assert state.entries == (e(1), e(2)) and state.hard_state == HardState(1, 1, 1)
        assert state.entries[:2] == (e(1), e(2))
        assert fs.size(PATH) == again.bytes
    assert torn_seen >= 5, torn_seen


def test_power_loss_loses_unsynced_saves_but_keeps_synced_ones() -> None:
    lost_some = kept_some = 0
    for seed in range(40):
        fs = sim(seed, torn=seed % 2 == 0)
        log = RaftLog(fs, DIR)
        log.save(entries=(e(1), e(2)), hard_state=HardState(1, 1, 2), sync=True)
        log.save(entries=(e(3),), sync=True)
        for i in range(4, 10):
            log.save(entries=(e(i),), sync=False)
        fs.crash()
        state = RaftLog(fs, DIR).durable()
        indexes = [x.index for x in state.entries]
        assert indexes == list(range(1, len(indexes) + 1)), indexes  # a prefix of the saves
        assert len(indexes) >= 3 and state.hard_state == HardState(1, 1, 2)
        lost_some += len(indexes) < 9
        kept_some += 3 < len(indexes)
    assert lost_some and kept_some, (lost_some, kept_some)


def test_a_fresh_log_survives_power_loss() -> None:
    fs = sim()
    RaftLog(fs, DIR)
    fs.crash()
    assert fs.read(PATH, 0, 100) == MAGIC
    assert RaftLog(fs, DIR).recovery.records == 0


class PowerCut(Exception):
    pass


class CuttingFs:
    """Forwards to `fs` until `budget` state-changing calls have run, then cuts the power."""

    CHANGES = frozenset(["append", "truncate", "sync", "sync_dir", "rename", "remove",
                         "make_dirs", "close"])

    def __init__(self, fs: SimFileSystem, budget: int) -> None:
        self.fs = fs
        self.budget = budget

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.fs, name)
        if name not in self.CHANGES:
            return attr

        def call(*args: Any) -> Any:
            if self.budget == 0:
                raise PowerCut(name)
            self.budget -= 1
            return attr(*args)

        return call


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_crash_at_any_point_of_rewrite_recovers_the_old_or_the_new_log(seed: int) -> None:
    old = DurableState(HardState(1, 1, 8), snap(4), tuple(e(i) for i in range(5, 10)))
    new = DurableState(HardState(1, 1, 8), snap(8), (e(9),))
    outcomes = set()
    for budget in range(12):
        fs = sim(seed * 100 + budget)
        log = RaftLog(fs, DIR)
        log.save(snapshot=snap(4), entries=tuple(e(i) for i in range(5, 9)), sync=True)
        log.save(entries=(e(9),), hard_state=HardState(1, 1, 8), sync=True)
        cutting = CuttingFs(fs, budget)
        log.fs = cutting  # type: ignore[assignment]
        try:
            log.rewrite(snap(8))
        except PowerCut:
            pass
        fs.crash()
        state = RaftLog(fs, DIR).durable()
        assert state in (old, new), (budget, state)
        outcomes.add("new" if state == new else "old")
        if cutting.budget > 0:  # the rewrite completed within the budget
            assert state == new
    assert outcomes == {"old", "new"}
