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


def _paho(client_id: str, version: int, clean: bool) -> Any:
    import paho.mqtt.client as mqtt

    if version == 5:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
    else:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=clean)
    client.reconnect_delay_set(min_delay=120, max_delay=120)  # no reconnect in a test
    return client


def _connect(client: Any, port: int, clean: bool = False) -> dict[str, Any]:
    """Connect and wait for the CONNACK: its flags and reason code."""
    import paho.mqtt.client as mqtt

    got: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(_c: Any, _u: Any, flags: Any, reason: Any, _p: Any = None) -> None:
        got["present"], got["reason"] = flags.session_present, reason.value
        done.set()

    client.on_connect = on_connect
    if client._protocol == mqtt.MQTTv5:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client.connect("127.0.0.1", port, clean_start=clean, properties=props)
    else:
        client.connect("127.0.0.1", port)
    client.loop_start()
    assert done.wait(20), "no CONNACK"
    return got


def _publish_all(port: int, topic: str, count: int, start: int = 0) -> None:
    pub = _paho(f"pub-{topic}-{start}", 4, True)
    _connect(pub, port, clean=True)
    try:
        infos = [pub.publish(f"{topic}/{i % 3}", str(i).encode(), qos=1)
                 for i in range(start, start + count)]
        for info in infos:
            info.wait_for_publish(timeout=20)
            assert info.is_published()
    finally:
        pub.loop_stop()
        pub.disconnect()


def test_a_duplicate_client_id_on_another_node_takes_the_connection_over(nodes: Any) -> None:
    first = _paho("dev", 5, False)
    gone = threading.Event()
    reasons: list[int] = []

    def on_disconnect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        reasons.append(reason.value)
        gone.set()

    first.on_disconnect = on_disconnect
    assert _connect(first, nodes[1]["mqtt"])["reason"] == 0
    subscribed = threading.Event()
    first.on_subscribe = lambda *_a: subscribed.set()
    first.subscribe("dup/#", qos=1)
    assert subscribed.wait(10)
    second = _paho("dev", 5, False)
    received: list[bytes] = []
    second.on_message = lambda _c, _u, m: received.append(m.payload)
    try:
        got = _connect(second, nodes[2]["mqtt"])
        assert got == {"present": True, "reason": 0}, "the session came along"
        assert gone.wait(10) and reasons == [0x8E], reasons  # Session taken over
        _publish_all(nodes[3]["mqtt"], "dup", 20)
        deadline = time.monotonic() + 20
        while len(received) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(int(p) for p in received) == list(range(20))
    finally:
        for client in (first, second):
            client.loop_stop()
            client.disconnect()


def test_a_persistent_session_moves_off_a_killed_node_with_every_acknowledged_message(
        tmp_path: Path, nodes: Any) -> None:
    """paho on node 2 with a persistent session; node 2 is SIGKILLed with 30 acknowledged
    messages queued for it and 30 more are acknowledged while it is down; the client connects
    to node 3, which waits for node 2's hand-over (node 2 restarts: it recovers the session
    from its state log and hands it over) and delivers all 60."""
    keeper = _paho("keeper", 4, False)
    assert _connect(keeper, nodes[2]["mqtt"])["reason"] == 0
    subscribed = threading.Event()
    keeper.on_subscribe = lambda *_a: subscribed.set()
    keeper.subscribe("keep/#", qos=1)
    assert subscribed.wait(10)
    keeper.loop_stop()
    keeper.disconnect()
    _publish_all(nodes[1]["mqtt"], "keep", 30)
    time.sleep(0.3)  # node 2's state log syncs what it queued (its group commit)
    cluster.signal_node(tmp_path, 2, signal.SIGKILL)
    _publish_all(nodes[1]["mqtt"], "keep", 30, start=30)
    back = _paho("keeper", 4, False)
    received: list[bytes] = []
    back.on_message = lambda _c, _u, m: received.append(m.payload)
    restarter = threading.Timer(1.0, cluster.restart, (tmp_path, 2))
    restarter.start()
    try:
        got = _connect(back, nodes[3]["mqtt"])
        assert got == {"present": True, "reason": 0}, got
        deadline = time.monotonic() + 30
        while len(received) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        restarter.join()
        back.loop_stop()
        back.disconnect()
    values = [int(p) for p in received]
    assert sorted(set(values)) == list(range(60)), "an acknowledged message was lost"
    for topic in range(3):  # in order per topic
        mine = [v for v in values if v % 3 == topic]
        assert mine == sorted(mine)
