"""MQTT chaos drills on a real 3-node cluster with paho-mqtt clients
(scenarios/chaos/mqtt_drills.py): kill the subscriber's node, kill the publishers' node, cut a
node off, SIGSTOP the node holding the session, rolling restart, power loss; every run checked
from its client history (no acknowledged message lost at the persistent subscriber, no QoS 2
duplicate, publish order per topic, everything acknowledged). `make chaos` runs
TWINMQ_CHAOS_RUNS runs of each (default 5). Not in the default suite yet: their first runs
(reports/chaos-mqtt.md) found anomalies still to be explained (messages lost in 1 of 10
kill-subscriber-node runs and in power-loss runs, QoS 2 duplicates and order violations after
the publishers' node dies), so a one-run smoke would fail at random; issue 12 keeps them."""

from __future__ import annotations

import os

import pytest

from scenarios.chaos import mqtt_drills

RUNS = int(os.environ.get("TWINMQ_CHAOS_RUNS", "5"))


@pytest.mark.integration
@pytest.mark.chaos
def test_a_session_survives_the_death_of_its_node() -> None:
    (r,) = mqtt_drills.run_drill("kill-subscriber-node", 1, seed=3, log=lambda _line: None)
    assert r["ok"], r
    assert r["acked"] > 100 and r["lost"] == 0 and r["duplicates_qos2"] == 0
    assert r["sessions_back"] >= 1, "the subscriber's session came back on another node"


@pytest.mark.chaos
@pytest.mark.parametrize("drill", mqtt_drills.DRILLS)
def test_mqtt_chaos_drill(drill: str) -> None:
    results = mqtt_drills.run_drill(drill, RUNS, seed=11, log=lambda _line: None)
    bad = [r for r in results if not r["ok"]]
    assert not bad, bad
    assert all(r["acked"] > 0 for r in results)
