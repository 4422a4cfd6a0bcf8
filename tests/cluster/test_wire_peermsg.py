"""The wire codecs of the node-to-node messages besides Raft's (real/server/peermsg.py): seeded
round trips of every field's range (ids, -1 sentinels, unicode topics, records of every shape),
golden encodings, every truncation and random garbage raising only `WireError`, and the peer
connection and transport carrying them like Raft messages (a malformed one closes the
connection)."""

from __future__ import annotations

import asyncio
import random
import socket
from dataclasses import replace

import pytest

from real.cluster.peer import Closed, PeerConfig, PeerSession, Received
from real.cluster.wire import (
    KINDS,
    PEER_KINDS,
    Frame,
    FrameDecoder,
    Kind,
    WireError,
    decode_broker_heartbeat,
    decode_log_append,
    decode_log_append_reply,
    decode_peer,
    decode_shard_fetch,
    decode_shard_reply,
    encode_frame,
    encode_shard_reply,
    peer_frame,
    peer_frame_parts,
    raft_frame,
)
from real.raft.types import Entry, Message, MsgType
from real.server.peermsg import (
    APPEND_ERRORS,
    FETCH_ERRORS,
    AppendError,
    BrokerHeartbeat,
    FetchError,
    LogAppend,
    LogAppendReply,
    PeerMessage,
    ShardFetch,
    ShardFetchReply,
)
from real.storage.record import Record, encode_records

I64_MAX = (1 << 63) - 1
U32_MAX = (1 << 32) - 1
SEEDS = range(8)
CASES_PER_SEED = 60
ALPHABET = "az_-.09é€中🙂\u0000\uffff"


def node_id(rng: random.Random) -> int:
    return rng.choice((1, 2, U32_MAX, rng.randrange(1, U32_MAX + 1)))


def signed(rng: random.Random) -> int:
    """An offset or epoch: -1 ("none"), small, or up to the i64 limit."""
    return rng.choice((-1, 0, 1, rng.randrange(0, 1000), rng.randrange(0, I64_MAX + 1), I64_MAX))


def topic(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 40)))


def records(rng: random.Random) -> tuple[Record, ...]:
    if rng.random() < 0.25:
        return ()
    base = rng.choice((0, 1, rng.randrange(0, 1 << 40)))
    out = []
    for i in range(rng.randrange(1, 6)):
        key = None if rng.random() < 0.3 else rng.randbytes(rng.randrange(0, 12))
        headers = tuple((topic(rng), rng.randbytes(rng.randrange(0, 6)))
                        for _ in range(rng.choice((0, 0, 1, 3))))
        producer = rng.random() < 0.3
        meta = tuple((topic(rng), topic(rng)) for _ in range(rng.choice((0, 0, 2))))
        out.append(Record(base + i, rng.randrange(0, 1 << 42), key,
                          rng.randbytes(rng.choice((0, 5, 200))), headers,
                          rng.randrange(0, 1 << 40) if producer else -1,
                          rng.randrange(0, 1 << 15) if producer else -1,
                          rng.randrange(0, 1 << 31) if producer else -1, meta))
    return tuple(out)


def shard_fetch(rng: random.Random) -> ShardFetch:
    return ShardFetch(node_id(rng), node_id(rng), topic(rng), rng.randrange(0, U32_MAX + 1),
                      signed(rng), signed(rng), signed(rng), signed(rng),
                      rng.choice((0, 1, rng.randrange(0, 1 << 64))),
                      rng.choice((0, 1 << 20, U32_MAX)))


def shard_reply(rng: random.Random) -> ShardFetchReply:
    return ShardFetchReply(node_id(rng), node_id(rng), topic(rng), rng.randrange(0, 1 << 16),
                           signed(rng), rng.randrange(0, 1 << 64), rng.choice(sorted(FETCH_ERRORS)),
                           signed(rng), signed(rng), signed(rng), signed(rng), records(rng))


def heartbeat(rng: random.Random) -> BrokerHeartbeat:
    return BrokerHeartbeat(node_id(rng), node_id(rng), signed(rng))


