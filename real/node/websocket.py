"""Sans-I/O WebSocket (RFC 6455) for the server side of MQTT over WebSocket (MQTT 5 section 6).

Pure: no sockets, no asyncio, no clock. `real/node/transport.py` drives it; anything else may too.

The opening handshake (RFC 6455 section 4.2) is one HTTP/1.1 request head:

    GET /mqtt HTTP/1.1
    Host: broker.example:8083
    Upgrade: websocket
    Connection: Upgrade
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==     (base64 of 16 random bytes)
    Sec-WebSocket-Version: 13
    Sec-WebSocket-Protocol: mqtt                   (a comma-separated list; may repeat)

`head_end(buf)` finds where the head ends (at most `HEAD_BYTES_MAX` bytes), `parse_handshake`
checks it and returns a `HandshakeRequest` or raises `HandshakeError(status, reason)` whose
`response()` is the HTTP error to send before closing. `handshake_response(req, subprotocol)` is
the `101 Switching Protocols` answer with `Sec-WebSocket-Accept = base64(sha1(key + GUID))`.

Subprotocols: MQTT-6.0.0-3 says a client MUST offer "mqtt" and MQTT-6.0.0-4 that the server MUST
select "mqtt". paho-mqtt 2.x and the `websockets` library (when told) offer exactly "mqtt". Old
MQTT 3.1 clients offer "mqttv3.1"; a server that answered them "mqtt" would make them fail the
connection (RFC 6455 4.1: the selected subprotocol must be one the client offered), so a
handshake offering "mqttv3.1" and not "mqtt" is answered "mqttv3.1". A handshake offering neither
is refused with 400.

After the handshake both directions carry frames (RFC 6455 section 5.2):

    byte 0   FIN | RSV1 | RSV2 | RSV3 | opcode(4)
    byte 1   MASK | payload length (7): 0..125, or 126 -> 16-bit length, 127 -> 64-bit length
    [2 or 8 bytes extended length, big-endian, minimal]  [4-byte masking key if MASK]  payload

`WsDecoder(frame_max).feed(data) -> list[Event]` reads client frames. MQTT bytes arrive as `Data`
chunks, streamed as they arrive (a frame is never buffered whole; MQTT-6.0.0-2 says packets need
not align with frames); the data of consecutive frames in one `feed` comes as one `Data`. Pings
give `Send(pong_frame)`, pongs nothing. Anything that ends the connection gives one
`CloseConnection(code, reason, reply, by_peer)`: write `reply` (a close frame, possibly empty
bytes), then close the TCP connection; the decoder then ignores further input.

Close codes the decoder chooses: 1002 protocol error (unmasked client frame, reserved bits or
opcodes, fragmented or oversized control frame, bad continuation, non-minimal length, malformed
close frame), 1003 text frame (MQTT-6.0.0-1: MQTT uses binary frames only), 1007 close reason not
UTF-8, 1009 frame payload longer than `frame_max`. No extensions are negotiated.

Server frames are unmasked (`encode_binary`, `encode_close`, `encode_pong`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from enum import Enum, IntEnum

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
HEAD_BYTES_MAX = 8 << 10  # the request head, request line to blank line inclusive
HEADERS_MAX = 64
SUBPROTOCOLS = ("mqtt", "mqttv3.1")  # in order of preference
CONTROL_PAYLOAD_MAX = 125  # RFC 6455 5.5
FRAME_MAX_DEFAULT = 16 << 20
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_REASONS = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            426: "Upgrade Required", 431: "Request Header Fields Too Large"}


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


_OPCODES = frozenset(int(op) for op in Opcode)


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never sent: reported when a peer's close frame carries no code
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011


def close_code_valid(code: int) -> bool:
    """Whether a peer may send `code` in a close frame (RFC 6455 7.4 and the IANA registry)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


# ------------------------------------------------------------------------------------ handshake


