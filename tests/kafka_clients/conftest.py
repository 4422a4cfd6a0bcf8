"""Fixtures for the real-client Kafka integration matrix: one broker process per test.

The broker under test is chosen by the environment variable `TWINMQ_TEST_KAFKA`:

- `twinmq` (the default): `python -m real serve --data-dir D --mqtt-port P1 --ws-port P2
  --admin-port P3 --kafka-port P4` (all free ports); `.mqtt_port` is set for cross-protocol tests.
- `tansu`: Tansu 0.6 (memory storage) from `scenarios/bench/tansu.py`, the Kafka-compatible
  reference every test here is written against first. It sits behind `ApiVersionsTagProxy` (see
  tansu_proxy.py: it drops the default-valued tagged fields of Tansu's ApiVersions v3 reply, which
  the librdkafka 2.0.2 inside Debian's kcat cannot parse) and advertises the proxy's address, so
  every client talks to Tansu through it. `.mqtt_port` is None.

`kafka_broker` (function scope) yields a `KafkaBroker`: `.bootstrap` ("127.0.0.1:P"), `.host`,
`.port`, `.kind`, `.mqtt_port`, `.restart(kill=False)` and `.log_text()`. "Ready" means an
ApiVersions v0 request on the Kafka port gets error_code 0 (and, for twinmq, the MQTT port
accepts a TCP connection). At teardown the process gets SIGTERM and must exit 0 within
`STOP_SECONDS_MAX`; a failing test gets the broker's log attached to its report. Tansu keeps its
data in memory, so its `restart()` starts from an empty broker.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from scenarios.bench.tansu import ensure_tansu
from tests.kafka_clients.tansu_proxy import ApiVersionsTagProxy
from tests.kafka_clients.wire import probe_api_versions

ROOT = Path(__file__).resolve().parents[2]
BROKER_KIND = os.environ.get("TWINMQ_TEST_KAFKA", "twinmq")
assert BROKER_KIND in ("twinmq", "tansu"), f"TWINMQ_TEST_KAFKA={BROKER_KIND!r}: " \
    "expected 'twinmq' or 'tansu'"
HOST = "127.0.0.1"

READY_SECONDS_MAX = 30.0  # a broker not answering ApiVersions by then failed to start
STOP_SECONDS_MAX = 10.0  # SIGTERM to exit
PROBE_SECONDS = 1.0  # one readiness probe
KAFKA_AFTER_MQTT_SECONDS = 5.0  # twinmq: MQTT answers but the Kafka port still refuses -> fail
WAIT = 20.0  # how long a test waits for something the broker (and a client) must do
POLL_SECONDS = 0.05  # interval of a poll-with-deadline on state only visible by asking
LOG_TAIL_BYTES = 20_000

T = TypeVar("T")

# kafka-python's group coordinator at DEBUG: pytest keeps these records and prints them only for
# a failing test ("Captured log call"), so a group join that never completes shows the client's
# side (JoinGroup/SyncGroup requests, errors, rejoins) beside the broker log.
logging.getLogger("kafka.coordinator").setLevel(logging.DEBUG)


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1, outside the ephemeral range (a broker
    restarted on its ports met one taken by a client's connection: real/node/ports.py)."""
    from real.node.ports import free_ports as pick

    ports = pick(HOST, count)
    return ports


