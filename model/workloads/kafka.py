"""Kafka clients against the simulated cluster: producers, consumer groups and assign-and-seek
readers on the clients' node, and the history they observe.

The node they talk to is the product's own composed object (model/world.py hosts it), as
`twinmq serve` runs it: the real `KafkaBroker` (partition logs, group coordinator, produce
durability, long-poll fetch) over the node's `ShardStore`, with topics created through the meta
Raft group; only the world around it is simulated:

- **Storage.** Partitions are shards of a `real.storage.shards.ShardStore`. With
  `state_log = "journal"` every shard is a `JournalEngine` (fsync "group") over one shared
  `SimFileSystem`, so a broker crash is a power loss: `fs.crash()` keeps what was fdatasynced
  (plus a random prefix of the rest) and the restarted broker re-opens (recovers) every partition
  from what the files hold. With `state_log = "memory"` the shards are `MemoryEngine`s that a
  crash wipes: a deliberately broken broker, to show the checkers notice lost data. Filesystem
  calls charge simulated time; the broker process waits it out before it sends anything.
- **Meta service.** Topic creation and committed offsets go through the node's own meta Raft
  replica (single voter), whose log is the real on-disk format on the same simulated disk: a
  crash loses what was not fsynced, and the restarted node recovers the applied commands.
- **Network.** Connections are `model.devices.conn.SimConn` pipes: in-order bytes, sampled one-way
  latency, optional bandwidth, network-wide delay spikes; an abrupt close discards what is in
  flight.
- **Host.** `SimHost` feeds arrivals (open, bytes, close) to the node in order, waits for the
  filesystem time, and runs the node's timers and group commits (the fdatasync in the
  background, as the real host's worker thread does).

**Clients** speak the wire protocol through `real.kafka.codec` (`encode_request` /
`decode_response`) and `real.kafka.records` (`build_batch` / `decode_batches`). Each keeps its
state across reconnects; a connection whose oldest request outlives `request_timeout_ms` is reset
by the client (as Kafka's NetworkClient does) and redialled after `[clients] reconnect`.

- *Producers* (Metadata with auto-create, then InitProducerId when idempotent) create records at a
  fixed rate (value `"<producer>:<seq>:"` padded), partition them round-robin by sequence
  (`seq % partitions`), and send Produce requests of at most `batch_records_max` records with at
  most `inflight_max` requests in flight. A batch is built once and re-sent byte for byte (same
  producer id, epoch and base sequence) after an error, a timeout or a disconnect, which is where
  idempotence matters. Records beyond `queue_max` waiting locally are `rejected` (counted).
- *Group consumers* use two connections, as Kafka clients do: a coordinator connection
  (Metadata, FindCoordinator, JoinGroup with MEMBER_ID_REQUIRED handling, SyncGroup, Heartbeat,
  OffsetFetch, OffsetCommit) and a fetch connection (ListOffsets, Fetch long polls). The leader
  computes a range assignment client-side (Kafka's ConsumerProtocol v0 subscription/assignment
  encodings). REBALANCE_IN_PROGRESS on a heartbeat commits current positions, then rejoins;
  ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID rejoin without committing. Positions start at the
  committed offset, else at the earliest offset; OFFSET_OUT_OF_RANGE resets to the earliest.
- *Readers* assign every partition and seek to the beginning, then fetch forever (no group, no
  commits): the audit trail of what the partitions hold.

**Faults** come from the world's nemesis (model/nemesis.py): crashes of the clients' node (power
loss) and restart, abrupt client drops (one connection of a random client), network delay
spikes, and consumer pauses (a group consumer's process stops, longer than its session timeout if
configured so: no heartbeats, no reads; everything that arrives waits until it resumes).
Producers stop creating records at heal; the run drains until `duration_ms`.

**Planted bugs** (`broker_bugs = [...]`, for testing the checkers; the broker core is untouched,
the simulator's shell misbehaves around it):
- `drop-acked-batch`: the first Produce after `broker_bug_at_ms` is answered NONE with the
  partition's current end offset as base offset, and never reaches the broker.
- `no-dedupe`: every Produce's batches are rebuilt without producer id/epoch/sequence before the
  broker sees them, so the broker cannot drop retried duplicates.

The checkers that judge their history are model/checkers/kafka.py.

**Trace kinds** (node: the client's id, 100 and up, producers first, then group consumers, then
readers; `broker-up` and `bug` on the clients' node): `broker-up`, `bug`; per client
`dial`, `closed`, `drop`, `timeout`, `pause`/`resume`; producers `ready`, `pid`, `send`, `ack`,
`produce-error`, `reject`; group consumers `joined`, `join-error`, `assigned`, `revoked`,
`rejoin`, `hb-error`, `commit`, `commit-error`; consumers `seek` (why: committed, earliest,
reset), `out-of-range`, `fetch-error`, `recv`.
"""


from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import simpy