def log_append(rng: random.Random) -> LogAppend:
    return LogAppend(node_id(rng), node_id(rng), rng.randrange(0, U32_MAX + 1),
                     rng.choice((0, 1, rng.randrange(0, 1 << 64))),
                     rng.randbytes(rng.choice((0, 1, 61, 700))))


def log_append_reply(rng: random.Random) -> LogAppendReply:
    return LogAppendReply(node_id(rng), node_id(rng), rng.randrange(0, U32_MAX + 1),
                          rng.choice((0, 1, rng.randrange(0, 1 << 64))),
                          rng.choice(sorted(APPEND_ERRORS)), topic(rng))


MAKERS = {Kind.SHARD_FETCH: shard_fetch, Kind.SHARD_REPLY: shard_reply,
          Kind.BROKER_HEARTBEAT: heartbeat, Kind.LOG_APPEND: log_append,
          Kind.LOG_APPEND_REPLY: log_append_reply}


def samples() -> list[PeerMessage]:
    """Fixed messages of each kind (a reply with records and one without)."""
    recs = (Record(7, 1000, None, b"a"), Record(8, 1001, b"k", b"", (("h", b"v"),)),
            Record(9, 999, b"", b"xyz", (), 5, 1, 3, (("m", "é"),)))
    return [ShardFetch(2, 1, "t/é", 3, 4, 10, -1, 9, 17),
            ShardFetchReply(1, 2, "t/é", 3, 4, 17, FetchError.NONE, 10, 0, -1, -1, recs),
            ShardFetchReply(1, 2, "t", 0, 4, 18, FetchError.FENCED, 10, 0, 3, 8),
            BrokerHeartbeat(3, 1, 12),
            LogAppend(2, 3, 1, 5, b"batch"),
            LogAppendReply(3, 2, 1, 5, AppendError.REFUSED, "no: é")]


# ---- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("seed", SEEDS)
def test_every_peer_message_round_trips(kind: int, seed: int) -> None:
    rng = random.Random(seed * 100 + kind)
    for _ in range(CASES_PER_SEED):
        msg = MAKERS[kind](rng)
        data = peer_frame(msg)
        (frame,) = FrameDecoder().feed(data)
        assert frame.kind == kind and frame.version == 1
        assert decode_peer(frame) == msg


def test_a_reply_goes_out_in_parts_with_its_large_payloads_uncopied() -> None:
    """`peer_frame_parts` joined is `peer_frame` (which the encodings test pins); a record
    payload of 8 KiB or more is a part of its own, the very object the reply holds."""
    big = bytes(range(256)) * 64
    recs = (Record(5, 1, None, big), Record(6, 2, None, b"small"), Record(7, 3, None, big + b"!"))
    reply = ShardFetchReply(1, 2, "t", 0, 3, 9, FetchError.NONE, 6, 0, -1, -1, recs)
    parts = peer_frame_parts(reply)
    assert b"".join(parts) == peer_frame(reply)
    assert any(part is recs[0].payload for part in parts)
    assert any(part is recs[2].payload for part in parts)
    (frame,) = FrameDecoder().feed(b"".join(parts))
    assert decode_peer(frame) == reply
    for msg in samples():
        assert b"".join(peer_frame_parts(msg)) == peer_frame(msg)


def test_round_trips_cover_the_edges() -> None:
    """The seeded generators do reach -1 fields, the id limits, empty and unicode topics, None
    keys, headers and empty replies (else the round trips above prove less than they claim)."""
    rng = random.Random(0)
    replies = [shard_reply(rng) for _ in range(300)]
    fetches = [shard_fetch(rng) for _ in range(300)]
    assert any(r.records == () for r in replies)
    all_recs = [rec for r in replies for rec in r.records]
    assert any(rec.key is None for rec in all_recs) and any(rec.headers for rec in all_recs)
    assert any(rec.producer_id >= 0 for rec in all_recs) and any(rec.meta for rec in all_recs)
    assert any(r.diverging_epoch == -1 for r in replies)
    assert any(f.last_epoch == -1 for f in fetches) and any(f.src == U32_MAX for f in fetches)
    assert any(f.topic == "" for f in fetches) and any("🙂" in f.topic for f in fetches)
    assert {r.error for r in replies} == FETCH_ERRORS


