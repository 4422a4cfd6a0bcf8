"""Replicated partitions on a real 3-node cluster, with real clients.

- kcat, confluent-kafka and kafka-python each produce to a replication-factor-3 topic through one
  node and read it back through another (Metadata sends them to each partition's leader).
- The chaos drills of scenarios/chaos/drills.py (kill a partition leader, kill the meta leader,
  SIGSTOP a leader past the session timeout, rolling restart), each run checked from its client
  history: no acknowledged record lost, no duplicate from the idempotent producer, no offset
  reused, no consumer skip. `make chaos` runs TWINMQ_CHAOS_RUNS runs of each (default 5); the
  default suite runs one run of one drill (smoke). `python -m scenarios.chaos.drills --runs 50`
  writes reports/chaos.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scenarios.chaos import drills
from scenarios.chaos.drills import RealCluster
from tests.kafka_clients.clients import Confluent, KafkaPython, Kcat, Rec

RUNS = int(os.environ.get("TWINMQ_CHAOS_RUNS", "5"))


@pytest.mark.integration
@pytest.mark.smoke
def test_three_clients_through_any_node_on_a_replicated_topic(tmp_path: Path) -> None:
    c = RealCluster(tmp_path / "c")
    try:
        drills.create_topic(c, "rf3")
        shards = c.topics()["rf3"]
        assert sorted(s[0] for s in shards) == [1, 2, 3], shards  # leaders spread
        assert all(sorted(s[2]) == [1, 2, 3] and sorted(s[3]) == [1, 2, 3] for s in shards)
        ports = [c.nodes[n]["kafka"] for n in (1, 2, 3)]
        clients = (KafkaPython, Confluent, Kcat)
        sent: list[bytes] = []
        for i, client in enumerate(clients):
            records = [Rec(f"k{i}".encode(), f"{client.name}-{j}".encode(), (), j % 3)
                       for j in range(30)]
            client(f"127.0.0.1:{ports[i]}").produce("rf3", records)
            sent += [r.value for r in records if r.value is not None]
        for i, client in enumerate(clients):
            (got,) = client(f"127.0.0.1:{ports[(i + 1) % 3]}").read("rf3", [0, 1, 2], len(sent))
            assert sorted(r.value for r in got if r.value is not None) == sorted(sent), \
                client.name
    finally:
        c.stop()


@pytest.mark.integration
@pytest.mark.chaos
@pytest.mark.smoke
def test_kill_a_partition_leader_under_idempotent_acks_all(tmp_path: Path) -> None:
    results = drills.run_drill("kill-partition-leader", 1, seed=7, work=tmp_path / "c",
                               log=lambda _line: None)
    (r,) = results
    assert r["ok"], r
    assert r["acked"] > 100 and r["lost"] == 0 and r["duplicates"] == 0
    assert r["failover_ms"] is not None and r["failover_ms"] < 5_000, r


@pytest.mark.chaos
@pytest.mark.parametrize("drill", drills.DRILLS)
def test_chaos_drill(drill: str, tmp_path: Path) -> None:
    results = drills.run_drill(drill, RUNS, seed=11, work=tmp_path / "c",
                               log=lambda _line: None)
    bad = [r for r in results if not r["ok"]]
    assert not bad, bad
    assert all(r["acked"] > 0 for r in results)