from model.checkers.kafka import (
    Assignment,
    CEvent,
    Commit,
    History,
    KafkaChecker,
    ProdRecord,
)
from model.devices.conn import FIN, SimConn
from model.scenario import GroupSpec, ProducerSpec, ReaderSpec
from model.workloads import Workload
from real.kafka import api
from real.kafka import errors as E
from real.kafka.codec import (
    RequestHeader,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from real.kafka.records import KRecord, build_batch, decode_batches
from real.server.node import NodeCore, Proto

if TYPE_CHECKING:
    from model.world import World

US_PER_MS = 1000
RETRY_BACKOFF_US = 20_000  # a client's pause before retrying a failed metadata/join step

# Request versions the simulated clients speak (all inside real.kafka.api.VERSIONS).
V_PRODUCE, V_FETCH, V_LIST_OFFSETS, V_METADATA = 7, 11, 5, 8
V_OFFSET_COMMIT, V_OFFSET_FETCH, V_FIND_COORDINATOR = 7, 5, 2
V_JOIN, V_SYNC, V_HEARTBEAT, V_INIT_PID = 5, 3, 3, 1

# ================================================================================ clients


class Channel:
    """One client connection: requests with correlation ids, responses matched in order, a
    request timeout that resets the connection, and a redial after `[clients] reconnect`."""

    def __init__(self, owner: KClient, label: str) -> None:
        self.owner = owner
        self.world = owner.world
        self.label = label
        self.name: str = f"{owner.name}/{label}"
        self.node: int = owner.node
        self.conn: SimConn | None = None
        self.buf = bytearray()
        self.pending: deque[tuple[int, int, int, Callable[[dict], None]]] = deque()
        self.corr = 0
        self.dials = 0

    @property
    def up(self) -> bool:
        return self.conn is not None

    def open(self) -> None:
        assert self.conn is None
        self.buf.clear()
        self.pending.clear()
        self.dials += 1
        self.conn = self.world.dial(self)
        self.owner.emit("dial", ch=self.label, attempt=self.dials)
        self.owner.channel_open(self)

    def request(self, api_key: int, version: int, body: dict, on_reply: Callable[[dict], None],
                timeout_ms: int) -> None:
        conn = self.conn
        assert conn is not None
        self.corr += 1
        corr = self.corr
        data = encode_request(RequestHeader(api_key, version, corr, self.owner.name), body)
        self.pending.append((corr, api_key, version, on_reply))
        conn.up.send(data)
        self.owner.later(timeout_ms * US_PER_MS, lambda: self._check_timeout(conn, corr))

    def _check_timeout(self, conn: SimConn, corr: int) -> None:
        if conn is not self.conn or not any(p[0] == corr for p in self.pending):
            return
        self.owner.emit("timeout", ch=self.label, api=api.NAMES[self.pending[0][1]])
        self.drop()

    def drop(self) -> None:
        """Abrupt close from this side (a timeout, an error, a fault)."""
        if self.conn is not None:
            self.world.reset(self.conn, by_client=True)

    def arrive(self, conn: SimConn, item: bytes | None) -> None:
        self.owner.call(lambda: self._arrive(conn, item))

    def closed(self, conn: SimConn) -> None:
        self.owner.call(lambda: self._gone(conn))

    def _arrive(self, conn: SimConn, item: bytes | None) -> None:
        if conn is not self.conn:
            return
        if item is FIN:
            self._gone(conn)
            return
        buf = self.buf
        buf += item
        while len(buf) >= 4:
            size = int.from_bytes(buf[:4], "big")
            if len(buf) < 4 + size:
                return
            frame = bytes(buf[4:4 + size])
            del buf[:4 + size]
            corr, api_key, version, on_reply = self.pending.popleft()
            got, body = decode_response(api_key, version, frame)
            assert got == corr, f"{self.name}: correlation id {got}, expected {corr}"
            on_reply(body)
            if conn is not self.conn:
                return

    def _gone(self, conn: SimConn) -> None:
        if conn is not self.conn:
            return
        self.conn = None
        self.pending.clear()
        self.buf.clear()
        self.owner.emit("closed", ch=self.label)
        self.owner.later(self.world.reconnect_us(self.owner.rng), self._reopen)
        self.owner.channel_closed(self)

    def _reopen(self) -> None:
        if self.conn is None:
            self.open()


class KClient:
    """What every simulated client shares: a name, a trace node, an rng, and a process that can
    be paused (everything that arrives or comes due while paused waits, in order)."""

    def __init__(self, world: KafkaWorkload, node: int, name: str, rng: Any) -> None:
        self.world = world
        self.env = world.env
        self.node: int = node
        self.name: str = name
        self.rng = rng
        self.paused = False
        self.deferred: deque[Callable[[], None]] = deque()
        self.channels: list[Channel] = []

    def emit(self, kind: str, **fields: Any) -> None:
        self.world.history.emit(self.node, kind, **fields)

    def call(self, fn: Callable[[], None]) -> None:
        if self.paused:
            self.deferred.append(fn)
        else:
            fn()

    def later(self, delay_us: int, fn: Callable[[], None]) -> None:
        self.world.later(max(1, delay_us), lambda: self.call(fn))

    def pause(self, length_us: int) -> None:
        self.paused = True
        self.emit("pause", ms=length_us // US_PER_MS)
        self.world.later(max(1, length_us), self.resume)

    def resume(self) -> None:
        self.paused = False
        self.emit("resume", deferred=len(self.deferred))
        while self.deferred and not self.paused:
            self.deferred.popleft()()

    def channel_open(self, ch: Channel) -> None:
        raise NotImplementedError

    def channel_closed(self, ch: Channel) -> None:
        raise NotImplementedError

    def _metadata(self, ch: Channel, topic: str, done: Callable[[int], None],
                  timeout_ms: int) -> None:
        """Metadata for `topic` (auto-creating it); `done(partitions)` once it has partitions,
        retried after a backoff while it has none (creation goes through the meta service)."""
        conn = ch.conn
        body = {"topics": [{"name": topic}], "allow_auto_topic_creation": True,
                "include_cluster_authorized_operations": False,
                "include_topic_authorized_operations": False}

        def reply(resp: dict) -> None:
            entry = next((t for t in resp["topics"] if t["name"] == topic), None)
            if entry is None or entry["error_code"] or not entry["partitions"]:
                def retry() -> None:
                    if ch.conn is conn:
                        self._metadata(ch, topic, done, timeout_ms)

                self.later(RETRY_BACKOFF_US, retry)
                return
            done(len(entry["partitions"]))

        ch.request(api.METADATA, V_METADATA, body, reply, timeout_ms)


def record_value(producer: int, seq: int, size: int) -> bytes:
    return f"{producer}:{seq}:".encode().ljust(size, b".")


def parse_value(value: bytes | None) -> tuple[int, int]:
    parts = (value or b"").split(b":", 2)
    assert len(parts) == 3, value
    return int(parts[0]), int(parts[1])


class _ProduceReq:
    """One Produce request of a producer: partition -> (batch bytes, record sequences)."""

    __slots__ = ("batches",)

    def __init__(self) -> None:
        self.batches: dict[int, tuple[bytes, list[int]]] = {}


class Producer(KClient):
    def __init__(self, world: KafkaWorkload, node: int, index: int, spec: ProducerSpec,
                 rng: Any) -> None:
        super().__init__(world, node, f"prod{index}", rng)
        self.index = index
        self.spec = spec
        self.ch = Channel(self, "main")
        self.channels = [self.ch]
        self.partitions = 0
        self.producer_id = -1
        self.producer_epoch = -1
        self.ready = False
        self.next_seq = 0
        self.part_seq: dict[int, int] = {}
        self.queue: deque[int] = deque()
        self.inflight: list[_ProduceReq] = []

    def run(self) -> Generator[simpy.Event, Any, None]:
        self.ch.open()
        interval = max(1, round(1e6 / self.spec.rate_per_s))
        start = round(self.world.scenario.warmup_ms * US_PER_MS) + self.rng.randrange(interval)
        yield self.env.timeout(max(0, start - int(self.env.now)))
        stop = self.world.stop_us
        while self.env.now < stop:
            self._new_record()
            yield self.env.timeout(interval)

    def unfinished(self) -> int:
        return len(self.queue) + sum(len(s) for r in self.inflight for _b, s in
                                     r.batches.values())

    # ---- connection ------------------------------------------------------------------------

    def channel_open(self, ch: Channel) -> None:
        self.ready = False
        self._metadata(ch, self.spec.topic, self._on_metadata, self.spec.request_timeout_ms)

    def channel_closed(self, ch: Channel) -> None:
        self.ready = False

    def _on_metadata(self, partitions: int) -> None:
        assert self.partitions in (0, partitions), (self.partitions, partitions)
        self.partitions = partitions
        if self.spec.idempotent and self.producer_id < 0:
            self._init_producer_id()
        else:
            self._ready()

    def _init_producer_id(self) -> None:
        conn = self.ch.conn

        def reply(body: dict) -> None:
            if body["error_code"] or body["producer_id"] < 0:
                self.emit("pid-error", code=body["error_code"])
                def retry() -> None:
                    if self.ch.conn is conn:
                        self._init_producer_id()

                self.later(RETRY_BACKOFF_US, retry)
                return
            self.producer_id, self.producer_epoch = body["producer_id"], body["producer_epoch"]
            self.emit("pid", id=self.producer_id, epoch=self.producer_epoch)
            self._ready()

        self.ch.request(api.INIT_PRODUCER_ID, V_INIT_PID,
                        {"transactional_id": None, "transaction_timeout_ms": 60_000}, reply,
                        self.spec.request_timeout_ms)

    def _ready(self) -> None:
        self.ready = True
        self.emit("ready", resend=len(self.inflight))
        for req in self.inflight:  # the same batches, in the same order
            self._send(req, retry=True)
        self._pump()

    # ---- records ---------------------------------------------------------------------------

    def _new_record(self) -> None:
        seq = self.next_seq
        self.next_seq += 1
        rec = ProdRecord(self.index, seq, int(self.env.now))
        self.world.history.records[(self.index, seq)] = rec
        if len(self.queue) >= self.spec.queue_max:
            rec.rejected = True
            self.emit("reject", seq=seq)
            return
        self.queue.append(seq)
        self._pump()

    def _pump(self) -> None:
        while self.ready and self.queue and len(self.inflight) < self.spec.inflight_max:
            req = self._build()
            self.inflight.append(req)
            self._send(req, retry=False)

    def _build(self) -> _ProduceReq:
        """The next request: up to batch_records_max queued records, one batch per partition."""
        spec, records = self.spec, self.world.history.records
        by_part: dict[int, list[int]] = {}
        for _ in range(min(spec.batch_records_max, len(self.queue))):
            seq = self.queue.popleft()
            by_part.setdefault(seq % self.partitions, []).append(seq)
        req = _ProduceReq()
        for p, seqs in by_part.items():
            recs = []
            for seq in seqs:
                rec = records[(self.index, seq)]
                rec.partition = p
                recs.append(KRecord(0, rec.created_us // US_PER_MS, str(p).encode(),
                                    record_value(self.index, seq, spec.payload_bytes)))
            if spec.idempotent:
                base_seq = self.part_seq.get(p, 0)
                self.part_seq[p] = base_seq + len(seqs)
                batch = build_batch(recs, producer_id=self.producer_id,
                                    producer_epoch=self.producer_epoch, base_sequence=base_seq)
            else:
                batch = build_batch(recs)
            req.batches[p] = (batch, seqs)
        return req

    def _send(self, req: _ProduceReq, retry: bool) -> None:
        now = int(self.env.now)
        records = self.world.history.records
        parts = []
        for p, (batch, seqs) in req.batches.items():
            parts.append({"index": p, "records": batch})
            for seq in seqs:
                rec = records[(self.index, seq)]
                rec.sends += 1
                if rec.first_sent_us < 0:
                    rec.first_sent_us = now
            self.emit("send", p=p, seq=seqs[0], n=len(seqs), retry=retry)
        body = {"transactional_id": None, "acks": self.spec.acks, "timeout_ms": 30_000,
                "topic_data": [{"name": self.spec.topic, "partition_data": parts}]}
        self.ch.request(api.PRODUCE, V_PRODUCE, body, lambda b: self._on_produce(req, b),
                        self.spec.request_timeout_ms)

    def _on_produce(self, req: _ProduceReq, body: dict) -> None:
        now = int(self.env.now)
        records = self.world.history.records
        failed = False
        for topic in body["responses"]:
            for pr in topic["partition_responses"]:
                entry = req.batches.get(pr["index"])
                if entry is None:
                    continue
                if pr["error_code"]:
                    self.emit("produce-error", p=pr["index"], code=pr["error_code"])
                    failed = True
                    continue
                base, seqs = pr["base_offset"], entry[1]
                for i, seq in enumerate(seqs):
                    rec = records[(self.index, seq)]
                    rec.acked_us, rec.offset = now, base + i
                self.emit("ack", p=pr["index"], seq=seqs[0], n=len(seqs), offset=base)
                del req.batches[pr["index"]]
        if not req.batches:
            self.inflight.remove(req)
            self._pump()
        else:  # an error (or a partition missing from the reply): retry on a new connection
            self.emit("retry", failed=failed, batches=len(req.batches))
            self.ch.drop()


# ---- consumers ----------------------------------------------------------------------------


class Consumer(KClient):
    """Fetching shared by group consumers and readers: positions per partition, resets to the
    earliest offset through ListOffsets, long-poll Fetch on the `fetch` channel, receipts."""

    def __init__(self, world: KafkaWorkload, node: int, name: str, topic: str, wait_ms: int,
                 max_bytes: int, timeout_ms: int, rng: Any) -> None:
        super().__init__(world, node, name, rng)
        self.topic = topic
        self.wait_ms = wait_ms
        self.max_bytes = max_bytes
        self.timeout_ms = timeout_ms
        self.fetch = Channel(self, "fetch")
        self.partitions = 0
        self.assigned: tuple[int, ...] = ()
        self.positions: dict[int, int] = {}
        self.resets: list[int] = []  # assigned partitions waiting for their earliest offset
        self.fetch_busy = False
        self.fetch_token = 0  # bumped when the assignment changes: older replies are stale

    def fetching(self) -> bool:
        return bool(self.assigned)

    def seek(self, p: int, offset: int, why: str) -> None:
        self.positions[p] = offset
        self.world.history.cevents.append(CEvent(int(self.env.now), self.name, p, "seek",
                                                 offset, why=why))
        self.emit("seek", p=p, offset=offset, why=why)

    def maybe_fetch(self) -> None:
        if not self.fetch.up or self.fetch_busy or not self.fetching():
            return
        token = self.fetch_token
        if self.resets:
            self.fetch_busy = True
            parts = [{"partition_index": p, "current_leader_epoch": -1, "timestamp": -2}
                     for p in self.resets]
            body = {"replica_id": -1, "isolation_level": 0,
                    "topics": [{"name": self.topic, "partitions": parts}]}
            self.fetch.request(api.LIST_OFFSETS, V_LIST_OFFSETS, body,
                               lambda b: self._on_offsets(token, b), self.timeout_ms)
            return
        parts = [{"partition": p, "current_leader_epoch": -1, "fetch_offset": self.positions[p],
                  "log_start_offset": -1, "partition_max_bytes": self.max_bytes}
                 for p in self.assigned if p in self.positions]
        if not parts:
            return
        self.fetch_busy = True
        body = {"replica_id": -1, "max_wait_ms": self.wait_ms, "min_bytes": 1,
                "max_bytes": self.max_bytes, "isolation_level": 0, "session_id": 0,
                "session_epoch": -1, "topics": [{"topic": self.topic, "partitions": parts}],
                "forgotten_topics_data": [], "rack_id": ""}
        self.fetch.request(api.FETCH, V_FETCH, body, lambda b: self._on_fetch(token, b),
                           self.wait_ms + self.timeout_ms)

    def _on_offsets(self, token: int, body: dict) -> None:
        self.fetch_busy = False
        if token == self.fetch_token:
            for t in body["topics"]:
                for pr in t["partitions"]:
                    p = pr["partition_index"]
                    if pr["error_code"] or p not in self.resets:
                        continue
                    self.resets.remove(p)
                    self.seek(p, pr["offset"], "earliest")
        if self.resets and token == self.fetch_token:
            self.later(RETRY_BACKOFF_US, self.maybe_fetch)
        else:
            self.maybe_fetch()

    def _on_fetch(self, token: int, body: dict) -> None:
        self.fetch_busy = False
        if token != self.fetch_token:
            self.maybe_fetch()
            return
        trouble = False
        for t in body["responses"]:
            for pr in t["partitions"]:
                p, err = pr["partition_index"], pr["error_code"]
                if p not in self.positions:
                    continue
                if err == E.OFFSET_OUT_OF_RANGE:
                    self.emit("out-of-range", p=p, offset=self.positions.pop(p))
                    self.resets.append(p)
                elif err:
                    self.emit("fetch-error", p=p, code=err)
                    trouble = True
                elif pr["records"]:
                    self._deliver(p, pr["records"])
        if trouble:
            self.later(RETRY_BACKOFF_US, self.maybe_fetch)
        else:
            self.maybe_fetch()

    def _deliver(self, p: int, data: bytes) -> None:
        pos = self.positions[p]
        cevents = self.world.history.cevents
        now = int(self.env.now)
        for rec in decode_batches(data):
            if rec.offset < pos:
                continue
            producer, seq = parse_value(rec.value)
            cevents.append(CEvent(now, self.name, p, "recv", rec.offset, producer, seq))
            self.emit("recv", p=p, offset=rec.offset, prod=producer, seq=seq)
            pos = rec.offset + 1
        self.positions[p] = pos


class Reader(Consumer):
    """assign() every partition, seek to the beginning, fetch forever."""

    def __init__(self, world: KafkaWorkload, node: int, index: int, spec: ReaderSpec,
                 rng: Any) -> None:
        super().__init__(world, node, f"reader{index}", spec.topic, spec.fetch_max_wait_ms,
                         spec.fetch_max_bytes, spec.request_timeout_ms, rng)
        self.spec = spec
        self.channels = [self.fetch]

    def run(self) -> Generator[simpy.Event, Any, None]:
        stagger = round(self.world.scenario.warmup_ms * US_PER_MS / 2)
        yield self.env.timeout(self.rng.randrange(stagger + 1))
        self.fetch.open()

    def channel_open(self, ch: Channel) -> None:
        self._metadata(ch, self.topic, self._on_metadata, self.timeout_ms)

    def channel_closed(self, ch: Channel) -> None:
        self.fetch_busy = False

    def _on_metadata(self, partitions: int) -> None:
        if not self.assigned:
            self.partitions = partitions
            self.assigned = tuple(range(partitions))
            self.resets = list(self.assigned)
        self.maybe_fetch()


class Phase(enum.Enum):
    UNJOINED = "unjoined"
    JOINING = "joining"
    SYNCING = "syncing"
    STABLE = "stable"


def encode_subscription(topics: list[str]) -> bytes:
    """Kafka ConsumerProtocolSubscription v0: version, topics (int16 strings), null user data."""
    out = [struct.pack(">hi", 0, len(topics))]
    for t in topics:
        raw = t.encode()
        out.append(struct.pack(">h", len(raw)) + raw)
    out.append(struct.pack(">i", -1))
    return b"".join(out)


def encode_assignment(topic: str, partitions: list[int]) -> bytes:
    """Kafka ConsumerProtocolAssignment v0: version, [(topic, [partition])], null user data."""
    raw = topic.encode()
    return (struct.pack(">hih", 0, 1, len(raw)) + raw + struct.pack(">i", len(partitions))
            + b"".join(struct.pack(">i", p) for p in partitions) + struct.pack(">i", -1))


def decode_assignment(data: bytes, topic: str) -> tuple[int, ...]:
    """The partitions of `topic` in a ConsumerProtocolAssignment (empty bytes: none)."""
    if not data:
        return ()
    pos = 2
    (count,) = struct.unpack_from(">i", data, pos)
    pos += 4
    out: list[int] = []
    for _ in range(count):
        (n,) = struct.unpack_from(">h", data, pos)
        name = data[pos + 2:pos + 2 + n].decode()
        pos += 2 + n
        (k,) = struct.unpack_from(">i", data, pos)
        parts = list(struct.unpack_from(f">{k}i", data, pos + 4))
        pos += 4 + 4 * k
        if name == topic:
            out += parts
    return tuple(sorted(out))


def range_assign(members: list[str], partitions: int) -> dict[str, list[int]]:
    """Kafka's range assignor for one topic: sorted members get contiguous runs, the first
    `partitions % members` one extra."""
    members = sorted(members)
    per, extra = divmod(partitions, len(members))
    out: dict[str, list[int]] = {}
    start = 0
    for i, m in enumerate(members):
        n = per + (1 if i < extra else 0)
        out[m] = list(range(start, start + n))
        start += n
    assert start == partitions
    return out


class GroupConsumer(Consumer):
    """subscribe(): a classic-protocol group member (see the module docstring)."""

    def __init__(self, world: KafkaWorkload, node: int, index: int, spec: GroupSpec,
                 rng: Any) -> None:
        super().__init__(world, node, f"cons{index}", spec.topic, spec.fetch_max_wait_ms,
                         spec.fetch_max_bytes, spec.request_timeout_ms, rng)
        self.spec = spec
        self.coord = Channel(self, "coord")
        self.channels = [self.coord, self.fetch]
        self.coord_ready = False
        self.phase = Phase.UNJOINED
        self.member_id = ""
        self.generation = -1
        self.join_us = -1
        self.timer_token = 0
        self.committed_sent: dict[int, int] = {}

    def run(self) -> Generator[simpy.Event, Any, None]:
        stagger = round(self.world.scenario.warmup_ms * US_PER_MS / 2)
        yield self.env.timeout(self.rng.randrange(stagger + 1))
        self.coord.open()
        self.fetch.open()

    def fetching(self) -> bool:
        return self.phase is Phase.STABLE and bool(self.assigned)

    # ---- connections -----------------------------------------------------------------------

    def channel_open(self, ch: Channel) -> None:
        if ch is self.fetch:
            self.maybe_fetch()
            return
        self.coord_ready = False
        self._metadata(ch, self.topic, self._on_metadata, self.timeout_ms)

    def channel_closed(self, ch: Channel) -> None:
        if ch is self.fetch:
            self.fetch_busy = False
            return
        self.coord_ready = False
        if self.phase in (Phase.JOINING, Phase.SYNCING):
            self.phase = Phase.UNJOINED
        for p, off in list(self.committed_sent.items()):  # unanswered commits: send again
            if off >= 0:
                self.committed_sent[p] = -1

    def _on_metadata(self, partitions: int) -> None:
        self.partitions = partitions
        conn = self.coord.conn

        def reply(body: dict) -> None:
            if body["error_code"]:
                def retry() -> None:
                    if self.coord.conn is conn:
                        self._on_metadata(partitions)

                self.later(RETRY_BACKOFF_US, retry)
                return
            self.coord_ready = True
            if self.phase is not Phase.STABLE:
                self._join()

        self.coord.request(api.FIND_COORDINATOR, V_FIND_COORDINATOR,
                           {"key": self.spec.group, "key_type": 0}, reply, self.timeout_ms)

    # ---- membership ------------------------------------------------------------------------

    def _revoke(self) -> None:
        if self.assigned:
            self.emit("revoked", gen=self.generation, parts=list(self.assigned))
        self.assigned = ()
        self.positions.clear()
        self.resets.clear()
        self.committed_sent.clear()
        self.fetch_token += 1
        self.timer_token += 1

    def _join(self) -> None:
        self._revoke()
        self.phase = Phase.JOINING
        if not self.coord_ready:
            return
        spec = self.spec
        body = {"group_id": spec.group, "session_timeout_ms": spec.session_timeout_ms,
                "rebalance_timeout_ms": spec.rebalance_timeout_ms, "member_id": self.member_id,
                "group_instance_id": None, "protocol_type": "consumer",
                "protocols": [{"name": "range", "metadata": encode_subscription([self.topic])}]}
        self.coord.request(api.JOIN_GROUP, V_JOIN, body, self._on_join,
                           spec.rebalance_timeout_ms + self.timeout_ms)

    def _retry_join(self) -> None:
        token = self.timer_token

        def again() -> None:
            if token == self.timer_token and self.phase is Phase.JOINING:
                self._join()

        self.later(RETRY_BACKOFF_US, again)

    def _on_join(self, body: dict) -> None:
        if self.phase is not Phase.JOINING:
            return
        err = body["error_code"]
        if err == E.MEMBER_ID_REQUIRED:
            self.member_id = body["member_id"]
            self._join()
            return
        if err:
            self.emit("join-error", code=err)
            if err in (E.UNKNOWN_MEMBER_ID, E.ILLEGAL_GENERATION):
                self.member_id = ""
            self._retry_join()
            return
        self.generation, self.member_id = body["generation_id"], body["member_id"]
        self.join_us = int(self.env.now)
        leader = body["leader"] == self.member_id
        self.emit("joined", gen=self.generation, member=self.member_id, leader=leader,
                  members=len(body["members"]))
        assignments = []
        if leader:
            plan = range_assign([m["member_id"] for m in body["members"]], self.partitions)
            assignments = [{"member_id": m, "assignment": encode_assignment(self.topic, ps)}
                           for m, ps in plan.items()]
        self.phase = Phase.SYNCING
        sync = {"group_id": self.spec.group, "generation_id": self.generation,
                "member_id": self.member_id, "group_instance_id": None,
                "assignments": assignments}
        self.coord.request(api.SYNC_GROUP, V_SYNC, sync, self._on_sync,
                           self.spec.rebalance_timeout_ms + self.timeout_ms)

    def _on_sync(self, body: dict) -> None:
        if self.phase is not Phase.SYNCING:
            return
        err = body["error_code"]
        if err:
            self.emit("join-error", code=err, step="sync")
            if err == E.UNKNOWN_MEMBER_ID:
                self.member_id = ""
            self.phase = Phase.JOINING
            self._retry_join()
            return
        self.phase = Phase.STABLE
        self.assigned = decode_assignment(body["assignment"], self.topic)
        h = self.world.history
        h.assignments.append(Assignment(int(self.env.now), self.spec.group, self.member_id,
                                        self.generation, self.assigned))
        self.emit("assigned", gen=self.generation, parts=list(self.assigned))
        self.timer_token += 1
        token = self.timer_token
        self.later(self.spec.heartbeat_interval_ms * US_PER_MS, lambda: self._heartbeat(token))
        self.later(self.spec.commit_interval_ms * US_PER_MS, lambda: self._commit_tick(token))
        if self.assigned:
            self._offset_fetch(token)

    def _offset_fetch(self, token: int) -> None:
        body = {"group_id": self.spec.group, "require_stable": False,
                "topics": [{"name": self.topic, "partition_indexes": list(self.assigned)}]}

        def reply(resp: dict) -> None:
            if token != self.timer_token:
                return
            for t in resp["topics"]:
                for pr in t["partitions"]:
                    p = pr["partition_index"]
                    if p in self.positions or p in self.resets:
                        continue  # a repeated OffsetFetch: the position is set already
                    if pr["committed_offset"] >= 0 and not pr["error_code"]:
                        self.seek(p, pr["committed_offset"], "committed")
                        self.committed_sent[p] = pr["committed_offset"]
                    else:
                        self.resets.append(p)
            self.maybe_fetch()

        if self.coord_ready:
            self.coord.request(api.OFFSET_FETCH, V_OFFSET_FETCH, body, reply, self.timeout_ms)

    def _heartbeat(self, token: int) -> None:
        if token != self.timer_token or self.phase is not Phase.STABLE:
            return
        self.later(self.spec.heartbeat_interval_ms * US_PER_MS, lambda: self._heartbeat(token))
        if not self.coord_ready:
            return
        if self.assigned and not self.positions and not self.resets:
            self._offset_fetch(token)  # the OffsetFetch was lost with a connection
        body = {"group_id": self.spec.group, "generation_id": self.generation,
                "member_id": self.member_id, "group_instance_id": None}

        def reply(resp: dict) -> None:
            err = resp["error_code"]
            if token != self.timer_token or not err:
                return
            self.emit("hb-error", code=err)
            if err == E.REBALANCE_IN_PROGRESS:
                self._commit()
            elif err == E.UNKNOWN_MEMBER_ID:
                self.member_id = ""
            self.emit("rejoin", gen=self.generation)
            self._join()

        self.coord.request(api.HEARTBEAT, V_HEARTBEAT, body, reply, self.timeout_ms)

    def _commit_tick(self, token: int) -> None:
        if token != self.timer_token or self.phase is not Phase.STABLE:
            return
        self.later(self.spec.commit_interval_ms * US_PER_MS, lambda: self._commit_tick(token))
        self._commit()

    def _commit(self) -> None:
        if not self.coord_ready or self.phase is not Phase.STABLE:
            return
        offsets = {p: off for p, off in self.positions.items()
                   if p in self.assigned and self.committed_sent.get(p) != off}
        if not offsets:
            return
        self.committed_sent.update(offsets)
        gen, member, join_us = self.generation, self.member_id, self.join_us
        parts = [{"partition_index": p, "committed_offset": off, "committed_leader_epoch": -1,
                  "committed_metadata": ""} for p, off in offsets.items()]
        body = {"group_id": self.spec.group, "generation_id_or_member_epoch": gen,
                "member_id": member, "group_instance_id": None,
                "topics": [{"name": self.topic, "partitions": parts}]}

        def reply(resp: dict) -> None:
            now = int(self.env.now)
            errs = []
            for t in resp["topics"]:
                for pr in t["partitions"]:
                    p, err = pr["partition_index"], pr["error_code"]
                    if err:
                        errs.append(err)
                        if self.committed_sent.get(p) == offsets.get(p):
                            self.committed_sent.pop(p, None)
                        continue
                    self.world.history.commits.append(Commit(now, self.spec.group, member, gen,
                                                             join_us, p, offsets[p]))
                    self.emit("commit", gen=gen, p=p, offset=offsets[p])
            if errs:
                self.emit("commit-error", code=errs[0], gen=gen)
            stale = {E.ILLEGAL_GENERATION, E.UNKNOWN_MEMBER_ID, E.REBALANCE_IN_PROGRESS}
            if any(e in stale for e in errs) and gen == self.generation and (
                    self.phase is Phase.STABLE):
                if E.UNKNOWN_MEMBER_ID in errs:
                    self.member_id = ""
                self.emit("rejoin", gen=gen)
                self._join()

        self.coord.request(api.OFFSET_COMMIT, V_OFFSET_COMMIT, body, reply, self.timeout_ms)


# ================================================================================ the world


# ================================================================================ the workload


class KafkaWorkload(Workload):
    """The Kafka clients of a world: built from the scenario's [[producers]], [[groups]] and
    [[readers]], connected to the clients' node."""

    name = "kafka"

    def __init__(self, world: World) -> None:
        self.world = world
        self.env = world.env
        self.scenario = world.scenario
        self.history = History(world.trace, self.env)
        self.recovered_batches = 0
        self.bug_fired = False
        self.stop_us = self.scenario.produce_until_us
        self.producers: list[Producer] = []
        self.consumers: list[GroupConsumer] = []
        self.readers: list[Reader] = []
        seeds = world.seeds
        for pspec in self.scenario.producers:
            for _ in range(pspec.count):
                i = len(self.producers)
                self.producers.append(Producer(self, world.client_id(), i, pspec,
                                               seeds.derive(f"kafka-prod{i}")))
        for gspec in self.scenario.groups:
            for _ in range(gspec.count):
                i = len(self.consumers)
                self.consumers.append(GroupConsumer(self, world.client_id(), i, gspec,
                                                    seeds.derive(f"kafka-cons{i}")))
        for rspec in self.scenario.readers:
            for _ in range(rspec.count):
                i = len(self.readers)
                self.readers.append(Reader(self, world.client_id(), i, rspec,
                                           seeds.derive(f"kafka-reader{i}")))

    def clients(self) -> list[KClient]:
        return [*self.producers, *self.consumers, *self.readers]

    def bridge_readers(self) -> set[str]:
        """Readers of a Kafka topic that a bridge rule writes MQTT messages into."""
        topics = {rule.kafka for rule in self.scenario.bridges if rule.to_kafka}
        return {r.name for r in self.readers if r.spec.topic in topics}

    def clock_ms(self) -> int:
        return int(self.env.now) // US_PER_MS

    # ---- what the clients use

    def dial(self, channel: Channel) -> SimConn:
        return self.world.dial(channel, Proto.KAFKA)

    def reset(self, conn: SimConn, by_client: bool) -> None:
        self.world.reset(conn, by_client)

    def reconnect_us(self, rng: Any) -> int:
        return max(1, self.scenario.clients.reconnect.sample_us(rng))

    def later(self, delay_us: int, fn: Callable[[], None]) -> None:
        self.world.later(max(1, delay_us), fn)

    # ---- what the world calls

    def start(self) -> None:
        for client in self.clients():
            self.env.process(client.run())  # type: ignore[attr-defined]

    def on_up(self, nid: int, core: NodeCore) -> None:
        """Re-open (recover) every partition meta knows, as a restarted broker does."""
        if nid != self.world.clients_node:
            return
        batches = partitions = 0
        for topic in core.replica.sm.topics():
            for index in range(len(topic.shards)):
                log = core.kafka.partition_log(topic.name, index)
                assert log is not None
                partitions += 1
                batches += core.shards.describe(f"kafka:{topic.name}:{index}").records
        self.recovered_batches += batches
        self.history.emit(nid, "broker-up", gen=self.world.nodes[nid].gen,
                          partitions=partitions, batches=batches)

    def on_crash(self, nid: int) -> None:
        if nid == self.world.clients_node:
            self.history.crashes.append(int(self.env.now))

    def filter_input(self, conn: SimConn, data: bytes) -> bytes:
        if conn.proto is not Proto.KAFKA:
            return data
        return self._planted_bugs(conn, data)

    def droppable(self, targets: str) -> list[tuple[Any, str]]:
        pool: list[KClient] = []
        if targets in ("all", "producers"):
            pool.extend(self.producers)
        if targets in ("all", "consumers"):
            pool.extend(self.consumers)
            pool.extend(self.readers)
        out: list[tuple[Any, str]] = []
        for c in pool:
            if c.paused:
                continue
            for ch in c.channels:
                if ch.up:
                    out.append((lambda ch=ch: self._drop(ch), ch.name))
        return out

    @staticmethod
    def _drop(ch: Channel) -> None:
        ch.owner.emit("drop", ch=ch.label)
        ch.drop()

    def pause_consumer(self, rng: Any, length_us: int) -> str | None:
        pool = [c for c in self.consumers if not c.paused]
        if not pool:
            return None
        consumer = pool[rng.randrange(len(pool))]
        consumer.pause(length_us)
        return consumer.name

    def check(self) -> dict[str, Any]:
        report = KafkaChecker(self).check()
        report["recovered_batches"] = self.recovered_batches
        return report

    # ---- planted bugs

    def _planted_bugs(self, conn: SimConn, data: bytes) -> bytes:
        """The scenario's `broker_bugs`: misbehave around the broker (one request per send)."""
        bugs = self.scenario.broker_bugs
        if not bugs or int.from_bytes(data[4:6], "big") != api.PRODUCE:
            return data
        header, body = decode_request(data[4:])
        now_ms = self.clock_ms()
        if ("drop-acked-batch" in bugs and not self.bug_fired
                and now_ms >= self.scenario.broker_bug_at_ms):
            self.bug_fired = True
            self._fake_ack(conn, header, body)
            return b""
        if "no-dedupe" in bugs:
            for topic in body["topic_data"]:
                for part in topic["partition_data"]:
                    records = decode_batches(part["records"])
                    part["records"] = build_batch(records)
            return encode_request(header, body)
        return data

    def _fake_ack(self, conn: SimConn, header: RequestHeader, body: dict) -> None:
        core = self.world.nodes[self.world.clients_node].core
        assert core is not None
        broker = core.kafka
        responses = []
        for topic in body["topic_data"]:
            parts = []
            for part in topic["partition_data"]:
                log = broker.partition_log(topic["name"], part["index"])
                base = log.log_end_offset if log is not None else 0
                parts.append({"index": part["index"], "error_code": 0, "base_offset": base,
                              "log_append_time_ms": -1, "log_start_offset": 0})
                self.history.emit(self.world.clients_node, "bug", bug="drop-acked-batch",
                                  p=part["index"], offset=base)
            responses.append({"name": topic["name"], "partition_responses": parts})
        conn.down.send(encode_response(api.PRODUCE, header.api_version, header.correlation_id,
                                       {"responses": responses, "throttle_time_ms": 0}))
