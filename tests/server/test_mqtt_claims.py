"""Client ids across three in-process `NodeCore`s (real/mqtt/claims.py): a client id is held by
one node connection at a time; connecting on another node takes it over (the old connection
gets DISCONNECT 0x8E) and brings the session along: subscriptions, queued messages, QoS 2
packet ids, and what was published while it moved, each once."""

from __future__ import annotations

import pytest

from real.meta.machine import Claim, Owner
from real.mqtt import MQTT_3_1_1, MQTT_5, Connect, Decoder, Properties, encode
from real.mqtt.broker import Broker, BrokerConfig
from real.mqtt.claims import (
    ClaimKey,
    decode_release,
    release_record,
    snapshot_records,
)
from real.mqtt.cluster import ClusterConfig
from real.mqtt.packets import Connack, Disconnect, Publish, Pubrec, Pubrel
from real.mqtt.properties import PropertyId
from real.mqtt.session import EXPIRY_NEVER, Delivery, Inflight, Message, Session, SubOpts
from real.server.node import Proto
from tests.server.test_mqtt_cluster import Client, acks, cluster, payloads
from tests.server.test_replication import Cluster

FOREVER = Properties.of((PropertyId.SESSION_EXPIRY_INTERVAL, 0xFFFFFFFF))


@pytest.fixture
def c() -> Cluster:
    return cluster()


def _owner(c: Cluster, client_id: str) -> int:
    owner = c.cores[min(c.cores)].replica.sm.owner(client_id)
    return owner.node if owner is not None else 0


def test_connecting_on_another_node_takes_the_client_over(c: Cluster) -> None:
    first = Client(c, 1, "dev", version=MQTT_5, properties=FOREVER)
    first.subscribe("cmd/#")
    assert _owner(c, "dev") == 1
    second = Client(c, 2, "dev", version=MQTT_5, clean=False, properties=FOREVER)
    assert second.connack.session_present, "the session came along"
    assert _owner(c, "dev") == 2
    got = first.take()
    assert [(type(p), p.reason_code) for p in got] == [(Disconnect, 0x8E)]
    assert "dev" not in c.cores[1].mqtt.sessions
    assert c.cores[2].mqtt.sessions["dev"].subscriptions.keys() == {"cmd/#"}
    pub = Client(c, 3, "pub")
    pub.send(Publish("cmd/go", b"1", qos=1, packet_id=1))
    c.advance(30)
    assert acks(pub.take()) == [1]
    assert payloads(second.take()) == [b"1"]
    assert payloads(first.take()) == []


def _queue_offline(c: Cluster, prefix: str) -> Client:
    """"keeper" subscribes to `prefix`/# on node 1 and goes offline; a publisher on node 2 gets
    five messages acknowledged for it (topics `prefix`/0 and `prefix`/1); the publisher."""
    keeper = Client(c, 1, "keeper", clean=False)
    keeper.subscribe(f"{prefix}/#")
    c.cores[1].closed(keeper.conn)
    c.settle()
    pub = Client(c, 2, "pub")
    for i in range(5):
        pub.send(Publish(f"{prefix}/{i % 2}", f"{i}".encode(), qos=1, packet_id=i + 1))
    c.advance(30)
    assert acks(pub.take()) == [1, 2, 3, 4, 5]
    return pub


def test_an_offline_sessions_queue_moves_with_it_and_nothing_repeats(c: Cluster) -> None:
    pub = _queue_offline(c, "q")
    assert len(c.cores[1].mqtt.sessions["keeper"].queue) == 5
    back = Client(c, 3, "keeper", clean=False)
    assert back.connack.session_present
    for i in range(5, 8):
        pub.send(Publish(f"q/{i % 2}", f"{i}".encode(), qos=1, packet_id=i + 1))
    c.advance(30)
    got = payloads(back.take())
    assert sorted(got) == [f"{i}".encode() for i in range(8)], got
    for topic in (0, 1):
        mine = [g for g in got if int(g) % 2 == topic]
        assert mine == [f"{i}".encode() for i in range(topic, 8, 2)]
    assert "keeper" not in c.cores[1].mqtt.sessions
    assert c.cores[3].mqtt.stats.handovers_in == 1


