"""The MQTT packet codec: round trips in every version, hand-written spec vectors, fragmentation,
one bad packet per validation rule (asserting the reason code), the packet size limit, and fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from real.mqtt import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    VERSIONS,
    Auth,
    Connack,
    Connect,
    Decoder,
    Disconnect,
    InvalidPacket,
    MalformedPacket,
    MqttError,
    PacketType,
    Pingreq,
    Pingresp,
    Properties,
    PropertyId,
    ProtocolError,
    Puback,
    Publish,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    decode_all,
    encode,
)
from real.mqtt.codec import PACKET_SIZE_MAX
from tests.mqtt.strategies import PACKET_STRATEGIES, packet_types, packets

MALFORMED, PROTOCOL = 0x81, 0x82
CASES = [(v, kind) for v in VERSIONS for kind in packet_types(v)]


def frame(byte0: int, body: bytes) -> bytes:
    """A packet with a correct one-byte remaining length (bodies here are < 128 bytes)."""
    assert len(body) < 128
    return bytes([byte0, len(body)]) + body


def s(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


# ---------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(("version", "kind"), CASES, ids=[f"v{v}-{k.name}" for v, k in CASES])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_every_type_every_version(version: int, kind: PacketType, data) -> None:
    packet = data.draw(PACKET_STRATEGIES[kind](version))
    wire = encode(packet, version)
    assert wire[0] >> 4 == kind
    assert decode_all(wire, version) == [packet]
    if kind is PacketType.CONNECT:  # a server decoder learns the version from CONNECT
        decoder = Decoder()
        assert decoder.feed(wire) == [packet]
        assert decoder.version == version


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_stream_split_anywhere_gives_same_packets(version: int, data) -> None:
    stream = data.draw(st.lists(packets(version), min_size=1, max_size=4))
    first = data.draw(PACKET_STRATEGIES[PacketType.CONNECT](version))
    wire = encode(first, version) + b"".join(encode(p, version) for p in stream)
    expected = [first, *stream]
    bytewise = Decoder()
    assert [p for i in range(len(wire)) for p in bytewise.feed(wire[i:i + 1])] == expected
    assert bytewise.buffered() == 0
    cut = data.draw(st.integers(0, len(wire)))
    halves = Decoder()
    assert halves.feed(wire[:cut]) + halves.feed(wire[cut:]) == expected


def test_split_at_every_byte_boundary_of_a_v5_connect() -> None:
    will = Will("w/t", b"bye", 1, True, Properties.of((PropertyId.WILL_DELAY_INTERVAL, 5)))
    packet = Connect("client", MQTT_5, False, 30, "user", b"pw", will,
                     Properties.of((PropertyId.USER_PROPERTY, ("k", "v"))))
    wire = encode(packet, MQTT_5) + encode(Pingreq(), MQTT_5)
    for cut in range(len(wire) + 1):
        decoder = Decoder()
        got = decoder.feed(wire[:cut])
        got += decoder.feed(wire[cut:])
        assert got == [packet, Pingreq()], cut
        assert decoder.version == MQTT_5


# ------------------------------------------------------------------ known vectors (by hand)

UP = PropertyId.USER_PROPERTY
VECTORS = [
    # 3.1.1 minimal CONNECT: "MQTT" level 4, Clean Session, keep alive 60, empty client id.
    (MQTT_3_1_1, "100C 00044D515454 04 02 003C 0000", Connect("", 4, True, 60)),
    # 3.1 CONNECT: "MQIsdp" level 3, client id "a".
    (MQTT_3_1, "100F 00064D5149736470 03 02 003C 000161", Connect("a", 3, True, 60)),
    # 5.0 CONNECT with Session Expiry Interval 10 (property 0x11, four byte integer).
    (MQTT_5, "1013 00044D515454 05 02 003C 05 110000000A 000161",
     Connect("a", 5, True, 60, properties=Properties.of(
         (PropertyId.SESSION_EXPIRY_INTERVAL, 10)))),
    # 5.0 CONNECT, flags 0xEE: user, password, will retain, will QoS 1, will, clean start;
    # will properties: Payload Format Indicator 1.
    (MQTT_5, "101E 00044D515454 05 EE 000A 00 000163 020101 000174 00026869 000175 000170",
     Connect("c", 5, True, 10, "u", b"p", Will("t", b"hi", 1, True, Properties.of(
         (PropertyId.PAYLOAD_FORMAT_INDICATOR, 1))))),
    (MQTT_3_1_1, "2002 01 00", Connack(True, 0)),
    (MQTT_5, "2005 00 00 02 2401", Connack(False, 0, Properties.of((PropertyId.MAXIMUM_QOS, 1)))),
    # PUBLISH QoS 1, topic "a/b", packet id 10, payload "hi".
    (MQTT_3_1_1, "3209 0003612F62 000A 6869", Publish("a/b", b"hi", 1, packet_id=10)),
    # 5.0 PUBLISH QoS 1 with Topic Alias 5 and a User Property ("k", "v").
    (MQTT_5, "3214 0003612F62 000A 0A 230005 2600016B000176 6869",
     Publish("a/b", b"hi", 1, packet_id=10, properties=Properties.of(
         (PropertyId.TOPIC_ALIAS, 5), (UP, ("k", "v"))))),
    (MQTT_5, "4003 0001 10", Puback(1, ReasonCode.NO_MATCHING_SUBSCRIBERS)),
    (MQTT_3_1_1, "4002 0001", Puback(1)),
    (MQTT_3_1_1, "8208 0001 0003612F23 01", Subscribe(1, (Subscription("a/#", 1),))),
    # 5.0 SUBSCRIBE, Subscription Identifier 7, options 0x2E: QoS 2, No Local, RAP, RH 2.
    (MQTT_5, "8209 0001 02 0B07 000178 2E",
     Subscribe(1, (Subscription("x", 2, True, True, 2),),
               Properties.of((PropertyId.SUBSCRIPTION_IDENTIFIER, 7)))),
    (MQTT_3_1_1, "9003 0001 80", Suback(1, (0x80,))),
    (MQTT_3_1_1, "A205 0001 000178", Unsubscribe(1, ("x",))),
    (MQTT_3_1_1, "B002 0001", Unsuback(1)),
    (MQTT_5, "B004 0001 00 11", Unsuback(1, (0x11,))),
    (MQTT_3_1_1, "C000", Pingreq()),
    (MQTT_3_1_1, "D000", Pingresp()),
    (MQTT_3_1_1, "E000", Disconnect()),
    (MQTT_5, "E001 04", Disconnect(ReasonCode.DISCONNECT_WITH_WILL_MESSAGE)),
    (MQTT_5, "F001 18", Auth(ReasonCode.CONTINUE_AUTHENTICATION)),
    (MQTT_5, "F000", Auth()),
]


@pytest.mark.parametrize(("version", "hexa", "packet"), VECTORS)
def test_known_vectors(version: int, hexa: str, packet) -> None:
    wire = bytes.fromhex(hexa)
    assert decode_all(wire, version) == [packet]
    assert encode(packet, version) == wire


@pytest.mark.parametrize(
    ("hexa", "packet"),
    [
        ("4004 0001 00 00", Puback(1)),  # reason and empty properties spelled out
        ("E002 00 00", Disconnect()),
        ("F002 18 00", Auth(0x18)),
        ("3006 0000 03 230001", Publish("", properties=Properties.of(
            (PropertyId.TOPIC_ALIAS, 1)))),  # empty topic is fine with a Topic Alias
    ],
)
def test_v5_long_forms_decode(hexa: str, packet) -> None:
    assert decode_all(bytes.fromhex(hexa), MQTT_5) == [packet]


# ------------------------------------------------------------------------ validation rules

CONNECT4 = "00044D515454 04"
BAD = [
    # (name, version, bytes hex, error class, reason code)
    ("packet type 0 reserved", 4, "0000", MalformedPacket, MALFORMED),
    ("AUTH type 15 in 3.1.1", 4, "F000", MalformedPacket, MALFORMED),
    ("PUBACK flags MQTT-2.1.3-1", 4, "42020001", MalformedPacket, MALFORMED),
    ("PUBREL flags MQTT-3.6.1-1", 4, "60020001", MalformedPacket, MALFORMED),
    ("SUBSCRIBE flags MQTT-3.8.1-1", 4, "800600010001 6100", MalformedPacket, MALFORMED),
    ("UNSUBSCRIBE flags MQTT-3.10.1-1", 4, "A00500010001 61", MalformedPacket, MALFORMED),
    ("PINGREQ flags", 4, "C100", MalformedPacket, MALFORMED),
    ("remaining length 5 bytes", 4, "30FFFFFFFF01", MalformedPacket, MALFORMED),
    ("remaining length not minimal", 4, "C08000", MalformedPacket, MALFORMED),
    ("PUBLISH QoS 3 MQTT-3.3.1-4", 4, "3605 0003612F62", MalformedPacket, MALFORMED),
    ("PUBLISH QoS 0 DUP MQTT-3.3.1-2", 4, "3805 0003612F62", ProtocolError, PROTOCOL),
    ("PUBLISH packet id 0", 4, "3207 0003612F62 0000", ProtocolError, PROTOCOL),
    ("PUBACK packet id 0", 4, "4002 0000", ProtocolError, PROTOCOL),
    ("SUBSCRIBE packet id 0", 4, "8206 0000 000161 00", ProtocolError, PROTOCOL),
    ("UNSUBACK packet id 0", 5, "B003 0000 00", ProtocolError, PROTOCOL),
    ("topic wildcard # MQTT-3.3.2-2", 4, "3005 0003612F23", ProtocolError, 0x90),
    ("topic wildcard + MQTT-3.3.2-2", 5, "3006 0003612B62 00", ProtocolError, 0x90),
    ("empty topic 3.1.1", 4, "3002 0000", ProtocolError, 0x90),
    ("empty topic v5 without alias", 5, "3003 0000 00", ProtocolError, 0x90),
    ("topic invalid UTF-8 MQTT-1.5.4-1", 4, "3005 000361FF62", MalformedPacket, MALFORMED),
    ("topic surrogate MQTT-1.5.4-1", 4, "3005 0003EDA080", MalformedPacket, MALFORMED),
    ("topic U+0000 MQTT-1.5.4-2", 4, "3005 0003610062", MalformedPacket, MALFORMED),
    ("string longer than packet", 4, "3003 000561", MalformedPacket, MALFORMED),
    ("SUBSCRIBE no filter MQTT-3.8.3-2", 4, "8202 0001", ProtocolError, PROTOCOL),
    ("SUBSCRIBE v5 no filter", 5, "8203 0001 00", ProtocolError, PROTOCOL),
    ("SUBSCRIBE empty filter", 4, "8205 0001 0000 00", ProtocolError, 0x8F),
    ("SUBSCRIBE QoS 3 in 3.1.1", 4, "8206 0001 000161 03", MalformedPacket, MALFORMED),
    ("SUBSCRIBE reserved bits 3.1.1", 4, "8206 0001 000161 04", MalformedPacket, MALFORMED),
    ("SUBSCRIBE reserved bits MQTT-3.8.3-5", 5, "8207 0001 00 000161 40", MalformedPacket,
     MALFORMED),
    ("SUBSCRIBE v5 QoS 3", 5, "8207 0001 00 000161 03", ProtocolError, PROTOCOL),
    ("SUBSCRIBE retain handling 3", 5, "8207 0001 00 000161 30", ProtocolError, PROTOCOL),
    # "$share/g/t" (10 bytes) with No Local
    ("SUBSCRIBE no local shared MQTT-3.8.3-4", 5, "8210 0001 00 000A 2473686172652F672F74 04",
     ProtocolError, PROTOCOL),
    ("UNSUBSCRIBE no filter MQTT-3.10.3-2", 4, "A202 0001", ProtocolError, PROTOCOL),
    ("SUBACK bad return code 3.1.1", 4, "9003 0001 03", ProtocolError, PROTOCOL),
    ("SUBACK 0x80 in 3.1", 3, "9003 0001 80", ProtocolError, PROTOCOL),
    ("PUBACK bad reason v5", 5, "4003 0001 05", ProtocolError, PROTOCOL),
    ("PUBACK trailing byte 3.1.1", 4, "4003 0001 00", MalformedPacket, MALFORMED),
    ("PINGREQ trailing byte", 4, "C001 00", MalformedPacket, MALFORMED),
    ("DISCONNECT body in 3.1.1", 4, "E001 00", MalformedPacket, MALFORMED),
    ("CONNACK reserved bits MQTT-3.2.2-1", 4, "2002 0200", MalformedPacket, MALFORMED),
    ("CONNACK session present refused", 4, "2002 0105", ProtocolError, PROTOCOL),
    ("CONNACK return code 6", 4, "2002 0006", ProtocolError, PROTOCOL),
    ("CONNACK v5 bad reason", 5, "2003 0001 00", ProtocolError, PROTOCOL),
]


@pytest.mark.parametrize(("name", "version", "hexa", "error", "code"), BAD,
                         ids=[b[0] for b in BAD])
def test_bad_packet_is_rejected_with_reason_code(name, version, hexa, error, code) -> None:
    wire = bytes.fromhex(hexa)
    with pytest.raises(error) as info:
        Decoder(version, max_packet_size=PACKET_SIZE_MAX).feed(wire)
    assert info.value.reason_code == code
    # Byte by byte the same rule fires (an over-long length may first trip the size limit).
    with pytest.raises(MqttError) as info:
        decoder = Decoder(version, max_packet_size=PACKET_SIZE_MAX)
        for i in range(len(wire)):
            decoder.feed(wire[i:i + 1])
    assert info.value.reason_code in (code, 0x95)


def connect_bytes(flags: int, payload_hex: str = "0000", level: int = 4,
                  name: str = "MQTT") -> bytes:
    body = s(name) + bytes([level, flags]) + b"\x00\x3c" + bytes.fromhex(payload_hex)
    return frame(0x10, body)


@pytest.mark.parametrize(
    ("name", "wire", "error", "code"),
    [
        ("reserved flag MQTT-3.1.2-3", connect_bytes(0x03), MalformedPacket, MALFORMED),
        ("will QoS without will MQTT-3.1.2-11", connect_bytes(0x0A), MalformedPacket, MALFORMED),
        ("will retain without will MQTT-3.1.2-13", connect_bytes(0x22), MalformedPacket,
         MALFORMED),
        ("will QoS 3 MQTT-3.1.2-12", connect_bytes(0x1E, "0000 000174 0000"), MalformedPacket,
         MALFORMED),
        ("password without user MQTT-3.1.2-22", connect_bytes(0x42, "0000 000170"),
         ProtocolError, PROTOCOL),
        ("password without user in 3.1", connect_bytes(0x42, "0000 000170", 3, "MQIsdp"),
         ProtocolError, PROTOCOL),
        ("level 6 MQTT-3.1.2-2", connect_bytes(0x02, level=6), ProtocolError, 0x84),
        ("MQIsdp with level 4", connect_bytes(0x02, level=4, name="MQIsdp"), ProtocolError, 0x84),
        ("MQTT with level 3", connect_bytes(0x02, level=3), ProtocolError, 0x84),
        ("bad protocol name MQTT-3.1.2-1", connect_bytes(0x02, name="MQTX"), ProtocolError, 0x84),
        ("client id U+0000", connect_bytes(0x02, "000100"), MalformedPacket, MALFORMED),
        ("truncated payload", connect_bytes(0x02, "0005 61"), MalformedPacket, MALFORMED),
    ],
)
def test_bad_connect(name: str, wire: bytes, error: type, code: int) -> None:
    with pytest.raises(error) as info:
        Decoder().feed(wire)
    assert info.value.reason_code == code
    assert "CONNECT" in str(info.value)


def test_password_without_user_is_fine_in_v5() -> None:
    wire = connect_bytes(0x42, "00 0000 000170", level=5)
    assert Decoder().feed(wire) == [Connect("", 5, True, 60, None, b"p")]


def test_connect_first_and_only_once() -> None:
    with pytest.raises(ProtocolError) as info:
        Decoder().feed(bytes.fromhex("C000"))
    assert info.value.reason_code == PROTOCOL and "MQTT-3.1.0-1" in str(info.value)
    decoder = Decoder()
    hello = encode(Connect("a"), MQTT_3_1_1)
    with pytest.raises(ProtocolError) as info:
        decoder.feed(hello + hello)
    assert "MQTT-3.1.0-2" in str(info.value)
    assert info.value.decoded == (Connect("a"),)  # what came before the bad packet
    with pytest.raises(ProtocolError):  # a failed decoder stays failed
        decoder.feed(b"")


def test_connect_version_must_match_a_given_version() -> None:
    with pytest.raises(ProtocolError) as info:
        Decoder(MQTT_5).feed(encode(Connect("a"), MQTT_3_1_1))
    assert info.value.reason_code == 0x84


def test_error_names_field_and_byte_offset() -> None:
    with pytest.raises(MalformedPacket) as info:
        Decoder(MQTT_3_1_1).feed(bytes.fromhex("3005 000361FF62"))
    assert "PUBLISH.topic at byte 5" in str(info.value)
    assert info.value.detail.startswith("PUBLISH.topic")


# ------------------------------------------------------------------------- packet size limit


def test_max_packet_size_rejects_before_body_arrives() -> None:
    decoder = Decoder(MQTT_3_1_1, max_packet_size=64)
    with pytest.raises(ProtocolError) as info:
        decoder.feed(bytes.fromhex("30FF01"))  # remaining length 255: no body byte sent yet
    assert info.value.reason_code == ReasonCode.PACKET_TOO_LARGE
    assert decoder.buffered() == 0


def test_max_packet_size_rejects_mid_length_field() -> None:
    decoder = Decoder(MQTT_3_1_1, max_packet_size=1000)
    decoder.feed(b"\x30")
    decoder.feed(b"\x80")  # at least 128 + 3 bytes: still fine
    with pytest.raises(ProtocolError) as info:
        decoder.feed(b"\x80")  # at least 16384 + 4 bytes, before the length is complete
    assert info.value.reason_code == 0x95


@pytest.mark.parametrize("version", VERSIONS)
def test_max_packet_size_boundary(version: int) -> None:
    limit = 40
    overhead = 2 + 3 + (1 if version >= MQTT_5 else 0)  # fixed header, topic "t", properties
    fits = encode(Publish("t", b"x" * (limit - overhead)), version)
    assert len(fits) == limit
    assert Decoder(version, max_packet_size=limit).feed(fits) == decode_all(fits, version)
    over = encode(Publish("t", b"x" * limit), version)
    with pytest.raises(ProtocolError) as info:
        Decoder(version, max_packet_size=limit).feed(over[:2])
    assert info.value.reason_code == 0x95


def test_decoder_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="version"):
        Decoder(version=6)
    with pytest.raises(ValueError, match="max_packet_size"):
        Decoder(max_packet_size=1)


# ---------------------------------------------------------------------------------- encoding


@pytest.mark.parametrize(
    ("packet", "version", "code"),
    [
        (Publish("t", qos=0, packet_id=1), 4, PROTOCOL),
        (Publish("t", qos=1), 4, PROTOCOL),
        (Publish("t", qos=3, packet_id=1), 4, MALFORMED),
        (Publish("a/+"), 4, 0x90),
        (Publish("t\ud800"), 4, MALFORMED),
        (Publish("t", properties=Properties.of((PropertyId.TOPIC_ALIAS, 1))), 4, MALFORMED),
        (Connect("a", 4), 5, 0x84),
        (Connect("\x00", 4), 4, MALFORMED),
        (Connect("a", 4, password=b"p"), 4, PROTOCOL),
        (Connect("a", 4, will=Will("t", b"", qos=3)), 4, MALFORMED),
        (Auth(), 4, MALFORMED),
        (Disconnect(0x04), 4, PROTOCOL),
        (Suback(1, ()), 4, PROTOCOL),
        (Subscribe(1, ()), 4, PROTOCOL),
        (Subscribe(1, (Subscription("t", no_local=True),)), 4, MALFORMED),
        (Unsubscribe(1, ()), 4, PROTOCOL),
        (Unsuback(1, (0,)), 4, MALFORMED),
        (Unsuback(1, ()), 5, PROTOCOL),
        (Connack(False, 0x10), 5, PROTOCOL),
        (Pingreq(), 6, 0x84),
    ],
)
def test_encode_rejects_invalid_packets(packet, version: int, code: int) -> None:
    with pytest.raises(InvalidPacket) as info:
        encode(packet, version)
    assert info.value.reason_code == code
    assert isinstance(info.value, ValueError)


def test_encode_accepts_reason_code_members() -> None:
    wire = encode(Puback(7, ReasonCode.QUOTA_EXCEEDED), MQTT_5)
    assert wire == bytes.fromhex("4003 0007 97")
    assert decode_all(wire, MQTT_5) == [Puback(7, 0x97)]


# ---------------------------------------------------------------------------------------- fuzz


def _decode_or_reject(wire: bytes, version: int | None) -> None:
    try:
        Decoder(version, max_packet_size=4096).feed(wire)
    except (MalformedPacket, ProtocolError) as exc:
        assert 0x80 <= exc.reason_code <= 0xFF
        assert exc.detail


@settings(max_examples=400, deadline=None)
@given(wire=st.binary(max_size=80), version=st.sampled_from([None, *VERSIONS]))
def test_fuzz_random_bytes(wire: bytes, version: int | None) -> None:
    _decode_or_reject(wire, version)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), version=st.sampled_from(VERSIONS))
def test_fuzz_mutated_packets(data, version: int) -> None:
    packet = data.draw(packets(version, with_connect=True))
    wire = bytearray(encode(packet, version))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(wire) - 1))
        how = data.draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        if how == "flip":
            wire[at] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "set":
            wire[at] = data.draw(st.integers(0, 255))
        elif how == "insert":
            wire.insert(at, data.draw(st.integers(0, 255)))
        elif len(wire) > 1:
            del wire[at]
    _decode_or_reject(bytes(wire), version)
    prefix = encode(Connect("x", version), version)
    _decode_or_reject(prefix + bytes(wire), None)
