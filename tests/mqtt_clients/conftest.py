"""Fixtures for the real-client MQTT integration tests: a broker process and paho clients.

The broker under test is chosen by the environment variable `TWINMQ_TEST_BROKER`:

- `twinmq` (the default): `python -m real serve --data-dir D --mqtt-port P --ws-port W
  --admin-port A --kafka-port K`, MQTT over WebSocket on path `/mqtt`;
- `mosquitto`: `/usr/sbin/mosquitto -c <generated config>` with a TCP listener, a WebSocket
  listener and persistence into the test's tmp dir. It is the reference: every test here is
  written to pass against it, except the few marked `xfail`/`skip` for Mosquitto with a reason.

`broker` (function scope: each test gets its own process, data dir and free ports) yields a
`Broker`: `.host`, `.port` (MQTT over TCP), `.ws_port`, `.ws_path`, `.kind`, `.pid`,
`.restart(kill=True|False)` (SIGKILL or SIGTERM, then start again on the same ports and data dir
and wait until ready) and `.log_text()`. "Ready" means an MQTT CONNECT gets a CONNACK on the TCP
port and on the WebSocket port. At teardown the process gets SIGTERM and must exit with status 0
within `STOP_SECONDS_MAX`; a test that fails gets the broker's log attached to its report.

`mqtt_client` is a factory for `PahoClient`s (paho-mqtt 2.x, MQTT 3.1.1 or 5, over TCP or
WebSocket) that turns paho's callbacks into queues and waits, so tests synchronise on what the
broker sent rather than on sleeps. Every client it makes is closed at teardown.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from websockets.sync.client import connect as ws_connect

from real.mqtt import MQTT_3_1_1, Connack, Connect, Decoder, Disconnect, encode

ROOT = Path(__file__).resolve().parents[2]
BROKER_KIND = os.environ.get("TWINMQ_TEST_BROKER", "twinmq")
assert BROKER_KIND in ("twinmq", "mosquitto"), f"TWINMQ_TEST_BROKER={BROKER_KIND!r}: " \
    "expected 'twinmq' or 'mosquitto'"
MOSQUITTO = "/usr/sbin/mosquitto"
HOST = "127.0.0.1"
WS_PATH = "/mqtt"

READY_SECONDS_MAX = 30.0  # a broker that is not answering CONNECT by then failed to start
STOP_SECONDS_MAX = 10.0  # SIGTERM to exit
PROBE_SECONDS = 1.0  # one readiness probe (connect + CONNECT/CONNACK)
WAIT = 10.0  # how long a test waits for something the broker must do
# How long a test watches for a message that must NOT arrive, after a positive barrier (a later
# message that did arrive) has shown the broker got that far. Short: it only catches stragglers.
NEGATIVE_WAIT = 0.5
LOG_TAIL_BYTES = 20_000

V311 = paho.MQTTv311
V5 = paho.MQTTv5
VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]
TRANSPORTS = ["tcp", "ws"]

# ------------------------------------------------------------------------------------ brokers


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1, outside the ephemeral range (a broker
    restarted on its ports met one taken by a client's connection: real/node/ports.py)."""
    from real.node.ports import free_ports as pick

    ports = pick(HOST, count)
    return ports


def probe_mqtt_tcp(host: str, port: int) -> None:
    """Connect, send an MQTT 3.1.1 CONNECT, require a CONNACK with return code 0, disconnect."""
    with socket.create_connection((host, port), timeout=PROBE_SECONDS) as sock:
        sock.settimeout(PROBE_SECONDS)
        sock.sendall(encode(Connect(client_id="ready-probe", keep_alive=10), MQTT_3_1_1))
        decoder = Decoder(version=MQTT_3_1_1)
        packets: list[Any] = []
        while not packets:
            data = sock.recv(4096)
            if not data:
                raise ConnectionError("closed before CONNACK")
            packets = decoder.feed(data)
        assert isinstance(packets[0], Connack), packets
        assert packets[0].reason_code == 0, packets
        sock.sendall(encode(Disconnect(), MQTT_3_1_1))