class HandshakeError(Exception):
    """A refused opening handshake: send `response()`, then close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        assert status in _REASONS, status
        assert reason, "a refusal names its reason"
        self.status = status
        self.reason = reason

    def response(self) -> bytes:
        """The HTTP/1.1 error response: status line, headers, the reason as a text/plain body."""
        body = (self.reason + "\n").encode()
        extra = "Sec-WebSocket-Version: 13\r\n" if self.status == 426 else ""
        extra += "Allow: GET\r\n" if self.status == 405 else ""
        head = (f"HTTP/1.1 {self.status} {_REASONS[self.status]}\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"Connection: close\r\n{extra}\r\n")
        return head.encode("latin-1") + body


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """A valid opening handshake."""

    path: str  # the request target without its query
    query: str  # after "?", "" if none
    key: str  # Sec-WebSocket-Key as sent (24 base64 characters)
    subprotocols: tuple[str, ...]  # offered, in order, from every Sec-WebSocket-Protocol header
    headers: tuple[tuple[str, str], ...]  # (lower-cased name, value), in order

    def header(self, name: str) -> str | None:
        """The first value of header `name` (give it lower-cased), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


def head_end(buf: bytes | bytearray, head_max: int = HEAD_BYTES_MAX) -> int:
    """The length of the request head at the start of `buf` (through the blank line), or -1.

    -1 means "need more bytes". Raises `HandshakeError` 431 when no head ends within `head_max`
    bytes, and 400 as soon as the first bytes cannot start an HTTP request line (say, raw MQTT
    sent to a WebSocket port), so such a peer is refused at once rather than at the timeout.
    """
    assert head_max >= 16, head_max
    if not buf:
        return -1
    prefix = bytes(buf[:8])
    method = prefix.split(b" ", 1)[0]
    if not method.isalpha() or not method.isupper() or (len(method) == 8 and b" " not in prefix):
        raise HandshakeError(400, "not an HTTP request (expected a WebSocket upgrade GET)")
    end = bytes(buf[:head_max]).find(b"\r\n\r\n")
    if end >= 0:
        return end + 4
    if len(buf) >= head_max:
        raise HandshakeError(431, f"request head longer than {head_max} bytes")
    return -1


def parse_handshake(head: bytes, ws_path: str = "/mqtt") -> HandshakeRequest:
    """Check an opening handshake head (as found by `head_end`) for WebSocket endpoint `ws_path`.

    Refusals (`HandshakeError`): 400 malformed request or header, not HTTP/1.1, missing Host,
    Upgrade without "websocket", Connection without "upgrade", a key that is not 16 bytes of
    base64, no MQTT subprotocol offered; 405 method not GET; 404 path not `ws_path`; 426
    Sec-WebSocket-Version not 13 (the response says 13 is what we speak); 431 too many headers.
    """
    if len(head) > HEAD_BYTES_MAX:
        raise HandshakeError(431, f"request head longer than {HEAD_BYTES_MAX} bytes")
    lines = head.decode("latin-1").split("\r\n")
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise HandshakeError(400, "empty request")
    path, query = _check_request_line(lines[0], ws_path)
    headers = _parse_headers(lines[1:])
    fields = dict(headers)  # the last value of a repeated header; repeats are checked below
    _check_upgrade_headers(headers, fields)
    key = _check_key(headers)
    offered = tuple(
        token.strip()
        for name, value in headers if name == "sec-websocket-protocol"
        for token in value.split(",") if token.strip()
    )
    if select_subprotocol(offered) is None:
        raise HandshakeError(400, "no MQTT subprotocol offered: Sec-WebSocket-Protocol must "
                                  f"list 'mqtt' (MQTT-6.0.0-3), got {list(offered)}")
    return HandshakeRequest(path, query, key, offered, headers)


def _check_request_line(line: str, ws_path: str) -> tuple[str, str]:
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise HandshakeError(400, f"malformed request line {line[:80]!r}")
    method, target, version = parts
    if version != "HTTP/1.1":
        raise HandshakeError(400, f"WebSocket needs HTTP/1.1, got {version[:20]!r}")
    if method != "GET":
        raise HandshakeError(405, f"method {method[:20]!r} not allowed: a WebSocket upgrade is "
                                  "a GET")
    path, _, query = target.partition("?")
    if path != ws_path:
        raise HandshakeError(404, f"no WebSocket endpoint at {path[:100]!r} (it is {ws_path!r})")
    return path, query