def test_empty_records_round_trip_and_cost_no_batch() -> None:
    reply = ShardFetchReply(1, 2, "t", 0, 1, 1)
    payload = encode_shard_reply(reply)
    assert payload.endswith(b"\x00\x00\x00\x00")  # records length 0: no empty batch header
    assert decode_shard_reply(payload) == reply
    # An explicit empty batch is accepted too.
    explicit = payload[:-4] + len(encode_records([])).to_bytes(4, "big") + encode_records([])
    assert decode_shard_reply(explicit) == reply


def test_mixed_frames_survive_any_chunking() -> None:
    rng = random.Random(11)
    msgs: list[Message | PeerMessage] = [Message(MsgType.APPEND, 1, 2, 3,
                                                 entries=(Entry(3, 4, data=b"e"),))]
    msgs += samples() + [MAKERS[k](rng) for k in sorted(MAKERS) for _ in range(5)]
    rng.shuffle(msgs)
    stream = b"".join(peer_frame(m) for m in msgs)
    for chunk in (1, 3, 17, len(stream)):
        dec = FrameDecoder()
        frames: list[Frame] = []
        for i in range(0, len(stream), chunk):
            frames += dec.feed(stream[i:i + chunk])
        assert [decode_peer(f) for f in frames] == msgs
        assert dec.buffered() == 0


def test_raft_frames_are_unchanged() -> None:
    m = Message(MsgType.HEARTBEAT, 1, 2, 5, commit=3)
    assert peer_frame(m) == raft_frame(m)
    (frame,) = FrameDecoder().feed(raft_frame(m))
    assert decode_peer(frame) == m


def test_the_new_kinds_are_fixed_and_known() -> None:
    assert (Kind.SHARD_FETCH, Kind.SHARD_REPLY, Kind.BROKER_HEARTBEAT) == (7, 8, 9)
    assert (Kind.LOG_APPEND, Kind.LOG_APPEND_REPLY) == (10, 11)
    assert PEER_KINDS == {6, 7, 8, 9, 10, 11} and PEER_KINDS <= KINDS
    assert FETCH_ERRORS == set(range(6))
    assert APPEND_ERRORS == set(range(4))


def test_the_encodings_are_stable() -> None:
    """Golden payloads: changing the format needs a new VERSION, not a silent change."""
    fetch = ShardFetch(2, 1, "té", 3, 4, 10, -1, 9, 17)
    assert peer_frame(fetch).hex() == (
        "0000003f" "01" "07"                                  # length, version, SHARD_FETCH
        "00000002" "00000001" "0003" "74c3a9"                 # src, dst, topic
        "00000003" "0000000000000004" "000000000000000a"      # partition, epoch, offset
        "ffffffffffffffff" "0000000000000009"                 # last_epoch, acked
        "0000000000000011" "00100000")                        # seq, bytes_max
    reply = ShardFetchReply(1, 2, "t", 0, 4, 18, FetchError.FENCED, 10, 0, 3, 8)
    assert peer_frame(reply).hex() == (
        "00000046" "01" "08"                                  # length, version, SHARD_REPLY
        "00000001" "00000002" "0001" "74"                     # src, dst, topic
        "00000000" "0000000000000004" "0000000000000012" "02"  # partition, epoch, seq, error
        "000000000000000a" "0000000000000000"                 # high_watermark, log_start
        "0000000000000003" "0000000000000008"                 # diverging epoch and end
        "00000000")                                           # no records
    assert peer_frame(BrokerHeartbeat(3, 1, 12)).hex() == (
        "00000012" "01" "09" "00000003" "00000001" "000000000000000c")
    assert peer_frame(LogAppend(2, 3, 1, 5, b"ab")).hex() == (
        "0000001c" "01" "0a"                                  # length, version, LOG_APPEND
        "00000002" "00000003" "00000001" "0000000000000005"   # src, dst, partition, seq
        "00000002" "6162")                                    # the batch
    assert peer_frame(LogAppendReply(3, 2, 1, 5, AppendError.NOT_LEADER, "x")).hex() == (
        "0000001a" "01" "0b"                                  # length, version, LOG_APPEND_REPLY
        "00000003" "00000002" "00000001" "0000000000000005"   # src, dst, partition, seq
        "01" "0001" "78")                                     # error, detail


