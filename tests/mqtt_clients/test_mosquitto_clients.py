"""The `mosquitto_pub` / `mosquitto_sub` command-line clients against the broker under test.

MQTT 3.1.1 and 5 (`-V mqttv311`, `-V mqttv5`), QoS 0/1/2, `-m` and `-f` payloads, `-r` retained
messages, `--will-*` with a SIGKILLed client and a persistent `-c -i ID` session. TCP only: the
Debian 2.0.11 clients installed here have no WebSocket transport (`mosquitto_pub --help` lists
no such option; `test_clients_lack_websockets` pins that, so an upgrade that adds it is noticed).

A `mosquitto_sub` runs with `-d` (debug lines tell when its SUBACK arrived, which is the moment
it is safe to publish) and `-F` printing each message as one tab-separated line
`MSG <topic> <qos> <retain> <payload as hex>`. Every subprocess has a timeout.
"""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mqtt_clients.conftest import WAIT, Broker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(any(shutil.which(t) is None for t in
                           ("mosquitto_sub", "mosquitto_pub", "stdbuf")),
                       reason="mosquitto clients (make tools) or stdbuf missing"),
]
VERSIONS = [pytest.param("mqttv311", id="v311"), pytest.param("mqttv5", id="v5")]
FORMAT = "MSG\t%t\t%q\t%r\t%x"
STDBUF = ["stdbuf", "-oL"]  # coreutils


@dataclass(frozen=True, slots=True)
class Line:
    topic: str
    qos: int
    retain: bool
    payload: bytes


class Sub:
    """A running `mosquitto_sub` whose stdout lines are read into a queue by a thread."""

    def __init__(self, broker: Broker, *args: str) -> None:
        # stdbuf -oL: line-buffer stdout, or the debug lines (SUBACK) sit in a pipe buffer
        cmd = [*STDBUF, "mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-d",
               "-F", FORMAT, *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []  # everything, for failure messages
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.rstrip("\n"))
        self.lines.put(None)  # EOF

    def _next_line(self) -> str:
        try:
            line = self.lines.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"mosquitto_sub silent for {WAIT}s: {self.output}") from None
        if line is None:
            raise AssertionError(f"mosquitto_sub ended: {self.output}")
        self.output.append(line)
        return line

    def wait_subscribed(self) -> None:
        while "received SUBACK" not in self._next_line():
            pass

    def messages(self, count: int) -> list[Line]:
        got: list[Line] = []
        while len(got) < count:
            line = self._next_line()
            if line.startswith("MSG\t"):
                _, topic, qos, retain, hexed = line.split("\t")
                got.append(Line(topic, int(qos), retain == "1", bytes.fromhex(hexed)))
        return got

    def wait_exit(self) -> int:
        try:
            return self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"mosquitto_sub did not exit: {self.output}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=WAIT)


@pytest.fixture
def subs() -> Iterator[list[Sub]]:
    """Every `Sub` a test starts (append to this list); killed at teardown if still running."""
    started: list[Sub] = []
    yield started
    for s in started:
        s.close()


def start_sub(subs: list[Sub], broker: Broker, *args: str, subscribed: bool = True) -> Sub:
    s = Sub(broker, *args)
    subs.append(s)
    if subscribed:
        s.wait_subscribed()
    return s


