"""The MQTT <-> Kafka bridge: one topic space seen through both protocols.

A *rule* pairs an MQTT topic filter with a Kafka topic and a direction:

    [[bridge]]
    mqtt = "sensors/#"       # MQTT topic filter (wildcards allowed)
    kafka = "sensors"        # Kafka topic (created at startup if missing)
    direction = "both"       # "mqtt-to-kafka", "kafka-to-mqtt" or "both"
    qos = 1                  # QoS of the MQTT publishes made from Kafka records
    mqtt_topic = "sensors/kafka"   # MQTT topic for Kafka records whose key is not one (optional)

MQTT -> Kafka: every PUBLISH (and will) whose topic matches the filter becomes one Kafka record in
the rule's topic: key = the MQTT topic name (UTF-8), value = the payload, headers = the MQTT 5 user
properties in order (name -> UTF-8 value; duplicates kept), plus `mqtt.content_type` and
`mqtt.response_topic` / `mqtt.correlation_data` when present. The partition is
crc32c(key) mod partitions, so one MQTT topic keeps its order in one partition. A QoS 1/2
PUBLISH is acknowledged only once the Kafka copy is durable too.

Kafka -> MQTT: every record produced by a Kafka client to the rule's topic is published to MQTT
subscribers: the topic is the record key if it is a valid MQTT topic name matched by the rule's
filter, else `mqtt_topic` (default: the filter up to its first wildcard level, e.g. `sensors`);
headers become user properties (values that are not UTF-8 are dropped and counted; the
`mqtt.*` headers map back to their properties). Records written by the bridge itself are not sent
back, so there are no loops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from real.kafka.records import KRecord, decode_batch
from real.mqtt.errors import BridgeUnavailable
from real.mqtt.properties import NO_PROPERTIES, Properties, PropertyId, PropertyValue
from real.mqtt.topics import TopicError, matches, validate_topic_filter, validate_topic_name
from real.storage.crc32c import crc32c

if TYPE_CHECKING:
    from real.kafka.log import PartitionLog
    from real.meta.machine import MetaStateMachine
    from real.mqtt.session import Message

DIRECTIONS = ("both", "mqtt-to-kafka", "kafka-to-mqtt")
_PROP_HEADERS = {
    "mqtt.content_type": PropertyId.CONTENT_TYPE,
    "mqtt.response_topic": PropertyId.RESPONSE_TOPIC,
}


class BridgeConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class BridgeRule:
    mqtt: str
    kafka: str
    direction: str = "both"
    qos: int = 1
    mqtt_topic: str = ""

    @property
    def to_kafka(self) -> bool:
        return self.direction in ("both", "mqtt-to-kafka")

    @property
    def to_mqtt(self) -> bool:
        return self.direction in ("both", "kafka-to-mqtt")

    @property
    def fallback_topic(self) -> str:
        if self.mqtt_topic:
            return self.mqtt_topic
        levels = []
        for level in self.mqtt.split("/"):
            if level in ("#", "+"):
                break
            levels.append(level)
        return "/".join(levels) or self.kafka


def parse_rules(items: Sequence[Any], where: str = "bridge") -> tuple[BridgeRule, ...]:
    """Rules from TOML `[[bridge]]` tables; errors name `bridge[i].key`."""
    from real.kafka.broker import topic_name_error

    if not isinstance(items, list | tuple):
        raise BridgeConfigError(f"{where} must be an array of tables [[bridge]]")
    rules = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise BridgeConfigError(f"{at} must be a table")
        unknown = sorted(set(item) - {"mqtt", "kafka", "direction", "qos", "mqtt_topic"})
        if unknown:
            raise BridgeConfigError(f"{at}: unknown key '{unknown[0]}' (known: direction, kafka, "
                                    f"mqtt, mqtt_topic, qos)")
        for key in ("mqtt", "kafka"):
            if type(item.get(key)) is not str:
                raise BridgeConfigError(f"{at}.{key} must be a string")
        try:
            validate_topic_filter(item["mqtt"])
        except TopicError as exc:
            raise BridgeConfigError(f"{at}.mqtt: {exc}") from exc
        if item["mqtt"].startswith("$"):
            raise BridgeConfigError(f"{at}.mqtt: '$' topics are not bridged")
        err = topic_name_error(item["kafka"])
        if err is not None:
            raise BridgeConfigError(f"{at}.kafka: {err}")
        direction = item.get("direction", "both")
        if direction not in DIRECTIONS:
            raise BridgeConfigError(f"{at}.direction must be one of {', '.join(DIRECTIONS)}, "
                                    f"got {direction!r}")
        qos = item.get("qos", 1)
        if type(qos) is not int or qos not in (0, 1, 2):
            raise BridgeConfigError(f"{at}.qos must be 0, 1 or 2, got {qos!r}")
        mqtt_topic = item.get("mqtt_topic", "")
        if type(mqtt_topic) is not str:
            raise BridgeConfigError(f"{at}.mqtt_topic must be a string")
        rule = BridgeRule(item["mqtt"], item["kafka"], direction, qos, mqtt_topic)
        try:
            validate_topic_name(rule.fallback_topic)
        except TopicError as exc:
            raise BridgeConfigError(f"{at}.mqtt_topic: {exc}") from exc
        rules.append(rule)
    return tuple(rules)


@dataclass(slots=True)
class BridgeStats:
    to_kafka: int = 0
    to_mqtt: int = 0
    dropped_no_topic: int = 0
    dropped_headers: int = 0
    errors: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class _MetaView(Protocol):
    def machine(self) -> MetaStateMachine: ...


class KafkaSide(Protocol):
    """What the bridge uses of a `KafkaBroker` (`_durable` is private there today: issue 10
    gives both brokers one public interface)."""

    @property
    def meta(self) -> _MetaView: ...

    on_append: list[Callable[[str, int, bytes], None]]

    def partition_log(self, topic: str, partition: int) -> PartitionLog | None: ...

    def durable_progress(self) -> None: ...

    def _durable(self, needs: dict[str, int]) -> bool: ...


class MqttSide(Protocol):
    """What the bridge uses of an MQTT `Broker`: its `bridge` hook and `publish_external`."""

    bridge: Bridge | None

    def publish_external(self, topic: str, payload: bytes, qos: int,
                         props: Properties = NO_PROPERTIES, retain: bool = False) -> int: ...


class Bridge:
    """Connects one MQTT `Broker` and one `KafkaBroker` by `rules` (both cores, same process)."""

    def __init__(self, rules: Sequence[BridgeRule], kafka: KafkaSide, mqtt: MqttSide,
                 clock: Callable[[], int]) -> None:
        self.rules = tuple(rules)
        self.kafka = kafka
        self.mqtt = mqtt
        self.clock = clock
        self.stats = BridgeStats()
        self._to_kafka = [r for r in self.rules if r.to_kafka]
        self._from_kafka: dict[str, list[BridgeRule]] = {}
        for r in self.rules:
            if r.to_mqtt:
                self._from_kafka.setdefault(r.kafka, []).append(r)
        if self._to_kafka:
            mqtt.bridge = self
        if self._from_kafka:
            kafka.on_append.append(self.kafka_appended)

    def kafka_topics(self) -> list[str]:
        """Kafka topics the rules need (the shell creates missing ones at startup)."""
        return sorted({r.kafka for r in self.rules})

    # ---- MQTT -> Kafka -------------------------------------------------------------------------

    def mqtt_published(self, msg: Message) -> dict[str, int] | None:
        """Append `msg` to every matching rule's Kafka topic; returns what must be durable before
        the MQTT acknowledgement ({shard: end}), or None. Raises BridgeUnavailable when a
        matching rule cannot take it (after the other rules were tried)."""
        topic = msg.topic
        if topic.startswith("$"):
            return None
        needs: dict[str, int] | None = None
        failed = ""
        for rule in self._to_kafka:
            if not matches(rule.mqtt, topic):
                continue
            record = _record_from_mqtt(msg, self.clock())
            key = record.key or b""
            info = self.kafka.meta.machine().topic(rule.kafka)
            if info is None:
                self.stats.dropped_no_topic += 1
                failed = failed or f"Kafka topic {rule.kafka!r} does not exist"
                continue
            partition = crc32c(key) % len(info.shards)
            log = self.kafka.partition_log(rule.kafka, partition)
            if log is None:
                self.stats.dropped_no_topic += 1
                failed = failed or f"Kafka topic {rule.kafka!r} has no partition {partition} here"
                continue
            result = log.append_records([record], self.clock())
            if result.error_code:
                self.stats.errors += 1
                failed = failed or (f"appending to Kafka topic {rule.kafka!r} failed (error "
                                    f"{result.error_code})")
                continue
            self.stats.to_kafka += 1
            from real.kafka.broker import shard_name

            needs = needs or {}
            shard = shard_name(rule.kafka, partition)
            needs[shard] = max(needs.get(shard, 0), result.shard_end)
        if needs is not None:
            self.kafka.durable_progress()  # wakes long-polling consumers of those partitions
        if failed:
            raise BridgeUnavailable(f"bridge: {failed}")
        return needs

    def is_durable(self, token: dict[str, int]) -> bool:
        return self.kafka._durable(token)

    # ---- Kafka -> MQTT -------------------------------------------------------------------------

    def kafka_appended(self, topic: str, partition: int, data: bytes) -> None:
        rules = self._from_kafka.get(topic)
        if not rules:
            return
        from real.kafka.records import split_batches

        for info in split_batches(data):
            batch = data[info.pos:info.pos + info.size]
            try:
                records = decode_batch(batch)
            except Exception:  # noqa: BLE001 - stored already; a codec we cannot read is counted
                self.stats.errors += 1
                continue
            for record in records:
                for rule in rules:
                    self._publish_to_mqtt(rule, record)

    def _publish_to_mqtt(self, rule: BridgeRule, record: KRecord) -> None:
        topic = None
        if record.key:
            try:
                name = record.key.decode("utf-8")
                validate_topic_name(name)
                if not name.startswith("$") and matches(rule.mqtt, name):
                    topic = name
            except (UnicodeDecodeError, TopicError):
                topic = None
        if topic is None:
            topic = rule.fallback_topic
        items: list[tuple[PropertyId, PropertyValue]] = []
        for name, value in record.headers:
            raw = value or b""
            prop = _PROP_HEADERS.get(name)
            if name == "mqtt.correlation_data":
                items.append((PropertyId.CORRELATION_DATA, raw))
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.stats.dropped_headers += 1
                continue
            if prop is not None:
                items.append((prop, text))
            else:
                items.append((PropertyId.USER_PROPERTY, (name, text)))
        self.mqtt.publish_external(topic, record.value or b"", rule.qos,
                                   Properties(tuple(items)))
        self.stats.to_mqtt += 1


def _record_from_mqtt(msg: Message, now_ms: int) -> KRecord:
    headers: list[tuple[str, bytes | None]] = []
    for pid, value in msg.props.items:
        if pid == PropertyId.USER_PROPERTY:
            assert isinstance(value, tuple), value
            name, text = value
            headers.append((name, text.encode("utf-8")))
        elif pid == PropertyId.CONTENT_TYPE:
            assert isinstance(value, str), value
            headers.append(("mqtt.content_type", value.encode("utf-8")))
        elif pid == PropertyId.RESPONSE_TOPIC:
            assert isinstance(value, str), value
            headers.append(("mqtt.response_topic", value.encode("utf-8")))
        elif pid == PropertyId.CORRELATION_DATA:
            assert isinstance(value, bytes), value
            headers.append(("mqtt.correlation_data", value))
    ts = int(msg.created_ms) if msg.created_ms else now_ms
    return KRecord(-1, max(0, ts), msg.topic.encode("utf-8"), bytes(msg.payload), tuple(headers))
