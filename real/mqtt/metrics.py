"""The broker's counters and gauges in the Prometheus text exposition format (version 0.0.4).

Pure: `render(broker)` reads `Broker.stats` and `Broker.gauges()`; the admin server serves it at
`GET /metrics`. Names carry the unit (`_bytes`, `_ms`) and counters end in `_total`.
"""

from __future__ import annotations

from real.mqtt.broker import LATENCY_BUCKETS_MS, Broker


def _line(out: list[str], name: str, kind: str, help_text: str,
          samples: list[tuple[str, float]]) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        shown = int(value) if float(value).is_integer() else round(value, 3)
        out.append(f"{name}{labels} {shown}")


def render(broker: Broker) -> str:
    s = broker.stats
    g = broker.gauges()
    out: list[str] = []
    gauges = (
        ("connections", "connections", "Connected MQTT clients."),
        ("sessions", "sessions", "Sessions (connected and offline persistent)."),
        ("subscriptions", "subscriptions", "Subscriptions of all sessions."),
        ("retained_messages", "retained", "Retained messages."),
        ("inflight_messages", "inflight", "Outbound QoS 1/2 messages awaiting acknowledgement."),
        ("queued_messages", "queued", "Messages queued for offline or slow sessions."),
        ("acks_awaiting_durability", "acks_awaiting_durability",
         "PUBACK/PUBREC held until the state log is durable."),
    )
    for name, key, text in gauges:
        _line(out, f"twinmq_mqtt_{name}", "gauge", text, [("", g[key])])
    counters = (
        ("connects_total", s.connects, "Accepted CONNECTs."),
        ("connects_refused_total", s.connect_refused, "Refused CONNECTs (any reason)."),
        ("auth_failures_total", s.auth_failures, "CONNECTs refused by authentication."),
        ("protocol_errors_total", s.protocol_errors, "Connections closed for a malformed packet "
                                                     "or a protocol error."),
        ("received_bytes_total", s.bytes_in, "Bytes received from MQTT clients."),
        ("sent_bytes_total", s.bytes_out, "Bytes sent to MQTT clients."),
        ("state_log_publishes_total", s.logged_publishes,
         "Messages written to the state log (persistent targets or retained)."),
        ("checkpoints_total", s.checkpoints, "State log checkpoints."),
    )
    for name, value, text in counters:
        _line(out, f"twinmq_mqtt_{name}", "counter", text, [("", value)])
    _line(out, "twinmq_mqtt_messages_received_total", "counter", "PUBLISH packets received.",
          [(f'{{qos="{q}"}}', s.msgs_in[q]) for q in range(3)])
    _line(out, "twinmq_mqtt_messages_sent_total", "counter", "PUBLISH packets sent.",
          [(f'{{qos="{q}"}}', s.msgs_out[q]) for q in range(3)])
    _line(out, "twinmq_mqtt_messages_dropped_total", "counter",
          "Messages not delivered, by reason.",
          [(f'{{reason="{r}"}}', n) for r, n in sorted(s.dropped.items())])
    name = "twinmq_mqtt_deliver_latency_ms"
    out.append(f"# HELP {name} Time from a PUBLISH arriving to each copy being sent.")
    out.append(f"# TYPE {name} histogram")
    cumulative = 0
    for bound, count in zip(LATENCY_BUCKETS_MS, s.latency_counts, strict=False):
        cumulative += count
        out.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
    cumulative += s.latency_counts[-1]
    out.append(f'{name}_bucket{{le="+Inf"}} {cumulative}')
    out.append(f"{name}_sum {round(s.latency_sum_ms, 3)}")
    out.append(f"{name}_count {cumulative}")
    return "\n".join(out) + "\n"
