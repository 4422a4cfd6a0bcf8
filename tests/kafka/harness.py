"""Drive the sans-I/O `KafkaBroker` with codec-built frames: a manual clock, a fake meta service,
real storage engines and in-memory clients.

Pieces (all deterministic, no threads, no sleeps):

- `ManualClock`: integer milliseconds, moved only by the test (`Harness.advance`).
- `FakeMeta`: the broker's `MetaPort` over a real `MetaStateMachine`. In *sync* mode `propose`
  applies the command at once and calls `done` before returning; in *deferred* mode proposals
  queue until `run()` (what a Raft round trip looks like to the broker). `fail` makes proposals
  report an exception instead of applying (a lost leadership).
- Storage: a `ShardStore` with the memory engine and a "file" engine: a `JournalEngine` over a
  `model.devices.fs.SimFileSystem` (in memory, with power loss via `crash()`), fsync policy "group"
  by default, so durability is reached only when the test polls the store (`Harness.flush`).
- `KClient`: one connection. `send(api_key, version, body)` encodes a request with
  `codec.encode_request`; replies are split into frames and decoded with
  `codec.decode_response` against the *oldest request still waiting for a reply*, so decoding
  itself asserts that replies come in request order (the correlation id must match). Produce
  with acks=0 expects no reply. `raw=True` keeps frames undecoded (SASL v0 raw tokens).
- `Harness`: wires them; `pump()` moves the broker's output to the clients and reports closes
  back to the broker (as the shell does); `restart()` builds a new `KafkaBroker` over the same
  meta state (and, with `crash=True`, a fresh storage view after a simulated power loss).
"""

from __future__ import annotations

import random
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from model.devices.fs import SimFileSystem, SimFsConfig
from real.kafka import api
from real.kafka.broker import KafkaBroker, KafkaConfig
from real.kafka.codec import RequestHeader, decode_response, encode_request
from real.kafka.records import KRecord, build_batch, decode_batches
from real.meta import MetaResult, MetaStateMachine
from real.storage import MemoryEngine, ShardStore
from real.storage.journal import JournalConfig, JournalEngine

START_MS = 1_700_000_000_000


