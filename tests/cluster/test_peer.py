"""The inter-node connection: the mutual challenge handshake, Raft messages after it, and every
way a stranger or a confused peer is refused (issue 11, point 9: the inter-node port accepts only
cluster members)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from real.cluster.peer import Closed, Established, PeerConfig, PeerSession, Received
from real.cluster.wire import Kind, encode_frame, encode_message, raft_frame
from real.raft.types import Entry, Message, MsgType

SECRET = b"0123456789abcdef-cluster-secret"
A = PeerConfig("c1", 1, SECRET, frozenset({1, 2, 3}))
B = PeerConfig("c1", 2, SECRET, frozenset({1, 2, 3}))


def pair(dialer: PeerConfig = A, acceptor: PeerConfig = B, expect: int = 2,
         seed: int = 1) -> tuple[PeerSession, PeerSession]:
    return (PeerSession(dialer, random.Random(seed), dialer=True, expect=expect),
            PeerSession(acceptor, random.Random(seed + 100), dialer=False))


def pump(d: PeerSession, a: PeerSession, chunk: int = 0) -> tuple[list, list]:
    """Carry bytes both ways until neither side has anything to say."""
    d_events: list = []
    a_events: list = []
    for _ in range(10):
        to_a, to_d = d.take_output(), a.take_output()
        if not to_a and not to_d:
            break
        for data, side, events in ((to_a, a, a_events), (to_d, d, d_events)):
            step = chunk or max(1, len(data))
            for i in range(0, len(data), step):
                events += side.receive(data[i:i + step])
    return d_events, a_events


@pytest.mark.parametrize("chunk", [0, 1, 7])
def test_members_with_the_secret_connect_and_exchange_raft_messages(chunk: int) -> None:
    d, a = pair()
    d_events, a_events = pump(d, a, chunk)
    assert d_events == [Established(2)] and a_events == [Established(1)]
    assert d.established and a.established
    m = Message(MsgType.APPEND, 1, 2, 3, index=4, entries=(Entry(3, 5, data=b"x"),))
    d.send(m)
    reply = Message(MsgType.APPEND_RESP, 2, 1, 3, index=5)
    a.send(reply)
    d_events, a_events = pump(d, a, chunk)
    assert a_events == [Received(m)] and d_events == [Received(reply)]
    assert (d.sent, d.received, a.sent, a.received) == (1, 1, 1, 1)


def test_a_wrong_secret_is_refused_on_both_sides_without_sending_the_secret() -> None:
    stranger = replace(A, secret=b"not-the-secret-at-all!!")
    d, a = pair(dialer=stranger)
    hello = d.take_output()
    assert SECRET not in hello and stranger.secret not in hello
    a.receive(hello)
    challenge = a.take_output()
    events = d.receive(challenge)  # the acceptor's MAC does not match the stranger's secret
    assert events == [Closed("node 2 does not hold the cluster secret")]
    assert not d.established and d.take_output().startswith(b"\x00")  # a REJECT goes out


def test_an_acceptor_refuses_a_dialer_that_cannot_prove_the_secret() -> None:
    """The dialer part of the proof: a forged PROOF is refused with a REJECT."""
    d, a = pair()
    a.receive(d.take_output())
    a.take_output()
    events = a.receive(encode_frame(Kind.PROOF, b"\x00" * 32))
    assert events == [Closed("node 1 does not hold the cluster secret")]
    assert not a.established


@pytest.mark.parametrize(("dialer", "expected"), [
    (replace(A, cluster_id="other"), "peer is of cluster 'other', not 'c1'"),
    (replace(A, node_id=2), "node id 2 is not a member of this cluster"),
    (replace(A, node_id=9), "node id 9 is not a member of this cluster"),
])
def test_strangers_are_refused_at_hello(dialer: PeerConfig, expected: str) -> None:
    d, a = pair(dialer=dialer)
    d_events, a_events = pump(d, a)
    assert a_events == [Closed(expected)]
    assert d_events == [Closed(f"refused by the peer: {expected}")]
    assert not d.established and not a.established


def test_a_dialer_refuses_an_impostor_node_id() -> None:
    d, a = pair(expect=3)  # dialled node 3, node 2 answers
    d_events, _ = pump(d, a)
    assert d_events == [Closed("dialled node 3, node 2 answered")]


def test_raft_before_the_handshake_and_garbage_close_the_connection() -> None:
    _, a = pair()
    m = Message(MsgType.HEARTBEAT, 1, 2, 1)
    assert a.receive(raft_frame(m)) == [Closed("a Raft message before the handshake")]
    assert a.receive(raft_frame(m)) == []  # closed: ignored
    _, b = pair()
    (event,) = b.receive(b"\xff\xff\xff\xff garbage")
    assert isinstance(event, Closed) and "over the limit" in event.reason


def test_a_spoofed_source_or_destination_closes_an_established_connection() -> None:
    d, a = pair()
    pump(d, a)
    spoofed = Message(MsgType.VOTE, 3, 2, 9)  # node 1's connection claims to speak for node 3
    events = a.receive(encode_frame(Kind.RAFT, encode_message(spoofed)))
    assert events == [Closed("Raft message from 3 to 2 on the connection of node 1 to node 2")]
    d2, a2 = pair()
    pump(d2, a2)
    misrouted = Message(MsgType.VOTE, 1, 3, 9)
    (event,) = a2.receive(raft_frame(misrouted))
    assert isinstance(event, Closed) and "from 1 to 3" in event.reason


def test_an_oversized_frame_is_refused_before_it_is_buffered() -> None:
    small = replace(B, frame_max=1024)
    d, a = pair(acceptor=small)
    pump(d, a)
    big = Message(MsgType.APPEND, 1, 2, 1, entries=(Entry(1, 1, data=b"x" * 4096),))
    (event,) = a.receive(raft_frame(big)[:64])  # the length alone gives it away
    assert isinstance(event, Closed) and "over the limit 1024" in event.reason


def test_a_replayed_handshake_does_not_authenticate() -> None:
    """A recorded HELLO/PROOF pair does not work against a fresh acceptor (new nonce)."""
    d, a = pair()
    hello = d.take_output()
    a.receive(hello)
    d.receive(a.take_output())
    proof = d.take_output()
    fresh = PeerSession(B, random.Random(999), dialer=False)
    fresh.receive(hello)
    fresh.take_output()
    assert fresh.receive(proof) == [Closed("node 1 does not hold the cluster secret")]


def test_a_mismatched_frame_version_is_refused() -> None:
    _, a = pair()
    events = a.receive(encode_frame(Kind.HELLO, b"\x02\x02" + b"\x00\x00\x00\x01" + b"n" * 16
                                    + b"c1", version=2))
    assert events == [Closed("frame version 2 (this node speaks 1)")]
    _, b = pair()
    events = b.receive(encode_frame(Kind.HELLO, b"\x02\x03" + b"\x00\x00\x00\x01" + b"n" * 16
                                    + b"c1"))
    assert events == [Closed("peer speaks frame versions 2-3, this node 1")]


def test_the_handshake_is_deterministic_for_a_seed() -> None:
    d1, a1 = pair(seed=5)
    d2, a2 = pair(seed=5)
    assert d1.take_output() == d2.take_output()
    d3, _ = pair(seed=6)
    assert d3.take_output() != pair(seed=5)[0].take_output()


def test_before_the_handshake_a_stranger_cannot_make_a_node_buffer_much() -> None:
    """A frame header announcing more than HANDSHAKE_FRAME_MAX before authentication is refused
    at once; after the handshake large frames (snapshots) are fine."""
    from real.cluster.peer import HANDSHAKE_FRAME_MAX

    _, a = pair()
    (event,) = a.receive((HANDSHAKE_FRAME_MAX + 1).to_bytes(4, "big") + b"\x01\x01")
    assert isinstance(event, Closed) and f"over the limit {HANDSHAKE_FRAME_MAX}" in event.reason
    d, b = pair()
    pump(d, b)
    big = Message(MsgType.APPEND, 1, 2, 1, entries=(Entry(1, 1, data=b"x" * 100_000),))
    d.send(big)
    _, b_events = pump(d, b)
    assert b_events == [Received(big)]
