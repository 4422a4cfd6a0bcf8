"""The Kafka broker's durability boundaries, one shard record at a time (STYLE habit 24).

A produce reply (acks 1 and all), an idempotent retry's reply, the high watermark consumers see,
the `on_append` hooks (the Kafka -> MQTT bridge) and an MQTT PUBACK waiting for the bridged Kafka
copy all wait for the partition shard's `ack_end` to pass the appended batch. Here the shard's
engine acknowledges only as far as the test says: exactly one record short of the batch's end
holds everything back, exactly at it releases it. A `<` turned into `<=` (or an end off by one)
in `KafkaBroker`'s durable checks or the bridge's `is_durable` fails here.

Public behaviour only: requests through tests/kafka/harness.py, `durable_progress()`, and the
engine's own port to learn where a batch ended.
"""

from __future__ import annotations

import pytest

from real.kafka import api
from real.kafka import errors as E
from real.kafka.bridge import Bridge, BridgeRule
from real.kafka.broker import KafkaConfig, shard_name
from real.mqtt import MQTT_5, Connack, Puback, Publish
from real.storage import MemoryEngine, ShardStore
from real.storage.crc32c import crc32c
from tests.kafka.harness import Harness, batch, fetch_body, fetched, produce_body
from tests.mqtt.harness import Harness as MqttHarness


class HeldEngine(MemoryEngine):
    """A memory engine that acknowledges (and calls durable) only up to `acked`."""

    def __init__(self) -> None:
        super().__init__()
        self.acked = 0

    def ack_end(self) -> int:
        return min(self.acked, self.end_offset())

    def durable_end(self) -> int:
        return self.ack_end()


class HeldHarness(Harness):
    """The Kafka harness with every partition on a `HeldEngine` (registered as the "file" kind,
    one of the engine names meta accepts)."""

    def __init__(self) -> None:
        self.engines: dict[str, HeldEngine] = {}
        super().__init__(KafkaConfig(default_engine="file"))

    def _store(self) -> ShardStore:
        def held(name: str) -> HeldEngine:
            engine = self.engines[name] = HeldEngine()
            return engine

        return ShardStore({"memory": lambda _n: MemoryEngine(), "file": held},
                          default_engine="file")

    def engine(self, topic: str, partition: int = 0) -> HeldEngine:
        return self.engines[shard_name(topic, partition)]

    def settle(self, topic: str, acked: int, partition: int = 0) -> None:
        """The partition's engine acknowledges up to shard offset `acked`; the broker is told."""
        self.engine(topic, partition).acked = acked
        self.broker.durable_progress()
        self.pump()


def held(topic: str = "t", partitions: int = 1) -> HeldHarness:
    h = HeldHarness()
    h.create_topic(topic, partitions)
    return h


def replies(client) -> list[dict]:
    return [body for _corr, body in client.take()]


def part_of(body: dict, index: int = 0) -> dict:
    (topic,) = body["responses"]
    return [p for p in topic["partition_responses"] if p["index"] == index][0]


@pytest.mark.parametrize("acks", [1, -1])
def test_produce_reply_leaves_exactly_when_the_batch_is_acknowledged(acks: int) -> None:
    h = held()
    c = h.open()
    c.send(api.PRODUCE, 8, produce_body("t", batch(b"a", b"b"), acks=acks))
    end = h.engine("t").end_offset()
    assert end >= 1 and replies(c) == []
    h.settle("t", end - 1)  # one shard record short of the batch's end
    assert replies(c) == [], "produce answered before its batch was durable"
    assert h.broker.gauges()["produce_waits"] == 1
    h.settle("t", end)  # exactly at it
    (body,) = replies(c)
    assert (part_of(body)["error_code"], part_of(body)["base_offset"]) == (0, 0)
    assert h.broker.gauges()["produce_waits"] == 0