# ---- hostile bytes ----------------------------------------------------------------------------


@pytest.mark.parametrize("msg", samples(), ids=lambda m: type(m).__name__)
def test_every_truncation_is_a_wire_error(msg: PeerMessage) -> None:
    data = peer_frame(msg)
    (frame,) = FrameDecoder().feed(data)
    for cut in range(len(frame.payload)):
        with pytest.raises(WireError):
            decode_peer(Frame(frame.version, frame.kind, frame.payload[:cut]))
    for cut in range(len(data)):  # a cut frame is not a frame yet
        assert FrameDecoder().feed(data[:cut]) == []


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_random_garbage_only_ever_raises_wire_error(kind: int) -> None:
    rng = random.Random(kind)
    valid = [peer_frame(MAKERS[kind](rng))[6:] for _ in range(20)]
    errors = 0
    for i in range(3000):
        if i % 3 == 0:
            payload = rng.randbytes(rng.randrange(0, 200))
        else:
            data = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):
                if data and rng.random() < 0.6:
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
                else:
                    data[rng.randrange(len(data) + 1):rng.randrange(len(data) + 1)] = (
                        rng.randbytes(rng.randrange(0, 9)))
            payload = bytes(data)
        try:
            msg = decode_peer(Frame(1, kind, payload))
        except WireError:
            errors += 1
        else:
            assert decode_peer(Frame(1, kind, peer_frame(msg)[6:])) == msg
    assert errors > 1000, errors


def fetch_payload() -> bytes:
    return peer_frame(ShardFetch(2, 1, "t", 3, 4, 10, -1, 9, 17))[6:]


def reply_payload() -> bytes:
    return encode_shard_reply(samples()[1])  # type: ignore[arg-type]


@pytest.mark.parametrize(("decode", "payload", "expected"), [
    (decode_shard_fetch, fetch_payload() + b"\x00", "1 trailing bytes after the ShardFetch"),
    (decode_shard_fetch, b"\x00" * 4 + fetch_payload()[4:], "node id 0 in a ShardFetch"),
    (decode_shard_fetch, fetch_payload()[:8] + b"\x00\x01\xff" + fetch_payload()[11:],
     "ShardFetch topic is not UTF-8"),
    (decode_shard_fetch, fetch_payload()[:8] + b"\x01\x00" + fetch_payload()[10:],
     "truncated in ShardFetch topic"),
    (decode_shard_fetch, fetch_payload()[:15] + (-2).to_bytes(8, "big", signed=True)
     + fetch_payload()[23:], "ShardFetch epoch -2"),
    (decode_shard_fetch, fetch_payload()[:31] + (-5).to_bytes(8, "big", signed=True)
     + fetch_payload()[39:], "ShardFetch last_epoch -5"),
    (decode_shard_reply, reply_payload() + b"\x00", "1 trailing bytes after the ShardFetchReply"),
    (decode_shard_reply, reply_payload()[:4] + b"\x00" * 4 + reply_payload()[8:],
     "node id 0 in a ShardFetchReply"),
    (decode_broker_heartbeat, peer_frame(BrokerHeartbeat(3, 1, -2))[6:],
     "BrokerHeartbeat broker_epoch -2"),
    (decode_broker_heartbeat, peer_frame(BrokerHeartbeat(3, 1, 2))[6:] + b"\x00",
     "1 trailing bytes after the BrokerHeartbeat"),
    (decode_broker_heartbeat, b"\x00" * 16, "node id 0 in a BrokerHeartbeat"),
    (decode_log_append, peer_frame(LogAppend(2, 3, 1, 5, b"ab"))[6:] + b"\x00",
     "1 trailing bytes after the LogAppend"),
    (decode_log_append, b"\x00" * 4 + peer_frame(LogAppend(2, 3, 1, 5, b"ab"))[10:],
     "node id 0 in a LogAppend"),
    (decode_log_append, peer_frame(LogAppend(2, 3, 1, 5, b"ab"))[6:-1],
     "truncated in LogAppend batch"),
    (decode_log_append_reply, peer_frame(LogAppendReply(3, 2, 1, 5, 4, ""))[6:],
     "LogAppendReply error code 4 unknown"),
    (decode_log_append_reply, peer_frame(LogAppendReply(3, 2, 1, 5, 0, "é"))[6:-1],
     "truncated in LogAppendReply detail"),
])
def test_malformed_messages_name_the_problem(decode: object, payload: bytes,
                                             expected: str) -> None:
    with pytest.raises(WireError, match=expected):
        decode(payload)  # type: ignore[operator]