def test_a_qos2_delivery_keeps_its_packet_id_on_the_new_node(c: Cluster) -> None:
    """The client holds a QoS 2 packet id until PUBREL (MQTT-4.3.3): the new node re-sends the
    PUBLISH under the same id (DUP) or the PUBREL it still owes."""
    sub = Client(c, 1, "q2sub", version=MQTT_5, properties=FOREVER)
    sub.subscribe("q2/#", qos=2)
    pub = Client(c, 2, "pub")
    pub.send(Publish("q2/a", b"a", qos=2, packet_id=1), Publish("q2/b", b"b", qos=2,
                                                                   packet_id=2))
    c.advance(30)
    got = [p for p in sub.take() if isinstance(p, Publish)]
    assert [p.payload for p in got] == [b"a", b"b"]
    sub.send(Pubrec(got[0].packet_id))  # a: PUBREC sent, PUBREL owed; b: no answer yet
    rels = [p for p in sub.take() if isinstance(p, Pubrel)]
    assert [p.packet_id for p in rels] == [got[0].packet_id]
    moved = Client(c, 3, "q2sub", version=MQTT_5, clean=False, properties=FOREVER)
    assert moved.connack.session_present
    again = moved.take()
    assert [(type(p).__name__, p.packet_id) for p in again] == [
        ("Pubrel", got[0].packet_id), ("Publish", got[1].packet_id)]
    assert again[1].dup and again[1].payload == b"b"


def _publish_around_a_move(c: Cluster, lagging: int, client_id: str
                           ) -> tuple[list[bytes], list[bytes]]:
    """A subscriber's session moves from node 1 to node 3 while messages flow from node 2 and
    node `lagging` hears the log late (its fetch replies are held): (sent, received)."""
    sub = Client(c, 1, client_id, clean=False)
    sub.subscribe("m/#")
    pub = Client(c, 2, "pub")
    sent: list[bytes] = []
    before: list[bytes] = []
    for i in range(40):
        if i == 10:
            c.hold = {(n, lagging) for n in (1, 2, 3) if n != lagging}
        if i == 20:
            c.cores[3].open(99_999, Proto.MQTT, peer="t", loopback=True)
            c.cores[3].receive(99_999, encode(Connect(client_id, clean_start=False),
                                                MQTT_3_1_1))
        if i == 30:
            c.hold = set()
            c.release()
        pub.send(Publish(f"m/{i % 15}", f"{i}".encode(), qos=1, packet_id=i + 1))
        sent.append(f"{i}".encode())
        c.advance(3)
        before += payloads(sub.take())  # (acknowledged, as a client does)
    c.advance(500)
    got = Decoder(version=MQTT_3_1_1).feed(b"".join(c.writes.pop(99_999, [])))
    assert got and isinstance(got[0], Connack) and got[0].session_present
    return sent, before + payloads(sub.take()) + payloads(got)


def test_a_claimant_ahead_of_the_old_node_reads_the_gap_again(c: Cluster) -> None:
    """The old node had routed less of the log than the claimant when it let go: the claimant
    reads what lies between from its replica for the session. Every message arrives once."""
    sent, got = _publish_around_a_move(c, lagging=1, client_id="mover")
    assert sorted(got, key=int) == sent, got
    assert c.cores[3].mqtt.stats.handover_read_again > 0


class _Log:
    """The cluster log as the broker sees it: how far this node routed each partition."""

    config = ClusterConfig()

    def __init__(self, here: dict[int, tuple[int, int]]) -> None:
        self.here = here
        self.released: list[tuple[str, ClaimKey]] = []

    def positions(self) -> dict[int, tuple[int, int]]:
        return dict(self.here)

    def read_messages(self, partition: int, start: tuple[int, int], end: tuple[int, int]
                      ) -> list[tuple[Message, int, int]]:
        raise AssertionError("nothing to read again: this node is behind")

    def release(self, client: str, record: object) -> None:
        self.released.append((client, decode_release(record).claim))  # type: ignore[arg-type]


def test_a_claimant_behind_the_old_node_skips_up_to_its_place() -> None:
    """The claimant had routed less of partition 0 than the old node when it let go: the
    session takes nothing from this node's routing before the old node's place (the hand-over
    holds those messages), and everything from it on."""
    now = [0]
    broker = Broker(BrokerConfig(node_id=3), lambda: now[0])
    broker.cluster = _Log({0: (4, 0)})
    broker.life = 77
    proposed: list[tuple[str, int]] = []
    broker.propose_claim = lambda client, conn, done: proposed.append((client, conn))
    broker.open(1)
    broker.receive(1, encode(Connect("dev", clean_start=False), MQTT_3_1_1))
    assert proposed == [("dev", 1)] and broker.drain() == [], "held until the claim settles"
    mine, old = Owner(3, 77, 1), Owner(1, 5, 9)
    broker.claims_applied([Claim(10, "dev", mine, old)], 0, lambda _c: mine)
    assert broker.drain() == [], "held until node 1 hands the session over"
    moving = Session("dev", 0xFFFFFFFF, 4, 0)
    moving.subscriptions["t/#"] = SubOpts(1)
    msg = Message("t/x", b"queued", 1, False, Properties(), EXPIRY_NEVER, "p", 0)
    moving.queue.append(Delivery(msg, 1, False))
    rec = release_record("dev", ClaimKey(3, 77, 1), {0: (6, 1)}, (),
                         snapshot_records(moving, 0), 0)
    broker.release_committed(decode_release(rec), 2, 0, 0)
    for offset, index, body in ((4, 0, b"in the hand-over"), (6, 0, b"also"),
                                (6, 1, b"new"), (7, 0, b"newer")):
        broker.route_committed(Message("t/x", body, 1, False, Properties(), EXPIRY_NEVER, "p",
                                       0), 0, offset, index)
    got = Decoder(version=MQTT_3_1_1).feed(b"".join(d for _c, d, _x in broker.drain()))
    assert isinstance(got[0], Connack) and got[0].session_present
    assert payloads(got) == [b"queued", b"new", b"newer"]
    assert broker.stats.handover_floors == 1


