"""MetaReplica: one meta Raft member + its disk + the meta state machine, driven synchronously.

No asyncio here: the shell (server.py) calls `tick`, `propose` and `process_ready`; results come
back through callbacks. `process_ready` is the one implementation of the Raft loop in the real
shell:

    1. persist rd.snapshot, rd.entries, rd.hard_state (fsync if rd.must_sync)
    2. send rd.messages
    3. restore rd.snapshot, apply rd.committed_entries, serve rd.read_states once applied
    4. advance(rd); then compact if the log grew past `compact_entries`
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from real.meta import MetaResult, MetaStateMachine
from real.raft.types import (
    DurableState,
    Entry,
    EntryKind,
    HardState,
    Message,
    ProposalDropped,
    ReadState,
    Ready,
    Role,
    Snapshot,
)

PROPOSALS_PENDING_MAX = 1024
READS_PENDING_MAX = 1024
FORWARD_TIMEOUT_TICKS = 100
"""A proposal forwarded to the leader that has not applied within this many ticks is reported
lost (it may still apply later: callers retry idempotent commands)."""
FORWARD_GRACE_TICKS_MIN = 10
"""After the leader a proposal was forwarded to is replaced, the proposal waits at most
max(this, the election timeout) more ticks: time for the new leader's first commit to reach
this node, which applies the proposal if the new leader's log has it. A proposal the old leader
never appended (it was deposed, crashed, or cut off) is reported lost then instead of after the
full FORWARD_TIMEOUT_TICKS (a leader's ISR change waited ~1 s on a deposed meta leader)."""
ENVELOPE = b"\x00TMQG"
"""Prefix of a forwarded proposal's entry: origin node (u32), the origin's incarnation (u64),
sequence (u64), then the command. The incarnation tells a proposal of this process from one
its previous life forwarded under the same sequence number (without it, an entry of the old
life replayed after a restart answered the new life's proposal, e.g. a node's registration,
with another command's result). Meta commands never start with a zero byte, so logs without
envelopes apply unchanged."""
_ENVELOPE_HEAD = struct.Struct(">IQQ")
OLD_ENVELOPE = b"\x00TMQF"
"""The envelope before incarnations (origin u32, sequence u64): unwrapped, never matched."""
_OLD_ENVELOPE_HEAD = struct.Struct(">IQ")


class ProposalLost(Exception):
    """The proposal's log slot was taken by another leader's entry (or a snapshot): it did not
    apply. The caller may retry."""


class Storage(Protocol):
    def durable(self) -> DurableState: ...
    def save(self, *, snapshot: Snapshot | None = None, entries: tuple[Entry, ...] = (),
             hard_state: HardState | None = None, sync: bool) -> None: ...
    def rewrite(self, snapshot: Snapshot) -> None: ...


class RaftObserver(Protocol):
    """What a replica reports as it runs (the simulator's safety checkers listen; None in the
    real node): its durable state at start, each Ready as it is produced (before it is
    persisted), each entry as it applies, each compaction."""

    def restarted(self, node: int, durable: DurableState) -> None: ...
    def ready(self, node: int, rd: Ready, term: int) -> None: ...
    def applied(self, node: int, entry: Entry, term: int) -> None: ...
    def compacted(self, node: int, snapshot: Snapshot) -> None: ...


@dataclass(frozen=True, slots=True)
class _Waiter:
    term: int
    done: Callable[[MetaResult | Exception], None]


def unwrap_forwarded(data: bytes) -> bytes:
    """The command inside a forwarded proposal's envelope (any other entry data unchanged)."""
    if data.startswith(ENVELOPE):
        return data[len(ENVELOPE) + _ENVELOPE_HEAD.size:]
    if data.startswith(OLD_ENVELOPE):
        return data[len(OLD_ENVELOPE) + _OLD_ENVELOPE_HEAD.size:]
    return data


def restore_sm(snapshot: Snapshot) -> MetaStateMachine:
    return MetaStateMachine.at_snapshot(snapshot.meta.index, snapshot.data)


class MetaReplica:
    def __init__(self, raft: Any, storage: Storage, send: Callable[[Message], None],
                 *, compact_entries: int, observer: RaftObserver | None = None,
                 incarnation: int = 0) -> None:
        """`raft` is a RaftNode built from `storage.durable()`. `incarnation` must differ
        between two lives of the same node (the node passes its wall clock in ms at start)."""
        assert compact_entries >= 2, compact_entries
        durable = storage.durable()
        self.raft = raft
        self.storage = storage
        self.send = send
        self.compact_entries = compact_entries
        self.sm = restore_sm(durable.snapshot) if durable.snapshot else MetaStateMachine()
        self.snapshot_index = durable.snapshot.meta.index if durable.snapshot else 0
        assert self.sm.applied_index == self.snapshot_index, (self.sm.applied_index, durable)
        assert raft.applied == self.snapshot_index, (raft.applied, self.snapshot_index)
        self._proposals: dict[int, _Waiter] = {}
        self._forwarded: dict[int, tuple[int, Callable[[MetaResult | Exception], None]]] = {}
        self._forward_seq = 0
        # the leadership (leader, term) the waiting forwarded proposals went to
        self._forward_leader: tuple[int, int] = (0, 0)
        self.incarnation = incarnation
        self._ticks = 0
        self._reads: dict[bytes, Callable[[int], None]] = {}
        self._ready_reads: list[ReadState] = []
        self.readies = 0
        self.observer = observer
        if observer is not None:
            observer.restarted(raft.id, durable)

    # ---- inputs --------------------------------------------------------------------------------

    def tick(self, n: int = 1) -> None:
        assert n >= 1, n
        self.raft.tick(n)
        self._ticks += n
        if self._forwarded:
            self._check_leader()
            self._expire_forwarded()

    def ticks_until_due(self) -> int:
        """Ticks until one may have an effect: Raft's own (`RaftNode.ticks_until_due`) or the
        first forwarded proposal's timeout, whichever is sooner (so a host that skips idle ticks
        behaves exactly like one that ticks one by one)."""
        due = self.raft.ticks_until_due()
        if self._forwarded:
            first = min(deadline for deadline, _ in self._forwarded.values())
            due = min(due, max(1, first - self._ticks))
        return due

    def _check_leader(self) -> None:
        """Shorten the wait of forwarded proposals once their leader has been replaced: by
        another node, or by the same node in a later term (it crashed or was deposed and won
        again, and what it had not appended then is gone: comparing ids alone left a
        restarted node's registration waiting the full timeout)."""
        leader = self.raft.leader
        if not leader or (leader, self.raft.term) == self._forward_leader:
            return
        self._forward_leader = (leader, self.raft.term)
        grace = max(FORWARD_GRACE_TICKS_MIN, self.raft.election_tick_min)
        until = self._ticks + grace
        for seq in sorted(self._forwarded):
            deadline, done = self._forwarded[seq]
            if deadline > until:
                self._forwarded[seq] = (until, done)

    def _expire_forwarded(self) -> None:
        for seq in sorted(self._forwarded):
            deadline, done = self._forwarded[seq]
            if deadline <= self._ticks:
                del self._forwarded[seq]
                done(ProposalLost(f"forwarded proposal {self.raft.id}/{seq} did not apply within "
                                  f"{FORWARD_TIMEOUT_TICKS} ticks"))

    def propose(self, data: bytes, done: Callable[[MetaResult | Exception], None]) -> int:
        """Propose `data`; `done(result)` is called once it applies (or `done(ProposalLost)`).
        On a follower the proposal is forwarded to the leader, enveloped with this node's id and
        a sequence number so that its apply can be recognised here. Raises ProposalDropped if no
        leader can take it now. Returns the entry's index (0 when forwarded)."""
        if len(self._proposals) + len(self._forwarded) >= PROPOSALS_PENDING_MAX:
            raise ProposalDropped(f"{PROPOSALS_PENDING_MAX} proposals already pending")
        raft = self.raft
        if raft.role is not Role.LEADER:
            return self._forward(data, done)
        before = raft.last_index()
        raft.propose(data)
        index = raft.last_index()
        if index != before + 1:
            raise ProposalDropped(f"node {raft.id}: the proposal was not appended")
        term = raft.term_at(index)
        # Waiters at this index or beyond are from an earlier leadership of this node whose
        # uncommitted tail another leader overwrote: those entries can never apply.
        for stale in sorted(i for i in self._proposals if i >= index):
            waiter = self._proposals.pop(stale)
            assert waiter.term < term, (stale, waiter.term, term)
            waiter.done(ProposalLost(f"entry {stale}: term {waiter.term} overwritten before "
                                     f"term {term} reused the index"))
        self._proposals[index] = _Waiter(term, done)
        return index

    def _forward(self, data: bytes, done: Callable[[MetaResult | Exception], None]) -> int:
        if self._forwarded:
            self._check_leader()  # the waiting ones went to an earlier leader
        self._forward_seq += 1
        seq = self._forward_seq
        self._forward_leader = (self.raft.leader, self.raft.term)
        self.raft.propose(ENVELOPE + _ENVELOPE_HEAD.pack(self.raft.id, self.incarnation, seq)
                          + data)  # or raises
        self._forwarded[seq] = (self._ticks + FORWARD_TIMEOUT_TICKS, done)
        return 0

    def read_index(self, context: bytes, done: Callable[[int], None]) -> None:
        """Linearizable read: `done(index)` once the state machine has applied `index`."""
        if len(self._reads) >= READS_PENDING_MAX:
            raise ProposalDropped(f"{READS_PENDING_MAX} reads already pending")
        assert context not in self._reads, context
        self._reads[context] = done
        try:
            self.raft.read_index(context)
        except ProposalDropped:  # no leader known, too many reads: nothing will answer it
            del self._reads[context]
            raise

    def cancel_read(self, context: bytes) -> bool:
        """Forget a pending read (its caller gave up: no leader answered in time)."""
        return self._reads.pop(context, None) is not None

    # ---- the Ready loop ------------------------------------------------------------------------

    def process_ready(self) -> int:
        """Handle every pending Ready; return how many."""
        handled = 0
        while self.raft.has_ready():
            rd = self.raft.ready()
            if self.observer is not None:
                self.observer.ready(self.raft.id, rd, self.raft.term)
            self._persist(rd)
            for msg in rd.messages:
                self.send(msg)
            self._apply(rd)
            self.raft.advance(rd)
            handled += 1
            self.readies += 1
            if self._forwarded:
                self._check_leader()
            assert self.raft.applied == self.sm.applied_index, (self.raft.applied,
                                                                self.sm.applied_index)
        if handled:
            self._maybe_compact()
        return handled

    def _persist(self, rd: Ready) -> None:
        if rd.snapshot is None and not rd.entries and rd.hard_state is None:
            return
        self.storage.save(snapshot=rd.snapshot, entries=rd.entries, hard_state=rd.hard_state,
                          sync=rd.must_sync)

    def _apply(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.sm = restore_sm(rd.snapshot)
            self.snapshot_index = rd.snapshot.meta.index
            assert self.sm.applied_index == rd.snapshot.meta.index
            for index in sorted(i for i in self._proposals if i <= self.snapshot_index):
                self._proposals.pop(index).done(ProposalLost(f"entry {index}: replaced by a "
                                                             "snapshot"))
        for entry in rd.committed_entries:
            data = entry.data if entry.kind is EntryKind.NORMAL else b""
            forwarded = None
            if data.startswith(ENVELOPE):
                origin, incarnation, seq = _ENVELOPE_HEAD.unpack_from(data, len(ENVELOPE))
                data = data[len(ENVELOPE) + _ENVELOPE_HEAD.size:]
                if origin == self.raft.id and incarnation == self.incarnation:
                    forwarded = self._forwarded.pop(seq, None)
            elif data.startswith(OLD_ENVELOPE):  # a proposal of a life before incarnations
                data = data[len(OLD_ENVELOPE) + _OLD_ENVELOPE_HEAD.size:]
            result = self.sm.apply(entry.index, data)
            if self.observer is not None:
                self.observer.applied(self.raft.id, entry, self.raft.term)
            if forwarded is not None:
                forwarded[1](result)
            waiter = self._proposals.pop(entry.index, None)
            if waiter is not None and waiter.term == entry.term:
                waiter.done(result)
            elif waiter is not None:
                waiter.done(ProposalLost(f"entry {entry.index}: term {entry.term} replaced "
                                         f"proposal of term {waiter.term}"))
        self._ready_reads += rd.read_states
        self._serve_reads()

    def _serve_reads(self) -> None:
        keep = []
        for rs in self._ready_reads:
            done = self._reads.get(rs.context)
            if done is None:
                continue
            if rs.index <= self.sm.applied_index:
                del self._reads[rs.context]
                done(rs.index)
            else:
                keep.append(rs)
        self._ready_reads = keep

    def _maybe_compact(self) -> None:
        applied = self.sm.applied_index
        if applied - self.snapshot_index < self.compact_entries:
            return
        self.raft.compact(applied, self.sm.snapshot())
        snap = self.raft.snapshot
        assert snap is not None and snap.meta.index == applied, (snap, applied)
        self.storage.rewrite(snap)
        self.snapshot_index = applied
        if self.observer is not None:
            self.observer.compacted(self.raft.id, snap)

    def fail_pending(self, why: str) -> None:
        """Shutdown: resolve every waiter."""
        for index in sorted(self._proposals):
            self._proposals.pop(index).done(ProposalLost(f"entry {index}: {why}"))
        for seq in sorted(self._forwarded):
            self._forwarded.pop(seq)[1](ProposalLost(f"forwarded proposal {seq}: {why}"))
        self._reads.clear()
