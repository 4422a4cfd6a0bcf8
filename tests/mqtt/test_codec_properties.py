"""MQTT 5 properties: every identifier round trips where allowed and is rejected where not,
repetition rules, value ranges, order of User Properties, and the property section's framing."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from real.mqtt import (
    MQTT_5,
    Auth,
    Connack,
    Connect,
    Decoder,
    Disconnect,
    InvalidPacket,
    MalformedPacket,
    PacketType,
    Properties,
    PropertyId,
    ProtocolError,
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
    decode_all,
    encode,
)
from real.mqtt.properties import SPECS, WILL, PropType, encode_properties
from real.mqtt.reasons import REASON_NAMES, ReasonCode, reason_name
from tests.mqtt.strategies import properties, property_value

UP = PropertyId.USER_PROPERTY
SAMPLE = {
    PropType.BYTE: 1, PropType.U16: 1, PropType.U32: 1, PropType.VARINT: 1,
    PropType.UTF8: "x", PropType.PAIR: ("k", "v"), PropType.BINARY: b"\x01",
}
CONTEXTS = [*[k for k in PacketType if k not in (PacketType.PINGREQ, PacketType.PINGRESP)], WILL]


BASES = {
    PacketType.CONNECT: Connect("c", MQTT_5), PacketType.CONNACK: Connack(),
    PacketType.PUBLISH: Publish("t"), PacketType.PUBACK: Puback(1), PacketType.PUBREC: Pubrec(1),
    PacketType.PUBREL: Pubrel(1), PacketType.PUBCOMP: Pubcomp(1),
    PacketType.SUBSCRIBE: Subscribe(1, (Subscription("t"),)), PacketType.SUBACK: Suback(1, (0,)),
    PacketType.UNSUBSCRIBE: Unsubscribe(1, ("t",)), PacketType.UNSUBACK: Unsuback(1, (0,)),
    PacketType.DISCONNECT: Disconnect(), PacketType.AUTH: Auth(),
}


def carrier(context: int, props: Properties):
    """A small v5 packet whose `context` properties (WILL: its will's) are `props`."""
    if context == WILL:
        return Connect("c", MQTT_5, will=Will("t", b"", properties=props))
    return replace(BASES[PacketType(context)], properties=props)


def test_table_covers_section_2_2_2_2() -> None:
    assert len(SPECS) == 27
    assert {pid for pid in SPECS if SPECS[pid].type is PropType.PAIR} == {UP}
    assert SPECS[PropertyId.SUBSCRIPTION_IDENTIFIER].type is PropType.VARINT
    assert SPECS[PropertyId.CORRELATION_DATA].type is PropType.BINARY
    assert SPECS[PropertyId.WILL_DELAY_INTERVAL].contexts == frozenset({WILL})


@pytest.mark.parametrize("pid", list(PropertyId), ids=[p.name for p in PropertyId])
def test_each_property_round_trips_where_allowed(pid: PropertyId) -> None:
    spec = SPECS[pid]
    props = Properties.of((pid, SAMPLE[spec.type]))
    for context in sorted(spec.contexts):
        packet = carrier(context, props)
        assert decode_all(encode(packet, MQTT_5), MQTT_5) == [packet]


@pytest.mark.parametrize("pid", list(PropertyId), ids=[p.name for p in PropertyId])
def test_each_property_rejected_where_not_allowed(pid: PropertyId) -> None:
    spec = SPECS[pid]
    props = Properties.of((pid, SAMPLE[spec.type]))
    section = encode_properties(props)
    for context in CONTEXTS:
        if context in spec.contexts:
            continue
        with pytest.raises(InvalidPacket) as info:
            encode(carrier(context, props), MQTT_5)
        assert info.value.reason_code == 0x81
        assert pid.name in str(info.value)
    # Decode side: swap an empty property section of a DISCONNECT for this one.
    if PacketType.DISCONNECT not in spec.contexts:
        wire = bytes([0xE0, 1 + len(section), 0x00]) + section
        with pytest.raises(MalformedPacket) as info:
            Decoder(MQTT_5).feed(wire)
        assert info.value.reason_code == 0x81


@pytest.mark.parametrize("context", CONTEXTS, ids=[str(c) for c in CONTEXTS])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_property_sets_round_trip(context: int, data) -> None:
    props = data.draw(properties(context))
    packet = carrier(context, props)
    assert decode_all(encode(packet, MQTT_5), MQTT_5) == [packet]


def test_user_properties_repeat_and_keep_order() -> None:
    props = Properties.of((UP, ("b", "2")), (UP, ("a", "1")), (UP, ("b", "0")))
    packet = Puback(3, 0x10, props)
    [decoded] = decode_all(encode(packet, MQTT_5), MQTT_5)
    assert decoded.properties.get_all(UP) == [("b", "2"), ("a", "1"), ("b", "0")]
    assert decoded.properties.get(UP) == ("b", "2")


def test_subscription_identifier_repeats_in_publish_only() -> None:
    sid = PropertyId.SUBSCRIPTION_IDENTIFIER
    publish = Publish("t", properties=Properties.of((sid, 1), (sid, 268_435_455)))
    assert decode_all(encode(publish, MQTT_5), MQTT_5) == [publish]
    # SUBSCRIBE: 0x0B 1 twice (3.8.2.1.2: more than once is a Protocol Error).
    wire = bytes.fromhex("820B 0001 04 0B01 0B01 000174 00")
    with pytest.raises(ProtocolError) as info:
        Decoder(MQTT_5).feed(wire)
    assert info.value.reason_code == 0x82


@pytest.mark.parametrize(
    ("hexa", "why"),
    [
        ("320C 000174 0001 06 230001 230002", "topic alias"),
        ("E00C 00 0A 1100000001 1100000002", "session expiry"),
        ("F00A 18 08 1F000161 1F000162", "reason string"),
    ],
)
def test_duplicate_property_is_protocol_error(hexa: str, why: str) -> None:
    with pytest.raises(ProtocolError) as info:
        Decoder(MQTT_5).feed(bytes.fromhex(hexa))
    assert info.value.reason_code == 0x82
    assert "more than once" in str(info.value)


@pytest.mark.parametrize(
    ("props", "packet_type"),
    [
        (Properties.of((PropertyId.TOPIC_ALIAS, 0)), PacketType.PUBLISH),  # MQTT-3.3.2-8
        (Properties.of((PropertyId.PAYLOAD_FORMAT_INDICATOR, 2)), PacketType.PUBLISH),
        (Properties.of((PropertyId.SUBSCRIPTION_IDENTIFIER, 0)), PacketType.PUBLISH),
        (Properties.of((PropertyId.RECEIVE_MAXIMUM, 0)), PacketType.CONNECT),
        (Properties.of((PropertyId.MAXIMUM_PACKET_SIZE, 0)), PacketType.CONNECT),
        (Properties.of((PropertyId.REQUEST_PROBLEM_INFORMATION, 2)), PacketType.CONNECT),
        (Properties.of((PropertyId.MAXIMUM_QOS, 2)), PacketType.CONNACK),
    ],
)
def test_out_of_range_values_are_protocol_errors(props: Properties, packet_type) -> None:
    section = encode_properties(props)  # framing only; the check is the packet's
    if packet_type is PacketType.PUBLISH:
        body = bytes.fromhex("000174") + section
        wire = bytes([0x30, len(body)]) + body
    elif packet_type is PacketType.CONNECT:
        body = bytes.fromhex("00044D515454 05 02 003C") + section + bytes.fromhex("0000")
        wire = bytes([0x10, len(body)]) + body
    else:
        body = b"\x00\x00" + section
        wire = bytes([0x20, len(body)]) + body
    with pytest.raises(ProtocolError) as info:
        Decoder(MQTT_5).feed(wire)
    assert info.value.reason_code == 0x82
    with pytest.raises(InvalidPacket):
        encode(decode_all_unchecked(packet_type, props), MQTT_5)


def decode_all_unchecked(packet_type, props: Properties):
    if packet_type is PacketType.PUBLISH:
        return Publish("t", properties=props)
    if packet_type is PacketType.CONNECT:
        return Connect("", MQTT_5, properties=props)
    return Connack(False, 0, props)


@pytest.mark.parametrize(
    ("hexa", "what"),
    [
        ("E003 00 01 7F", "unknown identifier 0x7F"),
        ("E003 00 05 11", "property length"),  # declares 5 bytes, 1 remains
        ("E004 00 02 1100", "SESSION_EXPIRY_INTERVAL"),  # value runs past the packet
        ("E007 00 04 1100000000", "runs past the property length"),
        ("E005 00 03 1F0001", "REASON_STRING"),  # string longer than the section/packet
        ("E004 00 02 8000", "property identifier"),  # non-minimal varint identifier
    ],
)
def test_broken_property_sections_are_malformed(hexa: str, what: str) -> None:
    with pytest.raises(MalformedPacket) as info:
        Decoder(MQTT_5).feed(bytes.fromhex(hexa))
    assert info.value.reason_code == 0x81
    assert what in str(info.value)


def test_property_values_are_type_checked_on_encode() -> None:
    for bad in [
        Properties.of((PropertyId.CONTENT_TYPE, b"bytes")),
        Properties.of((PropertyId.CORRELATION_DATA, "str")),
        Properties.of((UP, ("only one",))),
        Properties.of((PropertyId.MESSAGE_EXPIRY_INTERVAL, 1 << 32)),
        Properties.of((PropertyId.CONTENT_TYPE, "\x00")),
    ]:
        with pytest.raises(InvalidPacket):
            encode(Publish("t", properties=bad), MQTT_5)


def test_subscribe_carries_options_and_identifier() -> None:
    packet = Subscribe(9, (Subscription("a/+", 1, True, False, 1), Subscription("$share/g/x", 2)),
                       Properties.of((PropertyId.SUBSCRIPTION_IDENTIFIER, 300)))
    wire = encode(packet, MQTT_5)
    assert wire[6:8] == bytes.fromhex("AC02")  # varint 300
    assert decode_all(wire, MQTT_5) == [packet]


def test_reason_code_table_has_names() -> None:
    assert len(REASON_NAMES) == 43
    assert reason_name(ReasonCode.PACKET_TOO_LARGE) == "Packet too large"
    assert ReasonCode.NORMAL_DISCONNECTION is ReasonCode.SUCCESS
    assert reason_name(0x7F) == "unknown reason code"
    assert Disconnect(ReasonCode.SERVER_MOVED) == Disconnect(0x9D)


@given(value=property_value(PropertyId.SUBSCRIPTION_IDENTIFIER))
def test_varint_property_values_round_trip(value: int) -> None:
    packet = Publish("t", properties=Properties.of((PropertyId.SUBSCRIPTION_IDENTIFIER, value)))
    assert decode_all(encode(packet, MQTT_5), MQTT_5) == [packet]


def test_plain_int_identifiers_and_garbage_items() -> None:
    packet = Publish("t", properties=Properties(((0x23, 4),)))  # Topic Alias as a plain int
    assert decode_all(encode(packet, MQTT_5), MQTT_5) == [packet]
    for items in [((["x"], 1),), ((True, 1),), ((0x7F, 1),), ("junk",)]:
        with pytest.raises(InvalidPacket) as info:
            encode(Publish("t", properties=Properties(items)), MQTT_5)
        assert info.value.reason_code == 0x81
