"""Proposals made on a follower are forwarded to the meta leader and answered on the follower
once they apply there (enveloped with the origin's id, stripped before the state machine sees
them); unanswered ones are reported lost after FORWARD_TIMEOUT_TICKS."""

from __future__ import annotations

import random

import pytest

from model.devices.fs import SimFileSystem
from real.meta import MetaResult, encode_command
from real.raft import RaftConfig, RaftNode
from real.raft.types import Message, ProposalDropped, Role
from real.server.raftlog import RaftLog
from real.server.replica import FORWARD_TIMEOUT_TICKS, MetaReplica, ProposalLost

IDS = (1, 2, 3)


class Cluster:
    def __init__(self, config: RaftConfig | None = None) -> None:
        self.outbox: list[Message] = []
        self.blocked: set[int] = set()
        self.replicas: dict[int, MetaReplica] = {}
        for nid in IDS:
            log = RaftLog(SimFileSystem(random.Random(nid)), "meta")
            raft = RaftNode(nid, config or RaftConfig(), random.Random(nid), log.durable(),
                            peers=IDS)
            self.replicas[nid] = MetaReplica(raft, log, self.outbox.append, compact_entries=1000)

    def settle(self) -> None:
        for _ in range(1000):
            for replica in self.replicas.values():
                replica.process_ready()
            if not self.outbox:
                return
            batch, self.outbox[:] = list(self.outbox), []
            for msg in batch:
                if msg.dst not in self.blocked and msg.src not in self.blocked:
                    self.replicas[msg.dst].raft.step(msg)
        raise AssertionError("no quiescence")

    def elect(self, nid: int) -> None:
        self.replicas[nid].raft.campaign()
        self.settle()
        assert self.replicas[nid].raft.role is Role.LEADER


def test_a_follower_proposal_applies_everywhere_and_answers_the_follower() -> None:
    c = Cluster()
    c.elect(1)
    answers: list[MetaResult | Exception] = []
    data = encode_command("config.put", key="k", value="from-2")
    assert c.replicas[2].propose(data, answers.append) == 0  # forwarded
    assert answers == []
    c.settle()
    (result,) = answers
    assert isinstance(result, MetaResult) and result.ok, result
    for replica in c.replicas.values():
        assert replica.sm.config()["k"] == "from-2"  # the envelope never reached the machine
    digests = {r.sm.digest() for r in c.replicas.values()}
    assert len(digests) == 1


def test_a_forwarded_proposal_that_never_applies_is_reported_lost() -> None:
    c = Cluster()
    c.elect(1)
    c.blocked.add(1)  # the leader is cut off: the forward goes nowhere
    answers: list[MetaResult | Exception] = []
    c.replicas[3].propose(encode_command("config.put", key="k", value="v"), answers.append)
    c.settle()
    c.replicas[3].tick(FORWARD_TIMEOUT_TICKS - 1)
    assert answers == []
    c.replicas[3].tick(1)
    assert len(answers) == 1 and isinstance(answers[0], ProposalLost)


def test_no_leader_known_drops_the_proposal() -> None:
    c = Cluster()
    with pytest.raises(ProposalDropped):
        c.replicas[2].propose(encode_command("config.put", key="k", value="v"), print)


def test_the_forward_timeout_is_a_deadline_so_skipped_ticks_do_not_delay_it() -> None:
    """A host that sleeps across idle ticks wakes at `ticks_until_due()`: the forwarded
    proposal's timeout must be one of those wake-ups (the cluster world's tick-skip equivalence
    test found it missing: the loss was reported at the next heartbeat instead)."""
    c = Cluster()
    c.elect(1)
    c.blocked.add(1)
    follower = c.replicas[3]
    idle = follower.ticks_until_due()
    answers: list[MetaResult | Exception] = []
    follower.propose(encode_command("config.put", key="k", value="v"), answers.append)
    c.settle()
    assert follower.ticks_until_due() == min(idle, FORWARD_TIMEOUT_TICKS)
    follower.raft.tick(follower.raft.ticks_until_due() - 1)  # let Raft's own deadline be later
    remaining = FORWARD_TIMEOUT_TICKS
    while not answers:
        n = follower.ticks_until_due()
        assert 1 <= n <= remaining
        follower.tick(n)
        remaining -= n
        c.settle()
    assert remaining == 0 and isinstance(answers[0], ProposalLost)


def test_a_leader_reusing_an_index_fails_the_waiter_its_old_term_left_there() -> None:
    """Node 1 leads and proposes three entries that stay uncommitted (it is cut off); node 2 is
    elected and its one no-op overwrites that tail; node 1 leads again, and its second new entry
    lands at the index of one of its old proposals, still waiting. The old waiter is answered
    ProposalLost at once (it used to trip an assertion; found by the cluster world's isolate
    leader faults)."""
    c = Cluster(RaftConfig(pre_vote=False, check_quorum=False))
    c.elect(1)
    c.blocked.add(1)
    old: list[MetaResult | Exception] = []
    first = [c.replicas[1].propose(encode_command("config.put", key="k", value=f"old{i}"),
                                   old.append) for i in range(3)]
    c.settle()
    c.elect(2)  # 2's no-op takes index first[0]
    c.blocked.discard(1)
    c.replicas[2].tick(1)  # a heartbeat: 1 learns the new term and takes 2's log
    c.settle()
    assert c.replicas[1].raft.role is Role.FOLLOWER
    c.blocked.add(2)  # 2 does not see 1's next election; 3 votes
    c.elect(1)  # 1's no-op takes index first[1]
    new: list[MetaResult | Exception] = []
    index = c.replicas[1].propose(encode_command("config.put", key="k", value="new"), new.append)
    assert index == first[2]
    assert [type(r) for r in old] == [ProposalLost] * 3, old
    c.settle()
    assert len(new) == 1 and isinstance(new[0], MetaResult) and new[0].ok
