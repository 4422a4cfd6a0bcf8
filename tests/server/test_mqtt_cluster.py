"""MQTT across three in-process `NodeCore`s through the replicated `__mqtt` log
(real/mqtt/cluster.py): a message published on one node reaches subscribers on every node, is
acknowledged only once committed on a majority, keeps its publisher's order, survives the
death of its partition's leader without loss or duplicates, and retained state is the same
everywhere. The harness is tests/server/test_replication.py's (one fake clock, a message bus
with cut links, group commits at once)."""

from __future__ import annotations

from typing import Any

import pytest

from real.kafka.records import decode_batch
from real.mqtt import MQTT_3_1_1, MQTT_5, Connect, Decoder, Properties, encode
from real.mqtt.cluster import TOPIC, ClusterConfig, ClusterLog, decode_message, encode_message
from real.mqtt.packets import (
    Connack,
    Packet,
    Puback,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    Will,
)
from real.mqtt.properties import PropertyId
from real.mqtt.session import EXPIRY_NEVER, NO_PROPS, Message
from real.server.node import Proto
from real.server.peermsg import LogAppend
from tests.server.test_replication import Cluster


class Client:
    """An MQTT client of one node of the harness (conn ids are unique across nodes)."""

    seq = 0

    def __init__(self, c: Cluster, node: int, client_id: str, version: int = MQTT_3_1_1,
                 clean: bool = True, properties: Properties = NO_PROPS,
                 wait_ms: int = 200) -> None:
        Client.seq += 1
        self.c, self.node, self.version = c, node, version
        self.conn = 10_000 * node + Client.seq
        self.decoder = Decoder(version=version, max_packet_size=1 << 24)
        self.inbox: list[Packet] = []
        c.cores[node].open(self.conn, Proto.MQTT, peer="t", loopback=True)
        self.send(Connect(client_id, protocol_version=version, clean_start=clean,
                          properties=properties))
        got = self.take()
        for _ in range(wait_ms):  # the CONNACK waits for the client id's claim in meta
            if got:
                break
            self.c.advance(1)
            got = self.take()
        assert got and isinstance(got[0], Connack) and got[0].reason_code == 0, got
        self.connack = got[0]
        self.inbox = got[1:]  # a resumed session's messages follow the CONNACK

    def send(self, *packets: Packet) -> None:
        self.c.cores[self.node].receive(self.conn, b"".join(encode(p, self.version)
                                                             for p in packets))
        self.c.settle()

    def take(self) -> list[Packet]:
        """What the node sent since the last call; QoS 1 deliveries are acknowledged, as a
        client does (else the session's inflight window fills)."""
        while True:
            self.c.settle()
            got = [p for data in self.c.writes.pop(self.conn, [])
                   for p in self.decoder.feed(data)]
            if not got:
                break
            self.inbox += got
            owed = [Puback(p.packet_id) for p in got
                    if isinstance(p, Publish) and p.qos == 1 and p.packet_id is not None]
            if owed:
                self.send(*owed)
        out, self.inbox = self.inbox, []
        return out

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self.send(Subscribe(1, (Subscription(topic_filter, qos),)))
        got = self.take()
        for _ in range(100):  # a persistent session's SUBACK waits for its durable record
            if any(isinstance(p, Suback) for p in got):
                break
            self.c.advance(1)
            got += self.take()
        (suback,) = [p for p in got if isinstance(p, Suback)]
        assert suback.reason_codes == (qos,), suback
        self.inbox = [p for p in got if p is not suback]  # retained messages follow it


def cluster() -> Cluster:
    c = Cluster(node_config={"mqtt_cluster": True})
    c.run_until(lambda: all(core.kafka_ready and core.cluster_log is not None
                            and core.cluster_log.producer_id >= 0
                            for core in c.cores.values()), 3_000)
    return c


@pytest.fixture
def c() -> Cluster:
    return cluster()


def payloads(packets: list[Packet], topic: str | None = None) -> list[bytes]:
    return [p.payload for p in packets if isinstance(p, Publish)
            and (topic is None or p.topic == topic)]


def acks(packets: list[Packet]) -> list[int]:
    return [p.packet_id for p in packets if isinstance(p, Puback)]


def test_the_log_topic_is_replicated_on_every_node(c: Cluster) -> None:
    info = c.cores[1].replica.sm.topic(TOPIC)
    assert info is not None and len(info.shards) == 3
    assert all(sorted(s.replicas) == [1, 2, 3] for s in info.shards)
    assert dict(info.config)["min.insync.replicas"] == "2"


