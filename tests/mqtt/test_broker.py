"""The sans-I/O broker core, driven packet by packet through the codec (tests/mqtt/harness.py)."""

from __future__ import annotations

import pytest

from real.mqtt import (
    MQTT_3_1_1,
    MQTT_5,
    NO_PROPERTIES,
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Pingresp,
    Properties,
    PropertyId,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    encode,
)
from real.mqtt.broker import BrokerConfig
from real.storage.memory import MemoryEngine
from tests.mqtt.harness import Harness

P = PropertyId


def publishes(packets: list) -> list[Publish]:
    return [p for p in packets if isinstance(p, Publish)]


def subscribe(client, *subs: Subscription, props: Properties = NO_PROPERTIES, pid: int = 1):
    client.send(Subscribe(pid, subs, props))
    packets = [p for p in client.take() if not isinstance(p, Connack)]
    assert isinstance(packets[0], Suback), packets
    return packets


# ------------------------------------------------------------------------------------ basics


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
def test_connack_and_ping(version: int) -> None:
    h = Harness()
    c = h.connect("c1", version)
    (ack,) = c.take()
    assert isinstance(ack, Connack) and ack.reason_code == 0 and not ack.session_present
    c.send(Pingreq())
    assert c.take() == [Pingresp()]


@pytest.mark.parametrize("pub_qos", [0, 1, 2])
@pytest.mark.parametrize("sub_qos", [0, 1, 2])
def test_delivery_qos_is_the_minimum(pub_qos: int, sub_qos: int) -> None:
    h = Harness()
    sub = h.connect("sub")
    sub.take()
    subscribe(sub, Subscription("a/+", sub_qos))
    pub = h.connect("pub")
    pub.take()
    pub.send(Publish("a/b", b"x", qos=pub_qos, packet_id=9 if pub_qos else None))
    acks = pub.take()
    if pub_qos == 1:
        assert acks == [Puback(9)]
    elif pub_qos == 2:
        assert acks == [Pubrec(9)]
        pub.send(Pubrel(9))
        assert pub.take() == [Pubcomp(9)]
    (got,) = publishes(sub.take())
    assert got.payload == b"x" and got.qos == min(pub_qos, sub_qos)
    if got.qos == 2:
        sub.send(Pubrec(got.packet_id))
        assert sub.take() == [Pubrel(got.packet_id)]
        sub.send(Pubcomp(got.packet_id))
        assert h.broker.sessions["sub"].inflight == {}


def test_qos2_inbound_duplicate_is_not_delivered_twice() -> None:
    h = Harness()
    sub = h.connect("sub")
    subscribe(sub, Subscription("t", 0))
    sub.take()
    pub = h.connect("pub")
    pub.take()
    pub.send(Publish("t", b"once", qos=2, packet_id=3))
    pub.send(Publish("t", b"once", qos=2, packet_id=3, dup=True))
    assert pub.take() == [Pubrec(3), Pubrec(3)]
    assert len(publishes(sub.take())) == 1
    pub.send(Pubrel(3))
    assert pub.take() == [Pubcomp(3)]


def test_wildcards_and_dollar_topics() -> None:
    h = Harness()
    sub = h.connect("sub")
    sub.take()
    subscribe(sub, Subscription("#", 0), Subscription("$SYS/#", 0))
    pub = h.connect("pub")
    pub.take()
    pub.send(Publish("x/y", b"1"))
    assert [p.topic for p in publishes(sub.take())] == ["x/y"]
    h.broker.config = BrokerConfig(sys_interval_ms=1000)
    h.advance(2000)
    topics = [p.topic for p in publishes(sub.take())]
    assert "$SYS/broker/clients/connected" in topics  # via "$SYS/#", never via "#"
    assert len(topics) == len(set(topics))


def test_unsubscribe_stops_delivery_and_reports_missing() -> None:
    h = Harness()
    sub = h.connect("sub", MQTT_5)
    sub.take()
    subscribe(sub, Subscription("a", 0))
    sub.send(Unsubscribe(2, ("a", "b")))
    assert sub.take() == [Unsuback(2, (0, ReasonCode.NO_SUBSCRIPTION_EXISTED))]
    pub = h.connect("pub")
    pub.send(Publish("a", b"x"))
    assert publishes(sub.take()) == []


# ------------------------------------------------------------------------------------ retained


