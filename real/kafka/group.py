"""Kafka's classic consumer-group coordinator: JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
DescribeGroups, ListGroups, DeleteGroups, and the membership checks of OffsetCommit.

A pure object (no I/O, no clock, no global random): the broker feeds it decoded request bodies (the
codec's snake_case dicts) with the current time in integer milliseconds and calls `tick(now_ms)`
when `next_deadline_ms()` comes due. Committed offsets are not kept here; the broker stores them
through the meta service and only asks `check_commit` whether a commit is allowed.

How a classic group works (the protocol Kafka clients speak when `group.protocol=classic`):

1. Every consumer sends JoinGroup with the protocols (partition assignors) it supports, each with
   opaque metadata (its subscription). The group enters *PreparingRebalance* and waits until every
   known member has (re)joined, or until the rebalance timeout (the largest of the members'
   `rebalance_timeout_ms`) passes; dynamic members that did not rejoin by then are removed. The
   first rebalance of an empty group also waits `initial_rebalance_delay_ms` (Kafka's
   `group.initial.rebalance.delay.ms`), extended by the same delay each time a new member arrives
   during the very first generation, bounded by the rebalance timeout.
2. The join completes: the generation id goes up by one, a protocol all members support is chosen
   (each member votes for the first of its own protocols that everyone supports; most votes wins,
   ties go to the earliest-joined voter's choice), and every waiting JoinGroup is answered. The
   leader (the first member to join, kept as long as it keeps rejoining) receives every member's
   metadata; followers receive an empty member list. State: *CompletingRebalance*.
3. Members send SyncGroup; followers' replies wait until the leader's SyncGroup (carrying every
   member's assignment) arrives, then all fire together. State: *Stable*. A member that syncs later
   gets its stored assignment at once.
4. Members heartbeat. While a rebalance is under way the heartbeat answers REBALANCE_IN_PROGRESS,
   which tells the consumer to rejoin. A member whose session (`session_timeout_ms` since its last
   heartbeat, join, sync or commit) runs out is removed and a rebalance starts; so is every member
   that has not sent SyncGroup within the rebalance timeout after the join completed.
5. When the last member leaves, the group becomes *Empty* (its generation still goes up by one);
   *Dead* is the state of a deleted group (and what DescribeGroups reports for unknown groups).

Supported extensions: KIP-62 (separate session and rebalance timeouts; JoinGroup v0 has no
rebalance timeout, its session timeout is used), KIP-394 (JoinGroup v4+ from a dynamic member
without a member id is answered MEMBER_ID_REQUIRED with a fresh id; that *pending* member must
rejoin with the id within its session timeout, and a rebalance waits for it), KIP-345 (static
membership: a member with `group_instance_id` keeps its identity across restarts; rejoining with an
empty member id replaces the old member id, fences the old one (FENCED_INSTANCE_ID), and does not
rebalance a Stable group if the chosen protocol would not change; static members are not removed
by the rebalance timeout, only by their session timeout or an explicit LeaveGroup v3, which can
name them by instance id alone).

Reply guarantees: `join` and `sync` take a `reply(body)` callable and call it exactly once, either
before returning or later (from another call or from `tick`). A JoinGroup or SyncGroup that is
superseded by a newer one from the same member id gets REBALANCE_IN_PROGRESS; one whose member is
removed gets UNKNOWN_MEMBER_ID; one whose static identity is taken over gets FENCED_INSTANCE_ID.
Replies are queued and fired after the coordinator's state is consistent again, so a reply
callable may safely call back into the coordinator.

Member ids are `f"{client_id}-{member_prefix}-{n}"` (`group_instance_id` instead of the client id
for static members), `n` a per-coordinator counter, so runs are deterministic; the shell passes a
random `member_prefix` per broker incarnation so ids never repeat across restarts. Members and
groups are iterated in insertion (join / creation) order.

Limits: `group_max_size` members (plus pending members) per group (GROUP_MAX_SIZE_REACHED beyond);
session timeouts outside [min_session_timeout_ms, max_session_timeout_ms] are refused
(INVALID_SESSION_TIMEOUT). A new member may wait at most NEW_MEMBER_JOIN_TIMEOUT_MS in its first
join. Groups live until `delete`; the broker deletes groups whose offsets expire.
"""

from __future__ import annotations

import enum
import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from real.kafka import errors

Reply = Callable[[dict], None]

NEW_MEMBER_JOIN_TIMEOUT_MS = 300_000  # Kafka's GroupCoordinator.NewMemberJoinTimeoutMs
AUTHORIZED_OPERATIONS_OMITTED = -2147483648  # INT32_MIN: "not computed" in DescribeGroups v3+
UNKNOWN_MEMBER = ""  # the member_id of a consumer that has not joined yet


