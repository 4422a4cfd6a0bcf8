"""The node's Prometheus exposition: names, values and types, read back with prometheus-client's
own parser; one registry per node; process metrics included."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from real.kafka.broker import Stats as KafkaStats
from real.mqtt.broker import LATENCY_BUCKETS_MS
from real.mqtt.broker import Stats as MqttStats
from real.node.admin import Text
from real.node.metrics import NodeMetrics, render


class FakeMqtt:
    """The two things the collector reads: `stats` and `gauges()`, as the broker has them."""

    def __init__(self) -> None:
        self.stats = MqttStats(connects=5, connect_refused=2, auth_failures=1, bytes_in=1000,
                               bytes_out=2000, logged_publishes=3, checkpoints=1)
        self.stats.msgs_in[1] = 7
        self.stats.msgs_out[0] = 9
        self.stats.drop("qos0_congested", 4)
        self.stats.drop("queue_full")
        for ms in (0.2, 3, 3, 7000):
            self.stats.observe_latency(ms)

    def gauges(self) -> dict[str, int]:
        return {"connections": 2, "sessions": 3, "subscriptions": 4, "retained": 5,
                "inflight": 6, "queued": 7, "acks_awaiting_durability": 8}


class FakeKafka:
    def __init__(self) -> None:
        self.stats = KafkaStats(requests={"Produce": 3, "ApiVersions": 1}, malformed=1,
                                produced_batches=3, produced_bytes=300, fetched_bytes=200,
                                duplicates=1, connections=2, auth_failures=0)

    def gauges(self) -> dict[str, Any]:
        return {"connections": 1, "partitions_open": 2, "fetch_waits": 0, "produce_waits": 1}


def samples(text: str | bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    if isinstance(text, bytes):
        text = text.decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def types(text: str) -> dict[str, str]:
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def test_mqtt_families() -> None:
    text = NodeMetrics(mqtt=FakeMqtt(), process=False).render().body
    assert isinstance(text, bytes)
    got = samples(text)
    assert got[("twinmq_mqtt_connections", ())] == 2
    assert got[("twinmq_mqtt_acks_awaiting_durability", ())] == 8
    assert got[("twinmq_mqtt_connects_total", ())] == 5
    assert got[("twinmq_mqtt_connects_refused_total", ())] == 2
    assert got[("twinmq_mqtt_received_bytes_total", ())] == 1000
    assert got[("twinmq_mqtt_messages_received_total", (("qos", "1"),))] == 7
    assert got[("twinmq_mqtt_messages_sent_total", (("qos", "2"),))] == 0
    assert got[("twinmq_mqtt_messages_dropped_total", (("reason", "qos0_congested"),))] == 4
    assert got[("twinmq_mqtt_messages_dropped_total", (("reason", "queue_full"),))] == 1
    # the exact lines the node tests and dashboards grep for
    lines = text.decode().splitlines()
    assert "# TYPE twinmq_mqtt_connects_total counter" in lines
    assert "# TYPE twinmq_mqtt_connections gauge" in lines
    assert 'twinmq_mqtt_messages_received_total{qos="1"} 7.0' in lines
    kinds = types(text.decode())
    assert kinds["twinmq_mqtt_connects"] == "counter"
    assert kinds["twinmq_mqtt_deliver_latency_ms"] == "histogram"
    assert not any(name.startswith(("process_", "python_")) for name in kinds)


def test_latency_histogram_is_cumulative() -> None:
    got = samples(NodeMetrics(mqtt=FakeMqtt(), process=False).render().body)
    name = "twinmq_mqtt_deliver_latency_ms"
    buckets = [got[(f"{name}_bucket", (("le", str(b)),))] for b in LATENCY_BUCKETS_MS]  # as before
    assert buckets == sorted(buckets)
    assert got[(f"{name}_bucket", (("le", "0.5"),))] == 1
    assert got[(f"{name}_bucket", (("le", "5"),))] == 3
    assert got[(f"{name}_bucket", (("le", "+Inf"),))] == 4  # 7000 ms is past the last bound
    assert got[(f"{name}_count", ())] == 4
    assert got[(f"{name}_sum", ())] == 7006.2


def test_kafka_families() -> None:
    got = samples(NodeMetrics(kafka=FakeKafka(), process=False).render().body)
    assert got[("twinmq_kafka_requests_total", (("api", "Produce"),))] == 3
    assert got[("twinmq_kafka_requests_total", (("api", "ApiVersions"),))] == 1
    assert got[("twinmq_kafka_produced_bytes_total", ())] == 300
    assert got[("twinmq_kafka_duplicate_batches_total", ())] == 1
    assert got[("twinmq_kafka_connections_accepted_total", ())] == 2
    assert got[("twinmq_kafka_produce_waits", ())] == 1
    assert not any(name.startswith("twinmq_mqtt_") for name, _ in got)


def test_process_metrics_and_a_registry_per_node() -> None:
    mqtt = FakeMqtt()
    first, second = NodeMetrics(mqtt=mqtt), NodeMetrics(mqtt=mqtt, kafka=FakeKafka())
    assert first.registry is not second.registry
    text = first.render()
    assert text.content_type == "text/plain; version=0.0.4; charset=utf-8"
    got = samples(text.body)
    assert got[("process_resident_memory_bytes", ())] > 0
    assert got[("process_cpu_seconds_total", ())] >= 0
    assert any(name == "python_info" for name, _ in got)
    mqtt.stats.connects += 1  # read at scrape time, not at registration
    assert samples(second.render().body)[("twinmq_mqtt_connects_total", ())] == 6
    assert REGISTRY.get_sample_value("twinmq_mqtt_connects_total") is None  # not the global one


def test_text_render_of_one_broker() -> None:
    text = render(FakeMqtt())
    assert isinstance(text, str)
    assert "twinmq_mqtt_connections 2.0" in text
    assert "process_cpu_seconds_total" in text
    assert isinstance(Text(text).body, str)


class FakeClusterLog:
    def view(self) -> dict[str, Any]:
        return {"published": 10, "batches_sent": 4, "batches_forwarded": 3, "batches_resent": 1,
                "batches_lost_with_peer": 1, "batches_stored": 2, "batches_duplicate": 1,
                "delivered": 30, "dropped_qos0": 5, "pending": 2, "queued_bytes": 64,
                "refusals": {"not_leader": 2}}


def test_node_and_cluster_labels_on_every_twinmq_series_and_the_cluster_log() -> None:
    metrics = NodeMetrics(mqtt=FakeMqtt(), kafka=FakeKafka(), cluster_log=FakeClusterLog(),
                          node_id=2, cluster="c1")
    text = metrics.render().body
    got = samples(text)
    node = (("cluster", "c1"), ("node", "2"))
    assert got[("twinmq_node_info", node)] == 1
    assert got[("twinmq_mqtt_connects_total", node)] == 5
    assert got[("twinmq_kafka_requests_total", (("api", "Produce"), *node))] == 3
    assert got[("twinmq_mqtt_cluster_published_total", node)] == 10
    assert got[("twinmq_mqtt_cluster_batches_lost_with_peer_total", node)] == 1
    assert got[("twinmq_mqtt_cluster_qos0_dropped_total", node)] == 5
    assert got[("twinmq_mqtt_cluster_pending", node)] == 2
    assert got[("twinmq_mqtt_cluster_refusals_total", (*node, ("reason", "not_leader")))] == 2
    assert all(dict(labels).get("node") == "2" for name, labels in got
               if name.startswith("twinmq_")), "a twinmq series without its node"
    assert got[("process_cpu_seconds_total", ())] >= 0  # process metrics stay unlabelled
    types_ = types(text.decode() if isinstance(text, bytes) else text)
    assert types_["twinmq_mqtt_cluster_published"] == "counter"