def test_a_message_published_on_one_node_reaches_subscribers_on_every_node(c: Cluster) -> None:
    subs = {n: Client(c, n, f"sub{n}") for n in (1, 2, 3)}
    for s in subs.values():
        s.subscribe("t/#")
    pub = Client(c, 1, "pub")
    pub.send(Publish("t/a", b"hello", qos=1, packet_id=7))
    c.advance(20)
    assert acks(pub.take()) == [7]
    for n, s in subs.items():
        assert payloads(s.take()) == [b"hello"], n


def test_puback_waits_until_a_majority_holds_the_message(c: Cluster) -> None:
    sub = Client(c, 2, "sub")
    sub.subscribe("t/#")
    pub = Client(c, 1, "pub")
    partition = c.cores[1].cluster_log.partition_of("t/a")
    leader = c.shard(TOPIC, partition).leader
    followers = [n for n in (1, 2, 3) if n != leader]
    for f in followers:
        c.cut.add(frozenset((leader, f)))
    pub.send(Publish("t/a", b"m1", qos=1, packet_id=1))
    c.advance(100)
    assert acks(pub.take()) == [], "acknowledged before any follower had it"
    assert payloads(sub.take()) == [], "delivered before it was committed"
    c.cut.clear()
    c.advance(3_000)
    assert acks(pub.take()) == [1]
    assert payloads(sub.take()) == [b"m1"]


def test_a_publishers_messages_arrive_in_order_on_every_node(c: Cluster) -> None:
    subs = {n: Client(c, n, f"sub{n}") for n in (1, 2, 3)}
    for s in subs.values():
        s.subscribe("o/#", qos=1)
    pubs = {n: Client(c, n, f"pub{n}") for n in (1, 2, 3)}
    for i in range(40):  # pipelined, interleaved over three publishers and two topics
        for n, p in pubs.items():
            p.send(Publish(f"o/{i % 2}", f"{n}:{i}".encode(), qos=1, packet_id=i + 1))
    c.advance(200)
    for n, p in pubs.items():
        assert acks(p.take()) == list(range(1, 41)), n
    for n, s in subs.items():
        got = payloads(s.take())
        assert len(got) == 120, (n, len(got))
        for pn in (1, 2, 3):
            for topic in (0, 1):
                mine = [g for g in got if g.startswith(f"{pn}:".encode())
                        and int(g.split(b":")[1]) % 2 == topic]
                assert mine == [f"{pn}:{i}".encode() for i in range(topic, 40, 2)], (n, pn)


def test_retained_messages_are_the_same_on_every_node(c: Cluster) -> None:
    a, b = Client(c, 1, "a"), Client(c, 3, "b")
    a.send(Publish("r/x", b"first", qos=1, retain=True, packet_id=1))
    b.send(Publish("r/x", b"second", qos=1, retain=True, packet_id=1))
    a.send(Publish("r/y", b"y", qos=0, retain=True))
    c.advance(50)
    assert acks(a.take()) == [1] and acks(b.take()) == [1]
    views = {n: sorted((m.topic, m.payload) for m in core.mqtt.retained.match("r/#"))
             for n, core in c.cores.items()}
    assert views[1] == views[2] == views[3]
    assert views[1] == [("r/x", b"second"), ("r/y", b"y")]
    late = Client(c, 2, "late")
    late.subscribe("r/#")
    assert sorted(payloads(late.take())) == [b"second", b"y"]


