"""The MQTT broker's durability boundaries, one record at a time (STYLE habit 24).

Every acknowledgement that waits for the state log (PUBACK, PUBREC) and every outbound QoS 2
PUBLISH that waits for its packet-id record is checked with the durable point moved by hand to
exactly the acked record (its offset: the record is NOT durable yet, nothing may leave) and then
one past it (the record is durable: it must leave now). A `<` turned into `<=` (or the hold
dropped) where the broker compares offsets with `durable_end`/`ack_end` fails here.

Only public behaviour: `Broker.open/receive/drain/durable_progress` through tests/mqtt/harness.py,
and the log's own port (`read`, `end_offset`) to find where a record landed.
"""

from __future__ import annotations

import pytest

from real.mqtt import (
    MQTT_3_1_1,
    MQTT_5,
    Connack,
    Disconnect,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
)
from real.storage.memory import MemoryEngine
from tests.mqtt.harness import Harness


class HeldLog(MemoryEngine):
    """A memory engine whose durable point only the test moves (`durable`); it answers both
    `durable_end()` and `ack_end()` so the test does not depend on which one the broker asks."""

    def __init__(self) -> None:
        super().__init__()
        self.durable = 0
        self.trailing: int | None = None  # if set: all but the last `trailing` records durable

    def durable_end(self) -> int:
        if self.trailing is not None:
            return max(0, self.end_offset() - self.trailing)
        return min(self.durable, self.end_offset())

    def ack_end(self) -> int:
        return self.durable_end()

    def offset_of(self, kind: bytes, payload: bytes = b"") -> int:
        """The offset of the last record of `kind` (with `payload`, if given) in the log."""
        found = [r.offset for r in self.read(self.start_offset(), 1 << 20, 1 << 30)
                 if r.key == kind and (not payload or r.payload == payload)]
        assert found, (kind, payload)
        return found[-1]


def boundary_harness() -> tuple[Harness, HeldLog]:
    log = HeldLog()
    return Harness(log=log), log


def settle(h: Harness, log: HeldLog, durable: int) -> None:
    """The durable point moves to `durable` and the shell tells the broker."""
    log.durable = durable
    h.broker.durable_progress()
    h.pump()


def persistent_subscriber(h: Harness, log: HeldLog, topic: str, qos: int, online: bool = True):
    s = h.connect("s", clean=False)
    s.send(Subscribe(1, (Subscription(topic, qos),)))
    assert [type(p) for p in s.take()] == [Connack], "SUBACK before its session record"
    settle(h, log, log.end_offset())  # the session records are durable: only the publish waits
    assert [type(p) for p in s.take()] == [Suback]
    if not online:
        s.send(Disconnect())
    return s


def acks(client) -> list:
    return [p for p in client.take() if isinstance(p, Puback | Pubrec)]


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
@pytest.mark.parametrize(("qos", "ack"), [(1, Puback), (2, Pubrec)])
@pytest.mark.parametrize("online", [True, False])
def test_ack_leaves_exactly_when_the_pub_record_becomes_durable(version: int, qos: int, ack: type,
                                                                 online: bool) -> None:
    h, log = boundary_harness()
    persistent_subscriber(h, log, "q", qos, online)
    pub = h.connect("pub", version)
    pub.take()
    pub.send(Publish("q", b"m", qos=qos, packet_id=5))
    at = log.offset_of(b"pub", b"m")
    assert at >= 1 and acks(pub) == []
    settle(h, log, at - 1)  # the record before it is not durable either
    assert acks(pub) == [], f"{ack.__name__} sent with durable_end {at - 1} < its record {at}"
    settle(h, log, at)  # durable_end == the record's offset: the record itself is not durable
    assert acks(pub) == [], f"{ack.__name__} sent while its pub record {at} was not durable"
    assert h.broker.gauges()["acks_awaiting_durability"] == 1
    settle(h, log, at + 1)  # one past it: durable
    got = acks(pub)
    assert [(type(p), p.packet_id) for p in got] == [(ack, 5)]
    assert h.broker.gauges()["acks_awaiting_durability"] == 0