class ManualClock:
    """Integer milliseconds that only move when the test says so."""

    def __init__(self, now: int = START_MS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class FakeMeta:
    """`MetaPort` over a real `MetaStateMachine`, applying proposals now or on `run()`."""

    def __init__(self, machine: MetaStateMachine | None = None, deferred: bool = False) -> None:
        self.sm = machine if machine is not None else MetaStateMachine()
        self.deferred = deferred
        self.queue: deque[tuple[bytes, Callable[[MetaResult | Exception], None]]] = deque()
        self.proposed = 0
        self.fail: Exception | None = None

    def machine(self) -> MetaStateMachine:
        return self.sm

    def barrier(self, done: Callable[[], None]) -> Callable[[], None] | None:
        done()  # one node: its applied state is the latest
        return lambda: None

    def propose(self, data: bytes, done: Callable[[MetaResult | Exception], None]) -> None:
        self.proposed += 1
        if self.deferred:
            self.queue.append((data, done))
        else:
            self._apply(data, done)

    def _apply(self, data: bytes, done: Callable[[MetaResult | Exception], None]) -> None:
        if self.fail is not None:
            done(self.fail)
            return
        result = self.sm.apply(self.sm.applied_index + 1, data)
        self.sm.invariants()
        done(result)

    def run(self) -> int:
        """Apply every queued proposal (and any queued while applying); returns how many."""
        count = 0
        while self.queue:
            data, done = self.queue.popleft()
            self._apply(data, done)
            count += 1
        return count


class KClient:
    """One Kafka connection to the broker under test."""

    def __init__(self, harness: Harness, conn_id: int, client_id: str | None, raw: bool) -> None:
        self.h = harness
        self.id = conn_id
        self.client_id = client_id
        self.raw = raw
        self.buf = bytearray()
        self.expect: deque[tuple[int, int, int]] = deque()  # (correlation id, api key, version)
        self.replies: list[tuple[int, dict]] = []
        self.raw_frames: list[bytes] = []
        self.closed = False
        self._corr = 0

    def send(self, api_key: int, version: int, body: dict, *, reply: bool = True,
             pump: bool = True) -> int:
        """Send one request; returns its correlation id. `reply=False`: none is expected."""
        self._corr += 1
        frame = encode_request(RequestHeader(api_key, version, self._corr, self.client_id), body)
        if reply:
            self.expect.append((self._corr, api_key, version))
        self.send_bytes(frame, pump=pump)
        return self._corr

    def send_bytes(self, data: bytes, pump: bool = True) -> None:
        self.h.broker.receive(self.id, data)
        self.h.broker.invariants()
        if pump:
            self.h.pump()

    def feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4:
            size = struct.unpack_from(">i", self.buf, 0)[0]
            if len(self.buf) < 4 + size:
                break
            frame = bytes(self.buf[4:4 + size])
            del self.buf[:4 + size]
            if self.raw:
                self.raw_frames.append(frame)
                if self.expect:
                    self.expect.popleft()
                continue
            assert self.expect, f"connection {self.id}: a reply nobody asked for: {frame!r}"
            corr, key, version = self.expect.popleft()
            got, body = decode_response(key, version, frame)
            assert got == corr, f"reply to correlation id {got} where {corr} was due (order)"
            self.replies.append((corr, body))

    def take(self) -> list[tuple[int, dict]]:
        self.h.pump()
        out, self.replies = self.replies, []
        return out

    def call(self, api_key: int, version: int, body: dict) -> dict:
        """Send a request that the broker answers at once; returns the decoded body."""
        corr = self.send(api_key, version, body)
        replies = self.take()
        assert [c for c, _ in replies] == [corr], (api.NAMES[api_key], replies, self.closed)
        return replies[0][1]

    def drop(self) -> None:
        """The TCP connection breaks."""
        self.h.broker.closed(self.id)
        self.closed = True
        self.h.broker.invariants()


class Harness:
    """One `KafkaBroker` over a fake meta service and a `ShardStore`; see the module docstring."""

    def __init__(self, config: KafkaConfig | None = None, *, deferred: bool = False,
                 journal: JournalConfig | None = None,
                 sasl_factory: Callable[[], Any] | None = None) -> None:
        self.config = config or KafkaConfig(default_engine="memory")
        self.clock = ManualClock()
        self.meta = FakeMeta(deferred=deferred)
        self.fs = SimFileSystem(random.Random(7), SimFsConfig())
        self.journal = journal or JournalConfig(fsync="group", group_commit_ms=5)
        self.sasl_factory = sasl_factory
        self.lines: list[str] = []
        self.clients: dict[int, KClient] = {}
        self._next_conn = 1
        self.shards = self._store()
        self.broker = self._broker()

    def _store(self) -> ShardStore:
        def journal(name: str) -> JournalEngine:
            directory = name.replace(":", "_")
            return JournalEngine(self.fs, directory, self.clock, self.journal)

        return ShardStore({"memory": lambda _name: MemoryEngine(), "file": journal},
                          default_engine="memory")

    def _broker(self) -> KafkaBroker:
        return KafkaBroker(self.config, self.clock, self.shards, self.meta,
                           sasl_factory=self.sasl_factory, log=self.lines.append)

    def restart(self, *, crash: bool = False) -> None:
        """A new broker over the same meta state; every connection is gone. `crash=True` also
        loses what the file engines had not synced (memory engines lose everything)."""
        for client in self.clients.values():
            client.closed = True
        self.clients.clear()
        if crash:
            self.fs.crash()
        else:
            self.shards.close()
        self.shards = self._store()
        self.broker = self._broker()

    # ---- plumbing ------------------------------------------------------------------------------

    def open(self, client_id: str | None = "tester", raw: bool = False) -> KClient:
        conn_id = self._next_conn
        self._next_conn += 1
        client = self.clients[conn_id] = KClient(self, conn_id, client_id, raw)
        self.broker.open(conn_id, peer=f"10.0.0.2:{40000 + conn_id}")
        self.broker.invariants()
        return client

    def pump(self) -> None:
        for conn_id, data, close in self.broker.drain():
            client = self.clients.get(conn_id)
            assert client is not None and not client.closed, f"output for gone conn {conn_id}"
            if data:
                client.feed(data)
            if close:
                client.closed = True
                self.broker.closed(conn_id)
        self.broker.invariants()  # after every input: each one ends with a pump

    def advance(self, ms: int) -> None:
        """Time passes: timers fire (long polls, group sessions)."""
        self.clock.now += ms
        self.broker.tick()
        self.pump()

    def flush(self, ms: int | None = None) -> None:
        """The engines' group commit runs (after `ms`, default the commit interval)."""
        self.clock.now += self.journal.group_commit_ms if ms is None else ms
        self.shards.poll(self.clock.now)
        self.broker.durable_progress()
        self.pump()

    def run_meta(self) -> int:
        count = self.meta.run()
        self.pump()
        return count

    # ---- request helpers -------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1, engine: str | None = None,
                     **configs: str) -> None:
        entries = [{"name": k.replace("_", "."), "value": v} for k, v in configs.items()]
        if engine is not None:
            entries.append({"name": "storage.engine", "value": engine})
        client = self.open("admin")
        client.send(api.CREATE_TOPICS, 4, {"topics": [{
            "name": name, "num_partitions": partitions, "replication_factor": 1,
            "configs": entries}], "timeout_ms": 1000})
        if self.meta.deferred:
            self.run_meta()
        ((_, body),) = client.take()
        assert body["topics"][0]["error_code"] == 0, body
        client.drop()


