"""MQTT 5.0 properties (section 2.2.2): identifiers, types, where each may appear, the codec.

Wire format of a property section:

    property length (Variable Byte Integer, bytes that follow) | (identifier varint | value)*

A value is typed by its identifier: Byte, Two/Four Byte Integer, Variable Byte Integer, UTF-8
Encoded String, UTF-8 String Pair or Binary Data (see `wire.py`). `Properties` keeps the items in
wire order, so repeatable ones (User Property everywhere, Subscription Identifier in PUBLISH) keep
their order. An identifier not valid for the packet is a Malformed Packet (section 2.2.2.2); a
non-repeatable one given twice is a Protocol Error (each property's "more than once" rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from real.mqtt import wire
from real.mqtt.errors import MalformedPacket, ProtocolError
from real.mqtt.reasons import ReasonCode


class PacketType(IntEnum):
    """The control packet types of the fixed header, bits 7-4 of byte 1 (section 2.1.2)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


WILL: Final = 0  # the property context of the Will Properties in a CONNECT payload


class PropType(IntEnum):
    BYTE = 1
    U16 = 2
    U32 = 3
    VARINT = 4
    UTF8 = 5
    PAIR = 6
    BINARY = 7


class PropertyId(IntEnum):
    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


@dataclass(frozen=True, slots=True)
class PropertySpec:
    """One row of the table in section 2.2.2.2, plus the value rules of its own section."""

    type: PropType
    contexts: frozenset[int]  # PacketType values, or WILL
    repeatable_in: frozenset[int] = frozenset()
    low: int = 0  # value range for integer types; a value outside is a Protocol Error
    high: int | None = None  # high=1: a 0/1 flag


P = PacketType
_PUB_WILL = frozenset({P.PUBLISH, WILL})
_ACKS = frozenset({P.PUBACK, P.PUBREC, P.PUBREL, P.PUBCOMP})
_EVERYWHERE = frozenset(set(P) - {P.PINGREQ, P.PINGRESP} | {WILL})

SPECS: dict[PropertyId, PropertySpec] = {
    PropertyId.PAYLOAD_FORMAT_INDICATOR: PropertySpec(PropType.BYTE, _PUB_WILL, high=1),
    PropertyId.MESSAGE_EXPIRY_INTERVAL: PropertySpec(PropType.U32, _PUB_WILL),
    PropertyId.CONTENT_TYPE: PropertySpec(PropType.UTF8, _PUB_WILL),
    PropertyId.RESPONSE_TOPIC: PropertySpec(PropType.UTF8, _PUB_WILL),
    PropertyId.CORRELATION_DATA: PropertySpec(PropType.BINARY, _PUB_WILL),
    # 3.3.2.3.8: several in PUBLISH; 3.8.2.1.2: once in SUBSCRIBE; 0 is a Protocol Error.
    PropertyId.SUBSCRIPTION_IDENTIFIER: PropertySpec(
        PropType.VARINT, frozenset({P.PUBLISH, P.SUBSCRIBE}), frozenset({P.PUBLISH}), low=1),
    PropertyId.SESSION_EXPIRY_INTERVAL: PropertySpec(
        PropType.U32, frozenset({P.CONNECT, P.CONNACK, P.DISCONNECT})),
    PropertyId.ASSIGNED_CLIENT_IDENTIFIER: PropertySpec(PropType.UTF8, frozenset({P.CONNACK})),
    PropertyId.SERVER_KEEP_ALIVE: PropertySpec(PropType.U16, frozenset({P.CONNACK})),
    PropertyId.AUTHENTICATION_METHOD: PropertySpec(
        PropType.UTF8, frozenset({P.CONNECT, P.CONNACK, P.AUTH})),
    PropertyId.AUTHENTICATION_DATA: PropertySpec(
        PropType.BINARY, frozenset({P.CONNECT, P.CONNACK, P.AUTH})),
    PropertyId.REQUEST_PROBLEM_INFORMATION: PropertySpec(
        PropType.BYTE, frozenset({P.CONNECT}), high=1),
    PropertyId.WILL_DELAY_INTERVAL: PropertySpec(PropType.U32, frozenset({WILL})),
    PropertyId.REQUEST_RESPONSE_INFORMATION: PropertySpec(
        PropType.BYTE, frozenset({P.CONNECT}), high=1),
    PropertyId.RESPONSE_INFORMATION: PropertySpec(PropType.UTF8, frozenset({P.CONNACK})),
    PropertyId.SERVER_REFERENCE: PropertySpec(
        PropType.UTF8, frozenset({P.CONNACK, P.DISCONNECT})),
    PropertyId.REASON_STRING: PropertySpec(
        PropType.UTF8,
        frozenset(_ACKS | {P.CONNACK, P.SUBACK, P.UNSUBACK, P.DISCONNECT, P.AUTH})),
    # 3.1.2.11.3 / 3.2.2.3.3: a Receive Maximum of 0 is a Protocol Error.
    PropertyId.RECEIVE_MAXIMUM: PropertySpec(
        PropType.U16, frozenset({P.CONNECT, P.CONNACK}), low=1),
    PropertyId.TOPIC_ALIAS_MAXIMUM: PropertySpec(PropType.U16, frozenset({P.CONNECT, P.CONNACK})),
    PropertyId.TOPIC_ALIAS: PropertySpec(PropType.U16, frozenset({P.PUBLISH}), low=1),  # 3.3.2-8
    PropertyId.MAXIMUM_QOS: PropertySpec(PropType.BYTE, frozenset({P.CONNACK}), high=1),
    PropertyId.RETAIN_AVAILABLE: PropertySpec(PropType.BYTE, frozenset({P.CONNACK}), high=1),
    PropertyId.USER_PROPERTY: PropertySpec(PropType.PAIR, _EVERYWHERE, _EVERYWHERE),
    # 3.1.2.11.4 / 3.2.2.3.6: a Maximum Packet Size of 0 is a Protocol Error.
    PropertyId.MAXIMUM_PACKET_SIZE: PropertySpec(
        PropType.U32, frozenset({P.CONNECT, P.CONNACK}), low=1),
    PropertyId.WILDCARD_SUBSCRIPTION_AVAILABLE: PropertySpec(
        PropType.BYTE, frozenset({P.CONNACK}), high=1),
    PropertyId.SUBSCRIPTION_IDENTIFIER_AVAILABLE: PropertySpec(
        PropType.BYTE, frozenset({P.CONNACK}), high=1),
    PropertyId.SHARED_SUBSCRIPTION_AVAILABLE: PropertySpec(
        PropType.BYTE, frozenset({P.CONNACK}), high=1),
}
assert set(SPECS) == set(PropertyId)

