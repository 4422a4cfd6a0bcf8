"""Meta Raft membership change, driven by the meta leader (one change at a time).

    members = Membership(raft, propose, clock, log)
    members.add(node_id, raft_addr, done)   # done(ChangeResult) once it holds or failed
    members.remove(node_id, done)
    members.poll()                          # after every input (NodeCore's settle loop)
    members.next_deadline_ms()              # when poll has work without an input

**Join** (the node was started blank, `--join`, so it never campaigns and learns everything
from the leader): (1) meta records the node's peer address (`member.add`), so every node can
dial it and accepts its connections before it is a member; (2) Raft adds it as a *learner*
(gets the log, no vote); (3) once the learner's log has reached the leader's log end as it was
when the learner entry committed (a snapshot first if the log was compacted), Raft makes it a
*voter*. Adding a voter that cannot keep up would stall commits for as long as it lags
(Raft thesis 4.2.1); the learner step is what etcd calls "learner promotion".

**Leave** is refused while the node holds data no other node has: a replicated partition whose
in-sync set is that node alone, or an unreplicated partition on its own disk (shared-storage
partitions are fine: the object store holds them). The caller asks again once a follower caught
up. Then (1) meta unregisters the node as a broker (`node.unregister`: the placement
controller moves the shards it led); (2) Raft removes it (`REMOVE_VOTER`, also for a learner);
(3) meta forgets its address (`member.remove`). The leader never removes itself: asked to, it
hands leadership to its most caught-up voter first and answers "not leader" naming it, and the
caller asks again there.

Every step is idempotent, so a caller retries a failed or timed-out change (a new leader
continues from whatever the old one got through). A change not done in CHANGE_DEADLINE_MS
fails; a learner left behind by a failed join is harmless (it votes nowhere) and the retry
picks it up. Single-server changes only, each committed before the next is proposed
(RaftNode refuses a second one while the first is uncommitted).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from real.meta import MetaResult, MetaStateMachine, encode_command
from real.raft import RaftNode
from real.raft.types import ConfChange, ConfChangeType, ProposalDropped, Role

CHANGE_DEADLINE_MS = 30_000
_RETRYABLE = ("uncommitted", "committed yet", "transfer")
"""RaftNode refusals that pass by themselves (a pending conf change, a new leader's term not
committed yet, a leadership transfer): the driver proposes again at its next poll."""


@dataclass(frozen=True, slots=True)
class ChangeResult:
    ok: bool
    message: str
    leader: int = 0
    """On failure because this node does not lead (any more): the leader it knows (0: none)."""


class _Step(enum.Enum):
    RECORD = "record"
    LEARNER = "learner"
    LEARNER_COMMIT = "learner-commit"
    CATCH_UP = "catch-up"
    VOTER_COMMIT = "voter-commit"
    UNREGISTER = "unregister"
    REMOVE = "remove"
    HAND_OVER = "hand-over"
    REMOVE_COMMIT = "remove-commit"
    FORGET = "forget"


@dataclass(slots=True)
class _Change:
    kind: str
    node_id: int
    addr: str
    done: Callable[[ChangeResult], None]
    deadline: int
    step: _Step
    waiting: bool = False
    """A meta proposal of this change is in flight."""
    index: int = 0
    """The conf change entry's index (LEARNER_COMMIT, VOTER_COMMIT, REMOVE_COMMIT), the
    learner's catch-up target (CATCH_UP), or the voter leadership goes to (HAND_OVER)."""
    term: int = 0


