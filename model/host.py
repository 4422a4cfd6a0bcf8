"""`SimHost`: one simulated machine running a `NodeCore` (real/server/node.py) on SimPy time.

The SimPy twin of the asyncio host (real/node/host.py). The node is the product's own composed
object; only its surroundings are simulated:

- **Devices.** One `SimFileSystem` per machine holds the meta Raft log (`RaftLog`, the real
  on-disk format) and the file journals of every shard (engines built by the same
  `engine_factories` as the real node). A crash is a power loss: `fs.crash()` keeps what was
  fdatasynced (plus a random prefix of the rest), and the restart builds a new `NodeCore` over
  the same filesystem, which recovers from what the files hold.
- **Time.** Every filesystem call charges simulated time (`fs.take_elapsed_us()`); the host waits
  it out after each input before it releases the node's output, as the real event loop is
  blocked by a synchronous write. The node's clocks (`clock`, `wall_clock`) are simulated time in
  whole milliseconds.
- **Background fsync.** A `SyncRequest` does not block the node: the host samples the device's
  fdatasync latency, and only when it has passed runs `job.sync()` (so the data becomes durable
  then, not before) and hands the job back (`core.synced`). A crash in between loses the
  unsynced data and the completion, as a power cut during an fdatasync does.
- **Connections.** `SimConn`s (model/devices/conn.py) carry client bytes; their arrivals become
  `open`/`receive`/`closed` inputs. Output goes back down the connection's pipe; a connection
  whose backlog passes the write high-water mark is reported congested, and writable again once
  its backlog drains to half of it (as asyncio's pause/resume_writing).
- **Shared object store.** With `store` (a `SimObjectStore` every machine shares, as the nodes
  of a real cluster share one S3 bucket), S3 shards are opened over it; its request time is
  charged to the machine that made the request, like the filesystem's.
- **Peers.** Raft messages go to `send_raft(msg)` (the world's network) and arrive with
  `deliver(msg)`.

One SimPy process per incarnation takes everything queued in its inbox, in order, and feeds it
to the node in one `core.batch()` (one Raft fsync per burst), waits for the filesystem time,
then carries out `core.ready()`. It wakes itself at `core.next_deadline_ms()` on the machine's
`LocalClock` (or at every Raft tick with tick skipping off); it can be paused and resumed
(SIGSTOP semantics: inputs queue up, bounded by `inbox_max` for Raft messages and proposals).
A crash bumps the incarnation, so the old process (and late sync completions) are ignored.
Node wake-ups are scheduled at priority `2 + node_id`, so events at one instant run as: network
arrivals, client and nemesis actions first, then node wake-ups in node-id order.
"""

from __future__ import annotations

import dataclasses
import random
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import simpy
from simpy.events import Event, EventPriority

from model.devices.conn import FIN, SimConn
from model.devices.fs import SimFileSystem
from model.sim.clock import LocalClock
from real.kafka.bridge import BridgeRule
from real.kafka.broker import KafkaConfig
from real.mqtt.broker import BrokerConfig
from real.node.config import NodeConfig, node_spec
from real.raft.types import Message
from real.server.node import NodeCore, NodeEnv, NodeSpec, Proto, SyncRequest
from real.server.peermsg import PeerMessage
from real.server.raftlog import RaftLog
from real.server.replica import RaftObserver
from real.server.storage import StorageSettings, engine_factories

US_PER_MS = 1000
RAFT_DIR = "meta"
SHARD_DIR = "shards"


def sim_node_spec(node_id: int = 1, *, voters: tuple[int, ...] = (),
                  mqtt: BrokerConfig | None = None, kafka: KafkaConfig | None = None,
                  bridges: tuple[BridgeRule, ...] = (),
                  default_engine: str = "file", **config: Any) -> NodeSpec:
    """A node spec for the simulator: `NodeConfig`'s defaults (the one source of them, as for
    `twinmq serve`) with `config` overrides, then the scenario's broker configs if given."""
    cfg = NodeConfig(node_id=node_id, storage_engine=default_engine, **config)
    spec = node_spec(cfg, kafka_port=9092, register_addr=f"sim-node-{node_id}:0")
    voters = voters or (node_id,)
    cluster = spec.mqtt_cluster
    if cluster is not None:  # every node holds every message: one replica per node
        cluster = dataclasses.replace(cluster, replication=len(voters))
    return dataclasses.replace(
        spec, voters=voters, bridges=bridges, mqtt_cluster=cluster,
        mqtt=dataclasses.replace(mqtt, node_id=node_id) if mqtt is not None else spec.mqtt,
        kafka=dataclasses.replace(kafka, node_id=node_id) if kafka is not None else spec.kafka)