PropertyValue = int | str | bytes | tuple[str, str]


@dataclass(frozen=True, slots=True)
class Properties:
    """The properties of one packet (or of a Will), in wire order: `((PropertyId, value), ...)`."""

    items: tuple[tuple[PropertyId, PropertyValue], ...] = ()

    @classmethod
    def of(cls, *items: tuple[PropertyId, PropertyValue]) -> Properties:
        return cls(tuple((PropertyId(pid), value) for pid, value in items))

    def __len__(self) -> int:
        return len(self.items)

    def get(self, pid: PropertyId, default: PropertyValue | None = None) -> PropertyValue | None:
        """The first value of `pid`, or `default`."""
        for key, value in self.items:
            if key == pid:
                return value
        return default

    def get_int(self, pid: PropertyId, default: int) -> int:
        """The first value of an integer property `pid` (the decoder checked its type), or
        `default` when it is absent."""
        for key, value in self.items:
            if key == pid:
                assert type(value) is int, (pid, value)
                return value
        return default

    def get_all(self, pid: PropertyId) -> list[PropertyValue]:
        """Every value of `pid` in wire order (User Property, Subscription Identifier)."""
        return [value for key, value in self.items if key == pid]


NO_PROPERTIES = Properties()


def _context_name(context: int) -> str:
    return "Will" if context == WILL else PacketType(context).name


def check_properties(props: Properties, context: int) -> None:
    """Validate identifiers, value types and ranges and repetition of `props` for `context`."""
    where = _context_name(context)
    if type(props) is not Properties or type(props.items) is not tuple:
        raise MalformedPacket(ReasonCode.MALFORMED_PACKET, f"{where} properties: not Properties")
    seen: set[int] = set()
    for index, item in enumerate(props.items):
        known = type(item) is tuple and len(item) == 2 and isinstance(item[0], int)
        if not known or isinstance(item[0], bool) or item[0] not in SPECS:
            raise MalformedPacket(
                ReasonCode.MALFORMED_PACKET, f"{where} property #{index}: unknown {item!r}")
        pid, value = item
        spec = SPECS[PropertyId(pid)]
        name = f"{where} property {PropertyId(pid).name} (0x{pid:02X})"
        if context not in spec.contexts:  # section 2.2.2.2: not valid for this packet
            raise MalformedPacket(ReasonCode.MALFORMED_PACKET, f"{name} is not allowed here")
        if pid in seen and context not in spec.repeatable_in:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, f"{name} included more than once")
        seen.add(pid)
        _check_value(name, spec, value)


