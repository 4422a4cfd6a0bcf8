"""The MQTT broker in the simulator: the pure `Broker` driven by SimPy, with clients and faults.

This is the SimPy twin of the asyncio shell (real/node/mqtt.py). The same `real.mqtt.broker.Broker`
runs here; only the world around it is simulated:

- **Disk.** The broker's state log is a `JournalEngine` (fsync "group") over a `SimFileSystem`, so a
  broker crash is a power loss: `fs.crash()` keeps only what was fdatasynced (plus a random prefix
  of the rest), and the restarted broker `recover()`s from what the files hold. Every filesystem
  call charges simulated time; the broker process waits it out before it sends anything (the real
  shell's event loop is blocked by an fsync in the same way).
- **Network.** A connection is two in-order byte pipes (client->broker, broker->client) with a
  sampled one-way latency per send, an optional per-connection bandwidth (a send occupies the pipe
  for len/bandwidth), and a network-wide extra delay during delay spikes. A graceful close travels
  as a FIN behind the data. An abrupt close (a client drop, a broker crash, a refused connect)
  resets the connection: bytes still in flight in either direction are discarded, the side that
  closed knows at once, the other side learns one latency later.
- **Broker process.** One SimPy process per broker incarnation: it takes arrivals (open, bytes,
  close) from an inbox in order, feeds them to the broker, waits for the filesystem time, then
  drains the broker's output into the pipes and checks `Broker.invariants()`. It wakes itself at
  `Broker.next_deadline_ms()` (ticks) and at the journal's `next_flush_ms()` (group commit:
  `poll`, then `durable_progress`, which releases PUBACK/PUBRECs held for durability).
- **Clients** speak MQTT through the real codec (`real.mqtt.encode` / `Decoder`). Publishers send
  at a fixed rate with a bounded window and a bounded local queue (overflow is counted as
  `rejected`, never silently dropped); on reconnect they re-send unacknowledged PUBLISHes with DUP
  and pending PUBRELs under the same packet ids. Subscribers acknowledge QoS 1 (PUBACK) and QoS 2
  (PUBREC, then PUBCOMP on PUBREL; a QoS 2 packet id is delivered once until its PUBREL), keep
  that state across reconnects when persistent (clean_start false), and re-subscribe whenever
  CONNACK says the session is not present.
- **Faults** (between `warmup_ms` and `heal_ms`, at listed times and/or Poisson rates): broker
  crash (power loss) with restart after a delay, abrupt client drops with reconnect after a
  delay, and network delay spikes. Publishing stops at `heal_ms`; the run then drains until
  `duration_ms`.

**Checkers** (`MqttChecker`) look only at the client-observed history (plus the fault log):

- loss: every QoS >= 1 publish acknowledged (PUBACK, or PUBREC for QoS 2: the point the broker
  took ownership) must reach every persistent subscriber (QoS >= 1) whose subscription was in
  place (SUBACK received) before the publish was first sent and still in place when it was
  acknowledged. A subscription ends when a CONNACK says the session is gone: at the first broker
  crash after the last proof the session existed (SUBACK, or CONNACK with session present), or
  at the last close if no crash came in between. A session that may have expired (v5, offline
  longer than its expiry) is exempt. `lost` must be 0. (A SUBACK is not held for durability, so
  a crash right after one may legitimately lose the subscription; but any publish acknowledged
  after being routed to it was logged after the session record, so its durability implies the
  session's.)
- duplicates: QoS 1 duplicates are counted (allowed); QoS 2 duplicates are split into those with a
  broker crash between the first send and the repeat (allowed) and those without (a violation).
- order: without broker crashes, each subscriber sees each publisher's QoS >= 1 messages (first
  receipts) in publish order.
- liveness: after the drain, no publisher still holds unacknowledged or unsent messages.

Outcome: `ok | safety | liveness | crash` (exit codes 0..3); `crash` is an exception in the
broker or the shell.

**Trace kinds** (node 0: the broker machine and faults; node N: client N, subscribers first):
`broker-up` (gen, records, sessions recovered), `crash`, `spike`/`spike-end`, `congested`; per
client `dial`, `connack` (present, code), `closed`, `drop` (the fault), `suback`; publishers
`pub` (seq, qos, pid, dup), `ack` (PUBACK / first PUBREC), `comp`, `refused`, `reject` (local
queue full); subscribers `recv` (p, seq, qos, dup) and `repeat` (a QoS 2 PUBLISH under a packet id
still awaiting PUBREL: acknowledged, not delivered; `held` and `payload` show both messages'
first bytes); finally `verdict`.

**Determinism.** Every random choice comes from a `SeedTree` stream derived in a fixed order
("net", "fs", "faults", then one per client in creation order: subscribers, then publishers).
The trace is JSONL of client-observed events and faults with sim time in microseconds (see
model/trace.py); the same seed gives a byte-identical trace, whatever `PYTHONHASHSEED` is.

Run: `python -m model.mqtt scenarios/mqtt-sim.toml --seed N [--trace out.jsonl]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import simpy

from model.checkers import OUTCOME_CODES
from model.conn import FIN, NetSpec, SimConn, SimNet, Switchboard
from model.dist import Dist, DistError
from model.fs import SimFileSystem, SimFsConfig
from model.host import SimHost, sim_node_spec
from model.rng import SeedTree
from model.scenario import coerce_scalar, read_toml
from model.trace import Trace
from model.world import crash_detail
from real.mqtt import (
    MQTT_3_1_1,
    MQTT_5,
    Connack,
    Connect,
    Decoder,
    Properties,
    PropertyId,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    encode,
)
from real.mqtt.broker import BrokerConfig
from real.mqtt.session import next_packet_id
from real.mqtt.topics import TopicError, matches, validate_topic_filter, validate_topic_name
from real.server.node import NodeCore, Proto
from real.server.storage import StorageSettings

US_PER_MS = 1000
USAGE_ERROR = 4
STATE_DIR = "mqtt-state"
STATE_LOGS = ("journal", "memory")
CLIENT_PACKET_MAX = 1 << 28
LOST_IDS_MAX = 100  # (subscriber, publisher, seq) of lost messages listed in the result
ROOT = Path(__file__).resolve().parent.parent

# ================================================================================ configuration


class ConfigError(ValueError):
    """A bad scenario file: the message names the file, the section and the key."""


@dataclass(frozen=True, slots=True)
class DiskSpec:
    fsync: Dist = Dist("lognormal", 0.3, 0.6, 20.0)
    """fdatasync latency of the simulated filesystem (SimFsConfig.sync_latency)."""
    group_commit_ms: int = 2
    torn_writes: bool = True


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


@dataclass(frozen=True, slots=True)
class SubscriberSpec:
    count: int = 1
    filter: str = "t/#"
    qos: int = 1
    persistent: bool = True
    expiry_s: int = 3600
    """Session expiry (v5 only; a v3.1.1 persistent session never expires)."""
    protocol: int = MQTT_3_1_1


@dataclass(frozen=True, slots=True)
class FaultSpec:
    broker_crash_at_ms: tuple[float, ...] = ()
    broker_crash_rate_per_s: float = 0.0
    broker_restart: Dist = Dist("uniform", 50.0, 200.0)
    """Downtime after a crash before the broker restarts and recovers."""
    client_drop_at_ms: tuple[float, ...] = ()
    client_drop_rate_per_s: float = 0.0
    client_drop_targets: str = "all"
    """Which clients a drop picks from: all, publishers or subscribers (connected ones)."""
    client_reconnect: Dist = Dist("uniform", 10.0, 100.0)
    """Delay before a client reconnects after any close (also after a refused connect)."""
    delay_spike_at_ms: tuple[float, ...] = ()
    delay_spike_rate_per_s: float = 0.0
    delay_spike_ms: Dist = Dist("uniform", 50.0, 300.0)
    """How long a spike lasts."""
    delay_spike_extra: Dist = Dist("uniform", 5.0, 50.0)
    """Extra one-way latency during a spike (every connection)."""


@dataclass(frozen=True, slots=True)
class MqttSimConfig:
    name: str = "mqtt-sim"
    duration_ms: float = 3000.0
    seed: int = 1
    warmup_ms: float = 100.0
    """Publishing and faults start here (subscribers connect at 0..warmup/2)."""
    heal_ms: float = 2000.0
    """Publishing and faults stop here; the rest of the run drains."""
    state_log: str = "journal"
    """"journal": JournalEngine over the simulated filesystem. "memory": a MemoryEngine that a
    crash loses entirely (a broken broker, to show the checker catches lost state)."""
    broker: BrokerConfig = BrokerConfig(sys_interval_ms=0)
    network: NetSpec = NetSpec()
    disk: DiskSpec = DiskSpec()
    publishers: tuple[PublisherSpec, ...] = (PublisherSpec(),)
    subscribers: tuple[SubscriberSpec, ...] = (SubscriberSpec(),)
    faults: FaultSpec = FaultSpec()
    source: str = "<memory>"


_TABLES: dict[str, type] = {"network": NetSpec, "disk": DiskSpec, "faults": FaultSpec,
                            "broker": BrokerConfig}
_ARRAYS: dict[str, type] = {"publishers": PublisherSpec, "subscribers": SubscriberSpec}


def load_config(path: str | Path) -> MqttSimConfig:
    """Read a scenario TOML file (see scenarios/mqtt-sim.toml for every key)."""
    return config_from_dict(read_toml(path, ConfigError), source=str(path))


def config_from_dict(raw: dict[str, Any], source: str = "<memory>") -> MqttSimConfig:
    """Build and validate a config; unknown keys fail naming the key and where it was."""
    fname = Path(source).name if source != "<memory>" else "scenario.toml"
    top = [f.name for f in dataclasses.fields(MqttSimConfig) if f.name != "source"]
    values: dict[str, Any] = {"source": source}
    for key in raw:
        if key not in top:
            raise ConfigError(f"unknown key {key!r} in {fname} (expected one of {sorted(top)})")
        if key in _TABLES:
            base = BrokerConfig(sys_interval_ms=0) if key == "broker" else _TABLES[key]()
            values[key] = _table(base, raw[key], f"[{key}] of {fname}")
        elif key in _ARRAYS:
            items = raw[key]
            if not isinstance(items, list) or not items:
                raise ConfigError(f"{key!r} in {fname}: expected a non-empty [[{key}]] array")
            values[key] = tuple(_table(_ARRAYS[key](), item, f"[[{key}]] #{i + 1} of {fname}")
                                for i, item in enumerate(items))
        else:
            values[key] = _value(MqttSimConfig(), key, raw[key], f"{key!r} in {fname}")
    config = MqttSimConfig(**values)
    validate_config(config, fname)
    return config


def _table(base: Any, raw: object, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    names = [f.name for f in dataclasses.fields(base)]
    values: dict[str, Any] = {}
    for key in raw:
        if key not in names:
            raise ConfigError(f"unknown key {key!r} in {where} (expected one of {sorted(names)})")
        values[key] = _value(base, key, raw[key], f"{key!r} in {where}")
    try:
        return dataclasses.replace(base, **values)
    except (AssertionError, ValueError) as exc:
        raise ConfigError(f"{where}: invalid value ({exc})") from None


def _value(base: Any, key: str, value: Any, where: str) -> Any:
    """Coerce `value` to the type of `base.key`'s default; the error names `where`."""
    default = getattr(base, key)
    if isinstance(default, Dist):
        try:
            return Dist.parse(value, where)
        except DistError as exc:
            raise ConfigError(str(exc)) from None
    if isinstance(default, (bool, int, float, str)):
        ok, value = coerce_scalar(default, value)
    elif isinstance(default, tuple) and isinstance(value, list) and value and all(
            isinstance(v, str) for v in value):
        ok, value = True, tuple(value)  # a list of names (e.g. planted bugs)
    elif isinstance(default, tuple):
        ok = isinstance(value, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        value = tuple(float(v) for v in value) if ok else value
    else:
        ok = False
    if not ok:
        raise ConfigError(f"{where}: expected {type(default).__name__}, got {value!r}")
    return value


def validate_config(c: MqttSimConfig, fname: str = "scenario.toml") -> None:
    """Cross-field checks; each error names the key."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{fname}: {msg}")

    need(c.duration_ms > 0, f"duration_ms must be > 0, got {c.duration_ms}")
    need(0 <= c.warmup_ms <= c.heal_ms <= c.duration_ms,
         f"need 0 <= warmup_ms <= heal_ms <= duration_ms, got {c.warmup_ms}, {c.heal_ms}, "
         f"{c.duration_ms}")
    need(c.state_log in STATE_LOGS, f"state_log must be one of {list(STATE_LOGS)}, "
                                    f"got {c.state_log!r}")
    need(c.network.bandwidth_mb_s >= 0, "[network] bandwidth_mb_s must be >= 0")
    need(c.network.write_high_water_bytes >= 1, "[network] write_high_water_bytes must be >= 1")
    need(c.disk.group_commit_ms >= 0, "[disk] group_commit_ms must be >= 0")
    f = c.faults
    need(f.client_drop_targets in ("all", "publishers", "subscribers"),
         f"[faults] client_drop_targets must be all, publishers or subscribers, "
         f"got {f.client_drop_targets!r}")
    for name in ("broker_crash_rate_per_s", "client_drop_rate_per_s", "delay_spike_rate_per_s"):
        need(getattr(f, name) >= 0, f"[faults] {name} must be >= 0")
    for i, p in enumerate(c.publishers):
        _validate_publisher(p, c.broker, f"[[publishers]] #{i + 1}", need)
    for i, s in enumerate(c.subscribers):
        where = f"[[subscribers]] #{i + 1}"
        need(s.count >= 0 and s.qos in (0, 1, 2) and s.protocol in (MQTT_3_1_1, MQTT_5),
             f"{where}: count >= 0, qos in 0..2, protocol 4 or 5 required")
        need(s.expiry_s >= 1 or not s.persistent, f"{where}: expiry_s must be >= 1")
        try:
            validate_topic_filter(s.filter)
        except TopicError as exc:
            need(False, f"{where} filter {s.filter!r}: {exc}")


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


# ================================================================================ history


@dataclass(slots=True)
class PubRecord:
    """One application message of a publisher, as the publisher saw it (times in sim µs)."""

    publisher: int
    seq: int
    qos: int
    topic: str
    created_us: int
    first_sent_us: int = -1
    acked_us: int = -1  # PUBACK (QoS 1) or the first PUBREC (QoS 2): the broker owns it
    completed_us: int = -1  # PUBCOMP (QoS 2)
    sends: int = 0
    rejected: bool = False  # never queued: the publisher's local queue was full
    refused: bool = False  # PUBACK/PUBREC with a failure reason code


@dataclass(slots=True)
class Receipt:
    subscriber: int
    publisher: int
    seq: int
    qos: int
    dup: bool
    t_us: int


class History:
    """What clients observed, plus the fault log; every entry is also a trace line."""

    def __init__(self, trace: Trace, env: simpy.Environment) -> None:
        self.trace = trace
        self.env = env
        self.pubs: dict[tuple[int, int], PubRecord] = {}
        self.receipts: list[Receipt] = []
        self.sub_events: dict[int, list[tuple[int, str, bool]]] = {}  # sub -> (t, kind, present)
        self.crashes: list[int] = []
        self.faults: dict[str, int] = {"broker_crash": 0, "client_drop": 0, "delay_spike": 0}

    def emit(self, node: int, kind: str, **fields: Any) -> None:
        self.trace.emit(int(self.env.now), node, kind, **fields)

    def sub_event(self, sub: int, node: int, kind: str, present: bool = False) -> None:
        self.sub_events.setdefault(sub, []).append((int(self.env.now), kind, present))

    def receipt(self, node: int, r: Receipt) -> None:
        self.receipts.append(r)
        self.emit(node, "recv", p=r.publisher, seq=r.seq, qos=r.qos, dup=r.dup)


# ================================================================================ clients


class SimClient:
    """Connection management shared by publishers and subscribers: dial, CONNECT, reconnect."""

    def __init__(self, world: MqttWorld, node: int, name: str, protocol: int, persistent: bool,
                 expiry_s: int, rng: Any) -> None:
        self.world = world
        self.env = world.env
        self.node = node  # trace node id (1-based, unique per client)
        self.name = name
        self.protocol = protocol
        self.persistent = persistent
        self.expiry_s = expiry_s
        self.rng = rng
        self.conn: SimConn | None = None
        self.decoder: Decoder | None = None
        self.online = False  # CONNACK accepted on the current connection
        self.connects = 0

    def dial(self) -> None:
        assert self.conn is None
        self.connects += 1
        self.decoder = Decoder(version=self.protocol, max_packet_size=CLIENT_PACKET_MAX)
        self.conn = self.world.dial(self)
        props = Properties()
        if self.protocol == MQTT_5 and self.persistent:
            props = Properties.of((PropertyId.SESSION_EXPIRY_INTERVAL, self.expiry_s))
        self.send(Connect(self.name, protocol_version=self.protocol,
                          clean_start=not self.persistent, properties=props))
        self.world.history.emit(self.node, "dial", attempt=self.connects)

    def send(self, packet: Any) -> None:
        if self.conn is not None:
            self.conn.up.send(encode(packet, self.protocol))

    def arrive(self, conn: SimConn, item: bytes | None) -> None:
        if conn is not self.conn:
            return
        if item is FIN:
            self.closed(conn)
            return
        assert self.decoder is not None
        for packet in self.decoder.feed(item):
            if self.conn is not conn:
                return
            self.on_packet(packet)

    def closed(self, conn: SimConn) -> None:
        """The connection is gone (FIN, reset, refused): reconnect after a delay."""
        if conn is not self.conn:
            return
        self.conn = None
        self.online = False
        self.on_closed()
        delay = self.world.config.faults.client_reconnect.sample_us(self.rng)
        self.world.net.later(max(1, delay), self._redial)

    def _redial(self) -> None:
        if self.conn is None:
            self.dial()

    def on_packet(self, packet: Any) -> None:
        raise NotImplementedError

    def on_closed(self) -> None:
        raise NotImplementedError


class _Out:
    """A publisher's message on its way: packet id and stage (0 sent, 1 PUBREC seen)."""

    __slots__ = ("rec", "payload", "pid", "stage")

    def __init__(self, rec: PubRecord, payload: bytes) -> None:
        self.rec = rec
        self.payload = payload
        self.pid = 0
        self.stage = 0


class Publisher(SimClient):
    def __init__(self, world: MqttWorld, node: int, index: int, spec: PublisherSpec,
                 rng: Any) -> None:
        super().__init__(world, node, f"pub{index}", spec.protocol, spec.persistent,
                         spec.expiry_s, rng)
        self.index = index
        self.spec = spec
        self.next_seq = 0
        self.next_pid = 1
        self.queue: deque[_Out] = deque()
        self.outstanding: dict[int, _Out] = {}  # packet id -> message, in send order

    def run(self) -> Generator[simpy.Event, Any, None]:
        cfg = self.world.config
        self.dial()
        interval = max(1, round(1e6 / self.spec.rate_per_s))
        start = round(cfg.warmup_ms * US_PER_MS) + self.rng.randrange(interval)
        yield self.env.timeout(max(0, start - int(self.env.now)))
        heal = round(cfg.heal_ms * US_PER_MS)
        while self.env.now < heal:
            self._new_message()
            yield self.env.timeout(interval)

    def _new_message(self) -> None:
        spec, seq = self.spec, self.next_seq
        self.next_seq += 1
        topic = spec.topic.format(p=self.index, k=seq % spec.topics)
        rec = PubRecord(self.index, seq, spec.qos, topic, int(self.env.now))
        history = self.world.history
        history.pubs[(self.index, seq)] = rec
        if len(self.queue) >= spec.queue_max:
            rec.rejected = True
            history.emit(self.node, "reject", seq=seq)
            return
        header = f"{self.index}:{seq}:".encode()
        self.queue.append(_Out(rec, header.ljust(spec.payload_bytes, b".")))
        self._pump()

    def _pump(self) -> None:
        spec = self.spec
        while self.online and self.queue and (spec.qos == 0
                                              or len(self.outstanding) < spec.inflight_max):
            out = self.queue.popleft()
            if spec.qos:
                out.pid = self._allocate_pid()
                self.outstanding[out.pid] = out
            self._send_publish(out, dup=False)

    def _allocate_pid(self) -> int:
        pid, self.next_pid = next_packet_id(self.outstanding, self.next_pid)
        return pid

    def _send_publish(self, out: _Out, dup: bool) -> None:
        rec = out.rec
        now = int(self.env.now)
        if rec.first_sent_us < 0:
            rec.first_sent_us = now
        rec.sends += 1
        self.send(Publish(rec.topic, out.payload, rec.qos, dup=dup,
                          packet_id=out.pid if rec.qos else None))
        self.world.history.emit(self.node, "pub", seq=rec.seq, qos=rec.qos, pid=out.pid, dup=dup)

    def on_packet(self, packet: Any) -> None:
        kind = type(packet)
        if kind is Connack:
            self._on_connack(packet)
        elif kind is Puback:
            self._on_puback(packet)
        elif kind is Pubrec:
            self._on_pubrec(packet)
        elif kind is Pubcomp:
            self._on_pubcomp(packet)
        else:
            self.world.history.emit(self.node, "unexpected", packet=kind.__name__)

    def _on_connack(self, p: Connack) -> None:
        self.world.history.emit(self.node, "connack", present=p.session_present,
                                code=p.reason_code)
        if p.reason_code:
            return  # refused: the broker closes; we reconnect
        self.online = True
        for out in list(self.outstanding.values()):  # MQTT-4.4.0-1: re-send, same ids
            if out.stage == 1:
                self.send(Pubrel(out.pid))
            else:
                self._send_publish(out, dup=True)
        self._pump()

    def _on_puback(self, p: Puback) -> None:
        out = self.outstanding.get(p.packet_id)
        if out is None or out.rec.qos != 1:
            return
        del self.outstanding[p.packet_id]
        self._owned(out, p.reason_code)
        self._pump()

    def _on_pubrec(self, p: Pubrec) -> None:
        out = self.outstanding.get(p.packet_id)
        if out is None or out.rec.qos != 2:
            return
        if out.stage == 0:
            self._owned(out, p.reason_code)
            if p.reason_code >= 0x80:
                del self.outstanding[p.packet_id]
                self._pump()
                return
            out.stage = 1
        self.send(Pubrel(p.packet_id))

    def _on_pubcomp(self, p: Pubcomp) -> None:
        out = self.outstanding.get(p.packet_id)
        if out is None or out.stage != 1:
            return
        del self.outstanding[p.packet_id]
        out.rec.completed_us = int(self.env.now)
        self.world.history.emit(self.node, "comp", seq=out.rec.seq)
        self._pump()

    def _owned(self, out: _Out, reason: int) -> None:
        rec = out.rec
        if reason >= 0x80:
            rec.refused = True
            self.world.history.emit(self.node, "refused", seq=rec.seq, code=reason)
            return
        rec.acked_us = int(self.env.now)
        self.world.history.emit(self.node, "ack", seq=rec.seq)

    def on_closed(self) -> None:
        self.world.history.emit(self.node, "closed", outstanding=len(self.outstanding),
                                queued=len(self.queue))


class Subscriber(SimClient):
    def __init__(self, world: MqttWorld, node: int, index: int, spec: SubscriberSpec,
                 rng: Any) -> None:
        super().__init__(world, node, f"sub{index}", spec.protocol, spec.persistent,
                         spec.expiry_s, rng)
        self.index = index
        self.spec = spec
        self.awaiting_rel: dict[int, str] = {}  # QoS 2 id -> message delivered, awaiting PUBREL
        self.sub_pid = 0

    def run(self) -> Generator[simpy.Event, Any, None]:
        stagger = round(self.world.config.warmup_ms * US_PER_MS / 2)
        yield self.env.timeout(self.rng.randrange(stagger + 1))
        self.dial()

    def on_packet(self, packet: Any) -> None:
        kind = type(packet)
        if kind is Publish:
            self._on_publish(packet)
        elif kind is Pubrel:
            self.awaiting_rel.pop(packet.packet_id, None)
            self.send(Pubcomp(packet.packet_id))
        elif kind is Connack:
            self._on_connack(packet)
        elif kind is Suback:
            self._on_suback(packet)
        else:
            self.world.history.emit(self.node, "unexpected", packet=kind.__name__)

    def _on_connack(self, p: Connack) -> None:
        history = self.world.history
        history.emit(self.node, "connack", present=p.session_present, code=p.reason_code)
        if p.reason_code:
            return
        self.online = True
        history.sub_event(self.index, self.node, "connack", p.session_present)
        if not p.session_present:  # a new session: our QoS 2 state is void; subscribe again
            self.awaiting_rel.clear()
            self.sub_pid = self.sub_pid % 65535 + 1
            self.send(Subscribe(self.sub_pid, (Subscription(self.spec.filter, self.spec.qos),)))

    def _on_suback(self, p: Suback) -> None:
        ok = all(code < 0x80 for code in p.reason_codes)
        self.world.history.emit(self.node, "suback", ok=ok, codes=list(p.reason_codes))
        if ok:
            self.world.history.sub_event(self.index, self.node, "subscribed")

    def _on_publish(self, p: Publish) -> None:
        qos = p.qos
        if qos == 2:
            pid = p.packet_id
            assert pid is not None
            if pid in self.awaiting_rel:  # already delivered under this id (MQTT-4.3.3)
                self.world.history.emit(self.node, "repeat", pid=pid, dup=p.dup,
                                        held=self.awaiting_rel[pid], payload=p.payload[:16].decode(
                                            "ascii", "replace"))
                self.send(Pubrec(pid))
                return
            self.awaiting_rel[pid] = p.payload[:16].decode("ascii", "replace")
        parts = p.payload.split(b":", 2)
        assert len(parts) == 3, p.payload[:40]
        receipt = Receipt(self.index, int(parts[0]), int(parts[1]), qos, p.dup,
                          int(self.env.now))
        self.world.history.receipt(self.node, receipt)
        if qos == 1:
            self.send(Puback(p.packet_id))  # type: ignore[arg-type]
        elif qos == 2:
            self.send(Pubrec(p.packet_id))  # type: ignore[arg-type]

    def on_closed(self) -> None:
        self.world.history.sub_event(self.index, self.node, "closed")
        self.world.history.emit(self.node, "closed")


# ================================================================================ the world


class MqttWorld:
    """One simulated run: `MqttWorld(config).run() -> result dict`."""

    def __init__(self, config: MqttSimConfig, trace_out: IO[str] | None = None,
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
        self.recovered_records = 0
        engine = "file" if config.state_log == "journal" else "memory"
        self.host = SimHost(
            self.env, sim_node_spec(mqtt=config.broker, default_engine=engine),
            StorageSettings(engine=engine, group_commit_ms=config.disk.group_commit_ms),
            self.fs, seeds.derive("node"), on_up=self._broker_up,
            write_high_water=config.network.write_high_water_bytes,
            on_congested=lambda conn, backlog: self.history.emit(
                conn.client.node, "congested", backlog=backlog))
        self.subscribers: list[Subscriber] = []
        self.publishers: list[Publisher] = []
        node = 1
        for spec in config.subscribers:
            for _ in range(spec.count):
                index = len(self.subscribers)
                rng = seeds.derive(f"client-sub{index}")
                self.subscribers.append(Subscriber(self, node, index, spec, rng))
                node += 1
        for pspec in config.publishers:
            for _ in range(pspec.count):
                index = len(self.publishers)
                rng = seeds.derive(f"client-pub{index}")
                self.publishers.append(Publisher(self, node, index, pspec, rng))
                node += 1
        self.board = Switchboard(self.net, self.host)
        self.spike_active = False

    def clock_ms(self) -> int:
        """The broker's and the journal's clock: sim time in whole milliseconds."""
        return int(self.env.now) // US_PER_MS

    # ---------------------------------------------------------------------------- connections

    def _broker_up(self, core: NodeCore) -> None:
        broker = core.mqtt
        self.recovered_records += broker.recovered_records
        self.history.emit(0, "broker-up", gen=self.host.gen, records=broker.recovered_records,
                          sessions=len(broker.sessions))

    def dial(self, client: SimClient) -> SimConn:
        return self.board.dial(client, Proto.MQTT)

    def reset(self, conn: SimConn, by_client: bool) -> None:
        self.board.reset(conn, by_client)

    # ---------------------------------------------------------------------------- faults

    def _fault_times(self, at_ms: tuple[float, ...], rate: float) -> list[int]:
        """Listed times plus Poisson arrivals at `rate`, all within [warmup, heal), in µs."""
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
                (self._fault_times(f.delay_spike_at_ms, f.delay_spike_rate_per_s),
                 self._spike)]
        for times, action in plan:
            for t in times:
                self.net.later(max(0, t - int(self.env.now)), action)

    def _crash_broker(self) -> None:
        if not self.host.crash():
            return
        self.history.crashes.append(int(self.env.now))
        self.history.faults["broker_crash"] += 1
        downtime = self.config.faults.broker_restart.sample_us(self.fault_rng)
        self.history.emit(0, "crash", downtime_us=downtime)
        self.net.later(max(1, downtime), lambda: self.env.process(self.host.start()))

    def _drop_client(self) -> None:
        targets = self.config.faults.client_drop_targets
        pool: list[SimClient] = []
        if targets in ("all", "subscribers"):
            pool.extend(self.subscribers)
        if targets in ("all", "publishers"):
            pool.extend(self.publishers)
        pool = [c for c in pool if c.conn is not None and c.online]
        if not pool:
            return
        client = pool[self.fault_rng.randrange(len(pool))]
        self.history.faults["client_drop"] += 1
        self.history.emit(client.node, "drop")
        assert client.conn is not None
        self.reset(client.conn, by_client=True)

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

    # ---------------------------------------------------------------------------- run

    def run(self) -> dict[str, Any]:
        cfg = self.config
        env = self.env
        env.process(self.host.start())
        for sub in self.subscribers:
            env.process(sub.run())
        for pub in self.publishers:
            env.process(pub.run())
        self._schedule_faults()
        outcome, detail = "ok", ""
        try:
            env.run(until=round(cfg.duration_ms * US_PER_MS))
        except Exception as exc:  # an exception in the broker core or this shell
            outcome, detail = "crash", crash_detail(exc)
        report = MqttChecker(self).check()
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
            "recovered_records": self.recovered_records,
            "net": dict(self.net.stats),
            "fs_crashes": self.fs.stats.crashes,
            "fs_syncs": self.fs.stats.syncs,
            "trace_events": self.trace.count,
            "trace_hash": self.trace.hexdigest(),
            "reproduce": reproduce_line(cfg),
        })
        return result