@pytest.mark.parametrize("publisher_first", [True, False])
def test_the_death_of_a_partitions_leader_loses_and_duplicates_nothing(
        c: Cluster, publisher_first: bool) -> None:
    """Messages the leader stored but could not commit (its link to one follower is cut) when
    it dies: the publisher's node sends the batch again to the new leader, which stores it once
    whether it held it already (the publisher's node, a follower that had fetched it) or not
    (the cut-off follower, whose log had no trace of it)."""
    partition = c.cores[1].cluster_log.partition_of("k/a")
    shard = c.shard(TOPIC, partition)
    leader = shard.leader
    # the controller elects the first live in-sync replica in placement order
    p_node, f_node = [n for n in shard.replicas if n != leader][::1 if publisher_first else -1]
    sub = Client(c, f_node, "sub")
    sub.subscribe("k/#")
    pub = Client(c, p_node, "pub")
    for i in range(10):
        pub.send(Publish("k/a", f"{i}".encode(), qos=1, packet_id=i + 1))
    c.advance(30)
    assert acks(pub.take()) == list(range(1, 11))
    c.cut.add(frozenset((leader, f_node)))
    for i in range(10, 20):
        pub.send(Publish("k/a", f"{i}".encode(), qos=1, packet_id=i + 1))
    c.advance(30)
    assert acks(pub.take()) == [], "committed without the cut-off follower"
    held = c.cores[p_node].kafka.replica_log(TOPIC, partition).shard_end
    c.crash(leader)
    c.cut.clear()
    c.run_until(lambda: c.meta_ok() and c.shard(TOPIC, partition).leader in (p_node, f_node),
                5_000)
    c.advance(3_000)
    assert acks(pub.take()) == list(range(11, 21))
    assert payloads(sub.take()) == [f"{i}".encode() for i in range(20)]
    assert held > 0
    log = c.cores[c.shard(TOPIC, partition).leader].kafka.replica_log(TOPIC, partition)
    values = [r.value for rec in log.read_shard(log.shard_start, 1 << 20)
              for r in decode_batch(rec.payload)]
    assert values == [f"{i}".encode() for i in range(20)], "stored once each, in order"
    assert c.shard(TOPIC, partition).leader == (p_node if publisher_first else f_node)
    stats = c.cores[p_node].cluster_log.stats
    assert stats.batches_resent >= 1
    forwarded = [m for m in c.sent if isinstance(m, LogAppend) and m.partition == partition]
    assert forwarded, "the publisher's node forwarded to the leader"


def test_a_node_restarted_after_a_crash_serves_new_messages(c: Cluster) -> None:
    c.crash(3)
    c.start(3)
    c.run_until(lambda: c.cores[3].kafka_ready and c.cores[3].cluster_log.producer_id >= 0,
                3_000)
    sub = Client(c, 3, "sub")
    sub.subscribe("n/#")
    pub = Client(c, 1, "pub")
    pub.send(Publish("n/1", b"after", qos=1, packet_id=1))
    c.advance(200)
    assert acks(pub.take()) == [1]
    assert payloads(sub.take()) == [b"after"]
    assert c.cores[3].cluster_log.producer_id != c.cores[1].cluster_log.producer_id


def test_wills_and_qos0_go_through_the_cluster(c: Cluster) -> None:
    sub = Client(c, 2, "sub")
    sub.subscribe("w/#", qos=0)
    pub = Client(c, 1, "pub", version=MQTT_5)
    pub.send(Publish("w/q0", b"zero", qos=0))
    c.advance(20)
    assert payloads(sub.take()) == [b"zero"]
    core = c.cores[3]
    conn = 39_999
    core.open(conn, Proto.MQTT, peer="t", loopback=True)
    core.receive(conn, encode(Connect("dying", will=Will("w/will", b"bye")), MQTT_3_1_1))
    c.settle()
    core.closed(conn)  # no DISCONNECT: the will goes out
    c.advance(20)
    assert payloads(sub.take()) == [b"bye"]


def test_a_message_survives_the_record_encoding() -> None:
    props = Properties.of((PropertyId.CONTENT_TYPE, "text/plain"),
                          (PropertyId.USER_PROPERTY, ("k", "v1")),
                          (PropertyId.USER_PROPERTY, ("k", "v2")),
                          (PropertyId.USER_PROPERTY, ("", "")),
                          (PropertyId.CORRELATION_DATA, b"\x00\xff"),
                          (PropertyId.RESPONSE_TOPIC, "re/ply"),
                          (PropertyId.PAYLOAD_FORMAT_INDICATOR, 1))
    msg = Message("a/\tb/ü", b"\x00payload", 2, True, props, 1_700_000_123_456, "cl\tient",
                  1_700_000_000_000)
    back = decode_message(encode_message(msg))
    for name in ("topic", "payload", "qos", "retain", "expiry_at", "origin", "created_ms"):
        assert getattr(back, name) == getattr(msg, name), name
    assert sorted(back.props.items, key=repr) == sorted(props.items, key=repr)
    plain = Message("t", b"", 0, False, Properties(), EXPIRY_NEVER, "", 5)
    assert decode_message(encode_message(plain)).expiry_at == EXPIRY_NEVER