def records(*values: bytes | None, ts: int = START_MS, key: bytes | None = None,
            headers: tuple[tuple[str, bytes | None], ...] = ()) -> list[KRecord]:
    return [KRecord(-1, ts + i, key, v, headers) for i, v in enumerate(values)]


def batch(*values: bytes | None, **kwargs: Any) -> bytes:
    """One producer batch of records holding `values` (build_batch keywords pass through)."""
    rec_kw = {k: kwargs.pop(k) for k in ("ts", "key", "headers") if k in kwargs}
    return build_batch(records(*values, **rec_kw), **kwargs)


def produce_body(topic: str, data: bytes, partition: int = 0, acks: int = -1) -> dict:
    return {"transactional_id": None, "acks": acks, "timeout_ms": 30_000, "topic_data": [
        {"name": topic, "partition_data": [{"index": partition, "records": data}]}]}


def fetch_body(topic: str, offset: int = 0, partition: int = 0, *, max_wait_ms: int = 0,
               min_bytes: int = 1, max_bytes: int = 50 << 20,
               partition_max_bytes: int = 1 << 20, partitions: list[int] | None = None) -> dict:
    parts = [{"partition": p, "fetch_offset": offset, "partition_max_bytes": partition_max_bytes,
              "log_start_offset": -1, "current_leader_epoch": -1}
             for p in (partitions if partitions is not None else [partition])]
    return {"replica_id": -1, "max_wait_ms": max_wait_ms, "min_bytes": min_bytes,
            "max_bytes": max_bytes, "isolation_level": 1, "session_id": 0, "session_epoch": -1,
            "topics": [{"topic": topic, "partitions": parts}], "forgotten_topics_data": [],
            "rack_id": ""}


def fetched(body: dict, partition_index: int = 0) -> tuple[dict, list[KRecord]]:
    """(partition entry, decoded records) of the one topic in a Fetch response."""
    (topic,) = body["responses"]
    (part,) = [p for p in topic["partitions"] if p["partition_index"] == partition_index]
    data = part["records"] or b""
    return part, decode_batches(bytes(data)) if data else []
