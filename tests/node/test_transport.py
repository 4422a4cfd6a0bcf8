"""The asyncio listeners with real clients: asyncio streams (TCP, TLS), the `websockets` library
and paho-mqtt's WebSocket transport (ws, wss), and raw sockets for bad handshakes and frames.

Every wait has a timeout (`WAIT`); nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect
from wsproto.frame_protocol import CloseReason

from real.mqtt import Connack, Connect, Decoder, Disconnect, Publish, encode
from real.node.transport import Conn, Listener, make_ssl_context, start_listener
from tests.node.wsframes import client_frame, handshake_head, server_frames

WAIT = 10.0


class Recorder:
    """A Handler that records every call; optionally echoes what it receives."""

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.made: list[Conn] = []
        self.lost: list[tuple[Conn, Exception | None]] = []
        self.received: dict[int, bytearray] = {}
        self.writable_calls: list[Conn] = []
        self.changed = asyncio.Event()

    def connection_made(self, conn: Conn) -> None:
        assert conn not in self.made
        self.made.append(conn)
        self.received[conn.id] = bytearray()
        self.changed.set()

    def data_received(self, conn: Conn, data: bytes) -> None:
        assert conn in self.made
        if data == b"boom":
            raise RuntimeError("handler failure on purpose")
        self.received[conn.id] += data
        if self.echo:
            conn.write(data)
        self.changed.set()

    def connection_lost(self, conn: Conn, exc: Exception | None) -> None:
        assert conn.closed
        assert conn in self.made
        self.lost.append((conn, exc))
        self.changed.set()

    def writable(self, conn: Conn) -> None:
        self.writable_calls.append(conn)
        self.changed.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async def wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(wait(), WAIT)


def client_ssl(certs: tuple[str, str]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certs[0])


def server_ssl(kind: str, certs: tuple[str, str]) -> ssl.SSLContext | None:
    return make_ssl_context(*certs) if kind in ("tls", "wss") else None


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


async def open_raw(listener: Listener, sslctx: ssl.SSLContext | None = None
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", listener.port, ssl=sslctx), WAIT)


async def raw_ws(listener: Listener, sslctx: ssl.SSLContext | None = None
                 ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw client that has completed the handshake (the 101 head is consumed)."""
    reader, writer = await open_raw(listener, sslctx)
    writer.write(handshake_head())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    assert head.startswith(b"HTTP/1.1 101 ")
    return reader, writer


async def read_until_suffix(reader: asyncio.StreamReader, suffix: bytes) -> bytes:
    """Read until what was read ends with `suffix` (no size limit, unlike readuntil)."""
    async def read() -> bytes:
        got = bytearray()
        while not got.endswith(suffix):
            chunk = await reader.read(1 << 20)
            assert chunk, f"EOF after {len(got)} bytes"
            got += chunk
        return bytes(got)
    return await asyncio.wait_for(read(), WAIT)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), WAIT)


# ------------------------------------------------------------------------------- tcp and tls


@pytest.mark.parametrize("kind", ["tcp", "tls"])
def test_stream_echo(kind: str, certs: tuple[str, str]) -> None:
    async def test() -> None:
        rec = Recorder()
        listener = await start_listener(kind, "127.0.0.1", 0, rec,
                                        ssl_context=server_ssl(kind, certs))
        assert listener.port > 0
        assert listener.loopback
        sslctx = client_ssl(certs) if kind == "tls" else None
        clients = [await open_raw(listener, sslctx) for _ in range(2)]
        for i, (reader, writer) in enumerate(clients):
            writer.write(b"hello %d" % i)
            assert await asyncio.wait_for(reader.readexactly(7), WAIT) == b"hello %d" % i
        first, second = rec.made
        assert first.id < second.id
        assert listener.connections() == [first, second]
        assert (first.listener, first.loopback, first.closed) == (kind, True, False)
        host, port = clients[0][1].get_extra_info("sockname")[:2]
        assert first.peer == f"{host}:{port}"
        sock = first._transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert first.write_buffer_size() == 0
        clients[0][1].close()
        await rec.until(lambda: len(rec.lost) == 1)
        assert rec.lost[0][0] is first
        assert first.closed
        assert listener.connections() == [second]
        second.close()
        assert await read_to_eof(clients[1][0]) == b""
        await rec.until(lambda: len(rec.lost) == 2)
        clients[1][1].close()
        listener.close()
        await listener.wait_closed()

    run(test)


