"""Shard replication across three in-process `NodeCore`s: placement, acks=all waiting for the
in-sync set, ISR shrink, failover by the controller, truncation of a divergent tail, fencing of
a restarted node, reads up to the high watermark, idempotent retries across a leader change.

The harness is deterministic and has no host: one fake clock, a message bus with cut links,
group commits run at once (file engines over simulated disks), Kafka requests built with the
real codec.
"""

from __future__ import annotations

import dataclasses
import random
import struct
from typing import Any

import pytest

from model.devices.fs import SimFileSystem
from model.devices.objstore import SimObjectStore
from model.host import sim_node_spec
from real.kafka import api
from real.kafka import errors as E
from real.kafka.broker import KafkaConfig
from real.kafka.codec import RequestHeader, decode_response, encode_request
from real.kafka.records import KRecord, build_batch, decode_batches
from real.raft.types import Message, Role
from real.server.node import NodeCore, NodeEnv, Proto
from real.server.peermsg import PeerMessage, ShardFetch, ShardFetchReply
from real.server.raftlog import RaftLog
from real.server.replication import ACK_GRACE_MS
from real.server.storage import StorageSettings, engine_factories

IDS = (1, 2, 3)
TS = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        return self.now


class Cluster:
    """Three nodes; `cut` links drop messages (both ways); a `down` node gets nothing and
    does nothing; `settle()` runs everything to quiescence at the current time."""

    def __init__(self, engine: str = "file", ids: tuple[int, ...] = IDS,
                 node_config: dict[str, Any] | None = None, **kafka: Any) -> None:
        self.clock = Clock()
        self.node_config = dict(node_config or {})
        """`NodeConfig` overrides for every node (e.g. mqtt_cluster=True)."""
        self.ids = ids
        self.fs = {n: SimFileSystem(random.Random(n)) for n in ids}
        self.kafka = KafkaConfig(default_partitions=3, default_replication_factor=3,
                                 min_insync_replicas=2, **kafka)
        self.engine = engine
        self.store = SimObjectStore(random.Random(99))
        """The one object store every node shares (S3 shards)."""
        self.cores: dict[int, NodeCore] = {}
        self.down: set[int] = set()
        self.cut: set[frozenset[int]] = set()
        self.inbox: list[Message | PeerMessage] = []
        self.writes: dict[int, list[bytes]] = {}
        self.sent: list[Message | PeerMessage] = []
        self.hold: set[tuple[int, int]] = set()
        """(src, dst) links whose fetch replies wait in `held` until `release()`."""
        self.held: list[Message | PeerMessage] = []
        self.commit_cap: dict[int, int] = {}
        """Node -> the highest commit index the Raft messages it receives may carry: it stores
        and acknowledges the meta leader's entries, and applies none past the cap (a follower
        that has not heard of the commit yet)."""
        self.members: dict[int, tuple[tuple[int, str], ...]] = {}
        """The last peer set each node asked its host for (`NodeReady.members`)."""
        for n in ids:
            self.start(n)
        self.cores[1].campaign()
        self.settle()
        self.run_until(lambda: all(c.registered for c in self.cores.values()), 2_000)

    def start(self, n: int, join: bool = False) -> None:
        """Start node `n` (again) on its disk; `join`: a node outside the initial
        configuration, started blank to be added (`NodeCore.add_member`)."""
        storage = StorageSettings(engine=self.engine, sync_thread=True,
                                  s3_local_prefix=f"n{n}")
        fs = self.fs.setdefault(n, SimFileSystem(random.Random(n)))
        env = NodeEnv(raft_storage=RaftLog(fs, "meta"),
                      engines=engine_factories(storage, self.clock, fs=lambda: fs,
                                               store=lambda: self.store,
                                               kinds=("memory", "file", "s3")),
                      clock=self.clock, wall_clock=self.clock, rng=random.Random(10 + n))
        spec = dataclasses.replace(sim_node_spec(n, voters=self.ids, kafka=self.kafka,
                                                 default_engine=self.engine,
                                                 cluster_join=join, **self.node_config),
                                   tick_ms=1)
        self.cores[n] = NodeCore(spec, env)
        self.down.discard(n)

    def crash(self, n: int) -> None:
        """Power loss: the object is dropped, unsynced file data is lost."""
        del self.cores[n]
        self.down.add(n)
        self.fs[n].crash()

    def settle(self) -> None:
        for _ in range(10_000):
            busy = False
            for n in sorted(self.cores):
                if n in self.down:
                    continue
                core = self.cores[n]
                rd = core.ready()
                for sync in rd.syncs:
                    sync.job.sync()
                    core.synced(sync.token, None)
                    busy = True
                for conn, data, _close in rd.writes:
                    self.writes.setdefault(conn, []).append(data)
                self.inbox.extend(rd.messages)
                if rd.members is not None:
                    self.members[n] = rd.members
                busy = busy or bool(rd.messages) or bool(rd.syncs)
            if self.inbox:
                batch, self.inbox = self.inbox, []
                for msg in batch:
                    if (msg.src, msg.dst) in self.hold and isinstance(msg, ShardFetchReply):
                        self.held.append(msg)
                        continue
                    cap = self.commit_cap.get(msg.dst)
                    if cap is not None and isinstance(msg, Message) and msg.commit > cap:
                        msg = dataclasses.replace(msg, commit=cap)
                    self.sent.append(msg)
                    if (msg.dst in self.down or msg.dst not in self.cores
                            or frozenset((msg.src, msg.dst)) in self.cut):
                        continue
                    self.cores[msg.dst].step(msg)
                busy = True
            if not busy:
                for core in self.cores.values():
                    core.invariants()
                return
        raise AssertionError("no quiescence")

    def release(self, dst: int | None = None) -> None:
        """Deliver the held messages (to `dst` only, if given) now; the links stay slow."""
        held: list[Message | PeerMessage] = []
        keep: list[Message | PeerMessage] = []
        for msg in self.held:
            (held if dst is None or msg.dst == dst else keep).append(msg)
        self.held = keep
        for msg in held:
            self.sent.append(msg)
            if (msg.dst in self.down or msg.dst not in self.cores
                    or frozenset((msg.src, msg.dst)) in self.cut):
                continue
            self.cores[msg.dst].step(msg)
        self.settle()

    def advance(self, ms: int) -> None:
        """Move time forward `ms`, ticking every node each millisecond."""
        for _ in range(ms):
            self.clock.now += 1
            for n in sorted(self.cores):
                self.cores[n].tick()
            self.settle()

    def run_until(self, cond: Any, limit_ms: int) -> int:
        for waited in range(limit_ms):
            if cond():
                return waited
            self.advance(1)
        raise AssertionError(f"condition not met within {limit_ms} ms")

    def meta_leader(self) -> int:
        """The meta leader of the highest term (a cut-off old leader may not know yet)."""
        leaders = [n for n, c in self.cores.items() if c.replica.raft.role is Role.LEADER]
        return max(leaders, key=lambda n: self.cores[n].replica.raft.term)

    def meta_ok(self, among: list[int] | None = None) -> bool:
        """Exactly one meta leader among `among` (default: the live nodes)."""
        nodes = among or list(self.cores)
        return sum(1 for n in nodes if n in self.cores
                   and self.cores[n].replica.raft.role is Role.LEADER) == 1

    def shard(self, topic: str, p: int) -> Any:
        return self.cores[self.meta_leader()].replica.sm.topic(topic).shards[p]

    # ---- a minimal Kafka client --------------------------------------------------------------

    def call(self, node: int, key: int, version: int, body: dict, conn: int | None = None,
             settle: bool = True) -> int:
        conn = conn or node * 100
        core = self.cores[node]
        if conn not in core._conns:
            core.open(conn, Proto.KAFKA, peer="t")
        self._corr = getattr(self, "_corr", 0) + 1
        core.receive(conn, encode_request(RequestHeader(key, version, self._corr, "t"), body))
        if settle:
            self.settle()
        return self._corr

    def answers(self, conn: int, key: int, version: int) -> dict[int, dict]:
        out = {}
        for data in self.writes.pop(conn, []):
            while data:
                size = 4 + struct.unpack(">i", data[:4])[0]
                corr = struct.unpack(">i", data[4:8])[0]
                out[corr] = decode_response(key, version, data[4:size])[1]
                data = data[size:]
        return out

    def create(self, node: int, topic: str, partitions: int = 3, rf: int = 3,
               **config: str) -> None:
        self.call(node, api.CREATE_TOPICS, 4, {"topics": [
            {"name": topic, "num_partitions": partitions, "replication_factor": rf,
             "assignments": [], "configs": [{"name": k.replace("_", "."), "value": v}
                                            for k, v in config.items()]}],
            "timeout_ms": 1000, "validate_only": False})
        (body,) = self.answers(node * 100, api.CREATE_TOPICS, 4).values()
        assert body["topics"][0]["error_code"] == 0, body

    def produce(self, node: int, topic: str, p: int, values: list[bytes], acks: int = -1,
                pid: int = -1, seq: int = 0, timeout_ms: int = 30_000,
                conn: int | None = None) -> int:
        batch = build_batch([KRecord(-1, TS, None, v, ()) for v in values], producer_id=pid,
                            producer_epoch=0 if pid >= 0 else -1,
                            base_sequence=seq if pid >= 0 else -1)
        return self.call(node, api.PRODUCE, 7, {
            "transactional_id": None, "acks": acks, "timeout_ms": timeout_ms,
            "topic_data": [{"name": topic, "partition_data": [{"index": p,
                                                               "records": batch}]}]},
            conn=conn)

    def produce_result(self, node: int, corr: int, conn: int | None = None) -> dict | None:
        got = self.answers(conn or node * 100, api.PRODUCE, 7)
        self.pending = getattr(self, "pending", {})
        self.pending.update(got)
        body = self.pending.pop(corr, None)
        return None if body is None else body["responses"][0]["partition_responses"][0]

    def pending_result(self, node: int, corr: int) -> bool:
        """Whether the produce `corr` on `node`'s default connection has been answered."""
        got = self.answers(node * 100, api.PRODUCE, 7)
        self.pending = getattr(self, "pending", {})
        self.pending.update(got)
        return corr in self.pending

    def fetch(self, node: int, topic: str, p: int, offset: int = 0) -> tuple[int, int, list]:
        corr = self.call(node, api.FETCH, 11, {
            "replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20,
            "isolation_level": 0, "session_id": 0, "session_epoch": -1,
            "topics": [{"topic": topic, "partitions": [{
                "partition": p, "current_leader_epoch": -1, "fetch_offset": offset,
                "log_start_offset": -1, "partition_max_bytes": 1 << 20}]}],
            "forgotten_topics_data": [], "rack_id": ""}, conn=node * 100 + 1)
        body = self.answers(node * 100 + 1, api.FETCH, 11)[corr]
        part = body["responses"][0]["partitions"][0]
        values = [r.value for r in decode_batches(part["records"] or b"")]
        return part["error_code"], part["high_watermark"], values


