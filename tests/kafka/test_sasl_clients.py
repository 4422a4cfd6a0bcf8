"""Real Kafka clients (confluent-kafka, kafka-python, aiokafka) authenticate with SASL PLAIN and
SCRAM-SHA-256 against `real.kafka.sasl.SaslServer`, behind a minimal asyncio test server.

The test server speaks only what a client needs to bootstrap: ApiVersions (any version; an
unsupported one gets the v0-layout error 35 reply), SaslHandshake v0/v1, SaslAuthenticate v0/v1,
raw SASL tokens after a v0 handshake, and Metadata (this one broker, no topics). It wires the
SASL exchange exactly as the `real.kafka.sasl` docstring tells the broker to, so these tests also
check those instructions. A client's metadata call succeeding proves it authenticated; the server
records every exchange's outcome so a test asserts what the server decided too.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from real.kafka import api, codec, errors
from real.kafka.errors import KafkaCodecError, UnsupportedVersion
from real.kafka.sasl import (
    SaslServer,
    SaslUsers,
    ScramCredential,
    ScramFile,
    authenticate_response,
    handshake_response,
    hash_binding,
    raw_token_frame,
)
from real.mqtt.auth import PasswordFile, hash_password
from tests.kafka.test_sasl import ScramClient

pytestmark = pytest.mark.integration

WAIT = 20.0  # seconds a test waits for the server to record an outcome
ATTEMPT_SECONDS = 0.25  # one librdkafka metadata attempt while waiting for an outcome
FRAME_BYTES_MAX = 1 << 20
USER, PASSWORD = "alice", "s3cret-ü"
SALT = b"twelve-bytes"


def users() -> SaslUsers:
    entry = hash_password(PASSWORD.encode(), SALT)
    cred = ScramCredential.derive(PASSWORD.encode(), b"sixteen-byte-slt", binding=hash_binding(
        entry))
    return SaslUsers(PasswordFile.parse(f"{USER}:{entry}\n"),
                     ScramFile.parse(f"{USER}:{cred.render()}\n"))


@dataclass
class Outcome:
    mechanism: str | None
    handshake_version: int
    username: str | None
    failure: str | None


@dataclass
class SaslTestServer:
    """The asyncio server on its own loop thread; `outcomes` is appended under `cond`."""

    port: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    counter: int = 0

    def nonce(self) -> str:
        self.counter += 1
        return f"srv{self.counter:08d}"

    def wait_outcomes(self, count: int) -> list[Outcome]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.outcomes) >= count, timeout=WAIT), \
                self.outcomes
            return list(self.outcomes)

    def record(self, sasl: SaslServer) -> None:
        with self.cond:
            self.outcomes.append(Outcome(sasl.mechanism, sasl.handshake_version, sasl.username,
                                         sasl.failure))
            self.cond.notify_all()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sasl = SaslServer(users(), self.nonce, mock_secret=b"test")
        try:
            while True:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                assert 0 <= size <= FRAME_BYTES_MAX, size
                frame = await reader.readexactly(size)
                reply = self.dispatch(sasl, frame)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if sasl.failure is not None:
                    break  # the error reply is sent, then the connection closes
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def dispatch(self, sasl: SaslServer, frame: bytes) -> bytes | None:
        """The reply to one frame, or None to close the connection."""
        if sasl.raw_tokens:  # after SaslHandshake v0: a raw token, no Kafka header
            step = sasl.step(frame)
            if step.done:
                self.record(sasl)
            return None if step.error_code else raw_token_frame(step.server_bytes)
        try:
            header, body = codec.decode_request(frame)
        except UnsupportedVersion as exc:
            if exc.api_key == api.API_VERSIONS:
                return codec.api_versions_error_v0(exc.correlation_id)
            return None
        except KafkaCodecError:
            return None
        if not sasl.permits(header.api_key):
            return None
        key, version, corr = header.api_key, header.api_version, header.correlation_id
        if key == api.API_VERSIONS:
            out = {"error_code": 0, "api_keys": codec.supported_api_keys()}
        elif key == api.SASL_HANDSHAKE:
            error = sasl.start(body["mechanism"], version)
            if error:
                self.record(sasl)
            out = handshake_response(error)
        elif key == api.SASL_AUTHENTICATE:
            step = sasl.step(body["auth_bytes"])
            if step.done:
                self.record(sasl)
            out = authenticate_response(step)
        elif key == api.METADATA:
            out = {"brokers": [{"node_id": 1, "host": "127.0.0.1", "port": self.port}],
                   "cluster_id": "sasl-test", "controller_id": 1, "topics": []}
        else:
            return None
        return codec.encode_response(key, version, corr, out)


@pytest.fixture
def sasl_server() -> Iterator[SaslTestServer]:
    srv = SaslTestServer()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Future[None] | None = None

    async def serve() -> None:
        nonlocal stop
        server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
        srv.port = server.sockets[0].getsockname()[1]
        stop = loop.create_future()
        started.set()
        async with server:
            await stop

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(WAIT)
    try:
        yield srv
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(WAIT)
        loop.close()


MECHANISMS = ["PLAIN", "SCRAM-SHA-256"]


def confluent_metadata(port: int, mechanism: str, password: str) -> bool:
    """True once a metadata request succeeds, False once librdkafka reports an authentication
    error (its error callback), whichever comes first."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    seen: list[KafkaError] = []
    client = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}",
                          "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism,
                          "sasl.username": USER, "sasl.password": password,
                          "log_level": 0, "error_cb": seen.append})
    for _ in range(int(WAIT / ATTEMPT_SECONDS)):
        try:
            return 1 in client.list_topics(timeout=ATTEMPT_SECONDS).brokers
        except KafkaException:
            client.poll(0)  # serves the error callback
            if any(e.code() == KafkaError._AUTHENTICATION for e in seen):
                return False
    raise AssertionError(f"neither metadata nor an authentication error: {seen}")