def test_a_claim_of_a_client_held_by_a_dead_node_goes_on_without_it(c: Cluster) -> None:
    Client(c, 1, "orphan", clean=False).subscribe("o/#")
    c.crash(1)
    c.advance(50)
    back = Client(c, 2, "orphan", clean=False, wait_ms=7_000)
    assert not back.connack.session_present, "the session died with its node (for now)"
    assert c.cores[2].mqtt.stats.claims_forced == 1
    assert _owner(c, "orphan") == 2


def test_a_session_on_a_node_that_restarts_moves_once_it_is_back(c: Cluster) -> None:
    """The node holding an offline session loses power; the client connects to another node,
    whose claim waits. The restarted node recovers the session from its state log, applies
    the claim it missed and hands the session over: every acknowledged message arrives."""
    _queue_offline(c, "r")
    c.crash(1)
    c.advance(50)
    c.cores[3].open(99_999, Proto.MQTT, peer="t", loopback=True)
    c.cores[3].receive(99_999, encode(Connect("keeper", clean_start=False), MQTT_3_1_1))
    c.advance(1_000)
    assert c.writes.get(99_999) is None, "the claim waits for node 1"
    c.start(1)
    c.run_until(lambda: c.cores[1].kafka_ready, 3_000)
    c.advance(1_000)
    got = Decoder(version=MQTT_3_1_1).feed(b"".join(c.writes.pop(99_999, [])))
    assert got and isinstance(got[0], Connack) and got[0].session_present
    assert sorted(payloads(got)) == [f"{i}".encode() for i in range(5)]
    assert c.cores[3].mqtt.stats.claims_forced == 0
    assert "keeper" not in c.cores[1].mqtt.sessions


def test_a_node_cut_off_from_meta_closes_its_mqtt_connections(c: Cluster) -> None:
    lonely = next(n for n in (1, 2, 3) if n != c.meta_leader())
    client = Client(c, lonely, "alone", version=MQTT_5)
    for n in (1, 2, 3):
        if n != lonely:
            c.cut.add(frozenset((lonely, n)))
    c.advance(2_000)
    got = client.take()
    assert [(type(p), p.reason_code) for p in got] == [(Disconnect, 0x9C)]
    assert c.cores[lonely].mqtt.fenced


def test_a_release_record_round_trips() -> None:
    session = Session("dev ice", 0xFFFFFFFF, 5, 0)
    session.subscriptions["a/#"] = SubOpts(2, sub_id=4)
    msg = Message("a/b", b"x", 2, False, Properties(), EXPIRY_NEVER, "p", 7)
    session.inflight[9] = Inflight(Delivery(msg, 2, False, (4,)), 9)
    session.inflight[10] = Inflight(Delivery(msg, 2, False), 10, released=True)
    session.queue.append(Delivery(msg, 1, False))
    rec = release_record("dev ice", ClaimKey(2, 1 << 60, 77), {0: (5, 1), 2: (9, 0)}, (3, 4),
                         snapshot_records(session, 100), 100)
    release = decode_release(rec)
    assert release.claim == ClaimKey(2, 1 << 60, 77)
    assert release.positions == {0: (5, 1), 2: (9, 0)}
    back = release.session()
    assert back is not None and back.inbound_qos2 == {3, 4}
    assert back.subscriptions == session.subscriptions
    assert sorted(back.inflight) == [9, 10] and back.inflight[10].released
    assert [d.qos for d in back.queue] == [1]
    empty = decode_release(release_record("x", ClaimKey(1, 2, 3), {}, (), None, 0))
    assert empty.session() is None
