"""Three `twinmq serve` processes forming one meta Raft group over the inter-node transport
(real/node/peers.py): an election, every node registered through the leader (two of them
forwarding), a Kafka topic created through a follower and read through another node (Metadata
points the client at the topic's node), the leader SIGKILLed and replaced, the killed node back
in step, and strangers refused at the peer port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from real.cluster.wire import Kind, encode_frame
from tests.node.test_serve_integration import free_port, get

ROOT = Path(__file__).resolve().parents[2]
SETTLE_SECONDS_MAX = 20.0
IDS = (1, 2, 3)


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.secret = tmp / "secret"
        self.secret.write_text("a-shared-secret-for-this-test-only\n")
        self.admin = {i: free_port() for i in IDS}
        self.kafka = {i: free_port() for i in IDS}
        self.raft = {i: free_port() for i in IDS}
        self.peers = ",".join(f"{i}=127.0.0.1:{self.raft[i]}" for i in IDS)
        self.procs: dict[int, subprocess.Popen[str]] = {}

    def start(self, nid: int) -> None:
        cmd = [sys.executable, "-m", "real", "serve", "--node-id", str(nid),
               "--data-dir", str(self.tmp / f"n{nid}"), "--admin-port", str(self.admin[nid]),
               "--mqtt-port", "0", "--ws-port", "0", "--kafka-port", str(self.kafka[nid]),
               "--peers", self.peers, "--cluster-secret-file", str(self.secret)]
        log = (self.tmp / f"n{nid}.log").open("a")
        self.procs[nid] = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                           text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def health(self, nid: int) -> dict[str, Any] | None:
        try:
            return get(self.admin[nid], "/health")  # type: ignore[no-any-return]
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return None

    def settled(self, nodes: tuple[int, ...]) -> tuple[int, int, str] | None:
        """(leader, term, meta digest) once every node in `nodes` agrees on them and lists all
        three nodes as registered; else None."""
        views = [self.health(n) for n in nodes]
        if any(v is None for v in views):
            return None
        seen = {(v["raft"]["leader"], v["raft"]["term"], v["meta"]["digest"])  # type: ignore
                for v in views}
        if len(seen) != 1:
            return None
        leader, term, digest = seen.pop()
        if leader not in nodes:
            return None
        registered = [n["node_id"] for n in get(self.admin[leader], "/meta/nodes")]
        return (leader, term, digest) if registered == list(IDS) else None

    def wait(self, nodes: tuple[int, ...]) -> tuple[int, int, str]:
        deadline = time.monotonic() + SETTLE_SECONDS_MAX
        while time.monotonic() < deadline:
            for nid in nodes:
                assert self.procs[nid].poll() is None, (self.tmp / f"n{nid}.log").read_text()
            got = self.settled(nodes)
            if got is not None:
                return got
            time.sleep(0.05)
        logs = "\n".join((self.tmp / f"n{n}.log").read_text()[-2000:] for n in nodes)
        raise AssertionError(f"no agreement among {nodes} in {SETTLE_SECONDS_MAX}s\n{logs}")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.mark.integration
@pytest.mark.smoke
def test_three_nodes_elect_register_fail_over_and_rejoin(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        for nid in IDS:
            c.start(nid)
        leader, term, _ = c.wait(IDS)
        follower = next(n for n in IDS if n != leader)
        other = next(n for n in IDS if n not in (leader, follower))
        # created through a follower (meta forwards it), produced there, and consumed by a
        # client that bootstraps from a third node: Metadata sends it to the topic's node
        _kafka_round_trip(c.kafka[follower], c.kafka[other], "through-a-follower")

        c.procs[leader].send_signal(signal.SIGKILL)
        c.procs[leader].wait(timeout=10)
        survivors = tuple(n for n in IDS if n != leader)
        killed_at = time.monotonic()
        new_leader, new_term, _ = c.wait(survivors)
        failover_s = time.monotonic() - killed_at
        assert new_leader != leader and new_term > term
        assert failover_s < 10, failover_s

        c.start(leader)
        back_leader, back_term, digest = c.wait(IDS)
        assert (back_leader, back_term) == (new_leader, new_term)  # the old leader follows
        assert c.health(leader)["meta"]["digest"] == digest  # type: ignore[index]
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
        for nid in IDS:
            c.start(nid)
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
