"""MQTT <-> Kafka round trips through a real node with `[[bridge]]` rules, with real clients:
paho-mqtt (MQTT 5, user properties) on one side, confluent-kafka / kafka-python on the other."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration]

CONFIG = """
[[bridge]]
mqtt = "sensors/#"
kafka = "sensors"

[[bridge]]
mqtt = "cmd/+"
kafka = "commands"
direction = "kafka-to-mqtt"
qos = 1
mqtt_topic = "cmd/unkeyed"
"""


def _free_ports(n: int) -> list[int]:
    from real.node.ports import free_ports

    return free_ports("127.0.0.1", n)


class Node:
    def __init__(self, tmp: Path) -> None:
        self.mqtt, self.kafka, admin, ws = _free_ports(4)
        conf = tmp / "bridge.toml"
        conf.write_text(CONFIG)
        self.log = tmp / "node.log"
        cmd = [sys.executable, "-m", "real", "serve", "--config", str(conf), "--data-dir",
               str(tmp / "data"), "--mqtt-port", str(self.mqtt), "--kafka-port",
               str(self.kafka), "--admin-port", str(admin), "--ws-port", str(ws)]
        self.out = self.log.open("wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.out, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 30
        while b"kafka listening" not in self.log.read_bytes():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)  # polling a subprocess's log: nothing to wait on

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka}"

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)
        self.out.close()
        return self.log.read_text()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    try:
        yield n
    finally:
        text = n.stop()
        assert n.proc.returncode == 0, text
        assert "internal error" not in text and "Traceback" not in text, text


def _mqtt(node: Node, name: str) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv5)
    c.connect("127.0.0.1", node.mqtt)
    c.loop_start()
    return c


@pytest.mark.smoke
def test_mqtt_publish_reaches_kafka_consumer_with_headers(node: Node) -> None:
    pub = _mqtt(node, "bridge-pub")
    acks: queue.Queue[int] = queue.Queue()
    pub.on_publish = lambda _c, _u, mid, _rc, _p: acks.put(mid)
    sent = []
    for i in range(5):
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("site", f"s{i}"), ("unit", "C")]
        props.ContentType = "text/plain"
        info = pub.publish(f"sensors/room{i % 2}/temp", f"{20 + i}".encode(), qos=1,
                           properties=props)
        sent.append(info.mid)
    got_acks = {acks.get(timeout=10) for _ in sent}
    assert got_acks == set(sent)  # QoS 1 PUBACKs: the Kafka copy is durable by now
    pub.loop_stop()
    pub.disconnect()

    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "bridge-test",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([TopicPartition("sensors", 0, 0)])
    records = []
    deadline = time.monotonic() + 20
    while len(records) < 5 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            records.append((m.key(), m.value(), m.headers()))
    c.close()
    assert len(records) == 5, records
    for i, (key, value, headers) in enumerate(records):
        assert key == f"sensors/room{i % 2}/temp".encode()
        assert value == f"{20 + i}".encode()
        # user properties in their order; MQTT properties as reserved `mqtt.*` headers
        assert [h for h in headers if not h[0].startswith("mqtt.")] == [
            ("site", f"s{i}".encode()), ("unit", b"C")]
        assert [h for h in headers if h[0].startswith("mqtt.")] == [
            ("mqtt.content_type", b"text/plain")]


@pytest.mark.smoke
def test_kafka_produce_reaches_mqtt_subscriber_with_user_properties(node: Node) -> None:
    sub = _mqtt(node, "bridge-sub")
    got: queue.Queue[paho.MQTTMessage] = queue.Queue()
    subscribed: queue.Queue[int] = queue.Queue()
    sub.on_message = lambda _c, _u, msg: got.put(msg)
    sub.on_subscribe = lambda _c, _u, mid, _rc, _p: subscribed.put(mid)
    sub.subscribe("cmd/#", qos=1)
    subscribed.get(timeout=10)

    p = Producer({"bootstrap.servers": node.bootstrap, "enable.idempotence": True})
    p.produce("commands", value=b"open", key=b"cmd/door", headers=[("by", b"ops"), ("n", b"1")])
    p.produce("commands", value=b"no key", headers=[("by", b"cron")])
    p.produce("commands", value=b"bad key", key=b"other/topic")
    assert p.flush(10) == 0

    msgs = [got.get(timeout=10) for _ in range(3)]
    by_payload = {m.payload: m for m in msgs}
    door = by_payload[b"open"]
    assert door.topic == "cmd/door" and door.qos == 1
    assert door.properties.UserProperty == [("by", "ops"), ("n", "1")]
    # A record whose key is not an MQTT topic matched by the rule goes to `mqtt_topic`.
    assert by_payload[b"no key"].topic == "cmd/unkeyed"
    assert by_payload[b"no key"].properties.UserProperty == [("by", "cron")]
    assert by_payload[b"bad key"].topic == "cmd/unkeyed"
    sub.loop_stop()
    sub.disconnect()


def test_bridge_config_errors_name_the_key(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text('[[bridge]]\nmqtt = "a/#"\nkafka = "bad topic"\n')
    out = subprocess.run([sys.executable, "-m", "real", "serve", "--config", str(conf),
                          "--data-dir", str(tmp_path / "d")], cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode != 0
    assert "bridge[0].kafka" in out.stderr and "bad topic" in out.stderr