def test_handler_error_closes_only_that_connection() -> None:
    async def test() -> None:
        rec = Recorder()
        listener = await start_listener("tcp", "127.0.0.1", 0, rec)
        (r1, w1), (r2, w2) = await open_raw(listener), await open_raw(listener)
        await rec.until(lambda: len(rec.made) == 2)
        w1.write(b"boom")
        assert await read_to_eof(r1) == b""
        await rec.until(lambda: len(rec.lost) == 1)
        conn, exc = rec.lost[0]
        assert conn is rec.made[0]
        assert isinstance(exc, RuntimeError)
        w2.write(b"still here")
        assert await asyncio.wait_for(r2.readexactly(10), WAIT) == b"still here"
        for w in (w1, w2):
            w.close()
        listener.close()
        await listener.wait_closed()

    run(test)


def test_pause_and_resume_reading() -> None:
    async def test() -> None:
        rec = Recorder(echo=False)
        listener = await start_listener("tcp", "127.0.0.1", 0, rec)
        reader, writer = await open_raw(listener)
        await rec.until(lambda: len(rec.made) == 1)
        conn = rec.made[0]
        conn.pause_reading()
        conn.pause_reading()  # idempotent
        blob = bytes(32 << 20)
        writer.write(blob)
        # The server reads nothing, so the kernel buffers fill and the client cannot drain.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(writer.drain(), 0.5)
        assert len(rec.received[conn.id]) == 0
        conn.resume_reading()
        await asyncio.wait_for(writer.drain(), WAIT)
        await rec.until(lambda: len(rec.received[conn.id]) == len(blob))
        writer.close()
        listener.close()
        await listener.wait_closed()

    run(test)


