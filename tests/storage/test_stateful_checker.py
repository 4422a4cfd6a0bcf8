"""The engine machine's crash rule can fail: a recovery losing a durable record is caught."""

from __future__ import annotations

import unittest

from real.storage import MemoryEngine
from tests.storage.stateful import FakeClock, make_engine_machine


def _lossy_crash(engine: MemoryEngine) -> MemoryEngine:
    """Claims everything is durable (MemoryEngine.durable_end == end) but drops the last record."""
    if engine.end_offset() > engine.start_offset():
        engine.truncate(engine.end_offset() - 1)
    return engine


def _honest_crash(engine: MemoryEngine) -> MemoryEngine:
    return engine


def _run(case: type[unittest.TestCase]) -> unittest.TestResult:
    result = unittest.TestResult()
    unittest.defaultTestLoader.loadTestsFromTestCase(case).run(result)
    return result


def test_lossy_recovery_is_caught() -> None:
    case = make_engine_machine(MemoryEngine, max_examples=100, crash=_lossy_crash)
    result = _run(case)
    assert len(result.failures) + len(result.errors) == 1, result
    assert "after crash" in str(result.failures + result.errors)


class CountingClock(FakeClock):
    """Counts the time the machine moved it by (it restarts at 0 with every example)."""

    advanced_ms = 0

    def advance(self, ms: int) -> int:
        self.advanced_ms += ms
        return super().advance(ms)


def test_honest_recovery_passes_with_a_clock() -> None:
    clock = CountingClock()
    case = make_engine_machine(MemoryEngine, max_examples=20, crash=_honest_crash, clock=clock)
    result = _run(case)
    assert result.wasSuccessful(), result.failures + result.errors
    assert clock.advanced_ms > 0, "the clock rule should have advanced time"