@dataclass(slots=True)
class HostStats:
    starts: int = 0
    crashes: int = 0
    inputs: int = 0
    syncs: int = 0
    lost_syncs: int = 0
    inbox_rejected: int = 0
    """Raft messages and proposals refused because the inbox was full (`inbox_max`)."""
    dropped_dead: int = 0
    """Raft messages and proposals that arrived while the machine was down."""


class SimHost:
    def __init__(self, env: simpy.Environment, spec: NodeSpec, storage: StorageSettings,
                 fs: SimFileSystem, rng: random.Random, *,
                 send_raft: Callable[[Message | PeerMessage], None] | None = None,
                 log: Callable[[str], None] | None = None,
                 on_up: Callable[[NodeCore], None] | None = None,
                 write_high_water: int = 1 << 20,
                 check_invariants: bool = True,
                 filter_input: Callable[[SimConn, bytes], bytes] | None = None,
                 on_congested: Callable[[SimConn, int], None] | None = None,
                 observer: RaftObserver | None = None,
                 replication_observer: Any = None,
                 clock: LocalClock | None = None,
                 inbox_max: int = 0,
                 tick_skipping: bool = True,
                 store: Any = None) -> None:
        self.env = env
        self.spec = spec
        self.id = spec.node_id
        self.storage = storage
        self.fs = fs
        self.store = store
        self.rng = rng
        self.send_raft = send_raft
        self.log = log or (lambda _line: None)
        self.on_up = on_up
        self.write_high_water = write_high_water
        self.check_invariants = check_invariants
        self.filter_input = filter_input
        self.on_congested = on_congested
        self.observer = observer
        self.replication_observer = replication_observer
        self.clock = clock or LocalClock(0.0)
        self.inbox_max = inbox_max
        self.tick_skipping = tick_skipping
        self.priority = EventPriority(2 + spec.node_id)
        self.gen = 0
        self.up = False
        self.paused = False
        self._resume: Event | None = None
        self.core: NodeCore | None = None
        self.conns: dict[int, SimConn] = {}
        self.inbox: deque[tuple[str, Any, Any]] = deque()
        self._wake: Event | None = None
        self._ticked_ms = -1
        self.stats = HostStats()

    # ---- clocks --------------------------------------------------------------------------------

    def clock_ms(self) -> int:
        """The machine's monotonic clock (local milliseconds: drift and skew apply)."""
        return self.clock.now_ms(int(self.env.now))

    def set_skew(self, skew_ppm: float) -> None:
        """Change the clock's rate (a nemesis fault); a sleeping node re-arms its timer."""
        self.clock.set_skew(int(self.env.now), skew_ppm)
        self._kick()

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Generator[Event, Any, None]:
        """Build the node from what the devices hold (recovery), then serve. A SimPy process."""
        assert not self.up, f"node {self.id} started twice"
        self.gen += 1
        gen = self.gen
        fs = self.fs
        node_env = NodeEnv(
            raft_storage=RaftLog(fs, RAFT_DIR),
            engines=engine_factories(self.storage, self.clock_ms, fs=lambda: fs,
                                     store=(lambda: self.store) if self.store else None,
                                     kinds=("memory", "file", "s3") if self.store
                                     else ("memory", "file")),
            clock=self.clock_ms, wall_clock=self.clock_ms,
            rng=random.Random(self.rng.getrandbits(64)),  # noqa: S311 - simulation
            log=self.log, observer=self.observer,
            replication_observer=self.replication_observer)
        core = NodeCore(self.spec, node_env)
        elapsed = self._take_elapsed_us()
        if elapsed:
            yield self.env.timeout(elapsed)
        if self.gen != gen:
            return  # crashed while recovering
        self.core = core
        self.up = True
        self.paused = False
        self.stats.starts += 1
        self._carry_out(gen)
        if self.on_up is not None:
            self.on_up(core)
        yield from self._serve(gen)

    def crash(self, *, power_loss: bool = True) -> bool:
        """The process stops and every connection resets; with `power_loss` (the default) the
        machine loses power too, so unsynced file data is lost (else the OS keeps what was
        written). Returns False if the machine was down already."""
        if not self.up:
            return False
        self.up = False
        self.paused = False
        self._resume = None
        self.gen += 1
        self.core = None
        opening = [who for kind, who, _ in self.inbox if kind == "open"]
        self.inbox.clear()
        if power_loss:
            self.fs.crash()
        self.fs.take_elapsed_us()
        self.stats.crashes += 1
        conns, self.conns = list(self.conns.values()) + opening, {}
        for conn in conns:
            if not conn.reset:
                conn.reset_by_server()
        self._kick()
        return True

    # ---- inputs (from the world) ---------------------------------------------------------------

    def accepting(self, proto: Proto) -> bool:
        return self.up and self.core is not None and self.core.accepting(proto)

    def accept(self, conn: SimConn) -> None:
        """A connection's open arrived (the world checked `accepting`)."""
        conn.server_gen = self.gen
        self._push("open", conn, None)

    def arrive(self, conn: SimConn, item: bytes | None) -> None:
        """Bytes (or FIN) from the client side of `conn`."""
        if self.up and conn.server_gen == self.gen:
            self._push("data" if item is not FIN else "closed", conn, item)

    def peer_reset(self, conn: SimConn) -> None:
        if self.up and conn.server_gen == self.gen:
            self._push("closed", conn, None)

    def deliver(self, msg: Message | PeerMessage) -> bool:
        """A Raft message from a peer; refused (False, counted) while the machine is down or its
        inbox is full."""
        return self._bounded("raft", msg, None)

    def peer_gone(self, node_id: int) -> bool:
        """Peer `node_id` refused this node's connection (it is down); False while this node is
        down itself."""
        return self._bounded("gone", node_id, None)

    def propose(self, data: bytes, done: Callable[[Any], None]) -> bool:
        """A meta proposal from a client of this node (`done(result | exception)` once it applied
        or failed); refused like a Raft message."""
        return self._bounded("propose", data, done)

    def member_change(self, kind: str, node_id: int, addr: str,
                      done: Callable[[Any], None]) -> bool:
        """Ask this node (the meta leader, else `done` gets a refusal naming it) to add
        (`kind` "add") or remove meta member `node_id`; refused like a Raft message."""
        return self._bounded("member", (kind, node_id, addr), done)

    def campaign(self) -> None:
        """Start a meta election at the node's next turn."""
        if self.up:
            self._push("campaign", None, None)

    def pause(self) -> None:
        """Stop the process (SIGSTOP): inputs queue up, no timer runs; its clock keeps going."""
        assert self.up and not self.paused, self.id
        self.paused = True

    def resume(self) -> None:
        if not self.up or not self.paused:
            return
        self.paused = False
        ev, self._resume = self._resume, None
        if ev is not None and not ev.triggered:
            ev._ok = True
            ev._value = None
            self.env.schedule(ev, self.priority, 0)

    def _bounded(self, kind: str, who: Any, data: Any) -> bool:
        if not self.up:
            self.stats.dropped_dead += 1
            return False
        if self.inbox_max and len(self.inbox) >= self.inbox_max:
            self.stats.inbox_rejected += 1
            return False
        self._push(kind, who, data)
        return True

    def _push(self, kind: str, who: Any, data: Any) -> None:
        self.inbox.append((kind, who, data))
        self._kick()

    def _kick(self) -> None:
        ev = self._wake
        if ev is not None and not ev.triggered:
            ev._ok = True
            ev._value = None
            self.env.schedule(ev, self.priority, 0)

    # ---- the process ---------------------------------------------------------------------------

    def _serve(self, gen: int) -> Generator[Event, Any, None]:
        env = self.env
        while self.gen == gen:
            if self.paused:
                self._resume = Event(env)
                yield self._resume
                continue
            if self.inbox:
                core = self.core
                assert core is not None
                with core.batch():  # everything queued now, settled once (one Raft fsync)
                    while self.inbox:
                        kind, who, data = self.inbox.popleft()
                        self._input(kind, who, data)
                if self.check_invariants:
                    core.invariants()
            else:
                core = self.core
                assert core is not None
                now_ms = self.clock_ms()
                if self._due_ms(core) <= now_ms and self._ticked_ms != now_ms:
                    self._ticked_ms = now_ms  # once per millisecond: the node's clock unit
                    core.tick()
                    self.stats.inputs += 1
                else:
                    yield from self._sleep(gen)
                    continue
            elapsed = self._take_elapsed_us()
            if elapsed:
                yield env.timeout(elapsed)
            if self.gen != gen:
                return
            self._carry_out(gen)

    def _take_elapsed_us(self) -> int:
        """The device time the last input spent: the filesystem's and the shared store's."""
        elapsed = self.fs.take_elapsed_us()
        if self.store is not None:
            elapsed += self.store.take_elapsed_us()
        return int(elapsed)

    def _due_ms(self, core: NodeCore) -> int:
        """When to tick next: the node's deadline, or (without tick skipping) every Raft tick
        boundary, which must give the same trace."""
        due = core.next_deadline_ms()
        return due if self.tick_skipping else min(due, core.next_tick_ms())

    def _sleep(self, gen: int) -> Generator[Event, Any, None]:
        core = self.core
        assert core is not None
        env = self.env
        wake = Event(env)
        self._wake = wake
        due_ms = self._due_ms(core)
        if self._ticked_ms == self.clock_ms():
            due_ms = max(due_ms, self._ticked_ms + 1)
        delay = max(1, self.clock.when_us(due_ms) - int(env.now))
        timer = env.timeout(delay)
        timer.callbacks.append(lambda _e: self._kick() if self._wake is wake else None)
        yield wake
        if self._wake is wake:
            self._wake = None

    def _input(self, kind: str, who: Any, data: Any) -> None:
        core = self.core
        assert core is not None
        self.stats.inputs += 1
        if kind == "raft":
            core.step(who)
        elif kind == "propose":
            core.propose(who, data)
        elif kind == "campaign":
            core.campaign()
        elif kind == "member":
            change, node_id, addr = who
            if change == "add":
                core.add_member(node_id, addr, data)
            else:
                core.remove_member(node_id, data)
        elif kind == "gone":
            core.peer_gone(who)
        elif kind == "open":
            if who.reset:
                return
            self.conns[who.id] = who
            core.open(who.id, who.proto, peer=who.peer, listener="tcp", loopback=True)
        elif kind == "data":
            if who.id in self.conns:
                if self.filter_input is not None:
                    data = self.filter_input(who, data)
                if data:
                    core.receive(who.id, data)
        elif kind == "writable":
            if who.id in self.conns and who.congested:
                who.congested = False
                core.set_congested(who.id, False)
        elif kind == "synced":
            core.synced(who, data)
        else:
            assert kind == "closed", kind
            if self.conns.pop(who.id, None) is not None:
                core.closed(who.id)

    # ---- output --------------------------------------------------------------------------------

    def _carry_out(self, gen: int) -> None:
        core = self.core
        assert core is not None
        while True:
            rd = core.ready()
            if not rd:
                return
            for conn_id, data, close in rd.writes:
                self._write(conn_id, data, close)
            for conn_id in rd.aborts:
                conn = self.conns.pop(conn_id, None)
                if conn is not None:
                    conn.reset_by_server()
                    core.closed(conn_id)
            # rd.members is not carried out: the simulated network reaches every node by id
            # (a real host dials the new peers: real/node/peers.py `set_peers`)
            for msg in rd.messages:
                if self.send_raft is not None:
                    self.send_raft(msg)
            for request in rd.syncs:
                self._start_sync(gen, request)

    def _write(self, conn_id: int, data: bytes, close: bool) -> None:
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        if data:
            conn.to_client(data)
        if close:
            del self.conns[conn_id]
            conn.close_by_server()
            core = self.core
            assert core is not None
            core.closed(conn_id)
        elif data and not conn.congested and conn.backlog_bytes() > self.write_high_water:
            self._congested(conn)

    def _congested(self, conn: SimConn) -> None:
        core = self.core
        assert core is not None
        conn.congested = True
        core.set_congested(conn.id, True)
        if self.on_congested is not None:
            self.on_congested(conn, conn.backlog_bytes())
        gen = self.gen
        delay = conn.drain_us(self.write_high_water // 2)

        def writable(_e: Event) -> None:
            if self.gen == gen and conn.id in self.conns:
                self._push("writable", conn, None)

        self.env.timeout(max(1, delay)).callbacks.append(writable)

    def _start_sync(self, gen: int, request: SyncRequest) -> None:
        """A background fdatasync: durable (and reported) after the device's latency."""
        self.stats.syncs += 1
        delay = self.fs.sample_sync_us()

        def done(_e: Event) -> None:
            if self.gen != gen:
                self.stats.lost_syncs += 1
                return
            error: BaseException | None = None
            try:
                request.job.sync()
            except Exception as exc:  # noqa: BLE001 - handed to the engine, which poisons
                error = exc
            self.fs.take_elapsed_us()  # the device time was the delay already waited
            self._push("synced", request.token, error)

        self.env.timeout(max(1, delay)).callbacks.append(done)
