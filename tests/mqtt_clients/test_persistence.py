"""Sessions and retained messages across broker restarts (graceful, and SIGKILL mid-stream).

The SIGKILL test is the issue's durability acceptance: "SIGKILL of the node during QoS 1 traffic
to a persistent session, then restart: every PUBACKed message is delivered after reconnect".
A PUBACK is the broker's promise that the message is safe; a broker that acknowledges before the
message (and the session it is queued for) is durable loses acknowledged messages here.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.mqtt_clients.conftest import (
    BROKER_KIND,
    V5,
    V311,
    VERSIONS,
    WAIT,
    Broker,
    PahoClient,
)

pytestmark = pytest.mark.integration
Factory = Callable[..., PahoClient]


def session_kwargs(version: int) -> dict[str, object]:
    if version == V5:
        return {"clean": False, "session_expiry": 300}
    return {"clean": False}


@pytest.mark.parametrize("version", VERSIONS)
def test_session_and_retained_survive_graceful_restart(broker: Broker, mqtt_client: Factory,
                                                       version: int) -> None:
    """SIGTERM + restart keeps an offline persistent session (its subscription and its 20
    queued QoS 1 messages) and the retained messages."""
    sub = mqtt_client("durable", version=version, **session_kwargs(version))
    assert sub.subscribe("gr/t", 1) == [1]
    sub.disconnect()
    pub = mqtt_client("pub", version=version)
    pub.publish("gr/retained", b"kept across restart", 1, retain=True)
    payloads = [f"queued-{i:02d}".encode() for i in range(20)]
    for p in payloads:
        pub.publish("gr/t", p, 1)
    pub.disconnect()

    assert broker.restart(kill=False) == 0

    back = mqtt_client("durable", version=version, connect=False, **session_kwargs(version))
    assert back.connect().session_present is True, "persistent session lost by a clean restart"
    got = back.collect(len(payloads))
    assert [m.payload for m in got] == payloads
    assert all(m.qos == 1 and m.topic == "gr/t" for m in got)
    pub2 = mqtt_client("pub2", version=version)
    pub2.publish("gr/t", b"live after restart", 1)  # the subscription itself survived
    assert back.get().payload == b"live after restart"
    late = mqtt_client("late", version=version)
    assert late.subscribe("gr/retained", 1) == [1]
    r = late.get()
    assert (r.payload, r.retain) == (b"kept across restart", True)


# --------------------------------------------------------------------------- SIGKILL mid-stream

MESSAGES = 2000
KILL_AFTER = (1000, 850, 1150)  # PUBACK count at which the broker is killed, one per round
PUBLISH_INFLIGHT = 50  # paho's window of unacknowledged QoS 1 publishes
SUB_ID = "durable-sub"
READY_JOIN_SECONDS = 90.0  # the killer thread's kill + restart + readiness


@dataclass
class RoundResult:
    kill_after: int
    acked: int  # PUBACKs the publisher got before the kill
    delivered: int  # distinct payloads of this round delivered after the restart
    duplicates: int  # deliveries beyond the first of a payload
    unacked_delivered: int  # delivered although never acknowledged (allowed)


class AckRecorder:
    """paho on_publish callback: records acknowledged mids; fires `reached` at a count."""

    def __init__(self, kill_after: int) -> None:
        self.kill_after = kill_after
        self.lock = threading.Lock()
        self.mids: list[int] = []
        self.reached = threading.Event()

    def __call__(self, client: Any, userdata: Any, mid: int, rc: Any, properties: Any) -> None:
        with self.lock:
            self.mids.append(mid)
            if len(self.mids) >= self.kill_after:
                self.reached.set()


def _killer(broker: Broker, recorder: AckRecorder, errors: list[BaseException]) -> None:
    """Thread body: SIGKILL the broker once `kill_after` PUBACKs were seen, restart it."""
    try:
        assert recorder.reached.wait(timeout=60), f"only {len(recorder.mids)} PUBACKs in 60 s"
        broker.restart(kill=True)
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)


def _sigkill_round(broker: Broker, mqtt_client: Factory, round_no: int,
                   kill_after: int) -> RoundResult:
    # 1. The persistent subscriber exists and is offline.
    sub = mqtt_client(SUB_ID, version=V311, clean=False)
    assert sub.subscribe("durable/t", 1) == [1]
    sub.disconnect()

    # 2. Publish as fast as the broker acks; a killer thread SIGKILLs it mid-stream.
    pub = mqtt_client(f"fast-pub-{round_no}", version=V311, connect=False)
    recorder = AckRecorder(kill_after)
    pub.client.on_publish = recorder
    pub.client.max_inflight_messages_set(PUBLISH_INFLIGHT)
    pub.connect()
    errors: list[BaseException] = []
    killer = threading.Thread(target=_killer, args=(broker, recorder, errors), daemon=True)
    killer.start()
    by_mid: dict[int, bytes] = {}
    for i in range(MESSAGES):
        payload = f"r{round_no}-{i:05d}".encode()
        info = pub.client.publish("durable/t", payload, 1)
        if info.rc != 0:  # the connection is gone: the kill happened
            break
        by_mid[info.mid] = payload
    try:
        pub.disconnects.get(timeout=60)  # the kill closes the publisher's connection
    except queue.Empty:
        raise AssertionError(f"publisher never lost its connection; {len(recorder.mids)} "
                             "acked") from None
    pub.stop_loop()
    killer.join(timeout=READY_JOIN_SECONDS)
    assert not killer.is_alive(), "broker restart did not finish"
    if errors:
        raise errors[0]
    with recorder.lock:
        acked = [by_mid[m] for m in recorder.mids]
    assert len(set(acked)) == len(acked), "a mid was acknowledged twice"
    assert kill_after <= len(acked) < MESSAGES, f"not killed mid-stream: {len(acked)} acked"

    # 3. Reconnect with the same id: every acknowledged payload must arrive.
    back = mqtt_client(SUB_ID, version=V311, clean=False, connect=False)
    info = back.connect()
    assert info.session_present, (f"round {round_no}: session of {SUB_ID!r} lost by the "
                                  f"SIGKILL; {len(acked)} acknowledged messages are gone")
    return _receive_all(back, round_no, kill_after, acked)


def _receive_all(back: PahoClient, round_no: int, kill_after: int,
                 acked: list[bytes]) -> RoundResult:
    prefix = f"r{round_no}-".encode()
    missing = set(acked)
    counts: Counter[bytes] = Counter()
    while missing:
        try:
            m = back.messages.get(timeout=WAIT)
        except queue.Empty:
            lost = sorted(missing)
            raise AssertionError(f"round {round_no}: {len(lost)} of {len(acked)} acknowledged "
                                 f"messages never delivered, e.g. {lost[:5]}") from None
        if m.payload.startswith(prefix):  # earlier rounds' leftovers may still trickle in
            counts[m.payload] += 1
            missing.discard(m.payload)
    back.disconnect()
    return RoundResult(kill_after, len(acked), len(counts),
                       sum(c - 1 for c in counts.values()), len(set(counts) - set(acked)))


@pytest.mark.slow
@pytest.mark.xfail(BROKER_KIND == "mosquitto", strict=False, reason=(
    "expected: Mosquitto writes its persistence file only at autosave_interval and on clean "
    "shutdown, so a SIGKILL loses the session and the messages it acknowledged"))
def test_sigkill_mid_stream_loses_no_acknowledged_message(
        broker: Broker, mqtt_client: Factory, record_property: Any) -> None:
    """A v3.1.1 persistent subscriber ("durable-sub", clean_session False, QoS 1) is offline
    while a publisher sends 2000 distinct QoS 1 messages as fast as the broker acknowledges;
    after about 1000 PUBACKs another thread SIGKILLs the broker and restarts it on the same
    data dir. The subscriber reconnects and must receive every PUBACKed payload (duplicates
    and delivered-but-unacknowledged payloads are allowed and reported). Three rounds, each
    killing at a different point.

    Expected to fail against Mosquitto (xfail there, not strict): it persists only
    periodically (autosave_interval) and on shutdown, not before each PUBACK.
    """
    results = []
    for round_no, kill_after in enumerate(KILL_AFTER):
        started = time.monotonic()
        r = _sigkill_round(broker, mqtt_client, round_no, kill_after)
        results.append(r)
        line = (f"round {round_no}: killed after >= {r.kill_after} PUBACKs; {r.acked} acked, "
                f"{r.delivered} delivered, {r.duplicates} duplicates, {r.unacked_delivered} "
                f"delivered unacked; {time.monotonic() - started:.1f}s")
        record_property(f"round{round_no}", line)
        print(line, file=sys.stderr)
    assert [r.kill_after for r in results] == list(KILL_AFTER)
    assert all(r.delivered >= r.acked for r in results), results
