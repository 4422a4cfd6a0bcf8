"""`Controller`: the placement controller, active on the meta Raft leader only. Sans-I/O.

- **Liveness.** Every registered node sends a `BrokerHeartbeat` to the meta leader every
  `heartbeat_ms`, under the broker epoch of its latest registration. A node is dead once no
  heartbeat of its current epoch has arrived for `session_timeout_ms`. The last-seen times live
  in memory on the leader only (as in RobustMQ and KRaft); a new meta leader starts everyone
  alive at the moment it took over, so a node is declared dead at most one session timeout
  after the leader change. A node whose peer port refuses connections (`peer_gone`: nothing
  listens there, so its process is gone) is dead at once, until a heartbeat of it arrives:
  a killed node's partitions move within a reconnect interval instead of a session timeout
  (a stopped or cut-off node refuses nothing and still takes the session timeout).
- **Leader moves.** A replicated shard whose leader is dead gets the first live in-sync replica
  (in replica order) as leader, the dead one leaving the in-sync set (`shard.elect`, a new leader
  epoch). With no live in-sync replica the shard goes offline (leader 0) and keeps its in-sync
  set, so the last in-sync replica takes it back when it returns; a topic may opt into unclean
  election (`unclean.leader.election.enable=true`: any live replica, acknowledged records can be
  lost). A dead follower leaves the in-sync set (`shard.set_isr`), so acks=all writes go on
  without it; never the last member.
- **Shared storage.** A shard on shared storage (an S3 partition: the object store is its only
  replica) whose leader is dead or gone goes to the live node that leads the fewest shards
  (`shard.set_leader` under the next epoch; the new leader's takeover fences the old one in the
  store, real/storage/s3engine.py). It does not move back when the old leader returns.
- **Preferred leader.** When a shard's first replica is alive, in sync and has been alive for
  `rebalance_delay_ms`, leadership moves back to it (leaders spread as placement laid them out).

Every change is a meta proposal fenced on the shard's epoch and version, one in flight per shard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from real.meta import MetaResult, MetaStateMachine, encode_command
from real.meta.machine import ShardInfo

UNCLEAN_KEY = "unclean.leader.election.enable"


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    heartbeat_ms: int = 100
    session_timeout_ms: int = 600
    check_ms: int = 50
    rebalance_delay_ms: int = 5_000
    rebalance: bool = True

    def __post_init__(self) -> None:
        for name in ("heartbeat_ms", "session_timeout_ms", "check_ms", "rebalance_delay_ms"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"cluster {name} must be an int >= 1, got {value!r}")
        if self.session_timeout_ms <= 2 * self.heartbeat_ms:
            raise ValueError(f"cluster session_timeout_ms ({self.session_timeout_ms}) must be "
                             f"more than twice heartbeat_ms ({self.heartbeat_ms})")


@dataclass(slots=True)
class ControllerStats:
    elections: int = 0
    offline: int = 0
    isr_removals: int = 0
    rebalances: int = 0
    deaths: int = 0
    gone: int = 0


class Controller:
    def __init__(self, node_id: int, config: ControllerConfig,
                 machine: Callable[[], MetaStateMachine], clock: Callable[[], int],
                 propose: Callable[[bytes, Callable[[MetaResult | Exception], None]], None],
                 log: Callable[[str], None] = lambda _line: None,
                 bugs: frozenset[str] = frozenset()) -> None:
        self.node_id = node_id
        self.bugs = bugs
        """Planted bugs (real.server.replication.REPLICATION_BUGS), test-only."""
        self.config = config
        self.machine = machine
        self.clock = clock
        self.propose = propose
        self.log = log
        self.stats = ControllerStats()
        self.active = False
        self._seen: dict[int, int] = {}
        self._alive_since: dict[int, int] = {}
        self._armed_at = 0
        self._dead: set[int] = set()
        self._gone: set[int] = set()
        self._epochs: dict[int, int] = {}
        self._pending: set[tuple[str, int]] = set()
        self._check_at = 0

    # ---- inputs ------------------------------------------------------------------------------

    def set_active(self, active: bool) -> None:
        """This node became (or stopped being) the meta leader."""
        if active == self.active:
            return
        self.active = active
        now = self.clock()
        self._seen.clear()
        self._alive_since.clear()
        self._dead.clear()
        self._gone.clear()
        self._epochs.clear()
        self._pending.clear()
        self._armed_at = now
        self._check_at = now
        if active:
            self.log(f"controller: active on node {self.node_id}")

    def heartbeat(self, node_id: int, broker_epoch: int) -> None:
        if not self.active:
            return
        info = self.machine().node(node_id)
        if info is None or broker_epoch < info.broker_epoch:
            return  # unknown, or a restarted node's old self
        now = self.clock()
        if node_id not in self._seen or not self._alive(node_id, now):
            self._alive_since[node_id] = now
        self._seen[node_id] = now
        self._gone.discard(node_id)
        if node_id in self._dead:
            self._dead.discard(node_id)
            self.log(f"controller: node {node_id} is alive again")

    def peer_gone(self, node_id: int) -> None:
        """Node `node_id`'s peer port refused a connection: its process is gone (a live node
        always listens), so it is dead now, not one session timeout later. Its next heartbeat
        (a restarted node heartbeats once it has registered again) makes it alive."""
        if not self.active or node_id == self.node_id or node_id in self._gone:
            return
        if self.machine().node(node_id) is None:
            return
        self._gone.add(node_id)
        self.stats.gone += 1
        self._check_at = self.clock()  # act at the next tick

    def alive(self, node_id: int) -> bool:
        return self._alive(node_id, self.clock())

    def _alive(self, node_id: int, now: int) -> bool:
        if node_id == self.node_id:
            return True
        if node_id in self._gone:
            return False
        seen = self._seen.get(node_id, self._armed_at)
        return now - seen <= self.config.session_timeout_ms

    def tick(self) -> None:
        if not self.active:
            return
        now = self.clock()
        if now < self._check_at:
            return
        self._check_at = now + self.config.check_ms
        sm = self.machine()
        for info in sm.nodes():
            if self._epochs.setdefault(info.node_id, info.broker_epoch) != info.broker_epoch:
                self._epochs[info.node_id] = info.broker_epoch  # (re)registered: as a heartbeat
                self.heartbeat(info.node_id, info.broker_epoch)
            if not self._alive(info.node_id, now) and info.node_id not in self._dead:
                self._dead.add(info.node_id)
                self.stats.deaths += 1
                why = ("its peer port refuses connections" if info.node_id in self._gone else
                       f"missed heartbeats for {self.config.session_timeout_ms} ms")
                self.log(f"controller: node {info.node_id} {why}: dead")
        load: dict[int, int] | None = None
        for topic in sm.topics():
            unclean = str(dict(topic.config).get(UNCLEAN_KEY, "false")).lower() == "true"
            for i, shard in enumerate(topic.shards):
                if (topic.name, i) in self._pending:
                    continue
                if shard.replicated:
                    self._check(topic.name, i, shard, unclean, now)
                elif topic.shared(i) and (shard.leader == 0 or not self._alive(shard.leader,
                                                                                 now)):
                    if load is None:
                        load = self._load(sm)
                    self._move_shared(topic.name, i, shard, load, now)

    def next_deadline_ms(self) -> int | None:
        return self._check_at if self.active else None

    # ---- decisions ---------------------------------------------------------------------------

    def _check(self, topic: str, index: int, s: ShardInfo, unclean: bool, now: int) -> None:
        alive = self._alive
        if s.leader == 0 or not alive(s.leader, now):
            live_isr = [n for n in s.isr if n != s.leader and alive(n, now)]
            if "unclean-election" in self.bugs:
                live_isr = []  # planted: go straight to "any live replica"
            if live_isr:
                isr = [n for n in s.isr if n != s.leader] if s.leader else list(s.isr)
                self._elect(topic, index, s, live_isr[0], isr, "leader dead" if s.leader
                            else "offline")
                return
            if unclean or "unclean-election" in self.bugs:
                live = [n for n in s.replicas if n != s.leader and alive(n, now)]
                if live:
                    self._elect(topic, index, s, live[0], [live[0]], "unclean", unclean=True)
                    return
            if s.leader:
                self.stats.offline += 1
                self._elect(topic, index, s, 0, list(s.isr), "no live in-sync replica")
            return
        dead = [n for n in s.isr if not alive(n, now)]
        if dead:
            self.stats.isr_removals += 1
            isr = [n for n in s.isr if n not in dead]
            self._propose(topic, index, "isr", encode_command(
                "shard.set_isr", topic=topic, shard=index, leader=s.leader, epoch=s.epoch,
                version=s.version, isr=isr), f"dead {dead} leave the isr")
            return
        preferred = s.replicas[0]
        if (self.config.rebalance and preferred != s.leader and preferred in s.isr
                and now - self._alive_since.get(preferred, self._armed_at)
                >= self.config.rebalance_delay_ms):
            self.stats.rebalances += 1
            self._elect(topic, index, s, preferred, list(s.isr), "preferred leader")

    def _load(self, sm: MetaStateMachine) -> dict[int, int]:
        """Shards led per registered node."""
        load = {n.node_id: 0 for n in sm.nodes()}
        for topic in sm.topics():
            for s in topic.shards:
                if s.leader in load:
                    load[s.leader] += 1
        return load

    def _move_shared(self, topic: str, index: int, s: ShardInfo, load: dict[int, int],
                     now: int) -> None:
        live = [n for n in sorted(load) if self._alive(n, now) and n != s.leader]
        if not live:
            return
        target = min(live, key=lambda n: (load[n], n))
        load[target] += 1
        self.stats.elections += 1
        why = "offline" if s.leader == 0 else "leader dead"
        self._propose(topic, index, "move", encode_command(
            "shard.set_leader", topic=topic, shard=index, node_id=target, epoch=s.epoch + 1),
            f"leader {s.leader} -> {target} (shared storage, {why})")

    def _elect(self, topic: str, index: int, s: ShardInfo, leader: int, isr: list[int],
               why: str, unclean: bool = False) -> None:
        if leader:
            self.stats.elections += 1
        extra = {"unclean": True} if unclean else {}
        data = encode_command("shard.elect", topic=topic, shard=index, epoch=s.epoch,
                              version=s.version, leader=leader, isr=isr, **extra)
        self._propose(topic, index, "elect", data,
                      f"leader {s.leader} -> {leader} ({why}), isr {isr}")

    def _propose(self, topic: str, index: int, what: str, data: bytes, why: str) -> None:
        key = (topic, index)
        self._pending.add(key)
        self.log(f"controller: {topic}/{index}: {why}")

        def done(result: MetaResult | Exception) -> None:
            self._pending.discard(key)
            if isinstance(result, Exception) or not result.ok:
                self.log(f"controller: {topic}/{index} {what} failed: "
                         f"{result if isinstance(result, Exception) else result.error}")

        self.propose(data, done)
