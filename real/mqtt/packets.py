"""The 15 MQTT control packets as frozen dataclasses (one shape for MQTT 3.1, 3.1.1 and 5.0).

Fields that only MQTT 5 has (properties, reason codes of acks and DISCONNECT, subscription options
other than QoS) keep their defaults in 3.1/3.1.1; `encode` rejects anything else. Reason codes
are plain ints (compare with `ReasonCode`); in 3.1/3.1.1 a CONNACK's `reason_code` is the return
code 0..5 and a SUBACK's `reason_codes` are return codes.
"""

from __future__ import annotations

from dataclasses import dataclass

from real.mqtt.properties import NO_PROPERTIES, PacketType, Properties

MQTT_3_1 = 3  # protocol name "MQIsdp"
MQTT_3_1_1 = 4  # protocol name "MQTT"
MQTT_5 = 5  # protocol name "MQTT"
VERSIONS = (MQTT_3_1, MQTT_3_1_1, MQTT_5)


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Connect:
    client_id: str
    protocol_version: int = MQTT_3_1_1
    clean_start: bool = True  # "Clean Session" in 3.1/3.1.1
    keep_alive: int = 0
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = NO_PROPERTIES
    TYPE = PacketType.CONNECT


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool = False
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES
    TYPE = PacketType.CONNACK


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None  # None exactly when qos == 0 (MQTT-2.2.1-2)
    properties: Properties = NO_PROPERTIES
    TYPE = PacketType.PUBLISH


@dataclass(frozen=True, slots=True)
class _PublishAck:
    """The shape shared by PUBACK, PUBREC, PUBREL and PUBCOMP (distinct types, never equal)."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Puback(_PublishAck):
    TYPE = PacketType.PUBACK


@dataclass(frozen=True, slots=True)
class Pubrec(_PublishAck):
    TYPE = PacketType.PUBREC


@dataclass(frozen=True, slots=True)
class Pubrel(_PublishAck):
    TYPE = PacketType.PUBREL


@dataclass(frozen=True, slots=True)
class Pubcomp(_PublishAck):
    TYPE = PacketType.PUBCOMP


@dataclass(frozen=True, slots=True)
class Subscription:
    topic_filter: str
    qos: int = 0  # the Maximum QoS
    no_local: bool = False  # MQTT 5 only
    retain_as_published: bool = False  # MQTT 5 only
    retain_handling: int = 0  # MQTT 5 only: 0 send, 1 send if new subscription, 2 do not send


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = NO_PROPERTIES
    TYPE = PacketType.SUBSCRIBE


@dataclass(frozen=True, slots=True)
class Suback:
    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = NO_PROPERTIES
    TYPE = PacketType.SUBACK


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES
    TYPE = PacketType.UNSUBSCRIBE


@dataclass(frozen=True, slots=True)
class Unsuback:
    packet_id: int
    reason_codes: tuple[int, ...] = ()  # MQTT 5 only: one per topic filter
    properties: Properties = NO_PROPERTIES
    TYPE = PacketType.UNSUBACK


@dataclass(frozen=True, slots=True)
class Pingreq:
    TYPE = PacketType.PINGREQ


@dataclass(frozen=True, slots=True)
class Pingresp:
    TYPE = PacketType.PINGRESP


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason_code: int = 0  # MQTT 5 only
    properties: Properties = NO_PROPERTIES
    TYPE = PacketType.DISCONNECT


@dataclass(frozen=True, slots=True)
class Auth:  # MQTT 5 only
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES
    TYPE = PacketType.AUTH


Packet = (
    Connect | Connack | Publish | Puback | Pubrec | Pubrel | Pubcomp | Subscribe | Suback
    | Unsubscribe | Unsuback | Pingreq | Pingresp | Disconnect | Auth
)
Ack = Puback | Pubrec | Pubrel | Pubcomp
PACKET_CLASSES: dict[PacketType, type[Packet]] = {
    cls.TYPE: cls
    for cls in (Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe, Suback,
                Unsubscribe, Unsuback, Pingreq, Pingresp, Disconnect, Auth)
}
assert len(PACKET_CLASSES) == 15