class GroupState(enum.Enum):
    """The classic group states; `.value` is the string DescribeGroups / ListGroups report."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


EMPTY = GroupState.EMPTY
PREPARING = GroupState.PREPARING_REBALANCE
COMPLETING = GroupState.COMPLETING_REBALANCE
STABLE = GroupState.STABLE
DEAD = GroupState.DEAD

# The one transition table: new state -> the states it may be entered from (Kafka's
# validPreviousStates). `_transition` is the only place `Group.state` changes.
ALLOWED_FROM: dict[GroupState, tuple[GroupState, ...]] = {
    PREPARING: (EMPTY, COMPLETING, STABLE),
    COMPLETING: (PREPARING,),
    STABLE: (COMPLETING,),
    EMPTY: (PREPARING,),
    DEAD: (EMPTY, PREPARING, COMPLETING, STABLE, DEAD),
}


@dataclass(frozen=True, slots=True)
class JoinArgs:
    """One JoinGroup request, normalised (protocols as ((name, metadata), ...) in the member's
    preference order, duplicates dropped; rebalance timeout defaulted to the session timeout)."""

    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    session_ms: int
    rebalance_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    reply: Reply


@dataclass(slots=True, eq=False)
class Member:
    """A member of a group. `join_reply` is set while its JoinGroup waits (PreparingRebalance
    only), `sync_reply` while its SyncGroup waits for the leader (CompletingRebalance only).
    `deadline_ms` is when its session runs out (for a new member still in its first join: when
    NEW_MEMBER_JOIN_TIMEOUT_MS runs out)."""

    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    session_ms: int
    rebalance_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    deadline_ms: int
    assignment: bytes = b""
    join_reply: Reply | None = None
    sync_reply: Reply | None = None
    is_new: bool = True

    def metadata(self, protocol: str | None) -> bytes:
        for name, meta in self.protocols:
            if name == protocol:
                return meta
        return b""

    def can_expire(self) -> bool:
        """Members waiting for a rebalance to finish are kept alive by it (Kafka's
        hasSatisfiedHeartbeat), except new members, which NEW_MEMBER_JOIN_TIMEOUT_MS bounds."""
        if self.sync_reply is not None:
            return False
        return self.join_reply is None or self.is_new


@dataclass(slots=True, eq=False)
class Group:
    group_id: str
    state: GroupState = EMPTY
    generation_id: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: dict[str, Member] = field(default_factory=dict)  # in join order
    static_members: dict[str, str] = field(default_factory=dict)  # instance id -> member id
    pending: dict[str, int] = field(default_factory=dict)  # KIP-394 member id -> deadline
    pending_sync: dict[str, None] = field(default_factory=dict)  # ordered set: not synced yet
    protocol_counts: dict[str, int] = field(default_factory=dict)  # name -> members offering it
    join_deadline_ms: int | None = None  # PreparingRebalance: initial delay or rebalance timeout
    initial_delay: bool = False  # the join timer is the initial-rebalance-delay one
    join_remaining_ms: int = 0  # how far the initial delay may still be extended
    new_member_added: bool = False
    sync_deadline_ms: int | None = None  # when members that have not synced are removed
    due_ms: int | None = None  # a lower bound of every deadline above (see GroupCoordinator)

    def count_protocols(self, member: Member, sign: int) -> None:
        counts = self.protocol_counts
        for name, _ in member.protocols:
            left = counts.get(name, 0) + sign
            if left:
                counts[name] = left
            else:
                del counts[name]

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_ms for m in self.members.values()), default=0)

    def all_joined(self) -> bool:
        if self.pending:
            return False
        return all(m.join_reply is not None for m in self.members.values())


TICK_ROUNDS_MAX = 8
"""Rounds of one `tick`: each state change at a deadline can set at most a few more at `now`."""


class GroupCoordinator:
    """All classic groups of one broker. See the module docstring for the protocol.

    Public API: `join`, `sync` (replies through a callable), `heartbeat`, `leave` (return the
    response body), `describe`, `list_groups`, `delete`, `check_commit`, `touch_for_commit`,
    `tick`, `next_deadline_ms`, plus `group_state` / `generation` for introspection and
    `invariants` for tests.

    Costs: heartbeat, sync, leave, check_commit and `next_deadline_ms` are O(1) amortised in
    the group size (a leave or expiry that starts a rebalance is O(members)); a join is
    O(distinct protocols + members); `tick` visits only groups whose cached timer bound is due.
    """

    def __init__(self, *, member_prefix: str, initial_rebalance_delay_ms: int = 0,
                 min_session_timeout_ms: int = 1000, max_session_timeout_ms: int = 1_800_000,
                 group_max_size: int = 10_000) -> None:
        assert initial_rebalance_delay_ms >= 0, initial_rebalance_delay_ms
        assert 0 < min_session_timeout_ms <= max_session_timeout_ms
        assert group_max_size > 0, group_max_size
        self.member_prefix = member_prefix
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        self.min_session_timeout_ms = min_session_timeout_ms
        self.max_session_timeout_ms = max_session_timeout_ms
        self.group_max_size = group_max_size
        self._groups: dict[str, Group] = {}
        self._next_member = 0
        # Timers: each group caches `due_ms`, a lower bound of its deadlines, lowered whenever a
        # deadline is set (`_due`) and recomputed exactly when `tick` visits the group; the
        # heap holds (due_ms, group_id) entries, stale ones skipped lazily. Heartbeats only push
        # deadlines later, so they never touch the heap: `next_deadline_ms` is O(1) amortised
        # and `tick` visits only groups with something (possibly) due.
        self._timers: list[tuple[int, str]] = []
        self._outbox: deque[tuple[Reply, dict]] = deque()
        self._seen_generations: dict[str, tuple[Group, int]] = {}  # see invariants
        self._resigned: dict[str, int] = {}
        """Generations of the groups dropped by `resign`: if this broker coordinates a group
        again, its generations go on from there (a member id prefix names one coordinator
        incarnation, and within it a generation is never reused)."""

    # ---- JoinGroup -------------------------------------------------------------------------

    def join(self, now_ms: int, req: dict, version: int, client_id: str | None,
             client_host: str, reply: Reply) -> None:
        """Handle a JoinGroup request (any version 0-5; fields per JoinGroupRequest.json).

        `reply(body)` is called exactly once, now or later, with a JoinGroupResponse body:
        `throttle_time_ms, error_code, generation_id, protocol_type, protocol_name, leader,
        skip_assignment, member_id, members: [{member_id, group_instance_id, metadata}]`.
        On error generation_id is -1, protocol_name and leader are "" and members is empty.
        """
        args = _join_args(req, client_id or "", client_host, reply)
        error = self._join(now_ms, req["group_id"], args, version)
        if error is not None:
            self._outbox.append((reply, join_error(args.member_id, error)))
        self._flush(req["group_id"])

    def _join(self, now: int, group_id: str | None, args: JoinArgs, version: int) -> int | None:
        """Returns an error code to answer with, or None when a reply is queued or pending."""
        if not group_id:
            return errors.INVALID_GROUP_ID
        if not self.min_session_timeout_ms <= args.session_ms <= self.max_session_timeout_ms:
            return errors.INVALID_SESSION_TIMEOUT
        group = self._groups.get(group_id)
        if group is None:
            if args.member_id != UNKNOWN_MEMBER:
                return errors.UNKNOWN_MEMBER_ID
            group = self._groups[group_id] = self._new_group(group_id)
        if not _supports(group, args):
            return errors.INCONSISTENT_GROUP_PROTOCOL
        if args.member_id == UNKNOWN_MEMBER:
            error = self._join_new(now, group, args, version)
        else:
            error = self._join_known(now, group, args)
        if group.state is PREPARING:
            self._try_complete_join(now, group)
        return error

    def _join_new(self, now: int, group: Group, args: JoinArgs, version: int) -> int | None:
        old_id = None if args.instance_id is None else group.static_members.get(args.instance_id)
        if old_id is not None:
            self._replace_static(now, group, old_id, args)
            return None
        if len(group.members) + len(group.pending) >= self.group_max_size:
            return errors.GROUP_MAX_SIZE_REACHED
        member_id = self._new_member_id(args.instance_id or args.client_id)
        if args.instance_id is None and version >= 4:
            group.pending[member_id] = now + args.session_ms
            self._due(group, now + args.session_ms)
            self._outbox.append((args.reply, join_error(member_id, errors.MEMBER_ID_REQUIRED)))
            return None
        self._add_member(now, group, member_id, args)
        return None

    def _join_known(self, now: int, group: Group, args: JoinArgs) -> int | None:
        member_id = args.member_id
        if member_id in group.pending:
            del group.pending[member_id]
            if args.instance_id is not None:
                return errors.UNKNOWN_MEMBER_ID  # static members never get pending ids
            self._add_member(now, group, member_id, args)
            return None
        if _fenced(group, member_id, args.instance_id):
            return errors.FENCED_INSTANCE_ID
        member = group.members.get(member_id)
        if member is None or (args.instance_id is not None
                              and args.instance_id not in group.static_members):
            return errors.UNKNOWN_MEMBER_ID
        state = group.state
        if state is PREPARING:
            self._update_member(now, group, member, args)
            return None
        if state is COMPLETING and member.protocols == args.protocols:
            # it probably lost the join response: answer with the current generation again
            self._touch(now, group, member)
            self._outbox.append((args.reply, _join_ok(group, member)))
            return None
        if state is STABLE and member_id != group.leader_id and member.protocols == args.protocols:
            self._touch(now, group, member)
            self._outbox.append((args.reply, _join_ok(group, member)))
            return None
        if state in (COMPLETING, STABLE):
            self._update_member(now, group, member, args)
            self._prepare_rebalance(now, group)
            return None
        return errors.UNKNOWN_MEMBER_ID

    def _add_member(self, now: int, group: Group, member_id: str, args: JoinArgs) -> None:
        assert member_id not in group.members, member_id
        assert member_id not in group.pending, member_id
        if group.state is PREPARING and group.generation_id == 0:
            group.new_member_added = True
        if not group.members:
            group.protocol_type = args.protocol_type
        if group.leader_id is None:
            group.leader_id = member_id
        member = group.members[member_id] = Member(
            member_id, args.instance_id, args.client_id, args.client_host, args.session_ms,
            args.rebalance_ms, args.protocol_type, args.protocols,
            deadline_ms=now + NEW_MEMBER_JOIN_TIMEOUT_MS, join_reply=args.reply)
        group.count_protocols(member, +1)
        self._due(group, now + NEW_MEMBER_JOIN_TIMEOUT_MS)
        if args.instance_id is not None:
            group.static_members[args.instance_id] = member_id
        if group.state in (EMPTY, COMPLETING, STABLE):
            self._prepare_rebalance(now, group)

    def _update_member(self, now: int, group: Group, member: Member, args: JoinArgs) -> None:
        """A known member rejoins: new protocols/timeouts; its newest JoinGroup is the one that
        will be answered (an older waiting one is answered REBALANCE_IN_PROGRESS now)."""
        if member.join_reply is not None:
            self._outbox.append((member.join_reply,
                                 join_error(member.member_id, errors.REBALANCE_IN_PROGRESS)))
        group.count_protocols(member, -1)
        member.protocols = args.protocols
        group.count_protocols(member, +1)
        member.session_ms = args.session_ms
        member.rebalance_ms = args.rebalance_ms
        member.client_id = args.client_id
        member.client_host = args.client_host
        member.join_reply = args.reply
        self._touch(now, group, member)

    def _replace_static(self, now: int, group: Group, old_id: str, args: JoinArgs) -> None:
        """KIP-345: a static member restarted (empty member id, known instance id)."""
        assert args.instance_id is not None
        current_leader = group.leader_id
        member = group.members.pop(old_id)
        if member.join_reply is not None:
            self._outbox.append((member.join_reply,
                                 join_error(old_id, errors.FENCED_INSTANCE_ID)))
            member.join_reply = None
        if member.sync_reply is not None:
            self._outbox.append((member.sync_reply, sync_error(errors.FENCED_INSTANCE_ID)))
            member.sync_reply = None
        new_id = self._new_member_id(args.instance_id)
        member.member_id = new_id
        group.members[new_id] = member
        group.static_members[args.instance_id] = new_id
        if group.leader_id == old_id:
            group.leader_id = new_id
        if old_id in group.pending_sync:
            del group.pending_sync[old_id]
            group.pending_sync[new_id] = None
        self._update_member(now, group, member, args)
        if group.state is STABLE and _select_protocol(group) == group.protocol_name:
            # No rebalance: answer with the current generation. The leader field names the old
            # leader id, so a restarted leader does not compute an assignment nobody would get.
            member.join_reply = None
            body = _join_ok(group, member)
            body["leader"] = current_leader
            body["members"] = []
            self._outbox.append((args.reply, body))
        elif group.state in (STABLE, COMPLETING):
            self._prepare_rebalance(now, group)
        assert group.state is not EMPTY

    def _new_member_id(self, prefix: str) -> str:
        self._next_member += 1
        return f"{prefix}-{self.member_prefix}-{self._next_member}"

    # ---- rebalance ---------------------------------------------------------------------------

    def _prepare_rebalance(self, now: int, group: Group) -> None:
        if group.state is COMPLETING:
            for member in group.members.values():
                member.assignment = b""
                if member.sync_reply is not None:
                    self._outbox.append((member.sync_reply,
                                         sync_error(errors.REBALANCE_IN_PROGRESS)))
                    member.sync_reply = None
                    self._touch(now, group, member)
        group.sync_deadline_ms = None
        group.pending_sync.clear()
        rebalance_ms = group.rebalance_timeout_ms()
        delay = self.initial_rebalance_delay_ms
        if group.state is EMPTY and delay > 0:
            group.initial_delay = True
            group.join_deadline_ms = now + delay
            group.join_remaining_ms = max(rebalance_ms - delay, 0)
            group.new_member_added = False
        else:
            group.initial_delay = False
            group.join_deadline_ms = now + rebalance_ms
        self._due(group, group.join_deadline_ms)
        _transition(group, PREPARING)
        self._try_complete_join(now, group)

    def _try_complete_join(self, now: int, group: Group) -> None:
        assert group.state is PREPARING
        if not group.initial_delay and group.all_joined():
            self._complete_join(now, group)

    def _on_join_deadline(self, now: int, group: Group) -> None:
        if group.initial_delay and group.new_member_added and group.join_remaining_ms > 0:
            group.new_member_added = False
            delay = min(self.initial_rebalance_delay_ms, group.join_remaining_ms)
            group.join_remaining_ms -= delay
            group.join_deadline_ms = now + delay
            self._due(group, group.join_deadline_ms)
            return
        self._complete_join(now, group)

    def _complete_join(self, now: int, group: Group) -> None:
        """End PreparingRebalance: drop dynamic members that did not rejoin, bump the
        generation, choose the protocol and answer every waiting JoinGroup."""
        assert group.state is PREPARING
        for member in list(group.members.values()):
            if member.join_reply is None and member.instance_id is None:
                self._drop(group, member.member_id)
        if group.members and not _elect_joined_leader(group):
            # only static members that have not rejoined: wait for them (or their sessions)
            group.initial_delay = False
            group.join_deadline_ms = now + max(group.rebalance_timeout_ms(),
                                               self.min_session_timeout_ms)
            self._due(group, group.join_deadline_ms)
            return
        group.generation_id += 1
        group.join_deadline_ms = None
        group.initial_delay = False
        group.pending_sync.clear()
        if not group.members:
            group.protocol_name = None
            _transition(group, EMPTY)
            return
        group.protocol_name = _select_protocol(group)
        _transition(group, COMPLETING)
        for member in group.members.values():
            if member.join_reply is not None:
                self._outbox.append((member.join_reply, _join_ok(group, member)))
                member.join_reply = None
            member.is_new = False
            self._touch(now, group, member)
            group.pending_sync[member.member_id] = None
        group.sync_deadline_ms = now + group.rebalance_timeout_ms()
        self._due(group, group.sync_deadline_ms)

    def _drop(self, group: Group, member_id: str) -> None:
        """Remove a member, answering its waiting requests with UNKNOWN_MEMBER_ID."""
        member = group.members.pop(member_id)
        group.count_protocols(member, -1)
        if member.join_reply is not None:
            self._outbox.append((member.join_reply,
                                 join_error(UNKNOWN_MEMBER, errors.UNKNOWN_MEMBER_ID)))
            member.join_reply = None
        if member.sync_reply is not None:
            self._outbox.append((member.sync_reply, sync_error(errors.UNKNOWN_MEMBER_ID)))
            member.sync_reply = None
        if member.instance_id is not None and group.static_members.get(
                member.instance_id) == member_id:
            del group.static_members[member.instance_id]
        group.pending_sync.pop(member_id, None)
        if group.leader_id == member_id:
            group.leader_id = next(iter(group.members), None)

    def _remove_member(self, now: int, group: Group, member_id: str) -> None:
        """A member leaves or expires: drop it and rebalance (Kafka's
        removeMemberAndUpdateGroup)."""
        self._drop(group, member_id)
        if group.state in (STABLE, COMPLETING):
            self._prepare_rebalance(now, group)
        elif group.state is PREPARING:
            self._try_complete_join(now, group)

    def _touch(self, now: int, group: Group, member: Member) -> None:
        """Restart a member's session (a heartbeat, join, sync or commit arrived)."""
        if member.is_new and member.join_reply is not None:
            member.deadline_ms = now + NEW_MEMBER_JOIN_TIMEOUT_MS
        else:
            member.deadline_ms = now + member.session_ms
        self._due(group, member.deadline_ms)

    def _due(self, group: Group, at: int) -> None:
        """A deadline `at` was set in `group`: lower the group's cached bound if needed."""
        if group.due_ms is None or at < group.due_ms:
            group.due_ms = at
            heapq.heappush(self._timers, (at, group.group_id))

    # ---- SyncGroup ---------------------------------------------------------------------------

    def sync(self, now_ms: int, req: dict, version: int, reply: Reply) -> None:
        """Handle a SyncGroup request (v0-3; v5's protocol_type/protocol_name are checked when
        present). `reply(body)` fires exactly once with `throttle_time_ms, error_code,
        protocol_type, protocol_name, assignment` (assignment b"" on error). A follower's reply
        waits for the leader's SyncGroup in CompletingRebalance."""
        body = self._sync(now_ms, req, reply)
        if body is not None:
            self._outbox.append((reply, body))
        self._flush(req["group_id"])

    def _sync(self, now: int, req: dict, reply: Reply) -> dict | None:
        group_id = req["group_id"]
        if not group_id:
            return sync_error(errors.INVALID_GROUP_ID)
        group = self._groups.get(group_id)
        member_id = req["member_id"]
        if group is None:
            return sync_error(errors.UNKNOWN_MEMBER_ID)
        if _fenced(group, member_id, req.get("group_instance_id")):
            return sync_error(errors.FENCED_INSTANCE_ID)
        member = group.members.get(member_id)
        if member is None:
            return sync_error(errors.UNKNOWN_MEMBER_ID)
        if req["generation_id"] != group.generation_id:
            return sync_error(errors.ILLEGAL_GENERATION)
        if (req.get("protocol_type") not in (None, group.protocol_type)
                or req.get("protocol_name") not in (None, group.protocol_name)):
            return sync_error(errors.INCONSISTENT_GROUP_PROTOCOL)
        if group.state is PREPARING:
            return sync_error(errors.REBALANCE_IN_PROGRESS)
        assert group.state in (COMPLETING, STABLE), group.state
        self._touch(now, group, member)
        self._synced(group, member_id)
        if group.state is STABLE:
            return _sync_ok(group, member.assignment)
        if member.sync_reply is not None:
            self._outbox.append((member.sync_reply, sync_error(errors.REBALANCE_IN_PROGRESS)))
        member.sync_reply = reply
        if member_id == group.leader_id:
            self._assign(now, group, req["assignments"])
        return None

    def _assign(self, now: int, group: Group, assignments: list[dict]) -> None:
        """The leader's SyncGroup: store every member's assignment (b"" for members it left
        out, entries for unknown members ignored), go Stable and answer all waiting syncs."""
        given: dict[str, bytes] = {}
        for entry in assignments:
            given.setdefault(entry["member_id"], bytes(entry["assignment"] or b""))
        _transition(group, STABLE)
        for member in group.members.values():
            member.assignment = given.get(member.member_id, b"")
            if member.sync_reply is not None:
                self._outbox.append((member.sync_reply, _sync_ok(group, member.assignment)))
                member.sync_reply = None
                self._touch(now, group, member)

    def _synced(self, group: Group, member_id: str) -> None:
        group.pending_sync.pop(member_id, None)
        if not group.pending_sync:
            group.sync_deadline_ms = None

    # ---- Heartbeat / LeaveGroup --------------------------------------------------------------

    def heartbeat(self, now_ms: int, req: dict, version: int) -> dict:
        """Handle a Heartbeat (v0-3): returns `{throttle_time_ms, error_code}`. NONE in Stable
        and CompletingRebalance; REBALANCE_IN_PROGRESS while the group prepares a rebalance
        (the consumer must rejoin); ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID /
        FENCED_INSTANCE_ID for stale members. Extends the member's session."""
        error = self._heartbeat(now_ms, req)
        self._flush(req["group_id"])
        return {"throttle_time_ms": 0, "error_code": error}

    def _heartbeat(self, now: int, req: dict) -> int:
        group_id = req["group_id"]
        if not group_id:
            return errors.INVALID_GROUP_ID
        group = self._groups.get(group_id)
        if group is None:
            return errors.UNKNOWN_MEMBER_ID
        member_id = req["member_id"]
        if _fenced(group, member_id, req.get("group_instance_id")):
            return errors.FENCED_INSTANCE_ID
        member = group.members.get(member_id)
        if member is None:
            return errors.UNKNOWN_MEMBER_ID
        if req["generation_id"] != group.generation_id:
            return errors.ILLEGAL_GENERATION
        self._touch(now, group, member)
        if group.state is PREPARING:
            return errors.REBALANCE_IN_PROGRESS
        return errors.NONE

    def leave(self, now_ms: int, req: dict, version: int) -> dict:
        """Handle a LeaveGroup. v0-2 name one `member_id`; v3 a batch `members: [{member_id,
        group_instance_id}]`, where an empty member_id with an instance id removes that static
        member (admin removal). Returns `{throttle_time_ms, error_code, members: [{member_id,
        group_instance_id, error_code}]}`; for v0-2 error_code is the member's error."""
        if version >= 3:
            who = [(m["member_id"], m.get("group_instance_id")) for m in req["members"]]
        else:
            who = [(req["member_id"], None)]
        top, results = self._leave(now_ms, req["group_id"], who)
        self._flush(req["group_id"])
        if version < 3 and top == errors.NONE:
            top = next((r["error_code"] for r in results if r["error_code"]), errors.NONE)
        return {"throttle_time_ms": 0, "error_code": top, "members": results}

    def _leave(self, now: int, group_id: str | None,
               who: list[tuple[str, str | None]]) -> tuple[int, list[dict]]:
        if not group_id:
            return errors.INVALID_GROUP_ID, []
        group = self._groups.get(group_id)
        results = []
        for member_id, instance_id in who:
            if group is None:
                error = errors.UNKNOWN_MEMBER_ID
            else:
                error = self._leave_one(now, group, member_id, instance_id)
            results.append({"member_id": member_id, "group_instance_id": instance_id,
                            "error_code": error})
        return errors.NONE, results

    def _leave_one(self, now: int, group: Group, member_id: str,
                   instance_id: str | None) -> int:
        if member_id == UNKNOWN_MEMBER:
            current = None if instance_id is None else group.static_members.get(instance_id)
            if current is None:
                return errors.UNKNOWN_MEMBER_ID
            self._remove_member(now, group, current)
            return errors.NONE
        if member_id in group.pending:
            del group.pending[member_id]
            if group.state is PREPARING:
                self._try_complete_join(now, group)
            return errors.NONE
        if _fenced(group, member_id, instance_id):
            return errors.FENCED_INSTANCE_ID
        if member_id not in group.members:
            return errors.UNKNOWN_MEMBER_ID
        self._remove_member(now, group, member_id)
        return errors.NONE

    # ---- DescribeGroups / ListGroups / DeleteGroups / OffsetCommit ---------------------------

    def describe(self, group_ids: list[str]) -> list[dict]:
        """DescribeGroups `groups` entries, in request order. An unknown group is reported as
        state "Dead" with error NONE (as Kafka does up to v5). Member metadata and assignments
        are filled only in Stable; authorized_operations is INT32_MIN (not computed)."""
        return [self._describe_one(group_id) for group_id in group_ids]

    def _describe_one(self, group_id: str | None) -> dict:
        body: dict[str, object] = {
                "error_code": errors.NONE, "group_id": group_id, "group_state": DEAD.value,
                "protocol_type": "", "protocol_data": "", "members": [],
                "authorized_operations": AUTHORIZED_OPERATIONS_OMITTED}
        if group_id is None:
            body["error_code"] = errors.INVALID_GROUP_ID
            return body
        group = self._groups.get(group_id)
        if group is None:
            return body
        stable = group.state is STABLE
        body["group_state"] = group.state.value
        body["protocol_type"] = group.protocol_type or ""
        body["protocol_data"] = (group.protocol_name or "") if stable else ""
        body["members"] = [
            {"member_id": m.member_id, "group_instance_id": m.instance_id,
             "client_id": m.client_id, "client_host": m.client_host,
             "member_metadata": m.metadata(group.protocol_name) if stable else b"",
             "member_assignment": m.assignment if stable else b""}
            for m in group.members.values()]
        return body

    def list_groups(self) -> list[dict]:
        """ListGroups `groups` entries `{group_id, protocol_type, group_state}` in creation
        order (group_state is only encoded by v4+; harmless extra for older versions)."""
        return [{"group_id": g.group_id, "protocol_type": g.protocol_type or "",
                 "group_state": g.state.value} for g in self._groups.values()]

    def delete(self, group_id: str | None) -> int:
        """DeleteGroups for one group: NONE (the group is gone; the broker drops its offsets),
        GROUP_ID_NOT_FOUND, or NON_EMPTY_GROUP unless the group is Empty."""
        if group_id is None:
            return errors.INVALID_GROUP_ID
        group = self._groups.get(group_id)
        if group is None:
            return errors.GROUP_ID_NOT_FOUND
        if group.state is not EMPTY:
            return errors.NON_EMPTY_GROUP
        group.pending.clear()
        _transition(group, DEAD)
        del self._groups[group_id]
        return errors.NONE

    def check_commit(self, group_id: str | None, generation_id: int, member_id: str,
                     group_instance_id: str | None, now_ms: int | None = None) -> int:
        """May this OffsetCommit proceed? Returns an error code (NONE = yes).

        generation_id < 0 with an empty member id and no instance id is a "simple" consumer
        (assign()): allowed when the group is absent or Empty (call `touch_for_commit` after
        storing so the group then exists). Otherwise the member must be known
        (UNKNOWN_MEMBER_ID; FENCED_INSTANCE_ID for a replaced static member) and the
        generation current (ILLEGAL_GENERATION); commits are refused with
        REBALANCE_IN_PROGRESS in CompletingRebalance and allowed in PreparingRebalance (the
        member learns about the rebalance from its heartbeat). With `now_ms`, an allowed commit
        from a member extends its session."""
        if group_id is None:
            return errors.INVALID_GROUP_ID
        group = self._groups.get(group_id)
        simple = generation_id < 0 and not member_id and group_instance_id is None
        if group is None:
            if generation_id >= 0:
                return errors.ILLEGAL_GENERATION
            return errors.NONE if simple else errors.UNKNOWN_MEMBER_ID
        if simple:
            return errors.NONE if group.state is EMPTY else errors.UNKNOWN_MEMBER_ID
        if _fenced(group, member_id, group_instance_id):
            return errors.FENCED_INSTANCE_ID
        member = group.members.get(member_id)
        if member is None:
            return errors.UNKNOWN_MEMBER_ID
        if generation_id != group.generation_id:
            return errors.ILLEGAL_GENERATION
        if group.state is COMPLETING:
            return errors.REBALANCE_IN_PROGRESS
        if now_ms is not None:
            self._touch(now_ms, group, member)
        return errors.NONE

    def touch_for_commit(self, group_id: str) -> None:
        """Make sure a group exists (Empty if new) after offsets were committed to it, so
        commit-only groups show in ListGroups/DescribeGroups and can be deleted. The broker
        also calls this at start-up for every group that has stored offsets."""
        if group_id not in self._groups:
            self._groups[group_id] = self._new_group(group_id)

    def _new_group(self, group_id: str) -> Group:
        return Group(group_id, generation_id=self._resigned.pop(group_id, 0))

    # ---- time --------------------------------------------------------------------------------

    def tick(self, now_ms: int) -> None:
        """Fire everything due at `now_ms`: pending (KIP-394) members and member sessions
        expire, initial delays extend or end, rebalance timeouts complete joins, and members
        that did not sync in time are removed. Replies that become ready are sent."""
        timers = self._timers
        for _ in range(TICK_ROUNDS_MAX):  # firing may set a deadline at `now` (a rebalance
            visit: dict[str, Group] = {}  # left with no members): it fires in this tick too
            while timers and timers[0][0] <= now_ms:
                at, group_id = heapq.heappop(timers)
                group = self._groups.get(group_id)
                if group is not None and group.due_ms == at:
                    visit[group_id] = group
            if not visit:
                break
            for group in visit.values():
                self._tick_group(now_ms, group)
                if self._groups.get(group.group_id) is group:
                    group.due_ms = None
                    due = min(_group_deadlines(group), default=None)
                    if due is not None:
                        self._due(group, due)
                    _check_group(group)
        self._flush(None)

    def _tick_group(self, now: int, group: Group) -> None:
        for member_id, deadline in list(group.pending.items()):
            if now >= deadline:
                del group.pending[member_id]
                if group.state is PREPARING:
                    self._try_complete_join(now, group)
        for member in list(group.members.values()):
            if (group.members.get(member.member_id) is member and member.can_expire()
                    and now >= member.deadline_ms):
                self._remove_member(now, group, member.member_id)
        if (group.state is PREPARING and group.join_deadline_ms is not None
                and now >= group.join_deadline_ms):
            self._on_join_deadline(now, group)
        if (group.state in (COMPLETING, STABLE) and group.sync_deadline_ms is not None
                and now >= group.sync_deadline_ms):
            for member_id in list(group.pending_sync):
                self._drop(group, member_id)
            self._prepare_rebalance(now, group)

    def next_deadline_ms(self) -> int | None:
        """When `tick` must next be called, or None. Never later than the earliest deadline,
        but may be earlier (a deadline that a heartbeat has since pushed back); ticking early
        is harmless and refreshes the bound."""
        timers = self._timers
        while timers:
            at, group_id = timers[0]
            group = self._groups.get(group_id)
            if group is not None and group.due_ms == at:
                return at
            heapq.heappop(timers)
        return None

    def held(self) -> int:
        """How many groups this coordinator holds."""
        return len(self._groups)

    def resign(self) -> int:
        """This broker stopped being the coordinator: every waiting JoinGroup and SyncGroup is
        answered NOT_COORDINATOR (the members look the coordinator up again) and every group is
        forgotten (committed offsets live in meta; the new coordinator rebuilds the group from
        the members' joins). Returns how many groups were dropped."""
        dropped = len(self._groups)
        for group_id in sorted(self._groups):
            group = self._groups[group_id]
            for member_id in sorted(group.members):
                member = group.members[member_id]
                if member.join_reply is not None:
                    self._outbox.append((member.join_reply,
                                         join_error(member_id, errors.NOT_COORDINATOR)))
                    member.join_reply = None
                if member.sync_reply is not None:
                    self._outbox.append((member.sync_reply, sync_error(errors.NOT_COORDINATOR)))
                    member.sync_reply = None
            group.pending.clear()
            self._resigned[group_id] = group.generation_id
        self._groups.clear()
        self._timers.clear()
        self._flush(None)
        return dropped

    # ---- plumbing ----------------------------------------------------------------------------

    def _flush(self, group_id: str | None) -> None:
        if group_id is not None and group_id in self._groups:
            _check_group(self._groups[group_id])
        outbox = self._outbox
        while outbox:
            reply, body = outbox.popleft()
            reply(body)

    def invariants(self) -> None:
        """Assert the structural invariants of every group (tests and the broker's
        `invariants` call this after each step), and that no group's generation went back
        since the last call (a deleted and re-created group starts again)."""
        seen = self._seen_generations
        now: dict[str, tuple[Group, int]] = {}
        for group_id, group in self._groups.items():
            assert group.group_id == group_id
            _check_group_full(group)
            prev = seen.get(group_id)
            if prev is not None and prev[0] is group:
                assert group.generation_id >= prev[1], (group_id, prev[1], group.generation_id)
            now[group_id] = (group, group.generation_id)
        self._seen_generations = now

    def group_state(self, group_id: str) -> GroupState | None:
        group = self._groups.get(group_id)
        return None if group is None else group.state

    def generation(self, group_id: str) -> int | None:
        group = self._groups.get(group_id)
        return None if group is None else group.generation_id