def test_each_ack_waits_for_its_own_record_not_the_first_one() -> None:
    h, log = boundary_harness()
    persistent_subscriber(h, log, "q", 1, online=False)
    pub = h.connect("pub")
    pub.take()
    pub.send(Publish("q", b"one", qos=1, packet_id=1), Publish("q", b"two", qos=1, packet_id=2),
             Publish("q", b"three", qos=1, packet_id=3))
    one, two, three = (log.offset_of(b"pub", p) for p in (b"one", b"two", b"three"))
    assert one < two < three
    settle(h, log, one)
    assert acks(pub) == []
    settle(h, log, one + 1)
    assert [p.packet_id for p in acks(pub)] == [1]
    settle(h, log, two)
    assert acks(pub) == [], "the second PUBACK left before its record was durable"
    settle(h, log, three)
    assert [p.packet_id for p in acks(pub)] == [2]
    settle(h, log, three + 1)
    assert [p.packet_id for p in acks(pub)] == [3]


def test_a_qos1_puback_is_held_even_when_everything_before_it_is_durable() -> None:
    """The hold itself (not only its boundary): a logged QoS 1 publish is never acked at once."""
    h, log = boundary_harness()
    persistent_subscriber(h, log, "q", 1)
    settle(h, log, log.end_offset())
    pub = h.connect("pub")
    pub.take()
    before, logged = log.end_offset(), h.broker.stats.logged_publishes
    pub.send(Publish("q", b"m", qos=1, packet_id=9))
    assert log.end_offset() > before, "a QoS 1 publish to a persistent session is logged"
    assert h.broker.stats.logged_publishes == logged + 1
    assert acks(pub) == [], "PUBACK before the pub record was durable"
    settle(h, log, log.end_offset())
    assert [p.packet_id for p in acks(pub)] == [9]


def test_the_tick_releases_at_the_same_boundary() -> None:
    """The shell may not call durable_progress; the timer tick releases acks by the same rule."""
    h, log = boundary_harness()
    persistent_subscriber(h, log, "q", 1)
    pub = h.connect("pub")
    pub.take()
    pub.send(Publish("q", b"m", qos=1, packet_id=3))
    at = log.offset_of(b"pub", b"m")
    log.durable = at
    h.advance(1)
    assert acks(pub) == []
    log.durable = at + 1
    h.advance(1)
    assert [p.packet_id for p in acks(pub)] == [3]


def test_outbound_qos2_publish_waits_for_its_packet_id_record() -> None:
    """A logged QoS 2 PUBLISH goes out only once its `snd` record (the packet id it uses) is
    durable: one record short holds it, exactly at it sends it."""
    h, log = boundary_harness()
    s = persistent_subscriber(h, log, "q", 2)
    pub = h.connect("pub")
    pub.take()
    pub.send(Publish("q", b"m", qos=2, packet_id=1))
    snd = log.offset_of(b"snd")
    assert [p for p in s.take() if isinstance(p, Publish)] == []
    settle(h, log, snd - 1)
    assert [p for p in s.take() if isinstance(p, Publish)] == []
    settle(h, log, snd)
    assert [p for p in s.take() if isinstance(p, Publish)] == [], (
        "QoS 2 PUBLISH sent before its packet id was durable")
    settle(h, log, snd + 1)
    (out,) = [p for p in s.take() if isinstance(p, Publish)]
    assert (out.payload, out.qos) == (b"m", 2)


def test_an_unlogged_publish_is_acked_at_once_even_with_nothing_durable() -> None:
    """The other side of the boundary: nothing to wait for, no wait (clean-session target)."""
    h, log = boundary_harness()
    sub = h.connect("clean")
    sub.send(Subscribe(1, (Subscription("c", 1),)))
    sub.take()
    pub = h.connect("pub")
    pub.take()
    before = log.end_offset()
    pub.send(Publish("c", b"m", qos=1, packet_id=4))
    assert log.end_offset() == before
    assert [p.packet_id for p in acks(pub)] == [4]


