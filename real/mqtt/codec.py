"""Sans-I/O MQTT packet codec for MQTT 3.1 ("MQIsdp", level 3), 3.1.1 and 5.0 (levels 4, 5).

Every packet is a fixed header then a body (section 2.1):

    byte 1     packet type (bits 7-4) | flags (bits 3-0): PUBLISH DUP|QoS(2)|RETAIN,
               PUBREL/SUBSCRIBE/UNSUBSCRIBE 0b0010, every other type 0b0000 (MQTT-2.1.3-1)
    bytes 2..  Remaining Length: Variable Byte Integer of 1..4 bytes = length of the body

`encode(packet, version)` checks the packet (`validate.check_packet`) and returns its bytes.
`Decoder.feed(data)` takes bytes as they arrive, in any fragmentation, and returns the complete
packets. The maximum packet size (fixed header included, as MQTT 5 counts it) is enforced while
the fixed header is read, before any body byte is buffered. A decoder built with `version=None`
(a server) requires CONNECT first (MQTT-3.1.0-1), learns the version from it, and treats a second
CONNECT as a Protocol Error (MQTT-3.1.0-2). Errors are `MalformedPacket` / `ProtocolError`
carrying the MQTT 5 reason code to send; the decoder then stays failed and re-raises.
"""

from __future__ import annotations

from collections.abc import Callable

from real.mqtt import wire
from real.mqtt.errors import InvalidPacket, MalformedPacket, MqttError, ProtocolError
from real.mqtt.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    VERSIONS,
    Ack,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from real.mqtt.properties import (
    NO_PROPERTIES,
    WILL,
    PacketType,
    Properties,
    decode_properties,
    encode_properties,
)
from real.mqtt.reasons import ReasonCode
from real.mqtt.validate import check_packet

PROTOCOL_NAMES = {MQTT_3_1: "MQIsdp", MQTT_3_1_1: "MQTT", MQTT_5: "MQTT"}
PACKET_SIZE_MAX = 1 + wire.VARINT_BYTES_MAX + wire.VARINT_MAX  # the largest packet MQTT allows
DEFAULT_MAX_PACKET_SIZE = 1 << 20
_MALFORMED = ReasonCode.MALFORMED_PACKET
_PROTOCOL = ReasonCode.PROTOCOL_ERROR
_FLAGS_0010 = frozenset({PacketType.PUBREL, PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE})

# ------------------------------------------------------------------------------------ encoding


def encode(packet: Packet, version: int) -> bytes:
    """The wire bytes of `packet` in protocol `version` (3, 4 or 5); `InvalidPacket` if invalid."""
    try:
        check_packet(packet, version)
        body = _ENCODERS[type(packet)](packet, version)
    except InvalidPacket:
        raise
    except MqttError as exc:
        raise InvalidPacket(exc.reason_code, exc.detail) from exc
    kind = type(packet).TYPE
    flags = 0b0010 if kind in _FLAGS_0010 else 0
    if type(packet) is Publish:
        flags = packet.dup << 3 | packet.qos << 1 | packet.retain
    out = bytes([kind << 4 | flags]) + wire.encode_varint(len(body), "remaining length") + body
    assert out[0] >> 4 == kind
    assert len(out) <= PACKET_SIZE_MAX
    return out


def _props(props: Properties, version: int) -> bytes:
    return encode_properties(props) if version >= MQTT_5 else b""


def _enc_connect(p: Connect, version: int) -> bytes:
    will = p.will
    flags = (p.username is not None) << 7 | (p.password is not None) << 6 | p.clean_start << 1
    if will is not None:
        flags |= will.retain << 5 | will.qos << 3 | 1 << 2
    out = bytearray(wire.encode_utf8(PROTOCOL_NAMES[version], "CONNECT.protocol_name"))
    out += bytes([version, flags]) + p.keep_alive.to_bytes(2, "big") + _props(p.properties, version)
    out += wire.encode_utf8(p.client_id, "CONNECT.client_id")
    if will is not None:
        out += _props(will.properties, version)
        out += wire.encode_utf8(will.topic, "CONNECT.will.topic")
        out += wire.encode_binary(will.payload, "CONNECT.will.payload")
    if p.username is not None:
        out += wire.encode_utf8(p.username, "CONNECT.username")
    if p.password is not None:
        out += wire.encode_binary(p.password, "CONNECT.password")
    return bytes(out)


def _enc_connack(p: Connack, version: int) -> bytes:
    return bytes([int(p.session_present), p.reason_code]) + _props(p.properties, version)