def test_retained_set_replace_clear() -> None:
    h = Harness()
    pub = h.connect("pub")
    pub.send(Publish("r/1", b"v1", retain=True), Publish("r/1", b"v2", retain=True),
             Publish("r/2", b"w", retain=True))
    late = h.connect("late")
    late.take()
    subscribe_packets = subscribe(late, Subscription("r/#", 1))
    got = publishes(subscribe_packets[1:] + late.take())
    assert [(p.topic, p.payload, p.retain) for p in got] == [("r/1", b"v2", True),
                                                             ("r/2", b"w", True)]
    pub.send(Publish("r/1", b"live", retain=True))
    (live,) = publishes(late.take())
    assert live.retain is False  # MQTT-3.3.1-9: live messages to existing subscriptions
    pub.send(Publish("r/1", b"", retain=True))
    late.take()
    assert [m.topic for m in h.broker.retained.all()] == ["r/2"]


def test_retain_handling_and_retain_as_published() -> None:
    h = Harness()
    pub = h.connect("pub")
    pub.send(Publish("r", b"v", retain=True))
    c = h.connect("c", MQTT_5)
    c.take()
    assert len(publishes(subscribe(c, Subscription("r", 0, retain_handling=1)))) == 1
    assert publishes(subscribe(c, Subscription("r", 0, retain_handling=1))) == []  # not new
    assert publishes(subscribe(c, Subscription("r", 0, retain_handling=2))) == []
    assert len(publishes(subscribe(c, Subscription("r", 0, retain_handling=0)))) == 1
    subscribe(c, Subscription("r", 0, retain_as_published=True))
    pub.send(Publish("r", b"again", retain=True))
    (p,) = publishes(c.take())
    assert p.retain is True


# ------------------------------------------------------------------------------------ wills


def test_will_on_abnormal_close_not_on_disconnect() -> None:
    h = Harness()
    watcher = h.connect("w")
    subscribe(watcher, Subscription("wills/#", 1))
    a = h.connect("a", will=Will("wills/a", b"gone", qos=1))
    a.take()
    a.drop()
    (p,) = publishes(watcher.take())
    assert (p.topic, p.payload, p.qos) == ("wills/a", b"gone", 1)
    b = h.connect("b", will=Will("wills/b", b"gone"))
    b.send(Disconnect())
    assert publishes(watcher.take()) == []


def test_will_delay_cancelled_by_reconnect_and_fired_after() -> None:
    h = Harness()
    watcher = h.connect("w")
    subscribe(watcher, Subscription("wills/#", 0))
    will = Will("wills/a", b"late", properties=Properties.of((P.WILL_DELAY_INTERVAL, 5)))
    a = h.connect("a", MQTT_5, clean=False, expiry=60, will=will)
    a.drop()
    h.advance(3000)
    assert publishes(watcher.take()) == []
    a2 = h.connect("a", MQTT_5, clean=False, expiry=60, will=will)
    assert a2.take()[0].session_present
    h.advance(10_000)
    assert publishes(watcher.take()) == []  # reconnected within the delay (MQTT-3.1.3-9)
    a2.drop()
    h.advance(4000)
    assert publishes(watcher.take()) == []
    h.advance(2000)
    assert [p.payload for p in publishes(watcher.take())] == [b"late"]


def test_will_published_when_session_expires_before_delay() -> None:
    h = Harness()
    watcher = h.connect("w")
    subscribe(watcher, Subscription("wills/#", 0))
    will = Will("wills/a", b"x", properties=Properties.of((P.WILL_DELAY_INTERVAL, 100)))
    a = h.connect("a", MQTT_5, clean=False, expiry=2, will=will)
    a.drop()
    h.advance(2500)
    assert [p.payload for p in publishes(watcher.take())] == [b"x"]
    assert "a" not in h.broker.sessions


# ------------------------------------------------------------------------------------ sessions


def test_persistent_session_queues_while_offline() -> None:
    h = Harness()
    s = h.connect("s", clean=False)
    subscribe(s, Subscription("q", 1))
    s.send(Disconnect())
    pub = h.connect("pub")
    for i in range(5):
        pub.send(Publish("q", str(i).encode(), qos=1, packet_id=i + 1))
    s2 = h.connect("s", clean=False)
    packets = s2.take()
    assert packets[0] == Connack(True, 0)
    assert [p.payload for p in publishes(packets)] == [b"0", b"1", b"2", b"3", b"4"]