@pytest.mark.parametrize("key", [b"\x00\x05ab", b"\x01\x00" + bytes(8) + b"\x00\x09tx", b"\xff",
                                 b"\x01\x03" + bytes(8) + b"\x00\x01t\x00\x00",
                                 b"\x01\x00" + bytes(8) + b"\x00\x01t\x00\x00\x09\x00\x00"])
def test_a_record_that_is_not_a_message_is_refused(key: bytes) -> None:
    from real.kafka.records import KRecord

    with pytest.raises(ValueError, match="not an MQTT message record"):
        decode_message(KRecord(0, 0, key, b"", ()))


def test_nodes_reserving_producer_ids_at_once_get_disjoint_blocks(c: Cluster) -> None:
    """Each node reserves a block of Kafka producer ids in meta; three at once must not get the
    same block (a read-then-put did: every node's MQTT log writer, and any Kafka producers the
    nodes served, shared producer id 0 and took each other's batches for duplicates)."""
    got: dict[int, list[int]] = {1: [], 2: [], 3: []}
    for n in (1, 2, 3):
        c.cores[n].kafka._pid_next = c.cores[n].kafka._pid_limit  # each needs a new block
    for n in (1, 2, 3):
        c.cores[n].kafka._allocate_producer_id(got[n].append)
    c.advance(50)
    assert all(len(v) == 1 and v[0] >= 0 for v in got.values()), got
    assert len({v[0] for v in got.values()}) == 3, got
    pids = {c.cores[n].cluster_log.producer_id for n in (1, 2, 3)}
    assert len(pids) == 3, pids


def test_a_persistent_session_on_a_crashed_node_gets_every_message_once(c: Cluster) -> None:
    """Messages queued to an offline persistent session before its node loses power, and those
    committed while the node is down, all reach it after the restart, each once: the state log
    says how far each cluster log partition was routed (`cp` on the queued messages)."""
    sub = Client(c, 3, "keeper", clean=False)
    sub.subscribe("p/#")
    c.cores[3].closed(sub.conn)  # offline: its messages queue in the session
    c.settle()
    pub = Client(c, 1, "pub")
    for i in range(5):
        pub.send(Publish(f"p/{i % 2}", f"{i}".encode(), qos=1, packet_id=i + 1))
    c.advance(30)
    assert acks(pub.take()) == [1, 2, 3, 4, 5]
    assert len(c.cores[3].mqtt.sessions["keeper"].queue) == 5
    c.crash(3)
    for i in range(5, 10):
        pub.send(Publish(f"p/{i % 2}", f"{i}".encode(), qos=1, packet_id=i + 1))
    c.advance(3_000)  # (the partitions node 3 led fail over first)
    assert acks(pub.take()) == [6, 7, 8, 9, 10], "a majority is up: committed"
    c.start(3)
    c.run_until(lambda: c.cores[3].kafka_ready, 3_000)
    c.advance(500)
    back = Client(c, 3, "keeper", clean=False)
    got = payloads(back.take())
    assert sorted(got) == [f"{i}".encode() for i in range(10)], got
    for topic in (0, 1):  # and in order per topic
        mine = [g for g in got if int(g) % 2 == topic]
        assert mine == [f"{i}".encode() for i in range(topic, 10, 2)]


def test_a_resent_qos2_publish_is_acknowledged_only_once_the_original_is_committed(
        c: Cluster) -> None:
    """A QoS 2 PUBLISH whose PUBREC was lost with its connection is re-sent (DUP, same packet
    id) on a new one: the broker knows the id and does not store it again, but it may answer
    PUBREC only once the original is committed (it answered at once, and the sim found a
    message acknowledged that the publisher's node then lost with its crash)."""
    partition = c.cores[1].cluster_log.partition_of("q2/x")
    leader = c.shard(TOPIC, partition).leader
    p_node = next(n for n in (1, 2, 3) if n != leader)
    sub = Client(c, p_node, "sub")
    sub.subscribe("q2/#", qos=2)
    for f in (n for n in (1, 2, 3) if n != leader):
        c.cut.add(frozenset((leader, f)))
    pub = Client(c, p_node, "q2pub", clean=False)
    pub.send(Publish("q2/x", b"once", qos=2, packet_id=1))
    c.advance(50)
    assert pub.take() == [], "nothing committed: no PUBREC"
    c.cores[p_node].closed(pub.conn)  # the connection breaks
    c.settle()
    again = Client(c, p_node, "q2pub", clean=False)
    c.advance(10)  # its session's state durable: only the original's commit may hold it
    again.send(Publish("q2/x", b"once", qos=2, dup=True, packet_id=1))
    c.advance(50)
    assert again.take() == [], "PUBREC for a message not committed yet"
    c.cut.clear()
    c.advance(3_000)
    assert [type(p).__name__ for p in again.take()] == ["Pubrec"]
    got = [p for p in sub.take() if isinstance(p, Publish)]
    assert [p.payload for p in got] == [b"once"]



