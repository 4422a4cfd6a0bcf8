"""Per-machine clocks: local milliseconds with drift and skew, mapped to and from simulated
microseconds (the simulator itself runs in integer microseconds)."""

from __future__ import annotations

import random

import simpy

US_PER_MS = 1000
NS_PER_US = 1000


def now_us(env: simpy.Environment) -> int:
    """`env.now` as the int it is: the simulator schedules integer microsecond delays only
    (SimPy types `now` as int | float)."""
    now = env.now
    assert type(now) is int, now
    return now


class LocalClock:
    """A machine's monotonic clock in whole milliseconds, running at `1 + (drift + skew) / 1e6`
    sim time per local time (a fast clock, negative ppm, has shorter milliseconds).

    Boundaries are kept in integer nanoseconds from an anchor, so drift never accumulates rounding
    error. A skew change (a nemesis fault) re-anchors at that instant, so the local clock never
    jumps or runs backwards. The clock keeps running across crashes of the node (a
    process restart does not reset CLOCK_MONOTONIC)."""

    def __init__(self, drift_ppm: float, phase_us: int = 0) -> None:
        """`phase_us` in [0, 1000): how far into its current millisecond the clock is at sim time
        0 (machines' millisecond boundaries do not line up; nodes whose timers all fire on the
        same sim instant would split every vote)."""
        assert abs(drift_ppm) < 500_000, f"drift_ppm out of range: {drift_ppm}"
        assert 0 <= phase_us < US_PER_MS, phase_us
        self.drift_ppm = drift_ppm
        self.skew_ppm = 0.0
        self._anchor_ns = -phase_us * NS_PER_US
        self._anchor_ms = 0
        self._ms_ns = self._compute_ms_ns()

    @staticmethod
    def random_drift(rng: random.Random, max_ppm: float) -> float:
        """A drift drawn uniformly from [-max_ppm, +max_ppm], rounded to 0.01 ppm."""
        assert max_ppm >= 0
        return round(rng.uniform(-max_ppm, max_ppm), 2)

    def _compute_ms_ns(self) -> int:
        rate = 1.0 + (self.drift_ppm + self.skew_ppm) / 1e6
        ms_ns = round(US_PER_MS * NS_PER_US * rate)
        assert ms_ns >= 1, ms_ns
        return ms_ns

    @property
    def ms_ns(self) -> int:
        """Sim nanoseconds per local millisecond."""
        return self._ms_ns

    def now_ms(self, now_us: int) -> int:
        """The local time at sim time `now_us` (the last millisecond boundary passed)."""
        return self._anchor_ms + (now_us * NS_PER_US - self._anchor_ns) // self._ms_ns

    def when_us(self, local_ms: int) -> int:
        """The sim time (us, rounded up) at which the local clock reaches `local_ms`."""
        ns = self._anchor_ns + (local_ms - self._anchor_ms) * self._ms_ns
        return -(-ns // NS_PER_US)

    def set_skew(self, now_us: int, skew_ppm: float) -> None:
        """Change the rate from `now_us` on: the local millisecond in progress restarts there (it
        loses its elapsed fraction, so the clock neither jumps ahead nor runs backwards)."""
        local = self.now_ms(now_us)
        self._anchor_ns = now_us * NS_PER_US
        self._anchor_ms = local
        self.skew_ppm = skew_ppm
        self._ms_ns = self._compute_ms_ns()
        assert self.now_ms(now_us) == local, (now_us, local)
