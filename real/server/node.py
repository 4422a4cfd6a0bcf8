"""`NodeCore`: one TwinMQ node as a pure object, hosted by `twinmq serve` and by the simulator.

    core = NodeCore(spec, env)             # recovers meta, shards and both brokers
    core.open(conn_id, Proto.MQTT, peer=..., listener="tcp", loopback=True)
    core.receive(conn_id, data)            # client bytes, any chunking
    core.closed(conn_id)                   # the transport is gone
    core.set_congested(conn_id, True)      # the host's write buffer for conn_id is over its mark
    core.step(msg)                         # a Raft message from a peer
    core.tick()                            # time passed (the host calls it at next_deadline_ms)
    core.campaign()                        # start a meta election now
    with core.batch(): ...                 # several inputs, settled once (one Raft fsync)
    core.synced(token, error)              # a SyncRequest's job has run (on any thread)
    rd = core.ready()                      # NodeReady: writes, aborts, Raft messages, syncs
    ... the host writes rd.writes, sends rd.messages, runs rd.syncs, sleeps until
        core.next_deadline_ms() (its monotonic clock) or the next input.

Every input runs to completion: Raft readies are persisted (through the injected Raft storage,
fsync inline), sent, applied and advanced; meta proposal callbacks run; both brokers' output is
drained until neither has more (the bridge can make one broker produce output for the other).
What the node produced accumulates until the host pulls it with `ready()`.

The parts are wired here, in the constructor, from a frozen `NodeSpec` and what the host injects
(`NodeEnv`: Raft storage, engine factories, clocks, a seeded rng, auth, a line logger). Nothing is
wired after construction. A crash is dropping the object; a restart builds a new one over the same
devices.

Clocks: `env.clock` is monotonic milliseconds (Raft ticks, group commit, Kafka timeouts), and
`env.wall_clock` epoch milliseconds (MQTT expiry times that are written to the state log, Kafka
retention by record time, bridge record timestamps). `next_deadline_ms()` is in `env.clock`'s
domain; the MQTT broker's own deadline (wall clock) is converted.

Durability: shard group commits come out as `SyncRequest`s: the host runs `job.sync()` (the
asyncio host on a worker thread when `job.detached`; the simulator after the simulated disk time)
and hands it back with `synced(token, error)`, which moves `durable_end` (or poisons the engine)
and releases what waited for it (MQTT PUBACK/PUBREC, Kafka produce replies, bridge records).
"""

from __future__ import annotations

import dataclasses
import enum
import random
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from real.kafka import errors as kafka_errors
from real.kafka.bridge import Bridge, BridgeRule
from real.kafka.broker import KafkaBroker, KafkaConfig, shard_name
from real.meta import MetaError, MetaResult, MetaStateMachine, encode_command
from real.mqtt.broker import Broker, BrokerConfig
from real.mqtt.cluster import TOPIC as MQTT_LOG_TOPIC
from real.mqtt.cluster import ClusterConfig, ClusterLog
from real.raft import RaftNode
from real.raft.types import Message, MsgType, ProposalDropped, RaftConfig, Role
from real.server.controller import Controller, ControllerConfig
from real.server.membership import ChangeResult, Membership
from real.server.peermsg import (
    BrokerHeartbeat,
    LogAppend,
    LogAppendReply,
    PeerMessage,
    ShardFetch,
    ShardFetchReply,
)
from real.server.protocol import ProtocolCore
from real.server.replica import MetaReplica, RaftObserver, Storage
from real.server.replication import ReplicationConfig, Replicator
from real.storage import EngineFactory, ShardStore
from real.storage.port import BackgroundSyncEngine, SyncJob

STATE_SHARD = "mqtt-state"
"""The MQTT broker's state log (sessions, queued messages, retained, packet-id state)."""
TICKS_PER_WAKE_MAX = 64
"""If the host stalls, at most this many Raft ticks past the next one that is due are delivered
at once (the rest are dropped: a stalled node must not fire several election timeouts in one
go). The ticks up to the due one are always delivered: a host that sleeps until
`next_deadline_ms` skips idle ticks on purpose, and dropping those would stretch timeouts."""
REGISTER_RETRY_MS = 100


_FROM_LEADER = frozenset({MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT})


class Proto(enum.Enum):
    MQTT = "mqtt"
    KAFKA = "kafka"


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """Everything a node is, fixed for its lifetime (built from the config by the host)."""

    node_id: int
    voters: tuple[int, ...]
    """The initial meta Raft configuration (this node alone for the embedded default)."""
    raft: RaftConfig
    tick_ms: int
    snapshot_entries: int
    register_addr: str
    """The address registered in meta (`node.register`; the admin address today)."""
    mqtt: BrokerConfig
    kafka: KafkaConfig
    bridges: tuple[BridgeRule, ...] = ()
    allow_anonymous: str | bool = "auto"
    """MQTT: true/false, or "auto" = anonymous only on loopback listeners."""
    default_engine: str = "file"
    replication: ReplicationConfig = ReplicationConfig()
    controller: ControllerConfig = ControllerConfig()
    mqtt_cluster: ClusterConfig | None = None
    """MQTT across the cluster through the replicated `__mqtt` log (real/mqtt/cluster.py); None:
    each node's MQTT clients see only each other."""
    join: bool = False
    """Start blank and wait to be added to an existing cluster (`add_member` on its leader):
    no initial configuration of its own, never campaigns before it is a voter. Ignored once
    the node has Raft state on disk."""

    def __post_init__(self) -> None:
        assert self.join or self.node_id in self.voters, (self.node_id, self.voters)
        assert self.tick_ms >= 1, self.tick_ms
        assert self.mqtt.node_id == self.node_id == self.kafka.node_id, self
        assert self.allow_anonymous in ("auto", True, False), self.allow_anonymous


