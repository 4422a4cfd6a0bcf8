"""Kafka in the simulator: one whole TwinMQ node (`NodeCore`, hosted by model/host.py) serving
simulated producers, consumer groups and assign-and-seek readers, with faults and history checkers.

The node is the product's own composed object, as `twinmq serve` runs it: the real
`KafkaBroker` (partition logs, group coordinator, produce durability, long-poll fetch) over the
node's `ShardStore`, with topics created through the node's meta Raft group; only the world
around it is simulated:

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
- **Network.** Connections are `model.conn.SimConn` pipes: in-order bytes, sampled one-way
  latency, optional bandwidth, network-wide delay spikes; an abrupt close discards what is in
  flight.
- **Host.** `SimHost` feeds arrivals (open, bytes, close) to the node in order, waits for the
  filesystem time, and runs the node's timers and group commits (the fdatasync in the
  background, as the real host's worker thread does).

**Clients** speak the wire protocol through `real.kafka.codec` (`encode_request` /
`decode_response`) and `real.kafka.records` (`build_batch` / `decode_batches`). Each keeps its
state across reconnects; a connection whose oldest request outlives `request_timeout_ms` is reset
by the client (as Kafka's NetworkClient does) and redialled after `client_reconnect`.

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

**Faults** between `warmup_ms` and `heal_ms` (listed times and/or Poisson rates): broker crash
(power loss) and restart, abrupt client drops (one connection of a random client), network delay
spikes, and consumer pauses (a group consumer's process stops, longer than its session timeout if
configured so: no heartbeats, no reads; everything that arrives waits until it resumes).
Producers stop creating records at `heal_ms`; the run drains until `duration_ms`.

**Planted bugs** (`bugs = [...]`, for testing the checkers; the broker core is untouched, the
simulator's shell misbehaves around it):
- `drop-acked-batch`: the first Produce after `bug_at_ms` is answered NONE with the partition's
  current end offset as base offset, and never reaches the broker.
- `no-dedupe`: every Produce's batches are rebuilt without producer id/epoch/sequence before the
  broker sees them, so the broker cannot drop retried duplicates.

**Checkers** (`KafkaChecker`) read only the client-observed history plus the fault log:
- *lost*: every acknowledged record must be consumed by every reader and by every group (any
  member). Not consumed while the consumer read past its offset on that partition is `lost`
  (safety); not consumed and never passed is `unconsumed` (liveness).
- *offset conflicts*: one (partition, offset) must never hold two different records, across
  acknowledgements and every consumer's receipts (catches offsets reused after lost data).
- *gaps*: the offsets consumers saw on a partition must be contiguous from 0 to the highest seen.
- *skips*: each consumer, per partition, must receive offsets one after another from the position
  it sought (a `seek`); a receipt past the expected offset, or a reset forward, is a skip.
- *duplicates*: a record at two offsets is a duplicate; for idempotent producers it is a
  violation (Jepsen-style), for the others it is counted.
- *order*: per producer and partition, records (first occurrences) appear in sequence order
  (checked for idempotent producers and for producers with `inflight_max = 1`).
- *commits*: within one generation (a broker incarnation, counted by crashes before the join, and
  the generation id) acknowledged committed offsets per partition never go backwards.
- *owners*: within one generation, at most one member is assigned each partition.
- *liveness*: after the drain, no producer still holds unacknowledged or unsent records.

Outcome `ok | safety | liveness | crash` (exit codes 0..3; 4 usage/scenario error); `crash`
is an exception in the broker core or this shell.

**Trace kinds** (node 0: the broker machine and faults; node N: client N, producers first, then
group consumers, then readers): `broker-up`, `crash`, `spike`/`spike-end`, `bug`; per client
`dial`, `closed`, `drop`, `timeout`, `pause`/`resume`; producers `ready`, `pid`, `send`, `ack`,
`produce-error`, `reject`; group consumers `joined`, `join-error`, `assigned`, `revoked`,
`rejoin`, `hb-error`, `commit`, `commit-error`; consumers `seek` (why: committed, earliest,
reset), `out-of-range`, `fetch-error`, `recv`; finally `verdict`. JSONL with sim time in µs
(model/trace.py); the same seed gives a byte-identical trace whatever `PYTHONHASHSEED` is: every
random choice comes from a `SeedTree` stream derived in a fixed order ("net", "fs", "faults",
"meta", then one per client in creation order).

Run: `python -m model.kafka scenarios/kafka-sim.toml --seed N [--trace out.jsonl]`
(or `twinmq sim kafka ...`).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import struct
import sys
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import simpy

from model.checkers import OUTCOME_CODES, CheckerObserver, Checkers, SafetyViolation

# One scenario-loading vocabulary for both broker simulators (errors name file and key).
from model.conn import FIN, NetSpec, SimConn, SimNet, Switchboard
from model.dist import Dist
from model.fs import SimFileSystem, SimFsConfig
from model.host import SimHost, sim_node_spec
from model.mqtt import (
    ConfigError,
    DiskSpec,
    _percentile_ms,
    _table,
    _value,
)
from model.mqtt import reproduce_line as _reproduce_line
from model.net import NetConfig, Network
from model.rng import SeedTree
from model.scenario import read_toml
from model.trace import Trace
from model.world import crash_detail
from real.kafka import api
from real.kafka import errors as E
from real.kafka.broker import KafkaConfig
from real.kafka.codec import (
    RequestHeader,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from real.kafka.records import KRecord, build_batch, decode_batches
from real.raft.types import Bug, Message
from real.server.node import NodeCore, Proto
from real.server.storage import StorageSettings

US_PER_MS = 1000
USAGE_ERROR = 4
STATE_LOGS = ("journal", "memory")
BUGS = ("drop-acked-batch", "no-dedupe")
IDS_MAX = 20  # example ids listed per problem in the result
BROKER_LOG_MAX = 50  # broker log lines kept for the result
RETRY_BACKOFF_US = 20_000  # a client's pause before retrying a failed metadata/join step
ROOT = Path(__file__).resolve().parent.parent

# Request versions the simulated clients speak (all inside real.kafka.api.VERSIONS).
V_PRODUCE, V_FETCH, V_LIST_OFFSETS, V_METADATA = 7, 11, 5, 8
V_OFFSET_COMMIT, V_OFFSET_FETCH, V_FIND_COORDINATOR = 7, 5, 2
V_JOIN, V_SYNC, V_HEARTBEAT, V_INIT_PID = 5, 3, 3, 1

# ================================================================================ configuration


@dataclass(frozen=True, slots=True)
class ProducerSpec:
    count: int = 1
    topic: str = "events"
    rate_per_s: float = 100.0
    """Records per second, each producer, at a fixed interval with a random phase."""
    payload_bytes: int = 24
    """At least the id header "<producer>:<seq>:"; padded with '.'."""
    acks: int = -1
    """1 or -1 (the broker answers both once the batch is durable)."""
    idempotent: bool = True
    """InitProducerId, then producer id/epoch/sequence in every batch."""
    inflight_max: int = 1
    """Produce requests in flight on the connection (<= 5 when idempotent: the broker remembers
    the last 5 batches per producer)."""
    batch_records_max: int = 16
    request_timeout_ms: int = 500
    queue_max: int = 10_000


@dataclass(frozen=True, slots=True)
class GroupSpec:
    count: int = 2
    group: str = "g1"
    topic: str = "events"
    session_timeout_ms: int = 300
    rebalance_timeout_ms: int = 1000
    heartbeat_interval_ms: int = 60
    commit_interval_ms: int = 100
    fetch_max_wait_ms: int = 50
    fetch_max_bytes: int = 1 << 20
    request_timeout_ms: int = 1500
    """Beyond a request's own wait (Fetch max_wait, JoinGroup rebalance timeout)."""


