"""The reusable engine machine (tests/storage/stateful.py) over JournalEngine, per fsync policy.

Two filesystems: real files (`OsFileSystem` in a temporary root, real fsync) and the simulator
(`SimFileSystem`) with the machine's crash hook: the crash reverts every file to its synced content
plus a random (possibly torn) prefix of its unsynced writes, the engine is rebuilt from the files,
and the machine checks start, `durable_end() <= end`, and the surviving records.

Segments are the 4 KiB minimum and index intervals tiny, and each engine starts "warm": filler
records (about 3.9 KiB) were appended and then retired with `delete_before`, so the machine sees
an empty log whose active segment is nearly full. Variants with a clock that ticks 1 ms per reading
and `segment_ms=3` roll by age every few appends. Rolls, sealed-index lookups, cross-segment reads,
truncation into sealed segments and whole-segment retention so happen within a few steps.
"""

from __future__ import annotations

import itertools
import random
import tempfile
import weakref
from collections.abc import Callable

import pytest

from model.devices.fs import SimFileSystem
from real.node.osfs import OsFileSystem
from real.storage import Record
from real.storage.devices import Clock, FileSystem
from real.storage.journal import JournalConfig, JournalEngine
from tests.storage.stateful import FakeClock, make_engine_machine

_ROOT = tempfile.TemporaryDirectory(prefix="journal-stateful-")
_COUNTER = itertools.count()
FILLER = [Record(-1, 7, None, b"f" * 300) for _ in range(12)]


def warm(engine: JournalEngine) -> JournalEngine:
    """Fills most of the first segment, then retires it all: the log is empty, the file is not."""
    step = engine.records_max_per_append
    for at in range(0, len(FILLER), step):
        engine.append(FILLER[at : at + step])
    engine.delete_before(engine.end_offset())
    assert engine.bytes_total() == 0
    return engine


def ticking_clock() -> Clock:
    """Advances 1 ms per reading: with `segment_ms=3`, a segment rolls after a few appends."""
    return itertools.count().__next__


def os_journals(fsync: str, ticking: bool = False, **config: int) -> Callable[[], JournalEngine]:
    cfg = JournalConfig(fsync=fsync, segment_bytes=4096, index_interval_bytes=64, **config)

    def make() -> JournalEngine:
        fs = OsFileSystem(f"{_ROOT.name}/{next(_COUNTER)}")
        clock = ticking_clock() if ticking else (lambda: 0)
        engine = JournalEngine(fs, "shard", clock, cfg)
        weakref.finalize(engine, fs.close_all)
        return warm(engine)

    return make


def sim_journals(
    fsync: str, clock: Clock, seed: int, **config: int
) -> tuple[Callable[[], JournalEngine], Callable[[JournalEngine], JournalEngine]]:
    """(factory, crash) over a fresh `SimFileSystem` per example. Every example uses the same
    `seed`, so what a crash keeps depends only on the example's operations (Hypothesis replays
    an example exactly; a per-example counter would make it flaky)."""
    cfg = JournalConfig(fsync=fsync, segment_bytes=4096, index_interval_bytes=64, **config)

    def make() -> JournalEngine:
        fs = SimFileSystem(random.Random(seed))  # noqa: S311 (simulation)
        return warm(JournalEngine(fs, "data/shard", clock, cfg))

    def crash(engine: JournalEngine) -> JournalEngine:
        fs: FileSystem = engine.fs
        assert isinstance(fs, SimFileSystem)
        fs.crash()
        fs.invariants()
        return JournalEngine(fs, engine.directory, engine.clock, engine.config)

    return make, crash


def machine(
    make: Callable[[], JournalEngine], examples: int, steps: int = 50, **hooks: object
) -> type:
    return make_engine_machine(make, max_examples=examples, steps=steps, **hooks)  # type: ignore[arg-type]


# Real files, one variant per policy (fast enough for the default run).
TestOsAlways = machine(os_journals("always", ticking=True, segment_ms=3), examples=8)
TestOsGroup = machine(os_journals("group", group_commit_bytes=300), examples=8)
TestOsNever = machine(os_journals("never", records_max_per_append=3), examples=8)

# The simulator with crashes: group commit driven by the machine's clock + poll rule.
_CLOCK_GROUP, _CLOCK_NEVER, _CLOCK_ALWAYS = FakeClock(), FakeClock(), FakeClock()
_make, _crash = sim_journals("group", _CLOCK_GROUP, 1, group_commit_ms=2, segment_ms=20)
TestSimGroupCrash = machine(_make, examples=12, crash=_crash, clock=_CLOCK_GROUP)
_make, _crash = sim_journals("never", _CLOCK_NEVER, 2, group_commit_bytes=64, segment_ms=20)
TestSimNeverCrash = machine(_make, examples=15, crash=_crash, clock=_CLOCK_NEVER)
_make, _crash = sim_journals("always", _CLOCK_ALWAYS, 3, segment_ms=10)
TestSimAlwaysCrash = machine(_make, examples=10, crash=_crash, clock=_CLOCK_ALWAYS)

# Background group commit (start_sync / job.sync() / finish_sync stepped by the machine).
TestOsGroupBackground = machine(
    os_journals("group", group_commit_bytes=300, background_sync=True), examples=8)
_CLOCK_BACKGROUND = FakeClock()
_make, _crash = sim_journals("group", _CLOCK_BACKGROUND, 6, group_commit_ms=2, segment_ms=20,
                             group_commit_bytes=200, background_sync=True)
TestSimGroupBackgroundCrash = machine(_make, examples=15, crash=_crash, clock=_CLOCK_BACKGROUND)

# Longer runs, outside the default suite (make slow).
TestOsAlwaysLong = pytest.mark.slow(machine(os_journals("always"), examples=60, steps=80))
TestOsGroupAgeLong = pytest.mark.slow(
    machine(os_journals("group", ticking=True, segment_ms=3), examples=60, steps=80)
)
_make, _crash = sim_journals("group", _CLOCK_GROUP, 4, group_commit_ms=2, segment_ms=20)
TestSimGroupCrashLong = pytest.mark.slow(
    machine(_make, examples=150, steps=80, crash=_crash, clock=_CLOCK_GROUP)
)
_make, _crash = sim_journals("group", _CLOCK_BACKGROUND, 7, group_commit_ms=2, segment_ms=20,
                             background_sync=True)
TestSimGroupBackgroundCrashLong = pytest.mark.slow(
    machine(_make, examples=150, steps=80, crash=_crash, clock=_CLOCK_BACKGROUND)
)
_make, _crash = sim_journals("never", _CLOCK_NEVER, 5, segment_ms=5, records_max_per_append=4)
TestSimNeverCrashLong = pytest.mark.slow(
    machine(_make, examples=150, steps=80, crash=_crash, clock=_CLOCK_NEVER)
)