def ok_base(result: dict | None) -> int:
    assert result is not None, "no answer yet"
    assert result["error_code"] == 0, result
    return int(result["base_offset"])


@pytest.fixture
def c() -> Cluster:
    cluster = Cluster()
    cluster.create(2, "t")
    cluster.settle()
    return cluster


def test_placement_spreads_leaders_and_metadata_shows_replicas_and_isr(c: Cluster) -> None:
    shards = [c.shard("t", p) for p in range(3)]
    assert sorted(s.leader for s in shards) == [1, 2, 3]
    assert all(sorted(s.replicas) == [1, 2, 3] and sorted(s.isr) == [1, 2, 3] for s in shards)
    corr = c.call(3, api.METADATA, 8, {"topics": [{"name": "t"}],
                                       "allow_auto_topic_creation": False,
                                       "include_cluster_authorized_operations": False,
                                       "include_topic_authorized_operations": False})
    body = c.answers(300, api.METADATA, 8)[corr]
    assert [b["node_id"] for b in body["brokers"]] == [1, 2, 3]
    parts = body["topics"][0]["partitions"]
    assert [p["leader_id"] for p in parts] == [s.leader for s in shards]
    assert [p["leader_epoch"] for p in parts] == [1, 1, 1]
    assert all(len(p["isr_nodes"]) == 3 for p in parts)