@dataclass(slots=True)
class NodeEnv:
    """What a host injects: devices, clocks, randomness, auth and a logger."""

    raft_storage: Storage
    engines: dict[str, EngineFactory]
    clock: Callable[[], int]
    wall_clock: Callable[[], int]
    rng: random.Random
    log: Callable[[str], None] = lambda _line: None
    authenticate: Callable[..., Any] | None = None
    acl: Any = None
    sasl_factory: Callable[[], Any] | None = None
    observer: RaftObserver | None = None
    """The meta replica's observer (the simulator's Raft safety checkers)."""
    replication_observer: Any = None
    """The replicator's observer (the simulator's replication checker)."""


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """Run `job.sync()` (on any thread if `job.detached`), then `NodeCore.synced(token, error)`."""

    token: int
    shard: str
    job: Any


@dataclass(slots=True)
class NodeReady:
    writes: list[tuple[int, bytes, bool]] = field(default_factory=list)
    """(conn id, bytes, close after writing), in production order."""
    aborts: list[int] = field(default_factory=list)
    """Connections to reset at once (an internal error cost this connection)."""
    messages: list[Message | PeerMessage] = field(default_factory=list)
    """Raft, replication and heartbeat messages for peers."""
    syncs: list[SyncRequest] = field(default_factory=list)
    members: tuple[tuple[int, str], ...] | None = None
    """The peers this node must reach now, when that changed: (node id, peer address) for
    every meta member but this node and every node meta recorded as joining; the address is ""
    when meta has none (a member of the initial configuration: the host's own config has it)."""

    def __bool__(self) -> bool:
        return bool(self.writes or self.aborts or self.messages or self.syncs
                    or self.members is not None)


@dataclass(slots=True)
class NodeStats:
    internal_errors: int = 0
    syncs_started: int = 0
    syncs_done: int = 0
    sync_errors: int = 0


class _MetaPort:
    """The brokers' view of meta: the applied state machine, proposals through the replica."""

    def __init__(self, core: NodeCore) -> None:
        self._core = core

    def machine(self) -> MetaStateMachine:
        return self._core.replica.sm

    def propose(self, data: bytes, done: Callable[[MetaResult | Exception], None]) -> None:
        self._core.propose(data, done)

    def barrier(self, done: Callable[[], None]) -> Callable[[], None] | None:
        core = self._core
        context = core._read_context(b"barrier")
        try:
            core.replica.read_index(context, lambda _index: done())
        except ProposalDropped:
            return None

        def cancel() -> None:
            core.replica.cancel_read(context)

        return cancel


class _ClusterPort:
    """The MQTT cluster log's view of its node: `__mqtt`'s metadata and partition logs (Kafka
    broker), leadership and high watermarks (replicator)."""

    def __init__(self, core: NodeCore) -> None:
        self._core = core

    def partition_count(self) -> int:
        info = self._core.replica.sm.topic(MQTT_LOG_TOPIC)
        return len(info.shards) if info is not None else 0

    def leadership(self, partition: int) -> tuple[int, int]:
        info = self._core.replica.sm.topic(MQTT_LOG_TOPIC)
        if info is None or not 0 <= partition < len(info.shards):
            return 0, 0
        shard = info.shards[partition]
        return shard.leader, shard.epoch

    def replica_log(self, partition: int) -> Any:
        return self._core.kafka.replica_log(MQTT_LOG_TOPIC, partition)

    def leads(self, partition: int) -> bool:
        return self._core.replicator.leads_shard(MQTT_LOG_TOPIC, partition)

    def commit_state(self, partition: int) -> tuple[int, int] | None:
        return self._core.replicator.commit_state(MQTT_LOG_TOPIC, partition)

    def committed_end(self, partition: int) -> int | None:
        return self._core.replicator.committed_end(MQTT_LOG_TOPIC, partition)

    def min_insync(self) -> int:
        return self._core.kafka._min_insync(MQTT_LOG_TOPIC)


    def appended(self, partition: int) -> None:
        self._core.replicator.appended(MQTT_LOG_TOPIC, partition)

    def allocate_producer_id(self, give: Callable[[int], None]) -> None:
        self._core.kafka._allocate_producer_id(give)