def test_each_produce_waits_for_its_own_batch() -> None:
    h = held()
    first, second = h.open("one"), h.open("two")
    first.send(api.PRODUCE, 8, produce_body("t", batch(b"a", b"b")))
    end1 = h.engine("t").end_offset()
    second.send(api.PRODUCE, 8, produce_body("t", batch(b"c")))
    end2 = h.engine("t").end_offset()
    assert end1 < end2
    h.settle("t", end1)
    assert [part_of(b)["base_offset"] for b in replies(first)] == [0]
    assert replies(second) == []
    h.settle("t", end2 - 1)
    assert replies(second) == [], "the second reply left before its own batch was durable"
    h.settle("t", end2)
    assert [part_of(b)["base_offset"] for b in replies(second)] == [2]


def test_a_produce_to_two_partitions_waits_for_both() -> None:
    h = held("t", 2)
    c = h.open()
    body = {"transactional_id": None, "acks": -1, "timeout_ms": 30_000, "topic_data": [
        {"name": "t", "partition_data": [{"index": 0, "records": batch(b"p0")},
                                         {"index": 1, "records": batch(b"p1")}]}]}
    c.send(api.PRODUCE, 8, body)
    end0, end1 = h.engine("t", 0).end_offset(), h.engine("t", 1).end_offset()
    h.settle("t", end0, partition=0)
    h.settle("t", end1 - 1, partition=1)
    assert replies(c) == [], "answered while partition 1 was one record short"
    h.settle("t", end1, partition=1)
    (reply,) = replies(c)
    assert part_of(reply, 0)["error_code"] == part_of(reply, 1)["error_code"] == 0


def test_an_idempotent_retry_waits_for_the_original_batch() -> None:
    h = held()
    producer = h.open("p")
    init = producer.call(api.INIT_PRODUCER_ID, 0, {"transactional_id": None,
                                                   "transaction_timeout_ms": 60_000})
    data = batch(b"a", producer_id=init["producer_id"], producer_epoch=0, base_sequence=0)
    first, retry = h.open("first"), h.open("retry")
    first.send(api.PRODUCE, 8, produce_body("t", data))
    end = h.engine("t").end_offset()
    retry.send(api.PRODUCE, 8, produce_body("t", data))
    assert h.engine("t").end_offset() == end, "the retry was stored again"
    h.settle("t", end - 1)
    assert replies(first) == [] and replies(retry) == [], "acked before the original was durable"
    h.settle("t", end)
    assert len(replies(first)) == len(replies(retry)) == 1


def test_consumers_see_only_acknowledged_batches() -> None:
    h = held()
    producer = h.open("p")
    producer.send(api.PRODUCE, 8, produce_body("t", batch(b"a", b"b")))
    end1 = h.engine("t").end_offset()
    producer.send(api.PRODUCE, 8, produce_body("t", batch(b"c")))
    end2 = h.engine("t").end_offset()
    consumer = h.open("c")

    def visible() -> tuple[int, list[bytes | None]]:
        part, recs = fetched(consumer.call(api.FETCH, 11, fetch_body("t")))
        return part["high_watermark"], [r.value for r in recs]

    h.settle("t", end1 - 1)
    assert visible() == (0, [])
    h.settle("t", end1)
    assert visible() == (2, [b"a", b"b"])
    h.settle("t", end2 - 1)
    assert visible() == (2, [b"a", b"b"]), "a batch not yet durable was visible"
    h.settle("t", end2)
    assert visible() == (3, [b"a", b"b", b"c"])


def test_on_append_hooks_run_only_once_the_batch_is_acknowledged() -> None:
    h = held()
    seen: list[tuple[str, int]] = []
    h.broker.on_append.append(lambda topic, partition, _data: seen.append((topic, partition)))
    c = h.open()
    c.send(api.PRODUCE, 8, produce_body("t", batch(b"a")))
    end = h.engine("t").end_offset()
    h.settle("t", end - 1)
    assert seen == [], "subscribers saw a batch that was not durable"
    h.settle("t", end)
    assert seen == [("t", 0)]


