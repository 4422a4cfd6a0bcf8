"""The pure WebSocket codec: handshake parsing and answers, frame decoding, close codes.

Client frames are built here by an independent encoder (`client_frame`, a plain byte loop for the
mask) and server frames are read back by an independent parser (`server_frames`).
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from real.node.websocket import (
    HEAD_BYTES_MAX,
    CloseCode,
    CloseConnection,
    Data,
    HandshakeError,
    HandshakeRequest,
    Send,
    WsDecoder,
    accept_key,
    encode_binary,
    encode_close,
    frame_header,
    handshake_response,
    head_end,
    parse_handshake,
    select_subprotocol,
    unmask,
)

MASK = b"\x37\xfa\x21\x3d"

# ------------------------------------------------------------------------------- test helpers


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bytes | None = MASK,
                 rsv: int = 0, length_bytes: int | None = None) -> bytes:
    """A client frame. `length_bytes` forces the length form: 0 (7-bit), 2 or 8."""
    n = len(payload)
    if length_bytes is None:
        length_bytes = 0 if n < 126 else 2 if n < 65536 else 8
    out = bytearray([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask_bit = 0x80 if mask is not None else 0
    if length_bytes == 0:
        out.append(mask_bit | n)
    else:
        out.append(mask_bit | (126 if length_bytes == 2 else 127))
        out += n.to_bytes(length_bytes, "big")
    if mask is None:
        return bytes(out + payload)
    out += mask
    out += bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(out)


def server_frames(data: bytes) -> list[tuple[int, bool, bytes]]:
    """(opcode, fin, payload) of each complete unmasked server frame in `data`."""
    frames, pos = [], 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        assert b1 & 0x80 == 0, "server frames are unmasked"
        n, pos = b1 & 0x7F, pos + 2
        if n in (126, 127):
            size = 2 if n == 126 else 8
            n, pos = int.from_bytes(data[pos:pos + size], "big"), pos + size
        frames.append((b0 & 0x0F, bool(b0 & 0x80), data[pos:pos + n]))
        pos += n
    assert pos == len(data), "trailing partial frame"
    return frames


def data_of(events: list) -> bytes:
    return b"".join(e.payload for e in events if isinstance(e, Data))


def handshake_head(**overrides: str | None) -> bytes:
    """A valid head as paho-mqtt 2.2 sends it; override a header (None drops it)."""
    headers = {
        "Host": "127.0.0.1:8083",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Origin": "http://127.0.0.1:8083",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-Websocket-Version": "13",
        "Sec-Websocket-Protocol": "mqtt",
    }
    request_line = overrides.pop("request_line", None) or "GET /mqtt HTTP/1.1"
    for name, value in overrides.items():
        name = name.replace("_", "-")
        headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
        if value is not None:
            headers[name] = value
    lines = [request_line] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# ------------------------------------------------------------------------------- handshake


def test_accept_key_rfc6455_vector() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    key = base64.b64encode(bytes(range(16))).decode()
    expected = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                                             .encode()).digest()).decode()
    assert accept_key(key) == expected


def test_handshake_accepted_and_answered() -> None:
    head = handshake_head()
    assert head_end(head) == len(head)
    req = parse_handshake(head)
    assert req.path == "/mqtt"
    assert req.query == ""
    assert req.key == "dGhlIHNhbXBsZSBub25jZQ=="
    assert req.subprotocols == ("mqtt",)
    assert req.header("origin") == "http://127.0.0.1:8083"
    response = handshake_response(req, "mqtt").decode()
    lines = response.split("\r\n")
    assert lines[0] == "HTTP/1.1 101 Switching Protocols"
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in lines
    assert "Sec-WebSocket-Protocol: mqtt" in lines
    assert "Upgrade: websocket" in lines
    assert "Connection: Upgrade" in lines
    assert response.endswith("\r\n\r\n")


def test_handshake_with_query_and_custom_path() -> None:
    req = parse_handshake(handshake_head(request_line="GET /ws?token=1 HTTP/1.1"), "/ws")
    assert (req.path, req.query) == ("/ws", "token=1")
    with pytest.raises(HandshakeError) as info:
        parse_handshake(handshake_head(request_line="GET /ws HTTP/1.1"))
    assert info.value.status == 404


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["mqtt"], "mqtt"),
        (["mqttv3.1"], "mqttv3.1"),
        (["mqttv3.1", "mqtt"], "mqtt"),
        (["chat", "mqtt"], "mqtt"),
        (["chat"], None),
        ([], None),
    ],
)
def test_select_subprotocol(offered: list[str], chosen: str | None) -> None:
    assert select_subprotocol(offered) == chosen
    head = handshake_head(Sec_WebSocket_Protocol=", ".join(offered) if offered else None)
    if chosen is None:
        with pytest.raises(HandshakeError) as info:
            parse_handshake(head)
        assert info.value.status == 400
        assert "MQTT-6.0.0-3" in info.value.reason
    else:
        req = parse_handshake(head)
        assert req.subprotocols == tuple(offered)
        assert f"Sec-WebSocket-Protocol: {chosen}\r\n" in handshake_response(req, chosen).decode()


def test_subprotocols_from_repeated_headers() -> None:
    head = handshake_head(Sec_WebSocket_Protocol="chat").replace(
        b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: mqttv3.1, mqtt\r\n\r\n")
    req = parse_handshake(head)
    assert req.subprotocols == ("chat", "mqttv3.1", "mqtt")
    assert select_subprotocol(req.subprotocols) == "mqtt"


@pytest.mark.parametrize(
    ("overrides", "status", "needle"),
    [
        ({"request_line": "POST /mqtt HTTP/1.1"}, 405, "method 'POST'"),
        ({"request_line": "GET /other HTTP/1.1"}, 404, "'/other'"),
        ({"request_line": "GET /mqtt HTTP/1.0"}, 400, "HTTP/1.1"),
        ({"request_line": "GET /mqtt"}, 400, "malformed request line"),
        ({"Host": None}, 400, "Host"),
        ({"Upgrade": None}, 400, "Upgrade header"),
        ({"Upgrade": "h2c"}, 400, "Upgrade header"),
        ({"Connection": "keep-alive"}, 400, "Connection header"),
        ({"Sec_WebSocket_Key": None}, 400, "Sec-WebSocket-Key"),
        ({"Sec_WebSocket_Key": "c2hvcnQ="}, 400, "16 bytes"),
        ({"Sec_WebSocket_Key": "not base64!!"}, 400, "16 bytes"),
        ({"Sec_WebSocket_Version": "8"}, 426, "not supported"),
        ({"Sec_WebSocket_Version": None}, 426, "missing Sec-WebSocket-Version"),
        ({"Sec_WebSocket_Protocol": None}, 400, "no MQTT subprotocol"),
        ({"Bad Header": "x"}, 400, "malformed header line"),
    ],
)
def test_handshake_refusals(overrides: dict, status: int, needle: str) -> None:
    with pytest.raises(HandshakeError) as info:
        parse_handshake(handshake_head(**overrides))
    assert info.value.status == status
    assert needle in info.value.reason


def test_connection_header_token_list_and_case() -> None:
    req = parse_handshake(handshake_head(Connection="keep-alive, UPGRADE", Upgrade="WebSocket"))
    assert req.header("connection") == "keep-alive, UPGRADE"
    assert req.header("upgrade") == "WebSocket"


def test_error_responses() -> None:
    response = HandshakeError(426, "Sec-WebSocket-Version ['8'] not supported").response()
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 426 Upgrade Required"
    assert "Sec-WebSocket-Version: 13" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert body == b"Sec-WebSocket-Version ['8'] not supported\n"
    assert HandshakeError(400, "x").response().startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Allow: GET\r\n" in HandshakeError(405, "x").response()


def test_head_end_bounds() -> None:
    head = handshake_head()
    assert head_end(b"") == -1
    assert head_end(head[:-1]) == -1
    assert head_end(head + b"\x82\x80") == len(head)
    with pytest.raises(HandshakeError) as info:
        head_end(b"GET /mqtt HTTP/1.1\r\nX: " + b"a" * HEAD_BYTES_MAX)
    assert info.value.status == 431
    assert head_end(b"GET /mqtt HTTP/1.1\r\nX: " + b"a" * (HEAD_BYTES_MAX - 100)) == -1
    with pytest.raises(HandshakeError) as info:
        parse_handshake(head.replace(b"\r\n\r\n", b"\r\n" + b"X-A: b\r\n" * 70 + b"\r\n"))
    assert info.value.status == 431


@pytest.mark.parametrize("start", [b"\x10\x0c\x00\x04MQTT", b"get /", b"ABCDEFGHI", b"\r\n"])
def test_head_end_refuses_non_http_at_once(start: bytes) -> None:
    with pytest.raises(HandshakeError) as info:
        head_end(start)
    assert info.value.status == 400
    assert "not an HTTP request" in info.value.reason


def test_handshake_response_needs_an_offered_subprotocol() -> None:
    req = HandshakeRequest("/mqtt", "", "dGhlIHNhbXBsZSBub25jZQ==", ("mqtt",), ())
    with pytest.raises(AssertionError):
        handshake_response(req, "mqttv3.1")
    assert b"mqtt" in handshake_response(req, "mqtt")


# ------------------------------------------------------------------------------- frames


@pytest.mark.parametrize(("size", "header_len"),
                         [(0, 2), (1, 2), (125, 2), (126, 4), (65535, 4), (65536, 10),
                          (70_000, 10)])
def test_every_length_class(size: int, header_len: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    frame = encode_binary(payload)
    assert len(frame) == header_len + size
    assert server_frames(frame) == [(2, True, payload)]
    dec = WsDecoder(frame_max=1 << 20)
    events = dec.feed(client_frame(2, payload))
    assert data_of(events) == payload
    assert all(isinstance(e, Data) for e in events)
    assert not dec.closed


@pytest.mark.parametrize("offset", range(8))
def test_unmask_matches_byte_loop(offset: int) -> None:
    data = bytes(range(37))
    expected = bytes(b ^ MASK[(offset + i) % 4] for i, b in enumerate(data))
    assert unmask(data, MASK, offset) == expected
    assert unmask(b"", MASK, offset) == b""
    assert unmask(b"\x00" * 5, MASK, offset)[:1] == MASK[offset % 4:offset % 4 + 1]


def test_fragmented_message_with_ping_between_fragments() -> None:
    stream = (client_frame(2, b"abc", fin=False) + client_frame(9, b"hi")
              + client_frame(0, b"def", fin=False) + client_frame(0, b"g", fin=True)
              + client_frame(2, b"next"))
    events = WsDecoder().feed(stream)
    assert data_of(events) == b"abcdefgnext"
    sends = [e for e in events if isinstance(e, Send)]
    assert [server_frames(s.data) for s in sends] == [[(0xA, True, b"hi")]]
    assert isinstance(events[1], Send)


def test_consecutive_frames_give_one_data_event() -> None:
    dec = WsDecoder()
    events = dec.feed(b"".join(client_frame(2, b"%d," % i) for i in range(50)))
    assert events == [Data(b"".join(b"%d," % i for i in range(50)))]
    events = dec.feed(client_frame(2, b"a") + client_frame(9) + client_frame(2, b"b"))
    assert events == [Data(b"a"), Send(b"\x8a\x00"), Data(b"b")]


def test_pong_ignored_and_empty_frames() -> None:
    dec = WsDecoder()
    assert dec.feed(client_frame(0xA, b"x")) == []
    assert dec.feed(client_frame(2, b"")) == []
    assert dec.feed(client_frame(9, b"")) == [Send(b"\x8a\x00")]
    assert not dec.closed


STREAM = (client_frame(2, b"m" * 130) + client_frame(9, b"p1") + client_frame(2, b"x", fin=False)
          + client_frame(0, b"y" * 300, fin=False, mask=b"\x00\xff\x0f\xf0")
          + client_frame(0xA, b"")
          + client_frame(0, b"z") + client_frame(2, bytes(range(256)) * 300)
          + client_frame(8, (1000).to_bytes(2, "big") + b"bye"))


def summarize(events: list) -> tuple[bytes, list]:
    others = [e for e in events if not isinstance(e, Data)]
    return data_of(events), others


def test_split_at_every_byte() -> None:
    whole = summarize(WsDecoder().feed(STREAM))
    assert whole[0] == b"m" * 130 + b"x" + b"y" * 300 + b"z" + bytes(range(256)) * 300
    assert whole[1][-1] == CloseConnection(1000, "bye", encode_close(1000), True)
    # Every cut outside the 76 800-byte payload (so through every header byte); some inside.
    cuts = [cut for cut in range(len(STREAM) + 1)
            if not 600 < cut < len(STREAM) - 200 or cut % 997 == 0]
    for cut in cuts:
        dec = WsDecoder()
        events = dec.feed(STREAM[:cut]) + dec.feed(STREAM[cut:])
        assert summarize(events) == whole, cut
    dec = WsDecoder()  # byte by byte, with the inside of the big payload in bigger bites
    pieces = [STREAM[a:b] for a, b in zip([0, *cuts], cuts, strict=False)] + [STREAM[cuts[-1]:]]
    assert b"".join(pieces) == STREAM
    assert summarize([e for piece in pieces for e in dec.feed(piece)]) == whole
    assert dec.closed


def close_code_of(reply: bytes) -> int:
    [(opcode, fin, body)] = server_frames(reply)
    assert (opcode, fin) == (8, True)
    return int.from_bytes(body[:2], "big")


@pytest.mark.parametrize(
    ("frames", "code", "needle"),
    [
        (client_frame(2, b"abc", mask=None), 1002, "masked"),
        (client_frame(2, b"abc", rsv=4), 1002, "reserved bits"),
        (client_frame(2, b"abc", rsv=1), 1002, "reserved bits"),
        (client_frame(3, b"abc"), 1002, "reserved opcode 0x3"),
        (client_frame(0xB, b""), 1002, "reserved opcode 0xb"),
        (client_frame(1, b"text"), 1003, "MQTT-6.0.0-1"),
        (client_frame(2, b"x" * 2000), 1009, "exceeds the limit of 1024"),
        (client_frame(9, b"x" * 126), 1002, "longer than 125"),
        (client_frame(9, b"x", fin=False), 1002, "fragmented control"),
        (client_frame(0, b"x"), 1002, "no message started"),
        (client_frame(2, b"a", fin=False) + client_frame(2, b"b"), 1002, "new message"),
        (client_frame(2, b"x" * 10, length_bytes=2), 1002, "minimally"),
        (client_frame(2, b"x" * 200, length_bytes=8), 1002, "minimally"),
        (b"\x82\xff\x80" + b"\x00" * 7 + MASK, 1002, "top bit"),
        (client_frame(8, b"\x03"), 1002, "1-byte body"),
        (client_frame(8, (1005).to_bytes(2, "big")), 1002, "invalid close code 1005"),
        (client_frame(8, (999).to_bytes(2, "big")), 1002, "invalid close code 999"),
        (client_frame(8, (2000).to_bytes(2, "big")), 1002, "invalid close code 2000"),
        (client_frame(8, (5000).to_bytes(2, "big")), 1002, "invalid close code 5000"),
        (client_frame(8, (1000).to_bytes(2, "big") + b"\xff"), 1007, "UTF-8"),
    ],
)
def test_errors_close_with_code(frames: bytes, code: int, needle: str) -> None:
    dec = WsDecoder(frame_max=1024)
    events = dec.feed(client_frame(2, b"ok") + frames + client_frame(2, b"late"))
    assert len(events) == 2
    assert isinstance(events[0], Data)
    last = events[-1]
    assert isinstance(last, CloseConnection)
    assert (last.code, last.by_peer) == (code, False)
    assert needle in last.reason
    assert close_code_of(last.reply) == code
    assert data_of(events) in (b"ok", b"oka")  # "a": the first fragment, streamed before
    assert dec.closed
    assert dec.feed(client_frame(2, b"more")) == []


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 3000, 4999])
def test_peer_close_is_echoed(code: int) -> None:
    dec = WsDecoder()
    events = dec.feed(client_frame(2, b"last") + client_frame(8, code.to_bytes(2, "big") + b"r"))
    assert events == [Data(b"last"), CloseConnection(code, "r", encode_close(code), True)]
    assert close_code_of(events[-1].reply) == code
    assert dec.closed


def test_peer_close_without_code() -> None:
    dec = WsDecoder()
    [event] = dec.feed(client_frame(8))
    assert event == CloseConnection(CloseCode.NO_STATUS, "", b"\x88\x00", True)
    assert dec.feed(client_frame(8)) == []


def test_close_started_by_us() -> None:
    dec = WsDecoder()
    frame = dec.start_close(1001, "going away")
    assert server_frames(frame) == [(8, True, (1001).to_bytes(2, "big") + b"going away")]
    assert dec.close_sent
    assert not dec.closed
    assert dec.start_close() == b""
    # Data after our close is dropped; a ping is not answered; the reply closes quietly.
    events = dec.feed(client_frame(2, b"dropped") + client_frame(9, b"p")
                      + client_frame(8, (1001).to_bytes(2, "big")))
    assert events == [CloseConnection(1001, "", b"", True)]
    assert dec.closed


def test_error_after_close_sent_sends_no_second_close() -> None:
    dec = WsDecoder()
    assert dec.start_close()
    [event] = dec.feed(client_frame(2, b"x", mask=None))
    assert event == CloseConnection(1002, "client frames must be masked", b"", False)


def test_encode_close_limits_reason() -> None:
    frame = encode_close(1000, "é" * 100)
    [(opcode, _, body)] = server_frames(frame)
    assert opcode == 8
    assert len(body) <= 125
    assert body[2:].decode() == "é" * 61
    assert encode_close(None) == b"\x88\x00"


def test_frame_header_forms_and_decoder_limits() -> None:
    assert frame_header(2, 125) == b"\x82\x7d"
    assert frame_header(2, 126) == b"\x82\x7e\x00\x7e"
    assert frame_header(2, 1 << 16) == b"\x82\x7f" + (1 << 16).to_bytes(8, "big")
    assert frame_header(0, 3, fin=False) == b"\x00\x03"
    with pytest.raises(ValueError, match="frame_max"):
        WsDecoder(frame_max=10)
    dec = WsDecoder(frame_max=125)
    assert data_of(dec.feed(client_frame(2, b"x" * 125))) == b"x" * 125


# ------------------------------------------------------------------------------- round trip

messages = st.lists(
    st.tuples(st.lists(st.binary(max_size=300), min_size=1, max_size=4),  # fragments
              st.binary(min_size=4, max_size=4),  # mask
              st.one_of(st.none(), st.binary(max_size=125))),  # a ping after it, maybe
    max_size=6)


@settings(max_examples=150, deadline=None)
@given(messages, st.lists(st.integers(min_value=1, max_value=700), max_size=20))
def test_round_trip(msgs: list, cuts: list[int]) -> None:
    stream, payload, pongs = b"", b"", []
    for fragments, mask, ping in msgs:
        for i, fragment in enumerate(fragments):
            last = i == len(fragments) - 1
            stream += client_frame(2 if i == 0 else 0, fragment, fin=last, mask=mask)
            payload += fragment
        if ping is not None:
            stream += client_frame(9, ping, mask=mask[::-1])
            pongs.append(ping)
    dec = WsDecoder()
    events, pos = [], 0
    for size in cuts:
        events += dec.feed(stream[pos:pos + size])
        pos += size
    events += dec.feed(stream[pos:])
    assert data_of(events) == payload
    sent = [server_frames(e.data) for e in events if isinstance(e, Send)]
    assert sent == [[(0xA, True, p)] for p in pongs]
    assert not dec.closed
    assert all(isinstance(e, Data | Send) for e in events)
