"""The MQTT -> Kafka bridge in the one simulated world (model/workloads/bridge.py): the checker
passes on scenarios/sim/node3-bridge.toml, catches a broker that loses its state on a crash, judges
synthetic histories (lost, unconsumed, phantoms, misrouted), and the scenario loader keeps
[[producers]] and [[groups]] off bridged Kafka topics."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from model.checkers.kafka import CEvent
from model.checkers.mqtt import PubRecord
from model.scenario import Scenario, ScenarioError, from_dict, load, read_toml
from model.workloads.bridge import BridgeWorkload
from model.workloads.kafka import KafkaWorkload
from model.workloads.mqtt import MqttWorkload
from model.world import World
from tests.model.helpers import trace_hash_in_process

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = ROOT / "scenarios" / "sim" / "node3-bridge.toml"


def short(state_log: str = "journal") -> Scenario:
    """node3-bridge.toml, shorter: faults and publishing until 1.2 s, drained by 2 s."""
    base = load(BRIDGE)
    return dataclasses.replace(base, state_log=state_log, duration_ms=2000.0,
                               faults=dataclasses.replace(base.faults, heal_ms=1200.0))


@pytest.mark.parametrize("seed", [1, 2])
def test_bridge_checker_passes_on_the_scenario(seed: int) -> None:
    """Every QoS >= 1 message acknowledged on bridge/# is in "from-mqtt" (read by reader1),
    across power loss of any node; the MQTT and Kafka checkers pass too."""
    world = World(load(BRIDGE), seed)
    result = world.run()
    assert result.outcome == "ok", result.detail
    bridge = result.stats["bridge"]
    assert bridge["rules"] == 1 and bridge["outcome"] == "ok"
    assert bridge["required"] > 0 and bridge["lost"] == 0
    assert bridge["received"] >= bridge["required"]
    assert bridge["unconsumed"] == bridge["phantoms"] == bridge["misrouted"] == 0
    assert result.stats["mqtt"]["outcome"] == result.stats["kafka"]["outcome"] == "ok"
    assert result.stats["faults_by_kind"]["crash"] >= 1
    kinds = [type(w) for w in world.workloads]
    assert kinds == [MqttWorkload, KafkaWorkload, BridgeWorkload]


def crash_wipes_the_bridged_topic(state_log: str) -> Scenario:
    """node3-bridge.toml, shorter, with node 1 (the clients' node, which holds the bridged
    topic's partitions) losing power at 500 and 900 ms, just after the consumers' connections
    were dropped (back 40-60 ms later): records acknowledged on bridge/# wait unread in
    "from-mqtt" when the crash comes."""
    raw = read_toml(BRIDGE)
    raw.update(state_log=state_log, duration_ms=2000)
    raw["clients"] = {**raw["clients"],
                      "reconnect": {"dist": "uniform", "low_ms": 40, "high_ms": 60}}
    raw["faults"] = {**raw["faults"], "heal_ms": 1200, "crash_targets": "clients",
                     "crash_rate_per_s": 0, "crash_at_ms": [500, 900],
                     "client_drop_rate_per_s": 0, "client_drop_targets": "consumers",
                     "client_drop_at_ms": [480, 480.5, 481, 880, 880.5, 881]}
    return from_dict(raw)


def test_bridge_checker_catches_a_broker_that_loses_state_on_crash() -> None:
    """With MemoryEngine shards that a crash wipes, some seed of a few loses acknowledged
    bridge/# messages from "from-mqtt" (the partitions restart empty at offset 0); the same
    seed with journals on the simulated disk is ok."""
    broken = crash_wipes_the_bridged_topic("memory")
    seen: dict[int, tuple[str, str]] = {}
    for seed in range(1, 5):
        result = World(broken, seed).run()
        bridge = result.stats["bridge"]
        seen[seed] = (bridge["outcome"], result.detail)
        if bridge["outcome"] != "ok":
            break
    else:
        pytest.fail(f"the bridge checker caught no seed: {seen}")
    assert result.outcome == "safety" and bridge["outcome"] == "safety", seen
    assert bridge["lost"] > 0 and "missing from the bridged Kafka topic" in bridge["detail"]
    ok = World(crash_wipes_the_bridged_topic("journal"), seed).run()
    assert ok.outcome == "ok", ok.detail
    assert ok.stats["bridge"]["required"] > 0 and ok.stats["faults_by_kind"]["crash"] == 2


def test_messages_published_before_the_bridge_topic_exists_are_not_lost() -> None:
    """Found by the bridge checker: with seed 3 the MQTT publishers' first messages on bridge/#
    reached node 1 before the bridge's Kafka topic existed (meta Raft across three nodes elects
    a leader first); the bridge dropped them (`dropped_no_topic`) and the broker acknowledged
    them anyway. Now node 1 serves MQTT only once the bridge's topics exist and a PUBLISH the
    bridge cannot copy is not acknowledged as accepted."""
    result = World(short("journal"), 3).run()
    bridge = result.stats["bridge"]
    assert bridge["lost"] == 0, bridge["lost_ids"]
    assert result.outcome == "ok", result.detail
    assert bridge["required"] > 0


# ---- the checker on synthetic histories ---------------------------------------------------------


def _idle() -> tuple[MqttWorkload, KafkaWorkload, BridgeWorkload]:
    """The workloads of a world that never runs: their histories are filled by hand."""
    world = World(load(BRIDGE), 1)
    mqtt, kafka, bridge = world.workloads
    assert isinstance(bridge, BridgeWorkload)
    return mqtt, kafka, bridge


def _pub(mqtt: MqttWorkload, p: int, seq: int, topic: str, sent: int, acked: int,
         qos: int = 1) -> None:
    mqtt.history.pubs[(p, seq)] = PubRecord(p, seq, qos, topic, sent, sent, acked)


def _recv(kafka: KafkaWorkload, t: int, p: int, seq: int, offset: int,
          reader: str = "reader1") -> None:
    kafka.history.cevents.append(CEvent(t, reader, 0, "recv", offset, p, seq))


def test_checker_separates_lost_from_unconsumed() -> None:
    mqtt, kafka, bridge = _idle()
    assert [r.name for r in kafka.readers if r.spec.topic == "from-mqtt"] == ["reader1"]
    _pub(mqtt, 0, 0, "bridge/0/0", 10, 20)
    _pub(mqtt, 0, 1, "bridge/0/0", 30, 40)  # lost: seq 2 of the same topic was received
    _pub(mqtt, 0, 2, "bridge/0/0", 50, 60)
    _pub(mqtt, 0, 3, "bridge/0/1", 70, 80)  # unconsumed: nothing later of bridge/0/1 arrived
    _pub(mqtt, 0, 4, "bridge/0/1", 90, -1)  # never acknowledged: not required
    _pub(mqtt, 3, 0, "local/3", 10, 20)  # not bridged
    _pub(mqtt, 2, 0, "bridge/orders/2", 10, 20, qos=0)  # QoS 0: no promise
    _recv(kafka, 100, 0, 0, 0)
    _recv(kafka, 101, 0, 2, 1)
    _recv(kafka, 102, 0, 0, 0, reader="reader0")  # the other topic's reader: not audited here
    report = bridge.check()
    assert report["required"] == 4 and report["received"] == 2
    assert report["lost"] == 1 and report["lost_ids"] == ["reader1: pub0 seq 1 (bridge/0/0)"]
    assert report["unconsumed"] == 1
    assert report["outcome"] == "safety"
    del mqtt.history.pubs[(0, 1)]
    report = bridge.check()
    assert report["lost"] == 0 and report["outcome"] == "liveness"
    assert "pub0 seq 3 (bridge/0/1)" in report["detail"]


def test_checker_flags_phantoms_and_misrouted_records() -> None:
    mqtt, kafka, bridge = _idle()
    _pub(mqtt, 3, 0, "local/3", 10, 20)
    _recv(kafka, 100, 7, 7, 0)  # no MQTT publisher sent (7, 7)
    report = bridge.check()
    assert report["phantoms"] == 1 and report["outcome"] == "safety"
    assert "no MQTT client sent" in report["detail"]
    kafka.history.cevents.clear()
    _recv(kafka, 100, 3, 0, 0)  # local/3 is not matched by bridge/#
    report = bridge.check()
    assert report["misrouted"] == 1 and report["outcome"] == "safety"
    assert "'local/3' in 'from-mqtt'" in report["detail"]


# ---- the loader ---------------------------------------------------------------------------------


def _bridged(**patch: Any) -> dict[str, Any]:
    raw = read_toml(BRIDGE)
    raw.update(patch)
    return raw


def test_the_scenario_file_loads_with_its_bridge() -> None:
    s = from_dict(_bridged())
    (rule,) = s.bridges
    assert (rule.mqtt, rule.kafka, rule.to_kafka) == ("bridge/#", "from-mqtt", True)
    assert s.has_mqtt and s.has_kafka and s.cluster.nodes == 3


def test_producers_on_a_bridged_topic_are_rejected() -> None:
    raw = _bridged(producers=[{"count": 1, "topic": "from-mqtt"}])
    with pytest.raises(ScenarioError) as info:
        from_dict(raw)
    assert "Kafka topics ['from-mqtt'] are both produced to by [[producers]] and bridged" in str(
        info.value)


def test_groups_on_a_bridged_topic_are_rejected() -> None:
    raw = _bridged(groups=[{"count": 2, "group": "g2", "topic": "from-mqtt"}])
    with pytest.raises(ScenarioError) as info:
        from_dict(raw)
    assert "Kafka topics ['from-mqtt'] are bridged from MQTT: read them with [[readers]]" in str(
        info.value)


def test_a_kafka_to_mqtt_rule_may_share_its_topic_with_producers() -> None:
    """Only MQTT -> Kafka rules are audited through readers; Kafka -> MQTT ones leave the topic
    to Kafka clients."""
    raw = _bridged(bridges=[{"mqtt": "bridge/#", "kafka": "events", "direction": "kafka-to-mqtt"}])
    s = from_dict(raw)
    assert [b.to_kafka for b in s.bridges] == [False]
    with pytest.raises(ScenarioError, match=r"\[\[bridges\]\] #1 of .*unknown key 'topic'"):
        from_dict(_bridged(bridges=[{"mqtt": "a/#", "kafka": "k", "topic": "x"}]))


def test_the_three_node_bridge_world_is_deterministic_across_processes_and_hash_seeds() -> None:
    """Same seed, same trace hash: in another process, under two PYTHONHASHSEED values (three
    whole nodes, MQTT, Kafka, the bridge and every fault kind of the scenario)."""
    first = trace_hash_in_process(BRIDGE, 3, "1")
    assert first == trace_hash_in_process(BRIDGE, 3, "2")
    assert World(load(BRIDGE), 3).run().trace_hash == first