def probe_mqtt_ws(host: str, port: int, path: str) -> None:
    """The same probe over a WebSocket (subprotocol "mqtt", one binary frame per packet)."""
    url = f"ws://{host}:{port}{path}"
    with ws_connect(url, subprotocols=["mqtt"], open_timeout=PROBE_SECONDS) as ws:
        ws.send(encode(Connect(client_id="ready-probe-ws", keep_alive=10), MQTT_3_1_1))
        frame = ws.recv(timeout=PROBE_SECONDS)
        assert isinstance(frame, bytes), frame
        packets = Decoder(version=MQTT_3_1_1).feed(frame)
        assert packets and isinstance(packets[0], Connack), packets
        assert packets[0].reason_code == 0, packets
        ws.send(encode(Disconnect(), MQTT_3_1_1))


def mosquitto_config(data_dir: Path, port: int, ws_port: int) -> str:
    """A Mosquitto 2.x config: anonymous TCP + WebSocket listeners, persistence into data_dir.

    `max_queued_messages` is raised so an offline persistent session can hold the 2000 messages
    of the SIGKILL test (the default, 1000, would drop some and hide what we measure).
    """
    return "\n".join([
        "per_listener_settings false",
        "allow_anonymous true",
        "user root",  # stay the user we are: the data dir belongs to us
        "persistence true",
        f"persistence_location {data_dir}/",
        "max_queued_messages 100000",
        "set_tcp_nodelay true",
        "log_dest stderr",
        "log_type all",
        f"listener {port} {HOST}",
        f"listener {ws_port} {HOST}",
        "protocol websockets",
        "",
    ])


