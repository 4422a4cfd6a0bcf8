"""`Broker.invariants()` catches planted corruption (the harness calls it after every input, so
every other test in tests/mqtt runs it on healthy states), and connection states only change
along `_NEXT`."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from real.mqtt import MQTT_5, Publish, Subscribe, Subscription
from real.mqtt.broker import (
    AWAITING_CONNECT,
    CLOSING,
    CONNECTED,
    Broker,
    BrokerConfig,
    Conn,
)
from real.mqtt.properties import NO_PROPERTIES
from real.mqtt.session import Delivery, Inflight, Message
from real.storage import MemoryEngine
from tests.mqtt.harness import Harness


def _setup() -> tuple[Harness, Broker, Conn]:
    """A persistent subscriber with one QoS 1 message in flight, offline ones queued."""
    h = Harness(BrokerConfig(sys_interval_ms=0, max_inflight=2, max_queued=3))
    sub = h.connect("sub", MQTT_5, clean=False, expiry=3600)
    sub.send(Subscribe(1, (Subscription("t", 1),)))
    pub = h.connect("pub")
    pub.send(Publish("t", b"m", 1, packet_id=1))
    sub.take()
    h.broker.invariants()
    return h, h.broker, h.broker.conns[sub.id]


def _message() -> Message:
    return Message("t", b"x", 1, False, NO_PROPERTIES, -1, "pub", 0)


def _bad_state(b: Broker, c: Conn) -> None:
    c.state = 1  # type: ignore[assignment]  # the integer states this enum replaced


def _pid_zero(b: Broker, c: Conn) -> None:
    assert c.session is not None
    c.session.inflight[0] = Inflight(Delivery(_message(), 1, False), 0)


def _pid_too_big(b: Broker, c: Conn) -> None:
    assert c.session is not None
    c.session.inbound_qos2.add(70_000)


def _pid_mismatch(b: Broker, c: Conn) -> None:
    assert c.session is not None
    (inflight,) = c.session.inflight.values()
    inflight.packet_id += 1


def _window_overflow(b: Broker, c: Conn) -> None:
    assert c.session is not None
    for pid in (7, 8):
        c.session.inflight[pid] = Inflight(Delivery(_message(), 1, False), pid)


def _queue_overflow(b: Broker, c: Conn) -> None:
    assert c.session is not None
    c.session.queue.extend(Delivery(_message(), 1, False) for _ in range(4))


def _released_qos1(b: Broker, c: Conn) -> None:
    assert c.session is not None
    (inflight,) = c.session.inflight.values()
    inflight.released = True  # only a QoS 2 delivery gets PUBREC


def _next_pid_zero(b: Broker, c: Conn) -> None:
    assert c.session is not None
    c.session.next_packet_id = 0


def _session_points_to_gone_conn(b: Broker, c: Conn) -> None:
    assert c.session is not None
    c.session.conn_id = 999


def _connected_without_session(b: Broker, c: Conn) -> None:
    assert c.session is not None
    del b.sessions[c.session.client_id]


def _connected_on_other_session(b: Broker, c: Conn) -> None:
    c.session = b.sessions["pub"]


def _negative_held_acks(b: Broker, c: Conn) -> None:
    c.acks_pending = -1


def _held_acks_without_queue(b: Broker, c: Conn) -> None:
    c.acks_pending = 1  # an ack held, but nothing in the durability queue


def _held_acks_out_of_order(b: Broker, c: Conn) -> None:
    # (behind the first: that one may be a cluster PUBREC re-queued behind its `qi` record)
    b._await_durable.extend([(3, c.id, b"", None), (5, c.id, b"", None), (4, c.id, b"", None)])


def _will_of_online_session(b: Broker, c: Conn) -> None:
    assert c.session is not None
    b._wills[c.session.client_id] = (0, _message())


def _offline_clean_session(b: Broker, c: Conn) -> None:
    session = b.sessions["pub"]
    b.conns.pop(session.conn_id or 0)
    session.conn_id = None  # an expiry-0 session outlived its connection


def _output_for_gone_conn(b: Broker, c: Conn) -> None:
    b._dirty[999] = c


def _alias_overflow(b: Broker, c: Conn) -> None:
    c.alias_out["a"] = 1  # the client allowed no aliases


CORRUPTIONS: list[Callable[[Broker, Conn], None]] = [
    _bad_state, _pid_zero, _pid_too_big, _pid_mismatch, _window_overflow, _queue_overflow,
    _released_qos1, _next_pid_zero, _session_points_to_gone_conn, _connected_without_session,
    _connected_on_other_session, _negative_held_acks, _held_acks_without_queue,
    _held_acks_out_of_order, _will_of_online_session, _offline_clean_session,
    _output_for_gone_conn, _alias_overflow,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_planted_corruption_is_caught(corrupt: Callable[[Broker, Conn], None]) -> None:
    _h, broker, conn = _setup()
    corrupt(broker, conn)
    with pytest.raises(AssertionError):
        broker.invariants()


def test_healthy_states_pass_through_a_whole_life() -> None:
    """Durable acks, a will, a takeover and a restart: invariants hold after every input."""
    log = MemoryEngine()
    h = Harness(BrokerConfig(sys_interval_ms=1000), log=log)
    sub = h.connect("sub", MQTT_5, clean=False, expiry=60)
    sub.send(Subscribe(1, (Subscription("#", 2),)))
    pub = h.connect("pub", MQTT_5, clean=False, expiry=60)
    for pid in range(1, 6):
        pub.send(Publish("t", b"m", 2 if pid % 2 else 1, packet_id=pid))
    h.advance(1500)
    again = h.connect("sub", MQTT_5, clean=False, expiry=60)  # takes the session over
    assert sub.closed and not again.closed
    again.drop()
    h.advance(61_000)  # the session expires
    assert "sub" not in h.broker.sessions
    h.broker.invariants()


def test_states_change_only_along_the_table() -> None:
    h = Harness()
    c = h.connect("c")
    conn = h.broker.conns[c.id]
    assert conn.state is CONNECTED
    with pytest.raises(AssertionError):
        conn.to(AWAITING_CONNECT)
    conn.to(CLOSING)
    conn.to(CLOSING)  # closing twice is fine
    with pytest.raises(AssertionError):
        conn.to(CONNECTED)


def test_a_fresh_connection_awaits_connect() -> None:
    h = Harness()
    client = h.open()
    conn = h.broker.conns[client.id]
    assert conn.state is AWAITING_CONNECT and conn.session is None
    client.send_bytes(b"\x10")  # half a CONNECT header: still waiting
    assert conn.state is AWAITING_CONNECT