def test_clean_start_discards_the_old_session() -> None:
    h = Harness()
    s = h.connect("s", clean=False)
    subscribe(s, Subscription("q", 1))
    s.send(Disconnect())
    s2 = h.connect("s", clean=True)
    assert s2.take()[0] == Connack(False, 0)
    assert h.broker.sessions["s"].subscriptions == {}


@pytest.mark.parametrize("policy", ["drop-new", "drop-oldest"])
def test_offline_queue_limit(policy: str) -> None:
    h = Harness(BrokerConfig(sys_interval_ms=0, max_queued=3, queue_policy=policy))
    s = h.connect("s", clean=False)
    subscribe(s, Subscription("q", 1))
    s.send(Disconnect())
    pub = h.connect("pub")
    for i in range(6):
        pub.send(Publish("q", str(i).encode(), qos=1, packet_id=i + 1))
    s2 = h.connect("s", clean=False)
    got = [p.payload for p in publishes(s2.take())]
    assert got == ([b"0", b"1", b"2"] if policy == "drop-new" else [b"3", b"4", b"5"])
    assert h.broker.stats.dropped["queue_full"] == 3


def test_inflight_window_honours_receive_maximum() -> None:
    h = Harness()
    s = h.connect("s", MQTT_5, props={P.RECEIVE_MAXIMUM: 2})
    s.take()
    subscribe(s, Subscription("q", 1))
    pub = h.connect("pub")
    for i in range(5):
        pub.send(Publish("q", str(i).encode(), qos=1, packet_id=i + 1))
    first = publishes(s.take())
    assert [p.payload for p in first] == [b"0", b"1"]
    s.send(Puback(first[0].packet_id))
    assert [p.payload for p in publishes(s.take())] == [b"2"]


def test_unacked_inflight_is_resent_with_dup_on_resume() -> None:
    h = Harness()
    s = h.connect("s", clean=False)
    subscribe(s, Subscription("q", 1))
    pub = h.connect("pub")
    pub.send(Publish("q", b"m", qos=1, packet_id=1))
    (first,) = publishes(s.take())
    s.drop()
    s2 = h.connect("s", clean=False)
    (again,) = publishes(s2.take())
    assert again.dup and again.packet_id == first.packet_id and again.payload == b"m"


def test_session_takeover_v5() -> None:
    h = Harness()
    first = h.connect("same", MQTT_5)
    first.take()
    second = h.connect("same", MQTT_5)
    assert second.take()[0].reason_code == 0
    packets = first.take()
    assert packets == [Disconnect(ReasonCode.SESSION_TAKEN_OVER, packets[0].properties)]
    assert first.closed


def test_assigned_client_identifier() -> None:
    h = Harness()
    c = h.connect("", MQTT_5)
    (ack,) = c.take()
    assigned = ack.properties.get(P.ASSIGNED_CLIENT_IDENTIFIER)
    assert isinstance(assigned, str) and assigned in h.broker.sessions
    v3 = h.connect("", MQTT_3_1_1, clean=False)
    assert v3.take() == [Connack(False, 2)]  # identifier rejected


def test_keep_alive_timeout_closes_and_publishes_will() -> None:
    h = Harness()
    watcher = h.connect("w")
    subscribe(watcher, Subscription("wills/#", 0))
    c = h.connect("c", MQTT_5, keep_alive=10, will=Will("wills/c", b"timeout"))
    c.take()
    h.advance(14_000)
    assert not c.closed
    h.advance(2_000)
    assert c.take()[0].reason_code == ReasonCode.KEEP_ALIVE_TIMEOUT
    assert [p.payload for p in publishes(watcher.take())] == [b"timeout"]


# ------------------------------------------------------------------------------------ MQTT 5


def test_shared_subscription_round_robin() -> None:
    h = Harness()
    members = [h.connect(f"m{i}") for i in range(3)]
    for m in members:
        subscribe(m, Subscription("$share/g/jobs/+", 1))
    pub = h.connect("pub")
    for i in range(9):
        pub.send(Publish(f"jobs/{i}", b"j", qos=1, packet_id=i + 1))
    counts = [len(publishes(m.take())) for m in members]
    assert counts == [3, 3, 3]


