"""WebSocket behaviour of a "ws" listener on loopback, seen from a raw client.

wsproto does the RFC 6455 work; these tests pin what TwinMQ promises on top of it (the head bound,
the path, the MQTT subprotocol, refusal codes, close codes, the frame limit) and that frames of
every shape reach the handler intact. Client frames and heads come from `tests/node/wsframes.py`,
an independent encoder; `tests/node/test_transport.py` covers the listener with real clients
(websockets, paho-mqtt) and the close handshakes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from real.node.transport import HEAD_BYTES_MAX, Listener, start_listener
from tests.node.test_transport import WAIT, Recorder, open_raw, raw_ws, read_to_eof, run
from tests.node.wsframes import MASK, client_frame, close_code_of, handshake_head, server_frames

RFC_KEY, RFC_ACCEPT = "dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 1.3


def with_listener(body: Callable[[Listener, Recorder], Awaitable[None]], **options: object) -> None:
    """Run `body(listener, recorder)` against a fresh echoing "ws" listener, then close it."""
    async def test() -> None:
        rec = Recorder()
        listener = await start_listener("ws", "127.0.0.1", 0, rec, **options)  # type: ignore
        try:
            await body(listener, rec)
        finally:
            listener.close()
            await listener.wait_closed(grace_s=0.5)

    run(test)


async def exchange(listener: Listener, head: bytes) -> bytes:
    """Send `head` on a new connection; everything the server sends until it closes."""
    reader, writer = await open_raw(listener)
    writer.write(head)
    try:
        return await read_to_eof(reader)
    finally:
        writer.close()


def response_parts(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), lines[0]
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), {k.lower(): v for k, v in fields.items()}, body


async def upgrade(listener: Listener, head: bytes) -> tuple[dict[str, str], asyncio.StreamReader,
                                                            asyncio.StreamWriter]:
    reader, writer = await open_raw(listener)
    writer.write(head)
    response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    status, fields, _ = response_parts(response)
    assert status == 101, response
    return fields, reader, writer


async def echoed(reader: asyncio.StreamReader, size: int) -> bytes:
    """`size` payload bytes of echoed binary frames (a frame per handler write)."""
    got = bytearray()
    buffered = bytearray()
    while len(got) < size:
        buffered += await asyncio.wait_for(reader.read(1 << 20), WAIT)
        cut = _complete_prefix(bytes(buffered))
        for opcode, _, payload in server_frames(bytes(buffered[:cut])):
            assert opcode == 2
            got += payload
        del buffered[:cut]
    assert len(got) == size
    return bytes(got)


def _complete_prefix(data: bytes) -> int:
    pos = 0
    while pos + 2 <= len(data):
        n, head = data[pos + 1] & 0x7F, 2
        if n in (126, 127):
            head += 2 if n == 126 else 6
            if pos + head > len(data):
                break
            n = int.from_bytes(data[pos + 2:pos + head], "big")
        if pos + head + n > len(data):
            break
        pos += head + n
    return pos


# ------------------------------------------------------------------------------- handshake


def test_handshake_answer_rfc6455_vector() -> None:
    async def body(listener: Listener, rec: Recorder) -> None:
        fields, _, writer = await upgrade(listener, handshake_head())
        assert fields["sec-websocket-accept"] == RFC_ACCEPT
        assert fields["sec-websocket-protocol"] == "mqtt"
        assert fields["upgrade"].lower() == "websocket"
        assert fields["connection"].lower() == "upgrade"
        assert "sec-websocket-extensions" not in fields  # no extension is negotiated
        key = base64.b64encode(bytes(range(16))).decode()
        fields, _, other = await upgrade(listener, handshake_head(Sec_WebSocket_Key=key))
        digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        assert fields["sec-websocket-accept"] == base64.b64encode(digest).decode()
        await rec.until(lambda: len(rec.made) == 2)
        for w in (writer, other):
            w.close()

    with_listener(body)


def test_custom_path_with_query_and_wrong_path() -> None:
    async def body(listener: Listener, rec: Recorder) -> None:
        _, reader, writer = await upgrade(
            listener, handshake_head(request_line="GET /ws?token=1 HTTP/1.1"))
        writer.write(client_frame(2, b"in"))
        assert await echoed(reader, 2) == b"in"
        status, _, text = response_parts(await exchange(
            listener, handshake_head(request_line="GET /mqtt HTTP/1.1")))
        assert status == 404
        assert b"'/mqtt'" in text
        assert b"'/ws'" in text
        writer.close()

    with_listener(body, ws_path="/ws")


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ("mqtt", "mqtt"),
        ("mqttv3.1", "mqttv3.1"),
        ("mqttv3.1, mqtt", "mqtt"),
        ("chat, mqtt", "mqtt"),
        ("chat", None),
        (None, None),
    ],
)
def test_subprotocol_selection(offered: str | None, chosen: str | None) -> None:
    async def body(listener: Listener, rec: Recorder) -> None:
        head = handshake_head(Sec_WebSocket_Protocol=offered)
        if chosen is None:
            status, _, text = response_parts(await exchange(listener, head))
            assert status == 400
            assert b"MQTT-6.0.0-3" in text
            assert rec.made == []
            return
        fields, _, writer = await upgrade(listener, head)
        assert fields["sec-websocket-protocol"] == chosen
        writer.close()

    with_listener(body)


def test_subprotocols_from_repeated_headers_and_token_case() -> None:
    head = handshake_head(Sec_WebSocket_Protocol="chat", Connection="keep-alive, UPGRADE",
                          Upgrade="WebSocket").replace(
        b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: mqttv3.1, mqtt\r\n\r\n")

    async def body(listener: Listener, rec: Recorder) -> None:
        fields, _, writer = await upgrade(listener, head)
        assert fields["sec-websocket-protocol"] == "mqtt"
        writer.close()

    with_listener(body)


REFUSALS = [
    ({"request_line": "POST /mqtt HTTP/1.1"}, 400, "GET"),
    ({"request_line": "GET /other HTTP/1.1"}, 404, "'/other'"),
    ({"request_line": "GET /mqtt"}, 400, "Bad HTTP message"),
    ({"Host": None}, 400, ""),
    ({"Upgrade": None}, 400, "Upgrade"),
    ({"Upgrade": "h2c"}, 400, "Upgrade"),
    ({"Connection": "keep-alive"}, 400, "Connection"),
    ({"Sec_WebSocket_Key": None}, 400, "Sec-WebSocket-Key"),
    ({"Sec_WebSocket_Version": "8"}, 426, "Sec-WebSocket-Version"),
    ({"Sec_WebSocket_Version": None}, 400, "Sec-WebSocket-Version"),
    ({"Sec_WebSocket_Protocol": None}, 400, "no MQTT subprotocol"),
    ({"Bad Header": "x"}, 400, "Bad HTTP message"),
]


@pytest.mark.parametrize(("overrides", "status", "needle"), REFUSALS)
def test_handshake_refusals(overrides: dict, status: int, needle: str) -> None:
    async def body(listener: Listener, rec: Recorder) -> None:
        got, fields, text = response_parts(await exchange(listener, handshake_head(**overrides)))
        assert got == status
        assert needle.encode() in text
        assert fields["content-type"].startswith("text/plain")
        assert int(fields["content-length"]) == len(text)
        assert fields["connection"] == "close"
        if status == 426:
            assert fields["sec-websocket-version"] == "13"
        assert rec.made == []

    with_listener(body)


def test_head_bound() -> None:
    filler = b"X-Fill: " + b"a" * (HEAD_BYTES_MAX - 400) + b"\r\n"

    async def body(listener: Listener, rec: Recorder) -> None:
        fields, _, writer = await upgrade(  # just under the bound: accepted
            listener, handshake_head().replace(b"\r\n\r\n", b"\r\n" + filler + b"\r\n"))
        assert fields["sec-websocket-protocol"] == "mqtt"
        writer.close()
        status, _, text = response_parts(await exchange(
            listener, b"GET /mqtt HTTP/1.1\r\nX: " + b"a" * HEAD_BYTES_MAX))
        assert status == 431
        assert str(HEAD_BYTES_MAX).encode() in text
        status, _, _ = response_parts(await exchange(
            listener, handshake_head().replace(b"\r\n\r\n", b"\r\n" + filler * 2 + b"\r\n")))
        assert status == 431

    with_listener(body)


@pytest.mark.parametrize("start", [b"\x10\x0c\x00\x04MQTT", b"get /", b"ABCDEFGHI", b"\r\n",
                                   b" GET"])
def test_non_http_refused_at_once(start: bytes) -> None:
    async def body(listener: Listener, rec: Recorder) -> None:
        status, _, text = response_parts(await exchange(listener, start))
        assert status == 400
        assert b"not an HTTP request" in text

    with_listener(body, handshake_timeout_s=60.0)  # an answer before WAIT: not the timeout


def test_head_in_small_pieces() -> None:
    async def body(listener: Listener, rec: Recorder) -> None:
        reader, writer = await open_raw(listener)
        writer.transport.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = handshake_head() + client_frame(2, b"after")
        for i in range(0, len(stream), 7):
            writer.write(stream[i:i + 7])
            await writer.drain()
            await asyncio.sleep(0)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert await echoed(reader, 5) == b"after"
        writer.close()

    with_listener(body)


# ------------------------------------------------------------------------------- frames


@pytest.mark.parametrize(("size", "header_len"),
                         [(0, 2), (1, 2), (125, 2), (126, 4), (65535, 4), (65536, 10),
                          (70_000, 10)])
def test_every_length_class(size: int, header_len: int) -> None:
    payload = bytes(i % 251 for i in range(size))

    async def body(listener: Listener, rec: Recorder) -> None:
        reader, writer = await raw_ws(listener)
        await rec.until(lambda: len(rec.made) == 1)
        rec.made[0].write(payload)  # one server frame, whatever its size
        got = await asyncio.wait_for(reader.readexactly(header_len + size), WAIT)
        assert server_frames(got) == [(2, True, payload)]
        writer.write(client_frame(2, payload) + client_frame(2, b"end"))
        await rec.until(lambda: rec.received[rec.made[0].id].endswith(b"end"))
        assert rec.received[rec.made[0].id] == payload + b"end"
        writer.close()

    with_listener(body)


def test_fragments_pings_and_pongs() -> None:
    stream = (client_frame(2, b"abc", fin=False) + client_frame(9, b"hi")
              + client_frame(0, b"def", fin=False) + client_frame(0xA, b"ignored")
              + client_frame(0, b"g", fin=True) + client_frame(2, b"")
              + client_frame(9, b"") + client_frame(2, b"next"))

    async def body(listener: Listener, rec: Recorder) -> None:
        reader, writer = await raw_ws(listener)
        writer.write(stream)
        await rec.until(lambda: rec.received[rec.made[0].id] == b"abcdefgnext")
        rec.made[0].write(b"!")
        got = await read_until_frame(reader, (2, True, b"!"))
        pongs = [f for f in got if f[0] == 0xA]
        assert pongs == [(0xA, True, b"hi"), (0xA, True, b"")]  # no answer to the pong
        writer.close()

    async def read_until_frame(reader: asyncio.StreamReader, last: tuple) -> list:
        data = bytearray()
        while True:
            data += await asyncio.wait_for(reader.read(1 << 16), WAIT)
            cut = _complete_prefix(bytes(data))
            frames = server_frames(bytes(data[:cut]))
            if frames and frames[-1] == last:
                return frames

    with_listener(body, ws_frame_max=1024)


STREAM = (client_frame(2, b"m" * 130) + client_frame(9, b"p1") + client_frame(2, b"x", fin=False)
          + client_frame(0, b"y" * 300, fin=False, mask=b"\x00\xff\x0f\xf0")
          + client_frame(0xA, b"")
          + client_frame(0, b"z") + client_frame(2, bytes(range(256)) * 300))
STREAM_DATA = b"m" * 130 + b"x" + b"y" * 300 + b"z" + bytes(range(256)) * 300


@pytest.mark.parametrize("piece", [1, 3, 7, 1000])
def test_stream_cut_into_pieces(piece: int) -> None:
    """Every header byte of the small frames in a segment of its own (as far as TCP allows)."""
    async def body(listener: Listener, rec: Recorder) -> None:
        reader, writer = await raw_ws(listener)
        writer.transport.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cuts = [*range(0, 700, piece), *range(700, len(STREAM), 9973), len(STREAM)]
        for a, b in zip(cuts, cuts[1:], strict=False):
            writer.write(STREAM[a:b])
            await writer.drain()
            await asyncio.sleep(0)
        writer.write(client_frame(8, (1000).to_bytes(2, "big") + b"bye"))
        await rec.until(lambda: len(rec.lost) == 1)
        assert rec.received[rec.made[0].id] == STREAM_DATA
        tail = server_frames(await read_to_eof(reader))
        assert close_code_of(tail[-1]) == 1000
        assert tail[-1][2][2:] == b"bye"  # the client's close frame, echoed
        assert (0xA, True, b"p1") in tail
        writer.close()

    with_listener(body, ws_frame_max=1 << 20)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (client_frame(2, b"abc", mask=None), 1002),
        (client_frame(2, b"abc", rsv=4), 1002),
        (client_frame(2, b"abc", rsv=1), 1002),
        (client_frame(3, b"abc"), 1002),
        (client_frame(0xB, b""), 1002),
        (client_frame(1, b"text"), 1003),
        (client_frame(2, b"x" * 2000), 1009),
        (client_frame(9, b"x" * 126), 1002),
        (client_frame(9, b"x", fin=False), 1002),
        (client_frame(0, b"x"), 1002),
        (client_frame(2, b"a", fin=False) + client_frame(2, b"b"), 1002),
        (client_frame(2, b"x" * 10, length_bytes=2), 1002),
        (client_frame(2, b"x" * 200, length_bytes=8), 1002),
        (b"\x82\xff\x80" + b"\x00" * 7 + MASK, 1002),
        (client_frame(8, b"\x03"), 1002),
        (client_frame(8, (1005).to_bytes(2, "big")), 1002),
        (client_frame(8, (999).to_bytes(2, "big")), 1002),
        (client_frame(8, (2000).to_bytes(2, "big")), 1002),
        (client_frame(8, (5000).to_bytes(2, "big")), 1002),
        (client_frame(8, (1000).to_bytes(2, "big") + b"\xff"), 1007),
    ],
)
def test_frame_errors_close_with_code(frames: bytes, code: int) -> None:
    async def body(listener: Listener, rec: Recorder) -> None:
        reader, writer = await raw_ws(listener)
        writer.write(client_frame(2, b"ok") + frames + client_frame(2, b"late"))
        tail = server_frames(await read_to_eof(reader))
        assert tail[0] in ((2, True, b"ok"), (2, True, b"oka"))  # "a": a first fragment
        assert close_code_of(tail[-1]) == code
        assert [f[0] for f in tail].count(8) == 1
        await rec.until(lambda: len(rec.lost) == 1)
        assert b"late" not in rec.received[rec.made[0].id]
        writer.close()

    with_listener(body, ws_frame_max=1024)


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 3000, 4999])
def test_peer_close_is_echoed(code: int) -> None:
    async def body(listener: Listener, rec: Recorder) -> None:
        reader, writer = await raw_ws(listener)
        writer.write(client_frame(2, b"last") + client_frame(8, code.to_bytes(2, "big") + b"r")
                     + client_frame(2, b"after"))
        tail = server_frames(await read_to_eof(reader))
        # "last" reaches the handler after the close frame was read: its echo is dropped
        assert tail == [(8, True, code.to_bytes(2, "big") + b"r")]
        await rec.until(lambda: len(rec.lost) == 1)
        assert rec.lost[0][1] is None
        assert rec.received[rec.made[0].id] == b"last"
        writer.close()

    with_listener(body)


def test_peer_close_without_code_gets_an_empty_close() -> None:
    async def body(listener: Listener, rec: Recorder) -> None:
        reader, writer = await raw_ws(listener)
        writer.write(client_frame(8) + client_frame(8))
        assert server_frames(await read_to_eof(reader)) == [(8, True, b"")]
        writer.close()

    with_listener(body)


def test_error_after_our_close_sends_no_second_close() -> None:
    async def body(listener: Listener, rec: Recorder) -> None:
        reader, writer = await raw_ws(listener)
        await rec.until(lambda: len(rec.made) == 1)
        rec.made[0].close(1001, "é" * 100)  # the reason is cut to fit a control frame
        writer.write(client_frame(2, b"x", mask=None))
        [(opcode, _, reason)] = server_frames(await read_to_eof(reader))
        assert opcode == 8
        assert len(reason) <= 125
        assert reason == (1001).to_bytes(2, "big") + ("é" * 61).encode()
        await rec.until(lambda: len(rec.lost) == 1)
        writer.close()

    with_listener(body)


def test_frame_max_bounds() -> None:
    async def body(listener: Listener, rec: Recorder) -> None:
        reader, writer = await raw_ws(listener)
        writer.write(client_frame(2, b"x" * 125))
        assert await echoed(reader, 125) == b"x" * 125
        # The bound is per frame: a message of two frames at the bound passes.
        writer.write(client_frame(2, b"y" * 125, fin=False) + client_frame(0, b"z" * 125))
        assert await echoed(reader, 250) == b"y" * 125 + b"z" * 125
        writer.close()

    with_listener(body, ws_frame_max=125)

    async def too_small() -> None:
        with pytest.raises(ValueError, match="ws_frame_max must be >= 125"):
            await start_listener("ws", "127.0.0.1", 0, Recorder(), ws_frame_max=124)

    run(too_small)


# ------------------------------------------------------------------------------- round trip

messages = st.lists(
    st.tuples(st.lists(st.binary(max_size=300), min_size=1, max_size=4),  # fragments
              st.binary(min_size=4, max_size=4),  # mask
              st.one_of(st.none(), st.binary(max_size=125))),  # a ping after it, maybe
    max_size=6)


@settings(max_examples=40, deadline=None)
@given(messages)
def test_round_trip(msgs: list) -> None:
    stream, payload, pongs = b"", b"", []
    for fragments, mask, ping in msgs:
        for i, fragment in enumerate(fragments):
            last = i == len(fragments) - 1
            stream += client_frame(2 if i == 0 else 0, fragment, fin=last, mask=mask)
            payload += fragment
        if ping is not None:
            stream += client_frame(9, ping, mask=mask[::-1])
            pongs.append(ping)

    async def body(listener: Listener, rec: Recorder) -> None:
        reader, writer = await raw_ws(listener)
        writer.write(stream + client_frame(8, (1000).to_bytes(2, "big")))
        frames = server_frames(await read_to_eof(reader))
        assert [f for f in frames if f[0] == 0xA] == [(0xA, True, p) for p in pongs]
        echoed = b"".join(f[2] for f in frames if f[0] == 2)  # what came before the close
        assert payload.startswith(echoed)
        assert frames[-1] == (8, True, (1000).to_bytes(2, "big"))
        await rec.until(lambda: len(rec.lost) == 1)
        assert rec.received[rec.made[0].id] == payload
        writer.close()

    with_listener(body)