def poll_until(check: Callable[[], T], what: str, timeout: float = WAIT) -> T:
    """Call `check` until it returns a truthy value (returned) or `timeout` passes (fail).

    For state that can only be observed by asking the broker again (Metadata after a topic
    delete, a process's output file); exceptions from `check` count as "not yet" and the last
    one is reported.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except Exception as exc:  # not ready yet: keep the reason for the failure message
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")
        time.sleep(POLL_SECONDS)  # polling interval of a poll with a deadline


class KafkaBroker:
    """One broker process (twinmq or tansu) on free ports, restartable in place."""

    def __init__(self, kind: str, workdir: Path) -> None:
        assert kind in ("twinmq", "tansu"), kind
        self.kind = kind
        self.host = HOST
        self.workdir = workdir
        self.data_dir = workdir / "broker-data"
        self.data_dir.mkdir(parents=True)
        self.log_path = workdir / "broker.log"
        self.starts = 0
        self.mqtt_port: int | None = None
        self._proxy: ApiVersionsTagProxy | None = None
        self._upstream_port = 0
        if kind == "twinmq":
            self.mqtt_port, self.ws_port, self.admin_port, self.port = free_ports(4)
        else:
            self._proxy_port, self._upstream_port = free_ports(2)
            self.port = self._proxy_port
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None, "broker not started"
        return self._proc.pid

    def command(self) -> list[str]:
        if self.kind == "tansu":
            exe, message = ensure_tansu()
            if exe is None:
                pytest.skip(f"tansu unavailable: {message}")
            listen = f"tcp://{self.host}:{self._upstream_port}"
            advertise = f"tcp://{self.host}:{self._proxy_port}"
            return [str(exe), "broker", "--listener-url", listen,
                    "--advertised-listener-url", advertise, "--storage-engine", "memory://tansu/"]
        return [sys.executable, "-m", "real", "serve", "--data-dir", str(self.data_dir),
                "--mqtt-port", str(self.mqtt_port), "--ws-port", str(self.ws_port),
                "--admin-port", str(self.admin_port), "--kafka-port", str(self.port)]

    def start(self) -> None:
        """Start the process (appending to the log) and wait until it answers ApiVersions."""
        assert self._proc is None or self._proc.poll() is not None, "already running"
        command = self.command()
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts}: {self.kind} =====\n".encode())
            log.flush()
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self._proc = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT)
        if self.kind == "tansu" and self._proxy is None:
            self._proxy = ApiVersionsTagProxy(self._upstream_port, port=self._proxy_port)
        self._wait_ready()

    def _mqtt_up(self) -> bool:
        """True if this is twinmq and its MQTT port accepts a connection."""
        if self.mqtt_port is None:
            return False
        try:
            with socket.create_connection((self.host, self.mqtt_port), timeout=PROBE_SECONDS):
                return True
        except OSError:
            return False

    def _wait_ready(self) -> None:
        """Poll ApiVersions until it answers; fail fast if the process exits, or if TwinMQ's
        MQTT listener has been up for KAFKA_AFTER_MQTT_SECONDS while nothing listens for Kafka."""
        assert self._proc is not None
        deadline = time.monotonic() + READY_SECONDS_MAX
        mqtt_since: float | None = None
        last: BaseException | None = None
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise AssertionError(f"{self.kind} exited with {code} while starting\n"
                                     f"{self.log_text()}")
            try:
                probe_api_versions(self.host, self.port, PROBE_SECONDS)
                if self.mqtt_port is None or self._mqtt_up():
                    return
            except Exception as exc:  # refused, reset, closed, timeout: not ready yet
                last = exc
            if mqtt_since is None and self._mqtt_up():
                mqtt_since = time.monotonic()
            if mqtt_since is not None and isinstance(last, ConnectionRefusedError) and \
                    time.monotonic() - mqtt_since > KAFKA_AFTER_MQTT_SECONDS:
                raise AssertionError(f"{self.kind}: MQTT port {self.mqtt_port} is up but nothing "
                                     f"listens on Kafka port {self.port}\n{self.log_text()}")
            time.sleep(POLL_SECONDS)  # polling interval of a readiness poll with a deadline
        raise AssertionError(f"{self.kind}: Kafka port {self.port} not answering ApiVersions "
                             f"within {READY_SECONDS_MAX}s (last probe error: {last!r})\n"
                             f"{self.log_text()}")

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

    def restart(self, kill: bool = False) -> int:
        """Stop (SIGKILL if `kill` else SIGTERM), start again on the same ports and data dir.

        Returns the exit status of the stopped process; a graceful stop must exit 0.
        """
        with self._lock:
            code = self.stop(kill=kill)
            if kill:
                assert code == -signal.SIGKILL, f"exit status {code}, expected SIGKILL"
            else:
                assert code == 0, f"{self.kind} exited {code} on SIGTERM\n{self.log_text()}"
            self.start()
            return code

    def close(self) -> int:
        """Teardown: SIGTERM, stop the proxy; returns the broker's exit status."""
        try:
            return self.stop(kill=False)
        finally:
            if self._proxy is not None:
                self._proxy.stop()

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
def kafka_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A fresh broker of kind `TWINMQ_TEST_KAFKA` for this test; stopped and checked after."""
    b = KafkaBroker(BROKER_KIND, tmp_path)
    b.start()
    try:
        yield b
    finally:
        code = b.close()
    assert code == 0, f"{b.kind} exited {code} on SIGTERM\n{b.log_text()}"
    assert_port_closed(b.host, b.port)
    if b.mqtt_port is not None:
        assert_port_closed(b.host, b.mqtt_port)


# The `smoke` slice the default run (`make test`) includes: one quick cell per client plus one
# group test. Test ids list the bottom-most parametrize decorator first.
SMOKE = frozenset({
    "test_matrix.py::test_produce_keys_headers[kafka-python]",
    "test_matrix.py::test_produce_keys_headers[confluent-kafka]",
    "test_matrix.py::test_assign_seek_to_beginning[aiokafka]",
    "test_matrix.py::test_produce_keys_headers[kcat]",
    "test_matrix.py::test_admin_create_delete[confluent-kafka]",
    "test_matrix.py::test_group_commit_resume[confluent-kafka]",
})
_HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before the -m filter deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent == _HERE and f"{item.path.name}::{item.name}" in SMOKE:
            item.add_marker(pytest.mark.smoke)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the broker's log to the report of a failing test that used `kafka_broker`."""
    outcome = yield
    report = outcome.get_result()
    b = getattr(item, "funcargs", {}).get("kafka_broker")
    if report.failed and isinstance(b, KafkaBroker):
        report.sections.append((f"broker log ({b.kind})", b.log_text()))
