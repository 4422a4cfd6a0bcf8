"""Hypothesis strategies for valid MQTT packets of each protocol version."""

from __future__ import annotations

from hypothesis import strategies as st

from real.mqtt import reasons as rc
from real.mqtt.packets import (
    MQTT_5,
    Auth,
    Connack,
    Connect,
    Disconnect,
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
    SPECS,
    WILL,
    PacketType,
    Properties,
    PropertyId,
    PropType,
)

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=12)
TOPIC = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#"),
                min_size=1, max_size=12)
FILTER = TEXT.filter(bool)
BLOB = st.binary(max_size=16)
PACKET_ID = st.integers(1, 0xFFFF)
QOS = st.integers(0, 2)


def property_value(pid: PropertyId) -> st.SearchStrategy:
    spec = SPECS[pid]
    if spec.type is PropType.UTF8:
        return TEXT
    if spec.type is PropType.PAIR:
        return st.tuples(TEXT, TEXT)
    if spec.type is PropType.BINARY:
        return BLOB
    top = {PropType.BYTE: 0xFF, PropType.U16: 0xFFFF, PropType.U32: 0xFFFF_FFFF,
           PropType.VARINT: 268_435_455}[spec.type]
    return st.integers(spec.low, top if spec.high is None else spec.high)


@st.composite
def properties(draw: st.DrawFn, context: int) -> Properties:
    """A valid property set for `context` (a PacketType or WILL), in a random order."""
    allowed = sorted(pid for pid, spec in SPECS.items() if context in spec.contexts)
    chosen = draw(st.lists(st.sampled_from(allowed), max_size=5)) if allowed else []
    items = []
    seen = set()
    for pid in chosen:
        if pid in seen and context not in SPECS[pid].repeatable_in:
            continue
        seen.add(pid)
        items.append((pid, draw(property_value(pid))))
    return Properties(tuple(items))


def props(version: int, context: int) -> st.SearchStrategy:
    return properties(context) if version >= MQTT_5 else st.just(NO_PROPERTIES)


@st.composite
def connects(draw: st.DrawFn, version: int) -> Connect:
    username = draw(st.none() | TEXT)
    password = draw(st.none() | BLOB)
    if version < MQTT_5 and username is None:
        password = None  # MQTT-3.1.2-22
    will = draw(st.none() | st.builds(Will, TOPIC, BLOB, QOS, st.booleans(), props(version, WILL)))
    return Connect(draw(TEXT), version, draw(st.booleans()), draw(st.integers(0, 0xFFFF)),
                   username, password, will, draw(props(version, PacketType.CONNECT)))


@st.composite
def connacks(draw: st.DrawFn, version: int) -> Connack:
    codes = rc.CONNACK_CODES if version >= MQTT_5 else rc.CONNACK_RETURN_CODES_V3
    code = draw(st.sampled_from(sorted(codes)))
    present = draw(st.booleans()) and code == 0 and version >= 4
    return Connack(present, code, draw(props(version, PacketType.CONNACK)))


@st.composite
def publishes(draw: st.DrawFn, version: int) -> Publish:
    qos = draw(QOS)
    packet_id = draw(PACKET_ID) if qos else None
    dup = draw(st.booleans()) if qos else False
    return Publish(draw(TOPIC), draw(BLOB), qos, draw(st.booleans()), dup, packet_id,
                   draw(props(version, PacketType.PUBLISH)))


def acks(cls: type, codes: frozenset[int]):
    def build(version: int) -> st.SearchStrategy:
        allowed = sorted(codes) if version >= MQTT_5 else [0]
        return st.builds(cls, PACKET_ID, st.sampled_from(allowed), props(version, cls.TYPE))

    return build


@st.composite
def subscriptions(draw: st.DrawFn, version: int) -> Subscription:
    topic_filter = draw(FILTER)
    if version < MQTT_5:
        return Subscription(topic_filter, draw(QOS))
    no_local = draw(st.booleans()) and not topic_filter.startswith("$share/")
    return Subscription(topic_filter, draw(QOS), no_local, draw(st.booleans()),
                        draw(st.integers(0, 2)))


def subscribes(version: int) -> st.SearchStrategy:
    subs = st.lists(subscriptions(version), min_size=1, max_size=3).map(tuple)
    return st.builds(Subscribe, PACKET_ID, subs, props(version, PacketType.SUBSCRIBE))


def subacks(version: int) -> st.SearchStrategy:
    codes = {3: rc.SUBACK_RETURN_CODES_V3, 4: rc.SUBACK_RETURN_CODES_V4}.get(
        version, rc.SUBACK_CODES)
    reasons = st.lists(st.sampled_from(sorted(codes)), min_size=1, max_size=4).map(tuple)
    return st.builds(Suback, PACKET_ID, reasons, props(version, PacketType.SUBACK))


def unsubscribes(version: int) -> st.SearchStrategy:
    filters = st.lists(FILTER, min_size=1, max_size=3).map(tuple)
    return st.builds(Unsubscribe, PACKET_ID, filters, props(version, PacketType.UNSUBSCRIBE))


def unsubacks(version: int) -> st.SearchStrategy:
    if version < MQTT_5:
        return st.builds(Unsuback, PACKET_ID)
    reasons = st.lists(st.sampled_from(sorted(rc.UNSUBACK_CODES)), min_size=1, max_size=4)
    return st.builds(Unsuback, PACKET_ID, reasons.map(tuple), props(version, PacketType.UNSUBACK))


def disconnects(version: int) -> st.SearchStrategy:
    if version < MQTT_5:
        return st.just(Disconnect())
    return st.builds(Disconnect, st.sampled_from(sorted(rc.DISCONNECT_CODES)),
                     props(version, PacketType.DISCONNECT))


def auths(version: int) -> st.SearchStrategy:
    return st.builds(Auth, st.sampled_from(sorted(rc.AUTH_CODES)), props(version, PacketType.AUTH))


PACKET_STRATEGIES = {
    PacketType.CONNECT: connects,
    PacketType.CONNACK: connacks,
    PacketType.PUBLISH: publishes,
    PacketType.PUBACK: acks(Puback, rc.PUBACK_CODES),
    PacketType.PUBREC: acks(Pubrec, rc.PUBREC_CODES),
    PacketType.PUBREL: acks(Pubrel, rc.PUBREL_CODES),
    PacketType.PUBCOMP: acks(Pubcomp, rc.PUBCOMP_CODES),
    PacketType.SUBSCRIBE: subscribes,
    PacketType.SUBACK: subacks,
    PacketType.UNSUBSCRIBE: unsubscribes,
    PacketType.UNSUBACK: unsubacks,
    PacketType.PINGREQ: lambda version: st.just(Pingreq()),
    PacketType.PINGRESP: lambda version: st.just(Pingresp()),
    PacketType.DISCONNECT: disconnects,
    PacketType.AUTH: auths,
}


def packet_types(version: int) -> list[PacketType]:
    """Packet types that exist in `version` (AUTH only in MQTT 5)."""
    return [kind for kind in PacketType if kind is not PacketType.AUTH or version >= MQTT_5]


def packets(version: int, with_connect: bool = False) -> st.SearchStrategy:
    """Any valid packet of `version` (CONNECT only if asked: a decoder accepts one)."""
    kinds = [k for k in packet_types(version) if with_connect or k is not PacketType.CONNECT]
    return st.one_of([PACKET_STRATEGIES[kind](version) for kind in kinds])
