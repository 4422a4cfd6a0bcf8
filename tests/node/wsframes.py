"""An independent WebSocket client side for the listener tests: frames and handshake heads.

Client frames are built by a plain byte loop (`client_frame`, any mask, any length form, reserved
bits) and server frames are read back by a separate parser (`server_frames`), so the tests do not
trust wsproto to check wsproto.
"""

from __future__ import annotations

MASK = b"\x37\xfa\x21\x3d"


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
        assert b0 & 0x70 == 0, "no reserved bits: no extension is negotiated"
        n, pos = b1 & 0x7F, pos + 2
        if n in (126, 127):
            size = 2 if n == 126 else 8
            n, pos = int.from_bytes(data[pos:pos + size], "big"), pos + size
        frames.append((b0 & 0x0F, bool(b0 & 0x80), data[pos:pos + n]))
        pos += n
    assert pos == len(data), "trailing partial frame"
    return frames


def close_code_of(frame: tuple[int, bool, bytes]) -> int:
    opcode, fin, body = frame
    assert (opcode, fin) == (8, True), frame
    return int.from_bytes(body[:2], "big")


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