@pytest.mark.parametrize("code", [6, 7, 99, 255])
def test_an_unknown_error_code_is_refused(code: int) -> None:
    payload = bytearray(reply_payload())
    at = 8 + 2 + len("t/é".encode()) + 4 + 8 + 8  # ids, topic, partition, epoch, seq
    assert payload[at] == FetchError.NONE
    payload[at] = code
    with pytest.raises(WireError, match=f"error code {code} unknown"):
        decode_shard_reply(bytes(payload))


def test_a_corrupt_record_batch_is_a_wire_error() -> None:
    payload = bytearray(reply_payload())
    payload[-1] ^= 0x40  # in the last record: the batch CRC no longer matches
    with pytest.raises(WireError, match="ShardFetchReply records: corrupt batch"):
        decode_shard_reply(bytes(payload))


def test_records_must_have_contiguous_offsets() -> None:
    base = encode_shard_reply(ShardFetchReply(1, 2, "t", 0, 1, 1))[:-4]
    for recs in ([Record(3, 0, None, b"a"), Record(5, 0, None, b"b")],
                 [Record(-1, 0, None, b"a")]):
        batch = encode_records(recs)
        with pytest.raises(WireError, match="negative or not contiguous"):
            decode_shard_reply(base + len(batch).to_bytes(4, "big") + batch)


@pytest.mark.parametrize("kind", sorted(KINDS - PEER_KINDS))
def test_a_handshake_frame_carries_no_peer_message(kind: int) -> None:
    with pytest.raises(WireError, match=f"frame kind {kind} carries no peer message"):
        decode_peer(Frame(1, kind, b""))


def test_peer_frame_refuses_what_is_not_a_message() -> None:
    with pytest.raises(TypeError, match="not a node-to-node message: str"):
        peer_frame("hello")  # type: ignore[arg-type]


# ---- the peer connection ----------------------------------------------------------------------

SECRET = b"0123456789abcdef-cluster-secret"
A = PeerConfig("c1", 1, SECRET, frozenset({1, 2, 3}))
B = PeerConfig("c1", 2, SECRET, frozenset({1, 2, 3}))


def established() -> tuple[PeerSession, PeerSession]:
    d = PeerSession(A, random.Random(1), dialer=True, expect=2)
    a = PeerSession(B, random.Random(2), dialer=False)
    for _ in range(4):
        a.receive(d.take_output())
        d.receive(a.take_output())
    assert d.established and a.established
    return d, a