@dataclass(frozen=True, slots=True)
class ReaderSpec:
    count: int = 1
    topic: str = "events"
    fetch_max_wait_ms: int = 50
    fetch_max_bytes: int = 1 << 20
    request_timeout_ms: int = 1500


@dataclass(frozen=True, slots=True)
class FaultSpec:
    broker_crash_at_ms: tuple[float, ...] = ()
    broker_crash_rate_per_s: float = 0.0
    broker_restart: Dist = Dist("uniform", 50.0, 200.0)
    client_drop_at_ms: tuple[float, ...] = ()
    client_drop_rate_per_s: float = 0.0
    client_drop_targets: str = "all"
    """all, producers or consumers (group consumers and readers)."""
    client_reconnect: Dist = Dist("uniform", 10.0, 100.0)
    delay_spike_at_ms: tuple[float, ...] = ()
    delay_spike_rate_per_s: float = 0.0
    delay_spike_ms: Dist = Dist("uniform", 50.0, 300.0)
    delay_spike_extra: Dist = Dist("uniform", 5.0, 50.0)
    consumer_pause_at_ms: tuple[float, ...] = ()
    consumer_pause_rate_per_s: float = 0.0
    consumer_pause_ms: Dist = Dist("uniform", 400.0, 800.0)
    """How long a paused group consumer stays frozen (exceed session_timeout_ms to force a
    rebalance)."""


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    nodes: int = 1
    """Nodes of the simulated cluster, each a whole `NodeCore` on its own simulated disk; meta
    Raft runs across all of them and every client talks to node 1 (shards stay on node 1 until
    they are replicated)."""
    crash_targets: str = "serving"
    """Which node a broker crash hits: "serving" (node 1) or "any" (uniform over the nodes)."""
    latency: Dist = Dist("uniform", 0.2, 1.0)
    """One-way latency of a Raft message between nodes (ms)."""
    raft_bugs: tuple[str, ...] = ()
    """Planted meta Raft bugs (`real.raft.types.Bug` values), for checker tests only."""


SIM_BROKER = KafkaConfig(default_partitions=3, default_engine="file",
                         group_min_session_timeout_ms=100, fetch_wait_max_ms=5000)


@dataclass(frozen=True, slots=True)
class KafkaSimConfig:
    name: str = "kafka-sim"
    duration_ms: float = 3000.0
    seed: int = 1
    warmup_ms: float = 100.0
    """Producing and faults start here (consumers connect at 0..warmup/2)."""
    heal_ms: float = 2000.0
    """Producing and faults stop here; the rest of the run drains."""
    state_log: str = "journal"
    """"journal": JournalEngine shards over the simulated filesystem. "memory": MemoryEngine
    shards that a crash wipes (a broken broker, to show the checkers catch lost data)."""
    bugs: tuple[str, ...] = ()
    bug_at_ms: float = 300.0
    broker: KafkaConfig = SIM_BROKER
    cluster: ClusterSpec = ClusterSpec()
    network: NetSpec = NetSpec()
    disk: DiskSpec = DiskSpec()
    producers: tuple[ProducerSpec, ...] = (ProducerSpec(),)
    groups: tuple[GroupSpec, ...] = (GroupSpec(),)
    readers: tuple[ReaderSpec, ...] = (ReaderSpec(),)
    faults: FaultSpec = FaultSpec()
    source: str = "<memory>"


_TABLES: dict[str, Any] = {"network": NetSpec(), "disk": DiskSpec(), "faults": FaultSpec(),
                           "broker": SIM_BROKER, "cluster": ClusterSpec()}
