"""The file journal's background group commit (`background_sync=True`): `start_sync` writes the
buffer and hands out a `SyncJob`, the owner runs `job.sync()` (anywhere), `finish_sync` moves
`durable_end`. One behaviour per test, then a focused crash machine over the simulated filesystem
(the generic engine machine in test_journal_stateful also steps these jobs among all its rules).
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from model.devices.fs import SimFileSystem
from real.node.osfs import OsFileSystem
from real.storage import InvalidArgument, Record
from real.storage.devices import DetachedSync, DeviceError, NotFound
from real.storage.journal import EngineFailed, JournalConfig, JournalEngine, SyncJob
from tests.storage.stateful import FakeClock

DIR = "shard"


class CountingFs(OsFileSystem):
    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.syncs = 0
        self.appends = 0
        self.handles = 0

    def append(self, path: str, data: bytes) -> int:
        self.appends += 1
        return super().append(path, data)

    def sync(self, path: str) -> None:
        self.syncs += 1
        super().sync(path)

    def sync_handle(self, path: str):  # type: ignore[no-untyped-def]
        self.handles += 1
        return super().sync_handle(path)


def rec(ts: int, size: int = 10) -> Record:
    return Record(-1, ts, None, bytes([ts % 251]) * size)


def engine_over(fs: object, clock: FakeClock, **config: object) -> JournalEngine:
    cfg = JournalConfig(fsync="group", group_commit_ms=5, background_sync=True,
                        **config)  # type: ignore[arg-type]
    return JournalEngine(fs, DIR, clock, cfg)  # type: ignore[arg-type]


@pytest.fixture
def fs(tmp_path: Path) -> CountingFs:
    return CountingFs(str(tmp_path))


def test_config_needs_group_and_a_bool() -> None:
    with pytest.raises(InvalidArgument, match="background_sync needs fsync 'group'"):
        JournalConfig(fsync="always", background_sync=True)
    with pytest.raises(InvalidArgument, match="^background_sync must be a bool"):
        JournalConfig(fsync="group", background_sync=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="start_sync needs background_sync"):
        JournalEngine(OsFileSystem("/tmp/twinmq-bg-unused"), DIR, FakeClock(),
                      JournalConfig(fsync="group")).start_sync(10)


def test_a_job_moves_durable_end_only_when_finished(fs: CountingFs) -> None:
    clock = FakeClock(100)
    engine = engine_over(fs, clock)
    appends, syncs = fs.appends, fs.syncs
    engine.append([rec(1), rec(2)])
    assert engine.next_flush_ms() == 105
    assert engine.start_sync(104) is None  # not due yet
    job = engine.start_sync(105)
    assert isinstance(job, SyncJob) and job.detached and job.end == 2
    assert (fs.appends - appends, fs.syncs - syncs) == (1, 0)  # written, not synced
    assert engine.next_flush_ms() is None  # one job at a time
    clock.advance(10)
    engine.append([rec(3)])  # arrives while the job runs
    assert engine.next_flush_ms() is None
    job.sync()
    assert engine.durable_end() == 0
    engine.finish_sync(job)
    assert engine.durable_end() == 2  # not 3: record 3 is no job's yet
    assert engine.next_flush_ms() == 115
    job2 = engine.start_sync(115)
    assert job2 is not None and job2.end == 3
    job2.sync()
    engine.finish_sync(job2)
    assert engine.durable_end() == 3 and engine.next_flush_ms() is None
    engine.invariants()


def test_the_byte_threshold_writes_without_syncing(fs: CountingFs) -> None:
    engine = engine_over(fs, FakeClock(), group_commit_bytes=100)
    appends, syncs = fs.appends, fs.syncs
    for ts in range(5):
        engine.append([rec(ts, 40)])
    assert fs.appends - appends >= 2 and fs.syncs == syncs and engine.durable_end() == 0
    assert engine.next_flush_ms() == 5  # the deadline still counts from the oldest append


def test_the_job_syncs_on_another_thread_even_after_close(fs: CountingFs) -> None:
    clock = FakeClock()
    engine = engine_over(fs, clock)
    engine.append([rec(1)])
    job = engine.start_sync(5)
    assert job is not None
    engine.close()  # commits in place and releases the cached handle; the job's fd is its own
    ran: list[BaseException | None] = []

    def run() -> None:
        try:
            job.sync()
            ran.append(None)
        except BaseException as exc:  # noqa: BLE001
            ran.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert ran == [None]
    engine.finish_sync(job)  # moot after close: nothing moves, nothing raises
    assert engine.durable_end() == 1


def test_a_truncate_makes_the_running_job_moot(fs: CountingFs) -> None:
    engine = engine_over(fs, FakeClock())
    engine.append([rec(1), rec(2), rec(3)])
    job = engine.start_sync(5)
    assert job is not None and job.end == 3
    engine.truncate(1)
    engine.append([rec(4), rec(5)])  # end 3 again, but offsets 1..2 are new and unsynced
    job.sync()
    engine.finish_sync(job)
    assert engine.durable_end() == 1
    engine.invariants()


def test_a_failed_job_poisons_the_engine(fs: CountingFs) -> None:
    engine = engine_over(fs, FakeClock())
    engine.append([rec(1)])
    job = engine.start_sync(5)
    assert job is not None
    job.sync()
    with pytest.raises(EngineFailed, match="finish_sync"):
        engine.finish_sync(job, DeviceError("sync", "shard/x.log", "EIO: I/O error"))
    with pytest.raises(EngineFailed):
        engine.append([rec(2)])
    engine.close()
    assert engine.reopen().end_offset() == 1  # recovery trusts the files, not the failed call


def test_finish_needs_the_running_job(fs: CountingFs) -> None:
    engine = engine_over(fs, FakeClock())
    engine.append([rec(1)])
    job = engine.start_sync(5)
    assert job is not None
    stranger = SyncJob(1, lambda: None, False, 0)
    with pytest.raises(InvalidArgument, match="not the job"):
        engine.finish_sync(stranger)
    job.sync()
    engine.finish_sync(job)
    with pytest.raises(InvalidArgument, match="not the job"):
        engine.finish_sync(job)


def test_without_detached_syncs_the_job_runs_fs_sync() -> None:
    sim = SimFileSystem(random.Random(1))
    assert not isinstance(sim, DetachedSync)
    engine = engine_over(sim, FakeClock())
    engine.append([rec(1)])
    job = engine.start_sync(5)
    assert job is not None and not job.detached
    job.sync()
    engine.finish_sync(job)
    assert engine.durable_end() == 1
    sim.crash()
    recovered = JournalEngine(sim, DIR, FakeClock(), engine.config)
    assert recovered.end_offset() == 1


def test_a_moot_job_whose_segment_a_truncate_removed_fails_harmlessly() -> None:
    """Without detached syncs the job syncs a path; a truncate below that segment's base removes
    the file, so `job.sync()` raises. The owner hands the error to `finish_sync`, which ignores
    it for a moot job: no poison, durable_end stays at the truncate point."""
    sim = SimFileSystem(random.Random(1))
    engine = engine_over(sim, FakeClock(), segment_bytes=4096)
    for ts in range(12):
        engine.append([rec(ts, size=1000)])
    assert len([n for n in sim.list_dir(DIR) if n.endswith(".log")]) > 2  # several segments
    job = engine.start_sync(5)
    assert job is not None and not job.detached and job.end == 12
    engine.truncate(1)  # drops every segment after the first, the job's one included
    with pytest.raises(NotFound) as info:
        job.sync()
    engine.finish_sync(job, info.value)
    assert engine.durable_end() == engine.end_offset() == 1
    engine.append([rec(20)])  # not poisoned
    engine.invariants()


def test_a_job_whose_segment_retention_removed_fails_harmlessly() -> None:
    """The job syncs the active segment by path; more appends roll to new segments, then
    `delete_before` (retention) removes the job's segment. `job.sync()` raises NotFound; the
    job is moot (its records are durable or deleted), so `finish_sync` must not poison the
    engine. (Found by TestSimGroupBackgroundCrashLong.)"""
    sim = SimFileSystem(random.Random(1))
    engine = engine_over(sim, FakeClock(), segment_bytes=4096)
    for ts in range(3):
        engine.append([rec(ts, size=1000)])
    job = engine.start_sync(5)
    assert job is not None and not job.detached and job.end == 3
    for ts in range(3, 12):
        engine.append([rec(ts, size=1000)])  # rolls past the job's segment
    engine.delete_before(8)  # removes every segment below 8, the job's one included
    with pytest.raises(NotFound) as info:
        job.sync()
    engine.finish_sync(job, info.value)
    assert engine.durable_end() >= 8 and engine.start_offset() == 8
    engine.append([rec(20)])  # not poisoned
    engine.invariants()


def test_poll_and_sync_still_commit_in_place(fs: CountingFs) -> None:
    engine = engine_over(fs, FakeClock())
    syncs = fs.syncs
    engine.append([rec(1)])
    engine.poll(5)
    assert engine.durable_end() == 1 and fs.syncs == syncs + 1 and fs.handles == 0
    engine.append([rec(2)])
    engine.sync()
    assert engine.durable_end() == 2


# ------------------------------------------------------------------------ crash machine


class BackgroundCrash(RuleBasedStateMachine):
    """Appends, job steps, in-place commits, truncates and machine crashes of the simulated
    filesystem; after a crash every offset below the durable_end reported before it survives."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.fs = SimFileSystem(random.Random(11))
        self.engine = engine_over(self.fs, self.clock, group_commit_bytes=120)
        self.log: list[Record] = []
        self.job: SyncJob | None = None
        self.ran = False
        self.ts = 0

    @rule(n=st.integers(1, 3), size=st.sampled_from([5, 60]))
    def append(self, n: int, size: int) -> None:
        batch = []
        for _ in range(n):
            self.ts += 1
            batch.append(rec(self.ts, size))
        self.engine.append(batch)
        self.log += batch

    @rule()
    def job_step(self) -> None:
        """The next step of the background commit: start a job, run its sync, finish it."""
        if self.job is None:
            due = self.engine.next_flush_ms()
            if due is not None:
                self.clock.advance(max(0, due - self.clock()))
            self.job, self.ran = self.engine.start_sync(self.clock()), False
            note(f"start -> {self.job}")
        elif not self.ran:
            self.job.sync()
            self.ran = True
        else:
            self.engine.finish_sync(self.job)
            note(f"finish -> durable_end {self.engine.durable_end()}")
            self.job = None

    @rule()
    def commit_in_place(self) -> None:
        self.engine.sync()

    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(0, len(self.log)))
        self.engine.truncate(offset)
        del self.log[offset:]

    @precondition(lambda self: len(self.log) > self.engine.durable_end())
    @rule()
    def crash(self) -> None:
        """(Only when something is not durable yet: other crashes test nothing new.)"""
        durable = self.engine.durable_end()
        self.fs.crash()
        self.engine = JournalEngine(self.fs, DIR, self.clock, self.engine.config)
        self.job = None
        end = self.engine.end_offset()
        note(f"crash: durable_end was {durable}, recovered end {end}")
        assert durable <= end <= len(self.log), (durable, end, len(self.log))
        del self.log[end:]
        assert self.engine.read(0, 1 << 30, 1 << 62) == [
            Record(i, r.timestamp_ms, r.key, r.payload) for i, r in enumerate(self.log)]

    @invariant()
    def consistent(self) -> None:
        self.engine.invariants()
        assert self.engine.end_offset() == len(self.log)


BackgroundCrash.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestBackgroundCrash = BackgroundCrash.TestCase
