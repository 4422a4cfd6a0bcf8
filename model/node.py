"""The node process: drives one RaftNode through the etcd loop on simulated time.

    wake on an inbox item or a tick deadline
    -> tick the boundaries passed (chunked by ticks_until_due(): identical to ticking one by one)
    -> step queued messages / proposals
    -> while has_ready(): persist, fsync (sim time), send, apply, advance

The Raft log is the real one: `real.server.raftlog.RaftLog` over this node's `SimFileSystem`
(the same record format, recovery and compaction as `twinmq serve`). A Ready is appended at the
instant it is produced; with `must_sync` the log is fdatasynced and the node waits the simulated
time the filesystem charged since its last wait (appends, the sync, and any compaction or recovery
before it) before it sends. The fsync is durable when issued (as in model/mqtt.py and
model/kafka.py), so a crash during that wait keeps the Ready; Readies without `must_sync`
(commit-only hard states) stay unsynced. A crash is a power loss of that filesystem
(`fs.crash()`: unsynced appends lost or torn, see model/fs.py) and a restart recovers through
`RaftLog`.

Every resumption of a node process is an event with priority `2 + node_id`, so events at one
instant run as: network arrivals, client and nemesis actions (priority NORMAL) first, then node
wake-ups in node-id order. That order does not depend on when a wake-up was scheduled, which is
what makes tick skipping produce the same trace as ticking one by one.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import simpy
from simpy.events import Event, EventPriority

from model.clock import NodeClock, now_us
from model.fs import SimFileSystem
from real.raft.types import (
    DurableState,
    EntryKind,
    Message,
    ProposalDropped,
    RaftConfig,
    Ready,
    Role,
)
from real.server.raftlog import RaftLog

META_DIR = "meta"
"""The Raft log's directory on each node's simulated filesystem (`data_dir/meta` in real/)."""

if TYPE_CHECKING:
    from model.world import World


@dataclass(frozen=True, slots=True)
class ClientPropose:
    pid: int
    attempt: int
    data: bytes


@dataclass(slots=True)
class NodeStats:
    steps: int = 0
    readies: int = 0
    fsyncs: int = 0
    inbox_rejected: int = 0
    dropped_dead: int = 0
    compactions: int = 0
    crashes: int = 0


class Wake(Event):
    """An already-triggered event, processed at `now + delay` with a given priority."""

    def __init__(self, env: simpy.Environment, delay: int, priority: EventPriority) -> None:
        self.env = env
        self.callbacks = []
        self._value = None
        self._ok = True
        env.schedule(self, priority, delay)


class SimNode:
    def __init__(self, world: World, node_id: int, config: RaftConfig, clock: NodeClock,
                 fs: SimFileSystem, rng: random.Random) -> None:
        self.world = world
        self.env = world.env
        self.id = node_id
        self.config = config
        self.clock = clock
        self.fs = fs
        self.log: RaftLog | None = None
        self.rng = rng
        self.priority = EventPriority(2 + node_id)
        self.inbox: deque[Message | ClientPropose] = deque()
        self.inbox_max = world.scenario.cluster.inbox_max
        self.skipping = world.scenario.cluster.tick_skipping
        self.check_invariants = world.scenario.cluster.check_invariants
        self.snapshot_every = world.scenario.cluster.snapshot_every
        self.alive = False
        self.paused = False
        self.incarnation = 0
        self.raft: Any = None
        self.sm: Any = None
        self.applied = 0
        self.last_compact = 0
        self._sleep_ev: Event | None = None
        self._resume_ev: Event | None = None
        self._in_ready = False
        self._timer: Event | None = None
        self._timer_at = -1
        self.stats = NodeStats()

    # -- lifecycle (called by the world and the nemesis) -------------------------------------

    def start(self) -> None:
        """(Re)start from durable state only."""
        assert not self.alive, f"node {self.id} started twice"
        self.log = RaftLog(self.fs, META_DIR)
        durable: DurableState = self.log.durable()
        world = self.world
        core_rng = random.Random(self.rng.getrandbits(64))  # noqa: S311 (simulation, not crypto)
        self.raft = world.raft_factory(self.id, self.config, core_rng, durable,
                                       tuple(world.node_ids))
        snap = durable.snapshot
        self.sm = self.world.sm_restore(*((snap.meta.index, snap.data) if snap else (0, b"")))
        self.applied = self.last_compact = snap.meta.index if snap is not None else 0
        world.checkers.on_restart(self.id, snap, durable.entries)
        self.alive, self.paused, self._in_ready = True, False, False
        self.incarnation += 1
        self.clock.restart(now_us(self.env))
        self._sleep_ev = self._resume_ev = self._timer = None
        self._timer_at = -1
        self.env.process(self._run(self.incarnation))
        world.trace.emit(now_us(self.env), self.id, "start", term=durable.hard_state.term,
                         commit=durable.hard_state.commit, entries=len(durable.entries),
                         snapshot=snap.meta.index if snap is not None else 0)

    def crash(self) -> None:
        assert self.alive, f"node {self.id} crashed while down"
        self.alive = False
        self.incarnation += 1
        self.raft = self.sm = None
        self._sleep_ev = self._resume_ev = self._timer = None  # the old process never wakes
        self._timer_at = -1
        self.inbox.clear()
        assert self.log is not None
        lost = self.fs.unsynced_ops(self.log.path)
        self.log = None  # dropped, never closed: the power is gone
        self.fs.crash()
        self.fs.take_elapsed_us()  # time charged to the dead incarnation is never waited
        self.stats.crashes += 1
        self.world.trace.emit(now_us(self.env), self.id, "crash", unsynced_ops=lost)

    def pause(self) -> None:
        assert self.alive and not self.paused, self.id
        self._catch_up_ticks()
        self.paused = True
        self.world.trace.emit(now_us(self.env), self.id, "pause")

    def resume(self) -> None:
        if not self.alive or not self.paused:
            return
        self.paused = False
        self.clock.restart(now_us(self.env))
        self.world.trace.emit(now_us(self.env), self.id, "resume")
        self._trigger(self._resume_ev)
        self._kick()

    def set_skew(self, skew_ppm: float) -> None:
        """Change the clock rate; a sleeping node recomputes its deadline (the tick it waits for
        moved), exactly like a tick-by-tick node does at its next tick."""
        if self.alive and not self.paused:
            self._catch_up_ticks()
        self.clock.set_skew(now_us(self.env), skew_ppm)
        self._timer, self._timer_at = None, -1
        self._kick()

    def deliver(self, item: Message | ClientPropose) -> bool:
        """An inbox arrival (network or client). Refused (counted) when down or full."""
        if not self.alive:
            self.stats.dropped_dead += 1
            return False
        if len(self.inbox) >= self.inbox_max:
            self.stats.inbox_rejected += 1
            return False
        self.inbox.append(item)
        self._kick()
        return True

    # -- the process ----------------------------------------------------------------------------

    def _kick(self) -> None:
        self._trigger(self._sleep_ev)

    def _trigger(self, ev: Event | None) -> None:
        """Trigger `ev` now, at this node's priority (not NORMAL: see the module doc)."""
        if ev is not None and not ev.triggered:
            ev._ok = True
            ev._value = None
            self.env.schedule(ev, self.priority, 0)

    def _at(self, delay_us: int) -> Event:
        return Wake(self.env, max(1, delay_us), self.priority)

    def _run(self, inc: int) -> Generator[Event, Any, None]:
        raft = self.raft
        while self.incarnation == inc:
            if self.paused:
                self._resume_ev = self.env.event()
                yield self._resume_ev
                continue
            stopped_for_ready = self._run_ticks()
            if not stopped_for_ready and self.inbox:
                self._run_inbox()
            if raft.has_ready():
                self._in_ready = True
                yield from self._handle_ready(inc)
                if self.incarnation == inc:
                    self._in_ready = False
                continue
            yield from self._sleep()

    def _sleep(self) -> Generator[Event, Any, None]:
        """Sleep until the next tick that may produce output, or an inbox arrival.

        A pending timer due no later than the deadline is kept (a follower's election deadline
        moves on every heartbeat: re-arming would cost a timer per message); it then wakes the
        node early, which finds no tick due that produces output and sleeps again. A superseded
        timer fires into nothing."""
        ahead = self.raft.ticks_until_due() if self.skipping else 1
        assert ahead >= 1, f"node {self.id}: ticks_until_due() = {ahead}"
        deadline = self.clock.next_boundary_us(ahead)
        ev = Event(self.env)
        self._sleep_ev = ev
        if not self.env.now < self._timer_at <= deadline:
            timer = self.env.timeout(max(0, deadline - self.env.now))
            timer.callbacks.append(self._on_timer)
            self._timer, self._timer_at = timer, deadline
        yield ev
        if self._sleep_ev is ev:  # a stale process (crashed incarnation) must not clear it
            self._sleep_ev = None

    def _on_timer(self, timer: Event) -> None:
        if timer is self._timer:
            self._timer, self._timer_at = None, -1
            self._kick()

    def _run_ticks(self) -> bool:
        """Run the tick boundaries passed; True if they produced a Ready (stop there)."""
        due = self.clock.due(now_us(self.env))
        raft = self.raft
        while due > 0:
            if self.skipping:
                until = raft.ticks_until_due()
                n = min(due, until)
                raft.tick(n)
                self.clock.consume(n)
                due -= n
                if n == until and raft.has_ready():
                    return True
            else:
                raft.tick(1)
                self.clock.consume(1)
                due -= 1
                if raft.has_ready():
                    return True
        return False

    def _catch_up_ticks(self) -> None:
        """Run the tick boundaries strictly before now, which a tick-by-tick node has already run
        (not while a Ready is in flight: neither mode ticks during an fsync)."""
        if self._in_ready or self.env.now == 0:
            return
        due = self.clock.due(now_us(self.env) - 1)
        if due == 0:
            return
        if self.skipping:
            assert due < self.raft.ticks_until_due(), (self.id, due)
            self.raft.tick(due)
        else:
            for _ in range(due):
                self.raft.tick(1)
        self.clock.consume(due)
        assert not self.raft.has_ready(), f"node {self.id}: catch-up ticks produced output"

    def _run_inbox(self) -> None:
        raft = self.raft
        inbox = self.inbox
        while inbox:
            item = inbox.popleft()
            if type(item) is ClientPropose:
                self._propose(item)
            else:
                raft.step(item)
                self.stats.steps += 1

    def _propose(self, item: ClientPropose) -> None:
        try:
            self.raft.propose(item.data)
        except ProposalDropped as exc:
            self.world.client.on_dropped(item.pid, item.attempt, self.id, str(exc))

    # -- the Ready loop: persist, fsync, send, apply, advance -----------------------------------

    def _handle_ready(self, inc: int) -> Generator[Event, Any, None]:
        raft = self.raft
        rd: Ready = raft.ready()
        self.stats.readies += 1
        self._persist(rd)
        if rd.must_sync:
            assert self.log is not None, self.id
            self.log.sync()
            yield self._at(self.fs.take_elapsed_us())
            if self.incarnation != inc:
                return
            self.stats.fsyncs += 1
            while self.paused:
                self._resume_ev = self.env.event()
                yield self._resume_ev
                if self.incarnation != inc:
                    return
        self._send(rd.messages)
        self._apply(rd)
        raft.advance(rd)
        if self.check_invariants:
            raft.invariants()
        if self.snapshot_every and self.applied - self.last_compact >= self.snapshot_every:
            self._compact()

    def _persist(self, rd: Ready) -> None:
        """Append snapshot, entries, hard state (unsynced) and feed the checkers, at the instant
        the Ready is produced (a leader's completeness is judged against what was committed when
        it won, not after a pause during its first fsync)."""
        assert self.log is not None, self.id
        self.log.save(snapshot=rd.snapshot, entries=rd.entries, hard_state=rd.hard_state,
                      sync=False)
        checkers = self.world.checkers
        new_leader = False
        if rd.soft_state is not None:
            role = rd.soft_state.role
            term = rd.hard_state.term if rd.hard_state is not None else self.raft.term
            checkers.on_role(self.id, term, role)
            self.world.on_role(self.id, term, role, rd.soft_state.leader)
            new_leader = role is Role.LEADER
        if rd.snapshot is not None:
            checkers.on_snapshot(self.id, rd.snapshot, keep_suffix=False)
        if rd.entries:
            checkers.on_entries(self.id, rd.entries)
        if new_leader:
            checkers.on_new_leader(self.id, self.raft.term)

    def _send(self, messages: tuple[Message, ...]) -> None:
        net = self.world.net
        trace_msgs = self.world.scenario.trace_messages
        for m in messages:
            assert m.src == self.id, (self.id, m)
            if trace_msgs:
                self.world.trace.emit(now_us(self.env), self.id, "send", type=m.type.value,
                                      dst=m.dst, term=m.term, index=m.index, n=len(m.entries))
            net.send(self.id, m.dst, m)

    def _apply(self, rd: Ready) -> None:
        world = self.world
        if rd.snapshot is not None:
            self.sm = world.sm_restore(rd.snapshot.meta.index, rd.snapshot.data)
            self.applied = self.last_compact = rd.snapshot.meta.index
            world.trace.emit(now_us(self.env), self.id, "restore", index=rd.snapshot.meta.index)
        if not rd.committed_entries:
            return
        checkers, sm, term = world.checkers, self.sm, self.raft.term
        for entry in rd.committed_entries:
            assert entry.index == self.applied + 1, (self.id, entry.index, self.applied)
            checkers.on_apply(self.id, entry, term)
            # Every entry moves the machine's applied index (no-ops and conf changes as b""),
            # as in real/node, so both shells' digests agree for the same log.
            if entry.kind is EntryKind.NORMAL and entry.data:
                sm.apply(entry.index, entry.data)
                world.on_committed(self.id, entry)
            else:
                sm.apply(entry.index, b"")
            self.applied = entry.index
        assert sm.applied_index == self.applied, (self.id, sm.applied_index, self.applied)
        world.trace.emit(now_us(self.env), self.id, "apply", lo=rd.committed_entries[0].index,
                         hi=self.applied)

    def _compact(self) -> None:
        raft = self.raft
        raft.compact(self.applied, self.sm.snapshot())
        snap = raft.snapshot
        assert snap is not None and snap.meta.index == self.applied, (self.id, self.applied)
        assert self.log is not None, self.id
        self.log.rewrite(snap)  # durable now; its fs time is waited at the next fsync
        self.world.checkers.on_snapshot(self.id, snap, keep_suffix=True)
        self.last_compact = self.applied
        self.stats.compactions += 1
        self.world.trace.emit(now_us(self.env), self.id, "compact", index=self.applied)
