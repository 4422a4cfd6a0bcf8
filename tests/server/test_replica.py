"""MetaReplica: the Ready loop order, proposals, compaction and restart on a real RaftDisk."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from real.meta import MetaResult, encode_command
from real.node.disk import RaftDisk
from real.raft import RaftConfig, RaftNode
from real.raft.types import (
    Entry,
    HardState,
    Message,
    MsgType,
    ProposalDropped,
    Ready,
    Role,
)
from real.server.replica import PROPOSALS_PENDING_MAX, READS_PENDING_MAX, MetaReplica, ProposalLost


class Recorder:
    """Fake storage + transport + raft that log every call into one shared trace."""

    def __init__(self) -> None:
        self.trace: list[str] = []
        self.replica: MetaReplica | None = None
        self.applied = 0
        self.readies: list[Ready] = []

    # storage
    def durable(self):
        from real.raft.types import DurableState

        return DurableState()

    def save(self, *, snapshot=None, entries=(), hard_state=None, sync) -> None:
        self.trace.append(f"persist entries={len(entries)} sync={sync}")

    def rewrite(self, snapshot) -> None:
        self.trace.append("rewrite")

    # transport
    def send(self, msg: Message) -> None:
        assert self.replica is not None
        self.trace.append(f"send applied={self.replica.sm.applied_index}")

    # raft
    def has_ready(self) -> bool:
        return bool(self.readies)

    def ready(self) -> Ready:
        self.trace.append("ready")
        return self.readies[0]

    def advance(self, rd: Ready) -> None:
        assert self.replica is not None
        self.trace.append(f"advance applied={self.replica.sm.applied_index}")
        self.applied = rd.committed_entries[-1].index
        self.readies.pop(0)

    def compact(self, index: int, data: bytes) -> None:  # pragma: no cover - not reached
        raise AssertionError


def test_persist_then_send_then_apply_then_advance() -> None:
    rec = Recorder()
    rec.replica = MetaReplica(rec, rec, rec.send, compact_entries=100)
    cmd = encode_command("config.put", key="k", value=1)
    rec.readies.append(Ready(
        soft_state=None, hard_state=HardState(1, 1, 2),
        entries=(Entry(1, 1), Entry(1, 2, data=cmd)), snapshot=None,
        committed_entries=(Entry(1, 1), Entry(1, 2, data=cmd)),
        messages=(Message(MsgType.APPEND, 1, 2, 1),), read_states=(), must_sync=True))
    assert rec.replica.process_ready() == 1
    assert rec.trace == ["ready", "persist entries=2 sync=True", "send applied=0",
                         "advance applied=2"]
    assert rec.replica.sm.get_config("k") == 1


def make(tmp_path: Path, compact_entries: int = 1000, lead: bool = True
         ) -> tuple[MetaReplica, RaftDisk]:
    disk = RaftDisk(tmp_path / "meta")
    raft = RaftNode(1, RaftConfig(), random.Random(7), disk.durable(), peers=(1,))
    sent: list[Message] = []
    replica = MetaReplica(raft, disk, sent.append, compact_entries=compact_entries)
    replica.process_ready()  # replays committed entries as a follower
    if lead:
        replica.raft.campaign()
        replica.process_ready()
    assert sent == [] and (replica.raft.role is Role.LEADER) == lead
    return replica, disk


def propose(replica: MetaReplica, op: str, **fields: object) -> MetaResult:
    out: list[MetaResult | Exception] = []
    replica.propose(encode_command(op, **fields), out.append)
    replica.process_ready()
    assert len(out) == 1, out
    assert isinstance(out[0], MetaResult)
    return out[0]


def test_single_node_applies_and_survives_restart(tmp_path: Path) -> None:
    replica, disk = make(tmp_path)
    assert propose(replica, "node.register", node_id=1, addr="h:1").value == "created"
    assert propose(replica, "config.put", key="a", value="b").ok
    assert not propose(replica, "config.delete", key="zz").ok
    digest, applied, term = replica.sm.digest(), replica.sm.applied_index, replica.raft.term
    disk.close()
    again, disk2 = make(tmp_path, lead=False)
    assert again.sm.digest() == digest and again.sm.applied_index == applied
    assert again.raft.term == term and again.sm.get_config("a") == "b"
    again.raft.campaign()
    again.process_ready()
    assert again.raft.role is Role.LEADER and again.raft.term > term
    assert again.sm.applied_index == applied + 1  # the new leader's no-op entry
    disk2.close()


def test_compaction_bounds_the_log_and_restart_restores(tmp_path: Path) -> None:
    replica, disk = make(tmp_path, compact_entries=5)
    for i in range(23):
        assert propose(replica, "config.put", key=f"k{i}", value=i).ok
        assert disk.entry_count <= 5, disk.entry_count
    assert replica.snapshot_index >= 20 and disk.durable().snapshot is not None
    digest = replica.sm.digest()
    disk.close()
    again, disk2 = make(tmp_path, compact_entries=5, lead=False)
    assert again.sm.digest() == digest
    assert again.sm.config()["k22"] == 22
    disk2.close()


def test_pending_proposals_are_bounded(tmp_path: Path) -> None:
    replica, disk = make(tmp_path)
    results: list[MetaResult | Exception] = []
    for i in range(PROPOSALS_PENDING_MAX):
        replica.propose(encode_command("config.put", key="k", value=i), results.append)
    with pytest.raises(ProposalDropped, match="proposals already pending"):
        replica.propose(encode_command("config.put", key="k", value=-1), results.append)
    replica.process_ready()
    assert len(results) == PROPOSALS_PENDING_MAX and all(r.ok for r in results)
    assert replica.sm.get_config("k") == PROPOSALS_PENDING_MAX - 1
    replica.propose(encode_command("config.put", key="k", value=-1), results.append)
    replica.fail_pending("test")
    assert isinstance(results[-1], ProposalLost)
    disk.close()


def test_follower_without_leader_drops_proposals(tmp_path: Path) -> None:
    disk = RaftDisk(tmp_path / "meta")
    raft = RaftNode(1, RaftConfig(), random.Random(1), disk.durable(), peers=(1, 2, 3))
    replica = MetaReplica(raft, disk, lambda m: None, compact_entries=100)
    with pytest.raises(ProposalDropped, match="no leader"):
        replica.propose(b"", lambda r: None)
    disk.close()


def test_reads_without_a_leader_are_refused_and_leave_nothing_pending(tmp_path: Path) -> None:
    """A read index asked with no leader known raises (the caller answers 503) and is not kept
    (it would never be answered); a leader answers a read once it applied the read's index,
    and a read given up on can be cancelled."""
    disk = RaftDisk(tmp_path / "meta")
    raft = RaftNode(1, RaftConfig(), random.Random(1), disk.durable(), peers=(1, 2, 3))
    replica = MetaReplica(raft, disk, lambda m: None, compact_entries=100)
    for i in range(READS_PENDING_MAX + 5):  # more than the bound: none of them stayed
        with pytest.raises(ProposalDropped, match="no leader"):
            replica.read_index(b"r%d" % i, lambda _index: None)
    assert not replica.cancel_read(b"r0")
    disk.close()
    leader, disk2 = make(tmp_path / "single")
    answered: list[int] = []
    leader.read_index(b"x", answered.append)
    leader.process_ready()
    assert answered == [leader.sm.applied_index]
    assert not leader.cancel_read(b"x")  # answered: nothing left to cancel
    disk2.close()


def test_replica_is_free_of_io_so_the_simulator_can_host_it() -> None:
    import ast

    source = (Path(__file__).resolve().parents[2] / "real" / "server" / "replica.py").read_text()
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0])
    assert not names & {"asyncio", "socket", "os", "time", "threading", "random", "simpy"}, names


class _Follower:
    """Just enough of a RaftNode for `MetaReplica` on a follower: proposals are forwarded."""

    def __init__(self) -> None:
        self.id, self.applied, self.role, self.proposed = 3, 0, Role.FOLLOWER, []
        self.leader, self.term, self.election_tick_min = 1, 1, 12

    def propose(self, data: bytes) -> None:
        self.proposed.append(data)

    def tick(self, n: int) -> None:
        pass

    def ticks_until_due(self) -> int:
        return 1_000_000

    def has_ready(self) -> bool:
        return False


def test_an_entry_forwarded_in_an_earlier_life_does_not_answer_this_lifes_proposal(
        tmp_path: Path) -> None:
    """A restarted node numbers its forwarded proposals from 1 again; its previous life's
    forwarded entry, applied after the restart, must not be taken for the new proposal with the
    same number (a node once took an old ISR change's result for its re-registration and led
    a partition from stale meta). The incarnation in the envelope tells them apart."""
    from types import SimpleNamespace

    from real.raft.types import Entry, EntryKind

    disk = RaftDisk(tmp_path / "meta")
    old_raft = _Follower()
    old = MetaReplica(old_raft, disk, lambda m: None, compact_entries=100, incarnation=1000)
    old.propose(encode_command("config.put", key="a", value=1), lambda r: None)
    (old_entry,) = old_raft.proposed
    new_raft = _Follower()
    new = MetaReplica(new_raft, disk, lambda m: None, compact_entries=100, incarnation=2000)
    answers: list[object] = []
    new.propose(encode_command("config.put", key="b", value=2), answers.append)
    (new_entry,) = new_raft.proposed
    assert old_entry[:5] == new_entry[:5] and old_entry != new_entry

    def apply(index: int, data: bytes) -> None:
        new._apply(SimpleNamespace(snapshot=None, read_states=(), committed_entries=(
            Entry(1, index, EntryKind.NORMAL, data),)))

    apply(1, old_entry)  # the old life's proposal commits after the restart: not ours
    assert answers == [] and new.sm.config() == {"a": 1}
    apply(2, new_entry)
    assert len(answers) == 1 and isinstance(answers[0], MetaResult) and answers[0].ok
    assert new.sm.config() == {"a": 1, "b": 2}
    disk.close()


def test_a_forwarded_proposal_waits_only_a_grace_period_once_its_leader_is_replaced(
        tmp_path: Path) -> None:
    """A proposal forwarded to a leader that is then deposed is reported lost one election
    timeout after the new leader is known, not after the full forward timeout (a partition
    leader's ISR change once waited ~1 s on a deposed meta leader while acks=all produce was
    refused: node3-rf3 seed 748). One that applies within the grace still gets its result, and
    one forwarded to the new leader keeps its full timeout."""
    from types import SimpleNamespace

    from real.raft.types import Entry, EntryKind
    from real.server.replica import FORWARD_TIMEOUT_TICKS

    disk = RaftDisk(tmp_path / "meta")
    raft = _Follower()
    replica = MetaReplica(raft, disk, lambda m: None, compact_entries=100, incarnation=7)
    answers: dict[str, list[object]] = {"lost": [], "applies": [], "new": []}
    replica.propose(encode_command("config.put", key="a", value=1), answers["lost"].append)
    replica.propose(encode_command("config.put", key="b", value=2), answers["applies"].append)
    replica.tick(5)
    assert replica.ticks_until_due() == FORWARD_TIMEOUT_TICKS - 5
    raft.leader = 2  # the old leader was deposed
    replica.tick(1)
    assert replica.ticks_until_due() == raft.election_tick_min
    replica.propose(encode_command("config.put", key="c", value=3), answers["new"].append)
    replica._apply(SimpleNamespace(snapshot=None, read_states=(), committed_entries=(
        Entry(2, 1, EntryKind.NORMAL, raft.proposed[1]),)))  # the new leader had this one
    replica.tick(raft.election_tick_min - 1)
    assert answers["lost"] == [] and len(answers["applies"]) == 1
    replica.tick(1)
    (lost,) = answers["lost"]
    assert isinstance(lost, ProposalLost) and answers["new"] == []
    replica.tick(FORWARD_TIMEOUT_TICKS - raft.election_tick_min - 1)
    assert answers["new"] == []
    replica.tick(1)
    assert isinstance(answers["new"][0], ProposalLost)
    disk.close()


def test_a_forwarded_proposal_waits_only_a_grace_period_once_its_leader_wins_a_later_term(
        tmp_path: Path) -> None:
    """The leader a proposal went to crashes and wins the next election: the same id, a later
    term, and whatever it had not appended is gone. The proposal is reported lost one grace
    period later, not after the full timeout (a node restarted just before the meta leader's
    crash waited ~1 s to register: node3-mqtt-bughunt seed 38)."""
    from real.server.replica import FORWARD_TIMEOUT_TICKS

    disk = RaftDisk(tmp_path / "meta")
    raft = _Follower()
    replica = MetaReplica(raft, disk, lambda m: None, compact_entries=100, incarnation=7)
    answers: list[object] = []
    replica.propose(encode_command("config.put", key="a", value=1), answers.append)
    replica.tick(5)
    assert replica.ticks_until_due() == FORWARD_TIMEOUT_TICKS - 5
    raft.term = 2  # the same leader, elected again
    replica.tick(1)
    assert replica.ticks_until_due() == raft.election_tick_min
    replica.tick(raft.election_tick_min)
    assert len(answers) == 1 and isinstance(answers[0], ProposalLost)
    disk.close()