def crash_and_restart(log: HeldLog) -> Harness:
    """Power loss: the log keeps exactly its durable prefix; a new broker recovers from it."""
    log.truncate(log.durable_end())
    log.durable = 1 << 40  # the new broker's own writes are not what this test is about
    return Harness(log=log)


@pytest.mark.parametrize("qos", [1, 2])
def test_every_message_acked_for_an_offline_session_survives_a_crash(qos: int) -> None:
    """The promise the durable point exists for: a message queued for an offline persistent
    session whose PUBACK/PUBREC left is delivered after a crash at the durable point; one whose
    ack is still held may be lost."""
    h, log = boundary_harness()
    persistent_subscriber(h, log, "q", qos, online=False)
    pub = h.connect("pub")
    pub.take()
    pub.send(Publish("q", b"kept", qos=qos, packet_id=1))
    pub.send(Publish("q", b"maybe", qos=qos, packet_id=2))
    maybe = log.offset_of(b"pub", b"maybe")
    settle(h, log, maybe)  # the first is durable, the second one record short
    assert [p.packet_id for p in acks(pub)] == [1]
    h2 = crash_and_restart(log)
    s = h2.connect("s", clean=False)
    got = [p.payload for p in s.take() if isinstance(p, Publish)]
    assert got == [b"kept"], "an acknowledged queued message was lost by the crash"


def test_a_resent_qos2_publish_is_not_acked_before_the_original_is_durable() -> None:
    h, log = boundary_harness()
    persistent_subscriber(h, log, "q", 2, online=False)
    pub = h.connect("pub", MQTT_5, clean=False, expiry=600)
    pub.take()
    pub.send(Publish("q", b"m", qos=2, packet_id=1))
    assert acks(pub) == []  # held: the pub record is not durable
    pub.drop()
    pub = h.connect("pub", MQTT_5, clean=False, expiry=600)
    pub.take()
    pub.send(Publish("q", b"m", qos=2, packet_id=1, dup=True))  # MQTT-4.4.0-1: re-sent
    early = acks(pub)
    h2 = crash_and_restart(log)
    s = h2.connect("s", clean=False)
    delivered = [p.payload for p in s.take() if isinstance(p, Publish)]
    assert early == [] or delivered == [b"m"], (
        f"{early} sent for a message a crash then lost")


def test_a_resent_qos2_publish_is_acked_once_the_log_is_durable() -> None:
    """The held PUBREC of a re-sent QoS 2 PUBLISH leaves as soon as the log is durable."""
    h, log = boundary_harness()
    persistent_subscriber(h, log, "q", 2, online=False)
    pub = h.connect("pub", MQTT_5, clean=False, expiry=600)
    pub.take()
    pub.send(Publish("q", b"m", qos=2, packet_id=1))
    pub.drop()
    pub = h.connect("pub", MQTT_5, clean=False, expiry=600)
    pub.take()
    pub.send(Publish("q", b"m", qos=2, packet_id=1, dup=True))
    assert acks(pub) == []
    settle(h, log, log.end_offset() - 1)
    assert acks(pub) == [], "released one record short of the log end"
    settle(h, log, log.end_offset())
    assert [p.packet_id for p in acks(pub)] == [1]
    h.broker.invariants()


def test_a_retained_publish_at_offset_zero_is_held_too() -> None:
    """The first record of an empty log sits at offset 0: its ack waits like any other."""
    h, log = boundary_harness()
    pub = h.connect("pub")
    pub.take()
    pub.send(Publish("r", b"kept", qos=1, retain=True, packet_id=1))
    assert log.offset_of(b"pub", b"kept") == 0
    assert acks(pub) == [], "PUBACK for the retained record at offset 0 before it was durable"
    settle(h, log, 1)
    assert [p.packet_id for p in acks(pub)] == [1]


