from __future__ import annotations

import simpy

from model.devices.net import NetConfig, Network
from model.sim.dist import Dist
from model.sim.rng import SeedTree


def make_net(**cfg: object) -> tuple[simpy.Environment, Network, list[tuple[int, int, object]]]:
    env = simpy.Environment()
    got: list[tuple[int, int, object]] = []
    config = NetConfig(**{"latency": Dist("fixed", 1.0), **cfg})  # type: ignore[arg-type]
    net = Network(env, [1, 2, 3], config, SeedTree(5).derive,
                  lambda dst, msg: got.append((env.now, dst, msg)))
    return env, net, got


def test_delivery_after_latency() -> None:
    env, net, got = make_net()
    assert net.send(1, 2, "a")
    env.run()
    assert got == [(1000, 2, "a")]
    assert net.stats.delivered == 1


def test_loss_rate_is_roughly_configured() -> None:
    env, net, got = make_net(loss=0.3)
    for i in range(5000):
        net.send(1, 2, i)
    env.run()
    assert net.stats.dropped_loss + len(got) == 5000
    assert 1300 < net.stats.dropped_loss < 1700


def test_asymmetric_partition_blocks_one_direction() -> None:
    env, net, got = make_net()
    net.block(1, 2)
    assert not net.send(1, 2, "lost")
    assert net.send(2, 1, "kept")
    assert net.send(1, 3, "other link")
    env.run()
    assert [(dst, m) for _, dst, m in got] == [(1, "kept"), (3, "other link")]
    assert net.stats.dropped_partition == 1
    assert net.blocked_pairs() == [(1, 2)]


def test_symmetric_partition_and_overlap_and_heal() -> None:
    env, net, got = make_net()
    net.partition([1], [2, 3])
    net.block(1, 2)  # a second, overlapping fault
    net.unpartition([1], [2, 3])
    assert net.blocked_pairs() == [(1, 2)]
    net.heal()
    assert net.blocked_pairs() == []
    assert net.send(1, 2, "x")


def test_partition_drops_messages_in_flight() -> None:
    env, net, got = make_net()
    assert net.send(1, 2, "in flight")
    net.block(1, 2)
    env.run()
    assert got == []
    assert net.stats.dropped_partition == 1


def test_inflight_bound_rejects_and_counts() -> None:
    env, net, got = make_net(inflight_max=3)
    results = [net.send(1, 2, i) for i in range(5)]
    assert results == [True, True, True, False, False]
    assert net.stats.rejected_full == 2
    assert net.send(2, 1, "other link has room")
    env.run()
    assert len(got) == 4
    assert net.send(1, 2, "room again")


def test_duplication_and_reordering() -> None:
    env, net, got = make_net(duplicate=0.5, reorder=0.5, reorder_ms=50.0)
    for i in range(200):
        net.send(1, 2, i)
    env.run()
    msgs = [m for _, _, m in got]
    assert 200 < len(msgs) == 200 + net.stats.duplicated
    assert msgs != sorted(msgs)


def test_extra_loss_and_delay_overlays() -> None:
    env, net, got = make_net()
    net.set_loss(1.0)
    assert not net.send(1, 2, "x")
    net.set_loss(0.0)
    net.set_extra_delay(1, 2, 5000)
    net.send(1, 2, "slow")
    env.run()
    assert got == [(6000, 2, "slow")]