def pub(broker: Broker, *args: str) -> None:
    cmd = ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, f"{cmd}: {done.returncode} {done.stdout} {done.stderr}"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_round_trip(broker: Broker, subs: list[Sub], version: str, qos: int) -> None:
    text = "héllo wörld ✓"
    s = start_sub(subs, broker, "-V", version, "-q", str(qos), "-t", "cli/t", "-C", "1")
    pub(broker, "-V", version, "-q", str(qos), "-t", "cli/t", "-m", text)
    [line] = s.messages(1)
    assert line == Line("cli/t", qos, False, text.encode())
    assert s.wait_exit() == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_file_payload_is_byte_exact(broker: Broker, subs: list[Sub], tmp_path: Path,
                                    version: str) -> None:
    data = bytes(range(256)) * 64 + b"\x00\r\n"  # 16 KiB of every byte value, NUL, CR LF
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    s = start_sub(subs, broker, "-V", version, "-q", "1", "-t", "cli/file", "-C", "1")
    pub(broker, "-V", version, "-q", "1", "-t", "cli/file", "-f", str(path))
    [line] = s.messages(1)
    assert line.payload == data and line.qos == 1
    assert s.wait_exit() == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_then_late_subscriber(broker: Broker, subs: list[Sub], version: str) -> None:
    pub(broker, "-V", version, "-q", "1", "-r", "-t", "cli/ret", "-m", "retained-value")
    s = start_sub(subs, broker, "-V", version, "-t", "cli/ret", "-C", "1", subscribed=False)
    [line] = s.messages(1)
    assert line == Line("cli/ret", 0, True, b"retained-value")
    assert s.wait_exit() == 0

    pub(broker, "-V", version, "-q", "1", "-r", "-t", "cli/ret", "-n")  # clear it
    pub(broker, "-V", version, "-q", "1", "-r", "-t", "cli/ret2", "-m", "other")
    later = start_sub(subs, broker, "-V", version, "-t", "cli/+", "-C", "1", subscribed=False)
    [only] = later.messages(1)  # the cleared one is gone: only cli/ret2 is retained now
    assert only == Line("cli/ret2", 0, True, b"other")


@pytest.mark.parametrize("version", VERSIONS)
def test_will_of_killed_client(broker: Broker, subs: list[Sub], version: str) -> None:
    watcher = start_sub(subs, broker, "-V", version, "-q", "1", "-t", "cli/will", "-C", "1")
    doomed = start_sub(subs, broker, "-V", version, "-t", "cli/unused", "--will-topic",
                       "cli/will", "--will-payload", "gone", "--will-qos", "1")
    doomed.proc.send_signal(signal.SIGKILL)  # the kernel closes the socket: no DISCONNECT
    assert doomed.proc.wait(timeout=WAIT) == -signal.SIGKILL
    [line] = watcher.messages(1)
    assert line == Line("cli/will", 1, False, b"gone")
    assert watcher.wait_exit() == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_session(broker: Broker, subs: list[Sub], version: str) -> None:
    """`-c -i ID`: subscribe (`-E` exits after the SUBACK), go away, come back, get the queue.
    With `-V mqttv5`, `-c` also sets an unlimited session expiry."""
    first = start_sub(subs, broker, "-V", version, "-c", "-i", "cli-durable", "-q", "1",
                      "-t", "cli/durable", "-E", subscribed=False)
    assert first.wait_exit() == 0
    for i in range(3):
        pub(broker, "-V", version, "-q", "1", "-t", "cli/durable", "-m", f"queued-{i}")
    back = start_sub(subs, broker, "-V", version, "-c", "-i", "cli-durable", "-q", "1",
                     "-t", "cli/durable", "-C", "3", subscribed=False)
    got = back.messages(3)
    assert [line.payload for line in got] == [b"queued-0", b"queued-1", b"queued-2"]
    assert all(line.qos == 1 and not line.retain for line in got)
    assert back.wait_exit() == 0


def test_clients_lack_websockets() -> None:
    """Pins why this file is TCP only: the installed clients offer no WebSocket transport.
    If this fails, the clients gained one: add WebSocket cases here."""
    helps = [subprocess.run([tool, "--help"], capture_output=True, text=True, timeout=WAIT)
             for tool in ("mosquitto_pub", "mosquitto_sub")]
    text = "\n".join(h.stdout + h.stderr for h in helps).lower()
    assert "mosquitto_pub version" in text and "mosquitto_sub version" in text
    assert "websocket" not in text and "ws://" not in text
