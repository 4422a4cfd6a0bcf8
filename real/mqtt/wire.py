"""MQTT data representations (section 1.5): the primitives every packet is built from.

    Bits                 one byte
    Two Byte Integer     big-endian u16
    Four Byte Integer    big-endian u32
    Variable Byte Int    7 bits per byte, low group first, bit 7 = "more follows", at most 4 bytes,
                         minimal length (MQTT-1.5.5-1), so at most 268_435_455
    UTF-8 Encoded String u16 byte length | well-formed UTF-8, no surrogates (MQTT-1.5.4-1),
                         no U+0000 (MQTT-1.5.4-2)
    Binary Data          u16 byte length | bytes
    UTF-8 String Pair    string | string

`Reader` decodes them from one packet body, raising `MalformedPacket` that names the field and
the byte offset counted from the first byte of the packet (the fixed header included).
"""

from __future__ import annotations

from real.mqtt.errors import InvalidPacket, MalformedPacket
from real.mqtt.reasons import ReasonCode

VARINT_MAX = 268_435_455
VARINT_BYTES_MAX = 4
U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF
_MALFORMED = ReasonCode.MALFORMED_PACKET


def encode_varint(value: int, field: str = "variable byte integer") -> bytes:
    """The minimal Variable Byte Integer encoding of `value` (1 to 4 bytes)."""
    if type(value) is not int or not 0 <= value <= VARINT_MAX:
        raise InvalidPacket(_MALFORMED, f"{field} must be an int in 0..{VARINT_MAX}, got {value!r}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            break
    assert 1 <= len(out) <= VARINT_BYTES_MAX
    return bytes(out)


def encode_utf8(text: object, field: str) -> bytes:
    """`text` as an MQTT UTF-8 Encoded String: u16 length then the bytes."""
    if type(text) is not str:
        raise InvalidPacket(_MALFORMED, f"{field} must be a str, got {type(text).__name__}")
    if "\x00" in text:  # MQTT-1.5.4-2
        raise InvalidPacket(_MALFORMED, f"{field} must not contain U+0000")
    try:
        data = text.encode("utf-8")  # a lone surrogate fails here: MQTT-1.5.4-1
    except UnicodeEncodeError as exc:
        raise InvalidPacket(_MALFORMED, f"{field} is not encodable as UTF-8: {exc.reason}") from exc
    if len(data) > U16_MAX:
        raise InvalidPacket(_MALFORMED, f"{field} is {len(data)} bytes, at most {U16_MAX} allowed")
    return len(data).to_bytes(2, "big") + data


def encode_binary(data: object, field: str) -> bytes:
    """`data` as MQTT Binary Data: u16 length then the bytes."""
    if type(data) is not bytes:
        raise InvalidPacket(_MALFORMED, f"{field} must be bytes, got {type(data).__name__}")
    if len(data) > U16_MAX:
        raise InvalidPacket(_MALFORMED, f"{field} is {len(data)} bytes, at most {U16_MAX} allowed")
    return len(data).to_bytes(2, "big") + data


def encode_uint(value: object, size: int, field: str) -> bytes:
    """`value` as a big-endian unsigned integer of `size` bytes (1, 2 or 4)."""
    assert size in (1, 2, 4), size
    top = (1 << (8 * size)) - 1
    if type(value) is not int or not 0 <= value <= top:
        raise InvalidPacket(_MALFORMED, f"{field} must be an int in 0..{top}, got {value!r}")
    return value.to_bytes(size, "big")


class Reader:
    """A cursor over one packet body; `base` is the body's offset within the whole packet."""

    __slots__ = ("data", "pos", "end", "base", "packet")

    def __init__(self, data: bytes, base: int, packet: str) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)
        self.base = base
        self.packet = packet

    def at(self) -> int:
        """The current offset counted from the packet's first byte."""
        return self.base + self.pos

    def fail(self, field: str, expected: str, offset: int | None = None) -> MalformedPacket:
        where = self.at() if offset is None else offset
        return MalformedPacket(_MALFORMED, f"{self.packet}.{field} at byte {where}: {expected}")

    def left(self) -> int:
        return self.end - self.pos

    def take(self, count: int, field: str) -> bytes:
        if count > self.end - self.pos:
            raise self.fail(field, f"expected {count} bytes, only {self.end - self.pos} remain")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        assert len(chunk) == count
        return chunk

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "big")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "big")

    def varint(self, field: str) -> int:
        start = self.at()
        value = 0
        for index in range(VARINT_BYTES_MAX):
            byte = self.u8(field)
            value |= (byte & 0x7F) << (7 * index)
            if not byte & 0x80:
                if byte == 0 and index > 0:  # MQTT-1.5.5-1: minimal number of bytes
                    raise self.fail(field, "variable byte integer is not minimally encoded", start)
                return value
        raise self.fail(field, "variable byte integer longer than 4 bytes", start)

    def binary(self, field: str) -> bytes:
        return self.take(self.u16(field), field)

    def utf8(self, field: str) -> str:
        start = self.at()
        raw = self.binary(field)
        try:
            text = raw.decode("utf-8")  # strict: rejects surrogates and overlongs, MQTT-1.5.4-1
        except UnicodeDecodeError as exc:
            where = start + 2 + exc.start
            raise self.fail(field, f"ill-formed UTF-8 ({exc.reason})", where) from None
        if "\x00" in text:  # MQTT-1.5.4-2
            raise self.fail(field, "UTF-8 string contains U+0000", start + 2 + raw.index(0))
        return text

    def expect_end(self) -> None:
        if self.pos != self.end:
            raise self.fail("end", f"{self.end - self.pos} unexpected trailing bytes")
