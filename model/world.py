"""The simulated world: N whole TwinMQ nodes (`NodeCore` on `SimHost`), the network between
them, per-machine disks and clocks, the workloads (a meta client; MQTT and Kafka clients, with
bridge rules between the protocols), one nemesis, checkers and a trace, built
from a `Scenario` (model/scenario.py) and a seed. `World(scenario, seed).run()` returns a
`RunResult` whose outcome is `ok | safety | liveness | crash`: the first Raft safety violation
(checked as it happens), a meta liveness failure after heal, an exception in the node or the
world, or else the worst verdict of the MQTT and Kafka checkers (judged on the clients' history
at the end of the run).

Each node is the product's own composed node (real/server/node.py) hosted by model/host.py: its
meta Raft log is the real `RaftLog` on the machine's `SimFileSystem`, its clock a `LocalClock`
with the scenario's drift (and the nemesis's skew). What the nodes' meta replicas do reaches the
checkers and the trace through one `RaftObserver` (`_Observer` below): roles, persisted entries
and snapshots, restarts, applies, compactions. The client proposes `config.put` commands to the
leader through `NodeCore.propose`, as the brokers do.

RNG streams are derived in this fixed order: clock-drift (each node's drift and millisecond
phase); per node ascending: disk-N (the node's `SimFileSystem`), node-N; per link (src, dst
ascending): link-S-D; client (meta); nemesis; faults (the scheduled faults); then, only when
MQTT or Kafka clients exist: clients-net, and one stream per client (mqtt-sub0.., mqtt-pub0..,
kafka-prod0.., kafka-cons0.., kafka-reader0..). Appending a stream at the end keeps every
existing one (and so old traces) unchanged; inserting one in the middle does not.

Client connections: one `Switchboard` per node over one client network (`clients-net`).
`dial(client, proto, node)` connects to any node (None: `[cluster] clients_node`, where MQTT
clients and the bridge audit stay; Kafka clients follow partition leaders to every node); a
node's crash resets the connections to that node only.

Membership (`[cluster] spares`, the nemesis's `membership` fault): nodes nodes+1.. are built
down; `change_membership` starts the next one blank (`cluster.join`) and asks the meta leader
to add it (`NodeCore.add_member`, through whichever node leads, asking again while it is
refused), or asks it to remove a member (not the clients' node), which is then stopped for good.
One change at a time; each answer is traced as `membership`. The simulated network reaches
every node by id, so `NodeReady.members` (the real host's dial list) has nothing to do here.

Trace node ids: 0 is the world (faults, heal, verdict), 1..N the nodes, 100 and up the MQTT and
Kafka clients in creation order. Besides the workloads' kinds, the world traces `start`,
`role`, `apply`, `restore`, `compact`, `commit`, `crash`, `pause`/`resume`, `congested`, `heal`,
`live`, `verdict`, and `node-log`: a node's replication and controller log lines (`line`, the
first line: shard roles, in-sync set changes, truncations, leader moves; only with replicated
partitions; a line the node repeats within 100 ms is traced once).
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import simpy

from model.checkers.raft import OUTCOME_CODES, CheckerObserver, Checkers, SafetyViolation
from model.checkers.replication import ReplicationChecker
from model.devices.conn import NetSpec, SimConn, SimNet, Switchboard
from model.devices.fs import SimFileSystem
from model.devices.net import Network
from model.devices.objstore import SimObjectStore, SimObjectStoreConfig
from model.host import RAFT_DIR, SimHost, sim_node_spec
from model.nemesis import Nemesis
from model.scenario import Scenario
from model.sim.clock import LocalClock, now_us
from model.sim.rng import SeedTree
from model.sim.trace import Trace
from model.workloads import Workload
from model.workloads.meta import Client
from real.cluster.wire import FrameDecoder, Kind, decode_message, decode_peer, peer_frame
from real.raft.types import (
    Bug,
    DurableState,
    Entry,
    EntryKind,
    Message,
    RaftConfig,
    Ready,
    Role,
    Snapshot,
)
from real.server.node import NodeCore, Proto
from real.server.peermsg import (
    BrokerHeartbeat,
    LogAppend,
    LogAppendReply,
    PeerMessage,
    ShardFetch,
    ShardFetchReply,
)
from real.server.replica import unwrap_forwarded
from real.server.storage import StorageSettings

US_PER_MS = 1000
ROOT = Path(__file__).resolve().parent.parent
CLIENT_TRACE_BASE = 100
LOG_LINES_MAX = 50
"""Log lines of the clients' node kept for the result."""
TRACED_LOG_PREFIXES = ("replication:", "controller:", "membership:")
"""Node log lines traced as `node-log` (shard roles, in-sync set changes, truncations, leader
moves, membership steps): they only occur with replicated partitions or membership changes."""
MEMBER_RETRY_US = 100_000
"""A membership request refused (no leader, not the leader, busy, failed) is asked again."""
MEMBER_ATTEMPT_US = 2_000_000
"""An attempt with no answer by then (its leader crashed with it) is asked again."""
MEMBER_GIVE_UP_US = 60_000_000
LOG_REPEAT_US = 100_000
"""A node's `node-log` line repeated within this long is not traced again (a retry loop)."""
OUTCOME_RANK = {"ok": 0, "liveness": 1, "safety": 2, "crash": 3}
RAFT_LOG = f"{RAFT_DIR}/raft.log"
NEVER_COMPACT = 1 << 62