def test_no_local_and_subscription_identifiers() -> None:
    h = Harness()
    c = h.connect("c", MQTT_5)
    c.take()
    subscribe(c, Subscription("t/#", 0, no_local=True))
    subscribe(c, Subscription("t/+", 0), props=Properties.of((P.SUBSCRIPTION_IDENTIFIER, 7)),
              pid=2)
    c.send(Publish("t/x", b"own"))
    (p,) = publishes(c.take())  # only via t/+ (no-local hides the t/# match)
    assert p.properties.get_all(P.SUBSCRIPTION_IDENTIFIER) == [7]


def test_message_expiry_drops_and_decrements() -> None:
    h = Harness()
    s = h.connect("s", MQTT_5, clean=False, expiry=300)
    subscribe(s, Subscription("e/#", 1))
    s.send(Disconnect())
    pub = h.connect("pub", MQTT_5)
    pub.send(Publish("e/short", b"s", qos=1, packet_id=1,
                     properties=Properties.of((P.MESSAGE_EXPIRY_INTERVAL, 2))),
             Publish("e/long", b"l", qos=1, packet_id=2,
                     properties=Properties.of((P.MESSAGE_EXPIRY_INTERVAL, 60))))
    h.advance(10_000)
    s2 = h.connect("s", MQTT_5, clean=False, expiry=300)
    (p,) = publishes(s2.take())
    assert p.payload == b"l" and p.properties.get(P.MESSAGE_EXPIRY_INTERVAL) == 50


def test_properties_pass_through() -> None:
    h = Harness()
    s = h.connect("s", MQTT_5)
    subscribe(s, Subscription("t", 0))
    props = Properties.of((P.USER_PROPERTY, ("k", "v")), (P.CONTENT_TYPE, "text/plain"),
                          (P.RESPONSE_TOPIC, "reply"), (P.CORRELATION_DATA, b"\x01\x02"),
                          (P.PAYLOAD_FORMAT_INDICATOR, 1))
    pub = h.connect("pub", MQTT_5)
    pub.send(Publish("t", b"x", properties=props))
    (p,) = publishes(s.take())
    assert p.properties == props


def test_topic_aliases_both_ways() -> None:
    h = Harness()
    s = h.connect("s", MQTT_5, props={P.TOPIC_ALIAS_MAXIMUM: 4})
    subscribe(s, Subscription("long/topic", 0))
    pub = h.connect("pub", MQTT_5)
    pub.send(Publish("long/topic", b"1", properties=Properties.of((P.TOPIC_ALIAS, 1))),
             Publish("", b"2", properties=Properties.of((P.TOPIC_ALIAS, 1))))
    first, second = publishes(s.take())
    assert first.topic == "long/topic" and first.properties.get(P.TOPIC_ALIAS) == 1
    assert second.topic == "" and second.properties.get(P.TOPIC_ALIAS) == 1
    pub.send(Publish("", b"3", properties=Properties.of((P.TOPIC_ALIAS, 2))))
    assert pub.take()[-1].reason_code == ReasonCode.PROTOCOL_ERROR and pub.closed


def test_outbound_maximum_packet_size_drops_without_disconnect() -> None:
    h = Harness()
    s = h.connect("s", MQTT_5, props={P.MAXIMUM_PACKET_SIZE: 64})
    subscribe(s, Subscription("t", 1))
    pub = h.connect("pub")
    pub.send(Publish("t", b"x" * 100, qos=1, packet_id=1), Publish("t", b"small", qos=1,
                                                                    packet_id=2))
    assert [p.payload for p in publishes(s.take())] == [b"small"]
    assert not s.closed and h.broker.stats.dropped["packet_too_large"] == 1


def test_inbound_receive_maximum_exceeded() -> None:
    log = MemoryEngine()
    log.durable_end = lambda: 0  # type: ignore[method-assign]  # nothing ever becomes durable
    h = Harness(BrokerConfig(sys_interval_ms=0, receive_maximum=2), log=log)
    s = h.connect("s", clean=False)
    s.send(Subscribe(1, (Subscription("t", 1),)))  # its SUBACK waits for durability too
    pub = h.connect("pub", MQTT_5)
    pub.take()
    for i in range(3):
        pub.send(Publish("t", b"x", qos=1, packet_id=i + 1))
    assert pub.take()[-1].reason_code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED


# ------------------------------------------------------------------------------------ bad input


