from __future__ import annotations

import random

import pytest

from model.clock import NodeClock
from model.dist import Dist, DistError
from model.rng import SeedTree


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


def test_clock_without_drift_ticks_on_the_grid() -> None:
    c = NodeClock(tick_ms=10, drift_ppm=0)
    c.restart(0)
    assert c.next_boundary_us() == 10_000
    assert c.due(9_999) == 0
    assert c.due(10_000) == 1
    assert c.due(35_000) == 3
    c.consume(3)
    assert c.next_boundary_us() == 40_000
    assert c.next_boundary_us(5) == 80_000


def test_clock_drift_changes_tick_rate() -> None:
    fast = NodeClock(tick_ms=10, drift_ppm=-10_000)  # 1% fast: shorter ticks
    slow = NodeClock(tick_ms=10, drift_ppm=+10_000)
    fast.restart(0)
    slow.restart(0)
    one_hour_us = 3_600 * 1_000_000
    assert fast.due(one_hour_us) > 360_000 > slow.due(one_hour_us)
    assert fast.due(one_hour_us) == 363_636  # 3600 s / 9.9 ms
    assert slow.due(one_hour_us) == 356_435  # 3600 s / 10.1 ms


def test_clock_skew_rebases_at_last_consumed_tick() -> None:
    c = NodeClock(tick_ms=10, drift_ppm=0)
    c.restart(0)
    c.consume(c.due(25_000))
    c.set_skew(25_000, 500_000 - 1)  # ~1.5x slower
    assert c.next_boundary_us() == 20_000 + 15_000
    c.set_skew(40_000, 0)
    assert c.ticks_to_us(2) == 20_000


def test_random_drift_is_bounded() -> None:
    rng = random.Random(1)
    drifts = [NodeClock.random_drift(rng, 200) for _ in range(1000)]
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
