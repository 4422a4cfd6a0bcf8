"""MetaStateMachine shard replication: placement, ISR changes, elections, fencing of restarted and
leaving nodes, snapshots and the schema of the new commands."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from real.meta import (
    MetaError,
    MetaStateMachine,
    ShardInfo,
    TopicInfo,
    decode_command,
    encode_command,
)
from real.meta.commands import REPLICAS_MAX, check_command
from tests.meta.test_meta_machine import Applier, err, ok


@pytest.fixture
def a() -> Applier:
    return Applier()


def register(a: Applier, *node_ids: int) -> None:
    for n in node_ids:
        ok(a("node.register", node_id=n, addr=f"h:{n}"))


def shards(a: Applier, name: str) -> tuple[ShardInfo, ...]:
    topic = a.sm.topic(name)
    assert topic is not None, name
    return topic.shards


def shard(a: Applier, name: str, index: int) -> ShardInfo:
    return shards(a, name)[index]


def R(leader: int, epoch: int, replicas: tuple[int, ...], isr: tuple[int, ...],  # noqa: N802
      version: int) -> ShardInfo:
    return ShardInfo(leader, epoch, replicas, isr, version)


def fresh(replicas: tuple[int, ...]) -> ShardInfo:
    """A newly placed shard: led by its first replica, all in sync, epoch and version 1."""
    return ShardInfo(replicas[0], 1, replicas, replicas, 1)


def set_isr(a: Applier, topic: str, index: int, isr: list[int], **over: int) -> Any:
    s = shard(a, topic, index)
    fields: dict[str, Any] = {"leader": s.leader, "epoch": s.epoch, "version": s.version}
    fields.update(over)
    return a("shard.set_isr", topic=topic, shard=index, isr=isr, **fields)


def elect(a: Applier, topic: str, index: int, leader: int, isr: list[int], **over: Any) -> Any:
    s = shard(a, topic, index)
    fields: dict[str, Any] = {"epoch": s.epoch, "version": s.version}
    fields.update(over)
    return a("shard.elect", topic=topic, shard=index, leader=leader, isr=isr, **fields)


def unchanged(a: Applier, result: Any, before: list[TopicInfo]) -> str:
    """`result` is a refusal that left every topic as it was."""
    message = err(result)
    assert a.sm.topics() == before
    return message


def replica_counts(sm: MetaStateMachine) -> dict[int, int]:
    counts = {n.node_id: 0 for n in sm.nodes()}
    for t in sm.topics():
        for s in t.shards:
            for n in s.replicas:
                counts[n] += 1
    return counts


def lead_counts(sm: MetaStateMachine) -> dict[int, int]:
    counts = {n.node_id: 0 for n in sm.nodes()}
    for t in sm.topics():
        for s in t.shards:
            if s.replicated:
                counts[s.leader] += 1
    return counts


def spread(counts: dict[int, int]) -> int:
    return max(counts.values()) - min(counts.values())


def check_placed(sm: MetaStateMachine, s: ShardInfo, rf: int) -> None:
    registered = {n.node_id for n in sm.nodes()}
    assert len(s.replicas) == rf and len(set(s.replicas)) == rf, s
    assert set(s.replicas) <= registered, s
    assert s.leader == s.replicas[0] and list(s.replicas[1:]) == sorted(s.replicas[1:]), s
    assert s.isr == s.replicas and s.epoch == 1 and s.version == 1, s


# ---- placement ---------------------------------------------------------------------------------


def test_placement_three_nodes(a: Applier) -> None:
    register(a, 3, 1, 2)  # registration order does not matter: ties go to the lower id
    assert ok(a("topic.create", name="t", shards=3, engine="file", replication=2)) == 3
    assert shards(a, "t") == (fresh((1, 2)), fresh((3, 1)), fresh((2, 3)))
    assert replica_counts(a.sm) == {1: 2, 2: 2, 3: 2}
    assert lead_counts(a.sm) == {1: 1, 2: 1, 3: 1}
    # RF == nodes: every node holds every shard; leadership still rotates.
    ok(a("topic.create", name="u", shards=2, engine="memory", replication=3))
    assert shards(a, "u") == (fresh((1, 2, 3)), fresh((2, 1, 3)))
    # RF 1: replicas go to the least loaded node (leadership counts play no part in that), so
    # mixing replication factors balances replicas within 1 but leadership only roughly.
    ok(a("topic.create", name="v", shards=4, engine="file", replication=1))
    assert shards(a, "v") == (fresh((1,)), fresh((2,)), fresh((3,)), fresh((1,)))
    assert replica_counts(a.sm) == {1: 6, 2: 5, 3: 5}
    assert lead_counts(a.sm) == {1: 4, 2: 3, 3: 2}


def test_placement_five_nodes_several_topics(a: Applier) -> None:
    register(a, 1, 2, 3, 4, 5)
    ok(a("topic.create", name="a", shards=5, engine="file", replication=3))
    assert shards(a, "a") == (fresh((1, 2, 3)), fresh((4, 1, 5)), fresh((2, 3, 4)),
                              fresh((5, 1, 2)), fresh((3, 4, 5)))
    assert replica_counts(a.sm) == {n: 3 for n in range(1, 6)}
    assert lead_counts(a.sm) == {n: 1 for n in range(1, 6)}
    ok(a("topic.create", name="b", shards=3, engine="file", replication=2))
    assert shards(a, "b") == (fresh((1, 2)), fresh((3, 4)), fresh((5, 1)))
    assert replica_counts(a.sm) == {1: 5, 2: 4, 3: 4, 4: 4, 5: 4}
    assert lead_counts(a.sm) == {1: 2, 2: 1, 3: 2, 4: 1, 5: 2}
    for i, rf in enumerate([3, 5, 1, 4, 2, 3]):
        ok(a("topic.create", name=f"more{i}", shards=i + 2, engine="file", replication=rf))
        assert spread(replica_counts(a.sm)) <= 1, (rf, replica_counts(a.sm))
        for s in shards(a, f"more{i}"):
            check_placed(a.sm, s, rf)


def test_placement_spreads_leaders_with_a_uniform_replication_factor(a: Applier) -> None:
    register(a, 1, 2, 3, 4, 5)
    for i in range(6):
        ok(a("topic.create", name=f"t{i}", shards=i + 1, engine="file", replication=3))
        assert spread(replica_counts(a.sm)) <= 1
        assert spread(lead_counts(a.sm)) <= 1, lead_counts(a.sm)


def test_placement_is_deterministic() -> None:
    def build(order: list[int]) -> MetaStateMachine:
        a = Applier()
        register(a, *order)
        ok(a("topic.create", name="x", shards=7, engine="file", replication=3))
        ok(a("topic.create", name="y", shards=4, engine="file", replication=2))
        ok(a("topic.add_shards", name="x", shards=9))
        return a.sm

    one, two, three = build([1, 2, 3, 4]), build([1, 2, 3, 4]), build([4, 2, 1, 3])
    assert one.digest() == two.digest()
    assert one.topics() == three.topics()  # only the broker epochs differ


def test_replication_larger_than_the_registered_nodes_is_refused(a: Applier) -> None:
    assert "larger than the 0 registered nodes" in err(
        a("topic.create", name="t", shards=1, engine="file", replication=1))
    register(a, 1, 2)
    message = err(a("topic.create", name="t", shards=1, engine="file", replication=3))
    assert message == ("topic.create: replication factor 3 is larger than the 2 registered "
                       "nodes")
    assert a.sm.topic("t") is None
    register(a, 7)
    ok(a("topic.create", name="t", shards=2, engine="file", replication=3))  # RF == nodes
    assert shards(a, "t") == (fresh((1, 2, 7)), fresh((2, 1, 7)))


def test_placement_ignores_unregistered_nodes_and_unreplicated_topics(a: Applier) -> None:
    register(a, 1, 2, 3)
    # An unreplicated topic led by node 1 weighs nothing in placement.
    ok(a("topic.create", name="plain", shards=4, engine="file", leader=1))
    ok(a("topic.create", name="t", shards=1, engine="file", replication=2))
    assert shards(a, "t") == (fresh((1, 2)),)
    ok(a("node.unregister", node_id=1))
    ok(a("topic.create", name="u", shards=3, engine="file", replication=2))
    assert shards(a, "u") == (fresh((3, 2)), fresh((2, 3)), fresh((3, 2)))
    assert "larger than the 2 registered" in err(
        a("topic.create", name="w", shards=1, engine="file", replication=3))


def test_topic_create_with_replication_still_checks_the_name_and_leader(a: Applier) -> None:
    register(a, 1)
    ok(a("topic.create", name="t", shards=1, engine="file", replication=1))
    assert "already exists" in err(a("topic.create", name="t", shards=1, engine="file",
                                     replication=1))
    assert "leader node 9 is not registered" in err(
        a("topic.create", name="u", shards=1, engine="file", leader=9, replication=1))


def test_add_shards_places_new_shards_of_a_replicated_topic(a: Applier) -> None:
    register(a, 1, 2, 3)
    ok(a("topic.create", name="t", shards=3, engine="file", replication=2))
    ok(set_isr(a, "t", 0, [1]))  # existing shards keep their state
    before = shards(a, "t")
    assert ok(a("topic.add_shards", name="t", shards=5)) == 5
    assert shards(a, "t") == before + (fresh((1, 2)), fresh((3, 1)))
    assert spread(replica_counts(a.sm)) <= 1
    ok(a("node.unregister", node_id=3))
    ok(a("topic.add_shards", name="t", shards=6))  # over the remaining nodes only
    assert shard(a, "t", 5) == fresh((2, 1))
    ok(a("node.unregister", node_id=2))
    before = shards(a, "t")
    assert err(a("topic.add_shards", name="t", shards=7)) == (
        "topic.add_shards: replication factor 2 is larger than the 1 registered nodes")
    assert shards(a, "t") == before


def test_add_shards_of_an_unreplicated_topic_is_unchanged(a: Applier) -> None:
    register(a, 1, 2)
    ok(a("topic.create", name="t", shards=1, engine="file", leader=2))
    ok(a("topic.add_shards", name="t", shards=3))
    assert shards(a, "t") == (ShardInfo(2, 1),) * 3


# ---- shard.set_isr -----------------------------------------------------------------------------


@pytest.fixture
def three(a: Applier) -> Applier:
    """Nodes 1..3; topic t (RF 3): shard 0 led by 1, shard 1 led by 2; unreplicated topic u."""
    register(a, 1, 2, 3)
    ok(a("topic.create", name="t", shards=2, engine="file", replication=3))
    ok(a("topic.create", name="u", shards=1, engine="file", leader=1))
    assert shards(a, "t") == (fresh((1, 2, 3)), fresh((2, 1, 3)))
    return a


def test_set_isr_shrinks_and_expands_in_replica_order(three: Applier) -> None:
    a = three
    assert ok(set_isr(a, "t", 1, [3, 2])) == 2
    assert shard(a, "t", 1) == R(2, 1, (2, 1, 3), (2, 3), 2)
    assert ok(set_isr(a, "t", 1, [2])) == 3
    assert shard(a, "t", 1) == R(2, 1, (2, 1, 3), (2,), 3)
    assert ok(set_isr(a, "t", 1, [1, 3, 2])) == 4
    assert shard(a, "t", 1) == R(2, 1, (2, 1, 3), (2, 1, 3), 4)
    # An unchanged ISR is still a new version (the command is what is fenced on).
    assert ok(set_isr(a, "t", 1, [2, 1, 3])) == 5
    assert shard(a, "t", 0) == fresh((1, 2, 3))  # the other shard is untouched


@pytest.mark.parametrize(
    ("topic", "index", "isr", "over", "message"),
    [
        ("nope", 0, [1], {"leader": 1, "epoch": 1, "version": 1},
         "shard.set_isr: topic 'nope' does not exist"),
        ("t", 2, [1], {"leader": 1, "epoch": 1, "version": 1},
         "shard.set_isr: shard 2 out of range for topic 't' (2 shards)"),
        ("u", 0, [1], {"leader": 1, "epoch": 1, "version": 1},
         "shard.set_isr: 'u'/0 is not replicated"),
        ("t", 0, [1], {"epoch": 0},
         "shard.set_isr: stale 't'/0 at epoch 0 version 1 (current 1/1)"),
        ("t", 0, [1], {"epoch": 2},
         "shard.set_isr: stale 't'/0 at epoch 2 version 1 (current 1/1)"),
        ("t", 0, [1], {"version": 0}, "shard.set_isr: stale 't'/0 at epoch 1 version 0"),
        ("t", 0, [1], {"version": 2}, "shard.set_isr: stale 't'/0 at epoch 1 version 2"),
        ("t", 0, [1, 2], {"leader": 2}, "shard.set_isr: node 2 does not lead 't'/0 (leader 1)"),
        ("t", 0, [1], {"leader": 4}, "shard.set_isr: node 4 does not lead 't'/0 (leader 1)"),
        ("t", 0, [2, 3], {}, "shard.set_isr: the isr must hold the leader 1"),
        ("t", 0, [1, 4], {}, "shard.set_isr: node 4 in the isr is not a replica of 't'/0"),
        ("t", 0, [1, 9], {}, "shard.set_isr: node 9 in the isr is not a replica of 't'/0"),
    ],
)
def test_set_isr_refusals(three: Applier, topic: str, index: int, isr: list[int],
                          over: dict[str, int], message: str) -> None:
    a = three
    register(a, 4)  # registered, but a replica of nothing
    before = a.sm.topics()
    if topic == "t" and index < 2:
        result = set_isr(a, topic, index, isr, **over)
    else:
        result = a("shard.set_isr", topic=topic, shard=index, isr=isr, **over)
    assert unchanged(a, result, before).startswith(message)


def test_set_isr_is_fenced_on_the_version_after_each_change(three: Applier) -> None:
    a = three
    ok(set_isr(a, "t", 0, [1, 2]))
    before = a.sm.topics()
    # A second command from the same (now stale) view is refused.
    stale = a("shard.set_isr", topic="t", shard=0, leader=1, epoch=1, version=1, isr=[1])
    assert "stale 't'/0 at epoch 1 version 1 (current 1/2)" in unchanged(a, stale, before)
    ok(elect(a, "t", 0, 2, [2]))
    # The old leader's view (epoch 1) is fenced too, even with the current version.
    stale = a("shard.set_isr", topic="t", shard=0, leader=1, epoch=1, version=3, isr=[1, 2])
    assert "stale" in unchanged(a, stale, a.sm.topics())


def test_set_isr_of_an_offline_shard_is_refused(three: Applier) -> None:
    a = three
    ok(elect(a, "t", 0, 0, [1, 2, 3]))
    before = a.sm.topics()
    assert "node 1 does not lead 't'/0 (leader 0)" in unchanged(a, set_isr(a, "t", 0, [1],
                                                                           leader=1), before)


# ---- shard.elect -------------------------------------------------------------------------------


def test_clean_election(three: Applier) -> None:
    a = three
    assert ok(elect(a, "t", 0, 2, [2, 3])) == 2
    assert shard(a, "t", 0) == R(2, 2, (1, 2, 3), (2, 3), 2)
    # Re-electing within the ISR, shrinking it, is clean too.
    assert ok(elect(a, "t", 0, 3, [3], unclean=False)) == 3
    assert shard(a, "t", 0) == R(3, 3, (1, 2, 3), (3,), 3)
    assert shard(a, "t", 1) == fresh((2, 1, 3))


def test_clean_election_refusals(three: Applier) -> None:
    a = three
    ok(set_isr(a, "t", 0, [1, 2]))
    before = a.sm.topics()
    assert "shard.elect: leader 3 is not in the isr [1, 2]" in unchanged(
        a, elect(a, "t", 0, 3, [1, 2]), before)
    assert "shard.elect: node 3 is not in the current isr [1, 2] (an unclean election must" in (
        unchanged(a, elect(a, "t", 0, 2, [2, 3]), before))
    assert "node 3 is not in the current isr" in unchanged(a, elect(a, "t", 0, 3, [3]), before)
    assert "node 3 is not in the current isr" in unchanged(
        a, elect(a, "t", 0, 3, [3], unclean=False), before)
    assert "node 9 in the isr is not a replica of 't'/0" in unchanged(
        a, elect(a, "t", 0, 9, [9], unclean=True), before)
    assert "leader 9 is not in the isr [1]" in unchanged(a, elect(a, "t", 0, 9, [1]), before)
    assert "stale 't'/0 at epoch 1 version 1 (current 1/2)" in unchanged(
        a, elect(a, "t", 0, 2, [2], version=1), before)
    assert "stale 't'/0 at epoch 2 version 2 (current 1/2)" in unchanged(
        a, elect(a, "t", 0, 2, [2], epoch=2), before)
    assert "stale" in unchanged(a, elect(a, "t", 0, 2, [2], epoch=0), before)
    assert "topic 'nope' does not exist" in unchanged(a, a(
        "shard.elect", topic="nope", shard=0, epoch=1, version=1, leader=1, isr=[1]), before)
    assert "shard 2 out of range for topic 't' (2 shards)" in unchanged(a, a(
        "shard.elect", topic="t", shard=2, epoch=1, version=1, leader=1, isr=[1]), before)
    assert "'u'/0 is not replicated" in unchanged(a, a(
        "shard.elect", topic="u", shard=0, epoch=1, version=0, leader=1, isr=[1]), before)


def test_unclean_election(three: Applier) -> None:
    a = three
    ok(set_isr(a, "t", 0, [1]))
    before = a.sm.topics()
    assert "an unclean election restarts the isr at the leader" in unchanged(
        a, elect(a, "t", 0, 2, [1, 2], unclean=True), before)
    assert "an unclean election restarts the isr at the leader" in unchanged(
        a, elect(a, "t", 0, 2, [2, 3], unclean=True), before)
    assert "leader 2 is not in the isr [3]" in unchanged(
        a, elect(a, "t", 0, 2, [3], unclean=True), before)
    assert ok(elect(a, "t", 0, 3, [3], unclean=True)) == 2
    assert shard(a, "t", 0) == R(3, 2, (1, 2, 3), (3,), 3)
    # An unclean election of an in-sync replica is allowed (and as fenced as a clean one).
    assert ok(elect(a, "t", 0, 3, [3], unclean=True)) == 3
    assert shard(a, "t", 0) == R(3, 3, (1, 2, 3), (3,), 4)


def test_offline_and_back_online(three: Applier) -> None:
    a = three
    ok(set_isr(a, "t", 0, [1, 3]))
    assert ok(elect(a, "t", 0, 0, [1, 3])) == 2
    assert shard(a, "t", 0) == R(0, 2, (1, 2, 3), (1, 3), 3)
    before = a.sm.topics()
    # Back online: only a member of the waiting ISR is a clean choice.
    assert "node 2 is not in the current isr [1, 3]" in unchanged(
        a, elect(a, "t", 0, 2, [2]), before)
    assert ok(elect(a, "t", 0, 3, [1, 3])) == 3
    assert shard(a, "t", 0) == R(3, 3, (1, 2, 3), (1, 3), 4)
    ok(set_isr(a, "t", 0, [1, 2, 3], leader=3))
    assert shard(a, "t", 0) == R(3, 3, (1, 2, 3), (1, 2, 3), 5)
    # Offline again, then an unclean election of a replica outside the waiting ISR.
    ok(elect(a, "t", 0, 0, [2]))
    assert shard(a, "t", 0) == R(0, 4, (1, 2, 3), (2,), 6)
    assert "node 1 is not in the current isr [2]" in unchanged(
        a, elect(a, "t", 0, 1, [1]), a.sm.topics())
    ok(elect(a, "t", 0, 1, [1], unclean=True))
    assert shard(a, "t", 0) == R(1, 5, (1, 2, 3), (1,), 7)


def test_election_of_an_unregistered_leader_is_refused(a: Applier) -> None:
    register(a, 1, 2)
    ok(a("topic.create", name="t", shards=1, engine="file", replication=2))
    ok(set_isr(a, "t", 0, [1]))
    ok(a("node.unregister", node_id=1))  # the last in-sync replica leaves: offline, waiting
    s = shard(a, "t", 0)
    assert (s.leader, s.replicas, s.isr) == (0, (1, 2), (1,)) and s.epoch > 1
    before = a.sm.topics()
    assert "shard.elect: node 1 is not registered" in unchanged(
        a, elect(a, "t", 0, 1, [1]), before)
    assert "node 1 is not registered" in unchanged(a, elect(a, "t", 0, 1, [1], unclean=True),
                                                   before)
    ok(elect(a, "t", 0, 0, [1]))  # staying offline needs no registered leader
    register(a, 1)  # back (a first registration: nothing to fence)
    assert shard(a, "t", 0).isr == (1,)
    ok(elect(a, "t", 0, 1, [1]))
    assert shard(a, "t", 0).leader == 1


# ---- fencing: re-registration and unregistration -----------------------------------------------


def test_reregistration_moves_leadership_and_leaves_shared_isrs(three: Applier) -> None:
    a = three
    epoch_before = a.sm.node(1).broker_epoch
    assert ok(a("node.register", node_id=1, addr="h:new")) == "updated"
    node = a.sm.node(1)
    assert node.addr == "h:new" and node.broker_epoch == a.sm.applied_index > epoch_before
    assert shards(a, "t") == (R(2, 2, (1, 2, 3), (2, 3), 2),  # led by 1: moves to 2
                              R(2, 1, (2, 1, 3), (2, 3), 2))  # followed by 1: leaves the ISR
    assert shards(a, "u") == (ShardInfo(1, 1),)  # unreplicated shards are not fenced


def test_reregistration_moves_leadership_to_the_next_in_sync_replica(three: Applier) -> None:
    a = three
    ok(elect(a, "t", 1, 3, [1, 3]))  # replicas (2, 1, 3), led by 3
    ok(a("node.register", node_id=3, addr="h:3"))
    assert shard(a, "t", 1) == R(1, 3, (2, 1, 3), (1,), 3)
    assert shard(a, "t", 0) == R(1, 1, (1, 2, 3), (1, 2), 2)


def test_reregistration_of_the_last_in_sync_leader_keeps_it_under_a_new_epoch(
        three: Applier) -> None:
    a = three
    ok(set_isr(a, "t", 0, [1]))
    ok(a("node.register", node_id=1, addr="h:1"))
    assert shard(a, "t", 0) == R(1, 2, (1, 2, 3), (1,), 3)
    ok(a("node.register", node_id=1, addr="h:1"))
    assert shard(a, "t", 0) == R(1, 3, (1, 2, 3), (1,), 4)


def test_reregistration_leaves_shards_it_is_not_in_sync_for_alone(three: Applier) -> None:
    a = three
    ok(set_isr(a, "t", 0, [1, 2]))  # 3 is out of sync on shard 0
    ok(elect(a, "t", 1, 0, [3]))  # shard 1 offline, waiting for its last in-sync replica 3
    before = a.sm.topics()
    ok(a("node.register", node_id=3, addr="h:3"))
    assert a.sm.topics() == before


def test_broker_epoch_is_the_index_of_the_latest_registration(a: Applier) -> None:
    register(a, 5)
    assert a.sm.node(5).broker_epoch == 1
    ok(a("config.put", key="k", value=1))
    register(a, 2, 5)
    assert [(n.node_id, n.broker_epoch) for n in a.sm.nodes()] == [(2, 3), (5, 4)]
    ok(a("node.unregister", node_id=5))
    register(a, 5)
    assert a.sm.node(5).broker_epoch == 6


def test_unregister_fences_replicated_shards(three: Applier) -> None:
    a = three
    ok(set_isr(a, "t", 1, [2]))  # 2 is the last in-sync replica of shard 1
    ok(a("topic.create", name="v", shards=2, engine="file", leader=2))
    before = shard(a, "t", 1)
    # Orphaned: shard t/1 (no other in-sync replica) and both shards of v.
    assert ok(a("node.unregister", node_id=2)) == 3
    assert shard(a, "t", 0) == R(1, 1, (1, 2, 3), (1, 3), 2)  # 2 leaves the ISR
    s = shard(a, "t", 1)
    assert (s.leader, s.replicas, s.isr) == (0, (2, 1, 3), (2,))  # offline, waiting for 2
    assert s.epoch > before.epoch and s.version > before.version
    assert shards(a, "v") == (ShardInfo(0, 2), ShardInfo(0, 2))
    # The leader of t/0 leaves: its leadership moves (not orphaned).
    assert ok(a("node.unregister", node_id=1)) == 1  # u/0
    assert shard(a, "t", 0) == R(3, 2, (1, 2, 3), (3,), 3)
    assert shards(a, "u") == (ShardInfo(0, 2),)
    # Node 2 comes back: nothing is fenced; a clean election brings t/1 back online.
    register(a, 2)
    assert shard(a, "t", 1) == s
    ok(elect(a, "t", 1, 2, [2]))
    assert shard(a, "t", 1).leader == 2


def test_set_leader_refuses_replicated_shards(three: Applier) -> None:
    a = three
    before = a.sm.topics()
    assert err(a("shard.set_leader", topic="t", shard=0, node_id=2)) == (
        "shard.set_leader: 't'/0 is replicated; use shard.elect")
    assert "is replicated" in err(a("shard.set_leader", topic="t", shard=1, node_id=1, epoch=9))
    assert a.sm.topics() == before
    assert ok(a("shard.set_leader", topic="u", shard=0, node_id=3)) == 2


# ---- snapshots ---------------------------------------------------------------------------------


def replicated_state() -> MetaStateMachine:
    a = Applier()
    register(a, 3, 1, 2)
    ok(a("topic.create", name="r", shards=3, engine="rocksdb", replication=2, config={"x": 1}))
    ok(a("topic.create", name="p", shards=2, engine="file", leader=3))
    ok(a("topic.create", name="q", shards=1, engine="memory"))
    ok(set_isr(a, "r", 0, [1]))
    ok(elect(a, "r", 1, 0, [3, 1]))
    ok(a("node.register", node_id=2, addr="h:2b"))
    ok(a("group.commit", group="g", offsets=[["r", 2, 5, "m"]]))
    ok(a("config.put", key="k", value="v"))
    return a.sm


def test_snapshot_round_trip_with_replicated_and_unreplicated_topics() -> None:
    sm = replicated_state()
    data = sm.snapshot()
    back = MetaStateMachine.restore(data)
    assert back.snapshot() == data and back.digest() == sm.digest()
    assert back.topics() == sm.topics() and back.nodes() == sm.nodes()
    assert back.applied_index == sm.applied_index
    assert back.committed("g") == sm.committed("g") and back.config() == sm.config()
    assert replicated_state().digest() == sm.digest()
    image = json.loads(data)
    topics = {t["name"]: t["shards"] for t in image["topics"]}
    # Replicated shards: [leader, epoch, replicas, isr, version]; others the old [leader, epoch].
    assert topics == {
        "p": [[3, 1], [3, 1]],
        "q": [[0, 0]],
        "r": [[1, 1, [1, 2], [1], 2], [0, 2, [3, 1], [3, 1], 2], [3, 2, [2, 3], [3], 2]],
    }
    assert [(n["node_id"], n["broker_epoch"]) for n in image["nodes"]] == [(1, 2), (2, 9),
                                                                          (3, 1)]
    # A restored machine continues exactly like the original.
    cmd = encode_command("shard.elect", topic="r", shard=1, epoch=2, version=2, leader=3,
                         isr=[3])
    assert sm.apply(sm.applied_index + 1, cmd) == back.apply(back.applied_index + 1, cmd)
    assert sm.digest() == back.digest()


def test_old_snapshots_stay_canonical() -> None:
    old = (b'{"applied_index":4,"config":{},"format":1,"nodes":[{"addr":"h:1","admin_addr":"",'
           b'"kafka_addr":"","mqtt_addr":"","node_id":1}],"topics":[{"config":{},"engine":"file",'
           b'"name":"t","shards":[[1,3],[0,0]]}]}')
    sm = MetaStateMachine.restore(old)
    assert sm.snapshot() == old
    assert sm.node(1).broker_epoch == 0
    assert sm.topic("t").shards == (ShardInfo(1, 3), ShardInfo(0, 0))


def _snapshot_with_shard(shard_json: str, nodes: str = "1,2") -> bytes:
    node_items = ",".join(
        f'{{"addr":"h","admin_addr":"","broker_epoch":{n},"kafka_addr":"","mqtt_addr":"",'
        f'"node_id":{n}}}' for n in nodes.split(",") if n)
    return (f'{{"applied_index":9,"config":{{}},"format":1,"nodes":[{node_items}],'
            f'"topics":[{{"config":{{}},"engine":"file","name":"t","shards":[{shard_json}]}}]}}'
            ).encode()


def test_hand_written_replicated_snapshot_restores() -> None:
    data = _snapshot_with_shard("[2,4,[2,1],[2,1],7]")
    sm = MetaStateMachine.restore(data)
    assert sm.topic("t").shards == (R(2, 4, (2, 1), (2, 1), 7),)
    assert sm.snapshot() == data
    assert MetaStateMachine.restore(_snapshot_with_shard("[0,4,[2,1],[1],7]")).topic(
        "t").shards == (R(0, 4, (2, 1), (1,), 7),)


@pytest.mark.parametrize(
    "shard_json",
    [
        "[1,1,[],[],0]",  # unreplicated in the long form: not canonical
        "[1,1,[],[],1]",  # ... and an unreplicated shard with a version
        "[1,1,[1,2],[2,1],1]",  # isr not in replica order
        "[1,1,[1,2],[1,3],1]",  # isr not a subset of the replicas
        "[1,1,[1,2],[1,1],1]",  # isr repeats a node
        "[1,1,[1,1],[1],1]",  # replicas repeat a node
        "[1,1,[1,2],[],1]",  # empty isr
        "[1,1,[1,2],[2],1]",  # leader outside the isr
        "[3,1,[1,3],[1,3],1]",  # leader not registered
        "[1,0,[1,2],[1,2],1]",  # a leader at epoch 0
        "[1,1,[1,2],[1,2]]",  # four elements
        "[1,1,[1,2]]",  # three elements
        "[1,1,[1,2],[1,2],1,0]",  # six elements
        "[1]",
        "[1,1,[1,2],[1,2],1.0]",  # a float version
        "[1,1,[1,2],[1,2],true]",  # a boolean version
        "[true,1,[1,2],[1,2],1]",  # a boolean leader
        '[1,1,[1,2],[1,"2"],1]',  # a string node id
        "[1,1,[1,2],null,1]",
        "[1,1,2,[1,2],1]",
        "{}",
    ],
)
def test_restore_rejects_bad_replicated_shards(shard_json: str) -> None:
    data = _snapshot_with_shard(shard_json)
    with pytest.raises(MetaError, match="bad meta snapshot"):
        MetaStateMachine.restore(data)


def test_restore_rejects_an_explicit_zero_broker_epoch() -> None:
    data = (b'{"applied_index":1,"config":{},"format":1,"nodes":[{"addr":"h","admin_addr":"",'
            b'"broker_epoch":0,"kafka_addr":"","mqtt_addr":"","node_id":1}],"topics":[]}')
    with pytest.raises(MetaError, match="not in canonical form"):
        MetaStateMachine.restore(data)


# ---- schema ------------------------------------------------------------------------------------

SET_ISR = {"topic": "t", "shard": 0, "leader": 1, "epoch": 1, "version": 1, "isr": [1]}
ELECT = {"topic": "t", "shard": 0, "epoch": 1, "version": 1, "leader": 1, "isr": [1]}
CREATE = {"name": "t", "shards": 1, "engine": "file"}


@pytest.mark.parametrize(
    ("op", "base", "over", "needle"),
    [
        ("shard.set_isr", SET_ISR, {"isr": []}, "field 'isr' must be a list of 1 to 16 node ids"),
        ("shard.set_isr", SET_ISR, {"isr": [1, 1]}, "field 'isr' must not repeat a node id"),
        ("shard.set_isr", SET_ISR, {"isr": [1, 2, 1]}, "must not repeat a node id, got [1, 2, 1]"),
        ("shard.set_isr", SET_ISR, {"isr": ["1"]}, "field 'isr' entry '1' must be a node id"),
        ("shard.set_isr", SET_ISR, {"isr": [1.0]}, "entry 1.0 must be a node id"),
        ("shard.set_isr", SET_ISR, {"isr": [True]}, "entry True must be a node id"),
        ("shard.set_isr", SET_ISR, {"isr": [None]}, "entry None must be a node id"),
        ("shard.set_isr", SET_ISR, {"isr": [[1]]}, "entry [1] must be a node id"),
        ("shard.set_isr", SET_ISR, {"isr": [0]}, "entry 0 must be a node id"),
        ("shard.set_isr", SET_ISR, {"isr": [-1]}, "entry -1 must be a node id"),
        ("shard.set_isr", SET_ISR, {"isr": [1 << 31]}, "must be a node id"),
        ("shard.set_isr", SET_ISR, {"isr": 1}, "field 'isr' must be a list"),
        ("shard.set_isr", SET_ISR, {"isr": {"1": 1}}, "field 'isr' must be a list"),
        ("shard.set_isr", SET_ISR, {"isr": list(range(1, REPLICAS_MAX + 2))},
         "must be a list of 1 to 16"),
        ("shard.set_isr", SET_ISR, {"leader": 0}, "field 'leader' must be in [1,"),
        ("shard.set_isr", SET_ISR, {"epoch": -1}, "field 'epoch' must be in [0,"),
        ("shard.set_isr", SET_ISR, {"version": "1"}, "field 'version' must be an integer"),
        ("shard.set_isr", SET_ISR, {"unclean": True}, "unknown field 'unclean'"),
        ("shard.elect", ELECT, {"isr": []}, "field 'isr' must be a list of 1 to 16"),
        ("shard.elect", ELECT, {"isr": [2, 2]}, "must not repeat a node id"),
        ("shard.elect", ELECT, {"isr": [0]}, "entry 0 must be a node id"),
        ("shard.elect", ELECT, {"isr": ["x"]}, "entry 'x' must be a node id"),
        ("shard.elect", ELECT, {"unclean": 1}, "field 'unclean' must be a boolean, got int"),
        ("shard.elect", ELECT, {"unclean": "true"}, "field 'unclean' must be a boolean, got str"),
        ("shard.elect", ELECT, {"unclean": None}, "field 'unclean' must be a boolean, got null"),
        ("shard.elect", ELECT, {"leader": -1}, "field 'leader' must be in [0,"),
        ("shard.elect", ELECT, {"leader": True}, "field 'leader' must be an integer, got bool"),
        ("topic.create", CREATE, {"replication": 0}, "field 'replication' must be in [1,"),
        ("topic.create", CREATE, {"replication": -2}, "field 'replication' must be in [1,"),
        ("topic.create", CREATE, {"replication": "3"}, "field 'replication' must be an integer"),
        ("topic.create", CREATE, {"replication": True}, "'replication' must be an integer, got "
         "bool"),
        ("topic.create", CREATE, {"replication": None}, "'replication' must be an integer, got "
         "null"),
    ],
)
def test_schema_refuses_malformed_replication_commands(
        op: str, base: dict[str, Any], over: dict[str, Any], needle: str) -> None:
    args = {**base, **over}
    message = check_command(op, args)
    assert message is not None and message.startswith(f"{op}: "), message
    assert needle in message, message
    with pytest.raises(MetaError) as info:
        encode_command(op, **args)
    assert str(info.value) == message
    data = json.dumps({"op": op, "args": args}).encode()
    decoded = decode_command(data)
    assert isinstance(decoded, MetaError) and str(decoded) == message
    # Applied from the log: refused, deterministically, with nothing changed but the index.
    sm = MetaStateMachine()
    assert err(sm.apply(1, data)) == message
    assert sm.snapshot() == MetaStateMachine.at_snapshot(1, b"").snapshot()


@pytest.mark.parametrize(
    ("op", "args", "needle"),
    [
        ("shard.set_isr", {k: v for k, v in SET_ISR.items() if k != "isr"}, "missing field 'isr'"),
        ("shard.set_isr", {k: v for k, v in SET_ISR.items() if k != "version"},
         "missing field 'version'"),
        ("shard.set_isr", {k: v for k, v in SET_ISR.items() if k != "leader"},
         "missing field 'leader'"),
        ("shard.elect", {k: v for k, v in ELECT.items() if k != "epoch"}, "missing field 'epoch'"),
        ("shard.elect", {k: v for k, v in ELECT.items() if k != "leader"},
         "missing field 'leader'"),
    ],
)
def test_schema_requires_the_fencing_fields(op: str, args: dict[str, Any], needle: str) -> None:
    message = check_command(op, args)
    assert message is not None and needle in message


def test_schema_accepts_the_boundaries() -> None:
    assert check_command("shard.set_isr", {**SET_ISR, "isr": list(range(1, 17))}) is None
    assert check_command("shard.set_isr", {**SET_ISR, "isr": [(1 << 31) - 1]}) is None
    assert check_command("shard.elect", {**ELECT, "leader": 0}) is None
    assert check_command("shard.elect", {**ELECT, "unclean": False}) is None
    assert check_command("topic.create", {**CREATE, "replication": 1}) is None
    # Equal commands are equal bytes, whatever the order the fields are given in.
    assert encode_command("shard.elect", **ELECT) == encode_command(
        "shard.elect", **dict(reversed(list(ELECT.items()))))


# ---- placement properties ----------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(st.sets(st.integers(1, 30), min_size=1, max_size=8), st.data())
def test_placement_balances_replicas_over_a_fixed_node_set(node_ids: set[int],
                                                           data: st.DataObject) -> None:
    a = Applier()
    register(a, *data.draw(st.permutations(sorted(node_ids)), label="registration order"))
    n = len(node_ids)
    for i in range(data.draw(st.integers(1, 5), label="topics")):
        rf = data.draw(st.integers(1, n), label="rf")
        count = data.draw(st.integers(1, 6), label="shards")
        ok(a("topic.create", name=f"t{i}", shards=count, engine="file", replication=rf))
        if data.draw(st.booleans(), label="grow"):
            count += data.draw(st.integers(1, 4), label="more")
            ok(a("topic.add_shards", name=f"t{i}", shards=count))
        placed = shards(a, f"t{i}")
        assert len(placed) == count
        for s in placed:
            check_placed(a.sm, s, rf)
        assert spread(replica_counts(a.sm)) <= 1, replica_counts(a.sm)
    rfs = {len(s.replicas) for t in a.sm.topics() for s in t.shards}
    if rfs == {1}:  # every replica leads
        assert lead_counts(a.sm) == replica_counts(a.sm)
    if rfs == {n}:  # every node holds everything: leadership rotates
        assert spread(lead_counts(a.sm)) <= 1, lead_counts(a.sm)
    assert MetaStateMachine.restore(a.sm.snapshot()).digest() == a.sm.digest()


# ---- bugs found by these tests, fixed: kept as regressions ---------------------------------


@pytest.mark.parametrize("path", ["set_isr", "unclean_offline"])
@pytest.mark.parametrize("fence", ["reregister", "unregister"])
def test_fencing_never_hands_leadership_to_an_unregistered_node(path: str, fence: str) -> None:
    a = Applier()
    register(a, 1, 2, 3)
    ok(a("topic.create", name="t", shards=1, engine="file", replication=3))
    ok(a("node.unregister", node_id=3))  # 3 leaves the ISR: (1, 2)
    if path == "set_isr":
        ok(set_isr(a, "t", 0, [1, 2]))
        a("shard.set_isr", topic="t", shard=0, leader=1, epoch=1, version=3, isr=[1, 3])
    else:
        a("shard.elect", topic="t", shard=0, epoch=1, version=2, leader=0, isr=[1, 3],
          unclean=True)
        a("shard.elect", topic="t", shard=0, epoch=2, version=3, leader=1, isr=[1, 3])
    # Whatever the two commands above did, fencing node 1 must keep the machine consistent.
    if fence == "reregister":
        ok(a("node.register", node_id=1, addr="h:1"))
    else:
        ok(a("node.unregister", node_id=1))
    s = shard(a, "t", 0)
    assert s.leader == 0 or a.sm.node(s.leader) is not None, s
    MetaStateMachine.restore(a.sm.snapshot())


def test_offline_election_cannot_add_out_of_sync_replicas(three: Applier) -> None:
    a = three
    ok(set_isr(a, "t", 0, [1]))
    before = a.sm.topics()
    unchanged(a, elect(a, "t", 0, 0, [1, 2, 3], unclean=True), before)


def test_replication_is_bounded_by_the_isr_size() -> None:
    assert check_command("topic.create", {**CREATE, "replication": REPLICAS_MAX + 1}) is not None