def test_malformed_bytes_close_only_that_connection() -> None:
    h = Harness()
    good = h.connect("good")
    subscribe(good, Subscription("t", 0))
    bad = h.connect("bad", MQTT_5)
    bad.take()
    bad.send_bytes(b"\x30\x04\x00\x09ab")  # topic length runs past the packet
    assert bad.closed and bad.take()[-1].reason_code == ReasonCode.MALFORMED_PACKET
    pub = h.connect("pub")
    pub.send(Publish("t", b"still here"))
    assert [p.payload for p in publishes(good.take())] == [b"still here"]


def test_first_packet_must_be_connect() -> None:
    h = Harness()
    c = h.open()
    c.send_bytes(b"\xc0\x00")  # PINGREQ
    assert c.closed and c.take() == []


def test_server_only_packets_from_a_client_are_protocol_errors() -> None:
    h = Harness()
    c = h.connect("c", MQTT_5)
    c.take()
    c.send(Suback(1, (0,)))
    assert c.closed and c.take()[-1].reason_code == ReasonCode.PROTOCOL_ERROR


def test_congested_subscriber_is_bounded() -> None:
    h = Harness(BrokerConfig(sys_interval_ms=0, max_queued=10))
    s = h.connect("s")
    subscribe(s, Subscription("t", 1), Subscription("z", 0), pid=1)
    h.broker.set_congested(s.id, True)
    pub = h.connect("pub")
    for i in range(100):
        pub.send(Publish("t", b"x", qos=1, packet_id=i + 1), Publish("z", b"y"))
    session = h.broker.sessions["s"]
    assert len(session.queue) + len(session.inflight) <= 10
    assert publishes(s.take()) == []
    assert h.broker.stats.dropped["qos0_congested"] == 100
    h.broker.set_congested(s.id, False)
    assert len(publishes(s.take())) == 10


# ------------------------------------------------------------------------------------ durability


class HeldLog(MemoryEngine):
    """A memory engine whose durable point the test moves by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.durable = 0

    def durable_end(self) -> int:
        return min(self.durable, self.end_offset())


def subscribe_durably(h: Harness, log: HeldLog, client, sub: Subscription) -> None:
    """A persistent session's SUBACK leaves once its session record is durable."""
    client.send(Subscribe(1, (sub,)))
    assert not any(isinstance(p, Suback) for p in client.take()), "SUBACK before its record"
    log.durable = log.end_offset()
    h.broker.durable_progress()
    assert [type(p) for p in client.take()] == [Suback]


def test_puback_waits_for_durability_of_a_logged_publish() -> None:
    log = HeldLog()
    h = Harness(log=log)
    s = h.connect("s", clean=False)
    subscribe_durably(h, log, s, Subscription("q", 1))
    pub = h.connect("pub")
    pub.take()
    pub.send(Publish("q", b"m", qos=1, packet_id=5))
    assert pub.take() == []
    log.durable = log.end_offset()
    h.broker.durable_progress()
    assert pub.take() == [Puback(5)]
    clean = h.connect("clean")
    subscribe(clean, Subscription("c", 1))
    pub.send(Publish("c", b"m", qos=1, packet_id=6))
    assert pub.take() == [Puback(6)]  # clean-session target only: not logged, acked at once


def test_restart_recovers_sessions_queue_and_retained() -> None:
    log = MemoryEngine()
    h = Harness(log=log)
    s = h.connect("s", clean=False)
    subscribe(s, Subscription("q/#", 1), Subscription("$share/g/jobs", 1), pid=1)
    s.send(Disconnect())
    pub = h.connect("pub")
    for i in range(4):
        pub.send(Publish("q/x", str(i).encode(), qos=1, packet_id=i + 1))
    pub.send(Publish("keep", b"r", retain=True))
    s1 = h.connect("s", clean=False)
    delivered = publishes(s1.take())
    s1.send(Puback(delivered[0].packet_id), Puback(delivered[1].packet_id))
    s1.drop()
    h2 = Harness(log=log)  # a restart over the same log
    assert h2.broker.recovered_records > 0
    s2 = h2.connect("s", clean=False)
    packets = s2.take()
    assert packets[0] == Connack(True, 0)
    assert [p.payload for p in publishes(packets)] == [b"2", b"3"]
    assert sorted(h2.broker.sessions["s"].subscriptions) == ["$share/g/jobs", "q/#"]
    assert [m.topic for m in h2.broker.retained.all()] == ["keep"]
    pub2 = h2.connect("pub")
    pub2.send(Publish("jobs", b"j", qos=1, packet_id=1))
    assert [p.payload for p in publishes(s2.take())] == [b"j"]