def test_only_the_leader_takes_produce_and_fetch(c: Cluster) -> None:
    leader = c.shard("t", 0).leader
    other = next(n for n in IDS if n != leader)
    corr = c.produce(other, "t", 0, [b"x"])
    assert c.produce_result(other, corr)["error_code"] == E.NOT_LEADER_OR_FOLLOWER
    assert c.fetch(other, "t", 0)[0] == E.NOT_LEADER_OR_FOLLOWER
    corr = c.produce(leader, "t", 0, [b"x"])
    c.advance(5)
    assert ok_base(c.produce_result(leader, corr)) == 0


def test_acks_all_waits_for_the_isr_and_consumers_see_only_committed(c: Cluster) -> None:
    leader = c.shard("t", 0).leader
    followers = [n for n in IDS if n != leader]
    c.cut = {frozenset((leader, followers[0])), frozenset((leader, followers[1]))}
    corr = c.produce(leader, "t", 0, [b"a", b"b"])
    c.advance(50)
    assert c.produce_result(leader, corr) is None, "acked before any follower has it"
    err, hw, values = c.fetch(leader, "t", 0)
    assert (err, hw, values) == (0, 0, []), "a consumer saw an uncommitted record"
    corr1 = c.produce(leader, "t", 0, [b"c"], acks=1, conn=999)  # its own connection
    c.advance(5)
    assert ok_base(c.produce_result(leader, corr1, conn=999)) == 2, \
        "acks=1 waits only for the leader"
    c.cut = set()  # the lost fetches are re-sent after fetch_timeout_ms
    c.run_until(lambda: c.produce_result(leader, corr) is not None, 2_000)
    assert c.fetch(leader, "t", 0) == (0, 3, [b"a", b"b", b"c"])
    c.answers(leader * 100, api.PRODUCE, 7)
    for n in followers:  # byte-identical replicas
        log = c.cores[n].kafka.replica_log("t", 0)
        assert log.read_shard(0, 1 << 20) == c.cores[leader].kafka.replica_log(
            "t", 0).read_shard(0, 1 << 20)