def test_a_message_for_a_persistent_shared_subscriber_is_logged_and_held() -> None:
    h, log = boundary_harness()
    member = h.connect("member", clean=False)
    member.send(Subscribe(1, (Subscription("$share/g/jobs", 1),)))
    member.take()
    member.send(Disconnect())
    settle(h, log, log.end_offset())
    pub = h.connect("pub")
    pub.take()
    pub.send(Publish("jobs", b"job", qos=1, packet_id=2))
    at = log.offset_of(b"pub", b"job")
    assert acks(pub) == []
    settle(h, log, at + 1)
    assert [p.packet_id for p in acks(pub)] == [2]
    h2 = crash_and_restart(log)
    again = h2.connect("member", clean=False)
    assert [p.payload for p in again.take() if isinstance(p, Publish)] == [b"job"]


def test_qos0_for_a_persistent_session_is_not_logged_unless_queue_qos0() -> None:
    """QoS 0 is logged only for an offline persistent session with queue_qos0 on (else it is
    dropped or sent, and a logged copy would come back from the dead at recovery)."""
    h, log = boundary_harness()
    online = h.connect("online", clean=False)
    online.send(Subscribe(1, (Subscription("z", 0),)))
    online.take()
    offline = h.connect("offline", clean=False)
    offline.send(Subscribe(1, (Subscription("z", 0),)))
    offline.take()
    offline.send(Disconnect())
    before = log.end_offset()
    pub = h.connect("pub")
    pub.send(Publish("z", b"q0"))
    assert log.end_offset() == before, "a QoS 0 message was logged with queue_qos0 off"
    assert h.broker.stats.dropped["qos0_offline"] == 1


def test_a_held_ack_for_a_connection_that_is_gone_is_dropped_and_the_rest_still_leave() -> None:
    h, log = boundary_harness()
    persistent_subscriber(h, log, "q", 1, online=False)
    gone, stays = h.connect("gone"), h.connect("stays")
    gone.take()
    stays.take()
    gone.send(Publish("q", b"1", qos=1, packet_id=1))
    stays.send(Publish("q", b"2", qos=1, packet_id=2))
    gone.drop()
    settle(h, log, log.end_offset())  # must not trip over the closed connection
    assert [p.packet_id for p in acks(stays)] == [2]
    assert h.broker.gauges()["acks_awaiting_durability"] == 0


def test_a_released_qos2_send_is_resent_with_dup_after_a_reconnect() -> None:
    """Once its packet id is durable, a held QoS 2 PUBLISH is an ordinary inflight one: a
    subscriber that reconnects without having sent PUBREC gets it again, with DUP."""
    h, log = boundary_harness()
    s = persistent_subscriber(h, log, "q", 2)
    pub = h.connect("pub")
    pub.take()
    pub.send(Publish("q", b"m", qos=2, packet_id=1))
    settle(h, log, log.end_offset())
    (first,) = [p for p in s.take() if isinstance(p, Publish)]
    assert not first.dup
    s.drop()
    s = h.connect("s", clean=False)
    (again,) = [p for p in s.take() if isinstance(p, Publish)]
    assert (again.payload, again.packet_id, again.dup) == (b"m", first.packet_id, True)


def test_a_held_qos2_send_whose_subscriber_left_goes_out_on_its_return() -> None:
    h, log = boundary_harness()
    s = persistent_subscriber(h, log, "q", 2)
    pub = h.connect("pub")
    pub.take()
    pub.send(Publish("q", b"m", qos=2, packet_id=1))
    s.drop()  # the session stays, offline, with the send still held
    settle(h, log, log.end_offset())
    s = h.connect("s", clean=False)
    assert [p.payload for p in s.take() if isinstance(p, Publish)] == [b"m"]