def _parse_headers(lines: list[str]) -> tuple[tuple[str, str], ...]:
    if len(lines) > HEADERS_MAX:
        raise HandshakeError(431, f"more than {HEADERS_MAX} header fields")
    headers = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name):
            raise HandshakeError(400, f"malformed header line {line[:80]!r}")
        headers.append((name.lower(), value.strip(" \t")))
    return tuple(headers)


def _tokens(value: str | None) -> list[str]:
    return [token.strip().lower() for token in (value or "").split(",")]


def _check_upgrade_headers(headers: tuple[tuple[str, str], ...], fields: dict[str, str]) -> None:
    if "host" not in fields:
        raise HandshakeError(400, "missing Host header")
    if "websocket" not in _tokens(fields.get("upgrade")):
        raise HandshakeError(400, f"Upgrade header must be 'websocket', got "
                                  f"{fields.get('upgrade')!r}")
    connection = [token for name, value in headers if name == "connection"
                  for token in _tokens(value)]
    if "upgrade" not in connection:
        raise HandshakeError(400, f"Connection header must include 'Upgrade', got "
                                  f"{fields.get('connection')!r}")
    versions = [value for name, value in headers if name == "sec-websocket-version"]
    if not versions:
        raise HandshakeError(426, "missing Sec-WebSocket-Version header (this server speaks 13)")
    if versions != ["13"]:
        raise HandshakeError(426, f"Sec-WebSocket-Version {versions} not supported (use 13)")


def _check_key(headers: tuple[tuple[str, str], ...]) -> str:
    keys = [value for name, value in headers if name == "sec-websocket-key"]
    if len(keys) != 1:
        raise HandshakeError(400, f"need exactly one Sec-WebSocket-Key header, got {len(keys)}")
    try:
        raw = base64.b64decode(keys[0], validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, f"Sec-WebSocket-Key must be base64 of 16 bytes, got "
                                  f"{keys[0][:40]!r}")
    return keys[0]


def select_subprotocol(offered: tuple[str, ...] | list[str]) -> str | None:
    """The subprotocol to answer: "mqtt" if offered, else "mqttv3.1" if offered, else None."""
    for name in SUBPROTOCOLS:
        if name in offered:
            return name
    return None


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + GUID))."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()  # noqa: S324 (RFC 6455)
    return base64.b64encode(digest).decode("ascii")


def handshake_response(req: HandshakeRequest, subprotocol: str) -> bytes:
    """The 101 response accepting `req` with `subprotocol` (one the client offered)."""
    assert subprotocol in req.subprotocols, (subprotocol, req.subprotocols)
    assert subprotocol in SUBPROTOCOLS, subprotocol
    return ("HTTP/1.1 101 Switching Protocols\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(req.key)}\r\n"
            f"Sec-WebSocket-Protocol: {subprotocol}\r\n"
            "\r\n").encode("ascii")


# ------------------------------------------------------------------------------------ frames


def frame_header(opcode: int, length: int, fin: bool = True) -> bytes:
    """The header of an unmasked frame carrying `length` payload bytes (minimal length form)."""
    assert 0 <= opcode <= 0xF, opcode
    assert 0 <= length < 1 << 63, length
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return bytes((first, 126)) + length.to_bytes(2, "big")
    return bytes((first, 127)) + length.to_bytes(8, "big")


def encode_binary(payload: bytes | bytearray | memoryview) -> bytes:
    """One unmasked, final binary frame carrying `payload` (server to client)."""
    return frame_header(Opcode.BINARY, len(payload)) + payload


def encode_pong(payload: bytes = b"") -> bytes:
    assert len(payload) <= CONTROL_PAYLOAD_MAX, len(payload)
    return frame_header(Opcode.PONG, len(payload)) + payload


