"""The node's Prometheus metrics, rendered by `prometheus-client` (text exposition format 0.0.4).

    metrics = NodeMetrics(mqtt=broker, kafka=kafka_broker)   # once per node; either may be None
    metrics.render()                                          # -> admin `Text`, per GET /metrics

Each `NodeMetrics` has its own `CollectorRegistry` (never the library's global one), holding:

* `MqttCollector`: `twinmq_mqtt_*` from `Broker.stats` and `Broker.gauges()`,
* `KafkaCollector`: `twinmq_kafka_*` from `KafkaBroker.stats` and `KafkaBroker.gauges()`,
* `MqttClusterCollector`: `twinmq_mqtt_cluster_*` from the MQTT cluster log, when there is one,
* with a node id, `twinmq_node_info` and a `node` and `cluster` label on every `twinmq_*` series,
* prometheus-client's `ProcessCollector` (`process_*`: CPU seconds, resident memory, open fds,
  start time) and `PlatformCollector` (`python_info`).

The brokers stay pure and keep plain counters; the collectors read them at scrape time, on the
event loop, so a scrape sees one consistent state. Names carry the unit (`_bytes`, `_ms`) and
counters end in `_total` (prometheus-client adds the suffix to a counter family's name).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from real.mqtt.broker import LATENCY_BUCKETS_MS
from real.node.admin import Text

_MQTT_GAUGES = (
    ("connections", "connections", "Connected MQTT clients."),
    ("sessions", "sessions", "Sessions (connected and offline persistent)."),
    ("subscriptions", "subscriptions", "Subscriptions of all sessions."),
    ("retained_messages", "retained", "Retained messages."),
    ("inflight_messages", "inflight", "Outbound QoS 1/2 messages awaiting acknowledgement."),
    ("queued_messages", "queued", "Messages queued for offline or slow sessions."),
    ("acks_awaiting_durability", "acks_awaiting_durability",
     "PUBACK/PUBREC held until the state log is durable."),
)
_MQTT_COUNTERS = (  # (name without _total, Stats field, help)
    ("connects", "connects", "Accepted CONNECTs."),
    ("connects_refused", "connect_refused", "Refused CONNECTs (any reason)."),
    ("auth_failures", "auth_failures", "CONNECTs refused by authentication."),
    ("protocol_errors", "protocol_errors",
     "Connections closed for a malformed packet or a protocol error."),
    ("received_bytes", "bytes_in", "Bytes received from MQTT clients."),
    ("sent_bytes", "bytes_out", "Bytes sent to MQTT clients."),
    ("state_log_publishes", "logged_publishes",
     "Messages written to the state log (persistent targets or retained)."),
    ("checkpoints", "checkpoints", "State log checkpoints."),
    ("client_id_claims", "claims", "CONNECTs that claimed their client id in meta (cluster)."),
    ("client_id_claims_waited", "claims_waited",
     "Claims that waited for another node to hand the session over."),
    ("client_id_claims_given_up", "claims_forced",
     "Claims that went on without the previous node's hand-over (it did not come back)."),
    ("sessions_handed_over", "handovers_out", "Sessions this node handed to another node."),
    ("sessions_taken_over", "handovers_in", "Sessions another node handed to this node."),
)
_KAFKA_GAUGES = (
    ("connections", "connections", "Open Kafka client connections."),
    ("partitions_open", "partitions_open", "Partition logs open on this node."),
    ("fetch_waits", "fetch_waits", "Fetch requests parked until data or their max wait."),
    ("produce_waits", "produce_waits", "Produce requests waiting for durability (acks)."),
)
_KAFKA_COUNTERS = (
    ("connections_accepted", "connections", "Accepted Kafka connections."),
    ("malformed_requests", "malformed", "Requests closed as malformed."),
    ("produced_batches", "produced_batches", "Record batches appended."),
    ("produced_bytes", "produced_bytes", "Record batch bytes appended."),
    ("fetched_bytes", "fetched_bytes", "Record batch bytes returned by Fetch."),
    ("duplicate_batches", "duplicates", "Idempotent-producer batches acknowledged as "
                                        "duplicates, not appended."),
    ("auth_failures", "auth_failures", "SASL authentications refused."),
)


class MqttCollector(Collector):
    """`twinmq_mqtt_*` families read from an MQTT `Broker` at each scrape."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        stats = self.broker.stats
        yield from _plain("twinmq_mqtt_", self.broker.gauges(), stats, _MQTT_GAUGES,
                          _MQTT_COUNTERS)
        by_qos_families = (("messages_received", stats.msgs_in, "PUBLISH packets received."),
                           ("messages_sent", stats.msgs_out, "PUBLISH packets sent."))
        for name, by_qos, text in by_qos_families:
            family = CounterMetricFamily(f"twinmq_mqtt_{name}", text, labels=["qos"])
            for qos in range(3):
                family.add_metric([str(qos)], by_qos[qos])
            yield family
        dropped = CounterMetricFamily("twinmq_mqtt_messages_dropped",
                                      "Messages not delivered, by reason.", labels=["reason"])
        for reason, count in sorted(stats.dropped.items()):
            dropped.add_metric([reason], count)
        yield dropped
        yield _latency_histogram(stats.latency_counts, stats.latency_sum_ms)


