"""Per-node clock: a rate factor (drift) converting Raft ticks to simulated microseconds.

A node with drift `ppm` runs ticks of `tick_ms * (1 + ppm / 1e6)` real (simulated) time: a fast
clock (negative ppm) ticks more often. Tick boundaries are kept in integer nanoseconds from an epoch
so drift never accumulates rounding error; the simulator itself runs in integer microseconds.
"""

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


class NodeClock:
    """Tick schedule of one node. `skew_ppm` (a nemesis fault) adds to the configured drift."""

    def __init__(self, tick_ms: float, drift_ppm: float) -> None:
        assert tick_ms > 0, f"tick_ms must be > 0, got {tick_ms}"
        assert abs(drift_ppm) < 500_000, f"drift_ppm out of range: {drift_ppm}"
        self.tick_ms = tick_ms
        self.drift_ppm = drift_ppm
        self.skew_ppm = 0.0
        self._epoch_ns = 0
        self._ticks = 0
        self._tick_ns = self._compute_tick_ns()

    @staticmethod
    def random_drift(rng: random.Random, max_ppm: float) -> float:
        """A drift drawn uniformly from [-max_ppm, +max_ppm], rounded to 0.01 ppm."""
        assert max_ppm >= 0
        return round(rng.uniform(-max_ppm, max_ppm), 2)

    def _compute_tick_ns(self) -> int:
        rate = 1.0 + (self.drift_ppm + self.skew_ppm) / 1e6
        tick_ns = round(self.tick_ms * US_PER_MS * NS_PER_US * rate)
        assert tick_ns >= 1, tick_ns
        return tick_ns

    @property
    def tick_ns(self) -> int:
        return self._tick_ns

    def restart(self, now_us: int) -> None:
        """Start a fresh tick schedule: the first tick is one tick length after `now_us`."""
        self._epoch_ns = now_us * NS_PER_US
        self._ticks = 0

    def set_skew(self, now_us: int, skew_ppm: float) -> None:
        """Change the rate from the next tick boundary on (keeps the boundaries passed so far)."""
        self._epoch_ns = self._epoch_ns + self._ticks * self._tick_ns
        self._ticks = 0
        self.skew_ppm = skew_ppm
        self._tick_ns = self._compute_tick_ns()
        assert self._epoch_ns <= now_us * NS_PER_US + self._tick_ns

    def next_boundary_us(self, ticks_ahead: int = 1) -> int:
        """Sim time (us, rounded up) of the boundary `ticks_ahead` ticks after the last consumed."""
        assert ticks_ahead >= 1
        ns = self._epoch_ns + (self._ticks + ticks_ahead) * self._tick_ns
        return -(-ns // NS_PER_US)

    def due(self, now_us: int) -> int:
        """How many unconsumed tick boundaries are at or before `now_us`."""
        elapsed = now_us * NS_PER_US - self._epoch_ns
        passed = elapsed // self._tick_ns
        return max(0, passed - self._ticks)

    def consume(self, n: int) -> None:
        assert n >= 0
        self._ticks += n

    def ticks_to_us(self, n: int) -> float:
        """Duration of `n` ticks of this clock, in sim microseconds."""
        return n * self._tick_ns / NS_PER_US