def encode_close(code: int | None = CloseCode.NORMAL, reason: str = "") -> bytes:
    """A close frame; `code=None` gives an empty body. The reason is cut to fit 125 bytes."""
    if code is None:
        assert not reason, "a close frame without a code carries no reason"
        return frame_header(Opcode.CLOSE, 0)
    assert 1000 <= code <= 4999, code
    raw = reason.encode()[:CONTROL_PAYLOAD_MAX - 2].decode("utf-8", "ignore").encode()
    body = int(code).to_bytes(2, "big") + raw
    return frame_header(Opcode.CLOSE, len(body)) + body


def unmask(data: bytes | bytearray | memoryview, mask: bytes, offset: int = 0) -> bytes:
    """XOR `data` with the 4-byte `mask`, `data` starting at byte `offset` of the payload."""
    assert len(mask) == 4, mask
    n = len(data)
    if n == 0:
        return b""
    shift = offset & 3
    if shift:
        mask = mask[shift:] + mask[:shift]
    key = mask * ((n + 3) // 4)
    # One big-integer XOR runs in C: far faster than a Python loop over the bytes.
    value = int.from_bytes(data, "little") ^ int.from_bytes(key[:n], "little")
    return value.to_bytes(n, "little")


@dataclass(frozen=True, slots=True)
class Data:
    """A chunk of the binary message stream (MQTT bytes), unmasked."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Send:
    """Frame bytes to write to the peer now (a pong)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Write `reply` (a close frame, or b"" if ours was sent already), then close the connection.

    `code`/`reason`: the peer's close code (1005 if its frame had none) when `by_peer`, else the
    code this side closes with and why.
    """

    code: int
    reason: str
    reply: bytes
    by_peer: bool


Event = Data | Send | CloseConnection


class _State(Enum):
    OPEN = "open"  # frames flow both ways
    CLOSE_SENT = "close-sent"  # we sent a close frame: drop data, wait for the peer's close
    DONE = "done"  # a CloseConnection was returned; input is ignored


class _Fail(Exception):
    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class WsDecoder:
    """Incremental reader of client frames; see the module docstring for the events.

    Holds at most one frame header (14 bytes) and one control payload (125 bytes); data payloads
    are passed on as they arrive. `frame_max` bounds each frame's payload length (1009 beyond).
    """

    def __init__(self, frame_max: int = FRAME_MAX_DEFAULT) -> None:
        if type(frame_max) is not int or frame_max < CONTROL_PAYLOAD_MAX:
            raise ValueError(f"frame_max must be an int >= {CONTROL_PAYLOAD_MAX}, "
                             f"got {frame_max!r}")
        self.frame_max = frame_max
        self._state = _State.OPEN
        self._head = bytearray()  # header bytes of the frame being read
        self._head_need = 2  # header length, known once the first 2 bytes are in
        self._remaining = -1  # payload bytes still to read; -1 while reading a header
        self._opcode = 0
        self._fin = True
        self._mask = b""
        self._offset = 0  # payload bytes of the current frame read so far
        self._control = bytearray()  # payload of a control frame being read
        self._in_message = False  # a fragmented binary message awaits continuations
        self._chunks: list[bytes] = []  # data of this feed() not yet turned into a Data event

    @property
    def closed(self) -> bool:
        """A CloseConnection was returned: the connection is to be closed."""
        return self._state is _State.DONE

    @property
    def close_sent(self) -> bool:
        """This side sent a close frame (`start_close`)."""
        return self._state is not _State.OPEN

    def start_close(self, code: int = CloseCode.NORMAL, reason: str = "") -> bytes:
        """Begin a close from this side: the close frame to write (b"" if already closing).

        Data from the peer is dropped from now on; its close frame (or any error) then yields
        `CloseConnection(reply=b"")`.
        """
        if self._state is not _State.OPEN:
            return b""
        self._state = _State.CLOSE_SENT
        return encode_close(code, reason)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Consume `data`; return the events it completes, in order."""
        events: list[Event] = []
        view = memoryview(data)
        pos, end = 0, len(view)
        try:
            while self._state is not _State.DONE:
                if self._remaining < 0:
                    pos = self._whole_data_frames(view, pos)
                    if pos == end:
                        break
                    pos = self._read_header(view, pos)
                if self._remaining >= 0:
                    pos = self._read_payload(view, pos, events)
                    if self._remaining > 0:
                        break  # ran out of input inside the payload
                    self._end_frame(events)
        except _Fail as fail:
            self._emit(events, self._finish(fail.code, fail.reason, by_peer=False))
        self._flush(events)
        self.invariants()
        return events

    def _whole_data_frames(self, view: memoryview, pos: int) -> int:
        """The fast path: consume complete, valid data frames lying wholly in `view`.

        Stops (for the general path to take over) at anything else: a control frame, a frame
        cut short by the end of `view`, or any flaw, which the general path then reports.
        """
        if self._state is not _State.OPEN or self._head:
            return pos
        end, frame_max, chunks = len(view), self.frame_max, self._chunks
        while end - pos >= 6:
            b0, b1 = view[pos], view[pos + 1]
            if b1 < 0x80 or b0 & 0x70 or (b0 & 0x0F) != (0 if self._in_message else 2):
                break  # unmasked, reserved bits, or not the expected data opcode
            short = b1 & 0x7F
            if short < 126:
                size, length = 6, short
            elif short == 126 and end - pos >= 8:
                size, length = 8, int.from_bytes(view[pos + 2:pos + 4], "big")
                if length < 126:
                    break
            else:
                break  # 64-bit lengths are big frames: the general path streams them
            if length > frame_max or end - pos < size + length:
                break
            payload = pos + size
            if length:
                chunks.append(unmask(view[payload:payload + length],
                                     bytes(view[payload - 4:payload])))
            self._in_message = not b0 & 0x80
            pos = payload + length
        return pos

    def _flush(self, events: list[Event]) -> None:
        """Turn the data chunks gathered so far into one Data event (one handler call)."""
        if self._chunks:
            chunks = self._chunks
            events.append(Data(chunks[0] if len(chunks) == 1 else b"".join(chunks)))
            self._chunks = []

    def _emit(self, events: list[Event], event: Event) -> None:
        self._flush(events)
        events.append(event)

    def invariants(self) -> None:
        assert len(self._head) <= 14, len(self._head)
        assert len(self._control) <= CONTROL_PAYLOAD_MAX, len(self._control)
        assert self._remaining <= self.frame_max, self._remaining
        assert not self._chunks, "data left behind"

    def _finish(self, code: int, reason: str, by_peer: bool, reply: bytes | None = None) -> Event:
        if reply is None:
            reply = encode_close(code, reason) if self._state is _State.OPEN else b""
        self._state = _State.DONE
        return CloseConnection(code, reason, reply, by_peer)

    def _read_header(self, view: memoryview, pos: int) -> int:
        if not self._head and len(view) - pos >= 2:  # fast path: the whole header is here
            short = view[pos + 1] & 0x7F
            size = 6 if short < 126 else 8 if short == 126 else 14
            if len(view) - pos >= size:
                self._head += view[pos:pos + 2]
                self._head_need = self._check_first_bytes()  # raises unless masked
                assert self._head_need == size, (self._head_need, size)
                self._head += view[pos + 2:pos + size]
                self._start_payload()
                return pos + size
        take = min(self._head_need - len(self._head), len(view) - pos)
        self._head += view[pos:pos + take]
        pos += take
        if len(self._head) == 2 and self._head_need == 2:
            self._head_need = self._check_first_bytes()
            if len(view) > pos:  # read the rest of the header from this chunk
                take = min(self._head_need - 2, len(view) - pos)
                self._head += view[pos:pos + take]
                pos += take
        if len(self._head) == self._head_need:
            self._start_payload()
        return pos

    def _check_first_bytes(self) -> int:
        """Validate bytes 0-1 of a frame header; return the header's full length."""
        b0, b1 = self._head[0], self._head[1]
        self._fin = bool(b0 & 0x80)
        self._opcode = b0 & 0x0F
        if b0 & 0x70:
            raise _Fail(CloseCode.PROTOCOL_ERROR, "reserved bits set (no extension negotiated)")
        if self._opcode not in _OPCODES:
            raise _Fail(CloseCode.PROTOCOL_ERROR, f"reserved opcode {self._opcode:#x}")
        if not b1 & 0x80:
            raise _Fail(CloseCode.PROTOCOL_ERROR, "client frames must be masked")
        if self._opcode == Opcode.TEXT:
            raise _Fail(CloseCode.UNSUPPORTED_DATA,
                        "text frame: MQTT over WebSocket uses binary frames (MQTT-6.0.0-1)")
        self._check_sequence(b1 & 0x7F)
        short = b1 & 0x7F
        return 6 if short < 126 else 8 if short == 126 else 14

    def _check_sequence(self, short_length: int) -> None:
        if self._opcode >= Opcode.CLOSE:
            if not self._fin:
                raise _Fail(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
            if short_length > CONTROL_PAYLOAD_MAX:
                raise _Fail(CloseCode.PROTOCOL_ERROR, "control frame longer than 125 bytes")
        elif self._opcode == Opcode.CONTINUATION and not self._in_message:
            raise _Fail(CloseCode.PROTOCOL_ERROR, "continuation frame with no message started")
        elif self._opcode == Opcode.BINARY and self._in_message:
            raise _Fail(CloseCode.PROTOCOL_ERROR, "new message before the last one finished")

    def _start_payload(self) -> None:
        short = self._head[1] & 0x7F
        if short == 126:
            length = int.from_bytes(self._head[2:4], "big")
            if length < 126:
                raise _Fail(CloseCode.PROTOCOL_ERROR, f"length {length} not minimally encoded")
        elif short == 127:
            length = int.from_bytes(self._head[2:10], "big")
            if length >> 63:
                raise _Fail(CloseCode.PROTOCOL_ERROR, "64-bit length with the top bit set")
            if length < 1 << 16:
                raise _Fail(CloseCode.PROTOCOL_ERROR, f"length {length} not minimally encoded")
        else:
            length = short
        if length > self.frame_max:
            raise _Fail(CloseCode.MESSAGE_TOO_BIG,
                        f"frame of {length} bytes exceeds the limit of {self.frame_max}")
        self._mask = bytes(self._head[-4:])
        self._remaining = length
        self._offset = 0
        if self._opcode < Opcode.CLOSE:
            self._in_message = not self._fin

    def _read_payload(self, view: memoryview, pos: int, events: list[Event]) -> int:
        take = min(self._remaining, len(view) - pos)
        if take == 0:
            return pos
        chunk = unmask(view[pos:pos + take], self._mask, self._offset)
        self._offset += take
        self._remaining -= take
        if self._opcode >= Opcode.CLOSE:
            self._control += chunk
        elif self._state is _State.OPEN:
            self._chunks.append(chunk)
        return pos + take

    def _end_frame(self, events: list[Event]) -> None:
        assert self._remaining == 0, self._remaining
        self._head.clear()
        self._head_need = 2
        self._remaining = -1
        if self._opcode < Opcode.CLOSE:
            return
        opcode, payload = self._opcode, bytes(self._control)
        self._control.clear()
        if opcode == Opcode.PING and self._state is _State.OPEN:
            self._emit(events, Send(encode_pong(payload)))
        elif opcode == Opcode.CLOSE:
            self._emit(events, self._peer_close(payload))

    def _peer_close(self, payload: bytes) -> Event:
        if not payload:
            reply = encode_close(None) if self._state is _State.OPEN else b""
            return self._finish(CloseCode.NO_STATUS, "", by_peer=True, reply=reply)
        if len(payload) == 1:
            raise _Fail(CloseCode.PROTOCOL_ERROR, "close frame with a 1-byte body")
        code = int.from_bytes(payload[:2], "big")
        if not close_code_valid(code):
            raise _Fail(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise _Fail(CloseCode.INVALID_DATA, "close reason is not UTF-8") from None
        reply = encode_close(code) if self._state is _State.OPEN else b""
        return self._finish(code, reason, by_peer=True, reply=reply)