def blocking_client(kind: str, port: int, certs: tuple[str, str]) -> socket.socket:
    """A blocking client socket (run it in a thread). Unlike an asyncio stream it reads nothing
    from the kernel until asked, so a test controls exactly when the server's data drains."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    if kind == "tls":
        sock = client_ssl(certs).wrap_socket(sock, server_hostname="127.0.0.1")
    if kind == "ws":
        sock.sendall(handshake_head())
        head = b""
        while not head.endswith(b"\r\n\r\n"):  # byte by byte: not one byte beyond the head
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101 ")
    return sock


def blocking_read_until(sock: socket.socket, suffix: bytes) -> bytes:
    got = bytearray()
    while not got.endswith(suffix):
        chunk = sock.recv(1 << 20)
        assert chunk, f"EOF after {len(got)} bytes"
        got += chunk
    return bytes(got)


@pytest.mark.parametrize("kind", ["tcp", "tls", "ws"])
def test_backpressure(kind: str, certs: tuple[str, str]) -> None:
    """A handler writing to a client that does not read sees the buffer reach the high-water
    mark; `writable` comes only after the client starts reading."""
    high = 16 << 10  # below asyncio's default (64 KiB), so the default limits would not pause
    chunk = b"x" * (4 << 10)

    class Flooder(Recorder):
        reading = False
        written = 0
        peak = 0
        early: list[int] = []  # writable calls before the client read, with the buffer size

        def connection_made(self, conn: Conn) -> None:
            super().connection_made(conn)
            while conn.write_buffer_size() <= high:
                conn.write(chunk)
                self.written += len(chunk)
            self.peak = conn.write_buffer_size()

        def writable(self, conn: Conn) -> None:
            if not self.reading or conn.write_buffer_size() > high // 4:
                self.early.append(conn.write_buffer_size())
            super().writable(conn)
            conn.write(b"END!")

    async def test() -> None:
        rec = Flooder(echo=False)
        listener = await start_listener(kind, "127.0.0.1", 0, rec, write_high_water=high,
                                        ssl_context=server_ssl(kind, certs))
        sock = await asyncio.to_thread(blocking_client, kind, listener.port, certs)
        try:
            await rec.until(lambda: len(rec.made) == 1)
            assert rec.peak > high
            assert rec.writable_calls == []
            rec.reading = True
            got = await asyncio.to_thread(blocking_read_until, sock, b"END!")
        finally:
            sock.close()
        assert rec.writable_calls == rec.made
        assert rec.early == []
        if kind == "ws":
            payloads = b"".join(frame[2] for frame in server_frames(got))
            assert payloads == b"x" * rec.written + b"END!"
        else:
            assert got == b"x" * rec.written + b"END!"
        listener.close()
        await listener.wait_closed()

    run(test)


# ------------------------------------------------------------------------------- websocket


@pytest.mark.parametrize("kind", ["ws", "wss"])
def test_websocket_echo_with_websockets_client(kind: str, certs: tuple[str, str]) -> None:
    async def test() -> None:
        rec = Recorder()
        listener = await start_listener(kind, "127.0.0.1", 0, rec,
                                        ssl_context=server_ssl(kind, certs))
        scheme = "wss" if kind == "wss" else "ws"
        sslctx = client_ssl(certs) if kind == "wss" else None
        uri = f"{scheme}://127.0.0.1:{listener.port}/mqtt"
        async with ws_connect(uri, subprotocols=["mqtt"], ssl=sslctx, max_size=None) as client:
            assert client.subprotocol == "mqtt"
            for payload in (b"\x10\x00", b"a" * 200, bytes(range(256)) * 300):
                await client.send(payload)
                echoed = b""  # a stream: the echo may come back in several frames
                while len(echoed) < len(payload):
                    echoed += await asyncio.wait_for(client.recv(), WAIT)
                assert echoed == payload
            pong = await client.ping(b"hb")
            await asyncio.wait_for(pong, WAIT)
            [conn] = rec.made
            assert (conn.listener, conn.loopback) == (kind, True)
            assert conn.peer.startswith("127.0.0.1:")
            conn.close()
            with pytest.raises(websockets.ConnectionClosedOK):
                await asyncio.wait_for(client.recv(), WAIT)
            assert client.close_code == CloseReason.NORMAL_CLOSURE
        await rec.until(lambda: len(rec.lost) == 1)
        assert rec.lost[0] == (conn, None)
        listener.close()
        await listener.wait_closed()

    run(test)


@pytest.mark.parametrize("kind", ["ws", "wss"])
def test_paho_websocket_transport(kind: str, certs: tuple[str, str]) -> None:
    """paho-mqtt's own handshake and framing reach the handler as MQTT packets."""

    class MiniBroker(Recorder):
        def __init__(self) -> None:
            super().__init__(echo=False)
            self.packets: list = []
            self.decoders: dict[int, Decoder] = {}

        def data_received(self, conn: Conn, data: bytes) -> None:
            decoder = self.decoders.setdefault(conn.id, Decoder())
            for packet in decoder.feed(data):
                self.packets.append(packet)
                if isinstance(packet, Connect):
                    conn.write(encode(Connack(), decoder.version))
            self.changed.set()

    async def test() -> None:
        rec = MiniBroker()
        listener = await start_listener(kind, "127.0.0.1", 0, rec,
                                        ssl_context=server_ssl(kind, certs))
        connected = threading.Event()
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="ws-1",
                             transport="websockets", protocol=paho.MQTTv311)
        client.ws_set_options(path="/mqtt")
        if kind == "wss":
            client.tls_set(ca_certs=certs[0])
        client.on_connect = lambda *args: connected.set()
        await asyncio.to_thread(client.connect, "127.0.0.1", listener.port)
        client.loop_start()
        try:
            assert await asyncio.to_thread(connected.wait, WAIT)
            client.publish("t/1", b"over websocket")
            await rec.until(lambda: any(isinstance(p, Publish) for p in rec.packets))
            client.disconnect()
            await rec.until(lambda: len(rec.lost) == 1)
        finally:
            client.loop_stop()
        assert isinstance(rec.packets[0], Connect)
        assert rec.packets[0].client_id == "ws-1"
        assert rec.packets[1] == Publish("t/1", b"over websocket")
        assert isinstance(rec.packets[2], Disconnect)
        listener.close()
        await listener.wait_closed()

    run(test)