def _check_value(name: str, spec: PropertySpec, value: object) -> None:
    kind = spec.type
    if kind is PropType.PAIR:
        if type(value) is not tuple or len(value) != 2:
            raise MalformedPacket(ReasonCode.MALFORMED_PACKET, f"{name} must be a (str, str) pair")
        wire.encode_utf8(value[0], name)
        wire.encode_utf8(value[1], name)
        return
    if kind is PropType.UTF8:
        wire.encode_utf8(value, name)
        return
    if kind is PropType.BINARY:
        wire.encode_binary(value, name)
        return
    high = {PropType.BYTE: 0xFF, PropType.U16: wire.U16_MAX, PropType.U32: wire.U32_MAX,
            PropType.VARINT: wire.VARINT_MAX}[kind]
    if type(value) is not int or not 0 <= value <= high:
        raise MalformedPacket(ReasonCode.MALFORMED_PACKET, f"{name} must be an int in 0..{high}")
    top = high if spec.high is None else spec.high
    if not spec.low <= value <= top:
        raise ProtocolError(
            ReasonCode.PROTOCOL_ERROR, f"{name} = {value}, expected {spec.low}..{top}")


def encode_properties(props: Properties) -> bytes:
    """The property section (length varint + properties) of an already checked `props`."""
    body = bytearray()
    for raw_pid, value in props.items:
        pid = PropertyId(raw_pid)  # a plain int identifier is welcome too
        body += wire.encode_varint(int(pid))
        kind = SPECS[pid].type
        if kind is PropType.BYTE:
            assert isinstance(value, int), (pid, value)
            body.append(value)
        elif kind is PropType.U16:
            body += wire.encode_uint(value, 2, pid.name)
        elif kind is PropType.U32:
            body += wire.encode_uint(value, 4, pid.name)
        elif kind is PropType.VARINT:
            assert isinstance(value, int), (pid, value)
            body += wire.encode_varint(value, pid.name)
        elif kind is PropType.UTF8:
            body += wire.encode_utf8(value, pid.name)
        elif kind is PropType.PAIR:
            assert isinstance(value, tuple), (pid, value)
            body += wire.encode_utf8(value[0], pid.name) + wire.encode_utf8(value[1], pid.name)
        else:
            body += wire.encode_binary(value, pid.name)
    out = wire.encode_varint(len(body), "property length") + bytes(body)
    assert len(out) > len(body)
    return out


def decode_properties(reader: wire.Reader, context: int) -> Properties:
    """Read a property section at `reader`'s position, then `check_properties` it."""
    start = reader.at()
    length = reader.varint("property length")
    if length > reader.left():
        raise reader.fail("property length", f"{length} bytes declared, {reader.left()} remain",
                          start)
    end = reader.pos + length
    items: list[tuple[PropertyId, PropertyValue]] = []
    while reader.pos < end:
        at = reader.at()
        pid = reader.varint("property identifier")
        if pid not in SPECS:  # section 2.2.2.2: an identifier not in the table is malformed
            raise reader.fail("property identifier", f"unknown identifier 0x{pid:02X}", at)
        items.append((PropertyId(pid), _read_value(reader, PropertyId(pid))))
        if reader.pos > end:
            raise reader.fail("properties", "a property runs past the property length", at)
    props = Properties(tuple(items))
    check_properties(props, context)
    assert reader.pos == end
    return props


def _read_value(reader: wire.Reader, pid: PropertyId) -> PropertyValue:
    kind = SPECS[pid].type
    field = pid.name
    if kind is PropType.BYTE:
        return reader.u8(field)
    if kind is PropType.U16:
        return reader.u16(field)
    if kind is PropType.U32:
        return reader.u32(field)
    if kind is PropType.VARINT:
        return reader.varint(field)
    if kind is PropType.UTF8:
        return reader.utf8(field)
    if kind is PropType.PAIR:
        return (reader.utf8(field + ".name"), reader.utf8(field + ".value"))
    return reader.binary(field)