_ARRAYS: dict[str, type] = {"producers": ProducerSpec, "groups": GroupSpec,
                            "readers": ReaderSpec}


def load_config(path: str | Path) -> KafkaSimConfig:
    """Read a scenario TOML file (see scenarios/kafka-sim.toml for every key)."""
    return config_from_dict(read_toml(path, ConfigError), source=str(path))


def config_from_dict(raw: dict[str, Any], source: str = "<memory>") -> KafkaSimConfig:
    """Build and validate a config; unknown keys fail naming the key and where it was. An array
    section given as `[]` means none of that kind of client."""
    fname = Path(source).name if source != "<memory>" else "scenario.toml"
    top = [f.name for f in dataclasses.fields(KafkaSimConfig) if f.name != "source"]
    values: dict[str, Any] = {"source": source}
    for key in raw:
        if key not in top:
            raise ConfigError(f"unknown key {key!r} in {fname} (expected one of {sorted(top)})")
        if key in _TABLES:
            values[key] = _table(_TABLES[key], raw[key], f"[{key}] of {fname}")
        elif key in _ARRAYS:
            items = raw[key]
            if not isinstance(items, list):
                raise ConfigError(f"{key!r} in {fname}: expected an array of [[{key}]] tables")
            values[key] = tuple(_table(_ARRAYS[key](), item, f"[[{key}]] #{i + 1} of {fname}")
                                for i, item in enumerate(items))
        elif key == "bugs":
            bugs = raw[key]
            if not isinstance(bugs, list) or any(b not in BUGS for b in bugs):
                raise ConfigError(f"'bugs' in {fname}: expected a list of {list(BUGS)}, "
                                  f"got {bugs!r}")
            values[key] = tuple(bugs)
        else:
            values[key] = _value(KafkaSimConfig(), key, raw[key], f"{key!r} in {fname}")
    config = KafkaSimConfig(**values)
    validate_config(config, fname)
    return config


def validate_config(c: KafkaSimConfig, fname: str = "scenario.toml") -> None:
    """Cross-field checks; each error names the key."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{fname}: {msg}")

    need(c.duration_ms > 0, f"duration_ms must be > 0, got {c.duration_ms}")
    need(0 <= c.warmup_ms <= c.heal_ms <= c.duration_ms,
         f"need 0 <= warmup_ms <= heal_ms <= duration_ms, got {c.warmup_ms}, {c.heal_ms}, "
         f"{c.duration_ms}")
    need(c.state_log in STATE_LOGS,
         f"state_log must be one of {list(STATE_LOGS)}, got {c.state_log!r}")
    need(1 <= c.broker.default_partitions <= 1024, "[broker] default_partitions must be 1..1024")
    need(c.broker.auto_create_topics, "[broker] auto_create_topics must be true (clients "
                                      "create their topic through Metadata)")
    need(c.disk.group_commit_ms >= 0, "[disk] group_commit_ms must be >= 0")
    need(1 <= c.cluster.nodes <= 9, f"[cluster] nodes must be 1..9, got {c.cluster.nodes}")
    known = [b.value for b in Bug]
    need(all(b in known for b in c.cluster.raft_bugs),
         f"[cluster] raft_bugs must be among {known}, got {list(c.cluster.raft_bugs)}")
    need(c.cluster.crash_targets in ("serving", "any"),
         f"[cluster] crash_targets must be serving or any, got {c.cluster.crash_targets!r}")
    f = c.faults
    need(f.client_drop_targets in ("all", "producers", "consumers"),
         f"[faults] client_drop_targets must be all, producers or consumers, "
         f"got {f.client_drop_targets!r}")
    for name in ("broker_crash_rate_per_s", "client_drop_rate_per_s", "delay_spike_rate_per_s",
                 "consumer_pause_rate_per_s"):
        need(getattr(f, name) >= 0, f"[faults] {name} must be >= 0")
    for i, p in enumerate(c.producers):
        where = f"[[producers]] #{i + 1}"
        need(p.count >= 0 and p.rate_per_s > 0, f"{where}: count >= 0 and rate_per_s > 0")
        need(p.acks in (1, -1), f"{where}: acks must be 1 or -1, got {p.acks}")
        need(1 <= p.inflight_max <= (5 if p.idempotent else 64),
             f"{where}: inflight_max must be in 1..5 when idempotent (1..64 otherwise), "
             f"got {p.inflight_max}")
        need(p.batch_records_max >= 1 and p.queue_max >= 1 and p.request_timeout_ms >= 1,
             f"{where}: batch_records_max, queue_max and request_timeout_ms must be >= 1")
        need(p.payload_bytes >= 0, f"{where}: payload_bytes must be >= 0")
    for i, g in enumerate(c.groups):
        where = f"[[groups]] #{i + 1}"
        need(g.count >= 0 and g.group != "", f"{where}: count >= 0 and a non-empty group")
        need(c.broker.group_min_session_timeout_ms <= g.session_timeout_ms
             <= c.broker.group_max_session_timeout_ms,
             f"{where}: session_timeout_ms {g.session_timeout_ms} outside the broker's "
             f"[group_min_session_timeout_ms, group_max_session_timeout_ms]")
        need(0 < g.heartbeat_interval_ms < g.session_timeout_ms,
             f"{where}: need 0 < heartbeat_interval_ms < session_timeout_ms")
        need(g.commit_interval_ms >= 1 and g.rebalance_timeout_ms >= 1,
             f"{where}: commit_interval_ms and rebalance_timeout_ms must be >= 1")
        need(g.fetch_max_wait_ms >= 0 and g.fetch_max_bytes >= 1 and g.request_timeout_ms >= 1,
             f"{where}: fetch_max_wait_ms >= 0, fetch_max_bytes >= 1, request_timeout_ms >= 1")
    for i, r in enumerate(c.readers):
        where = f"[[readers]] #{i + 1}"
        need(r.count >= 0 and r.fetch_max_wait_ms >= 0 and r.fetch_max_bytes >= 1
             and r.request_timeout_ms >= 1, f"{where}: count >= 0, fetch_max_wait_ms >= 0, "
                                            "fetch_max_bytes >= 1, request_timeout_ms >= 1")


# ================================================================================ history


@dataclass(slots=True)
class ProdRecord:
    """One record of a producer, as the producer saw it (times in sim µs)."""

    producer: int
    seq: int
    created_us: int
    partition: int = -1  # set when it goes into a batch
    first_sent_us: int = -1
    acked_us: int = -1
    offset: int = -1  # the base offset of its acknowledged batch + its index in the batch
    sends: int = 0
    rejected: bool = False


@dataclass(frozen=True, slots=True)
class CEvent:
    """A consumer's position event on one partition: `seek` (position set: why = committed,
    earliest or reset) or `recv` (a record delivered at `offset`)."""

    t_us: int
    consumer: str
    partition: int
    kind: str
    offset: int
    producer: int = -1
    seq: int = -1
    why: str = ""


@dataclass(frozen=True, slots=True)
class Assignment:
    t_us: int
    group: str
    member: str
    generation: int
    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Commit:
    """An OffsetCommit the broker acknowledged (error NONE) for one partition; `t_us` is when
    the acknowledgement arrived, `join_us` when the member's generation began."""

    t_us: int
    group: str
    member: str
    generation: int
    join_us: int
    partition: int
    offset: int