# ---- helpers (pure functions of a group) -----------------------------------------------------

def _join_args(req: dict, client_id: str, client_host: str, reply: Reply) -> JoinArgs:
    protocols: dict[str, bytes] = {}
    for proto in req["protocols"]:
        protocols.setdefault(proto["name"], bytes(proto["metadata"] or b""))
    session = req["session_timeout_ms"]
    rebalance = req.get("rebalance_timeout_ms", -1)
    return JoinArgs(
        member_id=req.get("member_id") or UNKNOWN_MEMBER,
        instance_id=req.get("group_instance_id"), client_id=client_id, client_host=client_host,
        session_ms=session, rebalance_ms=session if rebalance < 0 else rebalance,
        protocol_type=req["protocol_type"] or "", protocols=tuple(protocols.items()),
        reply=reply)


def _supports(group: Group, args: JoinArgs) -> bool:
    """Kafka's supportsProtocols: a first member needs a protocol type and at least one
    protocol; later ones the group's type and a protocol every current member supports."""
    if not group.members:
        return bool(args.protocol_type) and bool(args.protocols)
    if args.protocol_type != group.protocol_type:
        return False
    common = _candidates(group)
    return any(name in common for name, _ in args.protocols)


def _candidates(group: Group) -> dict[str, None]:
    """The protocols every member supports (an ordered set; O(distinct protocols))."""
    size = len(group.members)
    return {name: None for name, count in group.protocol_counts.items() if count == size}


