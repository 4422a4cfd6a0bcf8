"""Both sans-I/O brokers satisfy `real.server.protocol.ProtocolCore`, signature by signature, and
their `next_deadline_ms` tells a host when to tick (keep-alive for MQTT, long polls for Kafka)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from real.kafka import api
from real.kafka.broker import KafkaBroker, KafkaConfig
from real.mqtt import MQTT_5, Connect, Pingreq
from real.mqtt.broker import KEEP_ALIVE_CHECK_MS, Broker, BrokerConfig
from real.server.protocol import ProtocolCore
from tests.kafka.harness import Harness as KafkaHarness
from tests.kafka.harness import fetch_body, fetched
from tests.mqtt.harness import Harness as MqttHarness

CORES = [Broker, KafkaBroker]
METHODS = sorted(name for name, value in vars(ProtocolCore).items()
                 if inspect.isfunction(value) and not name.startswith("_"))


def test_the_protocol_has_the_documented_methods() -> None:
    assert METHODS == ["closed", "drain", "durable_progress", "invariants", "next_deadline_ms",
                       "open", "receive", "set_congested", "tick"]


@pytest.mark.parametrize("core", CORES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", METHODS)
def test_core_matches_the_protocol(core: type, name: str) -> None:
    """Same parameter names, kinds, defaults and annotations, same return annotation."""
    want = inspect.signature(getattr(ProtocolCore, name))
    got = inspect.signature(getattr(core, name))
    assert got == want, f"{core.__name__}.{name}{got} != ProtocolCore.{name}{want}"


def test_cores_are_protocol_cores_for_a_type_checker() -> None:
    mqtt: ProtocolCore = MqttHarness().broker
    kafka: ProtocolCore = KafkaHarness().broker
    for core in (mqtt, kafka):
        core.invariants()
        assert core.drain() == []


def test_clocks_are_integer_milliseconds() -> None:
    h = MqttHarness()
    assert type(h.broker.clock()) is int
    assert type(h.broker.next_deadline_ms()) is int
    k = KafkaHarness()
    assert type(k.broker.clock()) is int
    assert k.broker.next_deadline_ms() is None  # nothing timed: no long poll, no group


# ------------------------------------------------------------------------ MQTT: keep-alive


def _tick_at_deadlines(h: MqttHarness, until_ms: int, stop: Callable[[], bool]) -> list[int]:
    """Tick the broker only at its own deadlines (as a host does), until `stop()` or `until_ms`;
    returns the deadlines used."""
    seen = []
    while not stop() and h.clock.now < until_ms:
        due = h.broker.next_deadline_ms()
        assert due is not None and due >= h.clock.now
        assert due - h.clock.now <= KEEP_ALIVE_CHECK_MS
        h.clock.now = max(due, h.clock.now + 1)
        seen.append(h.clock.now)
        h.broker.tick()
        h.pump()
        h.broker.invariants()
    return seen


def test_mqtt_deadline_drives_the_keep_alive_timeout() -> None:
    """A host that ticks only at `next_deadline_ms` closes a silent client after 1.5 x its
    keep-alive, no later than one check interval past it."""
    h = MqttHarness()
    start = h.clock.now
    c = h.connect("c", MQTT_5, keep_alive=10)
    c.take()
    _tick_at_deadlines(h, start + 60_000, lambda: c.closed)
    assert c.closed
    assert start + 15_000 < h.clock.now <= start + 15_000 + KEEP_ALIVE_CHECK_MS


def test_mqtt_deadline_lets_a_pinging_client_live() -> None:
    h = MqttHarness()
    start = h.clock.now
    c = h.connect("c", MQTT_5, keep_alive=10)
    for step in range(1, 7):
        _tick_at_deadlines(h, start + step * 9_000, lambda: c.closed)
        c.send(Pingreq())
    assert not c.closed


def test_mqtt_deadline_is_never_in_the_past() -> None:
    h = MqttHarness(BrokerConfig(sys_interval_ms=1_000))
    h.clock.now += 10_000  # not ticked meanwhile: its checks are overdue
    assert h.broker.next_deadline_ms() == h.clock.now
    h.broker.tick()
    assert h.broker.next_deadline_ms() == h.clock.now + KEEP_ALIVE_CHECK_MS


def test_mqtt_open_refuses_anonymous_by_default() -> None:
    """`anonymous_ok` defaults to False (the protocol's default): the authenticator sees it."""
    seen = []

    def login(username: str | None, password: bytes | None, anonymous_ok: bool) -> int:
        seen.append(anonymous_ok)
        return 0 if anonymous_ok or username else 0x87

    h = MqttHarness(authenticate=login)
    h.broker.open(99, peer="p")
    h.broker.receive(99, encode_connect("anon"))
    h.broker.open(98, peer="p", anonymous_ok=True)
    h.broker.receive(98, encode_connect("anon2"))
    assert seen == [False, True]


def encode_connect(client_id: str) -> bytes:
    from real.mqtt import encode

    return encode(Connect(client_id, protocol_version=MQTT_5), MQTT_5)


# ------------------------------------------------------------------------ Kafka: long poll


def test_kafka_deadline_is_the_long_poll_expiry() -> None:
    h = KafkaHarness(KafkaConfig(default_engine="memory", fetch_wait_max_ms=300))
    h.create_topic("t")
    c = h.open()
    assert h.broker.next_deadline_ms() is None
    c.send(api.FETCH, 11, fetch_body("t", 0, max_wait_ms=200))
    due = h.broker.next_deadline_ms()
    assert due == h.clock.now + 200
    h.clock.now = due - 1
    h.broker.tick()
    h.pump()
    assert c.take() == []
    h.clock.now = due
    h.broker.tick()
    h.pump()
    ((_, body),) = c.take()
    assert fetched(body)[1] == []
    assert h.broker.next_deadline_ms() is None


def test_kafka_set_congested_is_recorded_and_output_still_flows() -> None:
    """Kafka's `set_congested` is a documented no-op for output (every reply answers a request
    the client pipelined); it accepts unknown connections as the protocol requires."""
    h = KafkaHarness(KafkaConfig(default_engine="memory"))
    h.create_topic("t")
    c = h.open()
    h.broker.set_congested(c.id, True)
    h.broker.set_congested(12345, True)  # unknown: ignored
    assert h.broker.conns[c.id].congested
    c.send(api.FETCH, 11, fetch_body("t", 0, max_wait_ms=0))
    ((_, body),) = c.take()
    assert fetched(body)[0]["error_code"] == 0
    h.broker.set_congested(c.id, False)
    assert not h.broker.conns[c.id].congested
    h.broker.invariants()


def test_kafka_open_accepts_and_ignores_listener_and_anonymous() -> None:
    h = KafkaHarness(KafkaConfig(default_engine="memory"))
    h.broker.open(77, peer="x:1", listener="tls", anonymous_ok=True)
    assert h.broker.conns[77].peer == "x:1"
    h.broker.closed(77)
    assert 77 not in h.broker.conns