class History:
    """What clients observed, plus the fault log; every entry is also a trace line."""

    def __init__(self, trace: Trace, env: simpy.Environment) -> None:
        self.trace = trace
        self.env = env
        self.records: dict[tuple[int, int], ProdRecord] = {}
        self.cevents: list[CEvent] = []
        self.assignments: list[Assignment] = []
        self.commits: list[Commit] = []
        self.crashes: list[int] = []
        self.faults: dict[str, int] = {"broker_crash": 0, "client_drop": 0, "delay_spike": 0,
                                       "consumer_pause": 0}

    def now(self) -> int:
        return int(self.env.now)

    def emit(self, node: int, kind: str, **fields: Any) -> None:
        self.trace.emit(int(self.env.now), node, kind, **fields)


# ================================================================================ clients


class Channel:
    """One client connection: requests with correlation ids, responses matched in order, a
    request timeout that resets the connection, and a redial after `client_reconnect`."""

    def __init__(self, owner: KClient, label: str) -> None:
        self.owner = owner
        self.world = owner.world
        self.label = label
        self.name = f"{owner.name}/{label}"
        self.node = owner.node
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
        delay = self.world.config.faults.client_reconnect.sample_us(self.owner.rng)
        self.owner.later(delay, self._reopen)
        self.owner.channel_closed(self)

    def _reopen(self) -> None:
        if self.conn is None:
            self.open()


