"""The Kafka broker core: sans-I/O, one object per node, driven by `NodeCore`
(real/server/node.py), which the asyncio host and the simulator both run.

Inputs: `open(conn_id, peer=...)`, `receive(conn_id, bytes)`, `closed(conn_id)`,
`set_congested(conn_id, flag)`, `tick()` (timers: long-poll deadlines, group session/rebalance
timeouts, retention) and `durable_progress()` (a storage engine's group commit moved
`durable_end`). Output: `drain()` -> [(conn_id, bytes, close)], in order; `next_deadline_ms()`
says when `tick` next has work. `invariants()` checks the structure (harnesses, the simulator).
That is `real.server.protocol.ProtocolCore`, the interface the MQTT broker satisfies too.

Requests on one connection are answered in request order, as Kafka does: each request takes a
*slot* in the connection's queue; a slot is filled now (Metadata) or later (a Produce waiting for
durability, a Fetch long-polling, a JoinGroup waiting for the rebalance, anything waiting for the
meta service) and only the filled prefix of the queue is written. Produce with acks=0 takes no slot.

Storage: a partition is a shard of the storage adapter, named `kafka:<topic>:<partition>`, wrapped
in a `PartitionLog` (one stored record per Kafka record batch, kept as it arrived). Topics,
partition counts, per-topic config, committed group offsets and producer-id blocks live in the meta
state machine, changed only through `MetaPort.propose` (Raft in the real node).

Durability: a Produce with acks=1 or acks=-1 is answered once every partition it wrote has its
shard's `ack_end` (= `durable_end`, or "written" under fsync never) past the appended batch;
consumers see up to the high watermark, which is the durable end too, so nothing a consumer read
can vanish in a crash that the configuration promises to survive.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from real.kafka import api
from real.kafka import errors as E
from real.kafka.codec import (
    RequestHeader,
    api_versions_error_v0,
    decode_request,
    encode_response,
)
from real.kafka.errors import KafkaCodecError, UnsupportedVersion
from real.kafka.group import (
    AUTHORIZED_OPERATIONS_OMITTED,
    GroupCoordinator,
    join_error,
    sync_error,
)
from real.kafka.log import PartitionLog
from real.kafka.records import RecordsError, split_batches
from real.meta import MetaResult, MetaStateMachine, encode_command
from real.meta.commands import ENGINES, MetaError

INT32_MIN = -(1 << 31)
TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
TOPIC_NAME_MAX = 249
PRODUCER_ID_KEY = "kafka.producer_id.next"
EARLIEST, LATEST = -2, -1

# Per-topic configuration keys the broker honours (anything else is INVALID_CONFIG, named).
TOPIC_CONFIGS: dict[str, str] = {
    "retention.ms": "int",
    "retention.bytes": "int",
    "cleanup.policy": "delete",
    "max.message.bytes": "int",
    "compression.type": "producer",
    "message.timestamp.type": "CreateTime",
    "storage.engine": "engine",
    "min.insync.replicas": "int",
    "unclean.leader.election.enable": "bool",
}
TOPIC_DEFAULTS: dict[str, str] = {
    "retention.ms": "604800000",
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
    "compression.type": "producer",
    "message.timestamp.type": "CreateTime",
}


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """Broker settings (`[kafka]` in the node config; docs/kafka.md lists every key)."""

    node_id: int = 1
    host: str = "127.0.0.1"
    """Advertised host clients connect to (Metadata, FindCoordinator)."""
    port: int = 9092
    """Advertised port."""
    cluster_id: str = "twinmq"
    auto_create_topics: bool = True
    default_partitions: int = 1
    default_engine: str = "file"
    max_request_bytes: int = 100 * 1024 * 1024
    max_message_bytes: int = 1024 * 1024 + 12
    """Largest record batch accepted (Kafka's message.max.bytes)."""
    fetch_wait_max_ms: int = 30_000
    group_initial_rebalance_delay_ms: int = 0
    group_min_session_timeout_ms: int = 6_000
    group_max_session_timeout_ms: int = 1_800_000
    producer_id_block: int = 1000
    retention_check_ms: int = 60_000
    """How often retention.ms / retention.bytes are applied (Kafka's
    log.retention.check.interval.ms)."""
    sasl: bool = False
    """Require SASL (PLAIN or SCRAM-SHA-256) before any request but ApiVersions and SASL ones."""
    default_replication_factor: int = 1
    """Replication factor of topics created without one (auto-created, or -1 in CreateTopics)."""
    min_insync_replicas: int = 1
    """The broker default of the topic config `min.insync.replicas`."""
    leader_barrier_ms: int = 500
    """A Produce for a replicated partition this node holds a replica of but does not lead
    waits up to this long for a meta read barrier before it is answered NOT_LEADER (0: at
    once); later Produce requests on its connection wait behind it. See `_wants_barrier`."""


class MetaPort(Protocol):
    """How the broker reads and changes metadata. `machine()` is the applied state (read-only);
    `propose(data, done)` submits a command and calls `done(MetaResult | Exception)` once it has
    applied (or failed)."""

    def machine(self) -> MetaStateMachine: ...

    def propose(self, data: bytes, done: Callable[[MetaResult | Exception], None]) -> None: ...

    def barrier(self, done: Callable[[], None]) -> Callable[[], None] | None:
        """A linearizable read barrier: `done()` once this node has applied everything meta had
        committed when it was asked (Raft's read index). Returns a function that cancels it, or
        None if no barrier can be had now (no meta leader known): the caller goes on at once."""
        ...


class _Slot:
    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: bytes | None = None


class _Conn:
    __slots__ = ("id", "peer", "buf", "slots", "closing", "client_id", "sasl", "user",
                 "authenticated", "raw_sasl", "congested")

    def __init__(self, conn_id: int, peer: str) -> None:
        self.id = conn_id
        self.peer = peer
        self.buf = bytearray()
        self.slots: deque[_Slot] = deque()
        self.closing = False
        self.client_id: str | None = None
        self.sasl: Any = None
        self.user: str | None = None
        self.authenticated = False
        self.raw_sasl = False
        self.congested = False  # recorded only: see KafkaBroker.set_congested


@dataclass(slots=True)
class _FetchWait:
    conn: _Conn
    slot: _Slot
    header: RequestHeader
    req: dict
    deadline_ms: int
    keys: tuple[tuple[str, int], ...]


@dataclass(slots=True)
class _ProduceWait:
    conn: _Conn
    slot: _Slot
    header: RequestHeader
    body: dict
    needs: dict[str, int]
    """Shard -> the end its `ack_end` must reach (acks=1, and unreplicated acks=all)."""
    commits: dict[tuple[str, int], tuple[int, list[dict]]] = field(default_factory=dict)
    """Replicated partitions written with acks=all -> (shard end the high watermark must reach,
    the partition responses to fail if it cannot)."""
    deadline_ms: int = 0


class _Barrier:
    """Produce requests of one connection held until this node's meta caught up with what the
    client may have read elsewhere (`KafkaBroker._wants_barrier`)."""

    __slots__ = ("cancel", "deadline_ms", "passed", "queue")

    def __init__(self, deadline_ms: int) -> None:
        self.cancel: Callable[[], None] = lambda: None
        self.deadline_ms = deadline_ms
        self.passed = False
        self.queue: list[tuple[_Slot | None, RequestHeader, dict]] = []


class _Seen(NamedTuple):
    """One pass over the held produces: what the replicator and the shards answered."""

    states: dict[tuple[str, int], tuple[int, int] | None]
    min_insync: dict[str, int]
    acked: dict[str, int]


@dataclass(slots=True)
class Stats:
    requests: dict[str, int] = field(default_factory=dict)
    malformed: int = 0
    produced_batches: int = 0
    produced_bytes: int = 0
    fetched_bytes: int = 0
    duplicates: int = 0
    connections: int = 0
    auth_failures: int = 0
    produce_barriers: int = 0
    """Produce requests held for a meta read barrier (`KafkaBroker._wants_barrier`)."""
    produce_barrier_timeouts: int = 0
    """Of those, barriers no meta leader confirmed within `leader_barrier_ms`."""


def shard_name(topic: str, partition: int) -> str:
    return f"kafka:{topic}:{partition}"


def topic_name_error(name: Any) -> str | None:
    """Why `name` is not a legal Kafka topic name, or None."""
    if type(name) is not str or not name:
        return "topic name must be a non-empty string"
    if len(name) > TOPIC_NAME_MAX:
        return f"topic name is longer than {TOPIC_NAME_MAX} characters"
    if name in (".", ".."):
        return "topic name cannot be '.' or '..'"
    bad = [c for c in name if c not in TOPIC_CHARS]
    if bad:
        return (f"topic name {name!r} contains {bad[0]!r} "
                "(legal: ASCII letters, digits, '.', '_', '-')")
    return None


class KafkaBroker:
    def __init__(self, config: KafkaConfig, clock: Callable[[], int], shards: Any,
                 meta: MetaPort, *, member_prefix: str = "0",
                 sasl_factory: Callable[[], Any] | None = None,
                 log: Callable[[str], None] | None = None,
                 wall_clock: Callable[[], int] | None = None) -> None:
        """`clock`: monotonic ms for timeouts and long polls; `wall_clock`: epoch ms, compared
        with record timestamps by time-based retention (defaults to `clock`)."""
        self.config = config
        self.clock = clock
        self.wall_clock = wall_clock or clock
        self._next_retention: int | None = None
        self.shards = shards
        self.meta = meta
        self.log = log or (lambda _line: None)
        self.sasl_factory = sasl_factory
        self.groups = GroupCoordinator(
            member_prefix=member_prefix,
            initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
            min_session_timeout_ms=config.group_min_session_timeout_ms,
            max_session_timeout_ms=config.group_max_session_timeout_ms)
        self.stats = Stats()
        self.replicator: Any = None
        """The node's `real.server.replication.Replicator` (None: no replicated partitions)."""
        self.controller_id: Callable[[], int] = lambda: config.node_id
        """The meta leader (Metadata and DescribeCluster name it as the controller)."""
        self.conns: dict[int, _Conn] = {}
        self.logs: dict[tuple[str, int], PartitionLog] = {}
        self._out: list[tuple[int, bytes, bool]] = []
        self._fetch_waits: list[_FetchWait] = []
        self._produce_waits: list[_ProduceWait] = []
        self._waits_sig: tuple[Any, ...] | None = None
        """What the held produces depended on at the last pass over them (`_wait_signature`):
        while it is the same and no deadline passed, another pass would answer none."""
        self._wait_keys: tuple[set[str], set[tuple[str, int]]] = (set(), set())
        """The shards (acks=1, unreplicated) and partitions (acks=all, shared) they wait on."""
        self._commit_deadline: int | None = None
        """The earliest deadline of a held produce still waiting on a commit."""
        self._shared_open: dict[tuple[str, int], int] = {}
        """Shared (S3) partitions open here -> the leader epoch they were opened under."""
        self._barriers: dict[int, _Barrier] = {}
        """Connection id -> its Produce requests held behind a meta read barrier."""
        self._releasing = False
        self._pid_next = 0
        self._pid_limit = 0
        self._pid_waiters: list[Callable[[int], None]] = []
        self._pid_proposing = False
        # (log, shard, start, high watermark, end) per open partition at the last `invariants()`
        self._seen_offsets: dict[tuple[str, int], tuple[PartitionLog, str, int, int, int]] = {}
        # Hooks: called after a batch is stored (the MQTT bridge subscribes here).
        self.on_append: list[Callable[[str, int, bytes], None]] = []
        self._appended: deque[tuple[str, int, str, int, bytes]] = deque()
        self._handlers: dict[int, Callable[[_Conn, RequestHeader, dict], None]] = {
            api.PRODUCE: self._produce,
            api.FETCH: self._fetch,
            api.LIST_OFFSETS: self._list_offsets,
            api.METADATA: self._metadata,
            api.OFFSET_COMMIT: self._offset_commit,
            api.OFFSET_FETCH: self._offset_fetch,
            api.FIND_COORDINATOR: self._find_coordinator,
            api.JOIN_GROUP: self._join_group,
            api.HEARTBEAT: self._heartbeat,
            api.LEAVE_GROUP: self._leave_group,
            api.SYNC_GROUP: self._sync_group,
            api.DESCRIBE_GROUPS: self._describe_groups,
            api.LIST_GROUPS: self._list_groups,
            api.SASL_HANDSHAKE: self._sasl_handshake,
            api.API_VERSIONS: self._api_versions,
            api.CREATE_TOPICS: self._create_topics,
            api.DELETE_TOPICS: self._delete_topics,
            api.INIT_PRODUCER_ID: self._init_producer_id,
            api.DESCRIBE_CONFIGS: self._describe_configs,
            api.SASL_AUTHENTICATE: self._sasl_authenticate,
            api.CREATE_PARTITIONS: self._create_partitions,
            api.DELETE_GROUPS: self._delete_groups,
            api.OFFSET_FOR_LEADER_EPOCH: self._offset_for_leader_epoch,
            api.DESCRIBE_CLUSTER: self._describe_cluster,
        }

    # ---- connections ---------------------------------------------------------------------------

    def open(self, conn_id: int, *, peer: str = "", listener: str = "tcp",
             anonymous_ok: bool = False) -> None:
        """A transport connected. `listener` and `anonymous_ok` are accepted for the shared
        interface and ignored: Kafka has one plain listener, and SASL (`config.sasl`) decides
        about anonymous clients for all of them."""
        assert conn_id not in self.conns, conn_id
        self.conns[conn_id] = _Conn(conn_id, peer)
        self.stats.connections += 1

    def set_congested(self, conn_id: int, congested: bool) -> None:
        """Recorded and otherwise a no-op, on purpose: every byte the broker writes
        answers a request, so a client's output is bounded by its own pipelining (at most
        max.in.flight.requests.per.connection requests, each Fetch reply bounded by its
        max_bytes). Unlike MQTT there is no unsolicited traffic to shed or queue."""
        conn = self.conns.get(conn_id)
        if conn is not None:
            conn.congested = congested

    def closed(self, conn_id: int) -> None:
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return
        conn.closing = True
        conn.slots.clear()
        barrier = self._barriers.pop(conn_id, None)
        if barrier is not None:
            barrier.cancel()
        self._fetch_waits = [w for w in self._fetch_waits if w.conn is not conn]
        self._produce_waits = [w for w in self._produce_waits if w.conn is not conn]
        self._index_waits()

    def receive(self, conn_id: int, data: bytes) -> None:
        conn = self.conns.get(conn_id)
        if conn is None or conn.closing:
            return
        buf = conn.buf
        if buf:  # a partial frame is waiting: frames come out of the buffer
            buf += data
            src: bytes | bytearray = buf
        else:  # the common case: frames are sliced straight out of what was read
            src = data
        pos = 0
        total = len(src)
        limit = self.config.max_request_bytes
        with memoryview(src) as view:
            while total - pos >= 4 and not conn.closing:
                size = int.from_bytes(view[pos:pos + 4], "big", signed=True)
                if size < 0 or size > limit:
                    self._malformed(conn, f"request size {size} outside [0, {limit}]")
                    break
                if total - pos - 4 < size:
                    break
                frame = bytes(view[pos + 4:pos + 4 + size])  # the one copy of a request
                pos += 4 + size
                self._frame(conn, frame)
            if src is not buf:
                if pos < total and not conn.closing:
                    buf += view[pos:]
                pos = 0
        if pos:
            del buf[:pos]

    def _frame(self, conn: _Conn, frame: bytes) -> None:
        if conn.raw_sasl:
            self._raw_sasl_token(conn, frame)
            return
        try:
            header, body = decode_request(frame)
        except UnsupportedVersion as exc:
            if exc.api_key == api.API_VERSIONS:
                slot = self._slot(conn)
                correlation = exc.correlation_id if exc.correlation_id is not None else 0
                slot.data = api_versions_error_v0(correlation)
                self._flush(conn)
            else:
                self._malformed(conn, str(exc))
            return
        except KafkaCodecError as exc:
            self._malformed(conn, str(exc))
            return
        key = header.api_key
        name = api.NAMES[key]
        self.stats.requests[name] = self.stats.requests.get(name, 0) + 1
        conn.client_id = header.client_id
        if self.config.sasl and not conn.authenticated and not (
                conn.sasl.permits(key) if conn.sasl is not None else key in (
                    api.API_VERSIONS, api.SASL_HANDSHAKE)):
            self._malformed(conn, f"{name} before SASL authentication")
            return
        self._handlers[key](conn, header, body)

    def _malformed(self, conn: _Conn, why: str) -> None:
        self.stats.malformed += 1
        self.log(f"kafka: closing connection {conn.id} ({conn.peer}): {why}")
        self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if conn.closing:
            return
        self._flush(conn)
        conn.closing = True
        self._out.append((conn.id, b"", True))

    # ---- output --------------------------------------------------------------------------------

    def _slot(self, conn: _Conn) -> _Slot:
        slot = _Slot()
        conn.slots.append(slot)
        return slot

    def _reply(self, conn: _Conn, slot: _Slot, header: RequestHeader, body: dict) -> None:
        if conn.closing:
            return
        slot.data = encode_response(header.api_key, header.api_version, header.correlation_id,
                                    body)
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        slots = conn.slots
        if not slots or slots[0].data is None or conn.closing:
            return
        parts: list[bytes] = []
        while slots:
            data = slots[0].data
            if data is None:
                break
            slots.popleft()
            parts.append(data)
        self._out.append((conn.id, parts[0] if len(parts) == 1 else b"".join(parts), False))

    def drain(self) -> list[tuple[int, bytes, bool]]:
        out, self._out = self._out, []
        return out

    # ---- timers and durability -----------------------------------------------------------------

    def tick(self) -> None:
        now = self.clock()
        if self.coordinator() == self.config.node_id:
            self.groups.tick(now)
        else:
            self._resign_groups()
        if self._next_retention is None:
            self._next_retention = now + self.config.retention_check_ms
        elif now >= self._next_retention:
            self._next_retention = now + self.config.retention_check_ms
            self.apply_retention(self.wall_clock())
        if self._barriers:
            self._release_barriers(now)
        if self._commit_deadline is not None and self._commit_deadline <= now:
            self.durable_progress()
        if self._fetch_waits:
            due = [w for w in self._fetch_waits if w.deadline_ms <= now]
            if due:
                self._fetch_waits = [w for w in self._fetch_waits if w.deadline_ms > now]
                for wait in due:
                    self._answer_fetch(wait.conn, wait.slot, wait.header, wait.req, force=True)

    def next_deadline_ms(self) -> int | None:
        times = [w.deadline_ms for w in self._fetch_waits]
        if self._commit_deadline is not None:
            times.append(self._commit_deadline)
        group = self.groups.next_deadline_ms()
        if group is not None:
            times.append(group)
        times.extend(b.deadline_ms for b in self._barriers.values())
        return min(times) if times else None

    def durable_progress(self) -> None:
        """A shard's durable end moved: release held produce replies, wake long-polls (and
        Produce requests whose meta read barrier passed: the node calls this after meta applied
        and the replicator took up its roles)."""
        if self._barriers:
            self._release_barriers(self.clock())
        if self._produce_waits:
            now = self.clock()
            sig = self._wait_signature()
            due = self._commit_deadline is not None and self._commit_deadline <= now
            if due or sig != self._waits_sig:  # else no held produce can be answered now
                seen = _Seen({}, {}, {})
                still = []
                for wait in self._produce_waits:
                    if self._settled(wait, now, seen):
                        self._reply(wait.conn, wait.slot, wait.header, wait.body)
                    else:
                        still.append(wait)
                self._produce_waits = still
                self._index_waits()
                self._waits_sig = self._wait_signature()
        if self._fetch_waits:
            self._wake_fetches(None)
        if self._appended:
            self._release_appended()

    def _index_waits(self) -> None:
        """Recompute what the held produces wait on and their earliest commit deadline."""
        names: set[str] = set()
        keys: set[tuple[str, int]] = set()
        deadline: int | None = None
        for wait in self._produce_waits:
            names.update(wait.needs)
            if wait.commits:
                keys.update(wait.commits)
                if deadline is None or wait.deadline_ms < deadline:
                    deadline = wait.deadline_ms
        self._wait_keys = (names, keys)
        self._commit_deadline = deadline
        if not self._produce_waits:
            self._waits_sig = None

    def _add_wait(self, wait: _ProduceWait) -> None:
        self._produce_waits.append(wait)
        names, keys = self._wait_keys
        names.update(wait.needs)
        if wait.commits:
            keys.update(wait.commits)
            if self._commit_deadline is None or wait.deadline_ms < self._commit_deadline:
                self._commit_deadline = wait.deadline_ms

    def _wait_signature(self) -> tuple[Any, ...]:
        """The state `_settled` reads, over the shards and partitions held produces wait on:
        shard ack ends, commit states (high watermark and in-sync count, or None once this
        node stopped leading), and the applied meta index (topic configs)."""
        names, keys = self._wait_keys
        acks = []
        for name in sorted(names):  # (pure reads: sorted only to keep the core order-free)
            try:
                acks.append((name, self.shards.ack_end(name)))
            except Exception:  # noqa: BLE001 - a deleted shard: as `_durable` treats it
                acks.append((name, -1))
        rep = self.replicator
        states = [(key, self._shared_state(*key) if key in self._shared_open else
                   rep.commit_state(*key) if rep is not None else None) for key in sorted(keys)]
        return (self._machine().applied_index, tuple(acks), tuple(states))

    def _release_appended(self) -> None:
        """Run the `on_append` hooks for stored batches that are durable now, in append order."""
        while self._appended:
            shard, end, topic, partition, data = self._appended[0]
            if not self._durable({shard: end}):
                break
            self._appended.popleft()
            for hook in self.on_append:
                hook(topic, partition, data)

    def _settled(self, wait: _ProduceWait, now: int, seen: _Seen | None = None) -> bool:
        """Whether a held Produce can be answered: every acks=1 shard acknowledged locally and
        every acks=all replicated partition committed (high watermark past it), failed (this
        node stopped leading it; its in-sync set fell below min.insync.replicas) or timed out.

        `seen` memoizes the replicator's and the shards' answers over one pass of the held
        produces (a producer may have hundreds in flight, and the pass runs after every input)."""
        if seen is None:
            seen = _Seen({}, {}, {})
        if wait.commits:
            rep = self.replicator
            states = seen.states
            for key in list(wait.commits):
                end, outs = wait.commits[key]
                if key in states:
                    state = states[key]
                elif key in self._shared_open:
                    state = states[key] = self._shared_state(*key)
                else:
                    state = states[key] = rep.commit_state(*key) if rep is not None else None
                code = E.NONE
                if state is None:
                    code = E.NOT_LEADER_OR_FOLLOWER
                elif state[0] >= end:
                    del wait.commits[key]
                    continue
                else:
                    topic = key[0]
                    low = seen.min_insync.get(topic)
                    if low is None:
                        low = seen.min_insync[topic] = self._min_insync(topic)
                    if state[1] < low:
                        code = E.NOT_ENOUGH_REPLICAS_AFTER_APPEND
                    elif now >= wait.deadline_ms:
                        code = E.REQUEST_TIMED_OUT
                if code != E.NONE:
                    for out in outs:
                        out["error_code"] = code
                        out["base_offset"] = -1
                    del wait.commits[key]
        return not wait.commits and self._durable(wait.needs, seen.acked)

    def _durable(self, needs: dict[str, int], acked: dict[str, int] | None = None) -> bool:
        shards = self.shards
        for name, end in needs.items():
            have = acked.get(name) if acked is not None else None
            if have is None:
                try:
                    have = shards.ack_end(name)
                except Exception:  # noqa: BLE001 - a deleted shard holds nothing back
                    continue
                if acked is not None:
                    acked[name] = have
            if have < end:
                return False
        return True

    # ---- partitions ----------------------------------------------------------------------------

    def _machine(self) -> MetaStateMachine:
        return self.meta.machine()

    def machine(self) -> MetaStateMachine:
        """The applied meta state (the replicator's view too)."""
        return self.meta.machine()

    def _epoch_error(self, topic: str, partition: int, current: int) -> int:
        """A client's `current_leader_epoch` against this leader's (KIP-320): an older one is
        FENCED_LEADER_EPOCH (refresh metadata), a newer one UNKNOWN_LEADER_EPOCH (this node has
        not heard of it yet). -1 (not known to the client) and unreplicated partitions pass."""
        if current < 0 or not self._replicated(topic, partition) or self.replicator is None:
            return E.NONE
        epoch = self.replicator.epoch(topic, partition)
        if epoch is None or current == epoch:
            return E.NONE
        return E.FENCED_LEADER_EPOCH if current < epoch else E.UNKNOWN_LEADER_EPOCH

    def _exists(self, topic: str, partition: int) -> bool:
        info = self._machine().topic(topic)
        return info is not None and 0 <= partition < len(info.shards)

    def _replicated(self, topic: str, partition: int) -> bool:
        info = self._machine().topic(topic)
        return (info is not None and 0 <= partition < len(info.shards)
                and info.shards[partition].replicated)

    def _min_insync(self, topic: str) -> int:
        info = self._machine().topic(topic)
        value = dict(info.config).get("min.insync.replicas") if info is not None else None
        return int(value) if value is not None else self.config.min_insync_replicas

    def replica_log(self, topic: str, partition: int) -> PartitionLog:
        """The open log of a replicated partition this node holds a replica of, whatever its
        role (the replicator reads and writes it); opened (recovered) on first use."""
        key = (topic, partition)
        log = self.logs.get(key)
        if log is not None:
            return log
        info = self._machine().topic(topic)
        assert info is not None and info.shards[partition].replicated, key
        name = shard_name(topic, partition)
        if name not in self.shards.list():
            self.shards.attach(name, info.engine)
        log = PartitionLog(self.shards.engine(name))
        self.logs[key] = log
        return log

    def reconcile(self) -> None:
        """Meta applied something: drop (and delete the data of) the open partitions of
        topics meta no longer has, whichever node proposed the deletion; stop serving the
        shared partitions this node no longer leads at the epoch it opened them under."""
        sm = self._machine()
        for topic in sorted({t for t, _p in self.logs if sm.topic(t) is None}):
            self._drop_topic_logs(topic)
        for key in sorted(k for k in self.logs if k in self._shared_open):
            if self.shared_epoch(*key) != self._shared_open[key]:
                self.drop_shared(*key)

    @property
    def shared_logs_open(self) -> bool:
        return bool(self._shared_open)

    def shared_epoch(self, topic: str, partition: int) -> int:
        """The epoch this node leads shared partition `topic`/`partition` under (0: it does
        not, or the partition is not shared)."""
        info = self._machine().topic(topic)
        if info is None or not 0 <= partition < len(info.shards) or not info.shared(partition):
            return 0
        shard = info.shards[partition]
        return shard.epoch if shard.leader == self.config.node_id else 0

    def shared_logs(self) -> dict[tuple[str, int], int]:
        """The shared partitions open here -> the epoch they were opened under."""
        return dict(self._shared_open)

    def drop_shared(self, topic: str, partition: int) -> None:
        """Stop serving a shared partition (meta moved it, or its store said a newer leader
        took over): close its engine, keep the data; its held produces fail NOT_LEADER."""
        key = (topic, partition)
        self.logs.pop(key, None)
        epoch = self._shared_open.pop(key, None)
        name = shard_name(topic, partition)
        if name in self.shards.list():
            try:
                self.shards.detach(name)
            except Exception as exc:  # noqa: BLE001 - reported; the shard is forgotten anyway
                self.log(f"kafka: closing shared partition {topic}/{partition}: {exc}")
        self.log(f"kafka: stopped leading shared partition {topic}/{partition} (epoch {epoch})")
        self.lost_leadership(topic, partition)

    def _shared_state(self, topic: str, partition: int) -> tuple[int, int] | None:
        """A held produce's view of a shared partition: (confirmed end, a count that passes
        any min.insync.replicas: the store is the replica), or None once this node stopped
        leading it."""
        key = (topic, partition)
        if key not in self._shared_open or self.shared_epoch(*key) != self._shared_open[key]:
            return None
        return self.shards.ack_end(shard_name(topic, partition)), 1 << 30

    def drop_replica_log(self, topic: str, partition: int) -> None:
        """This node no longer holds a replica: forget the open log (the data stays)."""
        self.logs.pop((topic, partition), None)

    def ack_end(self, topic: str, partition: int) -> int:
        return int(self.shards.ack_end(shard_name(topic, partition)))

    def lost_leadership(self, topic: str, partition: int) -> None:
        """The replicator stopped leading `topic`/`partition`: what waited on it fails now."""
        self.durable_progress()
        if self._fetch_waits:
            self._wake_fetches({(topic, partition)})

    def owner(self, topic: str, partition: int) -> int:
        """The node whose shard holds `topic`/`partition` (its leader in meta; this node for a
        partition meta gives no leader, as a single node records none), or 0 if there is no
        such partition. Until shards are replicated, a partition lives on the node that created
        its topic."""
        info = self._machine().topic(topic)
        if info is None or not 0 <= partition < len(info.shards):
            return 0
        shard = info.shards[partition]
        if shard.replicated or info.shared(partition):
            return shard.leader
        return shard.leader or self.config.node_id

    def partition_log(self, topic: str, partition: int) -> PartitionLog | None:
        """The open log of `topic`/`partition`, opening (recovering) it on first use; None if meta
        has no such partition or another node holds it."""
        key = (topic, partition)
        if self._replicated(topic, partition):
            rep = self.replicator
            if rep is None or not rep.leads_shard(topic, partition):
                return None
            return self.replica_log(topic, partition)
        log = self.logs.get(key)
        if log is not None:
            return log
        info = self._machine().topic(topic)
        if info is None or not 0 <= partition < len(info.shards):
            return None
        if self.owner(topic, partition) != self.config.node_id:
            return None
        name = shard_name(topic, partition)
        if info.shared(partition):
            return self._open_shared(topic, partition, info.engine, info.shards[partition].epoch)
        if name not in self.shards.list():
            self.shards.attach(name, info.engine)
        log = PartitionLog(self.shards.engine(name))
        self.logs[key] = log
        return log

    def _is_shared(self, topic: str, partition: int) -> bool:
        info = self._machine().topic(topic)
        return info is not None and 0 <= partition < len(info.shards) and info.shared(partition)

    def _open_shared(self, topic: str, partition: int, engine: str,
                     epoch: int) -> PartitionLog | None:
        """Take over a shared partition under `epoch` (the store records the takeover and
        ignores what older leaders write from then on); None if a newer leader took it."""
        from real.storage.s3engine import EngineFenced

        name = shard_name(topic, partition)
        if name in self.shards.list():  # left open by an earlier leadership here
            self.shards.detach(name)
        try:
            self.shards.attach(name, engine, epoch=epoch)
        except EngineFenced as exc:
            self.log(f"kafka: shared partition {topic}/{partition}: {exc}")
            return None
        log = PartitionLog(self.shards.engine(name))
        self.logs[(topic, partition)] = log
        self._shared_open[(topic, partition)] = epoch
        self.log(f"kafka: leading shared partition {topic}/{partition} at epoch {epoch} from "
                 f"offset {log.log_end_offset}")
        return log

    def create_topic(self, name: str, done: Callable[[int, str | None], None], *,
                     partitions: int | None = None, replication: int = 1,
                     engine: str | None = None, config: dict | None = None) -> None:
        """Create `name` through meta (the node creates the bridge's topics and the MQTT
        cluster log this way); `done(error_code, message)` once meta has answered. Without
        `replication` > 1 its partitions get no leader: every node bridges into its own copy."""
        count = self.config.default_partitions if partitions is None else partitions
        self._create_topic(name, count, engine, dict(config or {}), done, here=False,
                           replication=replication)

    def _drop_topic_logs(self, topic: str) -> None:
        for key in [k for k in self.logs if k[0] == topic]:
            log = self.logs.pop(key)
            self._shared_open.pop(key, None)
            del log
        for name in [n for n in self.shards.list() if n.startswith(f"kafka:{topic}:")]:
            try:
                self.shards.delete(name)
            except Exception as exc:  # noqa: BLE001 - reported, the topic is gone from meta
                self.log(f"kafka: could not delete shard {name}: {exc}")

    def _high_watermark(self, topic: str, partition: int, log: PartitionLog) -> int:
        """Consumers read below it: the committed prefix of a replicated partition (on its
        leader), else the locally acknowledged one."""
        if self._replicated(topic, partition):
            rep = self.replicator
            end = rep.high_watermark(topic, partition) if rep is not None else 0
            return log.kafka_offset(end)
        return log.kafka_offset(self.shards.ack_end(shard_name(topic, partition)))

    def apply_retention(self, now_wall_ms: int) -> int:
        """Drop whole batches of open partitions past their topic's retention.ms (by record
        timestamp, Kafka's CreateTime) or beyond retention.bytes; returns batches dropped. The
        newest batch always stays (it anchors the log end offset across restarts)."""
        sm = self._machine()
        dropped = 0
        for (topic, partition), log in list(self.logs.items()):
            info = sm.topic(topic)
            if info is None:
                continue
            config = dict(info.config)
            retention_ms = int(config.get("retention.ms", int(TOPIC_DEFAULTS["retention.ms"])))
            retention_bytes = int(config.get("retention.bytes", -1))
            start = log.log_start_offset
            target = start
            if retention_ms >= 0:
                offset, _ts = log.offset_for_time(now_wall_ms - retention_ms)
                target = max(target, offset if offset >= 0 else log.log_end_offset)
            if retention_bytes >= 0:
                target = max(target, self._offset_for_bytes(topic, partition, retention_bytes))
            if target > start:
                first = self.shards.engine(shard_name(topic, partition)).start_offset()
                log.delete_before(target)
                after = self.shards.engine(shard_name(topic, partition)).start_offset()
                dropped += after - first
                if log.log_start_offset != start:
                    self.log(f"kafka: retention moved {topic}-{partition} log start "
                             f"{start} -> {log.log_start_offset}")
        return dropped

    def _offset_for_bytes(self, topic: str, partition: int, keep_bytes: int) -> int:
        """The Kafka offset of the first batch to keep so the partition holds <= keep_bytes."""
        engine = self.shards.engine(shard_name(topic, partition))
        excess = engine.bytes_total() - keep_bytes
        offset, end = engine.start_offset(), engine.end_offset()
        first_kept = None
        while excess > 0 and offset < end:
            for rec in engine.read(offset, 256, 1 << 30):
                if excess <= 0:
                    break
                excess -= rec.size()
                offset = rec.offset + 1
        if offset < end:
            (rec,) = engine.read(offset, 1, 0)
            first_kept = int.from_bytes(rec.payload[:8], "big")
        log = self.logs[(topic, partition)]
        return log.log_end_offset if first_kept is None else first_kept

    # ---- ApiVersions, Metadata -----------------------------------------------------------------

    def _api_versions(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        keys = [{"api_key": k, "min_version": lo, "max_version": hi}
                for k, (lo, hi) in sorted(api.VERSIONS.items())]
        self._reply(conn, self._slot(conn), h,
                    {"error_code": 0, "api_keys": keys, "throttle_time_ms": 0})

    def _broker_entry(self) -> dict:
        c = self.config
        return {"node_id": c.node_id, "host": c.host, "port": c.port, "rack": None}

    def _brokers(self) -> list[dict]:
        """Every registered node with a Kafka address (this node always, as configured)."""
        out = {self.config.node_id: self._broker_entry()}
        for node in self._machine().nodes():
            host, _, port = node.kafka_addr.rpartition(":")
            if node.node_id not in out and host and port.isdigit():
                out[node.node_id] = {"node_id": node.node_id, "host": host.strip("[]"),
                                     "port": int(port), "rack": None}
        return [out[n] for n in sorted(out)]

    def _leader_arg(self, here: bool) -> dict[str, int]:
        node = self.config.node_id
        registered = self._machine().node(node) is not None
        return {"leader": node} if here and registered else {}

    def _where(self, topic: str, partition: int) -> int:
        """E.NONE if this node holds the partition, else why not (for Produce, Fetch and
        ListOffsets: NOT_LEADER_OR_FOLLOWER sends clients to refresh their metadata)."""
        owner = self.owner(topic, partition)
        if owner == 0:
            if self._replicated(topic, partition) or self._is_shared(topic, partition):
                return E.LEADER_NOT_AVAILABLE  # offline: no live in-sync replica / no leader
            return E.UNKNOWN_TOPIC_OR_PARTITION
        if owner != self.config.node_id:
            return E.NOT_LEADER_OR_FOLLOWER
        if self._replicated(topic, partition) and (
                self.replicator is None or not self.replicator.leads_shard(topic, partition)):
            return E.NOT_LEADER_OR_FOLLOWER
        return E.NONE

    def _metadata(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        slot = self._slot(conn)
        topics = req.get("topics")
        sm = self._machine()
        if topics is None or (h.api_version == 0 and not topics):
            wanted: list[str | None] = [t.name for t in sm.topics()]
        else:
            wanted = [t["name"] for t in topics]  # None: asked by topic id (v10+)
        auto = self.config.auto_create_topics and (h.api_version < 4
                                                   or req.get("allow_auto_topic_creation", True))
        missing = [n for n in dict.fromkeys(wanted)
                   if n is not None and sm.topic(n) is None and topic_name_error(n) is None]
        if auto and missing and topics is not None:
            pending = {"n": len(missing)}

            def created(_err: int, _msg: str | None) -> None:
                pending["n"] -= 1
                if pending["n"] == 0:
                    self._reply(conn, slot, h, self._metadata_body(wanted, h.api_version))

            for name in missing:
                self._create_topic(name, self.config.default_partitions, None, {}, created,
                                   replication=self._default_rf())
            return
        self._reply(conn, slot, h, self._metadata_body(wanted, h.api_version))

    def _metadata_body(self, wanted: list[str | None], version: int = 0) -> dict:
        sm = self._machine()
        node = self.config.node_id
        out: list[dict[str, Any]] = []
        for name in wanted:
            if name is None:  # by topic id (v10+): TwinMQ's topics have none (all zero)
                out.append({"error_code": E.UNKNOWN_TOPIC_ID,
                            "name": None if version >= 12 else "", "is_internal": False,
                            "partitions": [], "topic_authorized_operations": INT32_MIN})
                continue
            info = sm.topic(name)
            if info is None:
                err = E.INVALID_TOPIC_EXCEPTION if topic_name_error(name) else \
                    E.UNKNOWN_TOPIC_OR_PARTITION
                out.append({"error_code": err, "name": name, "is_internal": False,
                            "partitions": [], "topic_authorized_operations": INT32_MIN})
                continue
            parts = []
            for i, s in enumerate(info.shards):
                if s.replicated:
                    leader = s.leader
                    if leader == node and self.replicator is not None and self.replicator.fenced:
                        leader = 0  # this node lost touch with meta: its view may be stale
                    parts.append({"error_code": 0 if leader else E.LEADER_NOT_AVAILABLE,
                                  "partition_index": i, "leader_id": leader or -1,
                                  "leader_epoch": s.epoch, "replica_nodes": list(s.replicas),
                                  "isr_nodes": list(s.isr), "offline_replicas": []})
                    continue
                if info.shared(i):  # shared storage: its leader (any live node) and epoch
                    leader = s.leader
                    parts.append({"error_code": 0 if leader else E.LEADER_NOT_AVAILABLE,
                                  "partition_index": i, "leader_id": leader or -1,
                                  "leader_epoch": s.epoch,
                                  "replica_nodes": [leader] if leader else [],
                                  "isr_nodes": [leader] if leader else [],
                                  "offline_replicas": []})
                    continue
                owner = s.leader or node
                parts.append({"error_code": 0, "partition_index": i, "leader_id": owner,
                              "leader_epoch": -1, "replica_nodes": [owner],
                              "isr_nodes": [owner], "offline_replicas": []})
            out.append({"error_code": 0, "name": name, "is_internal": False,
                        "partitions": parts, "topic_authorized_operations": INT32_MIN})
        return {"throttle_time_ms": 0, "brokers": self._brokers(),
                "cluster_id": self.config.cluster_id, "controller_id": self.controller_id() or -1,
                "topics": out,
                "cluster_authorized_operations": INT32_MIN}

    # ---- topics --------------------------------------------------------------------------------

    def _topic_config(self, configs: list[dict]) -> tuple[str | None, dict, str | None]:
        """(engine, config, error message) from CreateTopics configs."""
        engine = None
        config: dict[str, Any] = {}
        for entry in configs:
            key, value = entry.get("name"), entry.get("value")
            if not isinstance(key, str):
                return None, {}, f"a topic config needs a name, got {key!r}"
            kind = TOPIC_CONFIGS.get(key)
            if kind is None:
                return None, {}, (f"unknown topic config {key!r} (supported: "
                                  f"{', '.join(sorted(TOPIC_CONFIGS))})")
            if value is None:
                continue
            if kind == "int":
                try:
                    number = int(value)
                except ValueError:
                    return None, {}, f"topic config {key!r} must be an integer, got {value!r}"
                if number < -1:
                    return None, {}, f"topic config {key!r} must be >= -1, got {number}"
                config[key] = number
            elif kind == "bool":
                if value not in ("true", "false"):
                    return None, {}, f"topic config {key!r} must be true or false, got {value!r}"
                config[key] = value
            elif kind == "engine":
                if value not in ENGINES:
                    return None, {}, (f"topic config 'storage.engine' must be one of "
                                      f"{', '.join(ENGINES)}, got {value!r}")
                engine = value
            elif value != kind:
                return None, {}, (f"topic config {key!r} supports only {kind!r} here, "
                                  f"got {value!r}")
            else:
                config[key] = value
        return engine, config, None

    def _create_topic(self, name: str, partitions: int, engine: str | None, config: dict,
                      done: Callable[[int, str | None], None], here: bool = True,
                      replication: int = 1) -> None:
        """A topic a client asked for: with `replication` > 1, meta places its partitions'
        replicas over the registered nodes; else it lives on this node (`here`: meta records
        this node as its partitions' leader once the node is registered)."""
        err = topic_name_error(name)
        if err is not None:
            done(E.INVALID_TOPIC_EXCEPTION, err)
            return
        if self._machine().topic(name) is not None:
            done(E.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
            return
        try:
            if (engine or self.config.default_engine) == "s3":
                replication = 1  # shared storage: the object store is the replica
            placement = ({"replication": replication} if replication > 1
                         else self._leader_arg(here))
            data = encode_command("topic.create", name=name, shards=partitions,
                                  engine=engine or self.config.default_engine, config=config,
                                  **placement)
        except MetaError as exc:
            done(E.INVALID_REQUEST, str(exc))
            return

        def applied(result: MetaResult | Exception) -> None:
            if isinstance(result, Exception):
                done(E.REQUEST_TIMED_OUT, f"meta proposal failed: {result}")
            elif not result.ok:
                already = "already exists" in (result.error or "")
                done(E.TOPIC_ALREADY_EXISTS if already else E.INVALID_REQUEST, result.error)
            else:
                try:
                    for p in range(partitions):
                        if not self._replicated(name, p):
                            self.partition_log(name, p)
                except Exception as exc:  # noqa: BLE001 - a storage error fails this request only
                    self.log(f"kafka: topic {name} created but its storage failed: {exc}")
                    done(E.KAFKA_STORAGE_ERROR, f"storage error: {exc}")
                    return
                self.log(f"kafka: created topic {name} ({partitions} partitions)")
                done(E.NONE, None)

        self.meta.propose(data, applied)

    def _default_rf(self) -> int:
        """The configured default replication factor. Not capped by the nodes registered now:
        a topic auto-created while a node is still registering would keep fewer replicas for
        good; meta refuses it instead and the client asks again (as Kafka refuses an
        auto-creation beyond its live brokers)."""
        return self.config.default_replication_factor

    def _create_topics(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        slot = self._slot(conn)
        topics = req.get("topics") or []
        results: list[dict] = []
        pending = {"n": 1}  # the loop itself: replies once it is done
        validate_only = bool(req.get("validate_only"))

        def finish() -> None:
            if pending["n"] == 0:
                self._reply(conn, slot, h, {"throttle_time_ms": 0, "topics": results})

        for t in topics:
            entry = {"name": t["name"], "error_code": 0, "error_message": None,
                     "num_partitions": -1, "replication_factor": -1, "configs": []}
            results.append(entry)
            count = t.get("num_partitions", -1)
            count = self.config.default_partitions if count == -1 else count
            rf = t.get("replication_factor", -1)
            engine, config, msg = self._topic_config(t.get("configs") or [])
            err = E.NONE
            if msg is not None:
                err = E.INVALID_CONFIG
            elif t.get("assignments"):
                err, msg = E.INVALID_REQUEST, "manual replica assignments are not supported"
            elif not 1 <= count <= 1024:
                err, msg = E.INVALID_PARTITIONS, f"partition count {count} outside [1, 1024]"
            elif not (rf == -1 or 1 <= rf <= max(1, len(self._machine().nodes()))):
                err, msg = (E.INVALID_REPLICATION_FACTOR,
                            f"replication factor {rf} outside [1, "
                            f"{max(1, len(self._machine().nodes()))}] (the registered brokers)")
            elif topic_name_error(t["name"]) is not None:
                err, msg = E.INVALID_TOPIC_EXCEPTION, topic_name_error(t["name"])
            elif self._machine().topic(t["name"]) is not None:
                err, msg = E.TOPIC_ALREADY_EXISTS, f"topic {t['name']!r} already exists"
            if err or validate_only:
                entry["error_code"], entry["error_message"] = err, msg
                continue
            rf = self._default_rf() if rf == -1 else rf
            entry["num_partitions"], entry["replication_factor"] = count, rf
            pending["n"] += 1

            def done(code: int, message: str | None, entry: dict = entry) -> None:
                entry["error_code"], entry["error_message"] = code, message
                pending["n"] -= 1
                finish()

            self._create_topic(t["name"], count, engine, config, done, replication=rf)
        pending["n"] -= 1
        finish()

    def _delete_topics(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        slot = self._slot(conn)
        names = req.get("topic_names") or [t.get("name") for t in req.get("topics") or []]
        results: list[dict] = []
        pending = {"n": 1}  # the loop itself: replies once it is done

        def finish() -> None:
            if pending["n"] == 0:
                self._reply(conn, slot, h, {"throttle_time_ms": 0, "responses": results})

        for name in names:
            entry = {"name": name, "error_code": 0, "error_message": None}
            results.append(entry)
            if self._machine().topic(name) is None:
                entry["error_code"] = E.UNKNOWN_TOPIC_OR_PARTITION
                continue
            pending["n"] += 1

            def applied(result: MetaResult | Exception, entry: dict = entry,
                        name: str = name) -> None:
                if isinstance(result, Exception) or not result.ok:
                    entry["error_code"] = E.UNKNOWN_TOPIC_OR_PARTITION
                else:
                    self._drop_topic_logs(name)
                    self.log(f"kafka: deleted topic {name}")
                pending["n"] -= 1
                finish()

            self.meta.propose(encode_command("topic.delete", name=name), applied)
        pending["n"] -= 1
        finish()

    def _create_partitions(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        slot = self._slot(conn)
        results: list[dict] = []
        pending = {"n": 1}  # the loop itself: replies once it is done

        def finish() -> None:
            if pending["n"] == 0:
                self._reply(conn, slot, h, {"throttle_time_ms": 0, "results": results})

        for t in req.get("topics") or []:
            entry = {"name": t["name"], "error_code": 0, "error_message": None}
            results.append(entry)
            info = self._machine().topic(t["name"])
            count = t.get("count", 0)
            if info is None:
                entry["error_code"] = E.UNKNOWN_TOPIC_OR_PARTITION
            elif count <= len(info.shards) or count > 1024:
                entry["error_code"] = E.INVALID_PARTITIONS
                entry["error_message"] = (f"topic has {len(info.shards)} partitions; the new "
                                          f"count must be larger and <= 1024, got {count}")
            elif t.get("assignments"):
                entry["error_code"] = E.INVALID_REQUEST
                entry["error_message"] = "manual replica assignments are not supported"
            elif not req.get("validate_only"):
                pending["n"] += 1

                def applied(result: MetaResult | Exception, entry: dict = entry) -> None:
                    if isinstance(result, Exception) or not result.ok:
                        entry["error_code"] = E.INVALID_PARTITIONS
                        entry["error_message"] = str(result) if isinstance(
                            result, Exception) else result.error
                    pending["n"] -= 1
                    finish()

                self.meta.propose(encode_command("topic.add_shards", name=t["name"],
                                                 shards=count), applied)
        pending["n"] -= 1
        finish()

    def _describe_configs(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        results = []
        for res in req.get("resources") or []:
            rtype, rname = res["resource_type"], res["resource_name"]
            keys = res.get("configuration_keys")
            entry = {"error_code": 0, "error_message": None, "resource_type": rtype,
                     "resource_name": rname, "configs": []}
            results.append(entry)
            if rtype == 2:  # TOPIC
                info = self._machine().topic(rname)
                if info is None:
                    entry["error_code"] = E.UNKNOWN_TOPIC_OR_PARTITION
                    entry["error_message"] = f"topic {rname!r} does not exist"
                    continue
                own = {k: str(v) for k, v in info.config}
                values = dict(TOPIC_DEFAULTS)
                values["max.message.bytes"] = str(self.config.max_message_bytes)
                values.update(own)
                values["storage.engine"] = info.engine
                source = {k: (1 if k in own or k == "storage.engine" else 5) for k in values}
            elif rtype == 4:  # BROKER
                c = self.config
                values = {"num.partitions": str(c.default_partitions),
                          "auto.create.topics.enable": str(c.auto_create_topics).lower(),
                          "message.max.bytes": str(c.max_message_bytes),
                          "socket.request.max.bytes": str(c.max_request_bytes),
                          "storage.engine": c.default_engine,
                          "group.initial.rebalance.delay.ms":
                              str(c.group_initial_rebalance_delay_ms)}
                source = dict.fromkeys(values, 4)  # STATIC_BROKER_CONFIG
            else:
                entry["error_code"] = E.INVALID_REQUEST
                entry["error_message"] = f"resource type {rtype} is not supported"
                continue
            for key in sorted(values):
                if keys is not None and key not in keys:
                    continue
                entry["configs"].append({
                    "name": key, "value": values[key], "read_only": rtype == 4,
                    "is_default": source[key] == 5, "config_source": source[key],
                    "is_sensitive": False, "synonyms": [], "config_type": 0,
                    "documentation": None})
        self._reply(conn, self._slot(conn), h, {"throttle_time_ms": 0, "results": results})

    # ---- produce -------------------------------------------------------------------------------

    def _produce(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        # an earlier Produce on this connection waits: this one goes behind it, in order
        barrier = self._barriers.get(conn.id)
        if barrier is None and self._wants_barrier(req):
            barrier = self._start_barrier(conn.id)
        if barrier is None:
            self._produce_now(conn, h, req, None)
            return
        barrier.queue.append((self._slot(conn) if req.get("acks", -1) != 0 else None, h, req))

    def _start_barrier(self, conn_id: int) -> _Barrier | None:
        """Ask meta for a read barrier for connection `conn_id`'s Produce requests (None: no
        meta leader known, so none can be had now)."""
        barrier = _Barrier(self.clock() + self.config.leader_barrier_ms)

        def passed() -> None:
            barrier.passed = True

        cancel = self.meta.barrier(passed)
        if cancel is None:
            return None
        barrier.cancel = cancel
        self._barriers[conn_id] = barrier
        self.stats.produce_barriers += 1
        return barrier

    def _wants_barrier(self, req: dict) -> bool:
        """Whether a Produce names a replicated partition this node holds a replica of but does
        not lead (now). Its client was told this node leads it, maybe by a node whose meta is
        ahead of this one's: answered NOT_LEADER at once, a pipelined idempotent producer then
        finds this node leading by its next request, gets OUT_OF_ORDER_SEQUENCE for it (the
        records before it were refused), and librdkafka bumps its epoch and sends again records
        the old leader had stored and this node has (duplicates). So the request waits until
        this node has applied everything meta had committed when it arrived (a read barrier,
        at most `leader_barrier_ms`), and later Produce requests on its connection wait behind
        it: then it leads, and takes them in order, or it does not, and refuses them all."""
        if self.replicator is None or self.config.leader_barrier_ms <= 0:
            return False
        node = self.config.node_id
        sm = self._machine()
        for t in req.get("topic_data") or []:
            info = sm.topic(t["name"])
            if info is None:
                continue
            for p in t.get("partition_data") or []:
                index = p["index"]
                if not 0 <= index < len(info.shards):
                    continue
                shard = info.shards[index]
                if (shard.replicated and node in shard.replicas
                        and not self.replicator.leads_shard(t["name"], index)):
                    return True
        return False

    def _release_barriers(self, now: int) -> None:
        """Run the held Produce requests whose barrier passed or timed out, in arrival order."""
        if self._releasing:
            return
        self._releasing = True
        try:
            for conn_id in sorted(self._barriers):
                barrier = self._barriers.get(conn_id)
                if barrier is None or not (barrier.passed or now >= barrier.deadline_ms):
                    continue
                del self._barriers[conn_id]
                if not barrier.passed:
                    barrier.cancel()
                    self.stats.produce_barrier_timeouts += 1
                conn = self.conns.get(conn_id)
                if conn is None or conn.closing:
                    continue
                for slot, h, req in barrier.queue:
                    self._produce_now(conn, h, req, slot)
        finally:
            self._releasing = False

    def _produce_now(self, conn: _Conn, h: RequestHeader, req: dict,
                     slot: _Slot | None) -> None:
        acks = req.get("acks", -1)
        now = self.clock()
        needs: dict[str, int] = {}
        commits: dict[tuple[str, int], tuple[int, list[dict]]] = {}
        rep = self.replicator
        responses = []
        bad_acks = acks not in (0, 1, -1)
        for t in req.get("topic_data") or []:
            name = t["name"]
            parts = []
            for p in t.get("partition_data") or []:
                index = p["index"]
                out = {"index": index, "error_code": 0, "base_offset": -1,
                       "log_append_time_ms": -1, "log_start_offset": -1, "record_errors": [],
                       "error_message": None}
                parts.append(out)
                if bad_acks:
                    out["error_code"] = E.INVALID_REQUIRED_ACKS
                    continue
                log = self.partition_log(name, index)
                records = p.get("records")
                if log is None:
                    out["error_code"] = self._where(name, index) or E.UNKNOWN_TOPIC_OR_PARTITION
                    continue
                if not records:
                    out["error_code"] = E.INVALID_RECORD
                    out["error_message"] = "empty record set"
                    continue
                try:
                    infos = split_batches(records)
                except RecordsError as exc:
                    out["error_code"] = exc.error_code
                    out["error_message"] = str(exc)
                    continue
                too_big = [i for i in infos if i.size > self.config.max_message_bytes]
                if len(infos) != 1:
                    out["error_code"] = E.INVALID_RECORD
                    out["error_message"] = (f"produce v3+ carries exactly one record batch per "
                                            f"partition, got {len(infos)}")
                    continue
                if too_big:
                    out["error_code"] = E.MESSAGE_TOO_LARGE
                    out["error_message"] = (f"batch of {too_big[0].size} bytes exceeds "
                                            f"max.message.bytes {self.config.max_message_bytes}")
                    continue
                replicated = self._replicated(name, index)
                if replicated and acks == -1 and rep.isr_size(name, index) < self._min_insync(name):
                    out["error_code"] = E.NOT_ENOUGH_REPLICAS
                    out["error_message"] = (f"in-sync replicas {rep.isr_size(name, index)} < "
                                            f"min.insync.replicas {self._min_insync(name)}")
                    continue
                result = log.append(records, infos, now)
                out["error_code"] = result.error_code
                out["error_message"] = result.error_message
                out["base_offset"] = result.base_offset
                out["log_start_offset"] = log.log_start_offset
                if result.error_code == 0 and replicated:
                    self.stats.duplicates += result.duplicate
                    if not result.duplicate:
                        self.stats.produced_batches += len(infos)
                        self.stats.produced_bytes += len(records)
                        rep.appended(name, index)
                    if acks == -1 and "acks-downgrade" not in rep.bugs:  # the high watermark
                        end, outs = commits.get((name, index), (0, []))
                        commits[(name, index)] = (max(end, result.shard_end), [*outs, out])
                    else:
                        shard = shard_name(name, index)
                        needs[shard] = max(needs.get(shard, 0), result.shard_end)
                elif result.error_code == 0 and (name, index) in self._shared_open:
                    # shared storage: acknowledged once meta confirmed this epoch still leads
                    # after the PUT (acks 1 and all alike: the store is the only replica)
                    if result.duplicate:
                        self.stats.duplicates += 1
                    else:
                        self.stats.produced_batches += len(infos)
                        self.stats.produced_bytes += len(records)
                    end, outs = commits.get((name, index), (0, []))
                    commits[(name, index)] = (max(end, result.shard_end), [*outs, out])
                elif result.error_code == 0:
                    if result.duplicate:
                        # a retry is acknowledged only once the original batch is durable
                        self.stats.duplicates += 1
                        shard = shard_name(name, index)
                        needs[shard] = max(needs.get(shard, 0), result.shard_end)
                    else:
                        self.stats.produced_batches += len(infos)
                        self.stats.produced_bytes += len(records)
                        shard = shard_name(name, index)
                        needs[shard] = max(needs.get(shard, 0), result.shard_end)
                        if self.on_append:
                            # subscribers (the MQTT bridge) see a batch once it is durable,
                            # as Kafka consumers do
                            self._appended.append((shard, result.shard_end, name, index,
                                                   bytes(records)))
            responses.append({"name": name, "partition_responses": parts})
        if needs and self._fetch_waits:
            self._wake_fetches(None)
        if self._appended:
            self._release_appended()
        if acks == 0:
            return
        body = {"responses": responses, "throttle_time_ms": 0}
        if slot is None:
            slot = self._slot(conn)
        wait = _ProduceWait(conn, slot, h, body, needs, commits,
                            now + max(0, req.get("timeout_ms", 30_000)))
        if self._settled(wait, now):
            self._reply(conn, slot, h, body)
        else:
            self._add_wait(wait)

    # ---- fetch ---------------------------------------------------------------------------------

    def _fetch(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        slot = self._slot(conn)
        self._answer_fetch(conn, slot, h, req, force=False)

    def _answer_fetch(self, conn: _Conn, slot: _Slot, h: RequestHeader, req: dict,
                      force: bool) -> bool:
        total, body, errors = self._fetch_body(h, req)
        wait_ms = min(req.get("max_wait_ms", 0), self.config.fetch_wait_max_ms)
        if force or errors or total >= max(1, req.get("min_bytes", 1)) or wait_ms <= 0:
            self.stats.fetched_bytes += total
            self._reply(conn, slot, h, body)
            return True
        keys = tuple((t["topic"], p["partition"]) for t in req.get("topics") or []
                     for p in t.get("partitions") or [])
        self._fetch_waits.append(_FetchWait(conn, slot, h, req, self.clock() + wait_ms, keys))
        return False

    def _fetch_body(self, h: RequestHeader, req: dict) -> tuple[int, dict, bool]:
        budget = req.get("max_bytes", 0x7FFFFFFF)
        if budget <= 0:
            budget = 0x7FFFFFFF
        total = 0
        errors = False
        responses = []
        for t in req.get("topics") or []:
            topic = t["topic"]
            parts = []
            for p in t.get("partitions") or []:
                index = p["partition"]
                out = {"partition_index": index, "error_code": 0, "high_watermark": -1,
                       "last_stable_offset": -1, "log_start_offset": -1,
                       "aborted_transactions": [], "preferred_read_replica": -1,
                       "records": b""}
                parts.append(out)
                log = self.partition_log(topic, index)
                if log is None:
                    out["error_code"] = self._where(topic, index) or E.UNKNOWN_TOPIC_OR_PARTITION
                    errors = True
                    continue
                fenced = self._epoch_error(topic, index, p.get("current_leader_epoch", -1))
                if fenced:
                    out["error_code"] = fenced
                    errors = True
                    continue
                hw = self._high_watermark(topic, index, log)
                out["high_watermark"] = out["last_stable_offset"] = hw
                out["log_start_offset"] = log.log_start_offset
                room = min(p.get("partition_max_bytes", budget), budget - total)
                if room <= 0 and total > 0:
                    continue
                err, data = log.fetch(p["fetch_offset"], max(room, 1), hw)
                if err:
                    out["error_code"] = err
                    errors = True
                    continue
                out["records"] = data
                total += len(data)
            responses.append({"topic": topic, "partitions": parts})
        body = {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": responses}
        return total, body, errors

    def _wake_fetches(self, keys: set[tuple[str, int]] | None) -> None:
        waits, self._fetch_waits = self._fetch_waits, []
        still = []
        for wait in waits:
            if wait.conn.closing:
                continue
            if keys is not None and not any(k in keys for k in wait.keys):
                still.append(wait)
                continue
            total, body, errors = self._fetch_body(wait.header, wait.req)
            if errors or total >= max(1, wait.req.get("min_bytes", 1)):
                self.stats.fetched_bytes += total
                self._reply(wait.conn, wait.slot, wait.header, body)
            else:
                still.append(wait)
        self._fetch_waits = still + self._fetch_waits

    # ---- list offsets --------------------------------------------------------------------------

    def _list_offsets(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        topics = []
        for t in req.get("topics") or []:
            parts = []
            for p in t.get("partitions") or []:
                index = p["partition_index"]
                out = {"partition_index": index, "error_code": 0, "timestamp": -1, "offset": -1,
                       "leader_epoch": -1, "old_style_offsets": []}
                parts.append(out)
                log = self.partition_log(t["name"], index)
                if log is None:
                    out["error_code"] = (self._where(t["name"], index)
                                         or E.UNKNOWN_TOPIC_OR_PARTITION)
                    continue
                fenced = self._epoch_error(t["name"], index, p.get("current_leader_epoch", -1))
                if fenced:
                    out["error_code"] = fenced
                    continue
                if self._replicated(t["name"], index) and self.replicator is not None:
                    out["leader_epoch"] = self.replicator.epoch(t["name"], index)
                ts = p["timestamp"]
                if ts == LATEST:
                    out["offset"] = self._high_watermark(t["name"], index, log)
                elif ts == EARLIEST:
                    out["offset"] = log.log_start_offset
                elif ts < 0:
                    out["error_code"] = E.INVALID_REQUEST
                else:
                    offset, found_ts = log.offset_for_time(ts)
                    hw = self._high_watermark(t["name"], index, log)
                    if offset >= hw:
                        offset, found_ts = -1, -1
                    out["offset"], out["timestamp"] = offset, found_ts
            topics.append({"name": t["name"], "partitions": parts})
        self._reply(conn, self._slot(conn), h, {"throttle_time_ms": 0, "topics": topics})

    # ---- leader epochs, cluster ---------------------------------------------------------------

    def _offset_for_leader_epoch(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        """The end offset of a leader epoch (KIP-101/320): the largest epoch at or below the one
        asked for, and the offset where it ends here (the log end for the current epoch). A
        consumer that fetched from a leader which lost its tail learns where to truncate."""
        topics = []
        for t in req.get("topics") or []:
            parts = []
            name = t["topic"]
            for p in t.get("partitions") or []:
                index = p["partition"]
                out = {"error_code": 0, "partition": index, "leader_epoch": -1, "end_offset": -1}
                parts.append(out)
                log = self.partition_log(name, index)
                if log is None:
                    out["error_code"] = self._where(name, index) or E.UNKNOWN_TOPIC_OR_PARTITION
                    continue
                fenced = self._epoch_error(name, index, p.get("current_leader_epoch", -1))
                if fenced:
                    out["error_code"] = fenced
                    continue
                asked = p["leader_epoch"]
                current = log.leader_epoch
                if asked > current:
                    # The client read records of an epoch this leader has not reached: this node
                    # is behind (a stale leader the client found through old metadata, e.g. one
                    # resumed after SIGSTOP). Kafka answers "undefined" here, which librdkafka
                    # takes for a truncation and resets the position by auto.offset.reset; the
                    # retriable error sends the client to refresh its metadata instead.
                    if self._replicated(name, index):
                        out["error_code"] = E.UNKNOWN_LEADER_EPOCH
                    continue
                if asked == current:
                    out["leader_epoch"], out["end_offset"] = current, log.log_end_offset
                    continue
                epoch, end = log.epoch_end(asked)
                if epoch >= 0:
                    out["leader_epoch"], out["end_offset"] = epoch, log.kafka_offset(end)
                elif asked >= 0 and (runs := log.epoch_runs()):
                    # older than every stored epoch (Kafka: the asked epoch ends where the
                    # earliest stored one starts), not "undefined", which resets the client
                    out["leader_epoch"], out["end_offset"] = asked, log.kafka_offset(runs[0][1])
            topics.append({"topic": name, "partitions": parts})
        self._reply(conn, self._slot(conn), h, {"throttle_time_ms": 0, "topics": topics})

    def _describe_cluster(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        brokers = [{"broker_id": b["node_id"], "host": b["host"], "port": b["port"],
                    "rack": None, "is_fenced": False} for b in self._brokers()]
        self._reply(conn, self._slot(conn), h, {
            "throttle_time_ms": 0, "error_code": 0, "error_message": None,
            "endpoint_type": req.get("endpoint_type", 1), "cluster_id": self.config.cluster_id,
            "controller_id": self.controller_id() or -1, "brokers": brokers,
            "cluster_authorized_operations": INT32_MIN})

    # ---- producer ids --------------------------------------------------------------------------

    def _init_producer_id(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        slot = self._slot(conn)
        if req.get("transactional_id") is not None:
            self._reply(conn, slot, h, {"throttle_time_ms": 0, "error_code": E.INVALID_REQUEST,
                                        "producer_id": -1, "producer_epoch": -1})
            return

        def give(pid: int) -> None:
            code = E.NONE if pid >= 0 else E.COORDINATOR_NOT_AVAILABLE
            self._reply(conn, slot, h, {"throttle_time_ms": 0, "error_code": code,
                                        "producer_id": pid, "producer_epoch": 0 if pid >= 0
                                        else -1})

        self._allocate_producer_id(give)

    def _allocate_producer_id(self, give: Callable[[int], None]) -> None:
        """Producer ids come from blocks reserved in meta, so no id repeats across restarts (a
        repeat would meet the old producer's sequence state rebuilt from the logs)."""
        if self._pid_next < self._pid_limit:
            pid = self._pid_next
            self._pid_next += 1
            give(pid)
            return
        self._pid_waiters.append(give)
        if self._pid_proposing:
            return
        self._pid_proposing = True
        block = self.config.producer_id_block

        def applied(result: MetaResult | Exception) -> None:
            self._pid_proposing = False
            waiters, self._pid_waiters = self._pid_waiters, []
            if isinstance(result, Exception) or not result.ok:
                for w in waiters:
                    w(-1)
                return
            limit = int(result.value)
            self._pid_next, self._pid_limit = limit - block, limit
            for w in waiters:
                self._allocate_producer_id(w)

        # an atomic add: nodes reserving at once get disjoint blocks (a put of "what I read plus
        # a block" gave two nodes the same ids, and their producers each other's sequences)
        self.meta.propose(encode_command("config.add", key=PRODUCER_ID_KEY, delta=block), applied)

    # ---- groups --------------------------------------------------------------------------------

    def coordinator(self) -> int:
        """The node coordinating every consumer group: the meta leader (0 while none is known).
        Every node knows it from meta, FindCoordinator names it, the others answer group
        requests NOT_COORDINATOR; it moves with meta leadership (the members rejoin there, and
        committed offsets are in meta already). A broker outside a cluster is its own."""
        return self.controller_id()

    def _coordinator_error(self) -> int:
        """NONE on the coordinator; else what a group request gets (NOT_COORDINATOR sends the
        client back to FindCoordinator; COORDINATOR_NOT_AVAILABLE while meta has no leader).
        Groups held from an earlier term as coordinator are dropped first."""
        coord = self.coordinator()
        if coord == self.config.node_id:
            return E.NONE
        self._resign_groups()
        return E.NOT_COORDINATOR if coord else E.COORDINATOR_NOT_AVAILABLE

    def _resign_groups(self) -> None:
        if self.groups.held():
            dropped = self.groups.resign()
            self.log(f"kafka: node {self.config.node_id} no longer coordinates consumer groups "
                     f"(now node {self.coordinator() or 'unknown'}): {dropped} group(s) dropped")

    def _find_coordinator(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        body = {"throttle_time_ms": 0, "error_code": 0, "error_message": None,
                "node_id": -1, "host": "", "port": -1}
        coord = self.coordinator()
        where = next((b for b in self._brokers() if b["node_id"] == coord), None)
        if req.get("key_type", 0) != 0:
            body.update(error_code=E.COORDINATOR_NOT_AVAILABLE,
                        error_message="transactions are not supported")
        elif where is None:
            body.update(error_code=E.COORDINATOR_NOT_AVAILABLE,
                        error_message="no meta leader known yet" if not coord else
                        f"node {coord} has no Kafka address registered yet")
        else:
            body.update(node_id=coord, host=where["host"], port=where["port"])
        self._reply(conn, self._slot(conn), h, body)

    def _group_reply(self, conn: _Conn, h: RequestHeader) -> Callable[[dict], None]:
        slot = self._slot(conn)
        return lambda body: self._reply(conn, slot, h, body)

    def _join_group(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        error = self._coordinator_error()
        if error:
            self._reply(conn, self._slot(conn), h, join_error(req.get("member_id") or "", error))
            return
        self.groups.join(self.clock(), req, h.api_version, h.client_id or "", conn.peer,
                         self._group_reply(conn, h))

    def _sync_group(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        error = self._coordinator_error()
        if error:
            self._reply(conn, self._slot(conn), h, sync_error(error))
            return
        self.groups.sync(self.clock(), req, h.api_version, self._group_reply(conn, h))

    def _heartbeat(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        error = self._coordinator_error()
        self._reply(conn, self._slot(conn), h,
                    {"throttle_time_ms": 0, "error_code": error} if error else
                    self.groups.heartbeat(self.clock(), req, h.api_version))

    def _leave_group(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        error = self._coordinator_error()
        self._reply(conn, self._slot(conn), h,
                    {"throttle_time_ms": 0, "error_code": error, "members": []} if error else
                    self.groups.leave(self.clock(), req, h.api_version))

    def _describe_groups(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        error = self._coordinator_error()
        if error:
            self._reply(conn, self._slot(conn), h, {"throttle_time_ms": 0, "groups": [
                {"error_code": error, "group_id": g, "group_state": "", "protocol_type": "",
                 "protocol_data": "", "members": [],
                 "authorized_operations": AUTHORIZED_OPERATIONS_OMITTED}
                for g in req.get("groups") or []]})
            return
        committed = set(self._machine().groups())
        for group in req.get("groups") or []:
            if group in committed:  # offsets from before a restart: the group exists, Empty
                self.groups.touch_for_commit(group)
        groups = self.groups.describe(list(req.get("groups") or []))
        self._reply(conn, self._slot(conn), h, {"throttle_time_ms": 0, "groups": groups})

    def _list_groups(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        known = {g["group_id"]: g for g in self.groups.list_groups()}
        for name in self._machine().groups():
            known.setdefault(name, {"group_id": name, "protocol_type": ""})
        self._reply(conn, self._slot(conn), h, {"throttle_time_ms": 0, "error_code": 0,
                                                "groups": [known[k] for k in sorted(known)]})

    def _delete_groups(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        slot = self._slot(conn)
        results: list[dict] = []
        pending = {"n": 1}  # the loop itself: replies once it is done

        def finish() -> None:
            if pending["n"] == 0:
                self._reply(conn, slot, h, {"throttle_time_ms": 0, "results": results})

        committed = set(self._machine().groups())
        refused = self._coordinator_error()
        for group in req.get("groups_names") or req.get("group_names") or []:
            if refused:
                results.append({"group_id": group, "error_code": refused})
                continue
            entry = {"group_id": group, "error_code": self.groups.delete(group)}
            results.append(entry)
            if entry["error_code"] == E.GROUP_ID_NOT_FOUND and group in committed:
                entry["error_code"] = E.NONE
            if entry["error_code"] != E.NONE or group not in committed:
                continue
            pending["n"] += 1

            def applied(result: MetaResult | Exception, entry: dict = entry) -> None:
                if isinstance(result, Exception):
                    entry["error_code"] = E.COORDINATOR_NOT_AVAILABLE
                pending["n"] -= 1
                finish()

            self.meta.propose(encode_command("group.delete", group=group), applied)
        pending["n"] -= 1
        finish()

    def _offset_commit(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        slot = self._slot(conn)
        group = req["group_id"]
        generation = req.get("generation_id_or_member_epoch", req.get("generation_id", -1))
        err = self._coordinator_error() or self.groups.check_commit(
            group, generation, req.get("member_id", ""), req.get("group_instance_id"),
            now_ms=self.clock())
        topics = []
        entries = []
        for t in req.get("topics") or []:
            parts = []
            for p in t.get("partitions") or []:
                code = err
                if code == E.NONE and not self._exists(t["name"], p["partition_index"]):
                    code = E.UNKNOWN_TOPIC_OR_PARTITION  # committed offsets live in meta
                metadata = p.get("committed_metadata") or ""
                if code == E.NONE and len(metadata) > 4096:
                    code = E.OFFSET_METADATA_TOO_LARGE
                if code == E.NONE:
                    entries.append([t["name"], p["partition_index"],
                                    max(-1, p["committed_offset"]), metadata])
                parts.append({"partition_index": p["partition_index"], "error_code": code})
            topics.append({"name": t["name"], "partitions": parts})
        body = {"throttle_time_ms": 0, "topics": topics}
        if not entries:
            self._reply(conn, slot, h, body)
            return
        chunks = [entries[i:i + 512] for i in range(0, len(entries), 512)]
        pending = {"n": len(chunks), "failed": False}

        def applied(result: MetaResult | Exception) -> None:
            if isinstance(result, Exception) or not result.ok:
                pending["failed"] = True
            pending["n"] -= 1
            if pending["n"] == 0:
                if pending["failed"]:
                    for tp in topics:
                        for part in tp["partitions"]:
                            if part["error_code"] == E.NONE:
                                part["error_code"] = E.COORDINATOR_NOT_AVAILABLE
                else:
                    self.groups.touch_for_commit(group)
                self._reply(conn, slot, h, body)

        for chunk in chunks:
            try:
                data = encode_command("group.commit", group=group, offsets=chunk)
            except MetaError:
                applied(RuntimeError("bad commit"))
                continue
            self.meta.propose(data, applied)

    def _offset_fetch(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        group = req["group_id"]
        error = self._coordinator_error()
        if error:  # the coordinator's meta has the member's own latest commits
            self._reply(conn, self._slot(conn), h, {"throttle_time_ms": 0, "error_code": error,
                        "topics": [{"name": t["name"], "partitions": [
                            {"partition_index": i, "committed_offset": -1,
                             "committed_leader_epoch": -1, "metadata": "", "error_code": error}
                            for i in t.get("partition_indexes") or []]}
                            for t in req.get("topics") or []]})
            return
        committed = self._machine().committed(group)
        requested = req.get("topics")
        if requested is None:
            by_topic: dict[str, list[int]] = {}
            for (topic, part) in sorted(committed):
                by_topic.setdefault(topic, []).append(part)
            requested = [{"name": t, "partition_indexes": ps} for t, ps in by_topic.items()]
        topics = []
        for t in requested:
            parts = []
            for index in t.get("partition_indexes") or []:
                offset, metadata = committed.get((t["name"], index), (-1, ""))
                parts.append({"partition_index": index, "committed_offset": offset,
                              "committed_leader_epoch": -1, "metadata": metadata,
                              "error_code": 0})
            topics.append({"name": t["name"], "partitions": parts})
        self._reply(conn, self._slot(conn), h,
                    {"throttle_time_ms": 0, "topics": topics, "error_code": 0})

    # ---- SASL ----------------------------------------------------------------------------------

    def _sasl_handshake(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        from real.kafka.sasl import handshake_response

        slot = self._slot(conn)
        if self.sasl_factory is None:
            self._reply(conn, slot, h, {"error_code": E.UNSUPPORTED_SASL_MECHANISM,
                                        "mechanisms": []})
            self._close(conn)
            return
        if conn.sasl is None:
            conn.sasl = self.sasl_factory()
        code = conn.sasl.start(req.get("mechanism", ""), h.api_version)
        self._reply(conn, slot, h, handshake_response(code))
        if code != E.NONE:
            self._sasl_failed(conn)
            return
        conn.raw_sasl = conn.sasl.raw_tokens

    def _sasl_failed(self, conn: _Conn) -> None:
        self.stats.auth_failures += 1
        why = getattr(conn.sasl, "failure", None) or "SASL state error"
        self.log(f"kafka: SASL authentication failed on connection {conn.id} ({conn.peer}): "
                 f"{why}")
        self._close(conn)

    def _sasl_step(self, conn: _Conn, token: bytes) -> Any:
        from real.kafka.sasl import SaslStep

        server = conn.sasl
        if server is None:
            return SaslStep(E.ILLEGAL_SASL_STATE, b"", False, None,
                            "SaslAuthenticate before SaslHandshake")
        step = server.step(token)
        if step.error_code == E.NONE and step.done:
            conn.authenticated, conn.user = True, step.username
            self.log(f"kafka: connection {conn.id} ({conn.peer}) authenticated as "
                     f"{step.username}")
        return step

    def _sasl_authenticate(self, conn: _Conn, h: RequestHeader, req: dict) -> None:
        from real.kafka.sasl import authenticate_response

        step = self._sasl_step(conn, bytes(req.get("auth_bytes") or b""))
        self._reply(conn, self._slot(conn), h, authenticate_response(step))
        if step.error_code != E.NONE:
            self._sasl_failed(conn)

    def _raw_sasl_token(self, conn: _Conn, token: bytes) -> None:
        """SaslHandshake v0: the tokens that follow are bare size-prefixed frames."""
        from real.kafka.sasl import raw_token_frame

        step = self._sasl_step(conn, token)
        if step.error_code != E.NONE:
            self._sasl_failed(conn)
            return
        conn.raw_sasl = bool(conn.sasl.raw_tokens) and not step.done
        slot = self._slot(conn)
        slot.data = raw_token_frame(step.server_bytes)
        self._flush(conn)

    # ---- invariants ----------------------------------------------------------------------------

    def invariants(self) -> None:
        """Cheap structural checks (asserts, O(conns + waits + open partitions + groups));
        harnesses and the simulator call it after every input, the real node does not."""
        for conn_id, conn in self.conns.items():
            assert conn.id == conn_id, (conn.id, conn_id)
            assert not conn.raw_sasl or conn.sasl is not None, conn_id
        self._wait_invariants()
        self._offset_invariants()
        self.groups.invariants()
        assert 0 <= self._pid_next <= self._pid_limit, (self._pid_next, self._pid_limit)
        assert self._pid_limit - self._pid_next <= self.config.producer_id_block
        assert self._pid_proposing or not self._pid_waiters, "producer-id waiters, no proposal"

    def _wait_invariants(self) -> None:
        """Held replies belong to open connections and hold an unfilled slot of theirs."""
        conns = self.conns
        latest = self.clock() + self.config.fetch_wait_max_ms
        for wait in self._fetch_waits:
            assert conns.get(wait.conn.id) is wait.conn, ("fetch wait on a gone conn", wait.conn.id)
            assert wait.slot.data is None, ("answered fetch still waiting", wait.conn.id)
            assert wait.deadline_ms <= latest, (wait.deadline_ms, latest)
        for pwait in self._produce_waits:
            assert conns.get(pwait.conn.id) is pwait.conn, ("produce wait on a gone conn",
                                                            pwait.conn.id)
            assert pwait.slot.data is None, ("answered produce still waiting", pwait.conn.id)
            assert pwait.needs or pwait.commits, "a produce that needs nothing waits"

    def _offset_invariants(self) -> None:
        """Per open partition: log start <= high watermark <= log end, and none of the three
        moves back while the same log stays open."""
        seen = self._seen_offsets
        now: dict[tuple[str, int], tuple[PartitionLog, str, int, int, int]] = {}
        ack_end = self.shards.ack_end
        for key, log in self.logs.items():
            if self._replicated(*key):
                if self.replicator is None or not self.replicator.leads_shard(*key):
                    continue  # a follower's log may be truncated to its new leader's
            prev = seen.get(key)
            same = prev is not None and prev[0] is log
            name = prev[1] if prev is not None and same else shard_name(*key)
            start = log.log_start_offset
            end = log.log_end_offset
            hw = self._high_watermark(key[0], key[1], log) if self._replicated(*key) else \
                log.high_watermark(ack_end(name))
            assert 0 <= start <= hw <= end, (key, start, hw, end)
            if prev is not None and same:
                assert prev[2] <= start and prev[3] <= hw and prev[4] <= end, (key, prev[2:],
                                                                              (start, hw, end))
            now[key] = (log, name, start, hw, end)
        self._seen_offsets = now

    # ---- introspection -------------------------------------------------------------------------

    def gauges(self) -> dict[str, Any]:
        return {"connections": len(self.conns), "partitions_open": len(self.logs),
                "fetch_waits": len(self._fetch_waits),
                "produce_waits": len(self._produce_waits),
                "requests": dict(sorted(self.stats.requests.items())),
                "malformed": self.stats.malformed, "produced_batches":
                self.stats.produced_batches, "produced_bytes": self.stats.produced_bytes,
                "fetched_bytes": self.stats.fetched_bytes,
                "duplicates": self.stats.duplicates, "auth_failures": self.stats.auth_failures}
