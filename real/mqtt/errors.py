"""Typed errors of the MQTT codec (each carries the MQTT 5 reason code the server should send),
and `BridgeUnavailable`, what the Kafka bridge raises when it cannot copy a PUBLISH.

`MalformedPacket` and `ProtocolError` are what a peer's bytes earn (decode side); the message
names the packet, the field and, where the bytes are at hand, the byte offset counted from the
packet's first byte. `InvalidPacket` is what `encode` raises for a packet object that would put
invalid bytes on the wire: a caller bug, never a peer's fault, so it is also a `ValueError`.
"""

from __future__ import annotations

from real.mqtt.reasons import reason_name


class MqttError(Exception):
    """Base class of every codec error: `reason_code` (MQTT 5 reason code) and `detail`."""

    def __init__(self, reason_code: int, detail: str) -> None:
        assert 0x80 <= reason_code <= 0xFF, reason_code
        assert detail, "an MQTT error must say what went wrong"
        self.reason_code = reason_code
        self.detail = detail
        self.decoded: tuple[object, ...] = ()  # packets a `Decoder.feed` completed before this
        super().__init__(f"{reason_name(reason_code)} (0x{reason_code:02X}): {detail}")


class MalformedPacket(MqttError):
    """The bytes cannot be parsed as the specification says (MQTT 5 section 4.13)."""


class ProtocolError(MqttError):
    """The bytes parse but break a rule of the specification (MQTT 5 section 4.13)."""


class InvalidPacket(MqttError, ValueError):
    """`encode` was handed a packet object that no conforming peer may send."""


class BridgeUnavailable(Exception):
    """A bridge hook (real/kafka/bridge.py) could not copy a PUBLISH to Kafka: the rule's topic
    does not exist (yet) or the append failed. The broker then must not acknowledge a QoS 1/2
    PUBLISH as accepted, since the bridge promises a durable Kafka copy with every ack."""
