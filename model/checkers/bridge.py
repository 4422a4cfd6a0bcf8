"""The MQTT -> Kafka bridge oracles, over what the clients saw (model/workloads/bridge.py runs
them at the end of a run).

They read the MQTT publishers' history (model/workloads/mqtt.py) and what the Kafka `[[readers]]`
of the rule's topic received (model/workloads/kafka.py), and check:

- *lost* (safety): an MQTT message acknowledged (PUBACK, or PUBREC for QoS 2) on a bridged topic
  is missing from a reader of the rule's Kafka topic although that reader received a message of
  the same MQTT topic first sent after the acknowledgement (one MQTT topic maps to one partition,
  in order). Missing with nothing later received is *unconsumed* (liveness).
- *phantoms* (safety): a record in the bridged topic that no MQTT publisher ever sent.
- *misrouted* (safety): a record whose MQTT topic the rule's filter does not match.

Kafka -> MQTT rules are not audited here yet (the MQTT subscribers' checker sees their messages
only as unknown publishers' receipts, which it ignores).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from real.kafka.bridge import BridgeRule
from real.mqtt.topics import matches

if TYPE_CHECKING:
    from model.workloads.kafka import KafkaWorkload
    from model.workloads.mqtt import MqttWorkload

IDS_MAX = 20


def check_bridge(rules: list[BridgeRule], mqtt: MqttWorkload, kafka: KafkaWorkload
                 ) -> dict[str, Any]:
    """The report of the bridge oracles (outcome, detail and counts) for `rules`."""
    pubs = mqtt.history.pubs
    lost: list[str] = []
    unconsumed: list[str] = []
    phantoms: list[str] = []
    misrouted: list[str] = []
    required = received = 0
    for rule in rules:
        readers = [r for r in kafka.readers if r.spec.topic == rule.kafka]
        acked = [rec for rec in pubs.values() if rec.qos >= 1 and rec.acked_us >= 0
                 and not rec.refused and matches(rule.mqtt, rec.topic)]
        for reader in readers:
            got: dict[tuple[int, int], int] = {}
            for e in kafka.history.cevents:
                if e.consumer != reader.name or e.kind != "recv":
                    continue
                received += 1
                key = (e.producer, e.seq)
                got.setdefault(key, e.t_us)
                rec = pubs.get(key)
                if rec is None:
                    phantoms.append(f"{reader.name}: p{e.partition}@{e.offset} = {key}")
                elif not matches(rule.mqtt, rec.topic):
                    misrouted.append(f"{reader.name}: {rec.topic!r} in {rule.kafka!r}")
            latest_sent: dict[str, int] = {}  # MQTT topic -> latest first send received
            for key in got:
                rec = pubs.get(key)
                if rec is not None and rec.first_sent_us > latest_sent.get(rec.topic, -1):
                    latest_sent[rec.topic] = rec.first_sent_us
            for rec in acked:
                required += 1
                if (rec.publisher, rec.seq) in got:
                    continue
                what = f"{reader.name}: pub{rec.publisher} seq {rec.seq} ({rec.topic})"
                if latest_sent.get(rec.topic, -1) > rec.acked_us:
                    lost.append(what)
                else:
                    unconsumed.append(what)
    report: dict[str, Any] = {
        "rules": len(rules), "required": required, "received": received,
        "lost": len(lost), "lost_ids": lost[:IDS_MAX], "unconsumed": len(unconsumed),
        "phantoms": len(phantoms), "misrouted": len(misrouted),
        "outcome": "ok", "detail": "",
    }
    for items, what in ((lost, "acknowledged MQTT message(s) missing from the bridged "
                               "Kafka topic"),
                        (phantoms, "record(s) in the bridged topic no MQTT client sent"),
                        (misrouted, "record(s) bridged by a rule that does not match")):
        if items:
            report["outcome"], report["detail"] = "safety", (
                f"{len(items)} {what} (first: {items[0]})")
            return report
    if unconsumed:
        report["outcome"], report["detail"] = "liveness", (
            f"{len(unconsumed)} acknowledged MQTT message(s) not in the bridged Kafka topic "
            f"at the end of the drain (first: {unconsumed[0]})")
    return report