# ================================================================================ checker


class MqttChecker:
    """The oracles, over `world.history` (client-observed events and the fault log) only."""

    def __init__(self, world: MqttWorld) -> None:
        self.world = world
        self.history = world.history
        self.config = world.config
        self.subs: list[Subscriber] = world.subscribers
        self._match_cache: dict[tuple[str, str], bool] = {}

    def check(self) -> dict[str, Any]:
        h = self.history
        pubs = [r for r in h.pubs.values() if not r.rejected]
        firsts, dup1, dup2_crash, dup2_clean = self._receipts()
        lost, required, exempt = self._loss(firsts)
        order = self._order() if not h.crashes else []
        latencies = sorted(t - h.pubs[(p, seq)].first_sent_us
                           for (_s, p, seq), t in firsts.items())
        unfinished = sum(len(p.outstanding) + len(p.queue) for p in self.world.publishers)
        report: dict[str, Any] = {
            "published": len(pubs),
            "rejected": sum(1 for r in h.pubs.values() if r.rejected),
            "acked": sum(1 for r in pubs if r.acked_us >= 0),
            "refused": sum(1 for r in pubs if r.refused),
            "delivered": len(firsts),
            "receipts": len(h.receipts),
            "duplicates_qos1": dup1,
            "duplicates_qos2_after_crash": dup2_crash,
            "duplicates_qos2_without_crash": dup2_clean,
            "required": required,
            "exempt_expired": exempt,
            "lost": len(lost),
            "lost_ids": [list(key) for key in lost[:LOST_IDS_MAX]],
            "order_violations": len(order),
            "unfinished_at_end": unfinished,
            "latency_p50_ms": _percentile_ms(latencies, 0.50),
            "latency_p99_ms": _percentile_ms(latencies, 0.99),
        }
        report["outcome"], report["detail"] = self._verdict(lost, dup2_clean, order, unfinished)
        return report

    def _verdict(self, lost: list[tuple[int, int, int]], dup2_clean: int, order: list[str],
                 unfinished: int) -> tuple[str, str]:
        if lost:
            s, p, seq = lost[0]
            return "safety", (f"{len(lost)} acknowledged message(s) never reached a "
                                   f"persistent subscriber (first: pub{p} seq {seq} -> sub{s})")
        if dup2_clean:
            return "safety", (f"{dup2_clean} QoS 2 duplicate(s) with no broker crash "
                                   "in between")
        if order:
            return "safety", f"{len(order)} order violation(s) (first: {order[0]})"
        if unfinished:
            return "liveness", (f"{unfinished} message(s) still unacknowledged or unsent at the "
                                "end of the drain period")
        return "ok", ""

    def _receipts(self) -> tuple[dict[tuple[int, int, int], int], int, int, int]:
        """First receipt time per (sub, pub, seq), and the duplicate counts."""
        firsts: dict[tuple[int, int, int], int] = {}
        dup1 = dup2_crash = dup2_clean = 0
        crashes = self.history.crashes
        for r in self.history.receipts:
            key = (r.subscriber, r.publisher, r.seq)
            if key not in firsts:
                firsts[key] = r.t_us
                continue
            if r.qos < 2:
                dup1 += 1
                continue
            sent = self.history.pubs[(r.publisher, r.seq)].first_sent_us
            if any(sent <= c <= r.t_us for c in crashes):
                dup2_crash += 1
            else:
                dup2_clean += 1
        return firsts, dup1, dup2_crash, dup2_clean

    def _windows(self, sub: Subscriber) -> list[tuple[int, int, bool]]:
        """(start, end, exempt) spans in which `sub`'s subscription was in place.

        A span starts at a SUBACK. It ends when a CONNACK says the session is gone: at the first
        broker crash after the last proof that the session existed (a SUBACK or a CONNACK with
        session present), or, with no crash in between, at the last close. `exempt`: the
        session may simply have expired (v5, offline longer than its expiry)."""
        out: list[tuple[int, int, bool]] = []
        start = last_closed = last_alive = -1
        limit_us = sub.spec.expiry_s * 1_000_000 if sub.protocol == MQTT_5 else None
        crashes = self.history.crashes
        for t, kind, present in self.history.sub_events.get(sub.index, []):
            if kind == "closed":
                last_closed = t
            elif kind == "connack" and present:
                last_alive = t
            elif kind == "connack" and start >= 0:
                crash = next((c for c in crashes if last_alive <= c <= t), None)
                end = crash if crash is not None else max(last_closed, start)
                exempt = crash is None and limit_us is not None and t - last_closed > limit_us
                out.append((start, end, exempt))
                start = -1
            elif kind == "subscribed":
                last_alive = t
                if start < 0:
                    start = t
        if start >= 0:
            out.append((start, 1 << 62, False))
        return out

    def _loss(self, firsts: dict[tuple[int, int, int], int]
              ) -> tuple[list[tuple[int, int, int]], int, int]:
        lost: list[tuple[int, int, int]] = []
        required = exempt = 0
        acked = [r for r in self.history.pubs.values() if r.qos >= 1 and r.acked_us >= 0]
        for sub in self.subs:
            if not sub.persistent or sub.spec.qos == 0:
                continue
            windows = self._windows(sub)
            for rec in acked:
                if not self._matches(sub.spec.filter, rec.topic):
                    continue
                window = next((w for w in windows
                               if w[0] < rec.first_sent_us and rec.acked_us < w[1]), None)
                if window is None:
                    continue
                if window[2]:
                    exempt += 1
                    continue
                required += 1
                if (sub.index, rec.publisher, rec.seq) not in firsts:
                    lost.append((sub.index, rec.publisher, rec.seq))
        return lost, required, exempt

    def _order(self) -> list[str]:
        """First receipts per (subscriber, publisher) at QoS >= 1 must come in seq order."""
        last: dict[tuple[int, int], int] = {}
        seen: set[tuple[int, int, int]] = set()
        problems: list[str] = []
        for r in self.history.receipts:
            key = (r.subscriber, r.publisher, r.seq)
            if r.qos == 0 or key in seen:
                continue
            seen.add(key)
            pair = (r.subscriber, r.publisher)
            prev = last.get(pair, -1)
            if r.seq < prev:
                problems.append(f"sub{r.subscriber} got pub{r.publisher} seq {r.seq} after "
                                f"seq {prev}")
            last[pair] = max(prev, r.seq)
        return problems

    def _matches(self, topic_filter: str, topic: str) -> bool:
        key = (topic_filter, topic)
        hit = self._match_cache.get(key)
        if hit is None:
            hit = self._match_cache[key] = matches(topic_filter, topic)
        return hit


