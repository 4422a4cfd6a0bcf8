"""Behaviours on the MQTT publish path that `make mutate` found untested (reports/mutate.md):
each test kills one surviving cosmic-ray mutant of `_publish_in`, `_route` or `_start_inflight`
through public behaviour only."""

from __future__ import annotations

from real.mqtt import (
    MQTT_3_1_1,
    MQTT_5,
    Properties,
    PropertyId,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Subscribe,
    Subscription,
)
from tests.mqtt.harness import Harness


def subscribed(h: Harness, client_id: str, topic_filter: str, qos: int, version: int = MQTT_5):
    c = h.connect(client_id, version)
    c.send(Subscribe(1, (Subscription(topic_filter, qos),)))
    c.take()
    return c


def publishes(client) -> list[Publish]:
    return [p for p in client.take() if isinstance(p, Publish)]


def test_a_topic_alias_above_the_maximum_closes_the_connection() -> None:
    """(Alias 0 never reaches the broker: the codec refuses it as a protocol error.)"""
    h = Harness()  # topic_alias_max 16 (the CONNACK's Topic Alias Maximum)
    pub = h.connect("pub", MQTT_5)
    pub.take()
    pub.send(Publish("t", b"x", properties=Properties.of((PropertyId.TOPIC_ALIAS, 17))))
    packets = pub.take()
    assert pub.closed
    assert packets[-1].reason_code == ReasonCode.TOPIC_ALIAS_INVALID


def test_v5_qos1_publish_nobody_receives_is_acked_with_no_matching_subscribers() -> None:
    h = Harness()
    pub = h.connect("pub", MQTT_5)
    pub.take()
    pub.send(Publish("nobody", b"x", qos=1, packet_id=1))
    assert pub.take() == [Puback(1, ReasonCode.NO_MATCHING_SUBSCRIBERS)]
    subscribed(h, "s", "somebody", 1)
    pub.send(Publish("somebody", b"x", qos=1, packet_id=2))
    assert pub.take() == [Puback(2, 0)]


def test_a_resent_qos2_publish_is_acked_with_success() -> None:
    h = Harness()
    subscribed(h, "s", "q", 2)
    pub = h.connect("pub", MQTT_5)
    pub.take()
    pub.send(Publish("q", b"m", qos=2, packet_id=4))
    assert pub.take() == [Pubrec(4, 0)]
    pub.send(Publish("q", b"m", qos=2, packet_id=4, dup=True))  # before PUBREL: a duplicate
    assert pub.take() == [Pubrec(4, 0)]


def test_a_first_delivery_is_not_marked_dup_and_a_shared_one_not_retained() -> None:
    h = Harness()
    plain = subscribed(h, "plain", "t", 1, MQTT_3_1_1)
    shared = subscribed(h, "shared", "$share/g/t", 1)
    pub = h.connect("pub")
    pub.send(Publish("t", b"m", qos=1, packet_id=1))
    (first,) = publishes(plain)
    assert (first.dup, first.retain) == (False, False)
    (got,) = publishes(shared)
    assert (got.dup, got.retain) == (False, False)


def test_a_refused_qos2_publish_frees_its_packet_id() -> None:
    """MQTT 5: a PUBREC with a failure reason ends the exchange, so the id is free at once."""
    h = Harness()
    s = subscribed(h, "s", "t", 2)
    pub = h.connect("pub", MQTT_5)
    pub.take()
    pub.send(Publish("$nope", b"x", qos=2, packet_id=1))  # '$' topics: not authorized
    assert pub.take() == [Pubrec(1, ReasonCode.NOT_AUTHORIZED)]
    pub.send(Publish("t", b"y", qos=2, packet_id=1))  # the same id, a new message
    assert pub.take() == [Pubrec(1, 0)]
    assert [p.payload for p in publishes(s)] == [b"y"]


def test_the_topic_alias_maximum_itself_is_a_valid_alias() -> None:
    h = Harness()
    s = subscribed(h, "s", "t", 0)
    pub = h.connect("pub", MQTT_5)
    pub.take()
    pub.send(Publish("t", b"x", properties=Properties.of((PropertyId.TOPIC_ALIAS, 16))))
    assert not pub.closed and [p.payload for p in publishes(s)] == [b"x"]


def test_v5_qos2_exchange_completes_with_success_codes() -> None:
    h = Harness()
    subscribed(h, "s", "t", 2)
    pub = h.connect("pub", MQTT_5)
    pub.take()
    pub.send(Publish("t", b"x", qos=2, packet_id=7))
    assert pub.take() == [Pubrec(7, 0)]
    pub.send(Pubrel(7))
    assert pub.take() == [Pubcomp(7, 0)]
    pub.send(Pubrel(7))  # the id is free now
    assert pub.take() == [Pubcomp(7, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)]


