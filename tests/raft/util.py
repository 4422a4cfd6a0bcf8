"""Small helpers shared by the Raft unit tests."""

from __future__ import annotations

import random
from dataclasses import replace

from real.raft import Message, MsgType, RaftConfig, RaftNode, Ready, Role
from tests.raft.harness import Network

BASE = RaftConfig(
    election_tick_min=5,
    election_tick_max=9,
    heartbeat_tick=2,
    pre_vote=False,
    check_quorum=False,
)


def cfg(**kw: object) -> RaftConfig:
    return replace(BASE, **kw)  # type: ignore[arg-type]


def cluster(n: int, seed: int = 0, **kw: object) -> Network:
    net = Network(cfg(**kw), seed=seed)
    ids = tuple(range(1, n + 1))
    for i in ids:
        net.add_node(i, ids)
    net.stabilize()
    return net


def drain(node: RaftNode) -> list[Ready]:
    """Ready loop without a network: returns every Ready (messages are not sent)."""
    out = []
    while node.has_ready():
        rd = node.ready()
        out.append(rd)
        node.advance(rd)
    return out


def sent(readies: list[Ready], kind: MsgType | None = None) -> list[Message]:
    return [m for rd in readies for m in rd.messages if kind is None or m.type is kind]


def lone(node_id: int = 1, peers: tuple[int, ...] = (1, 2, 3), **kw: object) -> RaftNode:
    node = RaftNode(node_id, cfg(**kw), random.Random(7), peers=peers)
    drain(node)
    return node


def figure8_setup(config: RaftConfig) -> Network:
    """Entry 3 (term 2) is on 1 and 2; 2 leads term 3, knows 1 matches 3, nobody has entry 4."""
    net = Network(config, seed=0)
    for i in (1, 2, 3):
        net.add_node(i, (1, 2, 3))
    net.stabilize()
    net.elect(1)
    net.nodes[1].propose(b"x")
    net.process_ready(1)
    net.deliver(2)
    net.process_ready(2)
    net.msgs.clear()
    net.crash(1)
    net.nodes[2].campaign()
    net.process_ready(2)
    net.deliver(3)
    net.process_ready(3)
    net.deliver(2)
    assert net.nodes[2].role is Role.LEADER
    assert net.nodes[2].term == 3
    net.process_ready(2)
    net.msgs.clear()
    net.nodes[2].step(Message(MsgType.APPEND_RESP, 1, 2, 3, index=3))
    return net
