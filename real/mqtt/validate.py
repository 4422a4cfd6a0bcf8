"""Rules a packet object must satisfy in a given protocol version, shared by encode and decode.

`check_packet` raises `MalformedPacket` / `ProtocolError` with the reason code a server would use;
the decoder lets them through and `encode` turns them into `InvalidPacket`. Wire-only rules
(reserved flag bits, lengths, string encoding) live in the decoder and in `wire.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from real.mqtt import reasons as rc
from real.mqtt.errors import MalformedPacket, ProtocolError
from real.mqtt.packets import (
    MQTT_3_1,
    MQTT_5,
    VERSIONS,
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
    Unsuback,
    Unsubscribe,
    Will,
)
from real.mqtt.properties import WILL, PropertyId, check_properties
from real.mqtt.reasons import ReasonCode

_MALFORMED = ReasonCode.MALFORMED_PACKET
_PROTOCOL = ReasonCode.PROTOCOL_ERROR
_ACK_CODES = {Puback: rc.PUBACK_CODES, Pubrec: rc.PUBREC_CODES, Pubrel: rc.PUBREL_CODES,
              Pubcomp: rc.PUBCOMP_CODES}


def check_packet(packet: Packet, version: int) -> None:
    """Raise unless `packet` is a packet a conforming peer may send in `version`."""
    if version not in VERSIONS:
        raise ProtocolError(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
                            f"protocol version {version!r}, expected one of {VERSIONS}")
    kind = type(packet)
    checker = _CHECKERS.get(kind)
    if checker is None:
        raise MalformedPacket(_MALFORMED, f"not an MQTT packet: {kind.__name__}")
    name = kind.TYPE.name
    if version < MQTT_5 and hasattr(packet, "properties") and len(packet.properties):
        raise MalformedPacket(_MALFORMED, f"{name}.properties exist only in MQTT 5")
    if version >= MQTT_5 and hasattr(packet, "properties"):
        check_properties(packet.properties, kind.TYPE)
    checker(packet, version)


def _bool(value: object, field: str) -> None:
    if type(value) is not bool:
        raise MalformedPacket(_MALFORMED, f"{field} must be a bool, got {value!r}")


def _qos(value: object, field: str) -> None:
    if type(value) is not int or not 0 <= value <= 2:  # MQTT-3.3.1-4: QoS 3 is malformed
        raise MalformedPacket(_MALFORMED, f"{field} = {value!r}, expected QoS 0, 1 or 2")


def _packet_id(value: object, field: str) -> None:
    # MQTT-2.2.1-3 (3.1.1: MQTT-2.3.1-1): a Packet Identifier is non-zero.
    if type(value) is not int or not 1 <= value <= 0xFFFF:
        raise ProtocolError(_PROTOCOL, f"{field} = {value!r}, expected 1..65535")


def _str(value: object, field: str) -> None:
    if type(value) is not str:
        raise MalformedPacket(_MALFORMED, f"{field} must be a str, got {type(value).__name__}")


def check_topic_name(topic: str, field: str, allow_empty: bool = False) -> None:
    """A Topic Name: no wildcards (MQTT-3.3.2-2), at least one character (MQTT-4.7.3-1)."""
    _str(topic, field)
    if "+" in topic or "#" in topic:
        raise ProtocolError(ReasonCode.TOPIC_NAME_INVALID,
                            f"{field} {topic!r} contains a wildcard (MQTT-3.3.2-2)")
    if not topic and not allow_empty:
        raise ProtocolError(ReasonCode.TOPIC_NAME_INVALID, f"{field} is empty (MQTT-4.7.3-1)")


def _reason(value: object, allowed: frozenset[int], field: str) -> None:
    # isinstance, not type(): a ReasonCode member is welcome; a bool is not a reason code.
    if not isinstance(value, int) or isinstance(value, bool) or value not in allowed:
        raise ProtocolError(_PROTOCOL, f"{field} = {value!r} is not a reason code it may carry")


def _check_will(will: object, version: int) -> None:
    if type(will) is not Will:
        raise MalformedPacket(_MALFORMED, f"CONNECT.will must be a Will, got {will!r}")
    check_topic_name(will.topic, "CONNECT.will.topic")
    if type(will.payload) is not bytes:
        raise MalformedPacket(_MALFORMED, "CONNECT.will.payload must be bytes")
    _qos(will.qos, "CONNECT.will.qos")  # MQTT-3.1.2-12
    _bool(will.retain, "CONNECT.will.retain")
    if version < MQTT_5 and len(will.properties):
        raise MalformedPacket(_MALFORMED, "CONNECT.will.properties exist only in MQTT 5")
    if version >= MQTT_5:
        check_properties(will.properties, WILL)


def _check_connect(p: Connect, version: int) -> None:
    if p.protocol_version != version:
        raise ProtocolError(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
                            f"CONNECT.protocol_version {p.protocol_version!r} != {version}")
    _str(p.client_id, "CONNECT.client_id")
    _bool(p.clean_start, "CONNECT.clean_start")
    if type(p.keep_alive) is not int or not 0 <= p.keep_alive <= 0xFFFF:
        raise MalformedPacket(_MALFORMED, f"CONNECT.keep_alive = {p.keep_alive!r}, not a u16")
    if p.username is not None:
        _str(p.username, "CONNECT.username")
    if p.password is not None and type(p.password) is not bytes:
        raise MalformedPacket(_MALFORMED, "CONNECT.password must be bytes or None")
    if version < MQTT_5 and p.password is not None and p.username is None:
        # MQTT-3.1.2-22 (3.1.1): no password without a user name.
        raise ProtocolError(_PROTOCOL, "CONNECT has a password but no user name (MQTT-3.1.2-22)")
    if p.will is not None:
        _check_will(p.will, version)


def _check_connack(p: Connack, version: int) -> None:
    _bool(p.session_present, "CONNACK.session_present")
    allowed = rc.CONNACK_CODES if version >= MQTT_5 else rc.CONNACK_RETURN_CODES_V3
    _reason(p.reason_code, allowed, "CONNACK.reason_code")
    if p.session_present and p.reason_code != 0:
        # MQTT-3.2.2-6 (3.1.1: MQTT-3.2.2-4): a refused connection has no session.
        raise ProtocolError(_PROTOCOL, "CONNACK.session_present with a non-zero reason code")
    if version == MQTT_3_1 and p.session_present:
        raise MalformedPacket(_MALFORMED, "CONNACK.session_present does not exist in MQTT 3.1")


def _check_publish(p: Publish, version: int) -> None:
    _qos(p.qos, "PUBLISH.qos")
    _bool(p.retain, "PUBLISH.retain")
    _bool(p.dup, "PUBLISH.dup")
    if type(p.payload) is not bytes:
        raise MalformedPacket(_MALFORMED, "PUBLISH.payload must be bytes")
    has_alias = version >= MQTT_5 and p.properties.get(PropertyId.TOPIC_ALIAS) is not None
    check_topic_name(p.topic, "PUBLISH.topic", allow_empty=has_alias)  # 3.3.2.3.4
    if p.qos == 0:
        if p.packet_id is not None:  # MQTT-2.2.1-2: no Packet Identifier in a QoS 0 PUBLISH
            raise ProtocolError(_PROTOCOL, f"PUBLISH QoS 0 has packet_id {p.packet_id!r}")
        if p.dup:  # MQTT-3.3.1-2
            raise ProtocolError(_PROTOCOL, "PUBLISH QoS 0 has DUP set (MQTT-3.3.1-2)")
    else:
        _packet_id(p.packet_id, "PUBLISH.packet_id")


def _check_ack(p: Puback | Pubrec | Pubrel | Pubcomp, version: int) -> None:
    name = type(p).TYPE.name
    _packet_id(p.packet_id, f"{name}.packet_id")
    allowed = _ACK_CODES[type(p)] if version >= MQTT_5 else frozenset({0})
    _reason(p.reason_code, allowed, f"{name}.reason_code")  # MQTT-3.4.2-1 and alike


def _check_subscribe(p: Subscribe, version: int) -> None:
    _packet_id(p.packet_id, "SUBSCRIBE.packet_id")
    if type(p.subscriptions) is not tuple or not p.subscriptions:
        # MQTT-3.8.3-2 (3.1.1: MQTT-3.8.3-3): at least one Topic Filter.
        raise ProtocolError(_PROTOCOL, "SUBSCRIBE has no topic filter (MQTT-3.8.3-2)")
    for index, sub in enumerate(p.subscriptions):
        field = f"SUBSCRIBE.subscriptions[{index}]"
        _str(sub.topic_filter, f"{field}.topic_filter")
        if not sub.topic_filter:  # MQTT-4.7.3-1
            raise ProtocolError(ReasonCode.TOPIC_FILTER_INVALID, f"{field}.topic_filter is empty")
        _qos(sub.qos, f"{field}.qos")
        for flag in ("no_local", "retain_as_published"):
            _bool(getattr(sub, flag), f"{field}.{flag}")
        if version < MQTT_5:
            if sub.no_local or sub.retain_as_published or sub.retain_handling != 0:
                raise MalformedPacket(_MALFORMED, f"{field}: options beyond QoS need MQTT 5")
            continue
        if type(sub.retain_handling) is not int or not 0 <= sub.retain_handling <= 2:
            raise ProtocolError(_PROTOCOL, f"{field}.retain_handling = {sub.retain_handling!r}"
                                " (3 is a Protocol Error, 3.8.3.1)")
        if sub.no_local and sub.topic_filter.startswith("$share/"):  # MQTT-3.8.3-4
            raise ProtocolError(_PROTOCOL, f"{field}: No Local on a shared subscription")


def _check_suback(p: Suback, version: int) -> None:
    _packet_id(p.packet_id, "SUBACK.packet_id")
    if type(p.reason_codes) is not tuple or not p.reason_codes:
        raise ProtocolError(_PROTOCOL, "SUBACK has no reason code (MQTT-3.9.3-1)")
    allowed = {MQTT_3_1: rc.SUBACK_RETURN_CODES_V3, 4: rc.SUBACK_RETURN_CODES_V4}.get(
        version, rc.SUBACK_CODES)
    for index, code in enumerate(p.reason_codes):
        _reason(code, allowed, f"SUBACK.reason_codes[{index}]")


def _check_unsubscribe(p: Unsubscribe, version: int) -> None:
    _packet_id(p.packet_id, "UNSUBSCRIBE.packet_id")
    if type(p.topic_filters) is not tuple or not p.topic_filters:  # MQTT-3.10.3-2
        raise ProtocolError(_PROTOCOL, "UNSUBSCRIBE has no topic filter (MQTT-3.10.3-2)")
    for index, topic_filter in enumerate(p.topic_filters):
        _str(topic_filter, f"UNSUBSCRIBE.topic_filters[{index}]")
        if not topic_filter:  # MQTT-4.7.3-1
            raise ProtocolError(ReasonCode.TOPIC_FILTER_INVALID,
                                f"UNSUBSCRIBE.topic_filters[{index}] is empty")


def _check_unsuback(p: Unsuback, version: int) -> None:
    _packet_id(p.packet_id, "UNSUBACK.packet_id")
    if type(p.reason_codes) is not tuple:
        raise MalformedPacket(_MALFORMED, "UNSUBACK.reason_codes must be a tuple")
    if version < MQTT_5:
        if p.reason_codes:
            raise MalformedPacket(_MALFORMED, "UNSUBACK.reason_codes exist only in MQTT 5")
        return
    if not p.reason_codes:
        raise ProtocolError(_PROTOCOL, "UNSUBACK has no reason code (MQTT-3.11.3-1)")
    for index, code in enumerate(p.reason_codes):
        _reason(code, rc.UNSUBACK_CODES, f"UNSUBACK.reason_codes[{index}]")


def _check_disconnect(p: Disconnect, version: int) -> None:
    allowed = rc.DISCONNECT_CODES if version >= MQTT_5 else frozenset({0})
    _reason(p.reason_code, allowed, "DISCONNECT.reason_code")


def _check_auth(p: Auth, version: int) -> None:
    if version < MQTT_5:
        raise MalformedPacket(_MALFORMED, "AUTH exists only in MQTT 5 (type 15 is reserved)")
    _reason(p.reason_code, rc.AUTH_CODES, "AUTH.reason_code")


def _check_nothing(p: Pingreq | Pingresp, version: int) -> None:
    assert version in VERSIONS


# packet class -> its checker (which takes that class: hence Any, matched by the key)
_CHECKERS: dict[type, Callable[[Any, int], None]] = {
    Connect: _check_connect, Connack: _check_connack, Publish: _check_publish,
    Puback: _check_ack, Pubrec: _check_ack, Pubrel: _check_ack, Pubcomp: _check_ack,
    Subscribe: _check_subscribe, Suback: _check_suback, Unsubscribe: _check_unsubscribe,
    Unsuback: _check_unsuback, Pingreq: _check_nothing, Pingresp: _check_nothing,
    Disconnect: _check_disconnect, Auth: _check_auth,
}
assert len(_CHECKERS) == 15