def _enc_publish(p: Publish, version: int) -> bytes:
    out = wire.encode_utf8(p.topic, "PUBLISH.topic")
    if p.qos:
        assert p.packet_id is not None, p  # check_packet: MQTT-2.2.1-3
        out += p.packet_id.to_bytes(2, "big")
    return out + _props(p.properties, version) + p.payload


def _reason_and_props(code: int, props: Properties, version: int) -> bytes:
    """The optional tail of MQTT 5 acks, DISCONNECT and AUTH: omitted when it says nothing."""
    if version < MQTT_5 or (code == 0 and not len(props)):
        return b""
    return bytes([code]) + (encode_properties(props) if len(props) else b"")


def _enc_ack(p: Puback | Pubrec | Pubrel | Pubcomp, version: int) -> bytes:
    return p.packet_id.to_bytes(2, "big") + _reason_and_props(p.reason_code, p.properties, version)


def _enc_subscribe(p: Subscribe, version: int) -> bytes:
    out = bytearray(p.packet_id.to_bytes(2, "big") + _props(p.properties, version))
    for index, sub in enumerate(p.subscriptions):
        out += wire.encode_utf8(sub.topic_filter, f"SUBSCRIBE.subscriptions[{index}].topic_filter")
        out.append(sub.qos | sub.no_local << 2 | sub.retain_as_published << 3
                   | sub.retain_handling << 4)
    return bytes(out)


def _enc_suback(p: Suback, version: int) -> bytes:
    return p.packet_id.to_bytes(2, "big") + _props(p.properties, version) + bytes(p.reason_codes)


def _enc_unsubscribe(p: Unsubscribe, version: int) -> bytes:
    out = bytearray(p.packet_id.to_bytes(2, "big") + _props(p.properties, version))
    for index, topic_filter in enumerate(p.topic_filters):
        out += wire.encode_utf8(topic_filter, f"UNSUBSCRIBE.topic_filters[{index}]")
    return bytes(out)


def _enc_unsuback(p: Unsuback, version: int) -> bytes:
    return p.packet_id.to_bytes(2, "big") + _props(p.properties, version) + bytes(p.reason_codes)


def _enc_empty(p: Pingreq | Pingresp, version: int) -> bytes:
    return b""


def _enc_disconnect(p: Disconnect | Auth, version: int) -> bytes:
    return _reason_and_props(p.reason_code, p.properties, version)


_ENCODERS: dict[type, Callable[..., bytes]] = {
    Connect: _enc_connect, Connack: _enc_connack, Publish: _enc_publish, Puback: _enc_ack,
    Pubrec: _enc_ack, Pubrel: _enc_ack, Pubcomp: _enc_ack, Subscribe: _enc_subscribe,
    Suback: _enc_suback, Unsubscribe: _enc_unsubscribe, Unsuback: _enc_unsuback,
    Pingreq: _enc_empty, Pingresp: _enc_empty, Disconnect: _enc_disconnect, Auth: _enc_disconnect,
}

# ------------------------------------------------------------------------------------ decoding


