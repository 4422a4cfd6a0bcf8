"""The MQTT -> Kafka bridge, judged end to end from what the clients saw.

A bridge rule (`[[bridges]]`, real/kafka/bridge.py) turns every MQTT PUBLISH whose topic matches
its filter into a record of its Kafka topic (key: the MQTT topic, value: the payload), and a QoS
1/2 PUBLISH is acknowledged only once that Kafka copy is durable too. This workload has no
clients of its own: it runs the bridge oracles (model/checkers/bridge.py) over the MQTT
publishers' history and what the Kafka `[[readers]]` of each rule's topic received.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from model.checkers.bridge import check_bridge
from model.workloads import Workload

if TYPE_CHECKING:
    from model.workloads.kafka import KafkaWorkload
    from model.workloads.mqtt import MqttWorkload
    from model.world import World


class BridgeWorkload(Workload):
    name = "bridge"

    def __init__(self, world: World, mqtt: MqttWorkload, kafka: KafkaWorkload) -> None:
        self.world = world
        self.mqtt = mqtt
        self.kafka = kafka
        self.rules = [rule for rule in world.scenario.bridges if rule.to_kafka]

    # ---- the checker (model/checkers/bridge.py)

    def check(self) -> dict[str, Any]:
        return check_bridge(self.rules, self.mqtt, self.kafka)