BAD_HEADS = [
    (handshake_head(request_line="GET /nope HTTP/1.1"), b"404"),
    (handshake_head(Sec_WebSocket_Protocol=None), b"400"),
    (handshake_head(Sec_WebSocket_Protocol="chat"), b"400"),
    (handshake_head(Sec_WebSocket_Version="8"), b"426"),
    (b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c", b"400"),  # raw MQTT CONNECT on a ws port
    (b"GET /mqtt HTTP/1.1\r\nX-Big: " + b"a" * 9000, b"431"),
]


def test_bad_handshakes_refused_while_others_carry_on() -> None:
    async def test() -> None:
        rec = Recorder()
        listener = await start_listener("ws", "127.0.0.1", 0, rec)
        uri = f"ws://127.0.0.1:{listener.port}/mqtt"
        async with ws_connect(uri, subprotocols=["mqtt"]) as good:
            for head, status in BAD_HEADS:
                reader, writer = await open_raw(listener)
                writer.write(head)
                response = await read_to_eof(reader)
                assert response.startswith(b"HTTP/1.1 " + status), (head[:30], response)
                writer.close()
                await good.send(b"still up")
                assert await asyncio.wait_for(good.recv(), WAIT) == b"still up"
            with pytest.raises(websockets.InvalidStatus) as info:
                await ws_connect(uri, subprotocols=["chat"])
            assert info.value.response.status_code == 400
            assert b"MQTT-6.0.0-3" in info.value.response.body
        assert len(rec.made) == 1
        await rec.until(lambda: len(rec.lost) == 1)
        listener.close()
        await listener.wait_closed()

    run(test)


def test_old_client_offering_mqttv31_gets_it() -> None:
    async def test() -> None:
        listener = await start_listener("ws", "127.0.0.1", 0, Recorder())
        uri = f"ws://127.0.0.1:{listener.port}/mqtt"
        async with ws_connect(uri, subprotocols=["mqttv3.1"]) as client:
            assert client.subprotocol == "mqttv3.1"
            await client.send(b"old")
            assert await asyncio.wait_for(client.recv(), WAIT) == b"old"
        listener.close()
        await listener.wait_closed()

    run(test)


def test_handshake_timeout_drops_silent_client() -> None:
    async def test() -> None:
        rec = Recorder()
        listener = await start_listener("ws", "127.0.0.1", 0, rec, handshake_timeout_s=0.2)
        reader, writer = await open_raw(listener)
        writer.write(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")  # never finished
        assert await read_to_eof(reader) == b""
        assert rec.made == []
        writer.close()
        listener.close()
        await listener.wait_closed()

    run(test)


def test_handshake_and_frames_in_one_segment() -> None:
    async def test() -> None:
        listener = await start_listener("ws", "127.0.0.1", 0, Recorder())
        reader, writer = await open_raw(listener)
        writer.write(handshake_head() + client_frame(2, b"early") + client_frame(9, b"p"))
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        got = await asyncio.wait_for(reader.readexactly(7 + 3), WAIT)
        assert server_frames(got) == [(2, True, b"early"), (0xA, True, b"p")]
        writer.close()
        listener.close()
        await listener.wait_closed()

    run(test)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (client_frame(2, b"unmasked", mask=None), CloseReason.PROTOCOL_ERROR),
        (client_frame(1, b"text"), CloseReason.UNSUPPORTED_DATA),
        (client_frame(2, b"x" * 2048), CloseReason.MESSAGE_TOO_BIG),
        # the client closes
        (client_frame(8, (1000).to_bytes(2, "big")), CloseReason.NORMAL_CLOSURE),
    ],
)
def test_frame_errors_close_only_that_connection(frame: bytes, code: int) -> None:
    async def test() -> None:
        rec = Recorder()
        listener = await start_listener("ws", "127.0.0.1", 0, rec, ws_frame_max=1024)
        other_reader, other_writer = await raw_ws(listener)
        reader, writer = await raw_ws(listener)
        writer.write(client_frame(2, b"first") + frame)
        tail = await read_to_eof(reader)
        frames = server_frames(tail)
        if code != CloseReason.NORMAL_CLOSURE:  # an echo after the client's close is dropped
            assert frames[0] == (2, True, b"first")
        assert frames[-1][0] == 8
        assert int.from_bytes(frames[-1][2][:2], "big") == code
        await rec.until(lambda: len(rec.lost) == 1)
        assert rec.lost[0][0] is rec.made[1]
        other_writer.write(client_frame(2, b"fine"))
        assert server_frames(await asyncio.wait_for(other_reader.readexactly(6), WAIT)) == [
            (2, True, b"fine")]
        assert listener.connections() == [rec.made[0]]
        for w in (writer, other_writer):
            w.close()
        listener.close()
        await listener.wait_closed()

    run(test)