class Broker:
    """One broker process on fixed (free) ports and a data dir, restartable in place."""

    def __init__(self, kind: str, workdir: Path) -> None:
        assert kind in ("twinmq", "mosquitto"), kind
        self.kind = kind
        self.host = HOST
        self.ws_path = WS_PATH
        self.port, self.ws_port, self.admin_port, self.kafka_port = free_ports(4)
        self.data_dir = workdir / "broker-data"
        self.data_dir.mkdir(parents=True)
        self.log_path = workdir / "broker.log"
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # restart() may run on a killer thread

    @property
    def pid(self) -> int:
        assert self._proc is not None, "broker not started"
        return self._proc.pid

    def command(self) -> list[str]:
        if self.kind == "mosquitto":
            conf = self.data_dir.parent / "mosquitto.conf"
            conf.write_text(mosquitto_config(self.data_dir, self.port, self.ws_port))
            return [MOSQUITTO, "-c", str(conf)]
        # the same queue bound as the Mosquitto config above (the default is 1,000 for both)
        conf = self.data_dir.parent / "twinmq.toml"
        conf.write_text("[mqtt]\nmax_queued = 100000\n")
        return [sys.executable, "-m", "real", "serve", "--config", str(conf),
                "--data-dir", str(self.data_dir),
                "--mqtt-port", str(self.port), "--ws-port", str(self.ws_port),
                "--admin-port", str(self.admin_port), "--kafka-port", str(self.kafka_port)]

    def start(self) -> None:
        """Start the process (appending to the log) and wait until both listeners answer."""
        assert self._proc is None or self._proc.poll() is not None, "already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts}: {self.kind} =====\n".encode())
            log.flush()
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self._proc = subprocess.Popen(self.command(), cwd=ROOT, env=env,
                                          stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT)
        self._wait_ready()

    def start_on_free_ports(self, attempts: int = 3) -> None:
        """The first start. Free ports are picked before the broker binds them, so another
        process may take one in between (seen under `-n 2`): then pick new ones and retry.
        Restarts keep the ports, as clients reconnect to them."""
        for attempt in range(attempts):
            try:
                self.start()
                return
            except AssertionError as exc:
                if "address already in use" not in str(exc) or attempt == attempts - 1:
                    raise
                self.port, self.ws_port, self.admin_port, self.kafka_port = free_ports(4)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + READY_SECONDS_MAX
        last: BaseException | None = None
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise AssertionError(f"{self.kind} exited with {code} while starting\n"
                                     f"{self.log_text()}")
            try:
                probe_mqtt_tcp(self.host, self.port)
                probe_mqtt_ws(self.host, self.ws_port, self.ws_path)
                return
            except Exception as exc:  # refused, reset, handshake, timeout: not ready yet
                last = exc
            time.sleep(0.05)  # polling interval of a readiness poll with a deadline
        raise AssertionError(f"{self.kind} not ready within {READY_SECONDS_MAX}s "
                             f"(last probe error: {last!r})\n{self.log_text()}")

    def stop(self, kill: bool = False) -> int:
        """SIGKILL or SIGTERM the process and wait for it; returns its exit status."""
        proc = self._proc
        assert proc is not None, "broker not started"
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            code = proc.wait(timeout=STOP_SECONDS_MAX)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_SECONDS_MAX)
            raise AssertionError(f"{self.kind} ignored SIGTERM for {STOP_SECONDS_MAX}s\n"
                                 f"{self.log_text()}") from None
        return code

    def restart(self, kill: bool = True) -> int:
        """Stop (SIGKILL if `kill` else SIGTERM), start again on the same ports and data dir.

        Returns the exit status of the stopped process. A graceful stop must exit 0.
        """
        with self._lock:
            code = self.stop(kill=kill)
            if kill:
                assert code == -signal.SIGKILL, f"exit status {code}, expected SIGKILL"
            else:
                assert code == 0, f"{self.kind} exited {code} on SIGTERM\n{self.log_text()}"
            self.start()
            return code

    def log_text(self) -> str:
        """The last LOG_TAIL_BYTES of the broker's stdout+stderr (all starts)."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return "(no broker log)"
        return f"----- {self.kind} log ({self.log_path}) -----\n" + \
            data[-LOG_TAIL_BYTES:].decode(errors="replace")


def assert_port_closed(host: str, port: int) -> None:
    """Nothing listens on `port` any more (no leftover process holding the listener)."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            pass
    except OSError:
        return
    raise AssertionError(f"something still listens on {host}:{port} after the broker stopped")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh broker of kind `TWINMQ_TEST_BROKER` for this test; stopped and checked after."""
    b = Broker(BROKER_KIND, tmp_path)
    b.start_on_free_ports()
    try:
        yield b
    finally:
        code = b.stop(kill=False)
    assert code == 0, f"{b.kind} exited {code} on SIGTERM\n{b.log_text()}"
    assert_port_closed(b.host, b.port)
    assert_port_closed(b.host, b.ws_port)


# The `smoke` slice that the default run (`make test`) includes: one fast representative per
# file, named here because most are one combination of a parametrized test. Test ids list the
# bottom-most parametrize decorator first.
SMOKE = frozenset({
    "test_paho.py::test_round_trip_qos[1-v311-tcp]",
    "test_paho.py::test_retained[v5-ws]",
    "test_v5_features.py::test_no_local",
    "test_aiomqtt.py::test_round_trip[2-v5-ws]",
    "test_mosquitto_clients.py::test_round_trip[1-v311]",
    "test_persistence.py::test_session_and_retained_survive_graceful_restart[v5]",
})
_HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before the -m filter deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent == _HERE and f"{item.path.name}::{item.name}" in SMOKE:
            item.add_marker(pytest.mark.smoke)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the broker's log to the report of a failing test that used `broker`."""
    outcome = yield
    report = outcome.get_result()
    b = getattr(item, "funcargs", {}).get("broker")
    if report.failed and isinstance(b, Broker):
        report.sections.append((f"broker log ({b.kind})", b.log_text()))


# ------------------------------------------------------------------------------------ clients


@dataclass(frozen=True, slots=True)
class Received:
    """One PUBLISH delivered to a client (`properties` is None for MQTT 3.1.1)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    properties: Properties | None


@dataclass(frozen=True, slots=True)
class ConnackInfo:
    session_present: bool
    reason_code: int
    properties: Properties | None


def props(packet_type: int, **values: Any) -> Properties:
    """paho Properties from keyword arguments: props(PacketTypes.PUBLISH, ContentType="x")."""
    p = Properties(packet_type)
    for name, value in values.items():
        setattr(p, name, value)
    return p


@dataclass
class _Waits:
    """Acks from the broker keyed by mid, filled from paho's callback thread."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    subacks: dict[int, list[int]] = field(default_factory=dict)
    unsubacks: dict[int, list[int]] = field(default_factory=dict)