def test_a_held_qos2_send_of_a_discarded_session_is_forgotten() -> None:
    h, log = boundary_harness()
    s = persistent_subscriber(h, log, "q", 2)
    pub = h.connect("pub")
    pub.take()
    pub.send(Publish("q", b"m", qos=2, packet_id=1))
    s.drop()
    s = h.connect("s", clean=True)  # a clean start discards the session and its inflight
    s.take()
    settle(h, log, log.end_offset())
    assert [p for p in s.take() if isinstance(p, Publish)] == []


def test_the_pub_record_names_only_the_persistent_targets() -> None:
    h, log = boundary_harness()
    persistent_subscriber(h, log, "q", 1, online=False)
    clean = h.connect("clean")
    clean.send(Subscribe(1, (Subscription("q", 1),)))
    clean.take()
    pub = h.connect("pub")
    pub.send(Publish("q", b"m", qos=1, packet_id=1))
    (rec,) = [r for r in log.read(0, 1 << 20, 1 << 30) if r.key == b"pub"]
    targets = [value.split("\t")[0] for name, value in rec.meta if name == "d"]
    assert targets == ["s"], "a clean session's delivery was logged"


def test_a_queued_qos2_send_waits_for_its_packet_id_even_at_the_durable_end() -> None:
    """The `snd` record is appended exactly at durable_end (everything before it durable): it is
    still not durable itself, so the PUBLISH waits."""
    h, log = boundary_harness()
    s = persistent_subscriber(h, log, "q", 2, online=False)
    pub = h.connect("pub")
    pub.take()
    pub.send(Publish("q", b"m", qos=2, packet_id=1))
    log.trailing = 1  # from now on every record is durable as soon as the next one is written
    s = h.connect("s", clean=False)  # resuming moves it into the window: a `snd` record
    snd = log.offset_of(b"snd")
    assert snd == log.end_offset() - 1 == log.durable_end()
    assert [p for p in s.take() if isinstance(p, Publish)] == [], (
        "QoS 2 PUBLISH sent before its snd record (at durable_end) was durable")
    log.trailing = None
    settle(h, log, snd + 1)
    assert [p.payload for p in s.take() if isinstance(p, Publish)] == [b"m"]


def test_an_ack_whose_record_is_durable_on_append_leaves_at_once() -> None:
    """The other side of every hold: an engine that is durable as soon as it appends (fsync
    always) gets its PUBACK in the same output, with no durable_progress call."""
    h, log = boundary_harness()
    persistent_subscriber(h, log, "q", 1, online=False)
    log.trailing = 0
    pub = h.connect("pub")
    pub.take()
    pub.send(Publish("q", b"m", qos=1, packet_id=6))
    assert [p.packet_id for p in acks(pub)] == [6]
    assert h.broker.gauges()["acks_awaiting_durability"] == 0


def test_suback_and_retained_leave_exactly_when_the_session_record_becomes_durable() -> None:
    """A persistent session's SUBACK says the subscription exists: it leaves once the session
    record holding it is durable (a crash before then would lose it), and the retained
    messages the subscription brings follow it, not precede it."""
    h, log = boundary_harness()
    keeper = h.connect("keeper")
    keeper.send(Publish("r/a", b"kept", retain=True))
    settle(h, log, log.end_offset())
    s = h.connect("s", clean=False)
    s.take()
    s.send(Subscribe(3, (Subscription("r/#", 0),)))
    at = log.offset_of(b"ses")
    assert s.take() == []
    settle(h, log, at)
    assert s.take() == [], f"SUBACK sent while its session record {at} was not durable"
    settle(h, log, at + 1)
    got = s.take()
    assert [type(p) for p in got] == [Suback, Publish] and got[1].payload == b"kept"
    s.send(Unsubscribe(4, ("r/#",)))
    at = log.offset_of(b"ses")
    assert s.take() == []
    settle(h, log, at + 1)
    assert [type(p) for p in s.take()] == [Unsuback]


