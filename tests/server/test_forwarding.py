"""Proposals made on a follower are forwarded to the meta leader and answered on the follower
once they apply there (enveloped with the origin's id, stripped before the state machine sees
them); unanswered ones are reported lost after FORWARD_TIMEOUT_TICKS."""

from __future__ import annotations

import random

import pytest

from model.fs import SimFileSystem
from real.meta import MetaResult, encode_command
from real.raft import RaftConfig, RaftNode
from real.raft.types import Message, ProposalDropped, Role
from real.server.raftlog import RaftLog
from real.server.replica import FORWARD_TIMEOUT_TICKS, MetaReplica, ProposalLost

IDS = (1, 2, 3)


class Cluster:
    def __init__(self) -> None:
        self.outbox: list[Message] = []
        self.blocked: set[int] = set()
        self.replicas: dict[int, MetaReplica] = {}
        for nid in IDS:
            log = RaftLog(SimFileSystem(random.Random(nid)), "meta")
            raft = RaftNode(nid, RaftConfig(), random.Random(nid), log.durable(), peers=IDS)
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
