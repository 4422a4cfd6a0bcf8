"""NodeCore on its own (no host): inputs in, `ready()` out, over simulated devices."""

from __future__ import annotations

import random
import struct

from model.fs import SimFileSystem
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