def test_checkpoint_compacts_and_survives_another_restart() -> None:
    log = MemoryEngine()
    h = Harness(BrokerConfig(sys_interval_ms=0, checkpoint_bytes=1), log=log)
    s = h.connect("s", clean=False)
    subscribe(s, Subscription("q", 1))
    s.send(Disconnect())
    pub = h.connect("pub")
    for i in range(2000):
        pub.send(Publish("q", b"%d" % i, qos=1, packet_id=i % 60000 + 1))
        s_acked = None  # noqa: F841
    h.advance(1)  # tick: the log is long -> checkpoint
    assert h.broker.stats.checkpoints >= 1
    assert log.start_offset() > 0
    h2 = Harness(log=log)
    s2 = h2.connect("s", clean=False)
    got = [p.payload for p in publishes(s2.take())]
    assert got == [b"%d" % i for i in range(64)]  # the inflight window; the rest queued
    assert len(h2.broker.sessions["s"].queue) == 1000 - 64  # max_queued default 1000


def test_incomplete_checkpoint_is_ignored() -> None:
    from real.mqtt.persist import publish_record, recover, session_record
    from real.mqtt.session import Delivery, Message, Session

    log = MemoryEngine()
    h = Harness(log=log)
    s = h.connect("s", clean=False)
    subscribe(s, Subscription("q", 1))
    s.send(Disconnect())
    pub = h.connect("pub")
    pub.send(Publish("q", b"one", qos=1, packet_id=1))
    # a checkpoint that crashed before its ckp record: tagged records, no ckp
    ghost = Session("s", 10, 4, 0)
    msg = Message("q", b"ghost", 1, False, Properties(), -1, "", 0)
    log.append([session_record(ghost, 0, generation=99),
                publish_record(msg, [("s", Delivery(msg, 1, False))], 0, False, generation=99)])
    state = recover(log.read(0, 10_000, 1 << 30))
    assert [d.message.payload for d in state.sessions["s"].queue] == [b"one"]
    assert state.sessions["s"].expiry_s == 0xFFFFFFFF


def test_cluster_log_positions_survive_restarts_and_checkpoints() -> None:
    """The state log says how far a node routed each cluster log partition: the highest place a
    routed message's `pub` names (the next message after it) or a `cur` record; a checkpoint
    keeps the places, index within a batch included."""
    from real.mqtt.persist import cursor_record, recover
    from real.mqtt.session import Message

    log = MemoryEngine()
    h = Harness(log=log)
    s = h.connect("s", clean=False)
    subscribe(s, Subscription("c/#", 1))
    s.drop()
    log.append([cursor_record(0, (7, 0), 0), cursor_record(1, (3, 0), 0)])
    broker = h.broker
    for partition, offset, index in ((0, 9, 0), (0, 9, 1), (1, 2, 5), (2, 4, 0)):
        msg = Message(f"c/{partition}", b"%d" % index, 1, False, Properties(), -1, "p", 0)
        broker.route_committed(msg, partition, offset, index)
    assert recover(log.read(0, 10_000, 1 << 30)).cluster_positions == {
        0: (9, 2), 1: (3, 0), 2: (4, 1)}
    h2 = Harness(log=log)  # recovery checkpoints at once: the places move into cur records
    assert h2.broker.cluster_positions == {0: (9, 2), 1: (3, 0), 2: (4, 1)}
    assert log.start_offset() > 0
    h3 = Harness(log=log)
    assert h3.broker.cluster_positions == {0: (9, 2), 1: (3, 0), 2: (4, 1)}
    assert len(h3.broker.sessions["s"].queue) == 4


def test_same_inputs_same_bytes() -> None:
    def run() -> list[bytes]:
        h = Harness(BrokerConfig(sys_interval_ms=500))
        out: list[bytes] = []
        subs = [h.connect(f"s{i}", MQTT_5 if i % 2 else MQTT_3_1_1) for i in range(4)]
        for i, c in enumerate(subs):
            subscribe(c, Subscription("#" if i % 2 else "$share/g/a/+", i % 3))
        pub = h.connect("", MQTT_5)
        for i in range(20):
            pub.send(Publish(f"a/{i % 3}", b"p%d" % i, qos=i % 3, packet_id=(i + 1) if i % 3
                             else None, retain=i % 5 == 0))
            h.advance(100)
        for c in subs:
            out.extend(repr(p).encode() for p in c.take())
        return out

    assert run() == run()