def test_a_lagging_follower_leaves_the_isr_through_meta_then_comes_back(c: Cluster) -> None:
    """The follower is cut from its leader only (it still heartbeats to the meta leader): the
    leader shrinks it after replica_lag_ms, not earlier, and adds it back once it caught up."""
    meta = c.meta_leader()
    p = next(p for p in range(3) if c.shard("t", p).leader != meta)
    leader = c.shard("t", p).leader
    lagging = next(n for n in IDS if n not in (leader, meta))
    c.cut = {frozenset((leader, lagging))}
    corr = c.produce(leader, "t", p, [b"a"])
    lag = c.cores[leader].spec.replication.replica_lag_ms
    waited = c.run_until(lambda: c.pending_result(leader, corr), lag + 500)
    assert waited >= lag - 100, "acks=all acknowledged without the lagging in-sync follower"
    assert lagging not in c.shard("t", p).isr
    assert c.cores[leader].replicator.stats.isr_shrinks == 1
    c.cut = set()
    c.run_until(lambda: lagging in c.shard("t", p).isr, 3_000)
    assert c.cores[lagging].kafka.replica_log("t", p).shard_end == 1


def test_min_insync_refuses_acks_all_but_not_acks_1() -> None:
    c = Cluster()
    c.create(2, "strict", min_insync_replicas="3")
    c.settle()
    meta = c.meta_leader()
    p = next(p for p in range(3) if c.shard("strict", p).leader == meta)
    dead = next(n for n in IDS if n != meta)
    c.crash(dead)
    c.run_until(lambda: dead not in c.shard("strict", p).isr, 3_000)  # the controller
    corr = c.produce(meta, "strict", p, [b"x"])
    assert c.produce_result(meta, corr)["error_code"] == E.NOT_ENOUGH_REPLICAS
    corr = c.produce(meta, "strict", p, [b"y"], acks=1)
    c.advance(5)
    assert ok_base(c.produce_result(meta, corr)) == 0
    assert c.fetch(meta, "strict", p)[2] == [b"y"]


def test_leader_death_moves_leadership_and_keeps_every_acknowledged_record(c: Cluster) -> None:
    leader = c.shard("t", 0).leader
    acked = []
    for i in range(5):
        corr = c.produce(leader, "t", 0, [b"v%d" % i])
        c.advance(5)
        ok_base(c.produce_result(leader, corr))
        acked.append(b"v%d" % i)
    # an acks=1 write the followers never get, then the leader dies
    c.cut = {frozenset((leader, n)) for n in IDS if n != leader}
    corr = c.produce(leader, "t", 0, [b"lost"], acks=1)
    c.advance(2)
    ok_base(c.produce_result(leader, corr))
    c.crash(leader)
    c.cut = set()
    session = c.cores[c.meta_leader() if leader != 1 else 2].spec.controller.session_timeout_ms
    took = c.run_until(lambda: c.meta_ok() and c.shard("t", 0).leader not in (0, leader),
                       session + 2_000)
    assert took <= session + 1_000
    new = c.shard("t", 0).leader
    assert leader not in c.shard("t", 0).isr
    assert c.fetch(new, "t", 0)[2] == acked
    corr = c.produce(new, "t", 0, [b"after"])
    c.advance(10)
    ok_base(c.produce_result(new, corr))
    # the old leader comes back: fenced (new broker epoch), follows, sheds its divergent tail
    c.start(leader)
    c.run_until(lambda: leader in c.shard("t", 0).isr, 5_000)
    log = c.cores[leader].kafka.replica_log("t", 0)
    assert log.read_shard(0, 1 << 20) == c.cores[new].kafka.replica_log("t", 0).read_shard(
        0, 1 << 20)
    assert c.cores[leader].replicator.stats.truncations >= 0
    values = c.fetch(c.shard("t", 0).leader, "t", 0)[2]
    assert values[:len(acked)] == acked and b"lost" not in values and b"after" in values


def test_a_divergent_tail_is_truncated_by_leader_epoch(c: Cluster) -> None:
    """The leader takes acks=1 writes while cut off from both followers, whose controller moves
    leadership; on return the old leader must drop exactly those writes (KIP-101)."""
    leader = c.shard("t", 1).leader
    corr = c.produce(leader, "t", 1, [b"base"])
    c.advance(5)
    ok_base(c.produce_result(leader, corr))
    c.cut = {frozenset((leader, n)) for n in IDS if n != leader}
    for i in range(3):
        corr = c.produce(leader, "t", 1, [b"stray%d" % i], acks=1)
        c.advance(5)
        ok_base(c.produce_result(leader, corr))
    rest = [n for n in IDS if n != leader]
    c.run_until(lambda: c.meta_ok(rest) and c.shard("t", 1).leader in rest, 5_000)
    new = c.shard("t", 1).leader
    corr = c.produce(new, "t", 1, [b"new1", b"new2"])
    c.advance(10)
    ok_base(c.produce_result(new, corr))
    c.cut = set()
    c.run_until(lambda: c.cores[leader].replicator.stats.truncations > 0, 3_000)
    c.advance(50)
    old_log = c.cores[leader].kafka.replica_log("t", 1)
    new_log = c.cores[new].kafka.replica_log("t", 1)
    assert old_log.read_shard(0, 1 << 20) == new_log.read_shard(0, 1 << 20)
    assert old_log.epoch_runs() == new_log.epoch_runs()


