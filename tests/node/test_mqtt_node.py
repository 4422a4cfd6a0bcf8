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
    from real.node.ports import free_port as pick

    return pick()


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
        assert ('twinmq_mqtt_messages_dropped_total{cluster="twinmq",node="1",'
                'reason="qos0_congested"}') in metrics
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
        assert 'twinmq_mqtt_messages_received_total{cluster="twinmq",node="1",qos="1"} 1.0' \
            in metrics
        assert 'twinmq_mqtt_connections{cluster="twinmq",node="1"} 2.0' in metrics
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
        metrics = node.get("/metrics")
        assert 'twinmq_mqtt_auth_failures_total{cluster="twinmq",node="1"} 2.0' in metrics  # type: ignore[operator]
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


@pytest.mark.parametrize("version", ["v311", "v5"])
def test_one_denied_topic_leaves_wildcard_subscribers_working(tmp_path: Path,
                                                              version: str) -> None:
    """Issue 12 point 7 (a), with paho: an operator hides one topic (`default = "allow"`, a
    subscribe deny rule); subscriptions to `#`, `+/+` and `test/#` are still granted, receive
    every other topic and never the hidden one (filtered at delivery, retained included);
    only a subscription to the hidden topic itself is refused."""
    import queue

    import paho.mqtt.client as paho

    acl = tmp_path / "acl.toml"
    acl.write_text('default = "allow"\n[[rule]]\npermission = "deny"\naction = "subscribe"\n'
                   'topic = "test/nosubscribe"\n')
    node = Node(tmp_path, "--acl-file", str(acl))
    proto = paho.MQTTv5 if version == "v5" else paho.MQTTv311
    try:
        pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="pub", protocol=proto)
        pub.connect("127.0.0.1", node.mqtt)
        pub.loop_start()
        pub.publish("test/nosubscribe", b"hidden-retained", qos=1, retain=True).wait_for_publish(10)
        got: queue.Queue = queue.Queue()
        granted: queue.Queue = queue.Queue()
        sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="dashboard", protocol=proto)
        sub.on_message = lambda c, u, msg: got.put((msg.topic, msg.payload))
        sub.on_subscribe = lambda c, u, mid, codes, p: granted.put(
            [int(getattr(code, "value", code)) for code in codes])
        sub.connect("127.0.0.1", node.mqtt)
        sub.loop_start()
        try:
            sub.subscribe([("#", 1), ("+/+", 1), ("test/#", 1), ("test/nosubscribe", 1)])
            refused = 0x87 if version == "v5" else 0x80
            assert granted.get(timeout=10) == [1, 1, 1, refused]
            for topic, payload in (("test/nosubscribe", b"hidden"), ("test/visible", b"shown"),
                                   ("other/x", b"also")):
                pub.publish(topic, payload, qos=1).wait_for_publish(10)
            # in order from one publisher: once the last has arrived, anything before it has
            seen = []
            while b"also" not in [p for _t, p in seen]:
                seen.append(got.get(timeout=10))
            assert {p for _t, p in seen} == {b"shown", b"also"}, seen
            # one copy for the three overlapping subscriptions, as MQTT allows
            assert [t for t, p in seen if p == b"shown"] == ["test/visible"]
        finally:
            sub.disconnect()
            sub.loop_stop()
            pub.disconnect()
            pub.loop_stop()
    finally:
        node.stop()


def test_a_disconnect_reason_reaches_a_client_that_is_still_sending(tmp_path: Path) -> None:
    """Issue 12 point 7 (b), with paho: a client that ignores the node's Receive Maximum (2)
    and keeps sending gets DISCONNECT 0x93 and sees it, every time: the node half-closes and
    drains the input instead of closing a socket with unread bytes (which answers with a reset
    that can destroy the DISCONNECT before the client reads it)."""
    import queue

    import paho.mqtt.client as paho

    config = tmp_path / "node.toml"
    config.write_text("[mqtt]\nreceive_maximum = 2\n")
    node = Node(tmp_path, "--config", str(config))
    try:
        for trial in range(5):
            ended: queue.Queue = queue.Queue()
            client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"eager{trial}",
                                 protocol=paho.MQTTv5)
            client.on_disconnect = lambda c, u, flags, rc, p, ended=ended: ended.put(
                (flags.is_disconnect_packet_from_server, int(getattr(rc, "value", rc))))
            client.connect("127.0.0.1", node.mqtt)
            client.loop_start()
            try:
                for _ in range(20):  # paho keeps 20 in flight, whatever the node allows
                    client.publish("flood", b"x" * 60_000, qos=2)
                assert ended.get(timeout=20) == (True, 0x93), trial
            finally:
                client.loop_stop()
        assert node.get("/health")["status"] == "ok"  # type: ignore[index]
    finally:
        node.stop()


def test_a_disconnect_behind_queued_data_survives_unread_input(tmp_path: Path) -> None:
    """The case that loses the DISCONNECT without the half-close: the client is behind (the
    node has queued data it has not read yet) and sends a malformed packet followed by more
    input than the node reads at once. Closing outright sent a reset that dropped the queued
    bytes, DISCONNECT included (seen 5 times in 5); now the client reads every message the
    node accepted for it, the DISCONNECT with 0x81, then a clean end of stream."""
    from real.mqtt import Disconnect
    from real.mqtt.codec import MQTT_5

    node = Node(tmp_path)
    try:
        sub = socket.create_connection(("127.0.0.1", node.mqtt), timeout=20)
        sub.sendall(encode(Connect("behind", protocol_version=MQTT_5), MQTT_5)
                    + encode(Subscribe(1, (Subscription("big", 0),)), MQTT_5))
        decoder = Decoder(version=MQTT_5)
        packets: list = []
        while len(packets) < 2:  # CONNACK, SUBACK
            packets += decoder.feed(sub.recv(100))
        pub = Client(node.mqtt, "pub")
        for _ in range(100):
            pub.send(Publish("big", b"x" * 60_000))
        pub.send(Publish("big", b"last", qos=1, packet_id=1))
        pub.expect(lambda p: isinstance(p, Puback))  # everything before it was routed
        sub.sendall(b"\x00\x00")  # packet type 0 is reserved: malformed
        try:
            sub.sendall(b"\xc0\x00" * 600_000)  # PINGREQs the node will not read
        except OSError:
            pass
        received: list = []
        while True:
            data = sub.recv(1 << 16)  # ConnectionResetError here without the half-close
            if not data:
                break
            received += decoder.feed(data)
        assert isinstance(received[-1], Disconnect) and received[-1].reason_code == 0x81
        payloads = [p.payload for p in received if isinstance(p, Publish)]
        assert payloads and set(payloads) <= {b"x" * 60_000, b"last"}
        assert node.get("/health")["status"] == "ok"  # type: ignore[index]
    finally:
        node.stop()