def kafka_python_metadata(port: int, mechanism: str, password: str) -> bool:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}",
                                 security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism,
                                 sasl_plain_username=USER, sasl_plain_password=password,
                                 request_timeout_ms=5000, bootstrap_timeout_ms=2000)
    except KafkaError:
        return False
    try:
        return consumer.topics() == set()
    except KafkaError:
        return False
    finally:
        consumer.close()


def aiokafka_metadata(port: int, mechanism: str, password: str) -> bool:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    async def go() -> bool:
        consumer = AIOKafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}",
                                    security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism,
                                    sasl_plain_username=USER, sasl_plain_password=password,
                                    request_timeout_ms=5000)
        try:
            await consumer.start()
        except KafkaError:
            return False
        try:
            return await consumer.topics() == set()
        finally:
            await consumer.stop()

    return asyncio.run(go())


CLIENTS = {"confluent-kafka": confluent_metadata, "kafka-python": kafka_python_metadata,
           "aiokafka": aiokafka_metadata}


@pytest.mark.smoke
@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_client_authenticates(sasl_server: SaslTestServer, client: str, mechanism: str) -> None:
    assert CLIENTS[client](sasl_server.port, mechanism, PASSWORD)
    outcomes = sasl_server.wait_outcomes(1)
    assert all(o.username == USER and o.failure is None for o in outcomes), outcomes
    assert {o.mechanism for o in outcomes} == {mechanism}


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_client_with_a_wrong_password_is_refused(sasl_server: SaslTestServer, client: str,
                                                 mechanism: str) -> None:
    assert not CLIENTS[client](sasl_server.port, mechanism, PASSWORD + "x")
    outcomes = sasl_server.wait_outcomes(1)
    assert outcomes[0].username is None and outcomes[0].mechanism == mechanism
    assert outcomes[0].failure is not None and "alice" in outcomes[0].failure
    assert all(o.username is None for o in outcomes)


def test_unknown_mechanism_is_refused(sasl_server: SaslTestServer) -> None:
    assert not confluent_metadata(sasl_server.port, "SCRAM-SHA-512", PASSWORD)
    outcome = sasl_server.wait_outcomes(1)[0]
    assert outcome.mechanism is None and "SCRAM-SHA-512" in (outcome.failure or "")


# --- the legacy flow: SaslHandshake v0, then raw tokens (no client above uses it any more) -----


def read_frame(sock: socket.socket) -> bytes:
    """One size-prefixed frame's payload; b"" if the server closed the connection."""
    data = b""
    while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
        chunk = sock.recv(65536)
        if not chunk:
            assert data == b"", data
            return b""
        data += chunk
    size = struct.unpack(">i", data[:4])[0]
    assert len(data) == 4 + size
    return data[4:]


def v0_login(port: int, mechanism: str, password: str) -> tuple[socket.socket, bool]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    header = codec.RequestHeader(api.SASL_HANDSHAKE, 0, 7, "raw")
    sock.sendall(codec.encode_request(header, {"mechanism": mechanism}))
    corr, body = codec.decode_response(api.SASL_HANDSHAKE, 0, read_frame(sock))
    assert (corr, body["error_code"]) == (7, errors.NONE)
    if mechanism == "PLAIN":
        sock.sendall(raw_token_frame(f"\0{USER}\0{password}".encode()))
        reply = sock.recv(4)
        return sock, reply == b"\0\0\0\0"  # the empty token; b"": closed
    client = ScramClient(USER, password.encode(), "v0nonce")
    sock.sendall(raw_token_frame(client.first()))
    server_first = read_frame(sock)
    assert server_first.startswith(b"r=v0noncesrv")
    sock.sendall(raw_token_frame(client.final(server_first)))
    server_final = read_frame(sock)
    assert server_final in (b"", b"v=" + base64.b64encode(client.server_signature))
    return sock, server_final != b""


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_v0_handshake_raw_tokens(sasl_server: SaslTestServer, mechanism: str) -> None:
    sock, ok = v0_login(sasl_server.port, mechanism, PASSWORD)
    with sock:
        assert ok
        # back to Kafka framing: a Metadata request is answered
        sock.sendall(codec.encode_request(codec.RequestHeader(api.METADATA, 1, 8, "raw"),
                                          {"topics": None}))
        corr, body = codec.decode_response(api.METADATA, 1, read_frame(sock))
        assert corr == 8 and body["brokers"][0]["node_id"] == 1
    outcome = sasl_server.wait_outcomes(1)[0]
    assert (outcome.handshake_version, outcome.username) == (0, USER)
    sock, ok = v0_login(sasl_server.port, mechanism, PASSWORD + "x")
    with sock:
        assert not ok and sock.recv(1) == b""  # a v0 failure is a closed connection
    assert sasl_server.wait_outcomes(2)[1].failure is not None
