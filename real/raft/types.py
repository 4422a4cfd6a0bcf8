"""The Raft contract: every value that crosses the boundary of `RaftNode`.

Both shells (`real/node`, `model/`) and every test speak only these types. They are frozen, slotted
dataclasses and enums, so a value can be hashed, compared and printed deterministically (no `id()`,
no set ordering).

Time is counted in ticks; a shell decides how long a tick is. Randomness comes in as an injected
`random.Random`. Nothing here performs I/O.

The driving loop (identical in both shells, and tested):

    rd = node.ready()          # only if node.has_ready()
    1. persist rd.snapshot, then rd.entries, then rd.hard_state; fsync if rd.must_sync
    2. send rd.messages        # never before step 1 is durable
    3. apply rd.committed_entries (and restore rd.snapshot first, if any); serve rd.read_states
    4. node.advance(rd)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TypedDict

NodeId = int
"""Raft member ids are positive integers; 0 means "none" (no vote, no leader)."""

NONE: NodeId = 0


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class EntryKind(enum.Enum):
    NORMAL = "normal"
    """An application command (`data` is opaque to Raft). A leader's first entry of its term is a
    NORMAL entry with empty data (the no-op that lets it commit earlier-term entries)."""
    CONF_CHANGE = "conf-change"
    """`data` is `ConfChange.encode()`. Takes effect on append (single-server change)."""


class ConfChangeType(enum.Enum):
    ADD_VOTER = "add-voter"
    REMOVE_VOTER = "remove-voter"
    ADD_LEARNER = "add-learner"


@dataclass(frozen=True, slots=True)
class ConfChange:
    type: ConfChangeType
    node_id: NodeId

    def encode(self) -> bytes:
        return f"{self.type.value}:{self.node_id}".encode()

    @staticmethod
    def decode(data: bytes) -> ConfChange:
        kind, _, node = data.decode().partition(":")
        return ConfChange(ConfChangeType(kind), int(node))


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()

    def __post_init__(self) -> None:
        assert list(self.voters) == sorted(set(self.voters)), self.voters
        assert list(self.learners) == sorted(set(self.learners)), self.learners
        assert not set(self.voters) & set(self.learners)


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Bytes this entry counts for against `max_size_per_msg`."""
        return len(self.data) + 24


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message of the same Ready is sent."""

    term: int = 0
    vote: NodeId = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int
    term: int
    conf: ConfState


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes
    """The application's state-machine image at `meta.index` (opaque to Raft)."""


class MsgType(enum.Enum):
    PRE_VOTE = "pre-vote"
    PRE_VOTE_RESP = "pre-vote-resp"
    VOTE = "vote"
    VOTE_RESP = "vote-resp"
    APPEND = "append"
    """AppendEntries with `entries` (possibly empty when probing)."""
    APPEND_RESP = "append-resp"
    HEARTBEAT = "heartbeat"
    """Leader liveness + commit propagation (commit capped at the follower's match); `context`
    carries a pending read-index id when one is being confirmed."""
    HEARTBEAT_RESP = "heartbeat-resp"
    SNAPSHOT = "snapshot"
    """InstallSnapshot: carries `snapshot`."""
    TIMEOUT_NOW = "timeout-now"
    """Leadership transfer: the target campaigns at once, bypassing pre-vote and leases."""
    READ_INDEX = "read-index"
    """A follower forwards a read-index request (its `context`) to the leader."""
    READ_INDEX_RESP = "read-index-resp"
    PROPOSE = "propose"
    """A follower forwards proposals (`entries` with term 0 and index 0) to its leader."""


@dataclass(frozen=True, slots=True)
class Message:
    type: MsgType
    src: NodeId
    dst: NodeId
    term: int
    log_term: int = 0
    """APPEND: term of the entry at `index` (prev). VOTE/PRE_VOTE: term of the candidate's last
    entry."""
    index: int = 0
    """APPEND: index before `entries` (prev). VOTE: candidate's last index. *_RESP: see node.py."""
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    """APPEND_RESP with reject: the follower's last index (a hint for the leader's next probe)."""
    snapshot: Snapshot | None = None
    context: bytes = b""
    """Read-index request id, or b"transfer" on a VOTE caused by TIMEOUT_NOW."""

    def size(self) -> int:
        body = sum(e.size() for e in self.entries)
        if self.snapshot is not None:
            body += len(self.snapshot.data)
        return 64 + body + len(self.context)