class Membership:
    def __init__(self, raft: RaftNode, propose: Callable[[bytes, Callable], None],
                 clock: Callable[[], int], log: Callable[[str], None],
                 machine: Callable[[], MetaStateMachine] | None = None) -> None:
        self._raft = raft
        self._machine = machine
        self._propose = propose
        self._clock = clock
        self._log = log
        self._change: _Change | None = None

    @property
    def busy(self) -> bool:
        return self._change is not None

    def describe(self) -> dict[str, object] | None:
        """The change in progress (for the admin API), or None."""
        c = self._change
        if c is None:
            return None
        return {"kind": c.kind, "node_id": c.node_id, "step": c.step.value}

    # ---- requests ------------------------------------------------------------------------

    def add(self, node_id: int, addr: str, done: Callable[[ChangeResult], None]) -> None:
        self._start("add", node_id, addr, done, _Step.RECORD)

    def remove(self, node_id: int, done: Callable[[ChangeResult], None]) -> None:
        self._start("remove", node_id, "", done, _Step.UNREGISTER)

    def _start(self, kind: str, node_id: int, addr: str, done: Callable[[ChangeResult], None],
               step: _Step) -> None:
        raft = self._raft
        if raft.role is not Role.LEADER:
            done(ChangeResult(False, f"node {raft.id} is not the meta leader", raft.leader))
            return
        if self._change is not None:
            c = self._change
            done(ChangeResult(False, f"busy: {c.kind} of node {c.node_id} in progress "
                                     f"({c.step.value})", raft.id))
            return
        if kind == "add" and node_id == raft.id:
            done(ChangeResult(True, f"node {node_id} is already a voter", raft.id))
            return
        self._log(f"membership: {kind} node {node_id}" + (f" at {addr}" if addr else ""))
        self._change = _Change(kind, node_id, addr, done, self._clock() + CHANGE_DEADLINE_MS,
                               step)

    # ---- the driver ----------------------------------------------------------------------

    def next_deadline_ms(self) -> int | None:
        return None if self._change is None else self._change.deadline

    def poll(self) -> None:
        """Move the change in progress as far as it can go now."""
        for _ in range(16):  # a step that completes at once lets the next one run
            c = self._change
            if c is None or c.waiting:
                return
            if self._clock() >= c.deadline:
                self._finish(False, f"{c.kind} of node {c.node_id} timed out at step "
                                    f"{c.step.value}")
                return
            before = (c.step, c.index)
            self._advance(c)
            if self._change is not c or c.waiting or (c.step, c.index) == before:
                return

    def _advance(self, c: _Change) -> None:
        raft = self._raft
        if c.step in (_Step.RECORD, _Step.UNREGISTER, _Step.FORGET):
            self._meta_step(c)
            return
        if raft.role is not Role.LEADER and c.step is not _Step.REMOVE_COMMIT:
            if c.step is _Step.HAND_OVER:  # done: the caller asks the new leader
                self._finish(False, f"node {raft.id} handed the meta leadership to node "
                                    f"{raft.leader or c.index} to be removed",
                             raft.leader or c.index)
            else:
                self._finish(False, f"node {raft.id} lost the meta leadership", raft.leader)
            return
        conf = raft.conf
        if c.step is _Step.LEARNER:
            if c.node_id in conf.voters:
                self._finish(True, f"node {c.node_id} is a voter")
            elif c.node_id in conf.learners:
                c.index, c.step = raft.last_index(), _Step.CATCH_UP
            else:
                self._conf_change(c, ConfChangeType.ADD_LEARNER, _Step.LEARNER_COMMIT)
        elif c.step in (_Step.LEARNER_COMMIT, _Step.VOTER_COMMIT):
            if raft.term != c.term:
                self._finish(False, f"node {raft.id} lost the meta leadership", raft.leader)
            elif raft.commit >= c.index:
                if c.step is _Step.VOTER_COMMIT:
                    self._finish(True, f"node {c.node_id} is a voter")
                else:
                    c.index, c.step = raft.last_index(), _Step.CATCH_UP
        elif c.step is _Step.CATCH_UP:
            pr = raft.progress(c.node_id)
            if c.node_id in conf.voters:
                self._finish(True, f"node {c.node_id} is a voter")
            elif pr is not None and pr.match >= c.index:
                self._conf_change(c, ConfChangeType.ADD_VOTER, _Step.VOTER_COMMIT)
        elif c.step is _Step.REMOVE:
            if c.node_id not in conf.voters and c.node_id not in conf.learners:
                c.step = _Step.FORGET
            elif c.node_id == raft.id:
                self._hand_over(c)
            else:
                self._conf_change(c, ConfChangeType.REMOVE_VOTER, _Step.REMOVE_COMMIT)
        elif c.step is _Step.HAND_OVER:
            if raft.lead_transferee == 0:  # the transfer timed out: this node still leads
                self._hand_over(c)
            # else waiting: the role check above ends the change once leadership moved
        elif c.step is _Step.REMOVE_COMMIT:
            if raft.commit >= c.index and raft.term_at(c.index) == c.term:
                c.step = _Step.FORGET
            elif raft.term != c.term or raft.role is not Role.LEADER:
                self._finish(False, f"node {raft.id} lost the meta leadership", raft.leader)

    def _conf_change(self, c: _Change, kind: ConfChangeType, then: _Step) -> None:
        raft = self._raft
        try:
            raft.propose_conf_change(ConfChange(kind, c.node_id))
        except ProposalDropped as exc:
            reason = str(exc)
            if not any(r in reason for r in _RETRYABLE):
                self._finish(False, f"{kind.value} node {c.node_id}: {reason}", raft.leader)
            return  # retried at the next poll
        c.index, c.term, c.step = raft.last_index(), raft.term, then
        self._log(f"membership: proposed {kind.value} node {c.node_id} at index {c.index}")

    def _hand_over(self, c: _Change) -> None:
        """The leader is asked to remove itself: lead elsewhere first."""
        raft = self._raft
        others = [(pr.match, v) for v in raft.conf.voters if v != raft.id
                  and (pr := raft.progress(v)) is not None]
        if not others:
            self._finish(False, f"node {raft.id} is the last voter", raft.id)
            return
        _match, target = max(others)
        self._log(f"membership: removing the leader itself; handing leadership to node "
                  f"{target} first")
        raft.transfer_leadership(target)
        c.step, c.index = _Step.HAND_OVER, target

    def _sole_copies(self, node_id: int) -> list[str]:
        """Partitions whose only copy is on node `node_id`."""
        if self._machine is None:
            return []
        out = []
        for topic in self._machine().topics():
            for i, s in enumerate(topic.shards):
                if s.replicated:
                    if s.isr == (node_id,):
                        out.append(f"{topic.name}/{i}")
                elif s.leader == node_id and not topic.shared(i):
                    out.append(f"{topic.name}/{i}")
        return out

    def _meta_step(self, c: _Change) -> None:
        if c.step is _Step.UNREGISTER:
            sole = self._sole_copies(c.node_id)
            if sole:
                more = f" and {len(sole) - 3} more" if len(sole) > 3 else ""
                self._finish(False, f"node {c.node_id} holds the only copy of "
                                    f"{', '.join(sole[:3])}{more}: it cannot leave before "
                                    "another replica is in sync")
                return
        if c.step is _Step.RECORD:
            data = encode_command("member.add", node_id=c.node_id, raft_addr=c.addr)
        elif c.step is _Step.UNREGISTER:
            data = encode_command("node.unregister", node_id=c.node_id)
        else:
            data = encode_command("member.remove", node_id=c.node_id)
        step = c.step
        c.waiting = True

        def applied(result: MetaResult | Exception) -> None:
            if self._change is not c:
                return
            c.waiting = False
            if isinstance(result, Exception):
                self._finish(False, f"{step.value} node {c.node_id}: {result}",
                             self._raft.leader)
                return
            # "not registered" is fine: a retried leave, or a node that never registered
            if not result.ok and step is not _Step.UNREGISTER:
                self._finish(False, f"{step.value} node {c.node_id}: {result.error}")
                return
            if step is _Step.RECORD:
                c.step = _Step.LEARNER
            elif step is _Step.UNREGISTER:
                c.step = _Step.REMOVE
            else:
                self._finish(True, f"node {c.node_id} removed")

        self._propose(data, applied)

    def _finish(self, ok: bool, message: str, leader: int | None = None) -> None:
        c = self._change
        assert c is not None
        self._change = None
        self._log(f"membership: {message}")
        c.done(ChangeResult(ok, message, self._raft.id if leader is None else leader))