def test_no_local_hides_only_the_subscribers_own_messages() -> None:
    h = Harness()
    a = h.connect("a", MQTT_5)
    a.send(Subscribe(1, (Subscription("t", 0, no_local=True),)))
    a.take()
    b = h.connect("b", MQTT_5)
    b.take()
    b.send(Publish("t", b"from b"))
    a.send(Publish("t", b"from a"))
    assert [p.payload for p in publishes(a)] == [b"from b"]


# ---- a bridge that cannot copy (real/kafka/bridge.py raises BridgeUnavailable) ------------------


class _Bridge:
    """The broker's bridge hook, copying nothing while `down` (its Kafka topic is missing)."""

    def __init__(self) -> None:
        self.down = True
        self.copied: list[str] = []

    def mqtt_published(self, msg: object) -> None:
        from real.mqtt.errors import BridgeUnavailable

        if self.down:
            raise BridgeUnavailable("bridge: Kafka topic 'k' does not exist")
        self.copied.append(msg.topic)  # type: ignore[attr-defined]

    def is_durable(self, token: object) -> bool:
        return True


def bridged_harness() -> tuple[Harness, _Bridge]:
    h = Harness()
    bridge = _Bridge()
    h.broker.bridge = bridge
    return h, bridge


def test_a_v5_qos1_publish_the_bridge_cannot_copy_is_refused_and_not_routed() -> None:
    h, _bridge = bridged_harness()
    sub = subscribed(h, "sub", "s/#", 1)
    pub = h.connect("pub", MQTT_5)
    pub.take()
    pub.send(Publish("s/a", b"x", qos=1, packet_id=1))
    (ack,) = pub.take()
    assert isinstance(ack, Puback) and ack.reason_code == ReasonCode.UNSPECIFIED_ERROR
    assert publishes(sub) == [] and not pub.closed


def test_a_v311_qos1_publish_the_bridge_cannot_copy_closes_the_connection_unacked() -> None:
    h, _bridge = bridged_harness()
    pub = h.connect("pub", MQTT_3_1_1)
    pub.take()
    pub.send(Publish("s/a", b"x", qos=1, packet_id=1))
    assert not [p for p in pub.take() if isinstance(p, Puback)] and pub.closed


def test_qos0_publishes_the_bridge_cannot_copy_are_still_routed_on_both_versions() -> None:
    h, _bridge = bridged_harness()
    sub = subscribed(h, "sub", "s/#", 0)
    for version in (MQTT_3_1_1, MQTT_5):
        pub = h.connect(f"pub{version}", version)
        pub.take()
        pub.send(Publish("s/a", str(version).encode(), qos=0))
        assert not pub.closed, version
    assert [p.payload for p in publishes(sub)] == [b"4", b"5"]


def test_a_refused_qos2_publish_keeps_no_packet_id_so_its_resend_is_processed() -> None:
    h, bridge = bridged_harness()
    sub = subscribed(h, "sub", "s/#", 2)
    pub = h.connect("pub", MQTT_5)
    pub.take()
    pub.send(Publish("s/a", b"x", qos=2, packet_id=9))
    (rec,) = pub.take()
    assert isinstance(rec, Pubrec) and rec.reason_code == ReasonCode.UNSPECIFIED_ERROR
    bridge.down = False
    pub.send(Publish("s/a", b"x", qos=2, packet_id=9, dup=True))
    (rec,) = pub.take()
    assert isinstance(rec, Pubrec) and rec.reason_code == 0
    assert bridge.copied == ["s/a"] and [p.payload for p in publishes(sub)] == [b"x"]


def test_a_message_expiry_interval_of_zero_expires_a_queued_message() -> None:
    """Expiry interval 0: the message's lifetime is over at once; queued for an offline session
    it is not delivered later (a mutant read 0 as 'no expiry')."""
    h = Harness()
    sub = h.connect("sub", MQTT_5, clean=False, expiry=3600)
    sub.send(Subscribe(1, (Subscription("t", 1),)))
    sub.take()
    sub.drop()
    pub = h.connect("pub", MQTT_5)
    pub.take()
    pub.send(Publish("t", b"gone", qos=1, packet_id=1,
                     properties=Properties.of((PropertyId.MESSAGE_EXPIRY_INTERVAL, 0))))
    pub.send(Publish("t", b"kept", qos=1, packet_id=2))
    pub.take()
    h.advance(1)
    again = h.connect("sub", MQTT_5, clean=False, expiry=3600)
    assert [p.payload for p in publishes(again)] == [b"kept"]