def test_an_idempotent_retry_after_failover_is_not_duplicated(c: Cluster) -> None:
    leader = c.shard("t", 2).leader
    corr = c.produce(leader, "t", 2, [b"once"], pid=42, seq=0)
    c.advance(5)
    base = ok_base(c.produce_result(leader, corr))
    c.crash(leader)
    c.run_until(lambda: c.meta_ok() and c.shard("t", 2).leader not in (0, leader), 5_000)
    new = c.shard("t", 2).leader
    corr = c.produce(new, "t", 2, [b"once"], pid=42, seq=0)  # the client's retry
    c.advance(5)
    assert ok_base(c.produce_result(new, corr)) == base
    assert c.fetch(new, "t", 2)[2] == [b"once"]


def test_a_node_named_leader_before_it_knows_takes_a_pipelined_producer_in_order(
        c: Cluster) -> None:
    """The client learns "node N leads" from a node whose meta is ahead of N's and sends its
    pipelined retries to N before N has applied the election. Answered NOT_LEADER at once, the
    next request finds N leading and gets OUT_OF_ORDER_SEQUENCE (librdkafka then bumps its
    epoch and re-sends records N already has: the chaos suite's duplicates). N holds them
    behind a meta read barrier instead and takes them in order once it leads."""
    p = 0
    old, new, meta = c.shard("t", p).isr  # the controller elects the first live in-sync one
    if c.meta_leader() != meta:  # meta's leader: the node that is neither
        c.cores[c.meta_leader()].replica.raft.transfer_leadership(meta)
        c.run_until(lambda: c.meta_leader() == meta and c.meta_ok(), 500)
    corr = c.produce(old, "t", p, [b"a"], pid=42, seq=0)
    c.advance(5)
    assert ok_base(c.produce_result(old, corr)) == 0
    c.run_until(lambda: c.cores[new].kafka.replica_log("t", p).shard_end > 0, 100)
    c.commit_cap[new] = c.cores[new].replica.raft.commit
    c.crash(old)
    c.cores[meta].peer_gone(old)
    c.run_until(lambda: c.shard("t", p).leader == new, 100)
    assert not c.cores[new].replicator.leads_shard("t", p), "the new leader applied it already"
    conn = 4242
    first = c.produce(new, "t", p, [b"a"], pid=42, seq=0, conn=conn)  # the retry
    second = c.produce(new, "t", p, [b"b"], pid=42, seq=1, conn=conn)
    c.advance(20)
    assert c.produce_result(new, first, conn=conn) is None, "answered before N caught up"
    del c.commit_cap[new]  # the commit reaches N
    c.run_until(lambda: c.cores[new].replicator.leads_shard("t", p), 100)
    third = c.produce(new, "t", p, [b"c"], pid=42, seq=2, conn=conn)
    results: dict[int, dict] = {}

    def answered() -> bool:
        results.update(c.answers(conn, api.PRODUCE, 7))
        return all(k in results for k in (first, second, third))
    c.run_until(answered, 500)
    parts = [results[k]["responses"][0]["partition_responses"][0] for k in (first, second, third)]
    assert [ok_base(r) for r in parts] == [0, 1, 2], parts  # the retry was a duplicate of 0
    assert c.fetch(new, "t", p)[2] == [b"a", b"b", b"c"]
    assert c.cores[new].kafka.stats.produce_barriers == 1
    assert c.cores[new].kafka.stats.produce_barrier_timeouts == 0


def test_a_produce_barrier_no_meta_leader_confirms_answers_not_leader_after_its_timeout(
        c: Cluster) -> None:
    """A replica that does not lead gets a Produce: it waits for a read barrier; when none comes
    (its meta leader is cut off), it answers NOT_LEADER after `leader_barrier_ms`, not later."""
    meta = c.meta_leader()
    p = next(p for p in range(3) if c.shard("t", p).leader == meta)
    other = next(n for n in IDS if n != meta)
    c.cut = {frozenset((meta, other))}
    corr = c.produce(other, "t", p, [b"x"])
    wait = c.cores[other].spec.kafka.leader_barrier_ms
    took = c.run_until(lambda: c.pending_result(other, corr), wait + 50)
    assert wait - 1 <= took <= wait + 1, took
    assert c.produce_result(other, corr)["error_code"] == E.NOT_LEADER_OR_FOLLOWER
    assert c.cores[other].kafka.stats.produce_barrier_timeouts == 1