def test_bridged_puback_waits_for_the_kafka_copy_to_the_record() -> None:
    k = held("sensors", 1)
    m = MqttHarness()
    Bridge([BridgeRule("sensors/#", "sensors")], k.broker, m.broker, k.clock)
    pub = m.connect("pub", MQTT_5)
    assert [type(p) for p in pub.take()] == [Connack]
    pub.send(Publish("sensors/a", b"1", qos=1, packet_id=3))
    end = k.engine("sensors").end_offset()
    assert end >= 1

    def settle(acked: int) -> list:
        k.engine("sensors").acked = acked
        k.broker.durable_progress()
        m.broker.durable_progress()
        return [p for p in pub.take() if isinstance(p, Puback)]

    assert settle(end - 1) == [], "PUBACK before the bridged Kafka record was durable"
    # the bridge counts as a receiver: success, not No Matching Subscribers
    assert [(p.packet_id, p.reason_code) for p in settle(end)] == [(3, 0)]


def test_a_batch_of_exactly_max_message_bytes_is_accepted_one_more_is_not() -> None:
    data = batch(b"x" * 100)
    for limit, code in ((len(data), 0), (len(data) - 1, E.MESSAGE_TOO_LARGE)):
        h = Harness(KafkaConfig(default_engine="memory", max_message_bytes=limit))
        h.create_topic("t")
        body = h.open().call(api.PRODUCE, 8, produce_body("t", data))
        assert part_of(body)["error_code"] == code, (limit, len(data))


def test_a_bridged_mqtt_topic_lands_in_the_partition_of_its_key() -> None:
    k = held("sensors", 2)
    m = MqttHarness()
    Bridge([BridgeRule("sensors/#", "sensors")], k.broker, m.broker, k.clock)
    pub = m.connect("pub", MQTT_5)
    pub.take()
    topics = [f"sensors/{i}" for i in range(8)]
    for topic in topics:
        pub.send(Publish(topic, b"x"))
    want = {p: sorted(t.encode() for t in topics if crc32c(t.encode()) % 2 == p) for p in (0, 1)}
    assert want[0] and want[1], "pick topics that hash to both partitions"
    got = {}
    for p in (0, 1):
        k.settle("sensors", k.engine("sensors", p).end_offset(), partition=p)
        _part, recs = fetched(k.open("c").call(api.FETCH, 11, fetch_body("sensors", 0, p)), p)
        got[p] = sorted(r.key for r in recs)
    assert got == want


def test_on_append_hooks_run_at_once_when_the_batch_is_durable_on_append() -> None:
    h = held()
    h.engine("t").acked = 1 << 40  # this engine is durable as soon as it appends
    seen: list[tuple[str, int]] = []
    h.broker.on_append.append(lambda topic, partition, _data: seen.append((topic, partition)))
    c = h.open()
    c.send(api.PRODUCE, 8, produce_body("t", batch(b"a")))
    assert len(c.take()) == 1
    assert seen == [("t", 0)], "the hook waited for a durable_progress that was not needed"


def test_a_bridged_publish_wakes_a_long_polling_kafka_consumer() -> None:
    k = held("sensors", 1)
    k.engine("sensors").acked = 1 << 40  # durable on append
    m = MqttHarness()
    Bridge([BridgeRule("sensors/#", "sensors")], k.broker, m.broker, k.clock)
    consumer = k.open("c")
    consumer.send(api.FETCH, 11, fetch_body("sensors", max_wait_ms=10_000))
    assert consumer.take() == []  # parked: nothing to read yet
    pub = m.connect("pub", MQTT_5)
    pub.take()
    pub.send(Publish("sensors/a", b"v"))
    ((_corr, body),) = consumer.take()
    _part, recs = fetched(body)
    assert [r.value for r in recs] == [b"v"], "the consumer slept through a bridged record"