def _select_protocol(group: Group) -> str:
    """Each member votes for its most preferred protocol that all members support; most votes
    wins, ties go to the protocol voted for first (in join order)."""
    common = _candidates(group)
    votes: dict[str, int] = {}
    for member in group.members.values():
        choice = next(name for name, _ in member.protocols if name in common)
        votes[choice] = votes.get(choice, 0) + 1
    best = max(votes.values())
    return next(name for name, count in votes.items() if count == best)


def _elect_joined_leader(group: Group) -> bool:
    """Keep the leader if it rejoined, else pick the first member that did."""
    leader = group.members.get(group.leader_id) if group.leader_id is not None else None
    if leader is not None and leader.join_reply is not None:
        return True
    joined = next((m for m in group.members.values() if m.join_reply is not None), None)
    if joined is None:
        return False
    group.leader_id = joined.member_id
    return True


def _fenced(group: Group, member_id: str, instance_id: str | None) -> bool:
    """A static instance id now belongs to another member id (the caller is a zombie)."""
    if instance_id is None:
        return False
    current = group.static_members.get(instance_id)
    return current is not None and current != member_id


def _transition(group: Group, new: GroupState) -> None:
    assert group.state in ALLOWED_FROM[new], (group.group_id, group.state, new)
    group.state = new