class NodeCore:
    def __init__(self, spec: NodeSpec, env: NodeEnv) -> None:
        self.spec = spec
        self.env = env
        self.log = env.log
        self.stats = NodeStats()
        self._ready = NodeReady()
        self._conns: dict[int, Proto] = {}
        self._loopback: dict[int, bool] = {}
        self._syncs: dict[int, tuple[str, BackgroundSyncEngine, SyncJob]] = {}
        self._sync_tokens = 0
        self._read_seq = 0
        self._settling = False
        self._batching = 0
        self.replica = self._open_replica(spec, env)
        self.shards = ShardStore(env.engines, default_engine=spec.default_engine)
        self.mqtt = self._open_mqtt(spec, env)
        self.kafka = KafkaBroker(spec.kafka, env.clock, self.shards, _MetaPort(self),
                                 member_prefix=f"{env.rng.getrandbits(32):08x}",
                                 sasl_factory=env.sasl_factory, log=env.log,
                                 wall_clock=env.wall_clock)
        self.bridge = (Bridge(spec.bridges, self.kafka, self.mqtt, env.wall_clock)
                       if spec.bridges else None)
        self.replicator = Replicator(spec.node_id, spec.replication, self.kafka, env.clock,
                                     self._send, self.propose, log=env.log)
        self.replicator.observer = env.replication_observer
        self.kafka.replicator = self.replicator
        self.kafka.controller_id = lambda: self.replica.raft.leader
        self.replicator.on_commit = self.kafka.durable_progress
        self.replicator.on_lost = self.kafka.lost_leadership
        self.cluster_log: ClusterLog | None = None
        if spec.mqtt_cluster is not None:
            self.cluster_log = ClusterLog(spec.node_id, spec.mqtt_cluster, _ClusterPort(self),
                                          self.mqtt, env.clock, self._send, log=env.log)
            self.mqtt.cluster = self.cluster_log
            self._wire_claims(env, spec.mqtt_cluster)
        self.controller = Controller(spec.node_id, spec.controller, lambda: self.replica.sm,
                                     env.clock, self.propose, log=env.log,
                                     bugs=frozenset(spec.replication.bugs))
        self._replicated = False
        """Meta has a replicated shard: heartbeats and the controller run only then."""
        self._said_outside = False
        self._meta_seen = -1
        self._heartbeat_at = 0
        self._shared_read: tuple[bytes, int, int] | None = None
        """The meta read that confirms shared (S3) partitions' PUTs (context, asked at, the
        Raft term then: a leader change may drop it, so it is asked again)."""
        self._shared_retry_at: int | None = None
        self._unfence_read: tuple[bytes, int] | None = None
        """A fenced node's read barrier (context, asked at): it unfences once it applies."""
        self._gone: set[int] = set()
        """Peers whose port refused this node's connection and that have sent nothing since
        (`peer_gone`): handed to the controller when this node becomes the meta leader."""
        self._meta_contact = env.clock()
        """When this node last had evidence of a live meta quorum (it led with check-quorum, or
        heard its leader): past the session timeout without it, it stops leading shards."""
        self.brokers: dict[Proto, ProtocolCore] = {Proto.MQTT: self.mqtt, Proto.KAFKA: self.kafka}
        self.registered = False
        self.kafka_ready = False
        """True once this node is registered in meta and the bridge's topics exist: the host
        accepts Kafka connections from then on (so clients see every topic of before a crash)."""
        self._registering = False
        self._register_at = 0
        self._topics_missing: list[str] = []
        self._tick_at = env.clock() + spec.tick_ms
        self._role_seen: tuple[Role | None, int, int] = (None, 0, 0)
        self.membership = Membership(self.replica.raft, self.propose, env.clock, env.log,
                                     machine=lambda: self.replica.sm)
        self._members_seen: tuple[tuple[int, str], ...] | None = None
        self._members_key: tuple[Any, int] | None = None
        if self.replica.raft.conf.voters == (spec.node_id,):
            self.replica.raft.campaign()  # the only voter: no need to wait an election timeout
        self._settle()

    # ---- construction ------------------------------------------------------------------------

    def _open_replica(self, spec: NodeSpec, env: NodeEnv) -> MetaReplica:
        durable = env.raft_storage.durable()
        rng = random.Random(env.rng.getrandbits(64))  # noqa: S311 - seeded by design
        raft = RaftNode(spec.node_id, spec.raft, rng, durable,
                        peers=() if spec.join else spec.voters)
        # the wall clock at start tells this life's forwarded proposals from an earlier life's
        return MetaReplica(raft, env.raft_storage, self._send,
                           compact_entries=spec.snapshot_entries, observer=env.observer,
                           incarnation=max(0, env.wall_clock()))

    def _send(self, msg: Message | PeerMessage) -> None:
        self._ready.messages.append(msg)

    def _open_mqtt(self, spec: NodeSpec, env: NodeEnv) -> Broker:
        if STATE_SHARD not in self.shards.list():
            self.shards.attach(STATE_SHARD)
        broker = Broker(spec.mqtt, env.wall_clock, log=self.shards.engine(STATE_SHARD),
                        authenticate=env.authenticate, acl=env.acl)
        broker.recover()
        self.log(f"mqtt: recovered {len(broker.sessions)} sessions, {len(broker.retained)} "
                 f"retained messages from {broker.recovered_records} state records")
        return broker

    # ---- inputs: clients ---------------------------------------------------------------------

    def accepting(self, proto: Proto) -> bool:
        """Whether the host should accept connections of `proto` now: Kafka once this node is
        registered in meta and the bridge's topics exist (`kafka_ready`); MQTT at once, or, with
        bridge rules, also only then (a QoS 1/2 PUBLISH on a bridged topic is acknowledged only
        with its Kafka copy, which needs the topic: the 3-node simulation lost the first
        messages of a run to a node that served MQTT before its bridge topic existed)."""
        if proto is Proto.MQTT and self.bridge is None and self.cluster_log is None:
            return True
        if proto is Proto.MQTT and self.cluster_log is not None and self.kafka_ready:
            return not self._outside_mqtt_log()
        return self.kafka_ready

    def _outside_mqtt_log(self) -> bool:
        """Whether `__mqtt` exists and this node holds no replica of some partition of it (it
        joined after the topic was placed, and replicas are not reassigned yet): it would
        deliver nothing to its MQTT clients, so it refuses them (said once in the log)."""
        info = self.replica.sm.topic(MQTT_LOG_TOPIC)
        me = self.spec.node_id
        outside = info is not None and any(me not in s.replicas for s in info.shards)
        if outside and not self._said_outside:
            self._said_outside = True
            self.log(f"mqtt cluster: node {me} holds no replica of {MQTT_LOG_TOPIC} (it joined "
                     "after the topic was placed): not accepting MQTT clients")
        return outside

    def open(self, conn_id: int, proto: Proto, *, peer: str = "", listener: str = "tcp",
             loopback: bool = False) -> None:
        assert conn_id not in self._conns, conn_id
        self._conns[conn_id] = proto
        setting = self.spec.allow_anonymous
        anonymous_ok = loopback if setting == "auto" else bool(setting)
        self.brokers[proto].open(conn_id, peer=peer, listener=listener, anonymous_ok=anonymous_ok)
        self._settle()

    def receive(self, conn_id: int, data: bytes) -> None:
        proto = self._conns.get(conn_id)
        if proto is None:
            return  # closed by the node already; the host has not heard yet
        if self._replicated:
            # A node resumed after a stop handles the requests that waited before its first
            # tick (asyncio runs ready sockets before due timers): fence it first, so it serves
            # nothing it may no longer lead.
            self._check_fence()
        try:
            self.brokers[proto].receive(conn_id, data)
        except Exception:  # noqa: BLE001 - a core bug must cost one connection, not the node
            self.stats.internal_errors += 1
            self.log(f"{proto.value}: internal error on connection {conn_id}, closing it:\n"
                     f"{traceback.format_exc()}")
            self._forget(conn_id)
            self._ready.aborts.append(conn_id)
        self._settle()

    def closed(self, conn_id: int) -> None:
        if conn_id in self._conns:
            self._forget(conn_id)
            self._settle()

    def set_congested(self, conn_id: int, congested: bool) -> None:
        proto = self._conns.get(conn_id)
        if proto is not None:
            self.brokers[proto].set_congested(conn_id, congested)
            self._settle()

    def disconnect_client(self, client_id: str) -> bool:
        """Admin: close the MQTT connection of `client_id` (v5: DISCONNECT 0x98)."""
        session = self.mqtt.sessions.get(client_id)
        if session is None or session.conn_id is None or session.conn_id not in self._conns:
            return False
        self.mqtt.kick(session.conn_id)
        self._settle()
        return True

    def _forget(self, conn_id: int) -> None:
        proto = self._conns.pop(conn_id)
        self.brokers[proto].closed(conn_id)

    # ---- inputs: peers, time, I/O ------------------------------------------------------------

    def step(self, msg: Message | PeerMessage) -> None:
        """A message from a peer: Raft (ticks due by now run first, as a tick-by-tick node),
        shard replication, or a broker heartbeat for the controller."""
        if self._gone:  # (empty but for peers that refused a dial and have been silent since)
            self._gone.discard(msg.src)
        if isinstance(msg, Message):
            self._run_ticks()
            raft = self.replica.raft
            raft.step(msg)
            if msg.src == raft.leader and msg.term == raft.term and msg.type in _FROM_LEADER:
                self._meta_contact = self.env.clock()
        elif isinstance(msg, (ShardFetch, ShardFetchReply)):
            self.replicator.receive(msg)
        elif isinstance(msg, (LogAppend, LogAppendReply)):
            if self.cluster_log is not None:
                self.cluster_log.receive(msg)
        else:
            assert isinstance(msg, BrokerHeartbeat), msg
            self.controller.heartbeat(msg.src, msg.broker_epoch)
        self._settle()

    def peer_gone(self, node_id: int) -> None:
        """The host's connection to peer `node_id` was refused (nothing listens on its peer
        port: the process is gone; a stopped process or a cut link refuses nothing). The
        controller, if it runs here, takes the node for dead at once; otherwise this node
        remembers it until the peer sends something, for when it becomes the meta leader."""
        if node_id == self.spec.node_id:
            return
        self._gone.add(node_id)
        self.controller.peer_gone(node_id)
        if self.cluster_log is not None:
            self.cluster_log.peer_gone(node_id)
        self._settle()

    def read_index(self, done: Callable[[int], None]) -> bytes:
        """A linearizable read of meta (Raft's read index): `done(index)` once this node's state
        machine has applied everything committed when the read was asked (the leader confirmed
        its leadership with a quorum first). Returns the read's context, for `cancel_read` if no
        answer comes (no leader, a partition: Raft drops the request). ProposalDropped if too
        many reads wait."""
        context = self._read_context(b"read")
        self.replica.read_index(context, done)
        self._settle()
        return context

    def cancel_read(self, context: bytes) -> bool:
        return self.replica.cancel_read(context)

    def propose(self, data: bytes, done: Callable[[MetaResult | Exception], None]) -> None:
        """Propose a meta command; `done(result | exception)` once it applied or failed (maybe
        before this returns: ProposalDropped when no leader can take it now)."""
        def finished(result: MetaResult | Exception) -> None:
            try:
                done(result)
            except Exception:  # noqa: BLE001 - a failing callback costs its request only
                self.stats.internal_errors += 1
                self.log(f"meta: internal error in a proposal callback:\n"
                         f"{traceback.format_exc()}")

        try:
            self.replica.propose(data, finished)
        except ProposalDropped as exc:
            finished(exc)
        self._settle()

    def add_member(self, node_id: int, raft_addr: str,
                   done: Callable[[ChangeResult], None]) -> None:
        """Meta leader: add node `node_id` (started with `join`, its peer port at `raft_addr`)
        to the meta Raft group, as a learner first and a voter once it caught up (see
        real/server/membership.py). `done(result)` once it is a voter or the change failed
        (`result.leader` names the leader to ask when this node is not it)."""
        self.membership.add(node_id, raft_addr, done)
        self._settle()

    def remove_member(self, node_id: int, done: Callable[[ChangeResult], None]) -> None:
        """Meta leader: unregister node `node_id` and remove it from the meta Raft group."""
        self.membership.remove(node_id, done)
        self._settle()

    def members_view(self) -> dict[str, Any]:
        """The meta Raft configuration as this node knows it (for the admin API)."""
        raft = self.replica.raft
        table = self.replica.sm.members()
        return {"leader": raft.leader, "term": raft.term,
                "voters": list(raft.conf.voters), "learners": list(raft.conf.learners),
                "addresses": {str(n): a for n, a in table.items()},
                "change": self.membership.describe()}

    def campaign(self) -> None:
        """Start a meta election now instead of waiting for the election timeout (a leadership
        hand-over by an operator; the simulator's studies use it for a quick first leader)."""
        self._run_ticks()
        self.replica.raft.campaign()
        self._settle()

    def tick(self) -> None:
        """Time passed: Raft ticks, broker timers, group commits that are due."""
        self._run_ticks()
        for broker in self.brokers.values():
            broker.tick()
        self._start_syncs()
        if self.registered:
            self.replicator.tick()
        if self._replicated:
            self._heartbeat()
            self.controller.tick()
            self._check_fence()
        self._settle()

    def synced(self, token: int, error: BaseException | None) -> None:
        name, engine, job = self._syncs.pop(token)
        self.stats.syncs_done += 1
        try:
            engine.finish_sync(job, error)
        except Exception:  # noqa: BLE001 - the engine is poisoned; its requests fail from now on
            self.stats.sync_errors += 1
            self.log(f"storage: fdatasync of shard {name!r} failed:\n{traceback.format_exc()}")
        self._durable_progress()
        self._settle()

    def _run_ticks(self) -> None:
        now = self.env.clock()
        if now < self._tick_at:
            return
        tick_ms = self.spec.tick_ms
        n = 1 + (now - self._tick_at) // tick_ms
        limit = self.replica.ticks_until_due() + TICKS_PER_WAKE_MAX
        if n > limit:
            n = limit
            self._tick_at = now + tick_ms
        else:
            self._tick_at += n * tick_ms
        self.replica.tick(n)

    def _start_syncs(self) -> None:
        shards = self.shards
        due = shards.next_flush_ms()
        if due is None or due > self.env.clock():
            return
        try:
            jobs = shards.start_syncs(self.env.clock())
        except Exception:  # noqa: BLE001 - a poisoned engine fails its own requests later
            self.stats.sync_errors += 1
            self.log(f"storage: group commit failed:\n{traceback.format_exc()}")
            jobs = []
        for name, error in shards.sync_failures:
            self.stats.sync_errors += 1
            self.log(f"storage: group commit of shard {name!r} failed: {error}")
        shards.sync_failures.clear()
        for name, engine, job in jobs:
            self._sync_tokens += 1
            self._syncs[self._sync_tokens] = (name, engine, job)
            self._ready.syncs.append(SyncRequest(self._sync_tokens, name, job))
            self.stats.syncs_started += 1
        self._durable_progress()  # engines polled in place may have moved

    def _durable_progress(self) -> None:
        if self.replicator.follows or self.replicator.leads:
            self.replicator.durable_progress()
        for broker in self.brokers.values():
            broker.durable_progress()

    def _wire_claims(self, env: NodeEnv, cluster: ClusterConfig) -> None:
        """Client ids across the cluster (real/mqtt/claims.py): the MQTT broker claims them in
        meta, in this process's life (a random number: a restarted node is a new claimant)."""
        mqtt = self.mqtt
        mqtt.life = env.rng.getrandbits(62)
        mqtt.claim_wait_ms = max(cluster.claim_wait_ms,
                                 2 * self.spec.controller.session_timeout_ms)
        mqtt.log_line = env.log
        node_id = self.spec.node_id

        def propose(client: str, conn: int, done: Callable[[Any], None]) -> None:
            try:
                data = encode_command("mqtt.claim", client=client, node=node_id,
                                      life=mqtt.life, conn=conn)
            except MetaError as exc:
                done(ValueError(str(exc)))
                return

            def finished(result: MetaResult | Exception) -> None:
                if isinstance(result, MetaResult) and result.ok:
                    done(str(result.value))
                else:
                    done(result if isinstance(result, Exception) else ValueError(result.error))

            self.propose(data, finished)

        mqtt.propose_claim = propose

    def _meta_progress(self) -> None:
        """Meta applied entries or changed leader: shard roles follow, the controller runs on
        the meta leader."""
        sm = self.replica.sm
        if sm.applied_index != self._meta_seen:
            self._meta_seen = sm.applied_index
            self._replicated = any(s.replicated or t.shared(i) for t in sm.topics()
                                   for i, s in enumerate(t.shards))
            self.kafka.reconcile()
            if self.cluster_log is not None:
                self.mqtt.claims_applied(sm.claims, sm.claims_from, sm.owner)
        if self.registered:  # a restarted node fences its old self (registers) first
            self.replicator.refresh()
        active = self._replicated and self.replica.raft.role is Role.LEADER
        if active and not self.controller.active:
            self.controller.set_active(True)
            for nid in sorted(self._gone):
                self.controller.peer_gone(nid)
        else:
            self.controller.set_active(active)

    def _check_fence(self) -> None:
        """A node that has heard no meta quorum for the session timeout fences itself: the
        controller on the other side has moved its shards by then, so it must not serve them
        (no stale reads, no writes it cannot replicate) until meta tells it what it is.

        Hearing the meta leader again is not enough to unfence: the node's applied meta may
        still lag the moves made meanwhile (it would serve a partition it no longer leads, at
        its old epoch, for as long as it takes to apply them). It unfences once a read barrier
        (Raft's read index, confirmed by a quorum) has applied here."""
        now = self.env.clock()
        session = self.spec.controller.session_timeout_ms
        if self.replica.raft.role is Role.LEADER:
            self._meta_contact = now
        if now - self._meta_contact > session:
            self._drop_unfence_read()
            self.replicator.set_fenced(True)
            if self.cluster_log is not None:
                self.mqtt.fence(True)
            return
        if not self.replicator.fenced:
            return
        if self._unfence_read is not None and now - self._unfence_read[1] <= session:
            return  # asked; the answer unfences (a read no leader answers is asked again)
        self._drop_unfence_read()
        context = self._read_context(b"unfence")

        def applied(_index: int) -> None:
            if self._unfence_read is not None and self._unfence_read[0] == context:
                self._unfence_read = None
                if self.env.clock() - self._meta_contact <= session:
                    self.replicator.set_fenced(False)
                    if self.cluster_log is not None:
                        self.mqtt.fence(False)

        self._unfence_read = (context, now)  # before asking: the answer may come at once
        try:
            self.replica.read_index(context, applied)
        except ProposalDropped:
            self._unfence_read = None  # no leader known yet: asked again at the next check

    def _confirm_shared(self) -> None:
        """Shared (S3) partitions led here: what their engines PUT is acknowledged only after
        a linearizable meta read, started after the PUTs completed, shows this node still leads
        them at the epoch it opened them under (real/storage/s3engine.py, fenced mode): a
        leader replaced meanwhile, still running, never acknowledges a write the new leader's
        takeover did not see. One read at a time, covering every shared partition."""
        now = self.env.clock()
        if self._shared_read is not None:
            context, asked, term = self._shared_read
            if (now - asked <= self.spec.controller.session_timeout_ms
                    and term == self.replica.raft.term):
                return
            self.replica.cancel_read(context)  # no answer (no leader, a cut, a new term)
            self._shared_read = None
        if self._shared_retry_at is not None and now < self._shared_retry_at:
            return
        self._shared_retry_at = None
        want: dict[tuple[str, int], tuple[int, int]] = {}
        for (topic, partition), epoch in sorted(self.kafka.shared_logs().items()):
            engine: Any = self.shards.engine(shard_name(topic, partition))
            durable = engine.durable_end()
            if durable > engine.ack_end():
                want[(topic, partition)] = (epoch, durable)
        if not want:
            return
        context = self._read_context(b"shared")

        def applied(_index: int) -> None:
            if self._shared_read is None or self._shared_read[0] != context:
                return
            self._shared_read = None
            for (topic, partition), (epoch, end) in want.items():
                if self.kafka.shared_logs().get((topic, partition)) != epoch:
                    continue  # dropped meanwhile
                if self.kafka.shared_epoch(topic, partition) != epoch:
                    self.kafka.drop_shared(topic, partition)  # meta moved it: fenced
                    continue
                engine = self.shards.engine(shard_name(topic, partition))
                engine.confirm(end)  # type: ignore[attr-defined]
            self.kafka.durable_progress()

        self._shared_read = (context, now, self.replica.raft.term)  # the answer may come at once
        try:
            self.replica.read_index(context, applied)
        except ProposalDropped:  # no meta leader known: ask again shortly
            self._shared_read = None
            self._shared_retry_at = now + REGISTER_RETRY_MS

    def _read_context(self, kind: bytes) -> bytes:
        """A read-index context unique in the cluster: the leader merges requests with one
        context (Raft answers them together), so it names this node and this life of it (a
        restarted node's first read must not be answered with its old self's read index)."""
        self._read_seq += 1
        return b"%s-%d-%d-%d" % (kind, self.spec.node_id, self.replica.incarnation,
                                 self._read_seq)

    def _drop_unfence_read(self) -> None:
        if self._unfence_read is not None:
            self.replica.cancel_read(self._unfence_read[0])
            self._unfence_read = None

    def _heartbeat(self) -> None:
        now = self.env.clock()
        if now < self._heartbeat_at or not self.registered:
            return
        self._heartbeat_at = now + self.spec.controller.heartbeat_ms
        info = self.replica.sm.node(self.spec.node_id)
        leader = self.replica.raft.leader
        if info is None or leader == 0:
            return
        if leader == self.spec.node_id:
            self.controller.heartbeat(self.spec.node_id, info.broker_epoch)
        else:
            self._send(BrokerHeartbeat(self.spec.node_id, leader, info.broker_epoch))

    # ---- the settle loop ---------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Inputs given inside run without settling; what they set off (the Raft Ready with one
        fsync for all of them, proposal callbacks, broker output) is handled once at the end, as
        etcd batches the messages that arrived during an fsync. A host feeds a burst of queued
        inputs this way."""
        self._batching += 1
        try:
            yield
        finally:
            self._batching -= 1
            if not self._batching:
                self._settle()

    def _settle(self) -> None:
        """Run everything an input set off to completion and collect the output."""
        if self._settling or self._batching:
            return  # re-entered from a callback (the outer loop picks the work up) or batched
        self._settling = True
        try:
            for _ in range(1000):
                self.replica.process_ready()  # persist, send, apply: proposal callbacks run
                if self.membership.busy:
                    self.membership.poll()
                    self.replica.process_ready()
                self._register()
                self._meta_progress()
                # An append may have made earlier data durable in place (a batch past
                # group_commit_bytes is written and synced at once): what waited for it goes
                # now, as no group commit is due any more to release it.
                self._durable_progress()
                if self.kafka.shared_logs_open:
                    self._confirm_shared()
                if self.cluster_log is not None:
                    self.cluster_log.pump()
                self._drain()
                if not self.replica.raft.has_ready():  # only Raft work can set off more
                    break
            else:
                raise AssertionError("NodeCore._settle did not converge")
        finally:
            self._settling = False
        self._log_role()
        self._note_members()

    def _note_members(self) -> None:
        raft = self.replica.raft
        conf = raft.conf
        key = (conf, self.replica.sm.applied_index)
        if key == self._members_key:
            return  # (the common case: cheap)
        self._members_key = key
        if not conf.voters:
            return  # a blank joiner: it learns the configuration from the leader's snapshot
        table = self.replica.sm.members()
        ids = set(conf.voters) | set(conf.learners) | set(table)
        ids.discard(raft.id)
        view = tuple((nid, table.get(nid, "")) for nid in sorted(ids))
        if view != self._members_seen:
            self._members_seen = view
            self._ready.members = view

    def _drain(self) -> None:
        out = self._ready.writes
        for broker in self.brokers.values():
            for conn_id, data, close in broker.drain():
                if conn_id in self._conns:
                    out.append((conn_id, data, close))

    def _log_role(self) -> None:
        raft = self.replica.raft
        now = (raft.role, raft.term, raft.leader)
        if now != self._role_seen:
            self._role_seen = now
            self.log(f"meta raft: node {raft.id} is {now[0].value} in term {now[1]} "
                     f"(leader {now[2]})")

    # ---- registration in meta ----------------------------------------------------------------

    def _register(self) -> None:
        """Register in meta once a leader is known, then create the bridge's missing topics;
        both retry after REGISTER_RETRY_MS when meta cannot take them yet."""
        if self._registering or self.kafka_ready or self.env.clock() < self._register_at:
            return
        if self.registered:
            self._create_missing_topics()
            return
        if self.replica.raft.leader == 0:
            return
        addr = self.spec.register_addr
        kafka = self.spec.kafka
        data = encode_command("node.register", node_id=self.spec.node_id, addr=addr,
                              admin_addr=addr, kafka_addr=f"{kafka.host}:{kafka.port}")
        self._registering = True

        def done(result: MetaResult | Exception) -> None:
            self._registering = False
            if isinstance(result, Exception) or not result.ok:
                self._register_at = self.env.clock() + REGISTER_RETRY_MS
                return
            self.registered = True
            self.log(f"meta: node {self.spec.node_id} registered ({result.value}) at index "
                     f"{self.replica.sm.applied_index}")
            self._topics_missing = [] if self.bridge is None else self.bridge.kafka_topics()
            if self.cluster_log is not None:
                self._topics_missing.append(MQTT_LOG_TOPIC)

        self.propose(data, done)

    def _create_missing_topics(self) -> None:
        """Create the bridge's Kafka topics that meta does not have, one at a time."""
        machine = self.replica.sm
        while self._topics_missing and machine.topic(self._topics_missing[0]) is not None:
            self._topics_missing.pop(0)
        if not self._topics_missing:
            if not self.kafka_ready:
                self.kafka_ready = True
                if self.bridge is not None:
                    self.log(f"bridge: {len(self.bridge.rules)} MQTT <-> Kafka rules over Kafka "
                             f"topics {', '.join(self.bridge.kafka_topics())}")
            return
        name = self._topics_missing[0]
        self._registering = True

        def created(code: int, message: str | None) -> None:
            self._registering = False
            if code in (kafka_errors.NONE, kafka_errors.TOPIC_ALREADY_EXISTS):
                return
            self._register_at = self.env.clock() + REGISTER_RETRY_MS
            self.log(f"bridge: cannot create Kafka topic {name!r} yet: {message}")

        cluster = self.spec.mqtt_cluster
        if name == MQTT_LOG_TOPIC and cluster is not None:
            engine = None if self.spec.default_engine != "s3" else "file"  # replicated, not shared
            self.kafka.create_topic(name, created, partitions=cluster.partitions,
                                    replication=cluster.replication, engine=engine,
                                    config={"min.insync.replicas":
                                            str(cluster.replication // 2 + 1)})
        else:
            self.kafka.create_topic(name, created)

    # ---- output --------------------------------------------------------------------------------

    def ready(self) -> NodeReady:
        """What the node produced since the last call (the host writes, sends, runs it)."""
        rd, self._ready = self._ready, NodeReady()
        return rd

    def next_deadline_ms(self) -> int:
        """When `tick` next has work, on `env.clock` (never later than the next Raft tick that
        may produce output)."""
        due = self._tick_at + (self.replica.ticks_until_due() - 1) * self.spec.tick_ms
        for at in (self.kafka.next_deadline_ms(), self.shards.next_flush_ms(),
                   self._mqtt_deadline_ms(), self.replicator.next_deadline_ms(),
                   self._heartbeat_at if self._replicated and self.registered else None,
                   self._fence_at(),
                   self.controller.next_deadline_ms(), self.membership.next_deadline_ms(),
                   self._shared_deadline(),
                   self.cluster_log.next_deadline_ms() if self.cluster_log is not None else None):
            if at is not None and at < due:
                due = at
        if not self.kafka_ready and not self._registering and self.replica.raft.leader:
            due = min(due, self._register_at)
        return due

    def _shared_deadline(self) -> int | None:
        if self._shared_read is not None:
            return self._shared_read[1] + self.spec.controller.session_timeout_ms + 1
        return self._shared_retry_at

    def _fence_at(self) -> int | None:
        if not self._replicated or self.replicator.fenced or not self.replicator.leads:
            return None
        return self._meta_contact + self.spec.controller.session_timeout_ms + 1

    def next_tick_ms(self) -> int:
        """When the next Raft tick falls due, on `env.clock` (a host that wants to tick one by one
        wakes at every such boundary; `next_deadline_ms` skips the ticks that do nothing)."""
        return self._tick_at

    def _mqtt_deadline_ms(self) -> int | None:
        wall_due = self.mqtt.next_deadline_ms()
        if wall_due is None:
            return None
        env = self.env
        return env.clock() + max(0, wall_due - env.wall_clock())

    def close(self) -> None:
        """A graceful stop: make every shard durable (best effort: a failing one is logged) and
        fail the proposals still waiting. (A crash just drops the object.)"""
        for name in self.shards.list():
            try:
                self.shards.sync(name)
            except Exception as exc:  # noqa: BLE001 - reported; the others still get synced
                self.log(f"storage: could not sync shard {name!r} at shutdown: {exc}")
        self.replica.fail_pending("node shutting down")

    def quiescent(self) -> bool:
        """No group commit pending or running: what was acknowledged or stored is durable (or, for
        fsync "never", written to the OS)."""
        return not self._syncs and self.shards.next_flush_ms() is None

    def connections(self) -> int:
        return len(self._conns)

    def replication_view(self) -> dict[str, Any]:
        """What this node replicates, for the admin API and `twinmq cluster status`."""
        rep = self.replicator
        leads = [{"topic": t, "partition": p, "epoch": lead.epoch, "isr": list(lead.isr),
                  "high_watermark": lead.hw,
                  "followers": {str(n): {"offset": f.offset, "acked": f.acked}
                                for n, f in sorted(lead.followers.items())}}
                 for (t, p), lead in sorted(rep.leads.items())]
        follows = [{"topic": t, "partition": p, "leader": f.leader, "epoch": f.epoch,
                    "high_watermark": f.hw}
                   for (t, p), f in sorted(rep.follows.items())]
        ctl = self.controller
        return {"leads": leads, "follows": follows,
                "stats": dataclasses.asdict(rep.stats),
                "controller": {"active": ctl.active, **dataclasses.asdict(ctl.stats)}}

    # ---- checks ------------------------------------------------------------------------------

    def invariants(self) -> None:
        """Cheap structural checks over every part (the simulator runs them after each input)."""
        self.replica.raft.invariants()
        assert self.replica.raft.applied == self.replica.sm.applied_index
        for conn_id, proto in self._conns.items():
            broker_conns = self.mqtt.conns if proto is Proto.MQTT else self.kafka.conns
            assert conn_id in broker_conns, (conn_id, proto)
        assert len(self._syncs) <= len(self.shards.list()), self._syncs
        for broker in self.brokers.values():
            broker.invariants()
        self.replicator.invariants()