def test_leader_epochs_answer_offset_for_leader_epoch_and_fence_stale_fetches(c: Cluster) -> None:
    leader = c.shard("t", 0).leader
    for i in range(2):
        corr = c.produce(leader, "t", 0, [b"e1-%d" % i])
        c.advance(5)
        ok_base(c.produce_result(leader, corr))
    c.crash(leader)
    c.run_until(lambda: c.meta_ok() and c.shard("t", 0).leader not in (0, leader), 5_000)
    new, epoch = c.shard("t", 0).leader, c.shard("t", 0).epoch
    assert epoch == 2
    corr = c.produce(new, "t", 0, [b"e2"])
    c.advance(5)
    ok_base(c.produce_result(new, corr))

    def ask(leader_epoch: int, current: int = -1) -> dict:
        corr = c.call(new, api.OFFSET_FOR_LEADER_EPOCH, 3, {"replica_id": -1, "topics": [
            {"topic": "t", "partitions": [{"partition": 0, "current_leader_epoch": current,
                                           "leader_epoch": leader_epoch}]}]}, conn=new * 100 + 2)
        body = c.answers(new * 100 + 2, api.OFFSET_FOR_LEADER_EPOCH, 3)[corr]
        return body["topics"][0]["partitions"][0]

    assert (ask(1)["leader_epoch"], ask(1)["end_offset"]) == (1, 2)  # epoch 1 ended at 2
    assert (ask(2)["leader_epoch"], ask(2)["end_offset"]) == (2, 3)  # current: the log end
    # an epoch this leader has not reached: it is behind the client (a retriable error, not
    # "undefined", which librdkafka takes for a truncation and resets the position for)
    assert (ask(3)["error_code"], ask(3)["end_offset"]) == (E.UNKNOWN_LEADER_EPOCH, -1)
    # older than every stored epoch: it ends where the earliest stored one starts (as Kafka)
    assert (ask(0)["error_code"], ask(0)["leader_epoch"], ask(0)["end_offset"]) == (0, 0, 0)
    assert ask(1, current=1)["error_code"] == E.FENCED_LEADER_EPOCH
    assert ask(1, current=3)["error_code"] == E.UNKNOWN_LEADER_EPOCH
    corr = c.call(new, api.FETCH, 11, {
        "replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20,
        "isolation_level": 0, "session_id": 0, "session_epoch": -1,
        "topics": [{"topic": "t", "partitions": [{
            "partition": 0, "current_leader_epoch": 1, "fetch_offset": 0,
            "log_start_offset": -1, "partition_max_bytes": 1 << 20}]}],
        "forgotten_topics_data": [], "rack_id": ""}, conn=new * 100 + 3)
    part = c.answers(new * 100 + 3, api.FETCH, 11)[corr]["responses"][0]["partitions"][0]
    assert part["error_code"] == E.FENCED_LEADER_EPOCH
    corr = c.call(new, api.DESCRIBE_CLUSTER, 0, {"include_cluster_authorized_operations": False},
                  conn=new * 100 + 4)
    body = c.answers(new * 100 + 4, api.DESCRIBE_CLUSTER, 0)[corr]
    assert [b["broker_id"] for b in body["brokers"]] == [1, 2, 3]
    assert body["controller_id"] == c.meta_leader()


def test_a_deleted_topic_is_dropped_on_every_replica_and_recreated_empty(c: Cluster) -> None:
    leader = c.shard("t", 0).leader
    corr = c.produce(leader, "t", 0, [b"old"])
    c.advance(5)
    ok_base(c.produce_result(leader, corr))
    other = next(n for n in IDS if n != leader)
    corr = c.call(other, api.DELETE_TOPICS, 3, {"topic_names": ["t"], "timeout_ms": 1000},
                  conn=other * 100 + 5)
    c.advance(5)
    assert c.answers(other * 100 + 5, api.DELETE_TOPICS, 3)[corr]["responses"][0][
        "error_code"] == 0
    for n in IDS:
        assert not [k for k in c.cores[n].kafka.logs if k[0] == "t"], n
        assert not [s for s in c.cores[n].shards.list() if s.startswith("kafka:t:")], n
    c.create(2, "t")
    c.advance(20)
    leader = c.shard("t", 0).leader
    assert c.fetch(leader, "t", 0)[2] == [], "the new topic starts empty on its leader"


def test_a_peer_port_that_refuses_makes_its_node_dead_at_once_until_it_heartbeats(
        c: Cluster) -> None:
    """A killed node's port refuses connections (`peer_gone`): the controller moves its
    partitions within a few ms instead of the session timeout. A stopped node refuses nothing
    and keeps its partitions for the session timeout. A hint a non-leader got before it became
    the meta leader still counts there; a node that speaks again is alive."""
    meta = c.meta_leader()
    victim = next(c.shard("t", p).leader for p in range(3) if c.shard("t", p).leader != meta)
    led = [p for p in range(3) if c.shard("t", p).leader == victim]
    session = c.cores[meta].spec.controller.session_timeout_ms
    c.crash(victim)
    c.cores[meta].peer_gone(victim)
    took = c.run_until(lambda: all(c.shard("t", p).leader not in (0, victim) for p in led)
                       and all(victim not in c.shard("t", p).isr for p in range(3)), session)
    assert took < session // 4, took
    assert c.cores[meta].controller.stats.gone == 1
    # it comes back: its heartbeats (new broker epoch) make it alive, it rejoins the isr
    c.start(victim)
    c.run_until(lambda: all(victim in c.shard("t", p).isr for p in range(3))
                and c.cores[meta].controller.alive(victim), 5_000)
    assert victim not in c.cores[meta]._gone
    c.advance(2 * session)  # and it stays so (no flapping out of the isr)
    assert all(victim in c.shard("t", p).isr for p in range(3))
    assert c.cores[meta].controller.stats.deaths == 1


