"""MQTT across a real three-node cluster (`twinmq cluster up -- --mqtt-cluster true`): a
mosquitto_sub on node 2 gets what mosquitto_pub sent to node 1, and a paho publisher on one
node keeps every acknowledged message, in order and once, for a subscriber on another while the
partition's leader is SIGKILLed mid-stream."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from real.mqtt.cluster import TOPIC
from real.node import cluster
from real.storage.crc32c import crc32c
from tests.node.test_cluster_shared_storage import topic_shards

pytestmark = pytest.mark.integration


@pytest.fixture
def nodes(tmp_path: Path) -> Any:
    quiet = open(os.devnull, "w")  # noqa: SIM115 - closed below
    try:
        assert cluster.up(3, tmp_path, ["--mqtt-cluster", "true"], out=quiet) == 0
        info = json.loads((tmp_path / "cluster.json").read_text())
        by_id = {n["id"]: n for n in info["nodes"]}
        deadline = time.monotonic() + 30
        while not all(_mqtt_ready(n) for n in by_id.values()):
            assert time.monotonic() < deadline, "the nodes never served MQTT"
            time.sleep(0.05)
        yield by_id
    finally:
        cluster.down(tmp_path, out=quiet)
        quiet.close()


def _mqtt_ready(node: dict[str, Any]) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", node["mqtt"]), timeout=1) as s:
            s.sendall(bytes([0x10, 13, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 10, 0, 1]) + b"r")
            s.settimeout(2)
            return s.recv(4)[:2] == bytes([0x20, 2])
    except OSError:
        return False


@pytest.mark.skipif(any(shutil.which(t) is None for t in ("mosquitto_sub", "mosquitto_pub",
                                                           "stdbuf")),
                    reason="mosquitto clients (make tools) or stdbuf missing")
def test_mosquitto_sub_on_node_2_gets_what_mosquitto_pub_sent_to_node_1(nodes: Any) -> None:
    # stdbuf -oL: else its debug lines (SUBACK) sit in the pipe's buffer
    sub = subprocess.Popen(["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p",
                            str(nodes[2]["mqtt"]), "-t", "demo/#", "-q", "1", "-C", "3", "-v",
                            "-d"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert sub.stdout is not None
        for line in sub.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    try:
        while "SUBACK" not in lines.get(timeout=30):  # then it is safe to publish
            pass
        for qos, text in ((0, "zero"), (1, "one"), (2, "two")):
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(nodes[1]["mqtt"]),
                            "-t", f"demo/q{qos}", "-q", str(qos), "-m", text],
                           check=True, timeout=30)
        sub.wait(timeout=30)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    out = []
    while not lines.empty():
        out.append(lines.get())
    got = [line for line in out if line.startswith("demo/")]
    assert got == ["demo/q0 zero", "demo/q1 one", "demo/q2 two"]


def test_acknowledged_messages_survive_the_partition_leaders_death(tmp_path: Path,
                                                                   nodes: Any) -> None:
    import paho.mqtt.client as mqtt

    topic = "kill/leader"
    shards = topic_shards(nodes[1], TOPIC)
    leader = shards[crc32c(topic.encode()) % len(shards)][0]
    pub_node, sub_node = [n for n in (1, 2, 3) if n != leader]
    received: list[bytes] = []
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sub", clean_session=True)
    sub.on_message = lambda _c, _u, m: received.append(m.payload)
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect("127.0.0.1", nodes[sub_node]["mqtt"])
    sub.loop_start()
    sub.subscribe(topic, qos=1)
    assert subscribed.wait(10)
    acked: list[int] = []
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pub", clean_session=False)
    pub.max_inflight_messages_set(20)
    pub.on_publish = lambda _c, _u, mid, *_a: acked.append(mid)
    pub.connect("127.0.0.1", nodes[pub_node]["mqtt"])
    pub.loop_start()
    mids = {}
    try:
        for i in range(400):
            info = pub.publish(topic, str(i).encode(), qos=1)
            mids[info.mid] = i
            if i == 150:
                cluster.signal_node(tmp_path, leader, signal.SIGKILL)
                killed_at = time.monotonic()
            time.sleep(0.002)
        deadline = time.monotonic() + 60
        while len(acked) < 400 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acked) == 400, f"{len(acked)} of 400 acknowledged"
        failover_s = time.monotonic() - killed_at
        deadline = time.monotonic() + 30
        while len(received) < 400 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pub.loop_stop()
        pub.disconnect()
        sub.loop_stop()
        sub.disconnect()
    values = [int(p) for p in received]
    assert sorted(set(values)) == list(range(400)), "an acknowledged message was lost"
    assert values == list(range(400)), "duplicated or out of order"
    assert failover_s < 30
