"""RaftNode: a sans-I/O Raft peer (etcd-io/raft's design, written from scratch).

Inputs: `tick()`, `step(msg)`, `propose()`, `propose_conf_change()`, `read_index()`,
`transfer_leadership()`, `campaign()`, `compact()`. Outputs: `ready() -> Ready`, consumed with
`advance(rd)`. The node never performs I/O, reads a clock or uses a global random.

The driving loop (both shells, and tests/raft/harness.py):

    while node.has_ready():
        rd = node.ready()
        1. persist: rd.snapshot (drop the whole stored log, keep the snapshot), then rd.entries
           (entry i first drops every stored entry >= i), then rd.hard_state; fsync if rd.must_sync
        2. send rd.messages                  # only once step 1 is durable
        3. restore rd.snapshot if any, apply rd.committed_entries, serve rd.read_states
        4. node.advance(rd)                  # no other call on the node between ready and advance

Persist-before-send: a granted VOTE_RESP, an APPEND_RESP acknowledging entries, and a leader's
APPENDs of its own new entries are always in the same Ready as the HardState / entries they
depend on, and that Ready has must_sync=True.

Bootstrap: a node with empty durable state and `peers` starts from a synthetic snapshot at index 1,
term 1 whose conf is `peers` (reported in the first Ready, to be persisted like any snapshot). A
node with empty durable state and no peers is a blank joiner: no voters, never campaigns, and learns
membership from the leader's snapshot. Membership is always snapshot conf + CONF_CHANGE entries.

Message fields beyond types.py: APPEND_RESP.index = last index now matching (accept) or the
rejected prev index (reject); on reject `reject_hint` is the largest index <= min(prev, last) whose
term is <= the probe's log_term, and `log_term` its term (fast backtracking). PRE_VOTE/VOTE
responses carry the request's term when granted, the responder's term when rejected.
HEARTBEAT_RESP echoes `context`. READ_INDEX_RESP.index is the read index. PROPOSE and READ_INDEX
are forwarded with term 0. Messages addressed elsewhere, from 0 or from ourselves are ignored;
responses from non-members are ignored and only voters' votes count.

Planted bugs (`config.bugs`, test-only) are single guarded deviations; grep `Bug.`.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from real.raft.log import RaftLog
from real.raft.progress import Progress, ProgressState
from real.raft.types import (
    NONE,
    Bug,
    ConfChange,
    ConfChangeType,
    ConfState,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageFields,
    MsgType,
    NodeId,
    ProposalDropped,
    RaftConfig,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is 3.12+

TRANSFER = b"transfer"
_EMPTY = DurableState()
_LEADER_MSGS = (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT)


class _ReadRequest:
    __slots__ = ("index", "src", "acks")

    def __init__(self, index: int, src: NodeId, acks: set[NodeId]) -> None:
        self.index = index
        self.src = src
        self.acks = acks
        """Member ids that acknowledged a heartbeat carrying this context (int set: order-free)."""


def apply_conf_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """Single-server change. Demoting a voter to learner is not supported (no-op)."""
    voters = set(conf.voters)
    learners = set(conf.learners)
    if cc.type is ConfChangeType.ADD_VOTER:
        voters.add(cc.node_id)
        learners.discard(cc.node_id)
    elif cc.type is ConfChangeType.REMOVE_VOTER:
        voters.discard(cc.node_id)
        learners.discard(cc.node_id)
    elif cc.node_id not in voters:
        learners.add(cc.node_id)
    return ConfState(tuple(sorted(voters)), tuple(sorted(learners)))


class RaftNode:
    def __init__(
        self,
        node_id: NodeId,
        config: RaftConfig,
        rng: random.Random,
        durable: DurableState = _EMPTY,
        peers: tuple[NodeId, ...] = (),
    ) -> None:
        assert node_id > 0, node_id
        assert all(p > 0 for p in peers), peers
        self.id = node_id
        self._cfg = config
        self._rng = rng
        self._bugs = config.bugs
        self.role = Role.FOLLOWER
        self._init_storage(durable, peers)
        self.leader = NONE
        self._step = self._step_follower
        self._elapsed = 0
        self._hb_elapsed = 0
        self._timeout = config.election_tick_min
        self._votes: dict[NodeId, bool] = {}
        self._prs: dict[NodeId, Progress] = {}
        self._peer_ids: tuple[NodeId, ...] = ()
        self._transferee = NONE
        self._uncommitted = 0
        self._noop_index = 0
        self._reads: dict[bytes, _ReadRequest] = {}
        self._deferred_reads: list[tuple[NodeId, bytes]] = []
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._vote_hidden = False
        self._prev_soft = SoftState(NONE, Role.FOLLOWER)
        self._become_follower(self.term, NONE)
        self.invariants()

    def _init_storage(self, durable: DurableState, peers: tuple[NodeId, ...]) -> None:
        hs = durable.hard_state
        snap = durable.snapshot
        self._pending_snapshot: Snapshot | None = None
        has_conf = any(e.kind is EntryKind.CONF_CHANGE for e in durable.entries)
        if snap is None and not has_conf and peers and not durable.entries:
            conf = ConfState(tuple(sorted(set(peers))))
            snap = Snapshot(SnapshotMeta(1, 1, conf), b"")
            self._pending_snapshot = snap
            hs = HardState(max(hs.term, 1), hs.vote, max(hs.commit, 1))
        self.snapshot: Snapshot | None = snap
        snap_index = snap.meta.index if snap else 0
        ents = tuple(e for e in durable.entries if e.index > snap_index)
        self._log = RaftLog(snap_index, snap.meta.term if snap else 0, ents)
        if self._log.last_term() > hs.term:
            # A crash can keep a Ready's entries and lose the HardState written after them (a torn
            # write). Nothing of that Ready was sent, so adopt the stored entries' term, with no
            # vote; the first Ready persists it.
            hs = HardState(self._log.last_term(), NONE, hs.commit)
        self.term = hs.term
        self.vote = hs.vote
        self.commit = max(hs.commit, snap_index)
        assert self.commit <= self._log.last_index(), "durable commit beyond durable log"
        self.applied = 0 if self._pending_snapshot else snap_index
        self._base_conf = snap.meta.conf if snap else ConfState(())
        self._conf_hist: list[tuple[int, ConfState]] = []
        self.conf = self._base_conf
        self._note_conf_entries(ents)
        persisted = self._pending_snapshot is None
        self._prev_hs = durable.hard_state if persisted else HardState()

    # ---------------------------------------------------------------- introspection

    def first_index(self) -> int:
        return self._log.first_index()

    def last_index(self) -> int:
        return self._log.last_index()

    def term_at(self, index: int) -> int | None:
        return self._log.term_at(index)

    def entries(self, lo: int, hi: int) -> tuple[Entry, ...]:
        """Entries with lo <= index < hi that the log still holds."""
        return self._log.slice(lo, hi)

    def progress(self, node_id: NodeId) -> Progress | None:
        """Leader only: replication state of a member (read-only use)."""
        return self._prs.get(node_id)

    @property
    def lead_transferee(self) -> NodeId:
        return self._transferee

    @property
    def election_tick_min(self) -> int:
        return self._cfg.election_tick_min

    # ---------------------------------------------------------------- inputs

    def tick(self, n: int = 1) -> None:
        """Exactly n calls of a single tick; quiet stretches are skipped in O(1)."""
        assert n >= 0, n
        while n > 0:
            skip = min(n, self.ticks_until_due() - 1)
            if skip > 0:
                self._elapsed += skip
                if self.role is Role.LEADER:
                    self._hb_elapsed += skip
                n -= skip
                continue
            self._tick_one()
            n -= 1
        self.invariants()

    def ticks_until_due(self) -> int:
        """Ticks until the next tick that may produce output (>= 1)."""
        cfg = self._cfg
        if self.role is Role.LEADER:
            due = min(cfg.election_tick_min - self._elapsed, cfg.heartbeat_tick - self._hb_elapsed)
            assert due >= 1, due
            return due
        if self._promotable():
            return max(1, self._timeout - self._elapsed)
        return cfg.election_tick_min

    def step(self, m: Message) -> None:
        if m.dst != self.id or m.src == NONE or m.src == self.id:
            return
        local = m.type in (MsgType.PROPOSE, MsgType.READ_INDEX)
        if m.term == 0 and not local:
            return
        if m.term > self.term:
            if not self._step_higher_term(m):
                self.invariants()
                return
        elif 0 < m.term < self.term:
            self._step_lower_term(m)
            self.invariants()
            return
        if m.type in (MsgType.PRE_VOTE, MsgType.VOTE):
            self._handle_vote_request(m)
        else:
            self._step(m)
        self.invariants()

    def propose(self, data: bytes) -> None:
        entry = Entry(0, 0, EntryKind.NORMAL, data)
        if self.role is Role.LEADER:
            reason = self._leader_propose((entry,))
            if reason:
                raise ProposalDropped(reason)
        elif self.role is Role.FOLLOWER and self.leader != NONE:
            self._send_raw(MsgType.PROPOSE, self.leader, 0, entries=(entry,))
        else:
            raise ProposalDropped(f"node {self.id}: no leader known")
        self.invariants()

    def propose_conf_change(self, cc: ConfChange) -> None:
        reason = self._conf_change_refusal(cc)
        if reason:
            raise ProposalDropped(reason)
        entry = Entry(0, 0, EntryKind.CONF_CHANGE, cc.encode())
        reason = self._leader_propose((entry,))
        if reason:
            raise ProposalDropped(reason)
        self.invariants()

    def read_index(self, context: bytes) -> None:
        if self.role is Role.LEADER:
            if not self._leader_read(self.id, context):
                raise ProposalDropped(f"node {self.id}: max_pending_reads reached")
        elif self.role is Role.FOLLOWER and self.leader != NONE:
            self._send_raw(MsgType.READ_INDEX, self.leader, 0, context=context)
        else:
            raise ProposalDropped(f"node {self.id}: no leader known")
        self.invariants()

    def transfer_leadership(self, target: NodeId) -> None:
        """Leader only (raises ProposalDropped otherwise). Unknown or self target: ignored."""
        if self.role is not Role.LEADER:
            raise ProposalDropped(f"node {self.id}: not leader")
        if target == self.id or target not in self.conf.voters or target == self._transferee:
            return
        self._transferee = target
        self._elapsed = 0
        pr = self._prs[target]
        if pr.match == self._log.last_index():
            self._send(MsgType.TIMEOUT_NOW, target)
        else:
            self._maybe_send_append(target, True)
        self.invariants()

    def campaign(self) -> None:
        """Start an election now (pre-vote first if configured). No-op for leaders/non-voters."""
        self._hup(transfer=False)
        self.invariants()

    def compact(self, index: int, data: bytes) -> None:
        """The application snapshotted its state at `index` (<= applied): drop the log up to it.

        No Ready is produced; the caller persists its own snapshot (`self.snapshot`) and may drop
        stored entries <= index."""
        assert index <= self.applied, (index, self.applied)
        if index <= self._log.snap_index:
            return
        term = self._log.term_at(index)
        assert term is not None
        conf = self._conf_at(index)
        self.snapshot = Snapshot(SnapshotMeta(index, term, conf), data)
        self._log.compact(index)
        self._base_conf = conf
        self._conf_hist = [h for h in self._conf_hist if h[0] > index]
        self.invariants()

    # ---------------------------------------------------------------- outputs

    def _hard_state(self) -> HardState:
        vote = self._prev_hs.vote if self._vote_hidden else self.vote
        return HardState(self.term, vote, self.commit)

    def _committed_lo(self) -> int:
        return max(self.applied + 1, self._log.first_index())

    def has_ready(self) -> bool:
        if self._msgs or self._read_states or self._pending_snapshot is not None:
            return True
        if self._log.has_unstable() or self.commit >= self._committed_lo():
            return True
        if self._prev_soft.leader != self.leader or self._prev_soft.role is not self.role:
            return True
        prev = self._prev_hs
        vote = prev.vote if self._vote_hidden else self.vote
        return self.term != prev.term or self.commit != prev.commit or vote != prev.vote

    def ready(self) -> Ready:
        soft = SoftState(self.leader, self.role)
        hs = self._hard_state()
        prev = self._prev_hs
        entries = self._log.unstable()
        snap = self._pending_snapshot
        sync = bool(entries) or snap is not None or hs.term != prev.term or hs.vote != prev.vote
        return Ready(
            soft_state=None if soft == self._prev_soft else soft,
            hard_state=None if hs == prev else hs,
            entries=entries,
            snapshot=snap,
            committed_entries=self._log.slice(self._committed_lo(), self.commit + 1),
            messages=tuple(self._msgs),
            read_states=tuple(self._read_states),
            must_sync=sync,
        )

    def advance(self, rd: Ready) -> None:
        assert len(rd.messages) <= len(self._msgs), "advance() without the matching ready()"
        assert len(rd.read_states) <= len(self._read_states)
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.snapshot is not None:
            if rd.snapshot is self._pending_snapshot:
                self._pending_snapshot = None
            self.applied = max(self.applied, rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            self._log.stable_to(last.index, last.term)
        if rd.committed_entries:
            self.applied = max(self.applied, rd.committed_entries[-1].index)
        del self._msgs[: len(rd.messages)]
        del self._read_states[: len(rd.read_states)]
        self.invariants()

    # ---------------------------------------------------------------- role changes

    def _reset(self, term: int, keep_timer: bool = False) -> None:
        if term != self.term:
            assert term > self.term, (term, self.term)
            self.term = term
            self.vote = NONE
            self._vote_hidden = False
        self.leader = NONE
        self._hb_elapsed = 0
        if not keep_timer:
            self._elapsed = 0
            self._timeout = self._rng.randint(self._cfg.election_tick_min,
                                              self._cfg.election_tick_max)
        self._votes = {}
        self._prs = {}
        self._peer_ids = ()
        self._transferee = NONE
        self._uncommitted = 0
        self._reads = {}
        self._deferred_reads = []

    def _become_follower(self, term: int, leader: NodeId, keep_timer: bool = False) -> None:
        self._reset(term, keep_timer)
        self.leader = leader
        self.role = Role.FOLLOWER
        self._step = self._step_follower

    def _become_pre_candidate(self) -> None:
        assert self.role is not Role.LEADER
        self.role = Role.PRE_CANDIDATE
        self._step = self._step_candidate
        self._votes = {}
        self.leader = NONE
        self._elapsed = 0

    def _become_candidate(self) -> None:
        assert self.role is not Role.LEADER
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._step = self._step_candidate

    def _become_leader(self) -> None:
        assert self.role is Role.CANDIDATE, self.role
        self._reset(self.term)
        self.leader = self.id
        self.role = Role.LEADER
        self._step = self._step_leader
        self._sync_progress()
        self._noop_index = self._log.last_index() + 1
        self._append_local((Entry(self.term, self._noop_index),))
        self._bcast_append()

    def _promotable(self) -> bool:
        return self.id in self.conf.voters

    # ---------------------------------------------------------------- ticks

    def _tick_one(self) -> None:
        if self.role is Role.LEADER:
            self._tick_leader()
            return
        self._elapsed += 1
        if self._promotable() and self._elapsed >= self._timeout:
            self._elapsed = 0
            self._hup(transfer=False)

    def _tick_leader(self) -> None:
        cfg = self._cfg
        self._elapsed += 1
        self._hb_elapsed += 1
        if self._elapsed >= cfg.election_tick_min:
            self._elapsed = 0
            if cfg.check_quorum and not self._quorum_active():
                self._become_follower(self.term, NONE)
                return
            self._transferee = NONE
        if self._hb_elapsed >= cfg.heartbeat_tick:
            self._hb_elapsed = 0
            self._bcast_heartbeat()

    def _quorum_active(self) -> bool:
        """True if a quorum of voters (self included) was heard from; resets the marks."""
        active = 0
        for vid in self.conf.voters:
            pr = self._prs.get(vid)
            if vid == self.id or (pr is not None and pr.recent_active):
                active += 1
        for pid in self._peer_ids:
            self._prs[pid].recent_active = False
        return active >= self._quorum()

    def _quorum(self) -> int:
        return len(self.conf.voters) // 2 + 1

    # ---------------------------------------------------------------- elections

    def _hup(self, transfer: bool) -> None:
        if self.role is Role.LEADER or not self._promotable():
            return
        if self._cfg.pre_vote and not transfer:
            self._become_pre_candidate()
            kind, term = MsgType.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            kind, term = MsgType.VOTE, self.term
        self._votes[self.id] = True
        if self._tally() > 0:
            self._won_election()
            return
        context = TRANSFER if transfer else b""
        last_index, last_term = self._log.last_index(), self._log.last_term()
        for vid in self.conf.voters:
            if vid != self.id:
                self._send_raw(kind, vid, term, log_term=last_term, index=last_index,
                               context=context)

    def _won_election(self) -> None:
        if self.role is Role.PRE_CANDIDATE:
            self._become_candidate()
            self._votes[self.id] = True
            if self._tally() > 0:
                self._become_leader()
                return
            last_index, last_term = self._log.last_index(), self._log.last_term()
            for vid in self.conf.voters:
                if vid != self.id:
                    self._send(MsgType.VOTE, vid, log_term=last_term, index=last_index)
        else:
            self._become_leader()

    def _tally(self) -> int:
        """1 won, -1 lost, 0 pending (votes of voters only)."""
        granted = sum(1 for v, g in self._votes.items() if g and v in self.conf.voters)
        rejected = sum(1 for v, g in self._votes.items() if not g and v in self.conf.voters)
        q = self._quorum()
        if granted >= q:
            return 1
        if rejected > len(self.conf.voters) - q:
            return -1
        return 0

    def _step_higher_term(self, m: Message) -> bool:
        """m.term > self.term. False if the message must be ignored."""
        t = m.type
        if t in (MsgType.PRE_VOTE, MsgType.VOTE):
            cfg = self._cfg
            in_lease = (
                cfg.check_quorum
                and self.leader != NONE
                and self._elapsed < cfg.election_tick_min
            )
            if in_lease and m.context != TRANSFER:
                return False
        if t is MsgType.PRE_VOTE or (t is MsgType.PRE_VOTE_RESP and not m.reject):
            return True
        from_leader = t in _LEADER_MSGS
        # Raft, Figure 2: the election timer restarts only on AppendEntries from the current leader
        # or on granting a vote. Seeing a higher term in a vote request or a response does not
        # restart it (as in LogCabin; etcd restarts it): otherwise every candidate that cannot win
        # pushes the others back by a whole timeout. A deposed leader starts a fresh timer.
        keep_timer = not from_leader and self.role is not Role.LEADER
        self._become_follower(m.term, m.src if from_leader else NONE, keep_timer)
        return True

    def _step_lower_term(self, m: Message) -> None:
        t = m.type
        if t is MsgType.APPEND and Bug.ACCEPT_STALE_TERM_APPEND in self._bugs:
            if self.role is Role.FOLLOWER:
                self._handle_append(m)  # Bug: a deposed leader's entries are accepted
            return
        if t in (MsgType.APPEND, MsgType.HEARTBEAT):
            if self._cfg.check_quorum or self._cfg.pre_vote:
                self._send(MsgType.APPEND_RESP, m.src)  # tells the stale leader our term
        elif t is MsgType.PRE_VOTE:
            self._send(MsgType.PRE_VOTE_RESP, m.src, reject=True)

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type is MsgType.PRE_VOTE
        resp = MsgType.PRE_VOTE_RESP if pre else MsgType.VOTE_RESP
        can_vote = (
            self.vote == m.src
            or (self.vote == NONE and self.leader == NONE)
            or (pre and m.term > self.term)
        )
        last_term = self._log.last_term()
        log_ok = m.log_term > last_term or (
            m.log_term == last_term and m.index >= self._log.last_index()
        )
        if can_vote and (Bug.VOTE_WITHOUT_LOG_CHECK in self._bugs or log_ok):
            self._send_raw(resp, m.src, m.term)
            if not pre:
                self._elapsed = 0
                if self.vote != m.src:
                    assert self.vote == NONE, (self.vote, m.src)
                    self.vote = m.src
                    # Bug.VOTE_NOT_PERSISTED: Ready.hard_state keeps the previous vote.
                    self._vote_hidden = Bug.VOTE_NOT_PERSISTED in self._bugs
        else:
            self._send(resp, m.src, reject=True)

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in _LEADER_MSGS:
            self._become_follower(m.term, m.src)
            self._step_follower(m)
            return
        expect = MsgType.PRE_VOTE_RESP if self.role is Role.PRE_CANDIDATE else MsgType.VOTE_RESP
        if t is not expect:
            return  # PROPOSE / READ_INDEX without a leader: dropped
        self._votes.setdefault(m.src, not m.reject)
        result = self._tally()
        if result > 0:
            self._won_election()
        elif result < 0:
            self._become_follower(self.term, NONE)

    # ---------------------------------------------------------------- follower

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t in _LEADER_MSGS:
            self._elapsed = 0
            self.leader = m.src
            if t is MsgType.APPEND:
                self._handle_append(m)
            elif t is MsgType.HEARTBEAT:
                self._handle_heartbeat(m)
            else:
                self._handle_snapshot(m)
        elif t is MsgType.PROPOSE:
            if self.leader != NONE and m.src != self.leader:
                self._send_raw(MsgType.PROPOSE, self.leader, 0, entries=m.entries)
        elif t is MsgType.TIMEOUT_NOW:
            self._hup(transfer=True)
        elif t is MsgType.READ_INDEX_RESP:
            self._read_states.append(ReadState(m.index, m.context))

    def _handle_append(self, m: Message) -> None:
        log = self._log
        if m.index < self.commit:
            self._send(MsgType.APPEND_RESP, m.src, index=self.commit)
            return
        if log.term_at(m.index) != m.log_term:
            hint, hint_term = log.find_conflict_by_term(min(m.index, log.last_index()), m.log_term)
            self._send(MsgType.APPEND_RESP, m.src, index=m.index, reject=True,
                       reject_hint=hint, log_term=hint_term)
            return
        last_new = m.index + len(m.entries)
        if m.entries:
            self._append_from_leader(m.entries)
        # Bug.COMMIT_BEYOND_MATCH: cap at our last index instead of the last verified entry.
        cap = log.last_index() if Bug.COMMIT_BEYOND_MATCH in self._bugs else last_new
        self._commit_to(min(m.commit, cap))
        self._send(MsgType.APPEND_RESP, m.src, index=last_new)

    def _append_from_leader(self, ents: tuple[Entry, ...]) -> None:
        log = self._log
        ci = log.find_conflict(ents)
        if ci == 0:
            return
        new = ents[ci - ents[0].index :]
        if ci > log.last_index():
            log.append(new)
            self._note_conf_entries(new)
            return
        assert ci > self.commit or self._bugs, ("truncating committed entry", ci, self.commit)
        if Bug.NO_TRUNCATE_ON_CONFLICT in self._bugs:
            log.overwrite_in_place(new)  # Bug: the stale suffix after `new` survives
        else:
            log.truncate_and_append(new)
        self._rebuild_conf()

    def _handle_heartbeat(self, m: Message) -> None:
        self._commit_to(min(m.commit, self._log.last_index()))
        self._send(MsgType.HEARTBEAT_RESP, m.src, context=m.context)

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        assert snap is not None
        meta = snap.meta
        if meta.index <= self.commit:
            self._send(MsgType.APPEND_RESP, m.src, index=self.commit)
            return
        if self._log.term_at(meta.index) == meta.term:
            self._commit_to(meta.index)  # we already hold it: fast-forward
            self._send(MsgType.APPEND_RESP, m.src, index=self.commit)
            return
        self._log.restore(meta.index, meta.term)
        self.snapshot = snap
        self._pending_snapshot = snap
        self.commit = meta.index
        self._base_conf = meta.conf
        self._conf_hist = []
        self.conf = meta.conf
        self._send(MsgType.APPEND_RESP, m.src, index=meta.index)

    def _commit_to(self, index: int) -> None:
        if index > self.commit:
            assert index <= self._log.last_index(), (index, self._log.last_index())
            self.commit = index

    # ---------------------------------------------------------------- membership

    def _note_conf_entries(self, ents: tuple[Entry, ...]) -> None:
        """CONF_CHANGE entries take effect when appended."""
        for e in ents:
            if e.kind is EntryKind.CONF_CHANGE:
                self.conf = apply_conf_change(self.conf, ConfChange.decode(e.data))
                self._conf_hist.append((e.index, self.conf))
                if self.role is Role.LEADER:
                    self._sync_progress()

    def _rebuild_conf(self) -> None:
        """After a truncation: recompute membership from the snapshot conf and the log."""
        self.conf = self._base_conf
        self._conf_hist = []
        log = self._log
        self._note_conf_entries(log.slice(log.first_index(), log.last_index() + 1))

    def _conf_at(self, index: int) -> ConfState:
        conf = self._base_conf
        for idx, c in self._conf_hist:
            if idx > index:
                break
            conf = c
        return conf

    def _pending_conf_index(self) -> int:
        return self._conf_hist[-1][0] if self._conf_hist else 0

    def _conf_change_refusal(self, cc: ConfChange) -> str:
        if self.role is not Role.LEADER:
            return f"node {self.id}: not leader"
        if self._log.term_at(self.commit) != self.term:
            return f"node {self.id}: no entry of term {self.term} committed yet"
        if self._pending_conf_index() > self.commit:
            return f"node {self.id}: conf change at {self._pending_conf_index()} uncommitted"
        new = apply_conf_change(self.conf, cc)
        if new == self.conf:
            return f"node {self.id}: {cc} changes nothing"
        if not new.voters:
            return f"node {self.id}: {cc} removes the last voter"
        return ""

    def _sync_progress(self) -> None:
        """Leader: one Progress per member (and self), new members probed from the log end."""
        members = set(self.conf.voters) | set(self.conf.learners) | {self.id}
        last = self._log.last_index()
        for nid in sorted(members):
            if nid not in self._prs:
                match = last if nid == self.id else 0
                self._prs[nid] = Progress(match, last + 1, self._cfg.max_inflight_msgs)
        for nid in sorted(self._prs):
            if nid not in members:
                del self._prs[nid]
        if self._transferee not in members:
            self._transferee = NONE
        self._peer_ids = tuple(sorted(nid for nid in self._prs if nid != self.id))
        assert set(self._prs) == members, (sorted(self._prs), self.conf)
        for pr in self._prs.values():
            pr.check()

    # ---------------------------------------------------------------- leader

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t is MsgType.PROPOSE:
            ents = tuple(e for e in m.entries if e.kind is EntryKind.NORMAL)
            if ents:
                self._leader_propose(ents)  # refusals drop forwarded proposals silently
            return
        if t is MsgType.READ_INDEX:
            self._leader_read(m.src, m.context)
            return
        pr = self._prs.get(m.src)
        if pr is None:
            return
        if t is MsgType.APPEND_RESP:
            self._on_append_resp(m, pr)
        elif t is MsgType.HEARTBEAT_RESP:
            self._on_heartbeat_resp(m, pr)

    def _leader_propose(self, ents: tuple[Entry, ...]) -> str:
        """Append proposals (term/index assigned here). Returns a refusal reason or ""."""
        assert self.role is Role.LEADER
        if self._transferee != NONE:
            return f"node {self.id}: leadership transfer to {self._transferee} in progress"
        if self.id not in self.conf.voters:
            return f"node {self.id}: leader is being removed"
        size = sum(e.size() for e in ents)
        limit = self._cfg.max_uncommitted_bytes
        if self._uncommitted > 0 and self._uncommitted + size > limit:
            return f"node {self.id}: max_uncommitted_bytes {limit} reached"
        first = self._log.last_index() + 1
        new = tuple(Entry(self.term, first + i, e.kind, e.data) for i, e in enumerate(ents))
        self._uncommitted += size
        self._append_local(new)
        if self.role is Role.LEADER:
            self._bcast_append()
        return ""

    def _append_local(self, ents: tuple[Entry, ...]) -> None:
        self._log.append(ents)
        self._note_conf_entries(ents)
        self._prs[self.id].maybe_update(self._log.last_index())
        self._maybe_commit()

    def _maybe_commit(self) -> bool:
        voters = self.conf.voters
        q = self._quorum()
        matches = sorted((self._prs[v].match for v in voters), reverse=True)
        mci = matches[q - 1]
        if mci <= self.commit:
            return False
        # Figure 8: only an entry of the current term is committed by counting replicas.
        if self._log.term_at(mci) != self.term and Bug.COMMIT_OLD_TERM_BY_COUNT not in self._bugs:
            return False
        old = self.commit
        self.commit = mci
        self._on_commit_advanced(old)
        return True

    def _on_commit_advanced(self, old: int) -> None:
        freed = sum(
            e.size() for e in self._log.slice(old + 1, self.commit + 1)
            if e.term == self.term and e.index != self._noop_index
        )
        self._uncommitted = max(0, self._uncommitted - freed)
        if self.id not in self.conf.voters and self._pending_conf_index() <= self.commit:
            self._bcast_append()  # tell the others about the commit before leaving
            self._become_follower(self.term, NONE)  # removed leader steps down
            return
        if self._deferred_reads and self._log.term_at(self.commit) == self.term:
            deferred, self._deferred_reads = self._deferred_reads, []
            for src, ctx in deferred:
                self._leader_read(src, ctx)

    def _on_append_resp(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                hint, _ = self._log.find_conflict_by_term(
                    min(hint, self._log.last_index()), m.log_term
                )
            if pr.maybe_decr_to(m.index, hint):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._maybe_send_append(m.src, True)
            return
        if m.index > self._log.last_index():
            return  # bogus ack (only reachable with planted bugs)
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT:
            if pr.match + 1 >= self._log.first_index():
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.free_le(m.index)
        if self._maybe_commit():
            if self.role is not Role.LEADER:
                return
            self._bcast_append()
        elif was_paused:
            self._maybe_send_append(m.src, True)
        while self._maybe_send_append(m.src, False):
            pass
        if m.src == self._transferee and pr.match == self._log.last_index():
            self._send(MsgType.TIMEOUT_NOW, m.src)

    def _on_heartbeat_resp(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state is ProgressState.SNAPSHOT:
            pr.become_probe()  # no ack for the snapshot yet: assume lost, probe again
        elif pr.state is ProgressState.REPLICATE and pr.inflights_full():
            pr.inflights.popleft()  # an APPEND may be lost: let one more through
        if pr.match < self._log.last_index():
            self._maybe_send_append(m.src, True)
        if m.context:
            self._on_read_ack(m.src, m.context)

    def _maybe_send_append(self, to: NodeId, send_if_empty: bool) -> bool:
        pr = self._prs[to]
        if pr.is_paused():
            return False
        log = self._log
        prev = pr.next - 1
        prev_term = log.term_at(prev)
        if prev_term is None:
            return self._send_snapshot(to, pr)
        ents = log.slice_limited(pr.next, self._cfg.max_size_per_msg) if prev < log.last_index() \
            else ()
        if not ents and not send_if_empty:
            return False
        self._send(MsgType.APPEND, to, index=prev, log_term=prev_term, entries=ents,
                   commit=self.commit)
        if ents:
            pr.sent_entries(ents[-1].index)
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: NodeId, pr: Progress) -> bool:
        snap = self.snapshot
        assert snap is not None, "log compacted without a snapshot"
        if pr.match >= snap.meta.index:
            return False
        self._send(MsgType.SNAPSHOT, to, snapshot=snap)
        pr.become_snapshot(snap.meta.index)
        return True

    def _bcast_append(self) -> None:
        for pid in self._peer_ids:
            self._maybe_send_append(pid, True)

    def _bcast_heartbeat(self) -> None:
        ctx = next(reversed(self._reads)) if self._reads else b""
        full = Bug.COMMIT_BEYOND_MATCH in self._bugs
        for pid in self._peer_ids:
            # Capped at the follower's match: a heartbeat verifies no log prefix, so a follower
            # must not commit past what the leader knows it holds. (Bug.COMMIT_BEYOND_MATCH sends
            # the full commit, as a paper-style empty AppendEntries would, and the follower then
            # trusts it up to its own last index.)
            commit = self.commit if full else min(self._prs[pid].match, self.commit)
            self._send(MsgType.HEARTBEAT, pid, commit=commit, context=ctx)

    # ---------------------------------------------------------------- read index

    def _leader_read(self, src: NodeId, ctx: bytes) -> bool:
        """Register a read-index request. False when refused by max_pending_reads."""
        if len(self._reads) + len(self._deferred_reads) >= self._cfg.max_pending_reads:
            return False
        if self._log.term_at(self.commit) != self.term:
            self._deferred_reads.append((src, ctx))  # wait for our first commit
            return True
        if ctx in self._reads:
            return True
        req = _ReadRequest(self.commit, src, {self.id})
        self._reads[ctx] = req
        if self._acked_by_quorum(req):
            self._release_reads(ctx)
        else:
            self._bcast_heartbeat()
        return True

    def _acked_by_quorum(self, req: _ReadRequest) -> bool:
        return sum(1 for v in self.conf.voters if v in req.acks) >= self._quorum()

    def _on_read_ack(self, src: NodeId, ctx: bytes) -> None:
        req = self._reads.get(ctx)
        if req is None:
            return
        req.acks.add(src)
        if self._acked_by_quorum(req):
            self._release_reads(ctx)

    def _release_reads(self, ctx: bytes) -> None:
        """Answer every request registered up to and including `ctx`."""
        assert ctx in self._reads
        while self._reads:
            c = next(iter(self._reads))
            req = self._reads.pop(c)
            if req.src == self.id:
                self._read_states.append(ReadState(req.index, c))
            else:
                self._send(MsgType.READ_INDEX_RESP, req.src, index=req.index, context=c)
            if c == ctx:
                break

    # ---------------------------------------------------------------- sending

    def _send(self, kind: MsgType, to: NodeId, **kw: Unpack[MessageFields]) -> None:
        self._msgs.append(Message(kind, self.id, to, self.term, **kw))

    def _send_raw(self, kind: MsgType, to: NodeId, term: int,
                  **kw: Unpack[MessageFields]) -> None:
        self._msgs.append(Message(kind, self.id, to, term, **kw))

    # ---------------------------------------------------------------- invariants

    def invariants(self) -> None:
        """Dense O(members) checks; runs at the end of every input (kept cheap: hot path)."""
        log = self._log
        snap_index = log._offset
        last = snap_index + len(log._ents)
        commit = self.commit
        assert 0 <= self.applied <= commit <= last, (self.applied, commit, last)
        assert snap_index <= commit, (snap_index, commit)
        assert snap_index < log.unstable_from <= last + 1, (log.unstable_from, last)
        assert self._pending_snapshot is not None or self.applied >= snap_index
        assert log.last_term() <= self.term or Bug.ACCEPT_STALE_TERM_APPEND in self._bugs
        assert self._cfg.election_tick_min <= self._timeout <= self._cfg.election_tick_max
        assert self._elapsed >= 0
        if self.role is Role.LEADER:
            self._leader_invariants(last)
            return
        assert not self._prs, "non-leader with progress"
        assert self._transferee == NONE
        assert not self._reads and not self._deferred_reads
        if self.role is Role.CANDIDATE:
            assert self.vote == self.id
            assert self.leader == NONE
        elif self.role is Role.PRE_CANDIDATE:
            assert self.leader == NONE

    def _leader_invariants(self, last: int) -> None:
        cfg = self._cfg
        assert self.leader == self.id
        assert self.vote == self.id
        assert self._elapsed < cfg.election_tick_min
        assert self._hb_elapsed < cfg.heartbeat_tick
        prs = self._prs
        assert prs[self.id].match == last
        assert len(prs) == len(self._peer_ids) + 1, (sorted(prs), self._peer_ids)
        for pr in prs.values():
            assert pr.match < pr.next <= last + 1, (pr, last)
        assert self._transferee == NONE or self._transferee in prs
        assert self._uncommitted >= 0
        assert len(self._reads) + len(self._deferred_reads) <= cfg.max_pending_reads