def test_a_gone_hint_given_before_a_node_leads_meta_counts_once_it_does(c: Cluster) -> None:
    meta = c.meta_leader()
    other, victim = [n for n in IDS if n != meta]
    led = [p for p in range(3) if c.shard("t", p).leader == victim]
    assert led, "placement spreads leaders over the three nodes"
    c.crash(victim)
    c.cores[other].peer_gone(victim)  # a follower's dial was refused
    assert victim in c.cores[other]._gone and not c.cores[other].controller.active
    c.cores[meta].replica.raft.transfer_leadership(other)  # it takes meta over
    took = c.run_until(lambda: c.meta_leader() == other
                       and all(c.shard("t", p).leader not in (0, victim) for p in led), 2_000)
    session = c.cores[other].spec.controller.session_timeout_ms
    assert took < session // 2, took
    assert c.cores[other].controller.stats.gone == 1


def test_a_resumed_leader_fences_itself_before_it_serves_the_requests_that_waited(
        c: Cluster) -> None:
    """A leader stopped (SIGSTOP) past the session timeout is replaced; when it resumes, the
    client requests that queued meanwhile reach it before its first tick (asyncio runs ready
    sockets before due timers). It must refuse them (no stale read, no write it cannot
    replicate), not serve them as the leader it no longer is."""
    meta = c.meta_leader()
    leader = next(c.shard("t", p).leader for p in range(3) if c.shard("t", p).leader != meta)
    p = next(p for p in range(3) if c.shard("t", p).leader == leader)
    corr = c.produce(leader, "t", p, [b"before"])
    c.advance(5)
    ok_base(c.produce_result(leader, corr))
    frozen = c.cores.pop(leader)
    c.down.add(leader)
    session = frozen.spec.controller.session_timeout_ms
    c.run_until(lambda: c.shard("t", p).leader not in (0, leader), 3 * session)
    c.advance(session)
    c.cores[leader] = frozen  # resumed: no tick yet, the queued requests come first
    c.down.discard(leader)
    assert frozen.replicator.leads_shard("t", p)  # its own view is stale until it checks
    code, _hw, values = c.fetch(leader, "t", p)
    assert code == E.NOT_LEADER_OR_FOLLOWER and values == []
    corr = c.produce(leader, "t", p, [b"stale"], acks=1)
    result = c.produce_result(leader, corr)
    assert result is not None and result["error_code"] == E.NOT_LEADER_OR_FOLLOWER
    # meta reaches it again: it unfences only after a read barrier applied there, so at no
    # moment does it lead the partition at its old epoch
    old_epoch = frozen.replicator.epoch("t", p)
    for _ in range(2 * session):
        c.advance(1)
        if frozen.replicator.leads_shard("t", p):
            assert frozen.replicator.epoch("t", p) != old_epoch
        if not frozen.replicator.fenced and not frozen.replicator.leads_shard("t", p) \
                and (("t", p) in frozen.replicator.follows):
            break
    assert not frozen.replicator.fenced, "it never unfenced"
    assert ("t", p) in frozen.replicator.follows  # it follows the new leader


def test_two_followers_reading_at_once_both_get_answers() -> None:
    """Read contexts name the node: two followers' first reads (`read-1` on each, before)
    reached the leader as one request, and only one follower was answered (found by the
    node3-s3 sweep, seed 235: a shared partition's acknowledgements stalled)."""
    c = Cluster()
    leader = c.meta_leader()
    followers = [n for n in IDS if n != leader]
    got: dict[int, int] = {}
    for n in followers:
        c.cores[n].read_index(lambda index, n=n: got.__setitem__(n, index))
    c.settle()
    c.run_until(lambda: len(got) == 2, 500)
    assert sorted(got) == followers


def _lag_behind(c: Cluster, values: list[list[bytes]]) -> tuple[int, list[int]]:
    """Partition 0's followers miss `values` (one acks=1 batch each) while cut from its
    leader (their fetches are lost: they fetch again after fetch_timeout_ms)."""
    leader = c.shard("t", 0).leader
    followers = [n for n in IDS if n != leader]
    c.cut = {frozenset((leader, n)) for n in followers}
    for i, batch in enumerate(values):
        corr = c.produce(leader, "t", 0, batch, acks=1, conn=900 + i)
        c.advance(5)
        got = c.produce_result(leader, corr, conn=900 + i)
        assert got is not None and got["error_code"] == 0, got
    c.cut = set()
    return leader, followers


