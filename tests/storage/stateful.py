"""A reusable model-based test for every `ShardEngine` (STYLE 15, zarr `testing/stateful.py`).

`make_engine_machine(factory)` returns a `unittest.TestCase` class that drives a fresh engine from
`factory()` beside a trivial reference (a start offset and a list of records) through appends,
bounded reads, time lookups, truncation, retention, sync and close+reopen, comparing after every
step. Later engines (file journal, RocksDB, S3) plug in with one line:

    TestJournal = make_engine_machine(lambda: JournalEngine(fs=MemFs(), ...))

The engine must satisfy `real.storage.ReopenableEngine` (`reopen()` after a clean `close()` returns
an engine over the same records; `invariants()` checks internal consistency). If it exposes
`records_max_per_append` / `bytes_max_total`, rejections are predicted from them.

Two optional hooks widen the machine:

- `crash(engine) -> engine`: simulate a machine crash of the engine's devices and return a freshly
  recovered engine (the old object is abandoned, not closed). Checked: the start offset survives
  (`truncate`/`delete_before` are durable on return), `durable_end() before <= end after <= end
  before`, and the survivors equal the reference's prefix. Engines implement `durable_end()`.
- `clock`: a `FakeClock` the factory also handed the engine; a rule advances it and calls
  `engine.poll(now)`, so group-commit and linger deadlines fire inside the run.

Engines with `background_sync` (the file journal's option) also get a rule that steps one
background group commit at a time: `start_sync`, the job's `sync()`, `finish_sync`, interleaved
with everything else (a crash or reopen abandons a running job).
"""

from __future__ import annotations

import unittest
from collections.abc import Callable
from dataclasses import replace

from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from real.storage import (
    BatchTooLarge,
    EngineClosed,
    OffsetOutOfRange,
    Record,
    ReopenableEngine,
    StorageError,
    StorageFull,
)
from tests.storage.strategies import fresh_records

EngineMaker = Callable[[], ReopenableEngine]
Crash = Callable[[ReopenableEngine], ReopenableEngine]


class FakeClock:
    """A monotonic millisecond clock the test moves by hand (engines take it as their `Clock`)."""

    def __init__(self, now_ms: int = 0) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> int:
        assert ms >= 0, ms
        self.now_ms += ms
        return self.now_ms
BATCHES = st.lists(fresh_records(), max_size=6)
NO_LIMIT = 1 << 62
NO_LIMIT_RECORDS = 1 << 30