class PahoClient:
    """A paho-mqtt 2.x client whose callbacks feed queues the test waits on.

    One object is one connection: to "reconnect with the same client id", make a new one.
    `clean` is Clean Session (3.1.1) or Clean Start (5); `session_expiry` (seconds, MQTT 5) goes
    into CONNECT's Session Expiry Interval. Automatic reconnection is off, so a broker that
    closes the connection is seen by the test (`disconnects`), not papered over.
    """

    def __init__(self, broker: Broker, client_id: str = "", *, version: int = V311,
                 transport: str = "tcp", clean: bool = True, session_expiry: int | None = None,
                 connect_properties: Properties | None = None, manual_ack: bool = False,
                 keepalive: int = 60) -> None:
        assert transport in TRANSPORTS, transport
        self.broker, self.version, self.transport = broker, version, transport
        self.client_id, self.clean, self.keepalive = client_id, clean, keepalive
        self.session_expiry, self.connect_properties = session_expiry, connect_properties
        kwargs: dict[str, Any] = {} if version == V5 else {"clean_session": clean}
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=version, reconnect_on_failure=False,
                                  transport="websockets" if transport == "ws" else "tcp",
                                  manual_ack=manual_ack, **kwargs)
        if transport == "ws":
            self.client.ws_set_options(path=broker.ws_path)
        self.messages: queue.Queue[Received] = queue.Queue()
        self.connacks: queue.Queue[ConnackInfo] = queue.Queue()
        # (reason code, whether the server sent a DISCONNECT packet) per closed connection
        self.disconnects: queue.Queue[tuple[int, bool]] = queue.Queue()
        self._waits = _Waits()
        self._loop_running = False
        c = self.client
        c.on_connect, c.on_message, c.on_disconnect = self._on_connect, self._on_message, \
            self._on_disconnect
        c.on_subscribe, c.on_unsubscribe = self._on_subscribe, self._on_unsubscribe

    # -- callbacks (paho's network thread)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, properties: Any) -> None:
        self.connacks.put(ConnackInfo(bool(flags.session_present), int(rc.value),
                                      properties if self.version == V5 else None))

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.messages.put(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain),
                                   msg.mid, msg.properties if self.version == V5 else None))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any,
                       properties: Any) -> None:
        self.disconnects.put((int(rc.value), bool(flags.is_disconnect_packet_from_server)))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any,
                      properties: Any) -> None:
        with self._waits.cond:
            self._waits.subacks[mid] = [int(c.value) for c in codes]
            self._waits.cond.notify_all()

    def _on_unsubscribe(self, client: Any, userdata: Any, mid: int, codes: Any,
                        properties: Any) -> None:
        with self._waits.cond:
            self._waits.unsubacks[mid] = [int(c.value) for c in codes]
            self._waits.cond.notify_all()

    # -- actions

    def set_will(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                 properties: Properties | None = None) -> None:
        self.client.will_set(topic, payload, qos, retain, properties)

    def connect(self, expect_rc: int = 0) -> ConnackInfo:
        """Connect, start paho's network thread, wait for the CONNACK (must carry expect_rc)."""
        kwargs: dict[str, Any] = {}
        if self.version == V5:
            p = self.connect_properties or Properties(PacketTypes.CONNECT)
            if self.session_expiry is not None:
                p.SessionExpiryInterval = self.session_expiry
            kwargs = {"clean_start": self.clean, "properties": p}
        self.client.connect(self.broker.host, self._port(), self.keepalive, **kwargs)
        self.client.loop_start()
        self._loop_running = True
        try:
            info = self.connacks.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"{self.client_id!r}: no CONNACK within {WAIT}s") from None
        assert info.reason_code == expect_rc, info
        return info

    def _port(self) -> int:
        return self.broker.ws_port if self.transport == "ws" else self.broker.port

    def _wait_ack(self, table: dict[int, list[int]], mid: int, what: str) -> list[int]:
        with self._waits.cond:
            ok = self._waits.cond.wait_for(lambda: mid in table, timeout=WAIT)
            assert ok, f"{self.client_id!r}: no {what} for mid {mid} within {WAIT}s"
            return table.pop(mid)

    def subscribe(self, topic: str, qos: int = 0, *, no_local: bool = False,
                  retain_as_published: bool = False, retain_handling: int = 0,
                  properties: Properties | None = None) -> list[int]:
        """SUBSCRIBE to one filter; returns the SUBACK's codes (granted QoS or reason)."""
        if self.version == V5:
            options = SubscribeOptions(qos=qos, noLocal=no_local,
                                       retainAsPublished=retain_as_published,
                                       retainHandling=retain_handling)
            rc, mid = self.client.subscribe(topic, options=options, properties=properties)
        else:
            rc, mid = self.client.subscribe(topic, qos)
        assert rc == paho.MQTT_ERR_SUCCESS, rc
        return self._wait_ack(self._waits.subacks, mid, "SUBACK")

    def unsubscribe(self, topic: str) -> list[int]:
        rc, mid = self.client.unsubscribe(topic)
        assert rc == paho.MQTT_ERR_SUCCESS, rc
        return self._wait_ack(self._waits.unsubacks, mid, "UNSUBACK")

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                properties: Properties | None = None) -> paho.MQTTMessageInfo:
        """Publish and wait until sent (QoS 0) or acknowledged (PUBACK / PUBCOMP)."""
        info = self.client.publish(topic, payload, qos, retain, properties)
        assert info.rc == paho.MQTT_ERR_SUCCESS, info.rc
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published(), f"{topic!r} qos {qos}: not acknowledged within {WAIT}s"
        return info

    def get(self, timeout: float = WAIT) -> Received:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id!r}: no message within {timeout}s") from None

    def collect(self, count: int, timeout: float = WAIT) -> list[Received]:
        """Exactly the next `count` messages, all within `timeout` seconds overall."""
        deadline = time.monotonic() + timeout
        got: list[Received] = []
        while len(got) < count:
            left = deadline - time.monotonic()
            try:
                got.append(self.messages.get(timeout=max(left, 0.0)))
            except queue.Empty:
                raise AssertionError(f"{self.client_id!r}: {len(got)} of {count} messages "
                                     f"within {timeout}s: {got[:5]}") from None
        return got

    def get_until(self, stop: Callable[[Received], bool], timeout: float = WAIT,
                  limit: int = 10_000) -> list[Received]:
        """Messages up to and including the first one for which `stop` is true."""
        deadline = time.monotonic() + timeout
        got: list[Received] = []
        while len(got) < limit:
            msg = self.get(max(deadline - time.monotonic(), 0.0))
            got.append(msg)
            if stop(msg):
                return got
        raise AssertionError(f"{self.client_id!r}: no stop message among {limit}")

    def expect_nothing(self, window: float = NEGATIVE_WAIT) -> None:
        """No further message arrives within `window` (use after a positive barrier)."""
        try:
            msg = self.messages.get(timeout=window)
        except queue.Empty:
            return
        raise AssertionError(f"{self.client_id!r}: unexpected message {msg}")

    def disconnect(self, properties: Properties | None = None) -> None:
        """A clean DISCONNECT; waits until paho has closed the connection."""
        self.client.disconnect(properties=properties)
        try:
            self.disconnects.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"{self.client_id!r}: disconnect did not complete") from None
        self.stop_loop()

    def drop(self) -> None:
        """Close the connection abruptly (TCP FIN, no DISCONNECT): what the will is for."""
        self.stop_loop()
        sock = self.client.socket()
        assert sock is not None, "not connected"
        dup = socket.fromfd(sock.fileno(), socket.AF_INET, socket.SOCK_STREAM)
        try:
            dup.shutdown(socket.SHUT_RDWR)
        finally:
            dup.close()
            sock.close()

    def stop_loop(self) -> None:
        if self._loop_running:
            self.client.loop_stop()
            self._loop_running = False

    def close(self) -> None:
        """Teardown: disconnect if still connected, stop the network thread."""
        if self.client.is_connected():
            self.client.disconnect()
        self.stop_loop()


@pytest.fixture
def mqtt_client(broker: Broker) -> Iterator[Callable[..., PahoClient]]:
    """Factory: mqtt_client(client_id, version=, transport=, clean=, ..., connect=True).

    Returns a connected `PahoClient` (or an unconnected one with connect=False) and closes
    every client it made when the test ends.
    """
    made: list[PahoClient] = []

    def make(client_id: str = "", *, connect: bool = True, **kwargs: Any) -> PahoClient:
        c = PahoClient(broker, client_id, **kwargs)
        made.append(c)
        if connect:
            c.connect()
        return c

    yield make
    for c in made:
        c.close()