def _group_deadlines(group: Group) -> list[int]:
    due = list(group.pending.values())
    due.extend(m.deadline_ms for m in group.members.values() if m.can_expire())
    if group.state is PREPARING and group.join_deadline_ms is not None:
        due.append(group.join_deadline_ms)
    if group.state in (COMPLETING, STABLE) and group.sync_deadline_ms is not None:
        due.append(group.sync_deadline_ms)
    return due


def _join_ok(group: Group, member: Member) -> dict:
    leader = member.member_id == group.leader_id
    members = [{"member_id": m.member_id, "group_instance_id": m.instance_id,
                "metadata": m.metadata(group.protocol_name)}
               for m in group.members.values()] if leader else []
    return {"throttle_time_ms": 0, "error_code": errors.NONE,
            "generation_id": group.generation_id, "protocol_type": group.protocol_type,
            "protocol_name": group.protocol_name, "leader": group.leader_id,
            "skip_assignment": False, "member_id": member.member_id, "members": members}


def join_error(member_id: str, error: int) -> dict:
    """A JoinGroup response carrying only `error` (the broker also answers NOT_COORDINATOR
    with it)."""
    return {"throttle_time_ms": 0, "error_code": error, "generation_id": -1,
            "protocol_type": None, "protocol_name": "", "leader": "", "skip_assignment": False,
            "member_id": member_id, "members": []}


