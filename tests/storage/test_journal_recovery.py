"""JournalEngine recovery and faults: torn tails, bit rot, lost indexes, crashes, EIO.

Real files (`OsFileSystem` in tmp_path, damaged with ordinary file operations) for torn tails, bit
flips and index loss; the simulated filesystem (`model.devices.fs.SimFileSystem`) for machine
crashes at chosen points and injected EIO.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from model.devices.fs import SimFileSystem
from real.node.osfs import OsFileSystem
from real.storage import EngineClosed, Record, encode_records
from real.storage.journal import CorruptLog, EngineFailed, JournalConfig, JournalEngine
from real.storage.journal_segment import encode_checkpoint
from tests.storage.stateful import FakeClock

DIR = "shard"
SEG0 = "00000000000000000000"


def rec(ts: int, n: int = 20) -> Record:
    return Record(-1, ts, None, bytes([65 + ts % 26]) * n)


def os_journal(root: Path, **config: object) -> JournalEngine:
    cfg = JournalConfig(**config)  # type: ignore[arg-type]
    return JournalEngine(OsFileSystem(str(root)), DIR, FakeClock(), cfg)


def everything(engine: JournalEngine) -> list[Record]:
    return engine.read(engine.start_offset(), 1 << 30, 1 << 62)


def three_segments(root: Path) -> list[Record]:
    """Closes a journal of 3 segments (0-3, 4-7, 8-9), one 950-byte record per batch."""
    engine = os_journal(root, segment_bytes=4096, index_interval_bytes=256)
    for i in range(10):
        engine.append([rec(i, 950)])
    records = everything(engine)
    engine.close()
    assert sorted(p.name for p in (root / DIR).glob("*.log"))[1] == "00000000000000000004.log"
    return records


def flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x10
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------------- torn tails


def test_a_torn_last_batch_is_cut_at_every_byte_boundary(tmp_path: Path) -> None:
    first = encode_records([Record(0, 1, None, b"a" * 30), Record(1, 2, None, b"b")])
    last = encode_records([Record(2, 3, b"k", b"c" * 10)])
    for cut in range(len(last)):
        root = tmp_path / str(cut)
        (root / DIR).mkdir(parents=True)
        (root / DIR / f"{SEG0}.log").write_bytes(first + last[:cut])
        engine = os_journal(root)
        assert engine.end_offset() == 2, cut
        assert (root / DIR / f"{SEG0}.log").stat().st_size == len(first), cut
        assert engine.append([Record(-1, 9, None, b"new")]) == 2
        engine.close()
        engine = engine.reopen()
        assert [r.payload for r in everything(engine)] == [b"a" * 30, b"b", b"new"], cut
        engine.invariants()


def test_a_bit_flip_in_the_last_batch_reads_as_a_torn_tail(tmp_path: Path) -> None:
    """Indistinguishable from a torn write (nothing valid follows), so it is cut, like Kafka."""
    engine = os_journal(tmp_path)
    engine.append([rec(1)])
    engine.append([rec(2)])
    engine.close()
    log = tmp_path / DIR / f"{SEG0}.log"
    flip(log, log.stat().st_size - 3)
    engine = engine.reopen()
    assert [r.timestamp_ms for r in everything(engine)] == [1]


# ---------------------------------------------------------------------------------- bit rot


def test_a_bit_flip_mid_active_segment_is_corruption_naming_file_and_byte(tmp_path: Path) -> None:
    engine = os_journal(tmp_path)
    for i in range(3):
        engine.append([rec(i)])
    engine.close()
    log = tmp_path / DIR / f"{SEG0}.log"
    second = len(encode_records([Record(0, 0, None, b"A" * 20)]))
    flip(log, second + 40)  # the body of the 2nd batch; a valid 3rd batch follows
    with pytest.raises(CorruptLog, match=f"'shard/{SEG0}.log' at byte {second}: mid-log") as info:
        engine.reopen()
    assert (info.value.path, info.value.position) == (f"shard/{SEG0}.log", second)
    assert log.stat().st_size == 3 * second  # never truncated


def test_a_bit_flip_in_a_sealed_segment_fails_reads_and_index_rebuilds(tmp_path: Path) -> None:
    three_segments(tmp_path)
    log = tmp_path / DIR / "00000000000000000004.log"
    flip(log, 2 * 993 + 100)  # inside record 6
    engine = os_journal(tmp_path)  # the indexes are valid: opening does not decode the segment
    assert [r.offset for r in engine.read(0, 6, 1 << 20)] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(CorruptLog, match="'shard/00000000000000000004.log' at byte 1986"):
        engine.read(5, 10, 1 << 20)
    assert [r.offset for r in engine.read(8, 10, 1 << 20)] == [8, 9]
    engine.close()
    (tmp_path / DIR / "00000000000000000004.index").unlink()
    with pytest.raises(CorruptLog, match="'shard/00000000000000000004.log' at byte 1986"):
        os_journal(tmp_path)


def test_a_gap_between_segments_is_corruption(tmp_path: Path) -> None:
    three_segments(tmp_path)
    for suffix in (".log", ".index", ".timeindex"):
        (tmp_path / DIR / f"00000000000000000004{suffix}").unlink()
    with pytest.raises(CorruptLog, match=f"'shard/{SEG0}.log'.*ending at offset 8, got 4"):
        os_journal(tmp_path)


def test_a_damaged_checkpoint_is_corruption(tmp_path: Path) -> None:
    engine = os_journal(tmp_path)
    engine.append([rec(1), rec(2)])
    engine.delete_before(1)
    engine.close()
    flip(tmp_path / DIR / "log-start.checkpoint", 10)
    with pytest.raises(CorruptLog, match="'shard/log-start.checkpoint'"):
        engine.reopen()


# ---------------------------------------------------------------------------------- indexes


@pytest.mark.parametrize("damage", ["remove", "flip", "stale", "truncate"])
def test_lost_or_invalid_index_files_are_rebuilt_identically(tmp_path: Path, damage: str) -> None:
    records = three_segments(tmp_path)
    index = tmp_path / DIR / f"{SEG0}.index"
    time_index = tmp_path / DIR / f"{SEG0}.timeindex"
    originals = index.read_bytes(), time_index.read_bytes()
    if damage == "remove":
        index.unlink()
        time_index.unlink()
    elif damage == "flip":
        flip(time_index, 20)
    elif damage == "stale":  # another segment's valid index file
        index.write_bytes((tmp_path / DIR / "00000000000000000004.index").read_bytes())
    else:
        index.write_bytes(originals[0][:-5])
    engine = os_journal(tmp_path, segment_bytes=4096, index_interval_bytes=256)
    assert (index.read_bytes(), time_index.read_bytes()) == originals
    assert everything(engine) == records
    engine.invariants()


def test_leftover_temp_files_are_removed_and_stale_active_indexes_dropped(tmp_path: Path) -> None:
    three_segments(tmp_path)
    (tmp_path / DIR / "log-start.checkpoint.tmp").write_bytes(b"half")
    sealed_index = (tmp_path / DIR / f"{SEG0}.index").read_bytes()
    (tmp_path / DIR / "00000000000000000008.index").write_bytes(sealed_index)
    (tmp_path / DIR / "00000000000000000042.timeindex").write_bytes(sealed_index)  # no log
    (tmp_path / DIR / "notes.txt").write_bytes(b"not ours")
    engine = os_journal(tmp_path, segment_bytes=4096, index_interval_bytes=256)
    names = sorted(p.name for p in (tmp_path / DIR).iterdir())
    assert "log-start.checkpoint.tmp" not in names
    assert "00000000000000000008.index" not in names
    assert "00000000000000000042.timeindex" not in names
    assert "notes.txt" in names
    assert engine.end_offset() == 10


def test_segments_below_the_checkpoint_are_removed_at_open(tmp_path: Path) -> None:
    """A `delete_before` cut short after its checkpoint: recovery finishes it."""
    records = three_segments(tmp_path)
    (tmp_path / DIR / "log-start.checkpoint").write_bytes(encode_checkpoint(9, 8, 974))
    engine = os_journal(tmp_path, segment_bytes=4096)
    assert sorted(p.name for p in (tmp_path / DIR).iterdir())[0] == "00000000000000000008.log"
    assert (engine.start_offset(), everything(engine)) == (9, records[9:])
    assert engine.bytes_total() == records[9].size()
    engine.invariants()


# ---------------------------------------------------------------------- simulated machine


def sim_journal(fsync: str = "always", seed: int = 7, **config: object) -> JournalEngine:
    fs = SimFileSystem(random.Random(seed))  # noqa: S311 (simulation)
    cfg = JournalConfig(fsync=fsync, **config)  # type: ignore[arg-type]
    return JournalEngine(fs, "data/shard", FakeClock(), cfg)


def crash(engine: JournalEngine) -> JournalEngine:
    fs = engine.fs
    assert isinstance(fs, SimFileSystem)
    fs.crash()
    return JournalEngine(fs, engine.directory, engine.clock, engine.config)


def sim_fs(engine: JournalEngine) -> SimFileSystem:
    assert isinstance(engine.fs, SimFileSystem)
    return engine.fs


def test_crash_keeps_exactly_the_durable_prefix_under_group_commit() -> None:
    for seed in range(20):
        engine = sim_journal("group", seed=seed, group_commit_ms=5)
        engine.append([rec(1)])
        engine.sync()
        engine.append([rec(2)])
        engine.append([rec(3)])
        sim_fs(engine).sync(f"data/shard/{SEG0}.log")  # the buffer was never written: no effect
        engine = crash(engine)
        assert engine.end_offset() == 1, seed
        assert engine.append([rec(4)]) == 1
        engine.invariants()


def test_crash_after_a_written_but_unsynced_flush_keeps_a_batch_prefix() -> None:
    ends = set()
    for seed in range(30):
        engine = sim_journal("never", seed=seed, group_commit_ms=1)
        for i in range(4):
            engine.append([rec(i)])
            engine.poll(engine.next_flush_ms() or 0)  # written, never synced
        engine = crash(engine)
        ends.add(engine.end_offset())
        assert [r.timestamp_ms for r in everything(engine)] == list(range(engine.end_offset()))
        engine.invariants()
    assert len(ends) > 2, ends  # the simulator kept different prefixes


def test_eio_on_fsync_poisons_the_engine_until_reopened() -> None:
    engine = sim_journal("always")
    engine.append([rec(1)])
    sim_fs(engine).inject_eio("sync", "data/shard/")
    with pytest.raises(EngineFailed, match="append on the journal over 'data/shard' failed"):
        engine.append([rec(2)])
    for call in (lambda: engine.append([rec(3)]), lambda: engine.read(0, 1, 1), engine.sync,
                 engine.durable_end, lambda: engine.poll(1 << 40)):
        with pytest.raises(EngineFailed, match="failed earlier .*EIO.*reopen"):
            call()
    engine.close()  # no sync attempted after a failure
    with pytest.raises(EngineClosed):
        engine.append([])
    engine = engine.reopen()  # recovery trusts only the files
    assert [r.timestamp_ms for r in everything(engine)] == [1, 2]
    assert engine.durable_end() == 2  # opening syncs the active segment
    engine.invariants()


def test_eio_on_the_group_commit_fsync_never_advances_durable_end() -> None:
    engine = sim_journal("group", group_commit_ms=5)
    engine.append([rec(1)])
    sim_fs(engine).inject_eio("sync")
    with pytest.raises(EngineFailed, match="poll on the journal"):
        engine.poll(5)
    assert engine._durable_end == 0
    engine = crash(engine)  # the failed fsync made nothing durable
    assert engine.end_offset() in (0, 1)
    engine.invariants()


def test_eio_on_write_poisons_the_engine() -> None:
    engine = sim_journal("always")
    sim_fs(engine).inject_eio("append", "data/shard/")
    with pytest.raises(EngineFailed, match="append 'data/shard/.*EIO"):
        engine.append([rec(1)])
    with pytest.raises(EngineFailed):
        engine.end_offset()


def test_a_crash_inside_delete_before_after_the_checkpoint_completes_it() -> None:
    engine = sim_journal(segment_bytes=4096)
    for i in range(10):
        engine.append([rec(i, 950)])
    sim_fs(engine).inject_eio("remove", f"data/shard/{SEG0}.log")
    with pytest.raises(EngineFailed, match="delete_before"):
        engine.delete_before(9)
    engine = crash(engine)
    assert engine.start_offset() == 9
    assert [r.timestamp_ms for r in everything(engine)] == [9]
    assert not sim_fs(engine).exists(f"data/shard/{SEG0}.log")
    engine.invariants()


def test_a_crash_inside_truncate_leaves_a_consistent_prefix() -> None:
    engine = sim_journal(segment_bytes=4096)
    for i in range(10):
        engine.append([rec(i, 950)])
    sim_fs(engine).inject_eio("truncate")
    with pytest.raises(EngineFailed, match="truncate"):
        engine.truncate(2)
    engine = crash(engine)
    assert engine.end_offset() == 4  # later segments went first; the cut never happened
    assert [r.timestamp_ms for r in everything(engine)] == [0, 1, 2, 3]
    engine.truncate(2)
    assert engine.end_offset() == 2
    engine.invariants()


def test_eio_during_a_roll_poisons_and_recovery_rebuilds_indexes() -> None:
    engine = sim_journal(segment_bytes=4096)
    for i in range(4):
        engine.append([rec(i, 950)])
    sim_fs(engine).inject_eio("rename")  # write_file_atomic of the first index file
    with pytest.raises(EngineFailed, match="rename"):
        engine.append([rec(4, 950)])
    engine = crash(engine)
    assert engine.end_offset() == 4
    assert engine.append([rec(4, 950)]) == 4  # now the roll succeeds
    engine.invariants()


def test_a_bit_flip_in_the_simulator_is_detected() -> None:
    engine = sim_journal()
    for i in range(3):
        engine.append([rec(i)])
    sim_fs(engine).flip_bit(f"data/shard/{SEG0}.log", 5)  # the count field of batch 0
    engine.close()
    with pytest.raises(CorruptLog, match="at byte 0: mid-log corruption"):
        engine.reopen()


def test_same_operations_give_the_same_files() -> None:
    """No hidden state (wall clock, set order, ids): two runs write identical bytes."""
    runs = []
    for _ in range(2):
        engine = sim_journal("group", seed=3, segment_bytes=4096, index_interval_bytes=128)
        for i in range(12):
            engine.append([rec(i * 37 % 11, 700), rec(i, 90)])
            engine.poll(i)
        engine.delete_before(5)
        engine.truncate(20)
        engine.close()
        runs.append(sim_fs(engine).files())
    assert runs[0] == runs[1]
    assert len(runs[0]) >= 5, sorted(runs[0])
