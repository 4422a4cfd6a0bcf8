"""Three `twinmq serve` processes forming one meta Raft group over the inter-node transport
(real/node/peers.py): an election, every node registered through the leader (two of them
forwarding), a Kafka topic created through a follower and read through another node (Metadata
points the client at the topic's node), the leader SIGKILLed and replaced, the killed node back
in step, and strangers refused at the peer port."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from real.cluster.wire import Kind, encode_frame
from real.node import cluster

SETTLE_SECONDS_MAX = 20.0
IDS = (1, 2, 3)


class Cluster:
    """Three nodes started by `twinmq cluster`'s launcher (real/node/cluster.py)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.nodes = {n["id"]: n for n in cluster.start(len(IDS), tmp)}
        self.kafka = {i: n["kafka"] for i, n in self.nodes.items()}
        self.raft = {i: n["raft"] for i, n in self.nodes.items()}

    def health(self, nid: int) -> dict[str, Any] | None:
        return cluster.health(self.nodes[nid])

    def settled(self, nodes: tuple[int, ...]) -> tuple[int, int, str] | None:
        """(leader, term, meta digest) once every node in `nodes` agrees on them and lists all
        three nodes as registered; else None."""
        views = [cluster.node_status(self.nodes[n]) for n in nodes]
        if not all(v["serving"] for v in views):
            return None
        seen = {(v["leader"], v["term"], v["digest"]) for v in views}
        if len(seen) != 1:
            return None
        leader, term, digest = seen.pop()
        if leader not in nodes or views[0]["registered"] != list(IDS):
            return None
        return leader, term, digest

    def wait(self, nodes: tuple[int, ...]) -> tuple[int, int, str]:
        deadline = time.monotonic() + SETTLE_SECONDS_MAX
        while time.monotonic() < deadline:
            for nid in nodes:
                assert cluster.node_status(self.nodes[nid])["alive"], \
                    (self.tmp / f"n{nid}.log").read_text()
            got = self.settled(nodes)
            if got is not None:
                return got
            time.sleep(0.05)
        logs = "\n".join((self.tmp / f"n{n}.log").read_text()[-2000:] for n in nodes)
        raise AssertionError(f"no agreement among {nodes} in {SETTLE_SECONDS_MAX}s\n{logs}")

    def kill(self, nid: int) -> None:
        cluster.signal_node(self.tmp, nid, signal.SIGKILL)

    def restart(self, nid: int) -> None:
        self.nodes[nid]["pid"] = cluster.restart(self.tmp, nid)

    def stop_all(self) -> None:
        with open(os.devnull, "w") as quiet:
            cluster.down(self.tmp, out=quiet)


@pytest.mark.integration
@pytest.mark.smoke
def test_three_nodes_elect_register_fail_over_and_rejoin(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        leader, term, _ = c.wait(IDS)
        follower = next(n for n in IDS if n != leader)
        other = next(n for n in IDS if n not in (leader, follower))
        # created through a follower (meta forwards it), produced there, and consumed by a
        # client that bootstraps from a third node: Metadata sends it to the topic's node
        _kafka_round_trip(c.kafka[follower], c.kafka[other], "through-a-follower")

        c.kill(leader)
        survivors = tuple(n for n in IDS if n != leader)
        killed_at = time.monotonic()
        new_leader, new_term, _ = c.wait(survivors)
        failover_s = time.monotonic() - killed_at
        assert new_leader != leader and new_term > term
        assert failover_s < 10, failover_s

        c.restart(leader)
        back_leader, back_term, _ = c.wait(IDS)
        assert (back_leader, back_term) == (new_leader, new_term)  # the old leader follows
        # the three agree on the meta state (its re-registration, a new broker epoch, may apply
        # after the agreement on leader and term)
        deadline = time.monotonic() + SETTLE_SECONDS_MAX
        while time.monotonic() < deadline:
            views = [c.health(n) for n in IDS]
            digests = {v["meta"]["digest"] for v in views if v is not None}
            if len(digests) == 1 and None not in views:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"the restarted node never caught up: {views}")
    finally:
        c.stop_all()


def _kafka_round_trip(produce_port: int, consume_port: int, topic: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{produce_port}", acks="all",
                             request_timeout_ms=10_000)
    try:
        producer.send(topic, b"hello").get(timeout=15)
    finally:
        producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=f"127.0.0.1:{consume_port}",
                             auto_offset_reset="earliest", consumer_timeout_ms=10_000)
    try:
        assert [m.value for m in consumer][:1] == [b"hello"]
    finally:
        consumer.close()


@pytest.mark.integration
def test_strangers_are_refused_at_the_peer_port(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        leader, term, _ = c.wait(IDS)
        for hello in (b"\x01\x01\x00\x00\x00\x09" + b"n" * 16 + b"other-cluster",
                      b"garbage that is not a frame at all"):
            with socket.create_connection(("127.0.0.1", c.raft[1]), timeout=5) as s:
                s.sendall(encode_frame(Kind.HELLO, hello) if b"cluster" in hello else hello)
                reply = b""
                while chunk := s.recv(4096):
                    reply += chunk
            assert reply == b"" or reply[5] == Kind.REJECT, reply  # refused, then closed
        assert c.settled(IDS)[:2] == (leader, term)  # type: ignore[index]
        assert "closed a connection from" in (tmp_path / "n1.log").read_text()
    finally:
        c.stop_all()
