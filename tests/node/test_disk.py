"""RaftDisk: write, reopen, torn tails, crash at every byte, compaction, locking, and a log in
the format written before RaftLog existed."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from real.node.disk import (
    LOG_NAME,
    MAGIC,
    DiskCorruption,
    DiskError,
    RaftDisk,
    encode_entry,
    replay,
    scan,
)
from real.raft.types import (
    ConfState,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)


def e(index: int, term: int = 1, data: bytes = b"") -> Entry:
    return Entry(term, index, EntryKind.NORMAL, data or f"cmd{index}".encode())


def snap(index: int, term: int = 1) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ConfState((1, 2), (5,))), b"image@%d" % index)


def test_fresh_directory_is_empty(tmp_path: Path) -> None:
    disk = RaftDisk(tmp_path / "meta")
    assert disk.durable() == DurableState()
    assert (tmp_path / "meta" / LOG_NAME).read_bytes() == MAGIC
    disk.close()


def test_write_and_reopen(tmp_path: Path) -> None:
    disk = RaftDisk(tmp_path)
    disk.save(entries=(e(1), e(2)), hard_state=HardState(1, 1, 0), sync=True)
    disk.save(entries=(e(3, data=b"x" * 1000),), hard_state=HardState(1, 1, 2), sync=False)
    disk.save(entries=(Entry(2, 4, EntryKind.CONF_CHANGE, b"add-voter:2"),), sync=True)
    before = disk.durable()
    disk.close()
    again = RaftDisk(tmp_path)
    assert again.durable() == before
    assert again.recovery.truncated_bytes == 0 and again.recovery.records == 6
    assert before.hard_state == HardState(1, 1, 2) and len(before.entries) == 4
    again.close()


def test_overwrite_suffix_and_snapshot_replace(tmp_path: Path) -> None:
    disk = RaftDisk(tmp_path)
    disk.save(entries=(e(1), e(2), e(3)), sync=True)
    disk.save(entries=(e(2, term=2), e(3, term=2), e(4, term=2)), sync=True)
    assert [(x.index, x.term) for x in disk.durable().entries] == [(1, 1), (2, 2), (3, 2), (4, 2)]
    disk.save(snapshot=snap(10, 3), entries=(e(11, 3),), hard_state=HardState(3, 0, 10),
              sync=True)
    want = DurableState(HardState(3, 0, 10), snap(10, 3), (e(11, 3),))
    assert disk.durable() == want
    disk.close()
    reopened = RaftDisk(tmp_path)
    assert reopened.durable() == want
    reopened.close()


def test_gap_is_rejected_before_writing(tmp_path: Path) -> None:
    disk = RaftDisk(tmp_path)
    disk.save(entries=(e(1),), sync=True)
    size = disk.bytes
    with pytest.raises(DiskCorruption, match="entry index 3 outside"):
        disk.save(entries=(e(3),), sync=True)
    assert disk.bytes == size == (tmp_path / LOG_NAME).stat().st_size
    disk.close()


def test_crc_valid_gap_on_disk_is_corruption(tmp_path: Path) -> None:
    (tmp_path / LOG_NAME).write_bytes(MAGIC + encode_entry(e(1)) + encode_entry(e(3)))
    with pytest.raises(DiskCorruption, match="record 1"):
        RaftDisk(tmp_path)


def test_bad_magic_is_refused(tmp_path: Path) -> None:
    (tmp_path / LOG_NAME).write_bytes(b"NOTALOGFILE")
    with pytest.raises(DiskError, match="bad magic"):
        RaftDisk(tmp_path)


def test_torn_tail_is_truncated(tmp_path: Path) -> None:
    disk = RaftDisk(tmp_path)
    disk.save(entries=(e(1), e(2)), hard_state=HardState(1, 1, 1), sync=True)
    good = disk.bytes
    disk.close()
    path = tmp_path / LOG_NAME
    path.write_bytes(path.read_bytes() + encode_entry(e(3))[:-2])
    again = RaftDisk(tmp_path)
    assert again.recovery.truncated_bytes == len(encode_entry(e(3))) - 2
    assert path.stat().st_size == good and len(again.durable().entries) == 2
    again.save(entries=(e(3),), sync=True)  # appends cleanly after the truncation
    again.close()
    assert len(RaftDisk(tmp_path).durable().entries) == 3


def test_bad_crc_tail_is_truncated(tmp_path: Path) -> None:
    disk = RaftDisk(tmp_path)
    disk.save(entries=(e(1), e(2)), sync=True)
    disk.close()
    path = tmp_path / LOG_NAME
    buf = bytearray(path.read_bytes())
    buf[-1] ^= 0xFF
    path.write_bytes(bytes(buf))
    again = RaftDisk(tmp_path)
    assert [x.index for x in again.durable().entries] == [1]
    assert again.recovery.truncated_bytes == len(encode_entry(e(2)))
    again.close()


@pytest.mark.parametrize("victim", [0, 1, 2])
def test_mid_log_corruption_is_refused_not_truncated(tmp_path: Path, victim: int) -> None:
    """A flipped byte in a record that has valid records after it is not a torn tail."""
    disk = RaftDisk(tmp_path)
    disk.save(entries=(e(1),), sync=True)
    disk.save(entries=(e(2),), sync=True)
    disk.save(entries=(e(3),), hard_state=HardState(1, 1, 3), sync=True)
    disk.close()
    path = tmp_path / LOG_NAME
    before = path.read_bytes()
    sizes = [len(encode_entry(e(i))) for i in (1, 2, 3)]
    at = len(MAGIC) + sum(sizes[:victim]) + sizes[victim] - 1  # last byte of entry `victim`
    buf = bytearray(before)
    buf[at] ^= 0x01
    path.write_bytes(bytes(buf))
    with pytest.raises(DiskCorruption, match=r"valid record follows at byte \d+"):
        RaftDisk(tmp_path)
    assert path.read_bytes() == bytes(buf), "nothing may be truncated on corruption"


def _history(seed: int) -> list[dict]:
    """A random sequence of save() calls, with overwrites, hard states and a snapshot."""
    rng = random.Random(seed)
    calls, last, term, snap_at = [], 0, 1, 0
    for _ in range(12):
        if rng.random() < 0.1 and last > snap_at:
            snap_at = last
            calls.append({"snapshot": snap(last, term)})
            continue
        start = rng.randint(max(snap_at + 1, last - 2), last + 1)
        term += rng.random() < 0.3
        n = rng.randint(0, 3)
        ents = tuple(e(i, term, bytes([i % 256]) * rng.randint(1, 40))
                     for i in range(start, start + n))
        last = ents[-1].index if ents else last
        calls.append({"entries": ents, "hard_state": HardState(term, 1, min(last, snap_at))})
    return calls


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32))
def test_crash_at_any_byte_recovers_a_prefix(tmp_path_factory, seed: int) -> None:
    """Cut the log at every byte position: the scan recovers exactly the records that were fully
    written (a prefix), never anything else; RaftDisk itself reopens a few cuts and truncates."""
    directory = tmp_path_factory.mktemp("crash")
    disk = RaftDisk(directory)
    for call in _history(seed):
        disk.save(sync=False, **call)
    disk.close()
    full = (directory / LOG_NAME).read_bytes()
    records, valid = scan(full)
    assert valid == len(full)
    ends = [len(MAGIC)]
    for rec in records:  # byte offset where each record ends
        ends.append(ends[-1] + len(_encode(rec)))
    assert ends[-1] == len(full)
    prefixes = [replay(records[:k]) for k in range(len(records) + 1)]
    for cut in range(len(MAGIC), len(full) + 1):
        got, got_valid = scan(full[:cut])
        n = len(got)
        assert got == records[:n], cut
        assert got_valid == ends[n] <= cut, cut
        assert n == len(records) or cut < ends[n + 1], cut  # every complete record is kept
    rng = random.Random(seed)
    for cut in sorted({len(full), *(rng.randrange(len(full)) for _ in range(4))}):
        (directory / LOG_NAME).write_bytes(full[:cut])
        recovered = RaftDisk(directory)
        n = recovered.recovery.records
        assert recovered.durable() == prefixes[n], cut
        assert (directory / LOG_NAME).stat().st_size == max(ends[n], len(MAGIC)), cut
        recovered.close()


def _encode(rec: Entry | HardState | Snapshot) -> bytes:
    from real.node.disk import encode_hard_state, encode_snapshot

    if isinstance(rec, Entry):
        return encode_entry(rec)
    if isinstance(rec, HardState):
        return encode_hard_state(rec)
    return encode_snapshot(rec)


def test_rewrite_compacts(tmp_path: Path) -> None:
    disk = RaftDisk(tmp_path)
    disk.save(entries=tuple(e(i) for i in range(1, 101)), hard_state=HardState(1, 1, 90),
              sync=True)
    big = disk.bytes
    disk.rewrite(snap(90))
    assert disk.bytes < big and disk.entry_count == 10
    disk.save(entries=(e(101),), hard_state=HardState(1, 1, 101), sync=True)
    want = disk.durable()
    assert want.snapshot == snap(90) and want.entries[0].index == 91
    disk.close()
    again = RaftDisk(tmp_path)
    assert again.durable() == want
    assert not (tmp_path / (LOG_NAME + ".tmp")).exists()
    again.close()


def test_directory_is_locked(tmp_path: Path) -> None:
    disk = RaftDisk(tmp_path)
    with pytest.raises(DiskError, match="in use by another process"):
        RaftDisk(tmp_path)
    disk.close()
    RaftDisk(tmp_path).close()


# A log written by the RaftDisk of commit 3a85ca0 (before the format moved to
# real/server/raftlog.py): entries 1-2 + HardState(1, 1, 1); snapshot 5 (voters 1, 2, learner 5)
# + a conf-change entry 6 + HardState(2, 2, 5); entry 7 + HardState(3, 0, 6). All synced.
OLD_FORMAT_LOG = bytes.fromhex(
    "54574d51524c30310000001353734cc44500000000000000010000000000000001006100000014d4"
    "7c66314500000000000000010000000000000002006262000000199933e957480000000000000001"
    "00000000000000010000000000000001000000312f11471053000000000000000500000000000000"
    "0200020001000000000000000100000000000000020000000000000005696d67350000001d071e82"
    "e74500000000000000020000000000000006016164642d766f7465723a3300000019f4494a0f4800"
    "000000000000020000000000000002000000000000000500000026fc999eff450000000000000003"
    "000000000000000700787878787878787878787878787878787878787800000019c410f870480000"
    "00000000000300000000000000000000000000000006"
)


def test_a_log_written_by_the_old_raftdisk_recovers(tmp_path: Path) -> None:
    (tmp_path / LOG_NAME).write_bytes(OLD_FORMAT_LOG + encode_entry(e(8))[:5])  # + a torn tail
    disk = RaftDisk(tmp_path)
    want = DurableState(
        HardState(3, 0, 6),
        Snapshot(SnapshotMeta(5, 2, ConfState((1, 2), (5,))), b"img5"),
        (Entry(2, 6, EntryKind.CONF_CHANGE, b"add-voter:3"), Entry(3, 7, EntryKind.NORMAL,
                                                                    b"x" * 20)),
    )
    assert disk.durable() == want
    assert disk.recovery.records == 8 and disk.recovery.truncated_bytes == 5
    disk.save(entries=(e(8, 3),), hard_state=HardState(3, 0, 7), sync=True)
    disk.close()
    data = (tmp_path / LOG_NAME).read_bytes()
    assert data.startswith(OLD_FORMAT_LOG) and len(data) > len(OLD_FORMAT_LOG)
    assert RaftDisk(tmp_path).durable().entries[-1] == e(8, 3)


def test_corruption_names_the_file_and_byte(tmp_path: Path) -> None:
    buf = bytearray(OLD_FORMAT_LOG)
    buf[len(MAGIC) + 9] ^= 0x01  # inside the first record's payload
    (tmp_path / LOG_NAME).write_bytes(bytes(buf))
    with pytest.raises(DiskCorruption, match=rf"{tmp_path / LOG_NAME}: bad record at byte 8 "):
        RaftDisk(tmp_path)


def test_an_unreadable_log_is_a_disk_error_naming_the_directory(tmp_path: Path) -> None:
    (tmp_path / LOG_NAME).mkdir()  # a directory where the log file should be
    with pytest.raises(DiskError, match=str(tmp_path)):
        RaftDisk(tmp_path)
    (tmp_path / LOG_NAME).rmdir()
    RaftDisk(tmp_path).close()  # the lock was released