def test_second_connect_with_a_bad_protocol_name_gets_a_valid_disconnect() -> None:
    h = Harness()
    c = h.connect("c", MQTT_5)
    c.take()
    second = bytearray(encode(Connect("c", protocol_version=MQTT_5), MQTT_5))
    second[4] ^= 0x40  # "MQTT" -> "\rQTT": an unsupported protocol (0x84 is not a DISCONNECT code)
    c.send_bytes(bytes(second))
    (packet,) = c.take()
    assert packet.reason_code == ReasonCode.PROTOCOL_ERROR and c.closed


# ------------------------------------------------------------------------------------ auth, ACL


def auth_harness() -> Harness:
    from real.mqtt.auth import Acl, Authenticator, PasswordFile, hash_password

    passwords = PasswordFile.parse(f"alice:{hash_password(b'pw', b'0123456789ab')}\n")
    acl = Acl.parse('default = "allow"\n'
                    '[[rule]]\npermission = "deny"\naction = "all"\ntopic = "secret/#"\n'
                    '[[rule]]\npermission = "allow"\naction = "all"\ntopic = "home/%u/#"\n'
                    'user = "alice"\n'
                    '[[rule]]\npermission = "deny"\naction = "all"\ntopic = "home/#"\n')
    return Harness(authenticate=Authenticator(passwords, allow_anonymous=False).login, acl=acl)


@pytest.mark.parametrize("version,bad_code", [(MQTT_3_1_1, 4), (MQTT_5, 0x86)])
def test_password_check(version: int, bad_code: int) -> None:
    h = auth_harness()
    ok = h.connect("a", version, username="alice", password=b"pw")
    assert ok.take()[0].reason_code == 0
    bad = h.connect("b", version, username="alice", password=b"nope")
    assert bad.take()[0].reason_code == bad_code and bad.closed
    anon = h.connect("c", version)  # the harness listener is not anonymous-ok by default
    assert anon.take()[0].reason_code == 0  # Harness.open passes anonymous_ok=True
    assert h.broker.stats.auth_failures == 1


def test_acl_on_subscribe_publish_and_identity() -> None:
    h = auth_harness()
    alice = h.connect("a", MQTT_5, username="alice", password=b"pw")
    alice.take()
    codes = subscribe(alice, Subscription("secret/x", 1), Subscription("home/alice/#", 1),
                      Subscription("home/bob/#", 1))[0].reason_codes
    assert codes == (ReasonCode.NOT_AUTHORIZED, 1, ReasonCode.NOT_AUTHORIZED)
    alice.send(Publish("secret/x", b"s", qos=1, packet_id=1), Publish("home/alice/t", b"ok",
                                                                       qos=1, packet_id=2))
    packets = alice.take()
    assert Puback(1, ReasonCode.NOT_AUTHORIZED) in packets
    assert [p.payload for p in publishes(packets)] == [b"ok"]
    anon = h.connect("x", MQTT_3_1_1)  # anonymous: "home/%u/#" cannot apply
    anon.take()
    assert subscribe(anon, Subscription("home/alice/#", 0))[0].reason_codes == (0x80,)


def test_wildcards_granted_in_part_filter_denied_topics_at_delivery() -> None:
    """A subscription the ACL denies only in part is granted; its deliveries skip the denied
    topics, and a shared group gives such a message to a member that may receive it."""
    from real.mqtt.auth import Acl

    acl = Acl.parse('default = "allow"\n[[rule]]\npermission = "deny"\naction = "subscribe"\n'
                    'topic = "hidden/#"\nclient_id = "m0"\n')
    h = Harness(acl=acl)
    members = [h.connect(f"m{i}") for i in range(2)]
    for m in members:
        assert subscribe(m, Subscription("$share/g/#", 1))[0].reason_codes == (1,)
    assert subscribe(members[0], Subscription("hidden/+", 1),
                     pid=2)[0].reason_codes == (0x80,)  # denied as a whole
    pub = h.connect("pub")
    for i in range(4):
        pub.send(Publish("open/x" if i % 2 else "hidden/x", b"%d" % i, qos=1, packet_id=i + 1))
    got = [[p.payload for p in publishes(m.take())] for m in members]
    assert sorted(got[0] + got[1]) == [b"0", b"1", b"2", b"3"]  # none lost to m0's ACL
    assert not any(p in got[0] for p in (b"0", b"2"))