def test_an_established_connection_carries_every_peer_message() -> None:
    d, a = established()
    rng = random.Random(5)
    sent: list[Message | PeerMessage] = [Message(MsgType.VOTE, 1, 2, 4)]
    sent += [replace(MAKERS[k](rng), src=1, dst=2) for k in sorted(MAKERS) for _ in range(3)]
    for m in sent:
        d.send(m)
    assert a.receive(d.take_output()) == [Received(m) for m in sent]
    reply = ShardFetchReply(2, 1, "t", 0, 1, 1, records=(Record(0, 1, b"k", b"v"),))
    a.send(reply)
    assert d.receive(a.take_output()) == [Received(reply)]
    assert (d.sent, a.received, a.sent, d.received) == (len(sent), len(sent), 1, 1)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_a_malformed_peer_message_closes_the_connection(kind: int) -> None:
    _, a = established()
    (event,) = a.receive(encode_frame(kind, b"\x00\x00\x00\x01\x00"))
    name = {Kind.SHARD_FETCH: "ShardFetch", Kind.SHARD_REPLY: "ShardFetchReply",
            Kind.BROKER_HEARTBEAT: "BrokerHeartbeat", Kind.LOG_APPEND: "LogAppend",
            Kind.LOG_APPEND_REPLY: "LogAppendReply"}[kind]
    assert isinstance(event, Closed) and event.reason.startswith(f"malformed {name} message: ")
    assert a.closed_reason is not None and a.take_output()[5] == Kind.REJECT
    assert a.receive(peer_frame(BrokerHeartbeat(1, 2, 1))) == []  # closed: ignored


def test_a_corrupt_record_batch_closes_the_connection() -> None:
    _, a = established()
    reply = ShardFetchReply(1, 2, "t", 0, 1, 1, records=(Record(0, 1, b"k", b"value"),))
    frame = bytearray(peer_frame(reply))
    frame[-2] ^= 1
    (event,) = a.receive(bytes(frame))
    assert isinstance(event, Closed) and "malformed ShardFetchReply message" in event.reason
    assert "corrupt batch" in event.reason


def test_a_spoofed_peer_message_closes_the_connection() -> None:
    _, a = established()
    (event,) = a.receive(peer_frame(BrokerHeartbeat(3, 2, 1)))
    assert event == Closed("BrokerHeartbeat message from 3 to 2 on the connection of node 1 to "
                           "node 2")
    _, b = established()
    (event,) = b.receive(peer_frame(ShardFetch(1, 3, "t", 0, 1, 0, -1, 0, 1)))
    assert isinstance(event, Closed) and "ShardFetch message from 1 to 3" in event.reason


def test_a_peer_message_before_the_handshake_closes_the_connection() -> None:
    a = PeerSession(B, random.Random(2), dialer=False)
    assert a.receive(peer_frame(BrokerHeartbeat(1, 2, 1))) == [
        Closed("a BrokerHeartbeat message before the handshake")]


# ---- the asyncio transport --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_peernet_carries_peer_messages_between_nodes() -> None:
    """Two `PeerNet`s on loopback: a Raft message, a fetch, a reply with records and a heartbeat
    arrive decoded, in order; a message to an unknown node is logged by its type name."""
    from real.node.peers import PeerNet

    async def run() -> tuple[list[Message | PeerMessage], list[str]]:
        peers = {1: ("127.0.0.1", _free_port()), 2: ("127.0.0.1", _free_port())}
        got: list[Message | PeerMessage] = []
        arrived = asyncio.Event()
        logs: list[str] = []

        def deliver(msg: Message | PeerMessage) -> None:
            got.append(msg)
            if len(got) == 4:
                arrived.set()

        one = PeerNet(replace(A, members=frozenset({1, 2})), peers, lambda m: None, logs.append,
                      random.Random(1))
        two = PeerNet(replace(B, members=frozenset({1, 2})), peers, deliver, logs.append,
                      random.Random(2))
        await one.start()
        await two.start()
        try:
            for msg in sent:
                one.send(msg)
            one.send(BrokerHeartbeat(1, 9, 1))
            await asyncio.wait_for(arrived.wait(), 10)
        finally:
            await one.close()
            await two.close()
        return got, logs

    sent: list[Message | PeerMessage] = [
        Message(MsgType.HEARTBEAT, 1, 2, 1),
        ShardFetch(1, 2, "t", 0, 1, 0, -1, 0, 1),
        ShardFetchReply(1, 2, "t", 0, 1, 1, records=(Record(0, 5, None, b"x" * 100),
                                                     Record(1, 6, b"k", b"y"))),
        BrokerHeartbeat(1, 2, 7),
    ]
    got, logs = asyncio.run(run())
    assert got == sent
    assert "cluster: no peer 9 for a BrokerHeartbeat message" in logs