def _plain(prefix: str, gauges: dict[str, Any], stats: object,
           gauge_specs: tuple[tuple[str, str, str], ...],
           counter_specs: tuple[tuple[str, str, str], ...]) -> Iterator[Metric]:
    """Unlabelled families: gauges from the `gauges()` dict, counters from `stats` fields."""
    for name, key, text in gauge_specs:
        yield GaugeMetricFamily(prefix + name, text, value=gauges[key])
    for name, field, text in counter_specs:
        yield CounterMetricFamily(prefix + name, text, value=getattr(stats, field))


def _latency_histogram(counts: list[int], total_ms: float) -> HistogramMetricFamily:
    assert len(counts) == len(LATENCY_BUCKETS_MS) + 1, (len(counts), LATENCY_BUCKETS_MS)
    buckets, cumulative = [], 0
    for bound, count in zip(LATENCY_BUCKETS_MS, counts, strict=False):
        cumulative += count
        buckets.append((str(bound), cumulative))
    buckets.append(("+Inf", cumulative + counts[-1]))
    return HistogramMetricFamily("twinmq_mqtt_deliver_latency_ms",
                                 "Time from a PUBLISH arriving to each copy being sent.",
                                 buckets=buckets, sum_value=round(total_ms, 3))


class KafkaCollector(Collector):
    """`twinmq_kafka_*` families read from a `KafkaBroker` at each scrape."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        stats = self.broker.stats
        yield from _plain("twinmq_kafka_", self.broker.gauges(), stats, _KAFKA_GAUGES,
                          _KAFKA_COUNTERS)
        requests = CounterMetricFamily("twinmq_kafka_requests", "Requests handled, by API.",
                                       labels=["api"])
        for api, count in sorted(stats.requests.items()):
            requests.add_metric([api], count)
        yield requests


_CLUSTER_COUNTERS = (  # (name without _total, view key, help)
    ("published", "published", "Messages this node wrote to the cluster log."),
    ("batches_sent", "batches_sent", "Batches sent to a partition's leader (this node too)."),
    ("batches_forwarded", "batches_forwarded", "Batches sent to another node's partition."),
    ("batches_resent", "batches_resent", "Batches sent again (timeout, refusal, new leader)."),
    ("batches_lost_with_peer", "batches_lost_with_peer",
     "Batches sent again because their leader's process was gone."),
    ("batches_stored", "batches_stored", "Batches stored as a partition's leader."),
    ("batches_duplicate", "batches_duplicate",
     "Batches a leader found stored already (a re-sent write, stored once)."),
    ("delivered", "delivered", "Committed messages routed to this node's subscribers."),
    ("qos0_dropped", "dropped_qos0", "QoS 0 messages dropped: the write queue was full."),
)


class MqttClusterCollector(Collector):
    """`twinmq_mqtt_cluster_*` families from the MQTT cluster log (`ClusterLog.view()`)."""

    def __init__(self, cluster_log: Any) -> None:
        self.cluster_log = cluster_log

    def collect(self) -> Iterator[Metric]:
        view = self.cluster_log.view()
        for name, key, text in _CLUSTER_COUNTERS:
            yield CounterMetricFamily(f"twinmq_mqtt_cluster_{name}", text, value=view[key])
        yield GaugeMetricFamily("twinmq_mqtt_cluster_pending",
                                "Messages written and not yet committed.", value=view["pending"])
        yield GaugeMetricFamily("twinmq_mqtt_cluster_queued_bytes",
                                "Bytes waiting to be written.", value=view["queued_bytes"])
        refusals = CounterMetricFamily("twinmq_mqtt_cluster_refusals",
                                       "Batches a leader refused, by reason.", labels=["reason"])
        for reason, count in sorted(view["refusals"].items()):
            refusals.add_metric([reason], count)
        yield refusals


class _Labelled(Collector):
    """Another collector's families with constant labels added to every sample (the node id and
    the cluster id, so that series scraped from several nodes stay apart and join)."""

    def __init__(self, inner: Collector, labels: dict[str, str]) -> None:
        self.inner = inner
        self.labels = labels

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            family.samples = [sample._replace(labels={**self.labels, **sample.labels})
                              for sample in family.samples]
            yield family


class NodeMetrics:
    """One node's registry: the brokers it runs plus process and platform metrics. With
    `node_id`, every `twinmq_*` series carries `node` and `cluster` labels, and
    `twinmq_node_info` says which node answered."""

    def __init__(self, *, mqtt: Any = None, kafka: Any = None, cluster_log: Any = None,
                 node_id: int | None = None, cluster: str = "twinmq",
                 process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        labels = {} if node_id is None else {"node": str(node_id), "cluster": cluster}
        collectors: list[Collector] = []
        if mqtt is not None:
            collectors.append(MqttCollector(mqtt))
        if kafka is not None:
            collectors.append(KafkaCollector(kafka))
        if cluster_log is not None:
            collectors.append(MqttClusterCollector(cluster_log))
        if labels:
            collectors.append(_NodeInfo())
        for collector in collectors:
            self.registry.register(_Labelled(collector, labels) if labels else collector)
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)

    def render(self) -> Text:
        """The exposition for GET /metrics."""
        return Text(generate_latest(self.registry))  # text/plain; version=0.0.4


class _NodeInfo(Collector):
    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("twinmq_node_info", "Always 1; its labels name the node.",
                                value=1)


def render(broker: Any) -> str:
    """The exposition of one MQTT broker with process metrics, as text (a fresh registry)."""
    return generate_latest(NodeMetrics(mqtt=broker).registry).decode()