def _percentile_ms(sorted_us: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted µs values, in ms (0.0 when empty)."""
    if not sorted_us:
        return 0.0
    index = min(len(sorted_us) - 1, max(0, math.ceil(q * len(sorted_us)) - 1))
    return round(sorted_us[index] / US_PER_MS, 3)


# ================================================================================ API and CLI


def run(config: MqttSimConfig, trace_out: IO[str] | None = None,
        keep_trace: bool = False) -> dict[str, Any]:
    """Simulate `config` once; returns the summary (outcome, counts, latency, trace_hash, ...)."""
    return MqttWorld(config, trace_out=trace_out, keep_trace=keep_trace).run()


def reproduce_line(config: MqttSimConfig, module: str = "model.mqtt") -> str:
    """The command that replays `config` (`module`: the simulator's, also used by model.kafka)."""
    source = config.source
    if source == "<memory>":
        return f"(in-memory config) seed {config.seed}"
    path = Path(source)
    if path.is_absolute() and path.is_relative_to(ROOT):
        source = path.relative_to(ROOT).as_posix()
    return f"python -m {module} {source} --seed {config.seed}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.mqtt",
                                description="Simulate the MQTT broker with clients and faults")
    p.add_argument("file", help="scenario TOML (e.g. scenarios/mqtt-sim.toml)")
    p.add_argument("--seed", type=int, help="override the file's seed")
    p.add_argument("--trace", metavar="OUT.jsonl", help="write the JSONL trace here")
    p.add_argument("--state-log", choices=STATE_LOGS, help="override state_log")
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
    if args.state_log is not None:
        config = dataclasses.replace(config, state_log=args.state_log)
    if args.seeds:
        from model.sweep import sweep_worlds_cli

        return sweep_worlds_cli(run, config, args.seeds, args.jobs)
    if args.seed is not None:
        config = dataclasses.replace(config, seed=args.seed)
    out = Path(args.trace).open("w") if args.trace else None
    try:
        result = run(config, trace_out=out)
    finally:
        if out is not None:
            out.close()
    if args.state_log is not None:
        result["reproduce"] += f" --state-log {args.state_log}"
    print(format_summary(result))
    return OUTCOME_CODES[result["outcome"]]


def format_summary(result: dict[str, Any]) -> str:
    keys = ["published", "rejected", "acked", "delivered", "duplicates_qos1",
            "duplicates_qos2_after_crash", "duplicates_qos2_without_crash", "required", "lost",
            "order_violations", "unfinished_at_end", "latency_p50_ms", "latency_p99_ms"]
    lines = [f"scenario: {result['scenario']} seed {result['seed']}, "
             f"sim {result['sim_ms']} ms",
             "counts: " + ", ".join(f"{k}={result[k]}" for k in keys),
             "faults: " + ", ".join(f"{k}={v}" for k, v in result["faults"].items())
             + f", recovered_records={result['recovered_records']}"]
    if result["detail"]:
        lines.append(f"detail: {result['detail']}")
    lines += [f"trace-hash: {result['trace_hash']}", f"outcome: {result['outcome']}",
              f"reproduce: {result['reproduce']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
