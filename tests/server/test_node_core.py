"""NodeCore on its own (no host): inputs in, `ready()` out, over simulated devices."""

from __future__ import annotations

import random
import struct

from model.devices.fs import SimFileSystem
from model.host import sim_node_spec
from real.kafka import api
from real.kafka.codec import RequestHeader, decode_response, encode_request
from real.kafka.records import KRecord, build_batch
from real.server.node import NodeCore, NodeEnv, Proto
from real.server.raftlog import RaftLog
from real.server.storage import StorageSettings, engine_factories

TS = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        return self.now


def core_over(storage: StorageSettings) -> tuple[NodeCore, Clock]:
    fs = SimFileSystem(random.Random(1))
    clock = Clock()
    env = NodeEnv(raft_storage=RaftLog(fs, "meta"),
                  engines=engine_factories(storage, clock, fs=lambda: fs,
                                           kinds=("memory", "file")),
                  clock=clock, wall_clock=clock, rng=random.Random(2))
    return NodeCore(sim_node_spec(default_engine=storage.engine), env), clock


def request(core: NodeCore, conn: int, key: int, version: int, body: dict, corr: int) -> None:
    core.receive(conn, encode_request(RequestHeader(key, version, corr, "t"), body))


def replies(core: NodeCore, conn: int) -> list[tuple[int, bytes]]:
    out = []
    for conn_id, data, _close in core.ready().writes:
        assert conn_id == conn
        while data:
            size = 4 + struct.unpack(">i", data[:4])[0]
            out.append((struct.unpack(">i", data[4:8])[0], data[:size]))
            data = data[size:]
    return out


def test_a_produce_made_durable_inside_its_append_is_answered_at_once() -> None:
    """With fsync in place (no sync thread) a batch past group_commit_bytes is written and
    fdatasynced by the append itself: no group commit is due afterwards, so nothing but the
    input itself may release the held acks=1 reply (a node once waited for ever here)."""
    core, _clock = core_over(StorageSettings(engine="file", sync_thread=False,
                                             group_commit_bytes=1024))
    assert core.kafka_ready
    core.open(7, Proto.KAFKA, peer="t")
    request(core, 7, api.METADATA, 8, {"topics": [{"name": "t"}],
                                       "allow_auto_topic_creation": True,
                                       "include_cluster_authorized_operations": False,
                                       "include_topic_authorized_operations": False}, 1)
    assert [c for c, _ in replies(core, 7)] == [1]
    batch = build_batch([KRecord(-1, TS, None, b"x" * 4096, ())])
    request(core, 7, api.PRODUCE, 7, {"transactional_id": None, "acks": 1, "timeout_ms": 30_000,
                                      "topic_data": [{"name": "t", "partition_data": [
                                          {"index": 0, "records": batch}]}]}, 2)
    got = replies(core, 7)
    assert [c for c, _ in got] == [2], "the produce reply waited for a group commit never due"
    body = decode_response(api.PRODUCE, 7, got[0][1][4:])[1]
    part = body["responses"][0]["partition_responses"][0]
    assert part["error_code"] == 0 and part["base_offset"] == 0
    assert core.shards.durable_end("kafka:t:0") == 1
    core.invariants()


def test_a_held_reply_is_released_when_a_later_append_makes_it_durable() -> None:
    """Produce 1 waits for the group commit; produce 2 crosses group_commit_bytes, so its append
    writes and fdatasyncs everything pending, produce 1's batch included, and leaves no group
    commit due. Both replies must go out now, in order (a node once held the first one, and so
    the second behind it, until the client timed out)."""
    core, _clock = core_over(StorageSettings(engine="file", sync_thread=False,
                                             group_commit_bytes=8192))
    core.open(7, Proto.KAFKA, peer="t")
    request(core, 7, api.METADATA, 8, {"topics": [{"name": "t"}],
                                       "allow_auto_topic_creation": True,
                                       "include_cluster_authorized_operations": False,
                                       "include_topic_authorized_operations": False}, 1)
    assert [c for c, _ in replies(core, 7)] == [1]

    def produce(corr: int, size: int) -> None:
        batch = build_batch([KRecord(-1, TS, None, b"x" * size, ())])
        request(core, 7, api.PRODUCE, 7, {"transactional_id": None, "acks": 1,
                                          "timeout_ms": 30_000, "topic_data": [
                                              {"name": "t", "partition_data": [
                                                  {"index": 0, "records": batch}]}]}, corr)

    produce(2, 100)
    assert replies(core, 7) == [], "held: the first batch is not durable yet"
    assert core.shards.next_flush_ms() is not None
    produce(3, 16_384)
    assert core.shards.durable_end("kafka:t:0") == 2
    assert core.shards.next_flush_ms() is None, "nothing left for a group commit to release"
    assert [c for c, _ in replies(core, 7)] == [2, 3]
    core.invariants()


