"""paho-mqtt 2.x (MQTT 3.1.1 and 5, over TCP and WebSocket) against the broker under test.

Covers the issue's acceptance for paho: QoS 0/1/2 round trips, retained messages, wills, shared
subscriptions, persistent sessions, unsubscribe, wildcards and `$`-topics. Every test gets its
own broker (`broker` fixture); see conftest.py for how the broker is chosen and waited on.
Negative checks ("X is not delivered") first wait for a later message that must arrive (a
barrier), then watch briefly for stragglers (`expect_nothing`).
"""

from __future__ import annotations

import queue
import time
from collections import Counter
from collections.abc import Callable

import pytest

from tests.mqtt_clients.conftest import TRANSPORTS, V5, VERSIONS, WAIT, PahoClient, Received

pytestmark = pytest.mark.integration
Factory = Callable[..., PahoClient]
# Payload bytes that catch text handling: NUL, every high bit, CR/LF, invalid UTF-8.
BINARY = bytes(range(256)) + b"\x00\xff\r\n\xc3\x28"


def session_kwargs(version: int) -> dict[str, object]:
    """A persistent session: clean_session False (3.1.1) or clean_start False + 300 s expiry."""
    if version == V5:
        return {"clean": False, "session_expiry": 300}
    return {"clean": False}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("sub_qos", [0, 1, 2])
def test_round_trip_qos(mqtt_client: Factory, version: int, transport: str, sub_qos: int) -> None:
    """Publishes at QoS 0, 1, 2 arrive byte-exact at QoS min(publish QoS, subscription QoS)."""
    sub = mqtt_client("sub", version=version, transport=transport)
    pub = mqtt_client("pub", version=version, transport=transport)
    assert sub.subscribe("rt/data", sub_qos) == [sub_qos]
    sent = {pub_qos: bytes([pub_qos]) + BINARY for pub_qos in (0, 1, 2)}
    for pub_qos, payload in sent.items():
        pub.publish("rt/data", payload, pub_qos)
        got = sub.get()
        assert got.topic == "rt/data" and got.payload == payload
        assert got.qos == min(pub_qos, sub_qos), (pub_qos, sub_qos, got.qos)
        assert got.retain is False
    sub.expect_nothing()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_retained(mqtt_client: Factory, version: int, transport: str) -> None:
    """Retained: live subscribers get retain=0, late ones retain=1, an empty payload clears it."""
    live = mqtt_client("live", version=version, transport=transport)
    pub = mqtt_client("pub", version=version, transport=transport)
    assert live.subscribe("ret/#", 1) == [1]
    pub.publish("ret/kept", b"kept-value", 1, retain=True)
    pub.publish("ret/cleared", b"soon-gone", 1, retain=True)
    seen = {m.topic: m for m in live.collect(2)}
    assert seen["ret/kept"].payload == b"kept-value" and seen["ret/kept"].retain is False
    assert seen["ret/cleared"].retain is False

    late = mqtt_client("late", version=version, transport=transport)
    assert late.subscribe("ret/kept", 1) == [1]
    got = late.get()
    assert (got.topic, got.payload, got.retain, got.qos) == ("ret/kept", b"kept-value", True, 1)

    pub.publish("ret/cleared", b"", 1, retain=True)  # clears; delivered to live as normal
    cleared = live.get()
    assert (cleared.topic, cleared.payload, cleared.retain) == ("ret/cleared", b"", False)

    later = mqtt_client("later", version=version, transport=transport)
    assert later.subscribe("ret/#", 1) == [1]
    only = later.get()  # barrier: the kept one arrives; the cleared one must not
    assert (only.topic, only.retain) == ("ret/kept", True)
    later.expect_nothing()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_will_on_abrupt_close_only(mqtt_client: Factory, version: int, transport: str) -> None:
    """The will is published when the connection drops without DISCONNECT, not after one."""
    watcher = mqtt_client("watcher", version=version, transport=transport)
    assert watcher.subscribe("will/#", 1) == [1]

    clean = mqtt_client("clean", version=version, transport=transport, connect=False)
    clean.set_will("will/clean", b"clean-will", 1)
    clean.connect()
    clean.disconnect()

    dropped = mqtt_client("dropped", version=version, transport=transport, connect=False)
    dropped.set_will("will/dropped", b"dropped-will" + BINARY, 1)
    dropped.connect()
    dropped.drop()

    got = watcher.get()  # barrier: the dropped client's will arrives...
    assert got.topic == "will/dropped", f"clean DISCONNECT sent its will: {got}"
    assert got.payload == b"dropped-will" + BINARY and got.qos == 1
    watcher.expect_nothing()  # ...and the cleanly disconnected client's will never does


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_shared_subscription(mqtt_client: Factory, version: int, transport: str) -> None:
    """`$share/g/t` with 2 members: each of 100 messages goes to exactly one, both get some."""
    members = [mqtt_client(f"member{i}", version=version, transport=transport) for i in (1, 2)]
    for m in members:
        assert m.subscribe("$share/g/jobs", 1) == [1]
    pub = mqtt_client("pub", version=version, transport=transport)
    payloads = [f"job-{i:03d}".encode() for i in range(100)]
    for p in payloads:
        pub.publish("jobs", p, 1)
    got = _drain_members(members, len(payloads))
    counts = Counter(r.payload for batch in got for r in batch)
    assert sorted(counts) == payloads, "some message went to no member"
    assert max(counts.values()) == 1, f"delivered to both: {counts.most_common(3)}"
    assert all(batch for batch in got), [len(b) for b in got]
    assert all(r.topic == "jobs" and r.qos == 1 for batch in got for r in batch)
    for m in members:
        m.expect_nothing(0.2)