def test_a_clean_sessions_suback_leaves_at_once_unless_acks_are_held_before_it() -> None:
    h, log = boundary_harness()
    persistent_subscriber(h, log, "q", 1, online=False)
    c = h.connect("c")
    c.take()
    c.send(Subscribe(1, (Subscription("x", 0),)))
    assert [type(p) for p in c.take()] == [Suback], "nothing to make durable: no wait"
    c.send(Publish("q", b"m", qos=1, packet_id=2), Subscribe(3, (Subscription("y", 0),)))
    assert c.take() == [], "the SUBACK went out before the PUBACK held ahead of it"
    settle(h, log, log.end_offset())
    assert [(type(p), p.packet_id) for p in c.take()] == [(Puback, 2), (Suback, 3)]


def test_retained_messages_of_a_subscription_whose_client_left_still_reach_its_session() -> None:
    h, log = boundary_harness()
    keeper = h.connect("keeper")
    keeper.send(Publish("r/a", b"kept", qos=1, retain=True, packet_id=1))
    settle(h, log, log.end_offset())
    s = h.connect("s", clean=False)
    s.take()
    s.send(Subscribe(3, (Subscription("r/#", 1),)))
    s.drop()  # before the SUBACK could leave
    settle(h, log, log.end_offset())
    back = h.connect("s", clean=False)
    got = back.take()
    assert got[0] == Connack(True, 0)
    assert [p.payload for p in got if isinstance(p, Publish)] == [b"kept"]


def test_a_qos2_publish_resent_after_a_crash_is_acknowledged_not_delivered_again() -> None:
    """The accepted QoS 2 packet id is in the state log (`qi`) before its PUBREC leaves: a
    publisher that re-sends it (DUP) after a crash, its PUBREL not sent yet, gets PUBREC and the
    subscriber gets the message once."""
    h, log = boundary_harness()
    persistent_subscriber(h, log, "q", 2, online=False)
    pub = h.connect("pub", MQTT_5, clean=False, expiry=600)
    pub.take()
    pub.send(Publish("q", b"once", qos=2, packet_id=9))
    at = log.offset_of(b"qi")
    settle(h, log, at)
    assert acks(pub) == [], "PUBREC before the packet id is durable"
    settle(h, log, at + 1)
    assert [p.packet_id for p in acks(pub)] == [9]
    h2 = crash_and_restart(log)
    pub = h2.connect("pub", MQTT_5, clean=False, expiry=600)
    pub.take()
    pub.send(Publish("q", b"once", qos=2, packet_id=9, dup=True))
    assert [p.packet_id for p in acks(pub)] == [9]
    s = h2.connect("s", clean=False)
    assert [p.payload for p in s.take() if isinstance(p, Publish)] == [b"once"]


def test_pubcomp_leaves_exactly_when_the_released_packet_id_is_durable() -> None:
    """PUBREL frees the packet id (`qr`); PUBCOMP waits for that record: else a crash would
    bring the id back and the publisher's next QoS 2 PUBLISH under it would be taken for a
    re-send and dropped."""
    h, log = boundary_harness()
    persistent_subscriber(h, log, "q", 2, online=False)
    pub = h.connect("pub", MQTT_5, clean=False, expiry=600)
    pub.take()
    pub.send(Publish("q", b"first", qos=2, packet_id=3))
    settle(h, log, log.end_offset())
    assert [p.packet_id for p in acks(pub)] == [3]
    pub.send(Pubrel(3))
    at = log.offset_of(b"qr")
    assert [type(p) for p in pub.take()] == [], "PUBCOMP before its record is durable"
    settle(h, log, at + 1)
    assert [(type(p), p.packet_id) for p in pub.take()] == [(Pubcomp, 3)]
    h2 = crash_and_restart(log)
    pub = h2.connect("pub", MQTT_5, clean=False, expiry=600)
    pub.take()
    pub.send(Publish("q", b"second", qos=2, packet_id=3))  # the id, free again, reused
    assert [p.packet_id for p in acks(pub)] == [3]
    s = h2.connect("s", clean=False)
    assert [p.payload for p in s.take() if isinstance(p, Publish)] == [b"first", b"second"]
