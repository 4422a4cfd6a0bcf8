"""Meta membership change on real `twinmq serve` processes: `twinmq cluster join` starts a
fourth node blank and the leader adds it (learner, then voter); clients produce and consume a
replication-factor-3 topic through it; `twinmq cluster leave` removes the meta leader itself
(it hands leadership over first); a restarted original node, whose configuration never named
the new node, reaches it through the address meta recorded."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from real.node import cluster

SETTLE_SECONDS_MAX = 30.0


def members(node: dict[str, Any]) -> dict[str, Any]:
    url = f"http://{node['host']}:{node['admin']}/cluster/members"
    with urllib.request.urlopen(url, timeout=2) as resp:
        return dict(json.loads(resp.read()))


def nodes(work: Path) -> dict[int, dict[str, Any]]:
    return {n["id"]: n for n in json.loads((work / "cluster.json").read_text())["nodes"]}


def wait_settled(work: Path) -> int:
    deadline = time.monotonic() + SETTLE_SECONDS_MAX
    while time.monotonic() < deadline:
        leader = cluster.settled(list(nodes(work).values()))
        if leader:
            return leader
        time.sleep(0.05)
    raise AssertionError(f"no settled cluster in {work}")


def round_trip(produce_port: int, consume_port: int, topic: str, value: bytes) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{produce_port}")
    try:
        if topic not in admin.list_topics():
            admin.create_topics([NewTopic(topic, 1, 3)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{produce_port}", acks="all",
                             request_timeout_ms=10_000, retries=10)
    try:
        producer.send(topic, value).get(timeout=20)
    finally:
        producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=f"127.0.0.1:{consume_port}",
                             auto_offset_reset="earliest", consumer_timeout_ms=10_000)
    try:
        assert value in [m.value for m in consumer]
    finally:
        consumer.close()


@pytest.mark.integration
def test_join_a_fourth_node_then_the_leader_leaves(tmp_path: Path) -> None:
    quiet = open(os.devnull, "w")  # noqa: SIM115 - closed in finally
    try:
        assert cluster.up(3, tmp_path, [], out=quiet) == 0
        node = cluster.join(tmp_path, out=quiet)
        assert node["id"] == 4 and "--join" in node["cmd"]
        leader = wait_settled(tmp_path)
        ns = nodes(tmp_path)
        for n in ns.values():
            view = members(n)
            assert view["voters"] == [1, 2, 3, 4] and view["learners"] == [], view
            assert view["addresses"] == {"4": f"{node['host']}:{node['raft']}"}, view
        round_trip(ns[4]["kafka"], ns[1]["kafka"], "after-join", b"one")

        cluster.leave(tmp_path, leader, out=quiet)
        ns = nodes(tmp_path)
        assert leader not in ns and sorted(ns) == sorted({1, 2, 3, 4} - {leader})
        new_leader = wait_settled(tmp_path)
        assert new_leader != leader
        for n in ns.values():
            assert members(n)["voters"] == sorted(ns), members(n)
        round_trip(ns[4]["kafka"], ns[min(ns)]["kafka"], "after-join", b"two")

        original = next(i for i in sorted(ns) if i != 4 and i != new_leader)
        cluster.signal_node(tmp_path, original, signal.SIGKILL)
        cluster.restart(tmp_path, original)
        wait_settled(tmp_path)
        assert members(nodes(tmp_path)[original])["voters"] == sorted(ns)
    finally:
        if (tmp_path / "cluster.json").exists():
            cluster.down(tmp_path, out=quiet)
        quiet.close()