def test_qos2_packet_ids_survive_a_restart() -> None:
    """A restart must not reuse a QoS 2 packet id the subscriber still holds (found by the
    simulator, tests/model/test_mqtt_sim.py): PUBREL is owed for a PUBREC'd id, an unanswered
    PUBLISH is re-sent with DUP under its id, and new messages take other ids."""
    log = MemoryEngine()
    h = Harness(log=log)
    s = h.connect("s", clean=False)
    subscribe(s, Subscription("q", 2))
    pub = h.connect("pub")
    pub.send(Publish("q", b"a", qos=2, packet_id=1), Publish("q", b"b", qos=2, packet_id=2),
             Pubrel(1), Pubrel(2))
    first, second = publishes(s.take())
    assert first.qos == second.qos == 2
    s.send(Pubrec(first.packet_id))
    assert s.take() == [Pubrel(first.packet_id)]
    s.drop()  # then the broker "crashes": a new broker over the same log
    h2 = Harness(log=log)
    s2 = h2.connect("s", clean=False)
    packets = s2.take()
    assert Pubrel(first.packet_id) in packets
    (again,) = publishes(packets)
    assert (again.payload, again.packet_id, again.dup) == (b"b", second.packet_id, True)
    pub2 = h2.connect("pub")
    pub2.send(Publish("q", b"c", qos=2, packet_id=1))
    (fresh,) = publishes(s2.take())
    assert fresh.packet_id not in (first.packet_id, second.packet_id)
    s2.send(Pubcomp(first.packet_id))
    assert first.packet_id not in h2.broker.sessions["s"].inflight


def test_acks_leave_in_receive_order() -> None:
    log = HeldLog()
    h = Harness(log=log)
    s = h.connect("s", clean=False)
    subscribe_durably(h, log, s, Subscription("logged", 1))
    pub = h.connect("pub")
    pub.take()
    pub.send(Publish("logged", b"1", qos=1, packet_id=1), Publish("clean", b"2", qos=1,
                                                                  packet_id=2))
    assert pub.take() == []  # the second ack waits behind the first, held for durability
    log.durable = log.end_offset()
    h.broker.durable_progress()
    assert pub.take() == [Puback(1), Puback(2)]


def test_client_publish_with_subscription_id_is_refused() -> None:
    h = Harness()
    c = h.connect("c", MQTT_5)
    c.take()
    c.send(Publish("t", b"x", properties=Properties.of((P.SUBSCRIPTION_IDENTIFIER, 3))))
    assert c.take()[-1].reason_code == ReasonCode.PROTOCOL_ERROR and c.closed


def test_connection_limit_closes_extra_connections_only() -> None:
    h = Harness(BrokerConfig(sys_interval_ms=0, max_connections=2))
    a = h.connect("a")
    b = h.connect("b")
    c = h.connect("c")
    assert c.closed and c.take() == []
    assert not a.closed and not b.closed and h.broker.stats.dropped["connection_limit"] == 1
    b.send(Disconnect())
    d = h.connect("d")  # room again
    assert d.take()[0].reason_code == 0


def test_v5_connect_and_publish_with_properties_in_one_read() -> None:
    """A v5 client may send CONNECT and PUBLISH in one TCP segment: the inline PUBLISH parser must
    read the PUBLISH as v5 (properties) although the version was learnt in the same buffer.
    (Found by the Kafka bridge test: the payload arrived prefixed with its properties.)"""
    h = Harness()
    sub = h.connect("sub", MQTT_5)
    subscribe(sub, Subscription("t/#", qos=1))
    pub = h.open(MQTT_5)
    props = Properties.of((PropertyId.CONTENT_TYPE, "text/plain"),
                          (PropertyId.USER_PROPERTY, ("k", "v")))
    pub.send(Connect("pub", protocol_version=MQTT_5),
             Publish(topic="t/x", payload=b"22", qos=1, packet_id=7, properties=props),
             Publish(topic="t/x", payload=b"23", qos=1, packet_id=8, properties=props))
    got = [p for p in sub.take() if isinstance(p, Publish)]
    assert [p.payload for p in got] == [b"22", b"23"]
    assert got[0].properties.get(PropertyId.CONTENT_TYPE) == "text/plain"
