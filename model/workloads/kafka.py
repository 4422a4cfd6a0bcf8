"""Kafka clients against the simulated cluster: producers, consumer groups and assign-and-seek
readers that bootstrap on the clients' node and follow partition leaders to any node, and the
history they observe.

The nodes they talk to are the product's own composed objects (model/world.py hosts them), as
`twinmq serve` runs them: the real `KafkaBroker` (partition logs, group coordinator, produce
durability, long-poll fetch) over each node's `ShardStore`, with topics created through the meta
Raft group; with `[kafka] default_replication_factor` > 1 a topic's partitions are replicated
(real/server/replication.py, real/server/controller.py) and only a partition's leader answers
Produce, Fetch and ListOffsets for it. Only the world around them is simulated:

- **Storage.** Partitions are shards of a `real.storage.shards.ShardStore`. With
  `state_log = "journal"` every shard is a `JournalEngine` (fsync "group") over the machine's
  `SimFileSystem`, so a node crash is a power loss: `fs.crash()` keeps what was fdatasynced
  (plus a random prefix of the rest) and the restarted broker re-opens (recovers) every partition
  from what the files hold. With `state_log = "memory"` the shards are `MemoryEngine`s that a
  crash wipes: a deliberately broken broker, to show the checkers notice lost data. Filesystem
  calls charge simulated time; the broker process waits it out before it sends anything.
- **Meta service.** Topic creation, partition placement (leaders, in-sync sets, leader epochs)
  and committed offsets go through the nodes' meta Raft group, whose log is the real on-disk
  format on the same simulated disks: a crash loses what was not fsynced, and the restarted node
  recovers the applied commands.
- **Network.** Connections are `model.devices.conn.SimConn` pipes to one node each (the world's
  per-node switchboards): in-order bytes, sampled one-way latency, optional bandwidth,
  network-wide delay spikes; an abrupt close discards what is in flight, and a node's crash
  resets the connections to that node only.
- **Host.** `SimHost` feeds arrivals (open, bytes, close) to the node in order, waits for the
  filesystem time, and runs the node's timers and group commits (the fdatasync in the
  background, as the real host's worker thread does).

**Clients** speak the wire protocol through `real.kafka.codec` (`encode_request` /
`decode_response`) and `real.kafka.records` (`build_batch` / `decode_batches`). Each keeps its
state across reconnects; a connection whose oldest request outlives `request_timeout_ms` is reset
by the client (as Kafka's NetworkClient does).

**Routing** (`Router`, as librdkafka and kafka-python do it): Metadata from the clients' node
(from the others, in id order, while it refuses once the first answer came) names each
partition's leader by broker id, which is the node id (every simulated node registers the same
Kafka host:port); a client keeps one link per leader node, opened on demand, and sends each
partition's requests to its leader. NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE,
UNKNOWN_TOPIC_OR_PARTITION, NOT_ENOUGH_REPLICAS(_AFTER_APPEND) and REQUEST_TIMED_OUT on a
partition, a closed link or a request timeout make it forget that leader and refresh Metadata
after a `[clients] reconnect` backoff; leader epochs never go back (an answer from a node whose
meta lags is ignored for those partitions); a closed link is held for a backoff before it is
redialled.

- *Producers* (Metadata with auto-create, then InitProducerId when idempotent) create records at a
  fixed rate (value `"<producer>:<seq>:"` padded), partition them round-robin by sequence
  (`seq % partitions`), and send, per leader node, Produce requests of one batch per partition and
  at most `batch_records_max` new records, with at most `inflight_max` requests in flight per
  connection. A batch is built once and re-sent byte for byte (same producer id, epoch and base
  sequence) to whichever node leads its partition after an error, a timeout or a disconnect,
  which is where idempotence matters: a partition's batches are in flight on one connection at a
  time and in sequence order, and an idempotent producer builds a partition's next batch only
  while fewer than PRODUCER_BATCHES (5) lie between its oldest unacknowledged batch and its
  newest (the leader remembers a producer's last 5 batches per partition: a retry of the oldest
  is then always recognised as a duplicate, even when later batches were acknowledged first,
  as after a REQUEST_TIMED_OUT). A retriable error above re-sends the batch after the metadata
  refresh; any other error (or a partition missing from the reply) resets the connection, as
  before replication. Records beyond `queue_max` waiting locally are `rejected` (counted).
- *Group consumers* keep a coordinator connection (Metadata, FindCoordinator, JoinGroup with
  MEMBER_ID_REQUIRED handling, SyncGroup, Heartbeat, OffsetFetch, OffsetCommit). It dials the
  clients' node first; FindCoordinator names the coordinator (the meta leader's node, as in
  `twinmq serve`), and the consumer redials there. NOT_COORDINATOR or
  COORDINATOR_NOT_AVAILABLE from any group request, or the coordinator's connection closing,
  sends it back to the clients' node to look the coordinator up again. It also keeps
  fetch links to the partitions' leaders (ListOffsets, Fetch long polls). The group leader
  computes a range assignment client-side (Kafka's ConsumerProtocol v0 subscription/assignment
  encodings). REBALANCE_IN_PROGRESS on a heartbeat commits current positions, then rejoins;
  ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID rejoin without committing. Positions start at the
  committed offset, else at the earliest offset; OFFSET_OUT_OF_RANGE resets to the earliest.
- *Readers* assign every partition and seek to the beginning, then fetch forever (no group, no
  commits): the audit trail of what the partitions hold.

**Faults** come from the world's nemesis (model/nemesis.py): crashes of any node (power loss)
and restart, network partitions between the nodes (not between clients and nodes), abrupt
client drops (one connection of a random client), network delay spikes, and consumer pauses (a
group consumer's process stops, longer than its session timeout if configured so: no
heartbeats, no reads; everything that arrives waits until it resumes). Producers stop creating
records at heal; the run drains until `duration_ms`.

**Planted bugs** (`broker_bugs = [...]`, for testing the checkers; the broker core is untouched,
the simulator's shell misbehaves around it):
- `drop-acked-batch`: the first Produce after `broker_bug_at_ms` is answered NONE with the
  partition's current end offset as base offset, and never reaches the broker.
- `no-dedupe`: every Produce's batches are rebuilt without producer id/epoch/sequence before the
  broker sees them, so the broker cannot drop retried duplicates.

The checkers that judge their history are model/checkers/kafka.py; the ground truth about
failovers they need (each replicated partition's leader epochs and in-sync sets in meta) is
followed here (`KafkaWorkload.on_applied`).

**Trace kinds** (node: the client's id, 100 and up, producers first, then group consumers, then
readers; `broker-up`, `bug`, `leader` and `isr` on a node): `broker-up` (a node serving the
clients' partitions recovered), `bug`; `leader` (a replicated partition's new leader epoch in
meta, as the first node applied it: p, leader, epoch, isr, replicas) and `isr` (its new in-sync
set within an epoch); per client `dial`, `closed`, `drop`, `timeout`, `pause`/`resume` (`ch`:
the connection: `coord`, or a router link `n<node>` / `fetch<node>`); routing `metadata` (via:
the answering node, leaders, epochs; leader 0 = offline or unknown), `route` (a partition's
leader changed in the client's view: p, leader, epoch, was) and `refresh` (a metadata refresh
is due: why); producers `ready`, `pid`, `send`, `ack` (`at`: the node), `produce-error`,
`retry` (requests and batches put back for a resend), `reject`; group consumers `joined`,
`join-error`, `assigned`, `revoked`, `rejoin`, `hb-error`, `commit`, `commit-error`; consumers
`seek` (why: committed, earliest, reset), `out-of-range`, `fetch-error` (op: fetch or
list-offsets, `at`: the node), `recv`.
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
    LeaderEvent,
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
from real.kafka.log import PRODUCER_BATCHES
from real.kafka.records import KRecord, build_batch, decode_batches
from real.server.node import NodeCore, Proto

if TYPE_CHECKING:
    from model.world import World

US_PER_MS = 1000
RETRY_BACKOFF_US = 20_000  # a client's pause before retrying a failed metadata/join step

# Request versions the simulated clients speak (all inside real.kafka.api.VERSIONS).
V_PRODUCE, V_FETCH, V_LIST_OFFSETS, V_METADATA = 7, 11, 5, 8
V_OFFSET_COMMIT, V_OFFSET_FETCH, V_FIND_COORDINATOR = 7, 5, 2
COORDINATOR_MOVED = frozenset({E.NOT_COORDINATOR, E.COORDINATOR_NOT_AVAILABLE})
V_JOIN, V_SYNC, V_HEARTBEAT, V_INIT_PID = 5, 3, 3, 1

# ================================================================================ clients


class Channel:
    """One client connection to one node: requests with correlation ids, responses matched in
    order, a request timeout that resets the connection. A `sticky` channel (a group
    consumer's coordinator connection) redials by itself after `[clients] reconnect`; the
    others (a `Router`'s links) are reopened by their router when they are needed again."""

    def __init__(self, owner: KClient, label: str, target: int | None = None,
                 sticky: bool = True) -> None:
        self.owner = owner
        self.world = owner.world
        self.label = label
        self.name: str = f"{owner.name}/{label}"
        self.node: int = owner.node
        self.target = target
        """The node dialled (None: the clients' node)."""
        self.sticky = sticky
        self.conn: SimConn | None = None
        self.buf = bytearray()
        self.pending: deque[tuple[int, int, int, Callable[[dict], None]]] = deque()
        self.corr = 0
        self.dials = 0
        self.answered = 0
        """Responses received on the current connection (0: refused or dead before any)."""
        self.busy = False
        """A consumer's Fetch or ListOffsets is outstanding on it."""
        self.held = False
        """Closed less than a reconnect backoff ago: a router does not redial it yet."""

    @property
    def up(self) -> bool:
        return self.conn is not None

    def open(self) -> None:
        assert self.conn is None
        self.buf.clear()
        self.pending.clear()
        self.dials += 1
        self.answered = 0
        self.busy = False
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
            self.answered += 1
            on_reply(body)
            if conn is not self.conn:
                return

    def _gone(self, conn: SimConn) -> None:
        if conn is not self.conn:
            return
        self.conn = None
        self.pending.clear()
        self.buf.clear()
        self.busy = False
        self.owner.emit("closed", ch=self.label)
        if self.sticky:
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

    def routes(self) -> None:
        """The router learnt partitions and leaders (a Metadata answer), or a link may be
        redialled again: send what waits."""

    def _metadata(self, ch: Channel, topic: str, done: Callable[[int], None],
                  timeout_ms: int) -> None:
        """Metadata for `topic` (auto-creating it); `done(partitions)` once it has partitions,
        retried after a backoff while it has none (creation goes through the meta service)."""
        conn = ch.conn

        def reply(resp: dict) -> None:
            entry = next((t for t in resp["topics"] if t["name"] == topic), None)
            if entry is None or entry["error_code"] or not entry["partitions"]:
                def retry() -> None:
                    if ch.conn is conn:
                        self._metadata(ch, topic, done, timeout_ms)

                self.later(RETRY_BACKOFF_US, retry)
                return
            done(len(entry["partitions"]))

        ch.request(api.METADATA, V_METADATA, metadata_request(topic), reply, timeout_ms)


def metadata_request(topic: str) -> dict:
    return {"topics": [{"name": topic}], "allow_auto_topic_creation": True,
            "include_cluster_authorized_operations": False,
            "include_topic_authorized_operations": False}


class Router:
    """Where a client's partitions live, and its connections to their leaders, as Kafka clients
    (librdkafka, kafka-python) keep them.

    - *Bootstrap*: Metadata goes over the first connected link in the order (clients' node, then
      the others by id); with none, a link to the bootstrap node is dialled. Once the client
      has had one answer, a link closed before it answered anything (refused: the node is down
      or not serving Kafka yet) moves the bootstrap node to the next one in that order. The
      first answer always comes from the clients' node: that Metadata auto-creates the topic,
      and an unreplicated topic lives on the node that created it.
    - *Unreplicated partitions* (leader epoch -1) keep the leader the clients' node named: they
      live on the node that created them, except the bridge's topics, of which every node keeps
      its own copy and names itself the leader (another node's answer would send a reader to a
      different log).
    - *Leaders*: node id = broker id (every simulated node registers the same Kafka host:port,
      so the address cannot tell them apart). A leader epoch never goes back: a partition whose
      answer carries an older epoch than known keeps what is known (KIP-320), and an offline
      partition (leader -1) is unknown. `forget(p)` drops a partition's leader after an error
      (nothing is sent to it until the next answer).
    - *Refresh*: `refresh(why)` asks again after a `[clients] reconnect` backoff (one at a time;
      one more if asked while a request is out). A link that closes triggers one, and is held
      for a backoff before the client may redial it.
    """

    def __init__(self, client: KClient, label: str, topic: str, timeout_ms: int) -> None:
        self.client = client
        self.label = label
        self.topic = topic
        self.timeout_ms = timeout_ms
        world = client.world.world
        first = world.clients_node
        self.order = [first, *(n for n in world.node_ids if n != first)]
        self.boot = 0
        self.links: dict[int, Channel] = {}
        self.partitions = 0
        self.leaders: dict[int, int] = {}
        """Partition -> leader node (0: unknown or offline)."""
        self.epochs: dict[int, int] = {}
        """Partition -> leader epoch as last answered (-1: an unreplicated partition)."""
        self.meta_ch: Channel | None = None
        """The link carrying the outstanding Metadata request."""
        self.again = False
        self.timer = False
        self.answers = 0

    def leader(self, p: int) -> int:
        return self.leaders.get(p, 0)

    def _channel(self, nid: int) -> Channel:
        ch = self.links.get(nid)
        if ch is None:
            ch = Channel(self.client, f"{self.label}{nid}", target=nid, sticky=False)
            self.links[nid] = ch
            self.client.channels.append(ch)
        return ch

    def link(self, nid: int, force: bool = False) -> Channel:
        """The link to node `nid`, dialled if it is down (unless held, or `force`)."""
        ch = self._channel(nid)
        if not ch.up and (force or not ch.held):
            ch.open()
        return ch

    def _meta_target(self) -> Channel:
        """The first connected link in bootstrap order, else the bootstrap node's (not dialled
        here)."""
        for nid in self.order:
            ch = self.links.get(nid)
            if ch is not None and ch.up:
                return ch
        return self._channel(self.order[self.boot % len(self.order)])

    def any_link(self) -> Channel:
        """A link for InitProducerId: as for Metadata, dialled now if need be."""
        ch = self._meta_target()
        if not ch.up:
            ch.open()
        return ch

    def start(self) -> None:
        self.request()

    def forget(self, p: int) -> None:
        self.leaders[p] = 0

    def refresh(self, why: str, delay_us: int | None = None) -> None:
        ch = self.meta_ch
        if ch is not None:
            if ch.pending:  # asked before this: ask once more after the answer
                self.again = True
            return
        if self.timer:
            return
        self.timer = True
        self.client.emit("refresh", why=why)

        def fire() -> None:
            self.timer = False
            self.request()

        if delay_us is None:
            delay_us = self.client.world.reconnect_us(self.client.rng)
        self.client.later(delay_us, fire)

    def request(self) -> None:
        if self.meta_ch is not None:
            self.again = True
            return
        ch = self._meta_target()
        self.meta_ch = ch  # set before a dial: what the dial triggers waits for this answer
        if not ch.up:
            ch.open()
        ch.request(api.METADATA, V_METADATA, metadata_request(self.topic),
                   lambda resp: self._on_metadata(ch, resp), self.timeout_ms)

    def _on_metadata(self, ch: Channel, resp: dict) -> None:
        self.meta_ch = None
        via = ch.target or 0
        self.boot = self.order.index(via)
        entry = next((t for t in resp["topics"] if t["name"] == self.topic), None)
        if entry is None or entry["error_code"] or not entry["partitions"]:
            self.again = False
            self.refresh("no-topic", RETRY_BACKOFF_US)  # being created through meta
            return
        brokers = {b["node_id"] for b in resp["brokers"]}
        nodes = set(self.client.world.world.node_ids)
        count = len(entry["partitions"])
        assert self.partitions in (0, count), (self.partitions, count)
        self.partitions = count
        home = self.order[0]
        for pm in sorted(entry["partitions"], key=lambda x: x["partition_index"]):
            p, leader, epoch = pm["partition_index"], pm["leader_id"], pm["leader_epoch"]
            known = self.epochs.get(p)
            if known is not None and epoch < known:
                continue  # an older view (a node whose meta lags): keep ours
            if epoch < 0 and via != home and known is not None:
                continue  # unreplicated: the clients' node's word (see the class docstring)
            if leader < 0 or pm["error_code"]:
                leader = 0
            else:
                assert leader in brokers and leader in nodes, (leader, brokers)
            was = self.leaders.get(p)
            if was != leader or known != epoch:
                self.client.emit("route", p=p, leader=leader, epoch=epoch,
                                 was=-1 if was is None else was)
            self.leaders[p], self.epochs[p] = leader, epoch
        self.answers += 1
        self.client.emit("metadata", via=via, leaders=[self.leaders[p] for p in range(count)],
                         epochs=[self.epochs[p] for p in range(count)])
        again, self.again = self.again, False
        if any(not self.leaders.get(p) for p in range(count)):
            self.refresh("offline")  # or this answer was older than what an error made us drop
        elif again:
            self.refresh("again")
        self.client.routes()

    def closed(self, ch: Channel) -> None:
        """One of the links closed: hold it for a backoff, look again."""
        if ch is self.meta_ch:
            self.meta_ch = None
        if (self.answers and ch.answered == 0
                and ch.target == self.order[self.boot % len(self.order)]):
            self.boot += 1  # refused or dead before answering: bootstrap on the next node
        ch.held = True

        def release() -> None:
            ch.held = False
            self.client.routes()

        self.client.later(self.client.world.reconnect_us(self.client.rng), release)
        self.refresh("closed")


def record_value(producer: int, seq: int, size: int) -> bytes:
    return f"{producer}:{seq}:".encode().ljust(size, b".")


def parse_value(value: bytes | None) -> tuple[int, int]:
    parts = (value or b"").split(b":", 2)
    assert len(parts) == 3, value
    return int(parts[0]), int(parts[1])


RETRIABLE = frozenset({E.NOT_LEADER_OR_FOLLOWER, E.LEADER_NOT_AVAILABLE,
                       E.UNKNOWN_TOPIC_OR_PARTITION, E.NOT_ENOUGH_REPLICAS,
                       E.NOT_ENOUGH_REPLICAS_AFTER_APPEND, E.REQUEST_TIMED_OUT})
"""Partition errors after which a client refreshes its metadata and retries on the partition's
leader (a producer the same batch) without closing the connection."""


class _Batch:
    """One producer batch: built once, re-sent byte for byte until acknowledged. `conn` is the
    connection it is in flight on (None: waiting to be sent, or `acked`)."""

    __slots__ = ("partition", "data", "seqs", "conn", "sent_epoch", "sends", "acked")

    def __init__(self, partition: int, data: bytes, seqs: list[int]) -> None:
        self.partition = partition
        self.data = data
        self.seqs = seqs
        self.conn: SimConn | None = None
        self.sent_epoch = -1
        self.sends = 0
        self.acked = False

    @property
    def waiting(self) -> bool:
        return self.conn is None and not self.acked


class _ProduceReq:
    """One Produce request: at most one batch per partition, all led by the node of `ch`."""

    __slots__ = ("ch", "conn", "batches")

    def __init__(self, ch: Channel, conn: SimConn, batches: list[_Batch]) -> None:
        self.ch = ch
        self.conn = conn
        self.batches = batches


class Producer(KClient):
    def __init__(self, world: KafkaWorkload, node: int, index: int, spec: ProducerSpec,
                 rng: Any) -> None:
        super().__init__(world, node, f"prod{index}", rng)
        self.index = index
        self.spec = spec
        self.router = Router(self, "n", spec.topic, spec.request_timeout_ms)
        self.partitions = 0
        self.producer_id = -1
        self.producer_epoch = -1
        self.pid_ch: Channel | None = None
        self.ready = False
        self.next_seq = 0
        self.part_seq: dict[int, int] = {}
        self.queue: deque[int] = deque()
        """Records created before the partition count is known."""
        self.pq: dict[int, deque[int]] = {}
        """Per partition: records waiting for a batch."""
        self.waiting = 0
        self.unacked: dict[int, deque[_Batch]] = {}
        """Per partition, in sequence order: the batches from the oldest not acknowledged yet to
        the newest built (those acknowledged meanwhile stay, marked, until the older ones are:
        an idempotent producer builds a new batch only while there are fewer than
        PRODUCER_BATCHES, so the oldest stays among the batches the leader remembers and its
        retry is recognised as a duplicate)."""
        self.reqs: list[_ProduceReq] = []

    def run(self) -> Generator[simpy.Event, Any, None]:
        self.router.start()
        interval = max(1, round(1e6 / self.spec.rate_per_s))
        start = round(self.world.scenario.warmup_ms * US_PER_MS) + self.rng.randrange(interval)
        yield self.env.timeout(max(0, start - int(self.env.now)))
        stop = self.world.stop_us
        while self.env.now < stop:
            self._new_record()
            yield self.env.timeout(interval)

    def unfinished(self) -> int:
        return self.waiting + sum(len(b.seqs) for bs in self.unacked.values() for b in bs
                                  if not b.acked)

    # ---- connections and routes ------------------------------------------------------------

    def channel_open(self, ch: Channel) -> None:
        pass  # requests queue behind the open; the router's Metadata goes first

    def channel_closed(self, ch: Channel) -> None:
        gone = [r for r in self.reqs if r.ch is ch]
        for req in gone:
            self.reqs.remove(req)
            for b in req.batches:
                if b.conn is req.conn:
                    b.conn = None
        if ch is self.pid_ch:
            self.pid_ch = None
        if gone:
            self.emit("retry", at=ch.target, requests=len(gone),
                      batches=sum(len(r.batches) for r in gone))
        self.router.closed(ch)
        self._pump()

    def routes(self) -> None:
        if not self.router.partitions:
            return
        if not self.partitions:
            self.partitions = self.router.partitions
            self.pq = {p: deque() for p in range(self.partitions)}
            self.unacked = {p: deque() for p in range(self.partitions)}
            while self.queue:
                seq = self.queue.popleft()
                self.pq[seq % self.partitions].append(seq)
        if self.spec.idempotent and self.producer_id < 0:
            self._init_producer_id()
            return
        self._ready()

    def _init_producer_id(self) -> None:
        if self.pid_ch is not None or self.producer_id >= 0:
            return
        ch = self.router.any_link()
        if not ch.up:
            return
        self.pid_ch = ch

        def reply(body: dict) -> None:
            self.pid_ch = None
            if body["error_code"] or body["producer_id"] < 0:
                self.emit("pid-error", code=body["error_code"])
                self.later(RETRY_BACKOFF_US, self._init_producer_id)
                return
            self.producer_id, self.producer_epoch = body["producer_id"], body["producer_epoch"]
            self.emit("pid", id=self.producer_id, epoch=self.producer_epoch, at=ch.target)
            self._ready()

        ch.request(api.INIT_PRODUCER_ID, V_INIT_PID,
                   {"transactional_id": None, "transaction_timeout_ms": 60_000}, reply,
                   self.spec.request_timeout_ms)

    def _ready(self) -> None:
        if not self.ready:
            self.ready = True
            self.emit("ready", queued=self.waiting)
        self._pump()

    # ---- records ---------------------------------------------------------------------------

    def _new_record(self) -> None:
        seq = self.next_seq
        self.next_seq += 1
        rec = ProdRecord(self.index, seq, int(self.env.now), acks=self.spec.acks)
        self.world.history.records[(self.index, seq)] = rec
        if self.waiting >= self.spec.queue_max:
            rec.rejected = True
            self.emit("reject", seq=seq)
            return
        self.waiting += 1
        if self.partitions:
            self.pq[seq % self.partitions].append(seq)
        else:
            self.queue.append(seq)
        self._pump()

    def _has_work(self, p: int) -> bool:
        return bool(self.pq[p]) or any(b.waiting for b in self.unacked[p])

    def _pump(self) -> None:
        """Send what waits, per leader node, at most `inflight_max` requests per connection."""
        if not self.ready:
            return
        router = self.router
        nodes = sorted({router.leader(p) for p in range(self.partitions)
                        if router.leader(p) and self._has_work(p)})
        for nid in nodes:
            ch = router.link(nid)
            while ch.up and sum(1 for r in self.reqs if r.ch is ch) < self.spec.inflight_max:
                req = self._build(nid, ch)
                if req is None:
                    break
                self._send(req)

    def _sendable(self, p: int, conn: SimConn) -> bool:
        """Partition `p` may get a batch on `conn`: none of its batches is in flight on another
        connection, and those in flight come before every waiting one (sequence order)."""
        waiting = False
        for b in self.unacked[p]:
            if b.acked:
                continue
            if b.conn is None:
                waiting = True
            elif b.conn is not conn or waiting:
                return False
        return True

    def _build(self, nid: int, ch: Channel) -> _ProduceReq | None:
        """The next request to node `nid`: for each partition it leads, the first batch waiting
        for a (re)send, else new batches of up to batch_records_max records taken in sequence
        order."""
        conn = ch.conn
        assert conn is not None
        router = self.router
        batches: list[_Batch] = []
        fresh: dict[int, deque[int]] = {}
        window = PRODUCER_BATCHES if self.spec.idempotent else 1 << 30
        for p in range(self.partitions):
            if router.leader(p) != nid or not self._sendable(p, conn):
                continue
            old = next((b for b in self.unacked[p] if b.waiting), None)
            if old is not None:
                batches.append(old)
            elif self.pq[p] and len(self.unacked[p]) < window:
                fresh[p] = self.pq[p]
        take: dict[int, list[int]] = {}
        budget = self.spec.batch_records_max
        while budget and fresh:
            p = min(fresh, key=lambda q: fresh[q][0])
            take.setdefault(p, []).append(fresh[p].popleft())
            budget -= 1
            self.waiting -= 1
            if not fresh[p]:
                del fresh[p]
        for p in sorted(take):
            batch = self._batch(p, take[p])
            self.unacked[p].append(batch)
            batches.append(batch)
        if not batches:
            return None
        return _ProduceReq(ch, conn, batches)

    def _batch(self, p: int, seqs: list[int]) -> _Batch:
        spec, records = self.spec, self.world.history.records
        recs = []
        for seq in seqs:
            rec = records[(self.index, seq)]
            rec.partition = p
            recs.append(KRecord(0, rec.created_us // US_PER_MS, str(p).encode(),
                                record_value(self.index, seq, spec.payload_bytes)))
        if spec.idempotent:
            base_seq = self.part_seq.get(p, 0)
            self.part_seq[p] = base_seq + len(seqs)
            data = build_batch(recs, producer_id=self.producer_id,
                               producer_epoch=self.producer_epoch, base_sequence=base_seq)
        else:
            data = build_batch(recs)
        return _Batch(p, data, seqs)

    def _send(self, req: _ProduceReq) -> None:
        now = int(self.env.now)
        records = self.world.history.records
        parts = []
        for b in req.batches:
            b.conn = req.conn
            b.sent_epoch = self.router.epochs.get(b.partition, -1)
            b.sends += 1
            parts.append({"index": b.partition, "records": b.data})
            for seq in b.seqs:
                rec = records[(self.index, seq)]
                rec.sends += 1
                if rec.first_sent_us < 0:
                    rec.first_sent_us = now
            self.emit("send", p=b.partition, seq=b.seqs[0], n=len(b.seqs), retry=b.sends > 1,
                      at=req.ch.target)
        body = {"transactional_id": None, "acks": self.spec.acks,
                "timeout_ms": self.spec.produce_timeout_ms,
                "topic_data": [{"name": self.spec.topic, "partition_data": parts}]}
        self.reqs.append(req)
        req.ch.request(api.PRODUCE, V_PRODUCE, body, lambda b: self._on_produce(req, b),
                       self.spec.request_timeout_ms)

    def _on_produce(self, req: _ProduceReq, body: dict) -> None:
        self.reqs.remove(req)
        now = int(self.env.now)
        records = self.world.history.records
        nid = req.ch.target
        by_p = {b.partition: b for b in req.batches}
        answered: set[int] = set()
        drop = reroute = False
        for topic in body["responses"]:
            for pr in topic["partition_responses"]:
                p = pr["index"]
                b = by_p.get(p)
                if b is None or p in answered:
                    continue
                answered.add(p)
                err = pr["error_code"]
                if err:
                    b.conn = None
                    self.emit("produce-error", p=p, seq=b.seqs[0], code=err, at=nid)
                    if err in RETRIABLE:
                        self.router.forget(p)
                        reroute = True
                    else:
                        drop = True
                    continue
                base = pr["base_offset"]
                for i, seq in enumerate(b.seqs):
                    rec = records[(self.index, seq)]
                    rec.acked_us, rec.offset = now, base + i
                    rec.epoch, rec.node = b.sent_epoch, nid or 0
                self.emit("ack", p=p, seq=b.seqs[0], n=len(b.seqs), offset=base, at=nid)
                b.conn, b.acked = None, True
                queue = self.unacked[p]
                while queue and queue[0].acked:
                    queue.popleft()
        for b in req.batches:
            if b.partition not in answered:  # missing from the reply: retry as after an error
                b.conn = None
                drop = True
        if reroute:
            self.router.refresh("produce-error")
        if drop:  # not a routing error: as before replication, retry on a new connection
            self.emit("retry", at=nid, requests=1, batches=len(req.batches))
            req.ch.drop()
        self._pump()


# ---- consumers ----------------------------------------------------------------------------


class Consumer(KClient):
    """Fetching shared by group consumers and readers: positions per partition, resets to the
    earliest offset through ListOffsets, long-poll Fetch of each partition from its leader (one
    outstanding request per leader link), receipts."""

    def __init__(self, world: KafkaWorkload, node: int, name: str, topic: str, wait_ms: int,
                 max_bytes: int, timeout_ms: int, rng: Any) -> None:
        super().__init__(world, node, name, rng)
        self.topic = topic
        self.wait_ms = wait_ms
        self.max_bytes = max_bytes
        self.timeout_ms = timeout_ms
        self.router = Router(self, "fetch", topic, timeout_ms)
        self.partitions = 0
        self.assigned: tuple[int, ...] = ()
        self.positions: dict[int, int] = {}
        self.resets: list[int] = []  # assigned partitions waiting for their earliest offset
        self.fetch_token = 0  # bumped when the assignment changes: older replies are stale

    def fetching(self) -> bool:
        return bool(self.assigned)

    def seek(self, p: int, offset: int, why: str) -> None:
        self.positions[p] = offset
        self.world.history.cevents.append(CEvent(int(self.env.now), self.name, p, "seek",
                                                 offset, why=why))
        self.emit("seek", p=p, offset=offset, why=why)

    def routes(self) -> None:
        self.maybe_fetch()

    def maybe_fetch(self) -> None:
        if not self.fetching() or not self.router.partitions:
            return
        router = self.router
        by_node: dict[int, list[int]] = {}
        for p in self.assigned:
            nid = router.leader(p)
            if nid:
                by_node.setdefault(nid, []).append(p)
            else:
                router.refresh("no-leader")
        token = self.fetch_token
        for nid in sorted(by_node):
            ch = router.link(nid)
            if not ch.up or ch.busy:
                continue
            mine = by_node[nid]
            resets = [p for p in self.resets if p in mine]
            if resets:
                ch.busy = True
                parts = [{"partition_index": p, "current_leader_epoch": -1, "timestamp": -2}
                         for p in resets]
                body = {"replica_id": -1, "isolation_level": 0,
                        "topics": [{"name": self.topic, "partitions": parts}]}
                ch.request(api.LIST_OFFSETS, V_LIST_OFFSETS, body,
                           self._reply_to(self._on_offsets, token, ch), self.timeout_ms)
                continue
            fparts = [{"partition": p, "current_leader_epoch": -1,
                       "fetch_offset": self.positions[p], "log_start_offset": -1,
                       "partition_max_bytes": self.max_bytes}
                      for p in mine if p in self.positions]
            if not fparts:
                continue
            ch.busy = True
            body = {"replica_id": -1, "max_wait_ms": self.wait_ms, "min_bytes": 1,
                    "max_bytes": self.max_bytes, "isolation_level": 0, "session_id": 0,
                    "session_epoch": -1, "topics": [{"topic": self.topic, "partitions": fparts}],
                    "forgotten_topics_data": [], "rack_id": ""}
            ch.request(api.FETCH, V_FETCH, body, self._reply_to(self._on_fetch, token, ch),
                       self.wait_ms + self.timeout_ms)

    @staticmethod
    def _reply_to(fn: Callable[[int, Channel, dict], None], token: int, ch: Channel
                  ) -> Callable[[dict], None]:
        return lambda body: fn(token, ch, body)

    def _misrouted(self, p: int, code: int, ch: Channel, op: str) -> None:
        """A partition error on a fetch-side request: ask where it lives now."""
        self.emit("fetch-error", p=p, code=code, at=ch.target, op=op)
        if self.router.leader(p) == ch.target:
            self.router.forget(p)
        self.router.refresh("fetch-error")

    def _on_offsets(self, token: int, ch: Channel, body: dict) -> None:
        ch.busy = False
        if token == self.fetch_token:
            for t in body["topics"]:
                for pr in t["partitions"]:
                    p = pr["partition_index"]
                    if p not in self.resets:
                        continue
                    if pr["error_code"]:
                        self._misrouted(p, pr["error_code"], ch, "list-offsets")
                        continue
                    self.resets.remove(p)
                    self.seek(p, pr["offset"], "earliest")
        self.maybe_fetch()

    def _on_fetch(self, token: int, ch: Channel, body: dict) -> None:
        ch.busy = False
        if token != self.fetch_token:
            self.maybe_fetch()
            return
        for t in body["responses"]:
            for pr in t["partitions"]:
                p, err = pr["partition_index"], pr["error_code"]
                if p not in self.positions or self.router.leader(p) != ch.target:
                    continue  # (a moved partition's late answer: its new leader's counts)
                if err == E.OFFSET_OUT_OF_RANGE:
                    self.emit("out-of-range", p=p, offset=self.positions.pop(p),
                              at=ch.target)
                    self.resets.append(p)
                elif err:
                    self._misrouted(p, err, ch, "fetch")
                elif pr["records"]:
                    self._deliver(p, pr["records"])
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

    def channel_open(self, ch: Channel) -> None:
        self.maybe_fetch()

    def channel_closed(self, ch: Channel) -> None:
        self.router.closed(ch)


class Reader(Consumer):
    """assign() every partition, seek to the beginning, fetch forever."""

    def __init__(self, world: KafkaWorkload, node: int, index: int, spec: ReaderSpec,
                 rng: Any) -> None:
        super().__init__(world, node, f"reader{index}", spec.topic, spec.fetch_max_wait_ms,
                         spec.fetch_max_bytes, spec.request_timeout_ms, rng)
        self.spec = spec

    def run(self) -> Generator[simpy.Event, Any, None]:
        stagger = round(self.world.scenario.warmup_ms * US_PER_MS / 2)
        yield self.env.timeout(self.rng.randrange(stagger + 1))
        self.router.start()

    def routes(self) -> None:
        if not self.assigned and self.router.partitions:
            self.partitions = self.router.partitions
            self.assigned = tuple(range(self.partitions))
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
        """To the group coordinator FindCoordinator named (`target`), else the clients' node."""
        self.retarget: int | None = None
        """The coordinator to dial once the current coordinator connection has closed."""
        self.channels = [self.coord]
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
        self.router.start()

    def fetching(self) -> bool:
        return self.phase is Phase.STABLE and bool(self.assigned)

    # ---- connections -----------------------------------------------------------------------

    def channel_open(self, ch: Channel) -> None:
        if ch is not self.coord:
            self.maybe_fetch()
            return
        self.coord_ready = False
        self._metadata(ch, self.topic, self._on_metadata, self.timeout_ms)

    def channel_closed(self, ch: Channel) -> None:
        if ch is not self.coord:
            super().channel_closed(ch)
            return
        self.coord_ready = False
        # the next dial: the coordinator FindCoordinator just named, else (it died, it moved)
        # the clients' node, to ask again
        self.coord.target, self.retarget = self.retarget, None
        if self.phase in (Phase.JOINING, Phase.SYNCING):
            self.phase = Phase.UNJOINED
        for p, off in list(self.committed_sent.items()):  # unanswered commits: send again
            if off >= 0:
                self.committed_sent[p] = -1

    def _coordinator_moved(self, code: int) -> None:
        """NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE: close the coordinator connection and
        look the coordinator up again from the clients' node."""
        self.emit("coord-moved", code=code)
        self.coord.drop()

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
            here = self.coord.target or self.world.world.clients_node
            if body["node_id"] != here:
                self.emit("coord-found", at=body["node_id"])
                self.retarget = body["node_id"]
                self.coord.drop()
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
        if err in COORDINATOR_MOVED:
            self._coordinator_moved(err)
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
        if err in COORDINATOR_MOVED:
            self._coordinator_moved(err)
            return
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
            if resp.get("error_code") in COORDINATOR_MOVED:
                self._coordinator_moved(resp["error_code"])
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
            if err in COORDINATOR_MOVED:
                self._coordinator_moved(err)
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
            moved = next((e for e in errs if e in COORDINATOR_MOVED), None)
            if moved is not None and self.coord.up:
                self._coordinator_moved(moved)
                return
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
    [[readers]]; they bootstrap on the clients' node and follow partition leaders to any node."""

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
        self.topics = sorted({p.spec.topic for p in self.producers}
                             | {c.spec.topic for c in self.consumers}
                             | {r.spec.topic for r in self.readers})
        """The topics whose replicated partitions' leaders are followed (`on_applied`)."""

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
        return self.world.dial(channel, Proto.KAFKA, node=channel.target)

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
        """The clients' node re-opens (recovers) every unreplicated partition meta knows, as a
        restarted broker does; replicated partitions are opened by the node's replicator once
        it has registered (only those already attached are counted)."""
        serving = nid == self.world.clients_node
        batches = partitions = 0
        attached = set(core.shards.list())
        held = False
        for topic in core.replica.sm.topics():
            for index, shard in enumerate(topic.shards):
                name = f"kafka:{topic.name}:{index}"
                if shard.replicated:
                    held = held or nid in shard.replicas
                    if nid not in shard.replicas or name not in attached:
                        continue
                elif topic.shared(index):  # on the shared store: opened by its leader only
                    held = held or shard.leader == nid
                    if shard.leader != nid or core.kafka.partition_log(topic.name,
                                                                      index) is None:
                        continue
                elif not serving:
                    continue
                else:
                    log = core.kafka.partition_log(topic.name, index)
                    assert log is not None
                partitions += 1
                batches += core.shards.describe(name).records
        if not serving and not held:
            return
        self.recovered_batches += batches
        self.history.emit(nid, "broker-up", gen=self.world.nodes[nid].gen,
                          partitions=partitions, batches=batches)

    def on_crash(self, nid: int) -> None:
        """Crashes of the clients' node end its group coordinator's generations (the checker
        counts them); every node's crash is in the fault log."""
        if nid == self.world.clients_node:
            self.history.crashes.append(int(self.env.now))

    def on_applied(self, nid: int) -> None:
        """Follow the leaders and in-sync sets of the clients' replicated partitions in meta, as
        the first node to apply each change sees it (`leader`, `isr`): the checker's ground
        truth about failovers."""
        core = self.world.nodes[nid].core
        if core is None:
            return  # replaying its log while it starts: nothing new
        sm = core.replica.sm
        leaders = self.history.leaders
        for name in self.topics:
            info = sm.topic(name)
            if info is None:
                continue
            for index, shard in enumerate(info.shards):
                if not shard.replicated:
                    continue
                key = (name, index)
                log = leaders.setdefault(key, [])
                if log and (log[-1].epoch, log[-1].version) >= (shard.epoch, shard.version):
                    continue
                event = LeaderEvent(int(self.env.now), name, index, shard.leader, shard.epoch,
                                    shard.version, shard.isr, len(shard.replicas))
                if log and log[-1].epoch == shard.epoch:
                    self.history.emit(nid, "isr", p=index, epoch=shard.epoch,
                                      isr=list(shard.isr))
                else:
                    self.history.emit(nid, "leader", p=index, leader=shard.leader,
                                      epoch=shard.epoch, isr=list(shard.isr),
                                      replicas=list(shard.replicas))
                log.append(event)

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
        node = self.world.conn_node(conn)
        core = self.world.nodes[node].core
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
                self.history.emit(node, "bug", bug="drop-acked-batch",
                                  p=part["index"], offset=base)
            responses.append({"name": topic["name"], "partition_responses": parts})
        conn.down.send(encode_response(api.PRODUCE, header.api_version, header.correlation_id,
                                       {"responses": responses, "throttle_time_ms": 0}))
