"""Consumer groups across a real 3-node cluster: one coordinator for the whole cluster.

Every node's FindCoordinator names the same node (the meta leader); group requests sent to
another node get NOT_COORDINATOR, so two confluent-kafka consumers bootstrapped on different
nodes form ONE group and split the partitions, and together read each record once. When the
coordinator's node is killed, the coordinator moves with meta leadership: the survivors name
the new one, the consumer left rejoins there and reads the rest from the committed offsets.
"""

from __future__ import annotations

import signal
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from real.kafka import errors as E
from real.kafka.api import FIND_COORDINATOR, HEARTBEAT
from real.kafka.codec import RequestHeader, decode_response, encode_request
from scenarios.chaos import drills
from scenarios.chaos.drills import RealCluster

GROUP = "g-cluster"


def _call(port: int, api_key: int, version: int, body: dict) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(encode_request(RequestHeader(api_key, version, 7, "t"), body))
        (size,) = struct.unpack(">i", _exact(sock, 4))
        _corr, reply = decode_response(api_key, version, _exact(sock, size))
        return reply


def _exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "connection closed"
        out += chunk
    return out


def _coordinators(c: RealCluster) -> dict[int, int]:
    """node -> the coordinator its FindCoordinator names (-1 on an error)."""
    out = {}
    for node in c.live():
        reply = _call(node["kafka"], FIND_COORDINATOR, 2, {"key": GROUP, "key_type": 0})
        out[node["id"]] = reply["node_id"] if reply["error_code"] == 0 else -1
    return out


def _consumer(c: RealCluster, node: int, seen: list[tuple[int, int, bytes]],
              assigned: dict[int, set[int]], stop: threading.Event,
              errors: list[str]) -> threading.Thread:
    from confluent_kafka import Consumer

    def run() -> None:
        consumer = Consumer({"bootstrap.servers": f"127.0.0.1:{c.nodes[node]['kafka']}",
                             "group.id": GROUP, "auto.offset.reset": "earliest",
                             "enable.auto.commit": True, "auto.commit.interval.ms": 200,
                             "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                             "log_level": 0})
        def on_assign(_c: Any, parts: list[Any]) -> None:
            assigned[node] = {p.partition for p in parts}

        def on_revoke(_c: Any, _parts: list[Any]) -> None:
            assigned[node] = set()

        consumer.subscribe(["rf3"], on_assign=on_assign, on_revoke=on_revoke)
        try:
            while not stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    if not msg.error().retriable():
                        errors.append(str(msg.error()))
                    continue
                seen.append((msg.partition(), msg.offset(), msg.value()))
        finally:
            consumer.close()

    thread = threading.Thread(target=run, name=f"consumer-{node}", daemon=True)
    thread.start()
    return thread


def _produce(c: RealCluster, values: list[bytes]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": c.bootstrap, "acks": "all",
                         "enable.idempotence": True, "log_level": 0})
    failed: list[Any] = []
    for i, value in enumerate(values):
        producer.produce("rf3", value, partition=i % 3,
                         on_delivery=lambda err, _m: failed.append(err) if err else None)
    assert producer.flush(60) == 0 and not failed, failed


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)  # polling threads' progress: there is no event to wait on
    raise AssertionError(f"{what} within {timeout} s")


@pytest.mark.integration
def test_one_coordinator_one_group_across_nodes_and_it_moves_with_meta(tmp_path: Path) -> None:
    c = RealCluster(tmp_path / "c")
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        drills.create_topic(c, "rf3")
        leader = c.meta_leader()
        _wait(lambda: set(_coordinators(c).values()) == {leader}, 30,
              "every node names the meta leader")  # a node may still be applying its entries
        other = next(n["id"] for n in c.live() if n["id"] != leader)
        refused = _call(c.nodes[other]["kafka"], HEARTBEAT, 0,
                        {"group_id": GROUP, "generation_id": 1, "member_id": "m"})
        assert refused["error_code"] == E.NOT_COORDINATOR

        # two consumers, bootstrapped on the two nodes that do not coordinate
        seen: dict[int, list[tuple[int, int, bytes]]] = {}
        assigned: dict[int, set[int]] = {}
        errors: list[str] = []
        others = [n["id"] for n in c.live() if n["id"] != leader]
        for node in others:
            seen[node] = []
            threads.append(_consumer(c, node, seen[node], assigned, stop, errors))
        _wait(lambda: len(assigned) == 2 and all(assigned.values())
              and set().union(*assigned.values()) == {0, 1, 2}, 60,
              "one group: both consumers assigned, the partitions split between them")
        a, b = assigned.values()
        assert not a & b, assigned
        first = [b"a%d" % i for i in range(300)]
        _produce(c, first)
        _wait(lambda: sum(map(len, seen.values())) >= len(first), 60, "every record read")
        time.sleep(1)  # no duplicate shows up later (an in-flight second group would)
        reads = [r for got in seen.values() for r in got]
        assert sorted(r[2] for r in reads) == sorted(first), "each record once, one group"
        parts = [{p for p, _o, _v in got} for got in seen.values()]
        assert all(parts) and not parts[0] & parts[1], parts  # each read its own partitions

        # the coordinator's node dies: meta elects another leader, the group moves there
        time.sleep(0.6)  # let auto-commit (200 ms) record the positions
        c.signal(leader, signal.SIGKILL)
        new = c.wait_settled()
        assert new != leader
        _wait(lambda: set(_coordinators(c).values()) == {new}, 30, "survivors name the new one")
        second = [b"b%d" % i for i in range(300)]
        _produce(c, second)
        _wait(lambda: {r[2] for got in seen.values() for r in got} >= set(second), 90,
              "the rest read after the coordinator moved")
        assert not errors, errors
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
        c.stop()