def make_engine_machine(
    factory: EngineMaker,
    max_examples: int = 60,
    steps: int = 40,
    crash: Crash | None = None,
    clock: FakeClock | None = None,
) -> type[unittest.TestCase]:
    """A TestCase class running `EngineVsReference` over engines from `factory`."""

    class EngineVsReference(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            if clock is not None:
                clock.now_ms = 0  # each example starts at time 0: Hypothesis replays it exactly
            self.engine = factory()
            self.start = self.engine.start_offset()
            self.log: list[Record] = []  # the reference: offsets start, start+1, ...
            self.job: object | None = None  # a background sync job, whether it ran, its error
            self.job_ran = False
            self.job_error: BaseException | None = None
            note(f"engine {self.engine.kind}, start {self.start}")

        @property
        def end(self) -> int:
            return self.start + len(self.log)

        def offsets(self, slack: int) -> st.SearchStrategy[int]:
            return st.integers(max(0, self.start - slack), self.end + slack)

        @rule(batch=BATCHES)
        def append(self, batch: list[Record]) -> None:
            expected = self.expected_rejection(batch)
            note(f"append {len(batch)} records, expect {expected.__name__ if expected else 'ok'}")
            if expected is not None:
                try:
                    self.engine.append(batch)
                except expected:
                    return
                raise AssertionError(f"append of {len(batch)} should raise {expected.__name__}")
            base = self.engine.append(batch)
            assert base == self.end, (base, self.end)
            self.log.extend(replace(rec, offset=base + i) for i, rec in enumerate(batch))

        def expected_rejection(self, batch: list[Record]) -> type[Exception] | None:
            per_append = getattr(self.engine, "records_max_per_append", NO_LIMIT)
            bytes_max = getattr(self.engine, "bytes_max_total", NO_LIMIT)
            if len(batch) > per_append:
                return BatchTooLarge
            if sum(r.size() for r in self.log + batch) > bytes_max:
                return StorageFull
            return None

        @rule(data=st.data(), records_max=st.integers(1, 5), bytes_max=st.integers(0, 200))
        def read(self, data: st.DataObject, records_max: int, bytes_max: int) -> None:
            offset = data.draw(self.offsets(slack=2), label="offset")
            if not self.start <= offset <= self.end:
                self.expect_out_of_range(lambda: self.engine.read(offset, records_max, bytes_max))
                return
            got = self.engine.read(offset, records_max, bytes_max)
            assert got == self.expected_read(offset, records_max, bytes_max), (offset, got)

        def expected_read(self, offset: int, records_max: int, bytes_max: int) -> list[Record]:
            out: list[Record] = []
            used = 0
            for rec in self.log[offset - self.start :]:
                if len(out) == records_max or (out and used + rec.size() > bytes_max):
                    break
                out.append(rec)
                used += rec.size()
            return out

        @rule(ts=st.integers(-1, 60))
        def offset_for_time(self, ts: int) -> None:
            hits = [rec.offset for rec in self.log if rec.timestamp_ms >= ts]
            expected = hits[0] if hits else self.end
            assert self.engine.offset_for_time(ts) == expected, (ts, expected)

        @rule(data=st.data())
        def truncate(self, data: st.DataObject) -> None:
            offset = data.draw(self.offsets(slack=1), label="truncate to")
            note(f"truncate {offset}")
            if not self.start <= offset <= self.end:
                self.expect_out_of_range(lambda: self.engine.truncate(offset))
                return
            self.engine.truncate(offset)
            del self.log[offset - self.start :]

        @rule(data=st.data())
        def delete_before(self, data: st.DataObject) -> None:
            offset = data.draw(self.offsets(slack=1), label="delete before")
            note(f"delete_before {offset}")
            if offset > self.end:
                self.expect_out_of_range(lambda: self.engine.delete_before(offset))
                return
            self.engine.delete_before(offset)
            if offset > self.start:
                del self.log[: offset - self.start]
                self.start = offset

        @rule()
        def sync(self) -> None:
            self.engine.sync()

        @rule(ms=st.sampled_from([0, 1, 3, 10, 1000]), poll=st.booleans())
        def advance_clock_and_poll(self, ms: int, poll: bool) -> None:
            """Time passes; with `poll`, the engine does its due work in place (without, a
            background sync job can find it due)."""
            if clock is None:
                return
            now = clock.advance(ms)
            do_poll = getattr(self.engine, "poll", None)
            if do_poll is not None and poll:
                do_poll(now)

        @rule(step=st.sampled_from(["start", "sync", "finish", "sync+finish"]))
        def background_sync(self, step: str) -> None:
            engine = self.engine
            if not getattr(engine, "background_sync", False):
                return
            job = self.job
            if step == "start" and job is None:
                now = NO_LIMIT
                due = engine.next_flush_ms()  # type: ignore[attr-defined]
                if clock is not None:  # time passes until the deadline
                    now = clock.advance(max(0, due - clock())) if due is not None else clock()
                self.job, self.job_ran = engine.start_sync(now), False  # type: ignore[attr-defined]
                self.job_error = None
                note(f"start_sync -> {self.job}")
                return
            if step.startswith("sync") and job is not None and not self.job_ran:
                try:
                    job.sync()  # type: ignore[attr-defined]
                except StorageError as exc:
                    # As the owner does (StoreDriver): the error goes to finish_sync, which
                    # ignores it for a job a truncate made moot (its segment may be gone) and
                    # poisons the engine otherwise.
                    note(f"job.sync() raised {exc!r}")
                    self.job_error = exc
                self.job_ran = True
            if step.endswith("finish") and job is not None and self.job_ran:
                before = engine.durable_end()  # type: ignore[attr-defined]
                engine.finish_sync(job, self.job_error)  # type: ignore[attr-defined]
                after = engine.durable_end()  # type: ignore[attr-defined]
                note(f"finish_sync: durable_end {before} -> {after}")
                assert after >= before
                self.job = None

        def abandon_job(self) -> None:
            """A crash or reopen: the running job's engine object is gone (a detached job still
            holds a descriptor, which running it releases)."""
            job, self.job = self.job, None
            if job is not None and not self.job_ran and job.detached:  # type: ignore[attr-defined]
                job.sync()  # type: ignore[attr-defined]

        @rule()
        def crash_and_recover(self) -> None:
            if crash is None:
                return
            self.abandon_job()
            durable = self.engine.durable_end()  # type: ignore[attr-defined]
            note(f"crash: durable_end {durable}, end {self.end}")
            assert self.start <= durable <= self.end, (self.start, durable, self.end)
            self.engine = crash(self.engine)
            start, end = self.engine.start_offset(), self.engine.end_offset()
            assert start == self.start, f"start {start} after crash, expected {self.start}"
            assert durable <= end <= self.end, f"end {end} after crash, durable {durable}"
            del self.log[end - self.start :]
            survivors = self.engine.read(start, NO_LIMIT_RECORDS, NO_LIMIT) if end > start else []
            assert survivors == self.log, "records after crash differ from the reference prefix"

        @rule()
        def close_and_reopen(self) -> None:
            self.engine.close()
            if self.job is not None and self.job_ran:  # a job that outlived close moves nothing
                durable = self.engine.durable_end()  # type: ignore[attr-defined]
                self.engine.finish_sync(self.job)  # type: ignore[attr-defined]
                assert self.engine.durable_end() == durable  # type: ignore[attr-defined]
            self.abandon_job()
            try:
                self.engine.append([])
            except EngineClosed:
                pass
            else:
                raise AssertionError("append after close should raise EngineClosed")
            self.engine = self.engine.reopen()

        def expect_out_of_range(self, call: Callable[[], object]) -> None:
            try:
                call()
            except OffsetOutOfRange as exc:
                assert (exc.start, exc.end) == (self.start, self.end), str(exc)
                return
            raise AssertionError(f"expected OffsetOutOfRange with start {self.start}")

        @invariant()
        def matches_reference(self) -> None:
            self.engine.invariants()
            start, end = self.engine.start_offset(), self.engine.end_offset()
            assert start == self.start, (start, self.start)
            assert end == self.end, (end, self.end)
            assert self.engine.bytes_total() == sum(r.size() for r in self.log)
            durable_end = getattr(self.engine, "durable_end", None)
            if durable_end is not None:
                assert start <= durable_end() <= end, (start, durable_end(), end)

        def teardown(self) -> None:
            self.engine.close()
            self.abandon_job()

    EngineVsReference.TestCase.settings = settings(
        max_examples=max_examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    return EngineVsReference.TestCase