def test_server_close_waits_for_client_close_frame() -> None:
    async def test() -> None:
        rec = Recorder()
        listener = await start_listener("ws", "127.0.0.1", 0, rec)
        reader, writer = await raw_ws(listener)
        await rec.until(lambda: len(rec.made) == 1)
        conn = rec.made[0]
        conn.write(b"bye soon")
        conn.close()
        conn.write(b"dropped")
        got = await asyncio.wait_for(reader.readexactly(10 + 4), WAIT)
        assert server_frames(got) == [(2, True, b"bye soon"), (8, True, b"\x03\xe8")]
        assert rec.lost == []  # the TCP connection stays until the client answers
        writer.write(client_frame(2, b"ignored") + client_frame(8, b"\x03\xe8"))
        assert await read_to_eof(reader) == b""
        await rec.until(lambda: len(rec.lost) == 1)
        assert rec.received[conn.id] == b""
        writer.close()
        listener.close()
        await listener.wait_closed()

    run(test)


@pytest.mark.parametrize("kind", ["tcp", "tls"])
def test_server_close_sends_what_was_written_and_drains_until_the_client_closes(
        kind: str, certs: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`Conn.close` does not close a socket that still has input to read (the kernel would
    answer with a reset that can destroy the last bytes): TCP shuts its write side (the
    client sees the bytes, then EOF), input keeps being read and dropped, and the connection
    is lost when the client closes; TLS, which cannot half-close, waits for the client's close
    or the linger time."""
    import real.node.transport as transport

    monkeypatch.setattr(transport, "CLOSE_LINGER_S", 0.5 if kind == "tcp" else 0.3)

    async def test() -> None:
        rec = Recorder(echo=False)
        listener = await start_listener(kind, "127.0.0.1", 0, rec,
                                        ssl_context=server_ssl(kind, certs))
        reader, writer = await open_raw(listener, client_ssl(certs) if kind == "tls" else None)
        await rec.until(lambda: len(rec.made) == 1)
        conn = rec.made[0]
        conn.write(b"last words")
        conn.close()
        conn.write(b"dropped")
        writer.write(b"x" * (1 << 20))  # still sending: read and dropped, never a reset
        assert await read_to_eof(reader) == b"last words"
        if kind == "tcp":
            assert rec.lost == []  # the FIN went out; the socket waits for the client's
            writer.close()
        await rec.until(lambda: len(rec.lost) == 1)
        assert rec.received[conn.id] == b""
        writer.close()
        listener.close()
        await listener.wait_closed()

    run(test)


def test_closing_a_connection_the_client_has_reset_only_drops_it() -> None:
    """Found by `make test` on a fresh clone: the client's reset had arrived but not been read
    when the node closed the connection, and shutting the write side raised ENOTCONN out of
    the node's flush (the node stopped). Now that connection is aborted, nothing else."""
    async def test() -> None:
        rec = Recorder()
        listener = await start_listener("tcp", "127.0.0.1", 0, rec)
        sock = socket.create_connection(("127.0.0.1", listener.port))
        await rec.until(lambda: len(rec.made) == 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset, before the listener's loop reads anything
        rec.made[0].close()  # must not raise
        await rec.until(lambda: len(rec.lost) == 1)
        listener.close()
        await listener.wait_closed()

    run(test)


def test_a_client_that_never_closes_is_dropped_after_the_linger_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import real.node.transport as transport

    monkeypatch.setattr(transport, "CLOSE_LINGER_S", 0.2)

    async def test() -> None:
        rec = Recorder()
        listener = await start_listener("tcp", "127.0.0.1", 0, rec)
        reader, writer = await open_raw(listener)
        await rec.until(lambda: len(rec.made) == 1)
        rec.made[0].close()
        assert await read_to_eof(reader) == b""
        await rec.until(lambda: len(rec.lost) == 1)  # the client kept its side open
        writer.close()
        listener.close()
        await listener.wait_closed()

    run(test)


# ------------------------------------------------------------------------------- the listener


def test_listener_close_closes_everything() -> None:
    async def test() -> None:
        rec_tcp, rec_ws = Recorder(), Recorder()
        tcp = await start_listener("tcp", "127.0.0.1", 0, rec_tcp)
        wsl = await start_listener("ws", "127.0.0.1", 0, rec_ws)
        reader, writer = await open_raw(tcp)
        client = await ws_connect(f"ws://127.0.0.1:{wsl.port}/mqtt", subprotocols=["mqtt"])
        stuck_reader, stuck_writer = await raw_ws(wsl)  # never answers the close frame
        pending_reader, pending_writer = await open_raw(wsl)  # handshake not finished
        await rec_tcp.until(lambda: len(rec_tcp.made) == 1)
        await rec_ws.until(lambda: len(rec_ws.made) == 2)
        tcp.close()
        wsl.close()
        await tcp.wait_closed()
        assert await read_to_eof(reader) == b""
        with pytest.raises(websockets.ConnectionClosedOK):
            await asyncio.wait_for(client.recv(), WAIT)
        assert client.close_code == CloseReason.GOING_AWAY
        await wsl.wait_closed(grace_s=0.3)  # aborts the stuck one
        assert await read_to_eof(pending_reader) == b""
        assert len(rec_tcp.lost) == 1
        assert len(rec_ws.lost) == 2
        assert wsl.connections() == []
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", tcp.port)
        for w in (writer, stuck_writer, pending_writer):
            w.close()
        await client.close()

    run(test)


def test_start_listener_arguments(certs: tuple[str, str]) -> None:
    async def test() -> None:
        rec = Recorder()
        with pytest.raises(ValueError, match="kind must be one of"):
            await start_listener("udp", "127.0.0.1", 0, rec)
        with pytest.raises(ValueError, match="needs ssl_context"):
            await start_listener("tls", "127.0.0.1", 0, rec)
        with pytest.raises(ValueError, match="takes no ssl_context"):
            await start_listener("ws", "127.0.0.1", 0, rec, ssl_context=make_ssl_context(*certs))
        with pytest.raises(ValueError, match="ws_path"):
            await start_listener("ws", "127.0.0.1", 0, rec, ws_path="mqtt")
        with pytest.raises(ValueError, match="frame_max"):
            await start_listener("ws", "127.0.0.1", 0, rec, ws_frame_max=1)
        wide = await start_listener("tcp", "0.0.0.0", 0, rec)
        assert not wide.loopback
        wide.close()
        await wide.wait_closed()

    run(test)


def test_make_ssl_context(certs: tuple[str, str], tmp_path: Path) -> None:
    context = make_ssl_context(*certs)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.protocol == ssl.PROTOCOL_TLS_SERVER
    with pytest.raises(FileNotFoundError):
        make_ssl_context(str(tmp_path / "missing.pem"), certs[1])


@pytest.mark.parametrize("kind", ["tcp", "ws"])
def test_connection_made_error_aborts_only_that_connection(kind: str) -> None:
    class Picky(Recorder):
        def connection_made(self, conn: Conn) -> None:
            super().connection_made(conn)
            if len(self.made) == 1:
                raise RuntimeError("refuse the first one")

    async def test() -> None:
        rec = Picky()
        listener = await start_listener(kind, "127.0.0.1", 0, rec)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: None)  # the error is logged there
        first = await (raw_ws(listener) if kind == "ws" else open_raw(listener))
        await rec.until(lambda: len(rec.lost) == 1)
        assert rec.lost[0][0] is rec.made[0]
        assert await read_to_eof(first[0]) == b""
        reader, writer = await (raw_ws(listener) if kind == "ws" else open_raw(listener))
        writer.write(client_frame(2, b"ok") if kind == "ws" else b"ok")
        got = await asyncio.wait_for(reader.readexactly(4 if kind == "ws" else 2), WAIT)
        assert got.endswith(b"ok")
        for w in (first[1], writer):
            w.close()
        listener.close()
        await listener.wait_closed()

    run(test)


def test_ws_close_times_out_without_client_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    import real.node.transport as transport

    monkeypatch.setattr(transport, "WS_CLOSE_TIMEOUT_S", 0.2)

    async def test() -> None:
        rec = Recorder()
        listener = await start_listener("ws", "127.0.0.1", 0, rec)
        reader, writer = await raw_ws(listener)
        await rec.until(lambda: len(rec.made) == 1)
        rec.made[0].close()
        assert server_frames(await read_to_eof(reader)) == [(8, True, b"\x03\xe8")]
        await rec.until(lambda: len(rec.lost) == 1)
        writer.close()
        listener.close()
        await listener.wait_closed()

    run(test)


def test_tls_handshake_timeout(certs: tuple[str, str]) -> None:
    async def test() -> None:
        rec = Recorder()
        listener = await start_listener("tls", "127.0.0.1", 0, rec, handshake_timeout_s=0.2,
                                        ssl_context=make_ssl_context(*certs))
        reader, writer = await open_raw(listener)  # plain TCP: no ClientHello ever comes
        assert await read_to_eof(reader) == b""
        assert rec.made == []
        writer.close()
        listener.close()
        await listener.wait_closed()

    run(test)


def test_ipv6_peer_format() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")

    async def test() -> None:
        rec = Recorder()
        try:
            listener = await start_listener("tcp", "::1", 0, rec)
        except OSError:
            pytest.skip("cannot bind ::1")
        reader, writer = await asyncio.open_connection("::1", listener.port)
        await rec.until(lambda: len(rec.made) == 1)
        port = writer.get_extra_info("sockname")[1]
        assert rec.made[0].peer == f"[::1]:{port}"
        assert listener.loopback
        writer.close()
        listener.close()
        await listener.wait_closed()

    run(test)


def test_ws_close_inside_data_received_stops_delivery() -> None:
    class CloseOnStop(Recorder):
        def data_received(self, conn: Conn, data: bytes) -> None:
            super().data_received(conn, data)
            if data == b"stop":
                conn.close()

    async def test() -> None:
        rec = CloseOnStop(echo=False)
        listener = await start_listener("ws", "127.0.0.1", 0, rec)
        reader, writer = await raw_ws(listener)
        writer.write(client_frame(2, b"stop") + client_frame(9, b"p") + client_frame(2, b"more"))
        got = await asyncio.wait_for(reader.readexactly(4), WAIT)
        assert server_frames(got) == [(8, True, b"\x03\xe8")]  # no pong after our close frame
        writer.write(client_frame(8, b"\x03\xe8"))
        assert await read_to_eof(reader) == b""
        await rec.until(lambda: len(rec.lost) == 1)
        assert rec.received[rec.made[0].id] == b"stop"
        writer.close()
        listener.close()
        await listener.wait_closed()

    run(test)