def follower_core(timeout_ticks: int) -> tuple[NodeCore, Clock]:
    """Node 1 of a 3-node meta group (peers never answer), 1-ms ticks, a fixed election
    timeout of `timeout_ticks`, no pre-vote (so a timeout starts a real election)."""
    import dataclasses

    fs = SimFileSystem(random.Random(1))
    clock = Clock()
    storage = StorageSettings(engine="memory")
    env = NodeEnv(raft_storage=RaftLog(fs, "meta"),
                  engines=engine_factories(storage, clock, fs=lambda: fs,
                                           kinds=("memory", "file")),
                  clock=clock, wall_clock=clock, rng=random.Random(2))
    spec = sim_node_spec(voters=(1, 2, 3), tick_ms=1, default_engine="memory")
    raft = dataclasses.replace(spec.raft, election_tick_min=timeout_ticks,
                               election_tick_max=timeout_ticks, heartbeat_tick=1,
                               pre_vote=False)
    return NodeCore(dataclasses.replace(spec, raft=raft), env), clock


def test_a_host_sleeping_until_the_deadline_gets_every_skipped_tick() -> None:
    """Idle ticks skipped on purpose (the host sleeps until next_deadline_ms) are all delivered
    at the wake-up: a 150-tick election timeout fires after exactly 150 ms (it once lost all but
    64 of them per wake-up and fired 250 ms late)."""
    core, clock = follower_core(150)
    start, term = clock.now, core.replica.raft.term
    while core.replica.raft.term == term:
        clock.now = core.next_deadline_ms()
        core.tick()
    assert clock.now - start == 150
    assert core.replica.raft.term == term + 1


def test_a_stalled_host_fires_one_election_not_several() -> None:
    """A host that wakes 100 election timeouts late delivers the ticks up to the due one plus at
    most TICKS_PER_WAKE_MAX: one election, not a hundred."""
    from real.server.node import TICKS_PER_WAKE_MAX

    core, clock = follower_core(20)
    term = core.replica.raft.term
    clock.now += 100 * 20
    core.tick()
    # the due tick starts election 1; the TICKS_PER_WAKE_MAX after it time out a few more
    elections = core.replica.raft.term - term
    assert 1 <= elections <= 1 + TICKS_PER_WAKE_MAX // 20


def test_a_batch_of_inputs_is_settled_once_with_one_raft_fsync() -> None:
    """Proposals given inside `batch()` share one Ready and one fdatasync of the Raft log (a
    host feeding a burst this way keeps up with a proposal storm; one fsync per proposal did
    not, and a stale leader's queue grew without end in the simulator)."""
    from real.meta import encode_command

    core, _clock = core_over(StorageSettings(engine="memory"))
    fs = core.env.raft_storage.fs
    results: list[object] = []

    def propose(i: int) -> None:
        core.propose(encode_command("config.put", key=f"k{i}", value=i), results.append)

    before = fs.stats.syncs
    propose(0)
    assert fs.stats.syncs - before == 1 and len(results) == 1
    before = fs.stats.syncs
    with core.batch():
        for i in range(1, 6):
            propose(i)
        assert results == results[:1]  # nothing settled inside the batch
    assert fs.stats.syncs - before == 1
    assert len(results) == 6 and all(getattr(r, "ok", False) for r in results)


def test_with_bridge_rules_mqtt_waits_for_the_bridge_topics_like_kafka() -> None:
    """A node with bridge rules accepts MQTT only once its bridge's Kafka topics exist (no
    leader among three voters here: never); without rules MQTT is accepted at once."""
    import dataclasses

    from real.kafka.bridge import BridgeRule

    def core(bridges: tuple[BridgeRule, ...]) -> NodeCore:
        fs = SimFileSystem(random.Random(1))
        clock = Clock()
        storage = StorageSettings(engine="memory")
        env = NodeEnv(raft_storage=RaftLog(fs, "meta"),
                      engines=engine_factories(storage, clock, fs=lambda: fs,
                                               kinds=("memory", "file")),
                      clock=clock, wall_clock=clock, rng=random.Random(2))
        spec = sim_node_spec(voters=(1, 2, 3), default_engine="memory")
        return NodeCore(dataclasses.replace(spec, bridges=bridges), env)

    plain = core(())
    assert plain.accepting(Proto.MQTT) and not plain.accepting(Proto.KAFKA)
    bridged = core((BridgeRule("s/#", "s"),))
    assert not bridged.accepting(Proto.MQTT) and not bridged.accepting(Proto.KAFKA)
    single, _clock = core_over(StorageSettings(engine="memory"))
    assert single.kafka_ready and single.accepting(Proto.MQTT) and single.accepting(Proto.KAFKA)
