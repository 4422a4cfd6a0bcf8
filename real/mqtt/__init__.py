"""Sans-I/O MQTT 3.1 / 3.1.1 / 5.0: packets, properties, reason codes and the packet codec."""

from real.mqtt.codec import DEFAULT_MAX_PACKET_SIZE, PROTOCOL_NAMES, Decoder, decode_all, encode
from real.mqtt.errors import InvalidPacket, MalformedPacket, MqttError, ProtocolError
from real.mqtt.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
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
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from real.mqtt.properties import NO_PROPERTIES, PacketType, Properties, PropertyId
from real.mqtt.reasons import REASON_NAMES, ReasonCode

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE", "MQTT_3_1", "MQTT_3_1_1", "MQTT_5", "NO_PROPERTIES",
    "PROTOCOL_NAMES", "REASON_NAMES", "VERSIONS", "Auth", "Connack", "Connect", "Decoder",
    "Disconnect", "InvalidPacket", "MalformedPacket", "MqttError", "Packet", "PacketType",
    "Pingreq", "Pingresp", "Properties", "PropertyId", "ProtocolError", "Puback", "Pubcomp",
    "Publish", "Pubrec", "Pubrel", "ReasonCode", "Suback", "Subscribe", "Subscription",
    "Unsuback", "Unsubscribe", "Will", "decode_all", "encode",
]