class _OneLeader:
    """A LogHost of node 1 whose partitions' leader (node 2) and epoch the test sets."""

    def __init__(self) -> None:
        self.leader_id, self.epoch = 2, 1

    def partition_count(self) -> int:
        return 1

    def leadership(self, partition: int) -> tuple[int, int]:
        return self.leader_id, self.epoch

    def leads(self, partition: int) -> bool:
        return False

    def committed_end(self, partition: int) -> int | None:
        return None

    def allocate_producer_id(self, give: Any) -> None:
        give(7)


class _NoRouter:
    cluster_positions: dict[int, tuple[int, int]] = {}

    def durable_progress(self) -> None:
        pass


def _forwarding_log() -> tuple[ClusterLog, _OneLeader, list[LogAppend], list[int]]:
    host, sent, now = _OneLeader(), [], [0]
    log = ClusterLog(1, ClusterConfig(), host, _NoRouter(),  # type: ignore[arg-type]
                     lambda: now[0], sent.append)
    log.pump()  # the producer id
    log.publish(Message("t", b"m", 1, False, Properties(), EXPIRY_NEVER, "c", 0))
    log.pump()
    assert [(m.dst, m.seq) for m in sent] == [(2, 1)]
    return log, host, sent, now


def test_a_batch_is_sent_again_when_its_leader_wins_the_partition_back() -> None:
    """Node 2 leads, gets the batch, loses the partition (epoch 2: nobody) and wins it back
    (epoch 3): the same node, a new leadership, and the request may have died with its old
    process. The batch goes again at once, not after the request timeout (node3-mqtt-bughunt
    seed 38 waited 2 s and ran past the drain)."""
    log, host, sent, now = _forwarding_log()
    host.leader_id, host.epoch = 0, 2
    now[0] = 10
    log.pump()
    assert len(sent) == 1, "no leader to send it to"
    host.leader_id, host.epoch = 2, 3
    now[0] = 20
    log.pump()
    assert [(m.dst, m.seq) for m in sent] == [(2, 1), (2, 2)]
    assert sent[1].batch == sent[0].batch, "the same batch: the leader stores it once"
    now[0] = 30
    log.pump()
    assert len(sent) == 2, "sent once per leadership"


def test_a_batch_sent_to_a_node_that_is_gone_is_sent_again_after_the_retry_pause() -> None:
    log, _host, sent, now = _forwarding_log()
    log.peer_gone(3)
    now[0] = 100
    log.pump()
    assert len(sent) == 1, "another node's refusal says nothing of this batch"
    log.peer_gone(2)
    now[0] = 100 + log.config.retry_ms - 1
    log.pump()
    assert len(sent) == 1
    now[0] = 100 + log.config.retry_ms
    log.pump()
    assert [(m.dst, m.seq) for m in sent] == [(2, 1), (2, 2)]
    assert log.view()["batches_lost_with_peer"] == 1
    assert 100 + log.config.retry_ms < log.config.request_timeout_ms


def test_a_node_that_joined_after_the_log_was_placed_refuses_mqtt_clients(c: Cluster) -> None:
    """Replicas are not reassigned yet: a node added later holds no replica of `__mqtt`, so it
    could deliver nothing to its clients. It accepts none (and says why, once); the others
    still do."""
    from tests.server.test_membership import change

    c.start(4, join=True)
    assert change(c, c.meta_leader(), "add", 4, "10.0.0.4:7004").ok
    c.run_until(lambda: c.cores[4].kafka_ready, 3_000)
    assert not c.cores[4].accepting(Proto.MQTT)
    assert c.cores[4].accepting(Proto.KAFKA), "Kafka clients are served as before"
    assert all(c.cores[n].accepting(Proto.MQTT) for n in (1, 2, 3))
