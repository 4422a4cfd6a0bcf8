"""A loopback TCP relay in front of Tansu that hides one Tansu quirk from old librdkafka (kcat).

Why: Tansu 0.6 writes every top-level tagged field of its ApiVersions v3 response, defaults
included (SupportedFeatures, FinalizedFeaturesEpoch=-1, FinalizedFeatures, ZkMigrationReady).
Apache Kafka omits tagged fields that hold their default. librdkafka 2.0.2 -- the one Debian's
kcat 1.7.1 links -- mis-skips that tag section ("Protocol read buffer underflow for ApiVersion v3
at 274/279 ... expected 216172782113783806 bytes"), marks the broker down and never connects.
librdkafka 2.16 (confluent-kafka), kafka-python and aiokafka parse it fine.

What it does: every byte is relayed unchanged in both directions except the responses to
ApiVersions requests of version >= 3, whose trailing tagged-field section is replaced by an empty
one (a single 0x00; the api list and throttle time are kept). The relay frames the streams (4-byte
big-endian size prefix) to pair each response with its request's (api_key, api_version) by
correlation id. Anything it cannot parse is relayed unchanged.

Tansu must advertise the relay's address (`--advertised-listener-url`), so that clients that
reconnect to the address in Metadata come back through the relay.

Limits: one thread per direction per connection (test scale: tens of connections); a frame is
held in memory whole; `FRAME_BYTES_MAX` bounds it (a larger size prefix closes the connection).
"""

from __future__ import annotations

import socket
import struct
import threading

API_VERSIONS = 18
FRAME_BYTES_MAX = 64 * 1024 * 1024
ACCEPT_BACKLOG = 64


def _read_exact(sock: socket.socket, count: int) -> bytes | None:
    """Exactly `count` bytes, or None if the peer closed first."""
    chunks: list[bytes] = []
    left = count
    while left:
        data = sock.recv(min(left, 1 << 20))
        if not data:
            return None
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


def _read_frame(sock: socket.socket) -> bytes | None:
    """One size-prefixed Kafka frame WITHOUT its prefix (None when the stream ends)."""
    head = _read_exact(sock, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">i", head)
    if size < 0 or size > FRAME_BYTES_MAX:
        raise ConnectionError(f"frame size {size} outside 0..{FRAME_BYTES_MAX}")
    return _read_exact(sock, size)


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of an unsigned varint at `pos`."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        assert shift < 64, "varint too long"


def strip_api_versions_tags(frame: bytes) -> bytes:
    """An ApiVersions v3+ response body (header v0 + body) with an empty top-level tag section.

    Layout: correlation_id i32 | error_code i16 | api_keys compact array of (api_key i16,
    min i16, max i16, tagged fields) | throttle_time_ms i32 | tagged fields. Returns the frame
    unchanged if it does not parse as that layout.
    """
    try:
        pos = 4 + 2
        count, pos = _uvarint(frame, pos)
        for _ in range(max(count - 1, 0)):
            pos += 6
            tags, pos = _uvarint(frame, pos)
            for _ in range(tags):
                _tag, pos = _uvarint(frame, pos)
                size, pos = _uvarint(frame, pos)
                pos += size
        pos += 4  # throttle_time_ms
        if pos > len(frame):
            return frame
        return frame[:pos] + b"\x00"
    except (IndexError, AssertionError):
        return frame


class _Connection:
    """One client connection and its upstream connection to Tansu, pumped by two threads."""

    def __init__(self, client: socket.socket, upstream: socket.socket,
                 seen: dict[tuple[int, int], int], seen_lock: threading.Lock) -> None:
        self.client, self.upstream = client, upstream
        self.seen, self.seen_lock = seen, seen_lock
        self.requests: dict[int, tuple[int, int]] = {}  # correlation id -> (api key, version)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._requests, daemon=True),
                        threading.Thread(target=self._responses, daemon=True)]
        for t in self.threads:
            t.start()

    def _requests(self) -> None:
        try:
            while (frame := _read_frame(self.client)) is not None:
                if len(frame) >= 8:
                    key, version, corr = struct.unpack_from(">hhi", frame)
                    with self.lock:
                        self.requests[corr] = (key, version)
                    with self.seen_lock:
                        self.seen[(key, version)] = self.seen.get((key, version), 0) + 1
                self.upstream.sendall(struct.pack(">i", len(frame)) + frame)
        except OSError:
            pass
        finally:
            self.close()

    def _responses(self) -> None:
        try:
            while (frame := _read_frame(self.upstream)) is not None:
                if len(frame) >= 4:
                    (corr,) = struct.unpack_from(">i", frame)
                    with self.lock:
                        key, version = self.requests.pop(corr, (-1, -1))
                    if key == API_VERSIONS and version >= 3:
                        frame = strip_api_versions_tags(frame)
                self.client.sendall(struct.pack(">i", len(frame)) + frame)
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class ApiVersionsTagProxy:
    """Listen on 127.0.0.1:`port` (0 = pick one) and relay every connection to `upstream_port`."""

    def __init__(self, upstream_port: int, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host, self.upstream_port = host, upstream_port
        self.listener = socket.create_server((host, port), backlog=ACCEPT_BACKLOG)
        self.port = int(self.listener.getsockname()[1])
        self.connections: list[_Connection] = []
        # (api_key, api_version) -> number of requests relayed: which versions clients picked
        self.seen: dict[tuple[int, int], int] = {}
        self._seen_lock = threading.Lock()
        self._stopping = threading.Event()
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # listener closed by stop()
            try:
                upstream = socket.create_connection((self.host, self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections.append(_Connection(client, upstream, self.seen, self._seen_lock))

    def stop(self) -> None:
        """Close the listener and every relayed connection; join the threads."""
        self._stopping.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self._accepter.join(timeout=5)
        for c in self.connections:
            c.close()
        for c in self.connections:
            for t in c.threads:
                t.join(timeout=5)