class KClient:
    """What every simulated client shares: a name, a trace node, an rng, and a process that can
    be paused (everything that arrives or comes due while paused waits, in order)."""

    def __init__(self, world: KafkaWorld, node: int, name: str, rng: Any) -> None:
        self.world = world
        self.env = world.env
        self.node = node
        self.name = name
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
        self.world.net.later(max(1, delay_us), lambda: self.call(fn))

    def pause(self, length_us: int) -> None:
        self.paused = True
        self.emit("pause", ms=length_us // US_PER_MS)
        self.world.net.later(max(1, length_us), self.resume)

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
    def __init__(self, world: KafkaWorld, node: int, index: int, spec: ProducerSpec,
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
        cfg = self.world.config
        self.ch.open()
        interval = max(1, round(1e6 / self.spec.rate_per_s))
        start = round(cfg.warmup_ms * US_PER_MS) + self.rng.randrange(interval)
        yield self.env.timeout(max(0, start - int(self.env.now)))
        heal = round(cfg.heal_ms * US_PER_MS)
        while self.env.now < heal:
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

    def __init__(self, world: KafkaWorld, node: int, name: str, topic: str, wait_ms: int,
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

    def __init__(self, world: KafkaWorld, node: int, index: int, spec: ReaderSpec,
                 rng: Any) -> None:
        super().__init__(world, node, f"reader{index}", spec.topic, spec.fetch_max_wait_ms,
                         spec.fetch_max_bytes, spec.request_timeout_ms, rng)
        self.spec = spec
        self.channels = [self.fetch]

    def run(self) -> Generator[simpy.Event, Any, None]:
        stagger = round(self.world.config.warmup_ms * US_PER_MS / 2)
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

    def __init__(self, world: KafkaWorld, node: int, index: int, spec: GroupSpec,
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
        stagger = round(self.world.config.warmup_ms * US_PER_MS / 2)
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


class KafkaWorld:
    """One simulated run: `KafkaWorld(config).run() -> result dict`."""

    def __init__(self, config: KafkaSimConfig, trace_out: IO[str] | None = None,
                 keep_trace: bool = False) -> None:
        self.config = config
        self.env = simpy.Environment()
        self.trace = Trace(trace_out, keep=keep_trace)
        self.history = History(self.trace, self.env)
        seeds = SeedTree(config.seed)
        self.net = SimNet(self.env, config.network, seeds.derive("net"))
        fs_config = SimFsConfig(torn_writes=config.disk.torn_writes,
                                sync_latency=config.disk.fsync)
        self.fs = SimFileSystem(seeds.derive("fs"), fs_config)
        self.fault_rng = seeds.derive("faults")
        self.recovered_batches = 0
        self.bug_fired = False
        self.log_lines: list[str] = []
        self.hosts = self._build_hosts(seeds)
        self.host = self.hosts[1]
        self.board = Switchboard(self.net, self.host)
        self.producers: list[Producer] = []
        self.consumers: list[GroupConsumer] = []
        self.readers: list[Reader] = []
        node = 1
        for pspec in config.producers:
            for _ in range(pspec.count):
                i = len(self.producers)
                self.producers.append(Producer(self, node, i, pspec,
                                               seeds.derive(f"client-prod{i}")))
                node += 1
        for gspec in config.groups:
            for _ in range(gspec.count):
                i = len(self.consumers)
                self.consumers.append(GroupConsumer(self, node, i, gspec,
                                                    seeds.derive(f"client-cons{i}")))
                node += 1
        for rspec in config.readers:
            for _ in range(rspec.count):
                i = len(self.readers)
                self.readers.append(Reader(self, node, i, rspec,
                                           seeds.derive(f"client-reader{i}")))
                node += 1
        self.spike_active = False

    def clock_ms(self) -> int:
        """The broker's and the journals' clock: sim time in whole milliseconds."""
        return int(self.env.now) // US_PER_MS

    def clients(self) -> list[KClient]:
        return [*self.producers, *self.consumers, *self.readers]

    # ---------------------------------------------------------------------------- connections

    def _build_hosts(self, seeds: SeedTree) -> dict[int, SimHost]:
        """Node 1 (the clients' node) keeps the streams of the one-node world ("fs", "node");
        the others' streams come after every existing one."""
        config = self.config
        engine = "file" if config.state_log == "journal" else "memory"
        ids = tuple(range(1, config.cluster.nodes + 1))
        storage = StorageSettings(engine=engine, group_commit_ms=config.disk.group_commit_ms)
        kafka = dataclasses.replace(config.broker, default_engine=engine)
        hosts: dict[int, SimHost] = {}
        self.checkers = Checkers()
        observer = CheckerObserver(self.checkers) if len(ids) > 1 else None
        for nid in ids:
            spec = sim_node_spec(nid, voters=ids, kafka=kafka, default_engine=engine)
            if config.cluster.raft_bugs:
                bugs = frozenset(Bug(b) for b in config.cluster.raft_bugs)
                spec = dataclasses.replace(spec, raft=dataclasses.replace(spec.raft, bugs=bugs))
            if nid == 1:
                fs, rng = self.fs, seeds.derive("node")
            else:
                fs = SimFileSystem(seeds.derive(f"fs-{nid}"), self.fs.config)
                rng = seeds.derive(f"node-{nid}")
            hosts[nid] = SimHost(self.env, spec, storage, fs, rng,
                                 log=self._log if nid == 1 else None,
                                 on_up=self._broker_up if nid == 1 else None,
                                 filter_input=self._planted_bugs if nid == 1 else None,
                                 send_raft=self._send_raft, observer=observer)
        self.peers: Network | None = None
        if len(ids) > 1:
            def deliver(dst: int, msg: object) -> None:
                assert isinstance(msg, Message), msg
                hosts[dst].deliver(msg)

            self.peers = Network(self.env, list(ids), NetConfig(latency=config.cluster.latency),
                                 seeds.derive, deliver)
        return hosts

    def _send_raft(self, msg: Message) -> None:
        assert self.peers is not None, f"a one-node cluster sent {msg}"
        self.peers.send(msg.src, msg.dst, msg)

    def dial(self, channel: Channel) -> SimConn:
        return self.board.dial(channel, Proto.KAFKA)

    def reset(self, conn: SimConn, by_client: bool) -> None:
        self.board.reset(conn, by_client)

    def _log(self, line: str) -> None:
        if len(self.log_lines) < BROKER_LOG_MAX:
            self.log_lines.append(f"{self.env.now}us {line}")

    def _broker_up(self, core: NodeCore) -> None:
        """Re-open (recover) every partition meta knows, as the simulated broker always did."""
        batches = partitions = 0
        for topic in core.replica.sm.topics():
            for index in range(len(topic.shards)):
                log = core.kafka.partition_log(topic.name, index)
                assert log is not None
                partitions += 1
                batches += core.shards.describe(f"kafka:{topic.name}:{index}").records
        self.recovered_batches += batches
        self.history.emit(0, "broker-up", gen=self.host.gen, partitions=partitions,
                          batches=batches)

    # ---------------------------------------------------------------------------- planted bugs

    def _planted_bugs(self, conn: SimConn, data: bytes) -> bytes:
        """The scenario's `bugs`: misbehave around the broker (one whole request per send)."""
        bugs = self.config.bugs
        if not bugs or int.from_bytes(data[4:6], "big") != api.PRODUCE:
            return data
        header, body = decode_request(data[4:])
        now_ms = self.clock_ms()
        if ("drop-acked-batch" in bugs and not self.bug_fired
                and now_ms >= self.config.bug_at_ms):
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
        core = self.host.core
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
                self.history.emit(0, "bug", bug="drop-acked-batch", p=part["index"],
                                        offset=base)
            responses.append({"name": topic["name"], "partition_responses": parts})
        conn.down.send(encode_response(api.PRODUCE, header.api_version, header.correlation_id,
                                       {"responses": responses, "throttle_time_ms": 0}))

    # ---------------------------------------------------------------------------- faults

    def _fault_times(self, at_ms: tuple[float, ...], rate: float) -> list[int]:
        cfg = self.config
        low, high = cfg.warmup_ms * US_PER_MS, cfg.heal_ms * US_PER_MS
        times = [round(t * US_PER_MS) for t in at_ms if low <= t * US_PER_MS < high]
        if rate > 0:
            t = low + self.fault_rng.expovariate(rate) * 1e6
            while t < high:
                times.append(round(t))
                t += self.fault_rng.expovariate(rate) * 1e6
        return sorted(times)

    def _schedule_faults(self) -> None:
        f = self.config.faults
        plan = [(self._fault_times(f.broker_crash_at_ms, f.broker_crash_rate_per_s),
                 self._crash_broker),
                (self._fault_times(f.client_drop_at_ms, f.client_drop_rate_per_s),
                 self._drop_client),
                (self._fault_times(f.delay_spike_at_ms, f.delay_spike_rate_per_s), self._spike),
                (self._fault_times(f.consumer_pause_at_ms, f.consumer_pause_rate_per_s),
                 self._pause_consumer)]
        for times, action in plan:
            for t in times:
                self.net.later(max(0, t - int(self.env.now)), action)

    def _crash_broker(self) -> None:
        nid = 1
        if self.config.cluster.crash_targets == "any":
            nid = 1 + self.fault_rng.randrange(len(self.hosts))
        host = self.hosts[nid]
        if not host.crash():
            return
        if nid == 1:
            self.history.crashes.append(int(self.env.now))
        self.history.faults["broker_crash"] += 1
        downtime = self.config.faults.broker_restart.sample_us(self.fault_rng)
        if nid == 1:
            self.history.emit(0, "crash", downtime_us=downtime)
        else:
            self.history.emit(0, "crash", downtime_us=downtime, target=nid)
        self.net.later(max(1, downtime), lambda: self.env.process(host.start()))

    def _drop_client(self) -> None:
        targets = self.config.faults.client_drop_targets
        pool: list[KClient] = []
        if targets in ("all", "producers"):
            pool.extend(self.producers)
        if targets in ("all", "consumers"):
            pool.extend(self.consumers)
            pool.extend(self.readers)
        channels = [ch for c in pool if not c.paused for ch in c.channels if ch.up]
        if not channels:
            return
        ch = channels[self.fault_rng.randrange(len(channels))]
        self.history.faults["client_drop"] += 1
        ch.owner.emit("drop", ch=ch.label)
        ch.drop()

    def _spike(self) -> None:
        if self.spike_active:
            return
        f = self.config.faults
        self.spike_active = True
        self.net.extra_us = f.delay_spike_extra.sample_us(self.fault_rng)
        length = f.delay_spike_ms.sample_us(self.fault_rng)
        self.history.faults["delay_spike"] += 1
        self.history.emit(0, "spike", extra_us=self.net.extra_us, length_us=length)
        self.net.later(max(1, length), self._spike_end)

    def _spike_end(self) -> None:
        self.spike_active = False
        self.net.extra_us = 0
        self.history.emit(0, "spike-end")

    def _pause_consumer(self) -> None:
        pool = [c for c in self.consumers if not c.paused]
        if not pool:
            return
        consumer = pool[self.fault_rng.randrange(len(pool))]
        self.history.faults["consumer_pause"] += 1
        consumer.pause(self.config.faults.consumer_pause_ms.sample_us(self.fault_rng))

    # ---------------------------------------------------------------------------- run

    def run(self) -> dict[str, Any]:
        cfg = self.config
        env = self.env
        for host in self.hosts.values():
            env.process(host.start())
        for client in self.clients():
            env.process(client.run())  # type: ignore[attr-defined]
        self._schedule_faults()
        outcome, detail = "ok", ""
        try:
            env.run(until=round(cfg.duration_ms * US_PER_MS))
        except SafetyViolation as exc:  # a meta Raft oracle (clusters of several nodes)
            outcome, detail = "safety", str(exc)
        except Exception as exc:  # an exception in the broker core or this shell
            outcome, detail = "crash", crash_detail(exc)
        report = KafkaChecker(self).check()
        if outcome == "ok":
            outcome, detail = report.pop("outcome"), report.pop("detail")
        else:
            report.pop("outcome")
            report.pop("detail")
        self.history.emit(0, "verdict", outcome=outcome, detail=detail)
        return self._result(outcome, detail, report)

    def _result(self, outcome: str, detail: str, report: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        result: dict[str, Any] = {"outcome": outcome, "detail": detail, "seed": cfg.seed,
                                  "scenario": cfg.name, "sim_ms": int(self.env.now) // US_PER_MS}
        result.update(report)
        result.update({
            "faults": dict(self.history.faults),
            "recovered_batches": self.recovered_batches,
            "net": dict(self.net.stats),
            "fs_crashes": self.fs.stats.crashes,
            "fs_syncs": self.fs.stats.syncs,
            "broker_log": list(self.log_lines),
            "trace_events": self.trace.count,
            "trace_hash": self.trace.hexdigest(),
            "reproduce": reproduce_line(cfg),
        })
        return result


# ================================================================================ checker


class KafkaChecker:
    """The oracles, over `world.history` (client-observed events and the fault log) only."""

    def __init__(self, world: KafkaWorld) -> None:
        self.world = world
        self.history = world.history
        self.readers = [r.name for r in world.readers]
        self.groups: dict[str, list[str]] = {}
        for c in world.consumers:
            self.groups.setdefault(c.spec.group, []).append(c.name)
        self.idempotent = {p.index: p.spec.idempotent for p in world.producers}
        self.ordered = {p.index: p.spec.idempotent or p.spec.inflight_max == 1
                        for p in world.producers}

    def epoch(self, t_us: int) -> int:
        """The broker incarnation an event at `t_us` talked to: crashes strictly before it."""
        return bisect_left(self.history.crashes, t_us)

    def check(self) -> dict[str, Any]:
        h = self.history
        recs = [r for r in h.records.values() if not r.rejected]
        acked = [r for r in recs if r.acked_us >= 0]
        recvs = [e for e in h.cevents if e.kind == "recv"]
        conflicts = self._conflicts(acked, recvs)
        dup_bad, dup_ok = self._duplicates(acked, recvs)
        lost, unconsumed = self._loss(acked, recvs)
        gaps = self._gaps(recvs)
        skips = self._skips()
        order = self._order(recvs)
        regressions = self._commit_regressions()
        owners = self._owner_conflicts()
        unfinished = sum(p.unfinished() for p in self.world.producers)
        latencies = sorted(r.acked_us - r.first_sent_us for r in acked)
        report: dict[str, Any] = {
            "produced": len(recs), "rejected": len(h.records) - len(recs), "acked": len(acked),
            "received": len(recvs), "commits": len(h.commits),
            "generations": len({(self.epoch(a.t_us), a.group, a.generation)
                                for a in h.assignments}),
            "lost": len(lost), "lost_ids": lost[:IDS_MAX], "unconsumed": len(unconsumed),
            "offset_conflicts": len(conflicts), "conflict_ids": conflicts[:IDS_MAX],
            "gaps": len(gaps), "skips": len(skips), "skip_ids": skips[:IDS_MAX],
            "duplicates_idempotent": len(dup_bad), "duplicates_allowed": len(dup_ok),
            "order_violations": len(order), "commit_regressions": len(regressions),
            "owner_conflicts": len(owners), "unfinished_at_end": unfinished,
            "ack_latency_p50_ms": _percentile_ms(latencies, 0.50),
            "ack_latency_p99_ms": _percentile_ms(latencies, 0.99),
        }
        problems = [(lost, "acknowledged record(s) lost"),
                    (conflicts, "offset(s) holding two different records"),
                    (gaps, "gap(s) in the offsets consumers saw"),
                    (skips, "consumer skip(s) over unread offsets"),
                    (dup_bad, "duplicate(s) from idempotent producers"),
                    (order, "per-producer order violation(s)"),
                    (regressions, "committed offset(s) going backwards within a generation"),
                    (owners, "partition(s) with two owners in one generation")]
        report["outcome"], report["detail"] = "ok", ""
        for items, what in problems:
            if items:
                report["outcome"] = "safety"
                report["detail"] = f"{len(items)} {what} (first: {items[0]})"
                return report
        if unfinished or unconsumed:
            report["outcome"] = "liveness"
            report["detail"] = (f"{unfinished} record(s) unacknowledged or unsent, "
                                f"{len(unconsumed)} acknowledged record(s) not yet consumed "
                                f"at the end of the drain (first: {unconsumed[:1]})")
        return report

    def _conflicts(self, acked: list[ProdRecord], recvs: list[CEvent]) -> list[str]:
        """(partition, offset) that more than one record claims (acks and receipts)."""
        holder: dict[tuple[int, int], tuple[int, int]] = {}
        out: list[str] = []
        claims = [(r.partition, r.offset, r.producer, r.seq, "ack") for r in acked]
        claims += [(e.partition, e.offset, e.producer, e.seq, e.consumer) for e in recvs]
        for p, off, prod, seq, who in claims:
            first = holder.setdefault((p, off), (prod, seq))
            if first != (prod, seq):
                out.append(f"p{p}@{off}: prod{first[0]}#{first[1]} vs prod{prod}#{seq} ({who})")
        return out

    def _duplicates(self, acked: list[ProdRecord], recvs: list[CEvent]
                    ) -> tuple[list[str], list[str]]:
        offsets: dict[tuple[int, int], dict[int, None]] = {}
        for r in acked:
            offsets.setdefault((r.producer, r.seq), {})[r.offset] = None
        for e in recvs:
            offsets.setdefault((e.producer, e.seq), {})[e.offset] = None
        bad: list[str] = []
        ok: list[str] = []
        for (prod, seq), offs in offsets.items():
            if len(offs) > 1:
                item = f"prod{prod}#{seq} at offsets {sorted(offs)}"
                (bad if self.idempotent.get(prod, False) else ok).append(item)
        return bad, ok

    def _loss(self, acked: list[ProdRecord], recvs: list[CEvent]
              ) -> tuple[list[str], list[str]]:
        """Per consumer set (each reader, each group): acked records it never received."""
        got: dict[str, dict[tuple[int, int], None]] = {}
        reach: dict[tuple[str, int], int] = {}  # (consumer set, partition) -> highest offset
        member_of = {m: g for g, ms in self.groups.items() for m in ms}
        for e in recvs:
            who = member_of.get(e.consumer, e.consumer)
            got.setdefault(who, {})[(e.producer, e.seq)] = None
            key = (who, e.partition)
            reach[key] = max(reach.get(key, -1), e.offset)
        lost, unconsumed = [], []
        for who in [*self.readers, *self.groups]:
            seen = got.get(who, {})
            for r in acked:
                if (r.producer, r.seq) in seen:
                    continue
                item = f"prod{r.producer}#{r.seq} (p{r.partition}@{r.offset}) -> {who}"
                if reach.get((who, r.partition), -1) > r.offset:
                    lost.append(item)
                else:
                    unconsumed.append(item)
        return lost, unconsumed

    def _gaps(self, recvs: list[CEvent]) -> list[str]:
        seen: dict[int, dict[int, None]] = {}
        for e in recvs:
            seen.setdefault(e.partition, {})[e.offset] = None
        out = []
        for p in sorted(seen):
            offs = seen[p]
            for off in range(max(offs) + 1):
                if off not in offs:
                    out.append(f"p{p}@{off}")
        return out

    def _skips(self) -> list[str]:
        """Replay each consumer's seeks and receipts per partition: a receipt must be the next
        offset; a reset seek may only move back."""
        expect: dict[tuple[str, int], int] = {}
        out = []
        for e in self.history.cevents:
            key = (e.consumer, e.partition)
            want = expect.get(key)
            if e.kind == "seek":
                if e.why == "reset" and want is not None and e.offset > want:
                    out.append(f"{e.consumer} p{e.partition} reset {want} -> {e.offset}")
                expect[key] = e.offset
                continue
            if want is None or e.offset != want:
                out.append(f"{e.consumer} p{e.partition} got {e.offset}, expected {want}")
            expect[key] = e.offset + 1
        return out

    def _order(self, recvs: list[CEvent]) -> list[str]:
        first: dict[tuple[int, int], tuple[int, int]] = {}  # (prod, seq) -> (partition, offset)
        for e in recvs:
            first.setdefault((e.producer, e.seq), (e.partition, e.offset))
        runs: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for (prod, seq), (p, off) in first.items():
            if self.ordered.get(prod, True):
                runs.setdefault((prod, p), []).append((off, seq))
        out = []
        for (prod, p), items in runs.items():
            items.sort()
            for (o1, s1), (o2, s2) in zip(items, items[1:], strict=False):
                if s2 < s1:
                    out.append(f"prod{prod} p{p}: seq {s2}@{o2} after seq {s1}@{o1}")
        return out

    def _commit_regressions(self) -> list[str]:
        last: dict[tuple[str, int, int, int], int] = {}
        out = []
        for c in self.history.commits:
            key = (c.group, self.epoch(c.join_us), c.generation, c.partition)
            prev = last.get(key, -1)
            if c.offset < prev:
                out.append(f"{c.group} gen {c.generation} p{c.partition}: {prev} -> {c.offset}")
            last[key] = max(prev, c.offset)
        return out

    def _owner_conflicts(self) -> list[str]:
        owner: dict[tuple[str, int, int, int], str] = {}
        out = []
        for a in self.history.assignments:
            for p in a.partitions:
                key = (a.group, self.epoch(a.t_us), a.generation, p)
                prev = owner.setdefault(key, a.member)
                if prev != a.member:
                    out.append(f"{a.group} gen {a.generation} p{p}: {prev} and {a.member}")
        return out


# ================================================================================ API and CLI


def run(config: KafkaSimConfig, trace_out: IO[str] | None = None,
        keep_trace: bool = False) -> dict[str, Any]:
    """Simulate `config` once; returns the summary (outcome, counts, trace_hash, ...)."""
    return KafkaWorld(config, trace_out=trace_out, keep_trace=keep_trace).run()


def reproduce_line(config: KafkaSimConfig) -> str:
    return _reproduce_line(config, "model.kafka")  # type: ignore[arg-type]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.kafka",
                                description="Simulate the Kafka broker with clients and faults")
    p.add_argument("file", help="scenario TOML (e.g. scenarios/kafka-sim.toml)")
    p.add_argument("--seed", type=int, help="override the file's seed")
    p.add_argument("--trace", metavar="OUT.jsonl", help="write the JSONL trace here")
    p.add_argument("--state-log", choices=STATE_LOGS, help="override state_log")
    p.add_argument("--bug", action="append", default=[], choices=BUGS,
                   help="plant a bug (repeatable)")
    p.add_argument("--seeds", metavar="A-B", help="sweep these seeds instead of one run")
    p.add_argument("--jobs", type=int, default=1, help="worker processes for --seeds")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one seed and print the summary; exit code 0 ok, 1 safety, 2 liveness, 3 crash,
    4 usage or scenario error."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else USAGE_ERROR
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    extra = ""
    if args.seeds:
        from model.sweep import sweep_worlds_cli

        return sweep_worlds_cli(run, config, args.seeds, args.jobs)
    if args.seed is not None:
        config = dataclasses.replace(config, seed=args.seed)
    if args.state_log is not None:
        config = dataclasses.replace(config, state_log=args.state_log)
        extra += f" --state-log {args.state_log}"
    if args.bug:
        config = dataclasses.replace(config, bugs=tuple(dict.fromkeys(config.bugs + tuple(
            args.bug))))
        extra += "".join(f" --bug {b}" for b in args.bug)
    out = Path(args.trace).open("w") if args.trace else None
    try:
        result = run(config, trace_out=out)
    finally:
        if out is not None:
            out.close()
    result["reproduce"] += extra
    print(format_summary(result))
    return OUTCOME_CODES[result["outcome"]]


SUMMARY_KEYS = ("produced", "rejected", "acked", "received", "commits", "generations")
VERDICT_KEYS = ("lost", "offset_conflicts", "gaps", "skips", "duplicates_idempotent",
                "order_violations", "commit_regressions", "owner_conflicts", "unfinished_at_end",
                "unconsumed")


def format_summary(result: dict[str, Any]) -> str:
    lines = [f"scenario: {result['scenario']} seed {result['seed']}, sim {result['sim_ms']} ms",
             "counts: " + ", ".join(f"{k}={result[k]}" for k in SUMMARY_KEYS)
             + f", duplicates_allowed={result['duplicates_allowed']}"
             + f", ack_p50_ms={result['ack_latency_p50_ms']}"
             + f", ack_p99_ms={result['ack_latency_p99_ms']}",
             "faults: " + ", ".join(f"{k}={v}" for k, v in result["faults"].items())
             + f", recovered_batches={result['recovered_batches']}",
             "checkers: " + ", ".join(f"{k}={'ok' if result[k] == 0 else result[k]}"
                                      for k in VERDICT_KEYS)]
    if result["detail"]:
        lines.append(f"detail: {result['detail']}")
    lines += [f"trace-hash: {result['trace_hash']}", f"outcome: {result['outcome']}",
              f"reproduce: {result['reproduce']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