def _drain_members(members: list[PahoClient], total: int) -> list[list[Received]]:
    """What each member received, once `total` messages arrived between them (bounded)."""
    deadline = time.monotonic() + WAIT
    got: list[list[Received]] = [[] for _ in members]
    while sum(map(len, got)) < total:
        assert time.monotonic() < deadline, f"stalled at {[len(g) for g in got]} of {total}"
        for i, m in enumerate(members):
            try:
                got[i].append(m.messages.get(timeout=0.02))
            except queue.Empty:
                continue
    return got


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_session(mqtt_client: Factory, version: int, transport: str) -> None:
    """QoS 1 messages published while a persistent subscriber is away arrive on reconnect."""
    first = mqtt_client("durable", version=version, transport=transport,
                        **session_kwargs(version))
    assert first.subscribe("persist/t", 1) == [1]
    first.disconnect()

    pub = mqtt_client("pub", version=version, transport=transport)
    payloads = [f"offline-{i:02d}".encode() for i in range(50)]
    for p in payloads:
        pub.publish("persist/t", p, 1)

    again = mqtt_client("durable", version=version, transport=transport, connect=False,
                        **session_kwargs(version))
    assert again.connect().session_present is True
    got = again.collect(50)
    assert [m.payload for m in got] == payloads  # same publisher, same topic: in order
    assert all(m.qos == 1 and m.topic == "persist/t" for m in got)
    pub.publish("persist/t", b"live", 1)  # the subscription itself survived too
    assert again.get().payload == b"live"


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_stops_delivery(mqtt_client: Factory, version: int, transport: str) -> None:
    sub = mqtt_client("sub", version=version, transport=transport)
    pub = mqtt_client("pub", version=version, transport=transport)
    assert sub.subscribe("u/a", 1) == [1]
    assert sub.subscribe("u/b", 1) == [1]
    pub.publish("u/a", b"a1", 1)
    assert sub.get().payload == b"a1"
    codes = sub.unsubscribe("u/a")
    assert codes == ([0] if version == V5 else []), codes  # 5: Success; 3.1.1: no codes
    pub.publish("u/a", b"a2", 1)
    pub.publish("u/b", b"b1", 1)
    got = sub.get()
    assert (got.topic, got.payload) == ("u/b", b"b1"), f"delivered after UNSUBSCRIBE: {got}"
    sub.expect_nothing()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_wildcards_and_dollar_topics(mqtt_client: Factory, version: int, transport: str) -> None:
    """`+` is one level (possibly empty), `#` is the parent and all below; neither at the
    first level matches a topic starting with `$` (MQTT-4.7.2-1)."""
    filters = {"w/+/c": "plus", "w/#": "hash", "#": "all", "+/x": "plus-first"}
    subs = {f: mqtt_client(name, version=version, transport=transport)
            for f, name in filters.items()}
    for f, c in subs.items():
        assert c.subscribe(f, 1) == [1]
    pub = mqtt_client("pub", version=version, transport=transport)
    topics = ["w/a/c", "w//c", "w/a/b/c", "w", "w/c", "v/a/c", "$SYS/x", "$app/x", "a/x"]
    expected = {
        "w/+/c": ["w/a/c", "w//c"],
        "w/#": ["w/a/c", "w//c", "w/a/b/c", "w", "w/c"],
        "#": ["w/a/c", "w//c", "w/a/b/c", "w", "w/c", "v/a/c", "a/x"],
        "+/x": ["a/x"],
    }
    for t in topics:
        if t.startswith("$"):
            _publish_maybe_denied(pub, t)
        else:
            pub.publish(t, t.encode(), 1)
    pub.publish("end", b"end", 1)  # barrier for "#"
    for f, c in subs.items():
        want = expected[f]
        got = c.collect(len(want))
        assert sorted(m.topic for m in got) == sorted(want), f
        assert all(m.payload == m.topic.encode() for m in got)
    assert subs["#"].get().topic == "end"  # nothing `$` slipped in before the barrier
    for c in subs.values():
        c.expect_nothing(0.2)


def _publish_maybe_denied(pub: PahoClient, topic: str) -> None:
    """Publish to a `$` topic; a broker may refuse it (Mosquitto denies `$SYS/...` from
    clients), which is fine here: what matters is that `#` and `+/x` never deliver it."""
    info = pub.client.publish(topic, topic.encode(), 1)
    info.wait_for_publish(timeout=WAIT)
    assert info.is_published(), topic
