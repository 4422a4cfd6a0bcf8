"""Hostile input against the broker core: mutated and random byte streams never raise out of the
broker, close only the offending connection, and leave other clients served."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from real.mqtt import (
    MQTT_3_1_1,
    MQTT_5,
    Connect,
    Properties,
    PropertyId,
    Publish,
    Subscribe,
    Subscription,
    Unsubscribe,
    Will,
    encode,
)
from real.mqtt.broker import BrokerConfig
from real.storage.memory import MemoryEngine
from scenarios.fuzz.mqtt import mutate
from tests.mqtt.harness import Harness

SEEDS = [
    encode(Connect("fz", protocol_version=MQTT_5, clean_start=False, keep_alive=5,
                   will=Will("w", b"x", 1, True),
                   properties=Properties.of((PropertyId.SESSION_EXPIRY_INTERVAL, 60))), MQTT_5),
    encode(Publish("a/b", b"payload", 1, True, False, 7,
                   Properties.of((PropertyId.TOPIC_ALIAS, 1))), MQTT_5),
    encode(Publish("", b"p", 2, False, False, 8,
                   Properties.of((PropertyId.TOPIC_ALIAS, 1))), MQTT_5),
    encode(Subscribe(3, (Subscription("$share/g/a/#", 2), Subscription("a/+", 1, True))),
           MQTT_5),
    encode(Unsubscribe(4, ("a/+", "x")), MQTT_5),
    bytes([0x62, 2, 0, 8]), bytes([0x40, 2, 0, 1]), bytes([0x50, 2, 0, 2]),
    bytes([0x70, 2, 0, 2]), bytes([0xC0, 0]), bytes([0xE0, 0]), bytes([0xF0, 0]),
]


def check_survives(h: Harness, streams: list[bytes], chunk: int) -> None:
    canary_sub = h.connect("canary-sub")
    canary_sub.send(Subscribe(1, (Subscription("canary", 1),)))
    canary_sub.take()
    for stream in streams:
        hostile = h.open(MQTT_5, raw=True)
        for start in range(0, len(stream), chunk):
            if hostile.closed:
                break
            hostile.send_bytes(stream[start:start + chunk])
        h.advance(100)
    pub = h.connect("canary-pub")
    pub.send(Publish("canary", b"alive", 1, packet_id=1))
    got = [p for p in canary_sub.take() if isinstance(p, Publish)]
    assert [p.payload for p in got] == [b"alive"]
    h.broker.tick()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), chunk=st.integers(1, 64))
def test_mutated_sessions_never_escape(seed: int, chunk: int) -> None:
    rng = random.Random(seed)
    streams = []
    for _ in range(4):
        parts = [SEEDS[0]] + [rng.choice(SEEDS[1:]) for _ in range(rng.randint(1, 6))]
        stream = b"".join(parts)
        streams.append(mutate(rng, stream, SEEDS, rng.randint(1, 4)) if rng.random() < 0.9
                       else stream)
    h = Harness(BrokerConfig(sys_interval_ms=1000, max_packet_size=4096), log=MemoryEngine())
    check_survives(h, streams, chunk)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300), chunk=st.integers(1, 50))
def test_random_bytes_after_connect(data: bytes, chunk: int) -> None:
    h = Harness()
    stream = encode(Connect("r", protocol_version=MQTT_3_1_1), MQTT_3_1_1) + data
    check_survives(h, [stream, data], chunk)
