"""Kafka partitions on shared storage against real processes: `twinmq cluster up --storage s3`
starts one SeaweedFS for three nodes; a topic is an S3 topic (replication factor 1, the store is
the replica); its leader is SIGKILLed and another node takes the partition over from the store,
with every acknowledged record and nothing twice (an idempotent producer)."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from real.node import cluster

pytestmark = pytest.mark.integration


def topic_shards(node: dict[str, Any], name: str) -> list[list[int]]:
    """[[leader, epoch]] per partition, read linearizably; asks again on 503 (meta is electing:
    under CI load the meta group may re-elect around a shared partition's first open, which
    blocks its node's event loop on S3 requests, see docs/cluster.md "Not yet")."""
    url = f"http://127.0.0.1:{node['admin']}/meta/topics?consistency=linearizable"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                topics = json.loads(resp.read())
            return next(t["shards"] for t in topics if t["name"] == name)
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def test_a_shared_partition_survives_its_leader_being_killed(tmp_path: Path) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    quiet = open(os.devnull, "w")  # noqa: SIM115 - closed in finally
    try:
        assert cluster.up(3, tmp_path, [], storage="s3", out=quiet) == 0
        info = json.loads((tmp_path / "cluster.json").read_text())
        assert cluster._alive(info["store"]["pid"])
        nodes = {n["id"]: n for n in info["nodes"]}
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{nodes[2]['kafka']}")
        try:
            admin.create_topics([NewTopic("shared", 1, 3)])
        finally:
            admin.close()
        ((_leader, epoch),) = topic_shards(nodes[1], "shared")
        assert epoch >= 1, "an S3 topic: replication factor 1 on shared storage"
        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{nodes[1]['kafka']}",
                                 acks="all", enable_idempotence=True,
                                 request_timeout_ms=5_000, retries=50)
        try:
            for i in range(20):
                producer.send("shared", f"a{i}".encode()).get(timeout=20)
            ((leader, epoch),) = topic_shards(nodes[1], "shared")
            cluster.signal_node(tmp_path, leader, signal.SIGKILL)
            began = time.monotonic()
            producer.send("shared", b"b0").get(timeout=30)
            failover_s = time.monotonic() - began
            for i in range(1, 20):
                producer.send("shared", f"b{i}".encode()).get(timeout=30)
        finally:
            producer.close()
        assert failover_s < 10, failover_s
        alive = next(n for n in nodes if n != leader)
        ((new, new_epoch),) = topic_shards(nodes[alive], "shared")
        assert new != leader and new_epoch > epoch
        consumer = KafkaConsumer("shared", bootstrap_servers=f"127.0.0.1:{nodes[alive]['kafka']}",
                                 auto_offset_reset="earliest", consumer_timeout_ms=5_000)
        try:
            values = [m.value for m in consumer]
        finally:
            consumer.close()
        assert values == [f"a{i}".encode() for i in range(20)] + [
            f"b{i}".encode() for i in range(20)]
        log = Path(nodes[new]["log"]).read_text()
        assert f"leading shared partition shared/0 at epoch {new_epoch} from offset 20" in log
    finally:
        cluster.down(tmp_path, out=quiet)
        quiet.close()
    assert not cluster._alive(info["store"]["pid"]), "down stops the shared store"