class LivenessViolation(Exception):
    pass


@dataclass(frozen=True, slots=True)
class RunResult:
    outcome: str
    detail: str
    trace_hash: str
    sim_us: int
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return OUTCOME_CODES[self.outcome]


def encode_proposal(pid: int, value_bytes: int) -> bytes:
    from real.meta import encode_command

    value = f"p{pid}".ljust(value_bytes, ".")
    return encode_command("config.put", key=f"k{pid % 64}", value=value)


def raft_config(s: Scenario) -> RaftConfig:
    """The nodes' meta Raft configuration: NodeConfig's defaults with the scenario's [cluster]."""
    c = s.cluster
    return dataclasses.replace(
        sim_node_spec(1).raft, election_tick_min=c.election_tick_min,
        election_tick_max=c.election_tick_max, heartbeat_tick=c.heartbeat_tick,
        pre_vote=c.pre_vote, check_quorum=c.check_quorum, max_size_per_msg=c.max_size_per_msg,
        max_inflight_msgs=c.max_inflight_msgs, bugs=frozenset(Bug(b) for b in c.bugs))


@dataclass(slots=True)
class ObserverStats:
    readies: int = 0
    compactions: int = 0
    restores: int = 0


class _Observer:
    """The meta replicas' `RaftObserver`: feeds the checkers (through `CheckerObserver`), the
    trace, the client's commit matching and the world's hooks (`on_role`, `on_ready`)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.checks = CheckerObserver(world.checkers)
        self.stats = ObserverStats()

    def restarted(self, node: int, durable: DurableState) -> None:
        self.checks.restarted(node, durable)
        snap = durable.snapshot
        w = self.world
        w.trace.emit(now_us(w.env), node, "start", term=durable.hard_state.term,
                     commit=durable.hard_state.commit, entries=len(durable.entries),
                     snapshot=snap.meta.index if snap is not None else 0)

    def ready(self, node: int, rd: Ready, term: int) -> None:
        w = self.world
        self.stats.readies += 1
        self.checks.ready(node, rd, term)
        now = now_us(w.env)
        if rd.soft_state is not None:
            role_term = rd.hard_state.term if rd.hard_state is not None else term
            w.on_role(node, role_term, rd.soft_state.role, rd.soft_state.leader)
        if rd.snapshot is not None:
            self.stats.restores += 1
            w.trace.emit(now, node, "restore", index=rd.snapshot.meta.index)
        if rd.committed_entries:
            w.trace.emit(now, node, "apply", lo=rd.committed_entries[0].index,
                         hi=rd.committed_entries[-1].index)
        if w.scenario.trace_messages:
            for m in rd.messages:
                w.trace.emit(now, node, "send", type=m.type.value, dst=m.dst, term=m.term,
                             index=m.index, n=len(m.entries))
        w.on_ready(node, rd)

    def applied(self, node: int, entry: Entry, term: int) -> None:
        self.checks.applied(node, entry, term)
        if entry.kind is EntryKind.NORMAL and entry.data:
            self.world.on_committed(node, entry, unwrap_forwarded(entry.data))

    def compacted(self, node: int, snapshot: Snapshot) -> None:
        self.checks.compacted(node, snapshot)
        self.stats.compactions += 1
        w = self.world
        w.trace.emit(now_us(w.env), node, "compact", index=snapshot.meta.index)


class World:
    def __init__(self, scenario: Scenario, seed: int, trace_out: IO[str] | None = None,
                 keep_trace: bool = False) -> None:
        self.scenario = scenario
        self.seed = seed
        self.env = simpy.Environment()
        self.trace = Trace(trace_out, keep=keep_trace)
        self.checkers = Checkers()
        self.observer = _Observer(self)
        self.replication = ReplicationChecker()
        self.node_ids = list(range(1, scenario.cluster.nodes + scenario.cluster.spares + 1))
        self.out: set[int] = set(range(scenario.cluster.nodes + 1, len(self.node_ids) + 1))
        """Nodes that are not members: spares not joined yet, and nodes that left (stopped for
        good; nothing restarts them)."""
        self.left: set[int] = set()
        self.member_change: tuple[str, int] | None = None
        self._member_attempt = 0
        self.member_stats = {"joined": 0, "left": 0, "attempts": 0, "given_up": 0}
        self.seeds = SeedTree(seed)
        self._build()
        self.heal_us = round(scenario.faults.heal_ms * US_PER_MS) if scenario.faults.enabled else 0
        self.pending_at_heal: list[int] = []
        self.first_leader_after_heal_us = -1
        self.stop = self.env.event()
        self.verdict = ""

    def _build(self) -> None:
        s, seeds = self.scenario, self.seeds
        c = s.cluster
        drift_rng = seeds.derive("clock-drift")
        fs_config = s.disk.fs_config()
        voters = tuple(range(1, c.nodes + 1))
        raft = raft_config(s)
        engine = "file" if s.state_log == "journal" else "memory"
        storage = StorageSettings(engine=engine, group_commit_ms=s.disk.group_commit_ms,
                                  s3_linger_ms=c.s3_linger_ms)
        shared = s.kafka.default_engine == "s3"
        kafka = s.kafka if shared else dataclasses.replace(s.kafka, default_engine=engine)
        self.store = (SimObjectStore(seeds.derive("objstore"), SimObjectStoreConfig())
                      if shared else None)
        """`[kafka] default_engine = "s3"`: one object store all the machines share, which
        holds every Kafka partition (shared storage, real/storage/s3engine.py's fenced mode)."""
        self.clients_node = c.clients_node
        self.nodes: dict[int, SimHost] = {}
        for nid in self.node_ids:
            drift = LocalClock.random_drift(drift_rng, s.clock.drift_ppm)
            clock = LocalClock(drift, phase_us=drift_rng.randrange(US_PER_MS))
            fs = SimFileSystem(seeds.derive(f"disk-{nid}"), fs_config)
            spec = dataclasses.replace(
                sim_node_spec(nid, voters=voters, mqtt=s.mqtt, kafka=kafka, bridges=s.bridges,
                              default_engine=engine, tick_ms=c.tick_ms,
                              snapshot_entries=c.snapshot_every or NEVER_COMPACT,
                              cluster_heartbeat_ms=c.heartbeat_ms,
                              cluster_session_timeout_ms=c.session_timeout_ms,
                              cluster_rebalance_delay_ms=c.rebalance_delay_ms,
                              cluster_replica_lag_ms=c.replica_lag_ms,
                              cluster_replica_fetch_wait_ms=c.replica_fetch_wait_ms,
                              cluster_replica_tail_bytes=c.replica_tail_bytes,
                              mqtt_cluster=c.mqtt_cluster,
                              mqtt_cluster_partitions=c.mqtt_cluster_partitions,
                              cluster_join=nid > c.nodes),
                raft=raft)
            spec = dataclasses.replace(spec, replication=dataclasses.replace(
                spec.replication, bugs=c.replication_bugs))
            if spec.mqtt_cluster is not None and c.mqtt_bugs:
                spec = dataclasses.replace(spec, mqtt_cluster=dataclasses.replace(
                    spec.mqtt_cluster, bugs=c.mqtt_bugs))
            self.nodes[nid] = SimHost(
                self.env, spec, storage, fs, seeds.derive(f"node-{nid}"),
                send_raft=self._send_raft, observer=self.observer, clock=clock,
                replication_observer=self.replication,
                inbox_max=c.inbox_max, tick_skipping=c.tick_skipping,
                check_invariants=c.check_invariants,
                on_up=self._on_up_of(nid),
                log=self._log_of(nid),
                write_high_water=s.clients.write_high_water_bytes,
                filter_input=self._filter_input,
                on_congested=self._congested,
                store=self.store)
        self.net = Network(self.env, self.node_ids, s.network, seeds.derive, self._deliver)
        self._gone_told: set[tuple[int, int]] = set()
        self.client = Client(self, s.meta, seeds.derive("client"), encode_proposal)
        self.nemesis = Nemesis(self, s.faults, seeds.derive("nemesis"), seeds.derive("faults"))
        self.log_lines: list[str] = []
        self.workloads: list[Workload] = []
        self.client_net: SimNet | None = None
        self.boards: dict[int, Switchboard] = {}
        """One switchboard (the table of open client connections) per node, all over the one
        client network."""
        self._next_client = CLIENT_TRACE_BASE
        if s.has_mqtt or s.has_kafka:
            net = s.clients
            self.client_net = SimNet(self.env, NetSpec(
                latency=net.latency, bandwidth_mb_s=net.bandwidth_mb_s,
                write_high_water_bytes=net.write_high_water_bytes), seeds.derive("clients-net"))
            for nid in self.node_ids:
                self.boards[nid] = Switchboard(self.client_net, self.nodes[nid])
        from model.workloads.bridge import BridgeWorkload
        from model.workloads.kafka import KafkaWorkload
        from model.workloads.mqtt import MqttWorkload

        mqtt_clients = MqttWorkload(self) if s.has_mqtt else None
        kafka_clients = KafkaWorkload(self) if s.has_kafka else None
        if mqtt_clients is not None:
            self.workloads.append(mqtt_clients)
        if kafka_clients is not None:
            self.workloads.append(kafka_clients)
            if mqtt_clients is not None and any(r.to_kafka for r in s.bridges):
                self.workloads.append(BridgeWorkload(self, mqtt_clients, kafka_clients))

    # -- the clients' side (the MQTT and Kafka workloads use these) ---------------------------

    def client_id(self) -> int:
        """The next client's trace node id."""
        self._next_client += 1
        return self._next_client - 1

    def dial(self, client: Any, proto: Proto, node: int | None = None) -> SimConn:
        """A new connection from `client` to node `node` (None: the clients' node); refused
        while that node is down or not accepting `proto`."""
        board = self.boards.get(self.clients_node if node is None else node)
        assert board is not None, f"no client connections to node {node}"
        return board.dial(client, proto)

    def reset(self, conn: SimConn, by_client: bool) -> None:
        """Abrupt close of `conn` (whichever node it goes to)."""
        board = conn.world
        assert isinstance(board, Switchboard), board
        board.reset(conn, by_client)

    @staticmethod
    def conn_node(conn: SimConn) -> int:
        """The node `conn` was dialled to."""
        board = conn.world
        assert isinstance(board, Switchboard), board
        return int(board.host.id)

    def later(self, delay_us: int, fn: Any) -> None:
        """Call `fn()` after `delay_us` of sim time."""
        self.env.timeout(max(0, delay_us)).callbacks.append(lambda _ev: fn())

    def drop_client(self, rng: Any, targets: str) -> str | None:
        """Abruptly drop one connected client among `targets` (a label of it, or None)."""
        pool: list[tuple[Any, str]] = []
        for w in self.workloads:
            pool.extend(w.droppable(targets))
        if not pool:
            return None
        drop, label = pool[rng.randrange(len(pool))]
        drop()
        return label

    def pause_consumer(self, rng: Any, length_us: int) -> str | None:
        for w in self.workloads:
            label = w.pause_consumer(rng, length_us)
            if label is not None:
                return label
        return None

    def _log_of(self, nid: int) -> Callable[[str], None]:
        """Node `nid`'s log: the clients' node's first lines are kept (`log_lines`); every
        node's replication and controller decisions are traced (`node-log`)."""
        keep = nid == self.clients_node
        last: dict[str, int] = {}

        def log(line: str) -> None:
            if keep and len(self.log_lines) < LOG_LINES_MAX:
                self.log_lines.append(f"{self.env.now}us {line}")
            if line.startswith(TRACED_LOG_PREFIXES):
                first = line.splitlines()[0]  # no traceback: paths differ between checkouts
                now = now_us(self.env)
                if now - last.get(first, -LOG_REPEAT_US) >= LOG_REPEAT_US:
                    last[first] = now
                    self.trace.emit(now, nid, "node-log", line=first)

        return log

    def _filter_input(self, conn: SimConn, data: bytes) -> bytes:
        for w in self.workloads:
            data = w.filter_input(conn, data)
        return data

    def _congested(self, conn: SimConn, backlog: int) -> None:
        self.trace.emit(now_us(self.env), conn.client.node, "congested", backlog=backlog)

    def _on_up_of(self, nid: int) -> Callable[[NodeCore], None]:
        def up(core: NodeCore) -> None:
            self._peer_up(nid)
            self.on_up(nid, core)

        return up

    def _send_raft(self, msg: Message | PeerMessage) -> None:
        self.net.send(msg.src, msg.dst, peer_frame(msg) if self.scenario.network.wire else msg)

    def _deliver(self, dst: int, msg: object) -> None:
        if isinstance(msg, bytes):  # [network] wire: the real frame
            (frame,) = FrameDecoder().feed(msg)
            # decode_peer does this for every kind; RAFT goes through this module's own
            # decode_message so a test can count the Raft messages that crossed the codec.
            msg = decode_message(frame.payload) if frame.kind == Kind.RAFT else decode_peer(frame)
        assert isinstance(msg, Message | ShardFetch | ShardFetchReply | BrokerHeartbeat
                          | LogAppend | LogAppendReply), msg
        host = self.nodes[dst]
        if not host.deliver(msg) and not host.up and self.scenario.network.refuse_down_ms:
            self._refused(msg.src, dst)

    def _refused(self, src: int, dst: int) -> None:
        """`src` sent to `dst` while it was down: its next connection attempt is refused
        (once per down spell of either node; the node remembers it until `dst` speaks)."""
        if (src, dst) in self._gone_told:
            return
        self._gone_told.add((src, dst))
        self.net.stats.refused += 1

        def tell() -> None:
            if self.nodes[dst].up:  # back already: the reconnect succeeds
                self._gone_told.discard((src, dst))
                return
            if self.nodes[src].peer_gone(dst):
                self.trace.emit(now_us(self.env), src, "peer_gone", peer=dst)
            else:  # the sender is down or its inbox full: its next message tries again
                self._gone_told.discard((src, dst))

        self.later(self.scenario.network.refuse_down_ms * 1000, tell)

    def _peer_up(self, nid: int) -> None:
        self._gone_told = {pair for pair in self._gone_told if nid not in pair}

    # -- node lifecycle (the world, the nemesis and studies call these) ------------------------

    def start(self, nid: int) -> None:
        """(Re)start node `nid` from what its disk holds (recovery takes simulated disk time);
        not a node that is out of the cluster."""
        if nid not in self.out:
            self.env.process(self.nodes[nid].start())

    # -- membership ------------------------------------------------------------------------------

    def members(self) -> tuple[int, ...]:
        """The meta voters as the current leader knows them (() without a leader)."""
        leader = self.find_leader()
        raft = self.raft(leader) if leader is not None else None
        return tuple(raft.conf.voters) if raft is not None else ()

    def change_membership(self, rng: Any) -> tuple[str, int] | None:
        """Start the next membership change (the nemesis's `membership` fault): join the next
        spare, else remove a random member (not the clients' node) while there are more than
        `[cluster] nodes`. None when a change runs already or none applies."""
        voters = self.members()
        if self.member_change is not None or not voters:
            return None
        spares = [n for n in sorted(self.out) if n not in self.left]
        if spares:
            nid = spares[0]
            self.out.discard(nid)
            self.start(nid)
            change = ("add", nid)
        elif len(voters) > self.scenario.cluster.nodes:
            nid = rng.choice([v for v in voters if v != self.clients_node])
            change = ("remove", nid)
        else:
            return None
        self.member_change = change
        self._member_request(int(self.env.now))
        return change

    def _member_request(self, started_us: int) -> None:
        assert self.member_change is not None
        kind, nid = self.member_change
        if self.env.now - started_us > MEMBER_GIVE_UP_US:
            self.member_stats["given_up"] += 1
            self.trace.emit(now_us(self.env), 0, "membership", change=kind, member=nid,
                            ok=False, message="given up")
            self.member_change = None
            return
        self._member_attempt += 1
        attempt = self._member_attempt
        self.member_stats["attempts"] += 1
        leader = self.find_leader()

        def again() -> None:
            if self._member_attempt == attempt and self.member_change == (kind, nid):
                self._member_attempt += 1  # this attempt's late answer is ignored
                self._member_request(started_us)

        def done(result: Any) -> None:
            if self._member_attempt != attempt:
                return
            self.trace.emit(now_us(self.env), leader or 0, "membership", change=kind,
                            member=nid, ok=result.ok, message=result.message)
            if not result.ok:
                self.later(MEMBER_RETRY_US, again)
                return
            self._member_attempt += 1
            self.member_change = None
            if kind == "add":
                self.member_stats["joined"] += 1
            else:
                self.member_stats["left"] += 1
                self.later(0, lambda: self._retire(nid))

        host = self.nodes[leader] if leader is not None else None
        if host is None or not host.member_change(kind, nid, f"sim-node-{nid}:7000", done):
            self.later(MEMBER_RETRY_US, again)
        else:
            self.later(MEMBER_ATTEMPT_US, again)

    def _retire(self, nid: int) -> None:
        """Node `nid` left the cluster: stop it (gracefully) for good."""
        self.out.add(nid)
        self.left.add(nid)
        host = self.nodes[nid]
        if host.crash(power_loss=False):
            self.trace.emit(now_us(self.env), nid, "stop")
            for w in self.workloads:
                w.on_crash(nid)

    def crash(self, nid: int) -> None:
        """Power loss of node `nid`'s machine: unsynced file data is lost (or torn)."""
        host = self.nodes[nid]
        lost = host.fs.unsynced_ops(RAFT_LOG) if host.fs.exists(RAFT_LOG) else 0
        assert host.crash(), f"node {nid} crashed while down"
        self.trace.emit(now_us(self.env), nid, "crash", unsynced_ops=lost)
        for w in self.workloads:
            w.on_crash(nid)

    def pause(self, nid: int) -> None:
        self.nodes[nid].pause()
        self.trace.emit(now_us(self.env), nid, "pause")

    def resume(self, nid: int) -> None:
        host = self.nodes[nid]
        if host.up and host.paused:
            host.resume()
            self.trace.emit(now_us(self.env), nid, "resume")

    def propose(self, nid: int, data: bytes, done: Any) -> bool:
        return self.nodes[nid].propose(data, done)

    # -- queries and hooks -----------------------------------------------------------------------

    def raft(self, nid: int) -> Any:
        """Node `nid`'s meta `RaftNode`, or None while it is down."""
        core = self.nodes[nid].core
        return core.replica.raft if core is not None else None

    def _serving(self, nid: int) -> bool:
        host = self.nodes[nid]
        return host.up and not host.paused

    def find_leader(self) -> int | None:
        """The live, unpaused node that believes it leads, in the highest term (a client's view
        after asking around)."""
        best: tuple[int, int] | None = None
        for nid in self.node_ids:
            raft = self.raft(nid)
            if raft is None or not self._serving(nid) or raft.role is not Role.LEADER:
                continue
            if best is None or raft.term > best[0]:
                best = (raft.term, nid)
        return best[1] if best is not None else None

    def self_declared_leaders(self) -> list[int]:
        """Every live, unpaused node that believes it leads (stale leaders included)."""
        out = []
        for nid in self.node_ids:
            raft = self.raft(nid)
            if raft is not None and self._serving(nid) and raft.role is Role.LEADER:
                out.append(nid)
        return out

    def on_up(self, nid: int, core: NodeCore) -> None:
        """Node `nid` recovered and serves (studies override this; call it)."""
        for w in self.workloads:
            w.on_up(nid, core)

    def on_ready(self, nid: int, rd: Ready) -> None:
        """Node `nid`'s meta replica produced `rd` (a hook for studies)."""

    def on_role(self, node: int, term: int, role: Role, leader: int) -> None:
        self.trace.emit(now_us(self.env), node, "role", role=role.value, term=term, leader=leader)
        if role is Role.LEADER and self.heal_us and self.env.now >= self.heal_us:
            if self.first_leader_after_heal_us < 0:
                self.first_leader_after_heal_us = now_us(self.env)
            self._maybe_live()

    def on_committed(self, node: int, entry: Entry, data: bytes) -> None:
        for w in self.workloads:
            w.on_applied(node)
        pid = self.client.on_committed(data, entry.index)
        if pid is None:
            return
        p = self.client.proposals[pid]
        self.trace.emit(now_us(self.env), node, "commit", pid=pid, index=entry.index,
                        latency_us=self.env.now - p.created_us, attempts=p.attempt)
        if self.heal_us and self.env.now >= self.heal_us:
            self._maybe_live()

    # -- heal and liveness ----------------------------------------------------------------------

    def heal(self) -> None:
        """Undo every fault; from now on none occurs. Then liveness is judged."""
        self.net.heal()
        for nid in self.node_ids:
            host = self.nodes[nid]
            host.set_skew(0.0)
            if not host.up and nid not in self.out:
                self.start(nid)
            elif host.paused:
                self.resume(nid)
        self.pending_at_heal = self.client.pending()
        if self.scenario.meta.stop_at_heal:
            self.client.stopped = True
        for w in self.workloads:
            w.heal()
        self.trace.emit(now_us(self.env), 0, "heal", pending=len(self.pending_at_heal))
        budget = round(self.scenario.liveness_budget_ms * US_PER_MS)
        if self.meta_judged:
            deadline = self.env.timeout(budget)
            deadline.callbacks.append(lambda _ev: self._liveness_deadline())
        self._maybe_live()

    def _is_live(self) -> bool:
        if self.find_leader() is None:
            return False
        proposals = self.client.proposals
        return all(proposals[pid].committed_us >= 0 for pid in self.pending_at_heal)

    def _maybe_live(self) -> None:
        if self.verdict or self.env.now < self.heal_us or not self._is_live():
            return
        self.verdict = "ok"
        self.trace.emit(now_us(self.env), 0, "live", after_heal_us=self.env.now - self.heal_us)
        if not self.workloads:  # the client workloads are judged after their drain
            self.stop.succeed()

    def _liveness_deadline(self) -> None:
        if self.verdict:
            return
        proposals = self.client.proposals
        missing = [pid for pid in self.pending_at_heal if proposals[pid].committed_us < 0]
        leader = self.find_leader()
        raise LivenessViolation(
            f"{self.scenario.liveness_budget_ms:g} ms after heal: leader={leader}, "
            f"{len(missing)} of {len(self.pending_at_heal)} proposals pending at heal not "
            f"committed (first: {missing[:5]})")

    # -- run --------------------------------------------------------------------------------------

    @property
    def meta_judged(self) -> bool:
        """Meta liveness is judged after heal unless only client workloads run (their
        checkers judge them)."""
        s = self.scenario
        return bool(s.meta.rate_per_s) or not self.workloads

    def run(self) -> RunResult:
        s = self.scenario
        for nid in self.node_ids:
            self.start(nid)
        self.env.process(self.client.run())
        for w in self.workloads:
            w.start()
        self.nemesis.start()
        end = self.env.timeout(round(s.duration_ms * US_PER_MS))
        outcome, detail = "ok", ""
        try:
            self.env.run(until=self.env.any_of([end, self.stop]))
            if self.heal_us and not self.verdict and self.meta_judged:
                self._liveness_deadline()
            self.replication.final({nid: h.core for nid, h in self.nodes.items()
                                    if h.up and h.core is not None})
        except SafetyViolation as exc:
            outcome, detail = "safety", str(exc)
        except LivenessViolation as exc:
            outcome, detail = "liveness", str(exc)
        except Exception as exc:  # an exception in the core (or the shell): a crash
            outcome, detail = "crash", crash_detail(exc)
        self.reports: dict[str, dict[str, Any]] = {}
        for w in self.workloads:
            report = w.check()
            self.reports[w.name] = report
            if OUTCOME_RANK[report["outcome"]] > OUTCOME_RANK[outcome] and outcome == "ok":
                outcome, detail = report["outcome"], f"{w.name}: {report['detail']}"
        self.trace.emit(now_us(self.env), 0, "verdict", outcome=outcome, detail=detail)
        return RunResult(outcome, detail, self.trace.hexdigest(), int(self.env.now), self.stats())

    def _node_totals(self) -> dict[str, int]:
        rows = [dataclasses.asdict(self.nodes[nid].stats) for nid in self.node_ids]
        totals = _sum_stats(rows)
        totals.update(dataclasses.asdict(self.observer.stats))
        totals.update({f"replication_{k}": v
                       for k, v in dataclasses.asdict(self.replication.stats).items()})
        fs_stats = [self.nodes[n].fs.stats for n in self.node_ids]
        totals["fsyncs"] = sum(st.syncs for st in fs_stats)
        totals["disk_bytes_lost"] = sum(st.bytes_lost for st in fs_stats)
        totals["disk_torn_bytes_kept"] = sum(st.torn_bytes_kept for st in fs_stats)
        return totals

    def stats(self) -> dict[str, Any]:
        p = self.client.proposals
        committed = [q for q in p.values() if q.committed_us >= 0]
        return {
            "proposals": len(p),
            "committed": len(committed),
            "abandoned": sum(1 for q in p.values() if q.abandoned),
            "client_rejected": self.client.rejected_full,
            "trace_events": self.trace.count,
            "faults": self.nemesis.count,
            "net": self.net.stats.as_dict(),
            "nodes": self._node_totals(),
            "leaders": len(self.checkers.election.leaders),
            **({"faults_by_kind": dict(sorted(self.nemesis.counts.items()))}
               if self.nemesis.counts else {}),
            **({"membership": dict(self.member_stats)} if self.scenario.cluster.spares else {}),
            **({"clients_net": dict(self.client_net.stats)} if self.client_net else {}),
            **{name: report for name, report in getattr(self, "reports", {}).items()},
        }


def _sum_stats(rows: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for row in rows:
        for key in sorted(row):
            total[key] = total.get(key, 0) + row[key]
    return total


def crash_detail(exc: BaseException) -> str:
    """Exception type, first message line and the innermost frame, repo-relative (the detail is
    traced, so it must not depend on where the checkout lives)."""
    cause = exc.__cause__
    if cause is not None and type(cause) is type(exc):
        exc = cause  # SimPy re-raises a failed process's exception as a copy
    frames = traceback.extract_tb(exc.__traceback__)
    where = "?"
    if frames:
        path = Path(frames[-1].filename)
        rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else Path(path.name)
        where = f"{rel.as_posix()}:{frames[-1].lineno}"
    msg = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {msg} at {where}"