def _fetches(c: Cluster, since: int, n: int) -> list[int]:
    return [m.offset for m in c.sent[since:]
            if isinstance(m, ShardFetch) and m.src == n and m.partition == 0]


def test_a_follower_catching_up_does_not_make_its_leader_send_records_twice(c: Cluster) -> None:
    """A follower far behind gets full replies; when its group commit finishes while the next
    reply is on its way, it must not supersede the fetch in flight: the leader would read and
    send the same records again and the reply in flight would be dropped (on a real cluster
    under load, about half the replication work was such waste). The fetch after that reply
    reports the new durable end instead."""
    leader, followers = _lag_behind(c, [[bytes([i]) * 200_000] * 2 for i in range(12)])
    n = followers[0]
    c.hold = {(leader, n)}
    mark = len(c.sent)
    c.run_until(lambda: any(m.records for m in c.held), 2_000)  # the first reply: 2 batches
    c.release()  # applied; the next fetch goes out and its full reply is held
    assert c.cores[n].kafka.replica_log("t", 0).shard_end == 2
    assert _fetches(c, mark, n)[-1] == 2
    c.advance(ACK_GRACE_MS - 1)  # its group commit ends meanwhile
    assert c.cores[n].kafka.ack_end("t", 0) == 2
    assert _fetches(c, mark, n)[-2:] == [0, 2], "the fetch in flight was superseded"
    c.hold = set()
    c.release()
    end = c.cores[leader].kafka.replica_log("t", 0).shard_end
    c.run_until(lambda: c.cores[n].kafka.replica_log("t", 0).shard_end == end, 2_000)
    assert _fetches(c, mark, n)[:7] == [0, 2, 4, 6, 8, 10, 12]
    stats = c.cores[n].replicator.stats
    assert (stats.records_replicated, stats.replies_stale, stats.records_stale) == (12, 0, 0)


def test_a_full_reply_that_drained_the_leader_reports_its_ack_after_a_short_grace(
        c: Cluster) -> None:
    """The exception to the rule above: the full reply was all the leader had, so the next
    fetch is parked; the follower re-sends it after ACK_GRACE_MS to report its durable end,
    and the high watermark does not wait for fetch_wait_ms."""
    leader, followers = _lag_behind(c, [[b"x" * 700_000]])
    fetch_wait = c.cores[leader].spec.replication.fetch_wait_ms
    assert ACK_GRACE_MS < fetch_wait
    c.run_until(lambda: all(c.cores[n].kafka.replica_log("t", 0).shard_end == 1
                            for n in followers), 2_000)
    waited = c.run_until(lambda: c.fetch(leader, "t", 0)[1] == 1, fetch_wait)
    assert ACK_GRACE_MS - 5 <= waited <= ACK_GRACE_MS + 5
    for n in followers:
        assert c.cores[n].replicator.stats.replies_stale == 0


def test_a_follower_back_in_sync_gets_a_full_lag_window(c: Cluster) -> None:
    """A follower rejoins the in-sync set once it reaches the high watermark, possibly still
    behind the log end (a leader taking writes faster than it replicates). It must not be
    dropped again at the next tick for having been behind the log end for long: on a real
    cluster under load each such rejoin and drop was a meta proposal, 84 of them in 20 s."""
    meta = c.meta_leader()
    p = next(p for p in range(3) if c.shard("t", p).leader != meta)
    leader = c.shard("t", p).leader
    lagging = next(n for n in IDS if n not in (leader, meta))
    c.cut = {frozenset((leader, lagging))}
    lag = c.cores[leader].spec.replication.replica_lag_ms
    c.run_until(lambda: lagging not in c.shard("t", p).isr, lag + 500)
    for i in range(2):  # two records that do not fit one fetch...
        corr = c.produce(leader, "t", p, [bytes([i]) * 600_000], acks=1, conn=900 + i)
        c.advance(5)
        assert c.produce_result(leader, corr, conn=900 + i) is not None
        c.hold = {(leader, meta)}  # ...and the other follower has only the first: hw 1, end 2
    c.cut = set()
    c.hold = {(leader, meta), (leader, lagging)}  # the lagging follower's replies are slow...
    c.run_until(lambda: any(m.records and m.dst == lagging for m in c.held), 2_000)
    c.release(lagging)  # ...the first (with the first record) arrives, the next ones do not
    c.run_until(lambda: lagging in c.shard("t", p).isr, 3_000)
    assert c.cores[lagging].kafka.replica_log("t", p).shard_end == 1
    shrinks = c.cores[leader].replicator.stats.isr_shrinks
    c.advance(lag // 2)
    assert lagging in c.shard("t", p).isr
    assert c.cores[leader].replicator.stats.isr_shrinks == shrinks
