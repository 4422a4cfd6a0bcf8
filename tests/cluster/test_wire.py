"""The inter-node frame and Raft message codec: round trips for every message shape, a golden
encoding (the format must not move silently), and hostile bytes that must only ever raise
`WireError`."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from real.cluster.wire import (
    MSG_CODES,
    PEER_KINDS,
    FrameDecoder,
    Kind,
    WireError,
    decode_message,
    decode_peer,
    encode_frame,
    encode_message,
    peer_frame,
    raft_frame,
)
from real.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    Message,
    MsgType,
    Snapshot,
    SnapshotMeta,
)
from real.server.peermsg import BrokerHeartbeat, FetchError, ShardFetch, ShardFetchReply
from real.storage.record import Record

U64 = st.integers(0, (1 << 64) - 1)
IDS = st.integers(1, (1 << 32) - 1)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot | None:
    if not draw(st.booleans()):
        return None
    ids = sorted(draw(st.sets(IDS, max_size=7)))
    cut = draw(st.integers(0, len(ids)))
    learners = ids[cut:]
    voters = ids[:cut]
    return Snapshot(SnapshotMeta(draw(U64), draw(U64), ConfState(tuple(voters), tuple(learners))),
                    draw(st.binary(max_size=300)))


@st.composite
def messages(draw: st.DrawFn) -> Message:
    entries = draw(st.lists(st.builds(Entry, U64, U64, st.sampled_from(list(EntryKind)),
                                      st.binary(max_size=64)), max_size=6))
    return Message(draw(st.sampled_from(list(MsgType))), draw(IDS), draw(IDS), draw(U64),
                   log_term=draw(U64), index=draw(U64), entries=tuple(entries),
                   commit=draw(U64), reject=draw(st.booleans()), reject_hint=draw(U64),
                   snapshot=draw(snapshots()), context=draw(st.binary(max_size=40)))


@settings(max_examples=300, deadline=None)
@given(messages())
def test_every_message_round_trips(m: Message) -> None:
    assert decode_message(encode_message(m)) == m


@settings(max_examples=100, deadline=None)
@given(st.lists(messages(), min_size=1, max_size=5), st.integers(1, 64))
def test_frames_survive_any_chunking(ms: list[Message], chunk: int) -> None:
    stream = b"".join(raft_frame(m) for m in ms)
    dec = FrameDecoder()
    frames = []
    for i in range(0, len(stream), chunk):
        frames += dec.feed(stream[i:i + chunk])
    assert [decode_message(f.payload) for f in frames] == ms
    assert all(f.kind == Kind.RAFT and f.version == 1 for f in frames)
    assert dec.buffered() == 0


def test_every_message_type_has_a_fixed_code() -> None:
    assert set(MSG_CODES) == set(MsgType)
    assert len(set(MSG_CODES.values())) == len(MsgType)


def test_the_encoding_is_stable() -> None:
    """A golden frame: changing the format needs a new VERSION, not a silent change."""
    m = Message(MsgType.APPEND, 1, 2, 5, log_term=4, index=9, commit=8,
                entries=(Entry(5, 10, EntryKind.NORMAL, b"x"),), context=b"c")
    assert raft_frame(m).hex() == (
        "00000054" "01" "06"                                # length, version, kind RAFT
        "05" "00000001" "00000002" "0000000000000005"       # APPEND, src, dst, term
        "0000000000000004" "0000000000000009"               # log_term, index
        "0000000000000008" "00" "0000000000000000"          # commit, reject, reject_hint
        "00000001" "0000000000000005" "000000000000000a" "01" "00000001" "78"  # one entry
        "00"                                                # no snapshot
        "00000001" "63")                                    # context


@pytest.mark.parametrize(("data", "expected"), [
    (b"\x00\x00\x00\x01\x01", "shorter than its version and kind"),
    (b"\x7f\xff\xff\xff", "over the limit"),
    (b"\x00\x00\x00\x02\x01\x63", "unknown frame kind 99"),
])
def test_bad_framing_is_a_wire_error_and_spends_the_decoder(data: bytes, expected: str) -> None:
    dec = FrameDecoder(frame_max=1 << 20)
    with pytest.raises(WireError, match=expected):
        dec.feed(data)
    with pytest.raises(WireError):
        dec.feed(encode_frame(Kind.WELCOME, b""))


def valid_payload() -> bytes:
    snap = Snapshot(SnapshotMeta(7, 3, ConfState((1, 2, 3), (4,))), b"state")
    return encode_message(Message(MsgType.SNAPSHOT, 1, 2, 3, snapshot=snap,
                                  entries=(Entry(3, 7, EntryKind.CONF_CHANGE, b"add-voter:4"),),
                                  context=b"ctx"))


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda p: p[:10], "truncated in header"),
    (lambda p: b"\x63" + p[1:], "unknown Raft message type 99"),
    (lambda p: p[:1] + b"\x00\x00\x00\x00" + p[5:], "node id 0"),
    (lambda p: p + b"\x00", "1 trailing bytes"),
    (lambda p: p[:-4], "truncated"),
])
def test_malformed_messages_name_the_problem(mutate: object, expected: str) -> None:
    with pytest.raises(WireError, match=expected):
        decode_message(mutate(valid_payload()))  # type: ignore[operator]


def test_malformed_snapshot_membership_is_refused() -> None:
    payload = bytearray(valid_payload())
    ids_at = payload.index(b"\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x03")
    payload[ids_at:ids_at + 8] = b"\x00\x00\x00\x02\x00\x00\x00\x01"  # voters out of order
    with pytest.raises(WireError, match="membership malformed"):
        decode_message(bytes(payload))


def test_random_and_mutated_bytes_only_ever_raise_wire_error() -> None:
    """A fuzz run over garbage and over bit-flipped, truncated and extended valid frames of every
    peer-message kind (Raft's and real/server/peermsg.py's): the decoders either return values
    or raise WireError; nothing else escapes."""
    rng = random.Random(7)
    seeds = [raft_frame(Message(t, 1, 2, 3, entries=(Entry(1, 2, EntryKind.NORMAL, b"abc"),)))
             for t in MsgType] + [b"\x00\x00\x00\x05\x01\x06" + valid_payload()[:3]]
    seeds += [peer_frame(m) for m in (
        ShardFetch(2, 1, "topic/é", 3, 4, 10, -1, 9, 17),
        ShardFetchReply(1, 2, "topic", 0, 4, 17, FetchError.NONE, 10, 0, -1, -1,
                        (Record(7, 1000, None, b"a"), Record(8, 1001, b"k", b"b", (("h", b"v"),)))),
        ShardFetchReply(1, 2, "t", 0, 4, 18, FetchError.OUT_OF_RANGE, 10, 5),
        BrokerHeartbeat(3, 1, 12))]
    decoded = errors = 0
    for i in range(4000):
        if i % 4 == 0:
            data = rng.randbytes(rng.randrange(0, 120))
        else:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(3)
                if op == 0 and data:
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
                elif op == 1 and data:
                    del data[rng.randrange(len(data)):]
                else:
                    data += rng.randbytes(rng.randrange(1, 9))
            data = bytes(data)
        try:
            for frame in FrameDecoder(frame_max=1 << 16).feed(data):
                if frame.kind in PEER_KINDS:
                    decode_peer(frame)
                    decoded += 1
        except WireError:
            errors += 1
    assert decoded > 100 and errors > 1000, (decoded, errors)