class Decoder:
    """Incremental decoder: `feed(bytes) -> list[Packet]`. Holds at most one partial packet."""

    def __init__(self, version: int | None = None,
                 max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        if version is not None and version not in VERSIONS:
            raise ValueError(f"version must be None or one of {VERSIONS}, got {version!r}")
        if type(max_packet_size) is not int or not 2 <= max_packet_size <= PACKET_SIZE_MAX:
            raise ValueError(f"max_packet_size must be in 2..{PACKET_SIZE_MAX}, "
                             f"got {max_packet_size!r}")
        self._version = version
        self._version_from_connect = False
        self.max_packet_size = max_packet_size
        self._buf = bytearray()
        self._error: MqttError | None = None

    @property
    def version(self) -> int | None:
        """The protocol version: given, or learned from CONNECT; None before that."""
        return self._version

    def buffered(self) -> int:
        """Bytes held of a packet not yet complete (never more than `max_packet_size`)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Packet]:
        """Append `data`; return every packet it completes, in order.

        On an error the packets completed before the bad one are in the error's `decoded`.
        """
        if self._error is not None:
            raise type(self._error)(self._error.reason_code,
                                    f"decoder failed earlier: {self._error.detail}")
        self._buf += data
        out: list[Packet] = []
        try:
            while True:
                packet = self._next()
                if packet is None:
                    break
                out.append(packet)
        except MqttError as exc:
            exc.decoded = tuple(out)
            self._error = exc
            self._buf.clear()
            raise
        assert len(self._buf) <= self.max_packet_size
        return out

    def _next(self) -> Packet | None:
        header = self._read_fixed_header()
        if header is None:
            return None
        byte0, header_len, remaining = header
        total = header_len + remaining
        if len(self._buf) < total:
            return None
        body = bytes(self._buf[header_len:total])
        del self._buf[:total]
        packet = self._decode(byte0, body, header_len)
        assert type(packet).TYPE == byte0 >> 4
        return packet

    def _read_fixed_header(self) -> tuple[int, int, int] | None:
        buf = self._buf
        if not buf:
            return None
        byte0 = buf[0]
        self._check_first_byte(byte0)
        value = 0
        for index in range(1, 1 + wire.VARINT_BYTES_MAX):
            if index >= len(buf):
                # Incomplete: `index - 1` continuation bytes so far, so the length is at least
                # value + 128**(index - 1) (a later byte is non-zero, MQTT-1.5.5-1).
                least = value + (1 << 7 * (index - 1)) if index > 1 else 0
                self._check_size(index + 1 + least, partial=True)
                return None
            byte = buf[index]
            value |= (byte & 0x7F) << 7 * (index - 1)
            if not byte & 0x80:
                if byte == 0 and index > 1:  # MQTT-1.5.5-1: minimal encoding
                    raise MalformedPacket(_MALFORMED, "fixed header remaining length at byte 1: "
                                          "variable byte integer is not minimally encoded")
                self._check_size(index + 1 + value, partial=False)
                return byte0, index + 1, value
        raise MalformedPacket(_MALFORMED, "fixed header remaining length at byte 1: "
                              "variable byte integer longer than 4 bytes")

    def _check_size(self, size: int, partial: bool) -> None:
        if size > self.max_packet_size:
            what = "at least" if partial else "exactly"
            raise ProtocolError(ReasonCode.PACKET_TOO_LARGE, f"packet is {what} {size} bytes, "
                                f"maximum packet size is {self.max_packet_size}")

    def _check_first_byte(self, byte0: int) -> None:
        kind, flags = byte0 >> 4, byte0 & 0x0F
        if kind == 0:
            raise MalformedPacket(_MALFORMED, "fixed header at byte 0: packet type 0 is reserved")
        if self._version is None and kind != PacketType.CONNECT:  # MQTT-3.1.0-1
            raise ProtocolError(_PROTOCOL, f"fixed header at byte 0: {PacketType(kind).name} "
                                "before CONNECT (MQTT-3.1.0-1)")
        if kind == PacketType.AUTH and self._version is not None and self._version < MQTT_5:
            raise MalformedPacket(_MALFORMED, "fixed header at byte 0: packet type 15 is "
                                  f"reserved in protocol level {self._version}")
        name = PacketType(kind).name
        if kind == PacketType.PUBLISH:
            if flags & 0b0110 == 0b0110:  # MQTT-3.3.1-4
                raise MalformedPacket(_MALFORMED, "PUBLISH fixed header at byte 0: QoS 3")
            return
        expected = 0b0010 if kind in _FLAGS_0010 else 0
        if flags != expected:  # MQTT-2.1.3-1; MQTT-3.6.1-1, MQTT-3.8.1-1, MQTT-3.10.1-1
            raise MalformedPacket(_MALFORMED, f"{name} fixed header at byte 0: flags "
                                  f"0b{flags:04b}, expected 0b{expected:04b} (MQTT-2.1.3-1)")

    def _decode(self, byte0: int, body: bytes, base: int) -> Packet:
        kind = PacketType(byte0 >> 4)
        reader = wire.Reader(body, base, kind.name)
        if kind is PacketType.CONNECT:
            connect = _decode_connect(reader)
            self._learn_version(connect)
            packet: Packet = connect
        else:
            assert self._version is not None
            packet = _DECODERS[kind](byte0 & 0x0F, reader, self._version)
        reader.expect_end()
        assert self._version is not None
        check_packet(packet, self._version)
        return packet

    def _learn_version(self, packet: Connect) -> None:
        if self._version_from_connect:  # MQTT-3.1.0-2
            raise ProtocolError(_PROTOCOL, "a second CONNECT on the connection (MQTT-3.1.0-2)")
        if self._version is None:
            self._version = packet.protocol_version
            self._version_from_connect = True
        elif self._version != packet.protocol_version:
            raise ProtocolError(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
                                f"CONNECT protocol level {packet.protocol_version}, "
                                f"this decoder speaks {self._version}")


def _decode_connect(r: wire.Reader) -> Connect:
    at = r.at()
    name = r.utf8("protocol_name")
    level = r.u8("protocol_level")
    if name not in ("MQTT", "MQIsdp"):  # MQTT-3.1.2-1
        raise ProtocolError(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
                            f"CONNECT.protocol_name at byte {at}: {name!r}, expected 'MQTT'")
    if level not in VERSIONS or PROTOCOL_NAMES[level] != name:  # MQTT-3.1.2-2
        raise ProtocolError(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
                            f"CONNECT.protocol_level at byte {r.at() - 1}: {name!r} level {level}")
    at = r.at()
    flags = r.u8("flags")
    if flags & 0x01:  # MQTT-3.1.2-3
        raise r.fail("flags", "reserved bit 0 is set (MQTT-3.1.2-3)", at)
    has_will, will_qos, will_retain = bool(flags & 0x04), flags >> 3 & 3, bool(flags & 0x20)
    if not has_will and (will_qos or will_retain):  # MQTT-3.1.2-11, MQTT-3.1.2-13
        raise r.fail("flags", "Will QoS/Retain set without the Will Flag (MQTT-3.1.2-11/13)", at)
    if will_qos == 3:  # MQTT-3.1.2-12
        raise r.fail("flags", "Will QoS 3 (MQTT-3.1.2-12)", at)
    if level < MQTT_5 and flags & 0x40 and not flags & 0x80:  # MQTT-3.1.2-22 (3.1.1)
        raise ProtocolError(_PROTOCOL, f"CONNECT.flags at byte {at}: Password Flag without "
                            "User Name Flag (MQTT-3.1.2-22)")
    keep_alive = r.u16("keep_alive")
    props = decode_properties(r, PacketType.CONNECT) if level >= MQTT_5 else NO_PROPERTIES
    client_id = r.utf8("client_id")
    will = None
    if has_will:
        will_props = decode_properties(r, WILL) if level >= MQTT_5 else NO_PROPERTIES
        topic = r.utf8("will.topic")
        will = Will(topic, r.binary("will.payload"), will_qos, will_retain, will_props)
    username = r.utf8("username") if flags & 0x80 else None
    password = r.binary("password") if flags & 0x40 else None
    return Connect(client_id, level, bool(flags & 0x02), keep_alive, username, password, will,
                   props)


def _decode_connack(flags: int, r: wire.Reader, version: int) -> Connack:
    at = r.at()
    ack_flags = r.u8("acknowledge_flags")
    if version >= MQTT_3_1_1 and ack_flags & 0xFE:  # MQTT-3.2.2-1: bits 7-1 reserved
        raise r.fail("acknowledge_flags", f"reserved bits set in 0x{ack_flags:02X}", at)
    session_present = version >= MQTT_3_1_1 and bool(ack_flags & 1)  # 3.1: byte unused
    code = r.u8("reason_code")
    props = decode_properties(r, PacketType.CONNACK) if version >= MQTT_5 else NO_PROPERTIES
    return Connack(session_present, code, props)


def _decode_publish(flags: int, r: wire.Reader, version: int) -> Publish:
    qos = flags >> 1 & 3
    topic = r.utf8("topic")
    packet_id = r.u16("packet_id") if qos else None
    props = decode_properties(r, PacketType.PUBLISH) if version >= MQTT_5 else NO_PROPERTIES
    payload = r.take(r.left(), "payload")
    return Publish(topic, payload, qos, bool(flags & 1), bool(flags & 8), packet_id, props)


def _ack_decoder(cls: type[Ack]) -> Callable[[int, wire.Reader, int], Packet]:
    def decode_ack(flags: int, r: wire.Reader, version: int) -> Packet:
        packet_id = r.u16("packet_id")
        code, props = _decode_reason_and_props(r, version, cls.TYPE)
        return cls(packet_id, code, props)

    return decode_ack


def _decode_reason_and_props(r: wire.Reader, version: int,
                             kind: PacketType) -> tuple[int, Properties]:
    """MQTT 5: no byte left means Success, one byte means no properties (e.g. 3.4.2.1)."""
    if version < MQTT_5 or not r.left():
        return 0, NO_PROPERTIES
    code = r.u8("reason_code")
    return code, decode_properties(r, kind) if r.left() else NO_PROPERTIES


def _decode_subscribe(flags: int, r: wire.Reader, version: int) -> Subscribe:
    packet_id = r.u16("packet_id")
    props = decode_properties(r, PacketType.SUBSCRIBE) if version >= MQTT_5 else NO_PROPERTIES
    subs: list[Subscription] = []
    while r.left():
        index = len(subs)
        topic_filter = r.utf8(f"subscriptions[{index}].topic_filter")
        at = r.at()
        options = r.u8(f"subscriptions[{index}].options")
        reserved = 0xC0 if version >= MQTT_5 else 0xFC
        if options & reserved:  # MQTT-3.8.3-5 (3.1.1: MQTT-3-8.3-4)
            raise r.fail(f"subscriptions[{index}].options", f"reserved bits in 0x{options:02X}",
                         at)
        if options & 3 == 3 and version >= MQTT_5:  # 3.8.3.1: Maximum QoS 3 is a Protocol Error
            raise ProtocolError(_PROTOCOL, f"SUBSCRIBE.subscriptions[{index}].options at byte "
                                f"{at}: Maximum QoS 3")
        subs.append(Subscription(topic_filter, options & 3, bool(options & 4),
                                 bool(options & 8), options >> 4 & 3))
    return Subscribe(packet_id, tuple(subs), props)


def _decode_suback(flags: int, r: wire.Reader, version: int) -> Suback:
    packet_id = r.u16("packet_id")
    props = decode_properties(r, PacketType.SUBACK) if version >= MQTT_5 else NO_PROPERTIES
    return Suback(packet_id, tuple(r.take(r.left(), "reason_codes")), props)


def _decode_unsubscribe(flags: int, r: wire.Reader, version: int) -> Unsubscribe:
    packet_id = r.u16("packet_id")
    props = decode_properties(r, PacketType.UNSUBSCRIBE) if version >= MQTT_5 else NO_PROPERTIES
    filters: list[str] = []
    while r.left():
        filters.append(r.utf8(f"topic_filters[{len(filters)}]"))
    return Unsubscribe(packet_id, tuple(filters), props)


def _decode_unsuback(flags: int, r: wire.Reader, version: int) -> Unsuback:
    packet_id = r.u16("packet_id")
    if version < MQTT_5:
        return Unsuback(packet_id)
    props = decode_properties(r, PacketType.UNSUBACK)
    return Unsuback(packet_id, tuple(r.take(r.left(), "reason_codes")), props)


def _decode_pingreq(flags: int, r: wire.Reader, version: int) -> Pingreq:
    return Pingreq()


def _decode_pingresp(flags: int, r: wire.Reader, version: int) -> Pingresp:
    return Pingresp()


def _decode_disconnect(flags: int, r: wire.Reader, version: int) -> Disconnect:
    return Disconnect(*_decode_reason_and_props(r, version, PacketType.DISCONNECT))


def _decode_auth(flags: int, r: wire.Reader, version: int) -> Auth:
    return Auth(*_decode_reason_and_props(r, version, PacketType.AUTH))


_DECODERS: dict[PacketType, Callable[[int, wire.Reader, int], Packet]] = {
    PacketType.CONNACK: _decode_connack, PacketType.PUBLISH: _decode_publish,
    PacketType.PUBACK: _ack_decoder(Puback), PacketType.PUBREC: _ack_decoder(Pubrec),
    PacketType.PUBREL: _ack_decoder(Pubrel), PacketType.PUBCOMP: _ack_decoder(Pubcomp),
    PacketType.SUBSCRIBE: _decode_subscribe, PacketType.SUBACK: _decode_suback,
    PacketType.UNSUBSCRIBE: _decode_unsubscribe, PacketType.UNSUBACK: _decode_unsuback,
    PacketType.PINGREQ: _decode_pingreq, PacketType.PINGRESP: _decode_pingresp,
    PacketType.DISCONNECT: _decode_disconnect, PacketType.AUTH: _decode_auth,
}
assert len(_DECODERS) == 14  # CONNECT is decoded apart: it sets the version


def decode_all(data: bytes, version: int | None = None,
               max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> list[Packet]:
    """Decode `data` that must hold whole packets only; trailing partial bytes are Malformed."""
    decoder = Decoder(version, max_packet_size)
    packets = decoder.feed(data)
    if decoder.buffered():
        raise MalformedPacket(_MALFORMED, f"{decoder.buffered()} bytes of an incomplete packet")
    return packets
