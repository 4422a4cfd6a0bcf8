from __future__ import annotations

import random

import pytest

from model.sim.clock import LocalClock
from model.sim.dist import Dist, DistError
from model.sim.rng import SeedTree


def test_seed_tree_is_ordered_and_reproducible() -> None:
    a, b = SeedTree(7), SeedTree(7)
    xs = [a.derive(n).random() for n in ("x", "y", "z")]
    ys = [b.derive(n).random() for n in ("x", "y", "z")]
    assert xs == ys
    assert len(set(xs)) == 3
    assert a.names() == ["x", "y", "z"]
    assert SeedTree(8).derive("x").random() != xs[0]


def test_seed_tree_rejects_a_name_twice() -> None:
    tree = SeedTree(1)
    tree.derive("link-1-2")
    with pytest.raises(AssertionError, match="link-1-2"):
        tree.derive("link-1-2")


def test_clock_without_drift_is_sim_time_in_whole_ms() -> None:
    c = LocalClock(drift_ppm=0)
    assert c.now_ms(0) == 0
    assert c.now_ms(9_999) == 9
    assert c.now_ms(10_000) == 10
    assert c.when_us(10) == 10_000
    assert c.when_us(11) == 11_000


def test_clock_phase_shifts_the_millisecond_boundaries() -> None:
    c = LocalClock(drift_ppm=0, phase_us=300)
    assert c.now_ms(0) == 0 and c.now_ms(699) == 0 and c.now_ms(700) == 1
    assert c.when_us(1) == 700 and c.when_us(11) == 10_700


def test_clock_drift_changes_its_rate() -> None:
    fast = LocalClock(drift_ppm=-10_000)  # 1% fast: shorter milliseconds
    slow = LocalClock(drift_ppm=+10_000)
    one_hour_us = 3_600 * 1_000_000
    assert fast.now_ms(one_hour_us) == 3_636_363  # 3600 s / 0.99 ms
    assert slow.now_ms(one_hour_us) == 3_564_356  # 3600 s / 1.01 ms
    for clock in (fast, slow):
        at = clock.when_us(1_000_000)
        assert clock.now_ms(at) == 1_000_000 and clock.now_ms(at - 1) == 999_999


def test_clock_skew_keeps_local_time_continuous() -> None:
    c = LocalClock(drift_ppm=0)
    c.set_skew(25_500, 500_000 - 1)  # ~1.5x slower from 25.5 ms on (local 25 restarts there)
    assert c.now_ms(25_500) == 25
    assert c.when_us(26) == 25_500 + 1_500
    assert c.now_ms(26_999) == 25 and c.now_ms(27_000) == 26
    fast = LocalClock(drift_ppm=0)
    fast.set_skew(25_900, -400_000)  # faster: no instant jump to 26 either
    assert fast.now_ms(25_900) == 25 and fast.now_ms(26_499) == 25 and fast.now_ms(26_500) == 26
    c.set_skew(40_000, 0)
    before = c.now_ms(40_000)
    assert c.when_us(before + 2) - c.when_us(before) == 2_000
    seen = [c.now_ms(t) for t in range(0, 80_000, 333)]
    assert seen == sorted(seen)


def test_random_drift_is_bounded() -> None:
    rng = random.Random(1)
    drifts = [LocalClock.random_drift(rng, 200) for _ in range(1000)]
    assert max(drifts) <= 200
    assert min(drifts) >= -200
    assert max(drifts) > 150 and min(drifts) < -150


@pytest.mark.parametrize("spec", [
    {"dist": "fixed", "ms": 2},
    {"dist": "uniform", "low_ms": 1, "high_ms": 3},
    {"dist": "lognormal", "median_ms": 2, "sigma": 0.5},
    {"dist": "normal", "mean_ms": 2, "stddev_ms": 1, "min_ms": 0.5},
])
def test_dist_samples_are_plausible(spec: dict) -> None:
    d = Dist.parse(spec, "t")
    rng = random.Random(3)
    xs = [d.sample_us(rng) for _ in range(4000)]
    assert min(xs) >= 0
    mean_ms = sum(xs) / len(xs) / 1000
    assert abs(mean_ms - d.mean_ms()) < 0.15 * d.mean_ms() + 0.05


def test_dist_errors_name_the_key() -> None:
    with pytest.raises(DistError, match="'hgh_ms'"):
        Dist.parse({"dist": "uniform", "low_ms": 1, "hgh_ms": 2}, "network.latency")
    with pytest.raises(DistError, match="needs key 'high_ms'"):
        Dist.parse({"dist": "uniform", "low_ms": 1}, "network.latency")
    with pytest.raises(DistError, match="unknown dist 'poisson'"):
        Dist.parse({"dist": "poisson"}, "network.latency")
