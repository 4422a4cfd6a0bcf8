"""The one scenario schema: TOML -> a frozen `Scenario`. Unknown keys fail fast, naming the key
and where it was; cross-field rules fail naming the keys involved.

A scenario is a cluster of whole TwinMQ nodes (`[cluster]`, `[network]` between them, `[disk]`,
`[clock]`), the workloads that run against it (the meta client `[meta]`; MQTT `[[publishers]]`
and `[[subscribers]]` with broker settings `[mqtt]`; Kafka `[[producers]]`, `[[groups]]` and
`[[readers]]` with `[kafka]`; `[[bridges]]` between the two; client connections `[clients]`),
and one nemesis (`[faults]`). Every section is optional; a workload with no clients is absent.
scenarios/sim/raft-election.toml, scenarios/sim/mqtt-sim.toml, scenarios/sim/kafka-sim.toml and
scenarios/sim/node3-bridge.toml show every key; scenarios/sim/node3-rf3.toml the replication
ones ([kafka] default_replication_factor and min_insync_replicas, the [cluster] controller and
replica timings, a producer's produce_timeout_ms).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.devices.fs import SimFsConfig
from model.devices.net import NetConfig
from model.sim.dist import Dist, DistError
from real.kafka.bridge import BridgeRule
from real.kafka.broker import KafkaConfig
from real.mqtt import MQTT_3_1_1, MQTT_5
from real.mqtt.broker import BrokerConfig
from real.mqtt.topics import TopicError, validate_topic_filter, validate_topic_name
from real.raft.types import Bug

FAULT_KINDS = ("crash_leader", "crash_random", "pause", "partition", "partition_asym",
               "loss", "delay", "skew", "isolate_leader", "membership")
"""Fault kinds of the random schedule ([faults] weights)."""
STATE_LOGS = ("journal", "memory")
BROKER_BUGS = ("drop-acked-batch", "no-dedupe")
"""Planted Kafka broker bugs (checker self-tests): see model/workloads/kafka.py."""
DROP_TARGETS = ("all", "publishers", "subscribers", "producers", "consumers")
CRASH_TARGETS = ("clients", "any")


class ScenarioError(ValueError):
    pass


def _node_default(name: str) -> Any:
    """`NodeConfig`'s default of `name` (the one source of node defaults, as for `twinmq
    serve`)."""
    from real.node.config import NodeConfig

    (f,) = [f for f in dataclasses.fields(NodeConfig) if f.name == name]
    return f.default


# ---- the cluster -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    nodes: int = 1
    """Whole TwinMQ nodes; meta Raft runs across all of them."""
    spares: int = 0
    """More nodes (ids nodes+1 ...), down at first: the `membership` fault starts one blank
    (`cluster.join`) and has the meta leader add it, or removes a member (then stops it)."""
    clients_node: int = 1
    """The node MQTT clients connect to, and Kafka clients bootstrap on (and find their group
    coordinator on); Kafka clients follow replicated partitions' leaders to the other nodes."""
    tick_ms: int = 10
    """Raft tick length in the node's local milliseconds."""
    election_tick_min: int = 10
    election_tick_max: int = 20
    heartbeat_tick: int = 2
    pre_vote: bool = True
    check_quorum: bool = True
    bugs: tuple[str, ...] = ()
    """Planted meta Raft bugs (`real.raft.types.Bug` values), for checker tests only."""
    replication_bugs: tuple[str, ...] = ()
    """Planted replication bugs (`real.server.replication.REPLICATION_BUGS`), for the bug hunt
    only."""
    snapshot_every: int = 0
    """Compact the meta log every N applied entries (0: never)."""
    inbox_max: int = 4096
    """Raft messages and proposals a node queues before refusing more (counted)."""
    tick_skipping: bool = True
    """Sleep across idle ticks (`next_deadline_ms`); False ticks one by one (same trace)."""
    check_invariants: bool = True
    """Run `NodeCore.invariants()` after every input."""
    max_size_per_msg: int = 1 << 20
    """Bytes of entries per APPEND (RaftConfig; at least one entry is always sent)."""
    max_inflight_msgs: int = 256
    """Unacknowledged APPENDs per follower in replicate state (RaftConfig)."""
    heartbeat_ms: int = _node_default("cluster_heartbeat_ms")
    """Replicated partitions: each node's broker heartbeat to the meta leader's controller."""
    session_timeout_ms: int = _node_default("cluster_session_timeout_ms")
    """A node silent this long is dead to the controller: its partitions get new leaders."""
    rebalance_delay_ms: int = _node_default("cluster_rebalance_delay_ms")
    """A preferred replica alive and in sync this long gets its leadership back."""
    replica_lag_ms: int = _node_default("cluster_replica_lag_ms")
    """A follower not caught up this long leaves the in-sync set."""
    replica_fetch_wait_ms: int = _node_default("cluster_replica_fetch_wait_ms")
    """How long a leader parks a follower's fetch that finds nothing new."""
    s3_linger_ms: int = 0
    """S3 shards (`[kafka] default_engine = "s3"`): appends wait up to this long to share one
    PUT (the node's `storage.s3_linger_ms`): fewer, larger objects."""
    mqtt_cluster: bool = False
    """MQTT across the cluster (the nodes' `mqtt.cluster`): every message through the
    replicated `__mqtt` log (real/mqtt/cluster.py); clients may connect to any node."""
    mqtt_cluster_partitions: int = 3
    mqtt_bugs: tuple[str, ...] = ()
    """Planted MQTT cluster log bugs (`real.mqtt.cluster.MQTT_CLUSTER_BUGS`), for the bug hunt
    only."""
    replica_tail_bytes: int = 0
    """The leader's in-memory tail cache per replica (a real node's default is 4 MiB); off in
    the simulator by default, so the scenarios written before it keep their traces (with it,
    follower fetches skip the simulated disk's reads)."""


@dataclass(frozen=True, slots=True)
class DiskConfig:
    """[disk]: each machine's simulated filesystem (`model.devices.fs.SimFsConfig`), which holds the
    node's meta Raft log and its shard journals; the other SimFsConfig fields keep their defaults
    (µs page-cache writes, 1000 MB/s device writes)."""

    fsync: Dist = Dist("uniform", 0.2, 1.0)
    """fdatasync latency (SimFsConfig.sync_latency); a directory sync costs the same."""
    torn_writes: bool = True
    """A power loss may keep a byte prefix of the first lost append (SimFsConfig.torn_writes)."""
    group_commit_ms: int = 2
    """Shard journals: how long appends wait for one shared fdatasync."""

    def fs_config(self) -> SimFsConfig:
        return SimFsConfig(torn_writes=self.torn_writes, sync_latency=self.fsync)


@dataclass(frozen=True, slots=True)
class ClockConfig:
    drift_ppm: float = 0.0
    """Each machine's drift is drawn uniformly from [-drift_ppm, +drift_ppm]."""


# ---- workloads -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetaConfig:
    """[meta]: a client proposing `config.put` commands to the meta leader."""

    rate_per_s: float = 0.0
    proposal_timeout_ms: float = 1000.0
    retry_ms: float = 50.0
    """When no leader is known, look again after this long."""
    max_attempts: int = 1000
    outstanding_max: int = 10_000
    value_bytes: int = 16
    stop_at_heal: bool = False
    leader_choice: str = "highest"
    """"highest": propose to the leader of the highest term; "any": to any node that believes
    it leads (stale leaders too)."""


@dataclass(frozen=True, slots=True)
class ClientsConfig:
    """[clients]: the MQTT and Kafka clients' connections to the nodes."""

    latency: Dist = Dist("uniform", 0.5, 2.0)
    """One-way latency of each send."""
    bandwidth_mb_s: float = 0.0
    """Per connection and direction, 10^6 bytes/s; 0 means unlimited."""
    write_high_water_bytes: int = 1 << 20
    """With a bandwidth: once a connection has more untransmitted bytes than this, the node is
    told it is congested (`set_congested`), until the backlog falls to half (real shell: 1 MiB)."""
    reconnect: Dist = Dist("uniform", 10.0, 100.0)
    """Delay before a client reconnects after any close (also after a refused connect); a Kafka
    client's backoff before it refreshes Metadata."""


@dataclass(frozen=True, slots=True)
class PublisherSpec:
    count: int = 1
    rate_per_s: float = 50.0
    """Messages per second, each publisher, at a fixed interval with a random phase."""
    payload_bytes: int = 32
    """At least the id header "<publisher>:<seq>:"; padded with '.'."""
    qos: int = 1
    topic: str = "t/{p}"
    """Topic pattern: {p} is the publisher index (0-based), {k} is seq % topics."""
    topics: int = 1
    protocol: int = MQTT_3_1_1
    persistent: bool = True
    """clean_start false (with expiry_s under v5): the broker keeps QoS 2 inbound state."""
    expiry_s: int = 3600
    inflight_max: int = 32
    """Unacknowledged QoS >= 1 PUBLISHes in flight (must not exceed broker receive_maximum)."""
    queue_max: int = 10_000
    """Messages waiting for a window slot or a connection; beyond it they are `rejected`."""
    node: int = 0
    """The node these publishers connect to (0: `[cluster] clients_node`)."""


@dataclass(frozen=True, slots=True)
class SubscriberSpec:
    count: int = 1
    filter: str = "t/#"
    qos: int = 1
    persistent: bool = True
    expiry_s: int = 3600
    """Session expiry (v5 only; a v3.1.1 persistent session never expires)."""
    protocol: int = MQTT_3_1_1
    node: int = 0
    """The node these subscribers connect to (0: `[cluster] clients_node`)."""
    roam: bool = False
    """Cluster only: each reconnect goes to another node, chosen at random, so the session
    moves with its client id (real/mqtt/claims.py)."""
    twin: bool = False
    """Cluster only: each subscriber is two clients with one client id, on `node` and on the
    next node, that take the id from each other on every reconnect (a duplicated device). The
    checker judges them by the client id served by two connections at once, not by loss."""


@dataclass(frozen=True, slots=True)
class ProducerSpec:
    count: int = 1
    topic: str = "events"
    rate_per_s: float = 100.0
    """Records per second, each producer, at a fixed interval with a random phase."""
    payload_bytes: int = 24
    """At least the id header "<producer>:<seq>:"; padded with '.'."""
    acks: int = -1
    """1 or -1 (an unreplicated partition answers both once the batch is durable on its node; a
    replicated one answers -1 once min.insync.replicas hold it, 1 once its leader does)."""
    idempotent: bool = True
    """InitProducerId, then producer id/epoch/sequence in every batch."""
    inflight_max: int = 1
    """Produce requests in flight on the connection (<= 5 when idempotent: the broker remembers
    the last 5 batches per producer)."""
    batch_records_max: int = 16
    request_timeout_ms: int = 500
    """The client's timer: a request unanswered this long resets its connection."""
    produce_timeout_ms: int = 30_000
    """The Produce request's `timeout_ms`: how long the leader may wait for the in-sync
    replicas (acks = -1) before answering REQUEST_TIMED_OUT (retried like a leader change).
    Below request_timeout_ms the broker's answer comes before the client gives up."""
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


SIM_MQTT = BrokerConfig(sys_interval_ms=0)
"""MQTT broker defaults in the simulator: NodeConfig's, without $SYS publishing."""
SIM_KAFKA = KafkaConfig(default_partitions=3, default_engine="file",
                        group_min_session_timeout_ms=100, fetch_wait_max_ms=5000)
"""Kafka broker defaults in the simulator: short session timeouts are allowed."""


# ---- the nemesis ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """[faults]: one nemesis. From `start_ms` until `heal_ms` it injects (a) a random schedule:
    a gap drawn from `interval_ms`, then one kind chosen by `weights`; and (b) listed times
    (`*_at_ms`) and Poisson arrivals (`*_rate_per_s`) of node crashes, client drops, delay spikes
    on the client network and consumer pauses. At `heal_ms` every fault is undone (down nodes
    restart, paused ones resume) and none occurs afterwards; workloads stop producing there."""

    enabled: bool = False
    start_ms: float = 1000.0
    heal_ms: float = 0.0
    """From this sim time on no fault occurs and every fault is undone (0: no heal phase)."""
    interval_ms: tuple[float, float] = (500.0, 2000.0)
    weights: dict[str, float] = field(default_factory=dict)
    downtime_ms: tuple[float, float] = (200.0, 3000.0)
    pause_ms: tuple[float, float] = (200.0, 2000.0)
    partition_ms: tuple[float, float] = (200.0, 3000.0)
    loss: tuple[float, float] = (0.1, 0.5)
    loss_ms: tuple[float, float] = (200.0, 2000.0)
    delay_extra_ms: tuple[float, float] = (5.0, 100.0)
    delay_ms: tuple[float, float] = (200.0, 2000.0)
    skew_ppm: tuple[float, float] = (-50_000.0, 50_000.0)
    skew_ms: tuple[float, float] = (500.0, 5000.0)
    crash_at_ms: tuple[float, ...] = ()
    crash_rate_per_s: float = 0.0
    crash_targets: str = "clients"
    """Which node a scheduled crash (a power loss) hits: "clients" (`clients_node`) or "any"."""
    restart: Dist = Dist("uniform", 50.0, 200.0)
    """Downtime after a scheduled crash before the node restarts and recovers."""
    client_drop_at_ms: tuple[float, ...] = ()
    client_drop_rate_per_s: float = 0.0
    client_drop_targets: str = "all"
    """all, publishers, subscribers, producers or consumers (connected ones)."""
    delay_spike_at_ms: tuple[float, ...] = ()
    delay_spike_rate_per_s: float = 0.0
    delay_spike_ms: Dist = Dist("uniform", 50.0, 300.0)
    """How long a spike lasts."""
    delay_spike_extra: Dist = Dist("uniform", 5.0, 50.0)
    """Extra one-way latency on every client connection during a spike."""
    consumer_pause_at_ms: tuple[float, ...] = ()
    consumer_pause_rate_per_s: float = 0.0
    consumer_pause_ms: Dist = Dist("uniform", 400.0, 800.0)
    """How long a paused group consumer stays frozen (exceed session_timeout_ms to force a
    rebalance)."""


# ---- the scenario --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str = "scenario"
    seed: int = 1
    """The seed `twinmq sim run` uses without --seed."""
    duration_ms: float = 10_000.0
    warmup_ms: float = 100.0
    """MQTT and Kafka clients start producing here (subscribers and consumers connect before)."""
    liveness_budget_ms: float = 10_000.0
    """After heal: a meta leader, and a commit of every meta proposal pending at heal, within
    this budget."""
    trace_messages: bool = False
    state_log: str = "journal"
    """"journal": shards are file journals on the simulated disk. "memory": MemoryEngine shards
    that a crash wipes (a broken broker, to show the checkers catch lost data)."""
    broker_bugs: tuple[str, ...] = ()
    """Planted Kafka broker bugs (checker self-tests), among BROKER_BUGS."""
    broker_bug_at_ms: float = 300.0
    cluster: ClusterConfig = ClusterConfig()
    network: NetConfig = NetConfig()
    disk: DiskConfig = DiskConfig()
    clock: ClockConfig = ClockConfig()
    meta: MetaConfig = MetaConfig()
    clients: ClientsConfig = ClientsConfig()
    mqtt: BrokerConfig = SIM_MQTT
    kafka: KafkaConfig = SIM_KAFKA
    faults: FaultConfig = FaultConfig()
    bridges: tuple[BridgeRule, ...] = ()
    publishers: tuple[PublisherSpec, ...] = ()
    subscribers: tuple[SubscriberSpec, ...] = ()
    producers: tuple[ProducerSpec, ...] = ()
    groups: tuple[GroupSpec, ...] = ()
    readers: tuple[ReaderSpec, ...] = ()
    source: str = "<memory>"

    @property
    def heal_us(self) -> int:
        """When faults stop (0: never)."""
        return round(self.faults.heal_ms * 1000) if self.faults.enabled else 0

    @property
    def produce_until_us(self) -> int:
        """MQTT publishers and Kafka producers stop here: at heal ([faults] heal_ms, set even
        with faults off), or at the end of the run; what follows is the drain."""
        return round((self.faults.heal_ms or self.duration_ms) * 1000)

    @property
    def has_mqtt(self) -> bool:
        return any(p.count for p in self.publishers) or any(s.count for s in self.subscribers)

    @property
    def has_kafka(self) -> bool:
        return (any(p.count for p in self.producers) or any(g.count for g in self.groups)
                or any(r.count for r in self.readers))


_TABLES: dict[str, Any] = {
    "cluster": ClusterConfig(), "network": NetConfig(), "disk": DiskConfig(),
    "clock": ClockConfig(), "meta": MetaConfig(), "clients": ClientsConfig(), "mqtt": SIM_MQTT,
    "kafka": SIM_KAFKA, "faults": FaultConfig(),
}
_ARRAYS: dict[str, Any] = {
    "publishers": PublisherSpec(), "subscribers": SubscriberSpec(), "producers": ProducerSpec(),
    "groups": GroupSpec(), "readers": ReaderSpec(), "bridges": None,
}
_FIXED = ("node_id", "host", "port", "default_engine")
"""Broker keys the world sets itself ([mqtt] / [kafka] may not; but `[kafka] default_engine =
"s3"` puts every Kafka partition on one object store the machines share)."""


def read_toml(path: str | Path, error: type[Exception] = ScenarioError) -> dict[str, Any]:
    """A scenario file's TOML; `error` names the file if it is missing or not valid TOML."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"scenario file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path.name}: invalid TOML: {exc}") from None


def load(path: str | Path) -> Scenario:
    return from_dict(read_toml(path), source=str(path))


def from_dict(raw: dict[str, Any], source: str = "<memory>") -> Scenario:
    fname = Path(source).name if source != "<memory>" else "scenario.toml"
    values: dict[str, Any] = {"source": source}
    top = [f.name for f in dataclasses.fields(Scenario) if f.name != "source"]
    for key in raw:
        if key not in top:
            raise ScenarioError(f"unknown key {key!r} in {fname} (expected one of {sorted(top)})")
        if key in _TABLES:
            where = f"[{key}] of {fname}"
            if key in ("mqtt", "kafka"):
                for fixed in _FIXED:
                    if isinstance(raw[key], dict) and fixed in raw[key]:
                        if (key, fixed, raw[key][fixed]) == ("kafka", "default_engine", "s3"):
                            continue  # Kafka partitions on the shared object store
                        raise ScenarioError(f"{fixed!r} in {where}: set by the simulator"
                                            + (" (or \"s3\": partitions on a shared object "
                                               "store)" if fixed == "default_engine" else ""))
            values[key] = _table(_TABLES[key], raw[key], where)
        elif key in _ARRAYS:
            values[key] = _array(key, raw[key], fname)
        else:
            values[key] = _value(Scenario(), key, raw[key], f"{key!r} in {fname}")
    scenario = Scenario(**values)
    validate(scenario, fname)
    return scenario


def _array(key: str, items: object, fname: str) -> tuple[Any, ...]:
    if not isinstance(items, list):
        raise ScenarioError(f"{key!r} in {fname}: expected an array of [[{key}]] tables")
    out = []
    for i, item in enumerate(items):
        where = f"[[{key}]] #{i + 1} of {fname}"
        if key == "bridges":
            out.append(_bridge(item, where))
        else:
            out.append(_table(_ARRAYS[key], item, where))
    return tuple(out)


def _bridge(raw: object, where: str) -> BridgeRule:
    from real.kafka.bridge import parse_rules

    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: expected a table")
    try:
        (rule,) = parse_rules([raw], where)
    except ValueError as exc:
        raise ScenarioError(str(exc)) from None
    return rule


def _table(base: Any, raw: object, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: expected a table")
    names = [f.name for f in dataclasses.fields(base)]
    values: dict[str, Any] = {}
    for key in raw:
        if key not in names:
            raise ScenarioError(f"unknown key {key!r} in {where} "
                                f"(expected one of {sorted(names)})")
        values[key] = _value(base, key, raw[key], f"{key!r} in {where}")
    try:
        return dataclasses.replace(base, **values)
    except (AssertionError, ValueError, TypeError) as exc:
        raise ScenarioError(f"{where}: invalid value ({exc})") from None


def coerce_scalar(default: Any, value: Any) -> tuple[bool, Any]:
    """(ok, value) for a TOML value standing in for a bool/int/float/str default: bools are not
    ints, ints become floats where a float is expected. (False, value) for other defaults."""
    if isinstance(default, bool):
        return isinstance(value, bool), value
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool), value
    if isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if isinstance(default, str):
        return isinstance(value, str), value
    return False, value


def _value(base: Any, key: str, value: Any, where: str) -> Any:
    """Coerce `value` to the type of `base.key`'s default; the error names `where`."""
    default = getattr(base, key)
    if isinstance(default, Dist):
        try:
            return Dist.parse(value, where)
        except DistError as exc:
            raise ScenarioError(str(exc)) from None
    if isinstance(default, (bool, int, float, str)):
        ok, value = coerce_scalar(default, value)
    elif isinstance(default, dict):
        ok = isinstance(value, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values())
        value = {k: float(v) for k, v in value.items()} if ok else value
    elif isinstance(default, tuple) and len(default) == 2 and all(
            isinstance(v, float) for v in default):
        ok = (isinstance(value, list) and len(value) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
        if ok and value[0] > value[1]:
            raise ScenarioError(f"{where}: low {value[0]} > high {value[1]}")
        value = (float(value[0]), float(value[1])) if ok else value
    elif isinstance(default, tuple) and (key.endswith("bugs") or (
            isinstance(value, list) and value and all(isinstance(v, str) for v in value))):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif isinstance(default, tuple):
        ok = isinstance(value, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        value = tuple(float(v) for v in value) if ok else value
    else:
        ok = False
    if not ok:
        raise ScenarioError(f"{where}: expected {type(default).__name__}, got {value!r}")
    return value


# ---- cross-field rules ---------------------------------------------------------------------------


def validate(s: Scenario, fname: str = "scenario.toml") -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ScenarioError(f"{fname}: {msg}")

    c = s.cluster
    known_bugs = [b.value for b in Bug]
    for bug in c.bugs:
        need(bug in known_bugs, f"unknown bug {bug!r} in [cluster] bugs (expected one of "
                                f"{known_bugs})")
    from real.server.replication import REPLICATION_BUGS

    for bug in c.replication_bugs:
        need(bug in REPLICATION_BUGS, f"unknown bug {bug!r} in [cluster] replication_bugs "
                                      f"(expected one of {list(REPLICATION_BUGS)})")
    for bug in s.broker_bugs:
        need(bug in BROKER_BUGS, f"unknown broker bug {bug!r} in broker_bugs (expected one of "
                                 f"{list(BROKER_BUGS)})")
    need(1 <= c.nodes <= 9, f"[cluster] nodes must be 1..9, got {c.nodes}")
    need(0 <= c.spares <= 9 - c.nodes, f"[cluster] spares must be 0..{9 - c.nodes}, "
                                       f"got {c.spares}")
    need(1 <= c.clients_node <= c.nodes, f"[cluster] clients_node must be 1..nodes, "
                                         f"got {c.clients_node}")
    need(c.tick_ms >= 1, "[cluster] tick_ms must be >= 1")
    need(0 <= c.s3_linger_ms <= 60_000, "[cluster] s3_linger_ms must be 0..60000")
    need(1 <= c.heartbeat_tick < c.election_tick_min <= c.election_tick_max,
         "[cluster] need 1 <= heartbeat_tick < election_tick_min <= election_tick_max")
    need(c.max_size_per_msg >= 1 and c.max_inflight_msgs >= 1,
         "[cluster] max_size_per_msg and max_inflight_msgs must be >= 1")
    need(c.inbox_max >= 1 and c.snapshot_every >= 0,
         "[cluster] inbox_max must be >= 1 and snapshot_every >= 0")
    need(c.replica_tail_bytes >= 0, "[cluster] replica_tail_bytes must be >= 0")
    need(not c.mqtt_cluster or c.nodes >= 2, "[cluster] mqtt_cluster needs nodes >= 2")
    from real.mqtt.cluster import MQTT_CLUSTER_BUGS

    for bug in c.mqtt_bugs:
        need(bug in MQTT_CLUSTER_BUGS, f"unknown bug {bug!r} in [cluster] mqtt_bugs (expected "
                                       f"one of {list(MQTT_CLUSTER_BUGS)})")
    need(not c.mqtt_bugs or c.mqtt_cluster, "[cluster] mqtt_bugs need mqtt_cluster")
    need(1 <= c.mqtt_cluster_partitions <= 1024,
         "[cluster] mqtt_cluster_partitions must be 1..1024")
    specs_by_kind: tuple[tuple[str, tuple[PublisherSpec | SubscriberSpec, ...]], ...] = (
        ("publishers", s.publishers), ("subscribers", s.subscribers))
    for kind, specs in specs_by_kind:
        for i, spec in enumerate(specs):
            need(0 <= spec.node <= c.nodes, f"[[{kind}]] #{i}: node must be 0..{c.nodes} (0: "
                                            f"[cluster] clients_node), got {spec.node}")
            need(spec.node in (0, c.clients_node) or c.mqtt_cluster,
                 f"[[{kind}]] #{i}: clients on node {spec.node} need [cluster] mqtt_cluster "
                 "(else each node's MQTT is its own)")
    need(min(c.heartbeat_ms, c.session_timeout_ms, c.rebalance_delay_ms, c.replica_lag_ms,
             c.replica_fetch_wait_ms) >= 1,
         "[cluster] heartbeat_ms, session_timeout_ms, rebalance_delay_ms, replica_lag_ms and "
         "replica_fetch_wait_ms must be >= 1")
    need(c.session_timeout_ms > 2 * c.heartbeat_ms,
         f"[cluster] session_timeout_ms ({c.session_timeout_ms}) must be more than twice "
         f"heartbeat_ms ({c.heartbeat_ms})")
    need(s.duration_ms > 0, f"duration_ms must be > 0, got {s.duration_ms}")
    need(s.state_log in STATE_LOGS, f"state_log must be one of {list(STATE_LOGS)}, "
                                    f"got {s.state_log!r}")
    need(s.meta.leader_choice in ("highest", "any"),
         f"[meta] leader_choice must be 'highest' or 'any', got {s.meta.leader_choice!r}")
    need(s.disk.group_commit_ms >= 0, "[disk] group_commit_ms must be >= 0")
    need(s.clients.bandwidth_mb_s >= 0, "[clients] bandwidth_mb_s must be >= 0")
    need(s.clients.write_high_water_bytes >= 1, "[clients] write_high_water_bytes must be >= 1")
    _validate_faults(s, need)
    if s.has_mqtt or s.has_kafka:
        need(0 <= s.warmup_ms <= s.faults.heal_ms <= s.duration_ms,
             f"need 0 <= warmup_ms <= [faults] heal_ms <= duration_ms (clients produce between "
             f"warmup and heal, then drain), got {s.warmup_ms}, {s.faults.heal_ms}, "
             f"{s.duration_ms}")
    for i, p in enumerate(s.publishers):
        _validate_publisher(p, s.mqtt, f"[[publishers]] #{i + 1}", need)
    for i, sub in enumerate(s.subscribers):
        where = f"[[subscribers]] #{i + 1}"
        need(sub.count >= 0 and sub.qos in (0, 1, 2) and sub.protocol in (MQTT_3_1_1, MQTT_5),
             f"{where}: count >= 0, qos in 0..2, protocol 4 or 5 required")
        need(sub.expiry_s >= 1 or not sub.persistent, f"{where}: expiry_s must be >= 1")
        try:
            validate_topic_filter(sub.filter)
        except TopicError as exc:
            need(False, f"{where} filter {sub.filter!r}: {exc}")
    if s.has_kafka or s.bridges:
        _validate_kafka(s, need)


def _validate_faults(s: Scenario, need: Callable[[bool, str], None]) -> None:
    f = s.faults
    for kind in f.weights:
        need(kind in FAULT_KINDS, f"unknown fault kind {kind!r} in [faults] weights "
                                  f"(expected one of {list(FAULT_KINDS)})")
    need(f.crash_targets in CRASH_TARGETS,
         f"[faults] crash_targets must be one of {list(CRASH_TARGETS)}, got {f.crash_targets!r}")
    need(f.client_drop_targets in DROP_TARGETS,
         f"[faults] client_drop_targets must be one of {list(DROP_TARGETS)}, "
         f"got {f.client_drop_targets!r}")
    for name in ("crash_rate_per_s", "client_drop_rate_per_s", "delay_spike_rate_per_s",
                 "consumer_pause_rate_per_s"):
        need(getattr(f, name) >= 0, f"[faults] {name} must be >= 0")
    if f.enabled:
        need(0 <= s.warmup_ms and f.heal_ms <= s.duration_ms,
             f"need 0 <= warmup_ms and [faults] heal_ms <= duration_ms, got {s.warmup_ms}, "
             f"{f.heal_ms}, {s.duration_ms}")
        if f.heal_ms and (s.meta.rate_per_s or not (s.has_mqtt or s.has_kafka)):
            need(f.heal_ms + s.liveness_budget_ms <= s.duration_ms,
                 f"duration_ms {s.duration_ms} < faults.heal_ms + liveness_budget_ms "
                 f"({f.heal_ms + s.liveness_budget_ms})")


def _validate_publisher(p: PublisherSpec, broker: BrokerConfig, where: str,
                        need: Callable[[bool, str], None]) -> None:
    need(p.count >= 0 and p.rate_per_s > 0, f"{where}: count >= 0 and rate_per_s > 0 required")
    need(p.qos in (0, 1, 2) and p.protocol in (MQTT_3_1_1, MQTT_5),
         f"{where}: qos in 0..2 and protocol 4 or 5 required")
    need(p.topics >= 1 and p.queue_max >= 1, f"{where}: topics and queue_max must be >= 1")
    need(1 <= p.inflight_max <= min(65535, broker.receive_maximum),
         f"{where}: inflight_max must be in 1..broker receive_maximum "
         f"({broker.receive_maximum}), got {p.inflight_max}")
    need(p.payload_bytes >= 0 and p.expiry_s >= 1, f"{where}: payload_bytes >= 0, expiry_s >= 1")
    try:
        topic = p.topic.format(p=0, k=0)
        validate_topic_name(topic)
    except (KeyError, IndexError, ValueError, TopicError) as exc:
        need(False, f"{where} topic {p.topic!r}: {exc}")


def _validate_kafka(s: Scenario, need: Callable[[bool, str], None]) -> None:
    k = s.kafka
    need(1 <= k.default_partitions <= 1024, "[kafka] default_partitions must be 1..1024")
    need(k.auto_create_topics, "[kafka] auto_create_topics must be true (clients create their "
                               "topic through Metadata)")
    for i, p in enumerate(s.producers):
        where = f"[[producers]] #{i + 1}"
        need(p.count >= 0 and p.rate_per_s > 0, f"{where}: count >= 0 and rate_per_s > 0")
        need(p.acks in (1, -1), f"{where}: acks must be 1 or -1, got {p.acks}")
        need(1 <= p.inflight_max <= (5 if p.idempotent else 64),
             f"{where}: inflight_max must be in 1..5 when idempotent (1..64 otherwise), "
             f"got {p.inflight_max}")
        need(p.batch_records_max >= 1 and p.queue_max >= 1 and p.request_timeout_ms >= 1,
             f"{where}: batch_records_max, queue_max and request_timeout_ms must be >= 1")
        need(p.produce_timeout_ms >= 0, f"{where}: produce_timeout_ms must be >= 0")
        need(p.payload_bytes >= 0, f"{where}: payload_bytes must be >= 0")
    for i, g in enumerate(s.groups):
        where = f"[[groups]] #{i + 1}"
        need(g.count >= 0 and g.group != "", f"{where}: count >= 0 and a non-empty group")
        need(k.group_min_session_timeout_ms <= g.session_timeout_ms
             <= k.group_max_session_timeout_ms,
             f"{where}: session_timeout_ms {g.session_timeout_ms} outside the broker's "
             f"[group_min_session_timeout_ms, group_max_session_timeout_ms]")
        need(0 < g.heartbeat_interval_ms < g.session_timeout_ms,
             f"{where}: need 0 < heartbeat_interval_ms < session_timeout_ms")
        need(g.commit_interval_ms >= 1 and g.rebalance_timeout_ms >= 1,
             f"{where}: commit_interval_ms and rebalance_timeout_ms must be >= 1")
        need(g.fetch_max_wait_ms >= 0 and g.fetch_max_bytes >= 1 and g.request_timeout_ms >= 1,
             f"{where}: fetch_max_wait_ms >= 0, fetch_max_bytes >= 1, request_timeout_ms >= 1")
    for i, r in enumerate(s.readers):
        where = f"[[readers]] #{i + 1}"
        need(r.count >= 0 and r.fetch_max_wait_ms >= 0 and r.fetch_max_bytes >= 1
             and r.request_timeout_ms >= 1, f"{where}: count >= 0, fetch_max_wait_ms >= 0, "
                                            "fetch_max_bytes >= 1, request_timeout_ms >= 1")
    produced = {p.topic for p in s.producers if p.count}
    bridged = {b.kafka for b in s.bridges if b.to_kafka}
    need(not produced & bridged, f"Kafka topics {sorted(produced & bridged)} are both produced "
                                 "to by [[producers]] and bridged from MQTT: use separate topics")
    grouped = {g.topic for g in s.groups if g.count}
    need(not grouped & bridged, f"Kafka topics {sorted(grouped & bridged)} are bridged from "
                                "MQTT: read them with [[readers]] (the bridge checker audits "
                                "those), not [[groups]]")


def with_bugs(s: Scenario, bugs: list[str]) -> Scenario:
    """The scenario with extra planted bugs (`--bug NAME`): Raft bugs go to [cluster] bugs,
    replication bugs to [cluster] replication_bugs, MQTT cluster log bugs to [cluster]
    mqtt_bugs, broker bugs to broker_bugs."""
    from real.mqtt.cluster import MQTT_CLUSTER_BUGS
    from real.server.replication import REPLICATION_BUGS

    raft = [b for b in bugs if b not in BROKER_BUGS and b not in REPLICATION_BUGS
            and b not in MQTT_CLUSTER_BUGS]
    broker = [b for b in bugs if b in BROKER_BUGS]
    repl = [b for b in bugs if b in REPLICATION_BUGS]
    mqtt = [b for b in bugs if b in MQTT_CLUSTER_BUGS]
    merged = tuple(dict.fromkeys(list(s.cluster.bugs) + raft))
    cluster = dataclasses.replace(
        s.cluster, bugs=merged,
        replication_bugs=tuple(dict.fromkeys(list(s.cluster.replication_bugs) + repl)),
        mqtt_bugs=tuple(dict.fromkeys(list(s.cluster.mqtt_bugs) + mqtt)))
    out = dataclasses.replace(s, cluster=cluster,
                              broker_bugs=tuple(dict.fromkeys(list(s.broker_bugs) + broker)))
    validate(out, Path(s.source).name)
    return out