class MessageFields(TypedDict, total=False):
    """The optional fields of `Message`, for building one from keywords (`RaftNode._send`)."""

    log_term: int
    index: int
    entries: tuple[Entry, ...]
    commit: int
    reject: bool
    reject_hint: int
    snapshot: Snapshot | None
    context: bytes


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the local applied index reaches `index`."""

    index: int
    context: bytes


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state, reported in Ready when it changes (not persisted)."""

    leader: NodeId
    role: Role


@dataclass(frozen=True, slots=True)
class Ready:
    soft_state: SoftState | None
    """Set when leader or role changed since the last advance()."""
    hard_state: HardState | None
    """Set when term, vote or commit changed: persist it."""
    entries: tuple[Entry, ...]
    """Entries to append to stable storage. They may overwrite a suffix: persisting entry i drops
    every stored entry with index >= i first."""
    snapshot: Snapshot | None
    """A snapshot received from the leader: persist it (replacing the log up to its index) and
    restore the state machine from it before applying `committed_entries`. The node's in-memory log
    restarts empty after the snapshot, so drop stored entries after its index too (they may
    conflict with it); `entries` of the same Ready, if any, follow it."""
    committed_entries: tuple[Entry, ...]
    """Entries now committed and not yet handed out, in index order: apply them."""
    messages: tuple[Message, ...]
    """Send these only after everything above is durable."""
    read_states: tuple[ReadState, ...]
    must_sync: bool
    """True if `hard_state` (term or vote) or `entries` or `snapshot` must be fsynced before
    sending. False when only `commit` moved (losing it is safe)."""


@dataclass(frozen=True, slots=True)
class DurableState:
    """What a node recovers from stable storage at restart (or bootstrap with empty storage)."""

    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()
    """Entries after the snapshot (or from index 1), contiguous."""


class Bug(enum.Enum):
    """Classic Raft bugs that can be planted for test-only bug-finding runs. Never enable in
    serve."""

    VOTE_WITHOUT_LOG_CHECK = "vote-without-log-check"
    """Grant votes without checking that the candidate's log is at least as up to date."""
    COMMIT_OLD_TERM_BY_COUNT = "commit-old-term-by-count"
    """Advance commit over an earlier-term entry because a majority stores it (paper, Figure 8)."""
    VOTE_NOT_PERSISTED = "vote-not-persisted"
    """Send the vote response without marking the vote durable (a crash forgets it)."""
    ACCEPT_STALE_TERM_APPEND = "accept-stale-term-append"
    """Accept AppendEntries from a leader whose term is lower than ours."""
    NO_TRUNCATE_ON_CONFLICT = "no-truncate-on-conflict"
    """Overwrite conflicting entries in place and keep the stale suffix after them."""
    COMMIT_BEYOND_MATCH = "commit-beyond-match"
    """Follower sets commit to the leader's commit capped only at its own last index, not at the
    last entry the leader verified (on APPEND and on heartbeats, which then carry the leader's
    full commit): a stale tail gets committed."""


@dataclass(frozen=True, slots=True)
class RaftConfig:
    election_tick_min: int = 10
    """Randomized election timeout is drawn uniformly from [election_tick_min, election_tick_max]
    (both inclusive) ticks, redrawn at every reset."""
    election_tick_max: int = 19
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    """A leader that has not heard from a quorum within election_tick_min ticks steps down; a node
    that heard from a leader within election_tick_min ticks ignores (pre-)vote requests (lease)."""
    max_inflight_msgs: int = 256
    """Per follower, in replicate state: APPENDs sent and not acknowledged."""
    max_size_per_msg: int = 1 << 20
    """Bytes of entries in one APPEND (at least one entry is always sent)."""
    max_uncommitted_bytes: int = 64 << 20
    """A leader rejects proposals beyond this many uncommitted entry bytes (backpressure)."""
    max_pending_reads: int = 4096
    """Read-index requests outstanding at the leader before new ones are rejected."""
    bugs: frozenset[Bug] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        assert 1 <= self.heartbeat_tick < self.election_tick_min, (
            "heartbeat_tick < election_tick_min")
        assert self.election_tick_min <= self.election_tick_max
        assert self.max_inflight_msgs >= 1
        assert self.max_size_per_msg >= 1


class ProposalDropped(Exception):
    """A proposal was refused: no known leader, leadership transfer in progress, a conf change still
    uncommitted, or the uncommitted-bytes limit reached. The caller may retry."""