def _sync_ok(group: Group, assignment: bytes) -> dict:
    return {"throttle_time_ms": 0, "error_code": errors.NONE,
            "protocol_type": group.protocol_type, "protocol_name": group.protocol_name,
            "assignment": assignment}


def sync_error(error: int) -> dict:
    """A SyncGroup response carrying only `error`."""
    return {"throttle_time_ms": 0, "error_code": error, "protocol_type": None,
            "protocol_name": None, "assignment": b""}


def _check_group(group: Group) -> None:
    """Cheap per-request checks (O(1) in the group size)."""
    state = group.state
    members = group.members
    assert state is not DEAD, group.group_id
    assert group.generation_id >= 0, group.generation_id
    if state is EMPTY:
        assert not members, (group.group_id, list(members))
        assert group.join_deadline_ms is None and group.sync_deadline_ms is None
    if state in (COMPLETING, STABLE):
        assert members, group.group_id
        assert group.protocol_name is not None, group.group_id
    if state is PREPARING:
        assert group.join_deadline_ms is not None, group.group_id
    else:
        assert not group.initial_delay, group.group_id
    if members:
        assert group.leader_id in members, (group.leader_id, list(members))
    else:
        assert group.leader_id is None, group.leader_id


def _check_group_full(group: Group) -> None:
    """Every structural invariant (O(members x protocols)); tests call it after each step."""
    _check_group(group)
    state = group.state
    members = group.members
    for member_id, member in members.items():
        assert member.member_id == member_id, (member.member_id, member_id)
        assert member_id not in group.pending, member_id
        assert member.join_reply is None or state is PREPARING, (member_id, state)
        assert member.sync_reply is None or state is COMPLETING, (member_id, state)
        assert member.protocol_type == group.protocol_type, member_id
        if member.instance_id is not None:
            assert group.static_members[member.instance_id] == member_id, member_id
    for instance_id, member_id in group.static_members.items():
        assert members[member_id].instance_id == instance_id, (instance_id, member_id)
    for member_id in group.pending_sync:
        assert member_id in members, member_id
        assert state in (COMPLETING, STABLE), state
    counts: dict[str, int] = {}
    for member in members.values():
        for name, _ in member.protocols:
            counts[name] = counts.get(name, 0) + 1
    assert counts == group.protocol_counts, (counts, group.protocol_counts)
    if members:
        assert _candidates(group), "no protocol supported by every member"
    if state is STABLE:
        assert group.protocol_name in _candidates(group), group.protocol_name
    earliest = min(_group_deadlines(group), default=None)
    if earliest is not None:  # the timer cache never sleeps past a deadline
        assert group.due_ms is not None and group.due_ms <= earliest, (group.due_ms, earliest)
