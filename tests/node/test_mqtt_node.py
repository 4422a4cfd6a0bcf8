"""The MQTT broker on a real node (`python -m real serve`): limits under a stalled subscriber,
admin endpoints and metrics, and auth from the config file."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from real.mqtt import (
    MQTT_3_1_1,
    Connect,
    Decoder,
    Puback,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    encode,
)

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Node:
    def __init__(self, tmp: Path, *extra: str) -> None:
        self.mqtt, self.admin = free_port(), free_port()
        self.log = tmp / "node.log"
        args = [sys.executable, "-m", "real", "serve", "--data-dir", str(tmp / "data"),
                "--mqtt-port", str(self.mqtt), "--admin-port", str(self.admin),
                "--kafka-port", str(free_port()), "--ws-port", "0", *extra]
        self.proc = subprocess.Popen(args, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        # The admin port answers /health while the MQTT listeners are still being bound, so
        # also wait until every MQTT listener this test asked for accepts a connection.
        listeners = [self.mqtt] + [int(extra[i + 1]) for i, flag in enumerate(extra)
                                   if flag in ("--mqtts-port", "--wss-port")]
        self._poll(lambda: self.get("/health"), deadline)
        for port in listeners:
            self._poll(lambda port=port: socket.create_connection(("127.0.0.1", port), 1).close(),
                       deadline)

    def _poll(self, probe: Callable[[], object], deadline: float) -> None:
        while True:
            try:
                probe()
                return
            except OSError:
                assert self.proc.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, self.log.read_text()
                time.sleep(0.05)  # polling a port that is not open yet: nothing to wait on

    def get(self, path: str) -> object:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}{path}", timeout=5) as r:
            body = r.read().decode()
        return body if path == "/metrics" else json.loads(body)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        self.proc.terminate()
        assert self.proc.wait(timeout=20) == 0, self.log.read_text()


class Client:
    def __init__(self, port: int, client_id: str, **kwargs: object) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.decoder = Decoder(version=MQTT_3_1_1)
        self.inbox: list = []
        self.send(Connect(client_id, **kwargs))  # type: ignore[arg-type]
        self.expect(lambda p: True)

    def send(self, *packets: object) -> None:
        self.sock.sendall(b"".join(encode(p, MQTT_3_1_1) for p in packets))  # type: ignore[arg-type]

    def expect(self, pred, timeout: float = 10.0):  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while True:
            for i, packet in enumerate(self.inbox):
                if pred(packet):
                    return self.inbox.pop(i)
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(1 << 16)
            assert data, "connection closed"
            self.inbox.extend(self.decoder.feed(data))


def test_stalled_subscriber_costs_bounded_memory(tmp_path: Path) -> None:
    node = Node(tmp_path, "--storage", "memory")
    try:
        stalled = Client(node.mqtt, "stalled")
        stalled.send(Subscribe(1, (Subscription("flood/0", 0), Subscription("flood/1", 1))))
        stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.expect(lambda p: isinstance(p, Suback))  # then never read again
        healthy = Client(node.mqtt, "healthy")
        healthy.send(Subscribe(1, (Subscription("ping", 1),)))
        healthy.expect(lambda p: isinstance(p, Suback))
        before = node.rss_mb()
        pub = Client(node.mqtt, "flood")
        payload = b"x" * 1024
        for batch in range(40):  # 40 x 1,000 messages of 1 KiB = 40 MiB offered
            packets = [Publish(f"flood/{i % 2}", payload, qos=i % 2,
                               packet_id=(i + 1) if i % 2 else None) for i in range(1000)]
            pub.send(*packets)
            pub.expect(lambda p: isinstance(p, Puback) and p.packet_id == 1000, timeout=30)
            if batch == 20:
                middle = node.rss_mb()
        after = node.rss_mb()
        pub.send(Publish("ping", b"alive", 1, packet_id=1))
        got = healthy.expect(lambda p: isinstance(p, Publish))
        assert got.payload == b"alive"
        sessions = {s["client_id"]: s for s in node.get("/mqtt/sessions")}  # type: ignore[union-attr]
        stalled_state = sessions["stalled"]
        assert stalled_state["queued"] + stalled_state["inflight"] <= 1000 + 64
        metrics = node.get("/metrics")
        assert 'twinmq_mqtt_messages_dropped_total{reason="qos0_congested"}' in metrics
        # 40 MiB offered to a reader that stopped; the broker holds at most the transport's
        # high-water mark plus the bounded queue (1,000 x 1 KiB), not the flood
        # (without the congestion rule the 20 MiB of QoS 0 would sit in the transport buffer)
        assert after - before < 10, (before, middle, after)
        assert after - middle < 5, (before, middle, after)
    finally:
        node.stop()


def test_admin_endpoints_and_metrics(tmp_path: Path) -> None:
    node = Node(tmp_path)
    try:
        sub = Client(node.mqtt, "watcher", clean_start=False)
        sub.send(Subscribe(1, (Subscription("a/#", 1),)))
        sub.expect(lambda p: isinstance(p, Suback))
        pub = Client(node.mqtt, "pub")
        pub.send(Publish("a/b", b"r", qos=1, retain=True, packet_id=1))
        pub.expect(lambda p: isinstance(p, Puback))
        sub.expect(lambda p: isinstance(p, Publish))
        clients = [c["client_id"] for c in node.get("/mqtt/clients")]  # type: ignore[union-attr]
        assert clients == ["pub", "watcher"]
        subs = node.get("/mqtt/subscriptions")
        assert [(s["client_id"], s["filter"], s["qos"]) for s in subs] == [("watcher", "a/#", 1)]  # type: ignore[union-attr]
        assert node.get("/mqtt/topics") == [{"filter": "a/#", "subscribers": 1}]
        retained = [r["topic"] for r in node.get("/mqtt/retained")]  # type: ignore[union-attr]
        assert "a/b" in retained
        info = node.get("/node")
        assert info["mqtt_listeners"][0] == {"kind": "tcp", "port": node.mqtt}  # type: ignore[index]
        metrics = node.get("/metrics")
        assert 'twinmq_mqtt_messages_received_total{qos="1"} 1.0' in metrics
        assert "twinmq_mqtt_connections 2.0" in metrics
        assert "twinmq_mqtt_deliver_latency_ms_count" in metrics
        request = urllib.request.Request(
            f"http://127.0.0.1:{node.admin}/mqtt/clients/watcher/disconnect", method="POST")
        with urllib.request.urlopen(request, timeout=5) as r:
            assert json.loads(r.read()) == {"disconnected": "watcher"}
        assert sub.sock.recv(10) == b""  # closed by the broker
        ctl = subprocess.run([sys.executable, "-m", "real", "ctl", "--admin",
                              f"http://127.0.0.1:{node.admin}", "sessions", "--json"],
                             capture_output=True, text=True, timeout=30)
        assert ctl.returncode == 0, ctl.stderr
        assert {s["client_id"]: s["online"] for s in json.loads(ctl.stdout)}["watcher"] is False
    finally:
        node.stop()


def test_password_file_and_anonymous_off(tmp_path: Path) -> None:
    passwords = tmp_path / "passwd"
    add = subprocess.run([sys.executable, "-m", "real", "user", "add", "--file", str(passwords),
                          "alice", "--password", "s3cret"], capture_output=True, text=True)
    assert add.returncode == 0, add.stderr
    node = Node(tmp_path, "--password-file", str(passwords), "--allow-anonymous", "false")
    try:
        sock = socket.create_connection(("127.0.0.1", node.mqtt), timeout=5)
        sock.sendall(encode(Connect("anon"), MQTT_3_1_1))
        assert sock.recv(16) == bytes([0x20, 2, 0, 5])  # CONNACK 5: not authorized
        ok = Client(node.mqtt, "alice", username="alice", password=b"s3cret")
        ok.send(Subscribe(1, (Subscription("t", 0),)))
        ok.expect(lambda p: isinstance(p, Suback))
        sock = socket.create_connection(("127.0.0.1", node.mqtt), timeout=5)
        sock.sendall(encode(Connect("bad", username="alice", password=b"wrong"), MQTT_3_1_1))
        assert sock.recv(16) == bytes([0x20, 2, 0, 4])  # bad user name or password
        assert "twinmq_mqtt_auth_failures_total 2.0" in node.get("/metrics")  # type: ignore[operator]
    finally:
        node.stop()


@pytest.mark.parametrize("transport", ["tls", "wss"])
def test_paho_over_tls_and_secure_websocket(tmp_path: Path, certs: tuple[str, str],
                                            transport: str) -> None:
    import queue
    import ssl

    import paho.mqtt.client as paho

    cert, key = certs
    port = free_port()
    flag = "--mqtts-port" if transport == "tls" else "--wss-port"
    node = Node(tmp_path, flag, str(port), "--tls-cert", cert, "--tls-key", key)
    try:
        got: queue.Queue = queue.Queue()
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"secure-{transport}",
                             protocol=paho.MQTTv5,
                             transport="tcp" if transport == "tls" else "websockets")
        if transport == "wss":
            client.ws_set_options(path="/mqtt")
        client.tls_set_context(ssl.create_default_context(cafile=cert))
        client.on_message = lambda c, u, msg: got.put((msg.topic, msg.payload, msg.qos))
        client.on_connect = lambda c, u, f, rc, p: c.subscribe("secure/#", qos=1)
        client.on_subscribe = lambda c, u, mid, codes, p: c.publish("secure/t", b"sealed", qos=1)
        client.connect("127.0.0.1", port)
        client.loop_start()
        try:
            assert got.get(timeout=20) == ("secure/t", b"sealed", 1)
        finally:
            client.disconnect()
            client.loop_stop()
        plain = socket.create_connection(("127.0.0.1", port), timeout=5)
        plain.sendall(encode(Connect("plain"), MQTT_3_1_1))  # not TLS: refused, node unharmed
        try:
            assert plain.recv(16)[:2] != bytes([0x20, 2])
        except OSError:
            pass
        assert node.get("/health")["status"] == "ok"  # type: ignore[index]
    finally:
        node.stop()
