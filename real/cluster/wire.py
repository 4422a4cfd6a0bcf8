"""The inter-node wire format: versioned, length-prefixed frames, and the node-to-node messages
inside them (Raft's, and real/server/peermsg.py's shard replication and broker heartbeats).

Sans-I/O and pure, so the asyncio host and the simulator can carry the same bytes between nodes.

    frame   = length:u32 (bytes after this field) | version:u8 | kind:u8 | payload
    kinds   = HELLO, CHALLENGE, PROOF, WELCOME, REJECT (the handshake: real/cluster/peer.py),
              RAFT (payload: one Raft message, below), SHARD_FETCH, SHARD_REPLY,
              BROKER_HEARTBEAT, LOG_APPEND and LOG_APPEND_REPLY (one `peermsg` message each,
              below)

A Raft message (all integers big-endian):

    type:u8 | src:u32 | dst:u32 | term:u64 | log_term:u64 | index:u64 | commit:u64 |
    reject:u8 | reject_hint:u64 |
    n_entries:u32 | n_entries * (term:u64 | index:u64 | kind:u8 | len:u32 | data) |
    has_snapshot:u8 | [index:u64 | term:u64 | n_voters:u16 | n_learners:u16 | ids:u32 each |
                       len:u32 | data] |
    len:u32 | context

The type and entry-kind codes are fixed tables (never an enum's order), so the format does not
move when an enum grows.

The `real.server.peermsg` messages (big-endian; str = len:u16 | UTF-8; node ids u32 and never 0;
offsets and epochs i64, at least -1, which stands for "none"):

    SHARD_FETCH      = src:u32 | dst:u32 | topic:str | partition:u32 | epoch:i64 | offset:i64 |
                       last_epoch:i64 | acked:i64 | seq:u64 | bytes_max:u32
    SHARD_REPLY      = src:u32 | dst:u32 | topic:str | partition:u32 | epoch:i64 | seq:u64 |
                       error:u8 (a `FetchError` code) | high_watermark:i64 | log_start:i64 |
                       diverging_epoch:i64 | diverging_end:i64 |
                       len:u32 | records (len 0: none; else one storage batch,
                       real/storage/record.py, whose offsets are contiguous)
    BROKER_HEARTBEAT = src:u32 | dst:u32 | broker_epoch:i64
    LOG_APPEND       = src:u32 | dst:u32 | partition:u32 | seq:u64 | len:u32 | batch (one Kafka
                       record batch, checked by the receiving partition log)
    LOG_APPEND_REPLY = src:u32 | dst:u32 | partition:u32 | seq:u64 |
                       error:u8 (an `AppendError` code) | detail:str

Every decode error is a `WireError` naming what was wrong and where (trailing bytes included): a
peer's bytes can make the connection close, never raise anything else. `peer_frame` and
`decode_peer` carry any of these message types.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from real.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    Message,
    MsgType,
    Snapshot,
    SnapshotMeta,
)
from real.server.peermsg import (
    APPEND_ERRORS,
    FETCH_ERRORS,
    BrokerHeartbeat,
    LogAppend,
    LogAppendReply,
    PeerMessage,
    ShardFetch,
    ShardFetchReply,
)
from real.storage.errors import StorageError
from real.storage.record import Record, decode_records, encode_records_parts

VERSION = 1
"""The frame format this code speaks (a peer with another version is refused in the handshake)."""
FRAME_MAX_DEFAULT = 64 << 20
"""Largest frame accepted by default: a meta snapshot travels in one frame."""


class Kind:
    HELLO = 1
    CHALLENGE = 2
    PROOF = 3
    WELCOME = 4
    REJECT = 5
    RAFT = 6
    SHARD_FETCH = 7
    SHARD_REPLY = 8
    BROKER_HEARTBEAT = 9
    LOG_APPEND = 10
    LOG_APPEND_REPLY = 11


PEER_KINDS = frozenset({Kind.RAFT, Kind.SHARD_FETCH, Kind.SHARD_REPLY, Kind.BROKER_HEARTBEAT,
                        Kind.LOG_APPEND, Kind.LOG_APPEND_REPLY})
"""The frame kinds that carry a node-to-node message (`decode_peer`), after the handshake."""
KINDS = frozenset({Kind.HELLO, Kind.CHALLENGE, Kind.PROOF, Kind.WELCOME, Kind.REJECT}) | PEER_KINDS
KIND_NAMES = {Kind.RAFT: "Raft", Kind.SHARD_FETCH: "ShardFetch",
              Kind.SHARD_REPLY: "ShardFetchReply", Kind.BROKER_HEARTBEAT: "BrokerHeartbeat",
              Kind.LOG_APPEND: "LogAppend", Kind.LOG_APPEND_REPLY: "LogAppendReply"}
"""What a peer-message frame kind carries, for log lines and close reasons."""

MSG_CODES: dict[MsgType, int] = {
    MsgType.PRE_VOTE: 1, MsgType.PRE_VOTE_RESP: 2, MsgType.VOTE: 3, MsgType.VOTE_RESP: 4,
    MsgType.APPEND: 5, MsgType.APPEND_RESP: 6, MsgType.HEARTBEAT: 7, MsgType.HEARTBEAT_RESP: 8,
    MsgType.SNAPSHOT: 9, MsgType.TIMEOUT_NOW: 10, MsgType.READ_INDEX: 11,
    MsgType.READ_INDEX_RESP: 12, MsgType.PROPOSE: 13,
}
MSG_TYPES = {code: t for t, code in MSG_CODES.items()}
KIND_CODES: dict[EntryKind, int] = {EntryKind.NORMAL: 1, EntryKind.CONF_CHANGE: 2}
ENTRY_KINDS = {code: k for k, code in KIND_CODES.items()}

_FRAME_HEAD = struct.Struct(">IBB")
_MSG_HEAD = struct.Struct(">BIIQQQQBQ")
_ENTRY_HEAD = struct.Struct(">QQBI")
_SNAP_HEAD = struct.Struct(">QQHH")
_U32 = struct.Struct(">I")
_U8 = struct.Struct(">B")
_ID = struct.Struct(">I")
_U16 = struct.Struct(">H")
_IDS = struct.Struct(">II")
_FETCH_BODY = struct.Struct(">IqqqqQI")
_REPLY_BODY = struct.Struct(">IqQBqqqq")
_HEARTBEAT = struct.Struct(">IIq")
_APPEND_BODY = struct.Struct(">IQ")
_APPEND_REPLY_BODY = struct.Struct(">IQB")
_U32_MAX = (1 << 32) - 1
_U64_MAX = (1 << 64) - 1


class WireError(Exception):
    """Bytes from a peer that are not a valid frame or message (the connection should close)."""


@dataclass(frozen=True, slots=True)
class Frame:
    version: int
    kind: int
    payload: bytes


# ---- frames ------------------------------------------------------------------------------------


def encode_frame(kind: int, payload: bytes, version: int = VERSION) -> bytes:
    assert kind in KINDS, kind
    assert 0 <= version <= 255, version
    return _FRAME_HEAD.pack(len(payload) + 2, version, kind) + payload


class FrameDecoder:
    """Frames from a byte stream fed in any chunking. After a `WireError` the decoder is spent
    (the stream has lost its framing): every later `feed` raises again."""

    def __init__(self, frame_max: int = FRAME_MAX_DEFAULT) -> None:
        assert frame_max >= 16, frame_max
        self.frame_max = frame_max
        self._buf = bytearray()
        self._error: WireError | None = None

    def feed(self, data: bytes) -> list[Frame]:
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += data
        out: list[Frame] = []
        pos = 0
        while len(buf) - pos >= 4:
            (length,) = _U32.unpack_from(buf, pos)
            if length < 2:
                self._error = WireError(f"frame length {length} at stream byte {pos}: shorter "
                                        "than its version and kind")
                raise self._error
            if length > self.frame_max:
                self._error = WireError(f"frame of {length} bytes over the limit "
                                        f"{self.frame_max}")
                raise self._error
            if len(buf) - pos - 4 < length:
                break
            version, kind = buf[pos + 4], buf[pos + 5]
            if kind not in KINDS:
                self._error = WireError(f"unknown frame kind {kind}")
                raise self._error
            with memoryview(buf) as view:  # one copy of the payload, not two
                payload = bytes(view[pos + 6:pos + 4 + length])
            out.append(Frame(version, kind, payload))
            pos += 4 + length
        del buf[:pos]
        return out

    def buffered(self) -> int:
        """Bytes of an incomplete frame held (bounded by frame_max + 4)."""
        return len(self._buf)


# ---- Raft messages -----------------------------------------------------------------------------


def encode_message(m: Message) -> bytes:
    parts = [_MSG_HEAD.pack(MSG_CODES[m.type], m.src, m.dst, m.term, m.log_term, m.index,
                            m.commit, 1 if m.reject else 0, m.reject_hint),
             _U32.pack(len(m.entries))]
    for e in m.entries:
        parts.append(_ENTRY_HEAD.pack(e.term, e.index, KIND_CODES[e.kind], len(e.data)))
        parts.append(e.data)
    snap = m.snapshot
    if snap is None:
        parts.append(_U8.pack(0))
    else:
        conf = snap.meta.conf
        parts.append(_U8.pack(1))
        parts.append(_SNAP_HEAD.pack(snap.meta.index, snap.meta.term, len(conf.voters),
                                     len(conf.learners)))
        parts.append(b"".join(_ID.pack(i) for i in (*conf.voters, *conf.learners)))
        parts.append(_U32.pack(len(snap.data)))
        parts.append(snap.data)
    parts.append(_U32.pack(len(m.context)))
    parts.append(m.context)
    return b"".join(parts)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, st: struct.Struct, what: str) -> tuple[int, ...]:
        if len(self.data) - self.pos < st.size:
            raise WireError(f"message truncated in {what} at byte {self.pos} "
                            f"({len(self.data)} bytes)")
        values = st.unpack_from(self.data, self.pos)
        self.pos += st.size
        return values

    def bytes(self, n: int, what: str) -> bytes:
        if len(self.data) - self.pos < n:
            raise WireError(f"message truncated in {what} at byte {self.pos}: {n} bytes "
                            f"announced, {len(self.data) - self.pos} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out


def decode_message(payload: bytes) -> Message:
    """The Raft message a RAFT frame carries; `WireError` for anything malformed."""
    r = _Reader(payload)
    (code, src, dst, term, log_term, index, commit, reject, hint) = r.take(_MSG_HEAD, "header")
    mtype = MSG_TYPES.get(code)
    if mtype is None:
        raise WireError(f"unknown Raft message type {code}")
    if src == 0 or dst == 0:
        raise WireError(f"node id 0 in a Raft message (src {src}, dst {dst})")
    if reject not in (0, 1):
        raise WireError(f"reject flag {reject} (0 or 1 expected)")
    (count,) = r.take(_U32, "entry count")
    entries = []
    for i in range(count):
        e_term, e_index, kind_code, length = r.take(_ENTRY_HEAD, f"entry {i}")
        kind = ENTRY_KINDS.get(kind_code)
        if kind is None:
            raise WireError(f"entry {i}: unknown kind {kind_code}")
        entries.append(Entry(e_term, e_index, kind, r.bytes(length, f"entry {i} data")))
    (has_snap,) = r.take(_U8, "snapshot flag")
    snapshot = None
    if has_snap == 1:
        s_index, s_term, n_voters, n_learners = r.take(_SNAP_HEAD, "snapshot header")
        ids = [r.take(_ID, "snapshot member")[0] for _ in range(n_voters + n_learners)]
        voters, learners = tuple(ids[:n_voters]), tuple(ids[n_voters:])
        if (list(voters) != sorted(set(voters)) or list(learners) != sorted(set(learners))
                or set(voters) & set(learners) or 0 in ids):
            raise WireError(f"snapshot membership malformed: voters {voters}, learners "
                            f"{learners}")
        (length,) = r.take(_U32, "snapshot length")
        data = r.bytes(length, "snapshot data")
        snapshot = Snapshot(SnapshotMeta(s_index, s_term, ConfState(voters, learners)), data)
    elif has_snap != 0:
        raise WireError(f"snapshot flag {has_snap} (0 or 1 expected)")
    (length,) = r.take(_U32, "context length")
    context = r.bytes(length, "context")
    if r.pos != len(payload):
        raise WireError(f"{len(payload) - r.pos} trailing bytes after the message")
    return Message(mtype, src, dst, term, log_term=log_term, index=index,
                   entries=tuple(entries), commit=commit, reject=bool(reject),
                   reject_hint=hint, snapshot=snapshot, context=context)


def raft_frame(m: Message) -> bytes:
    """One RAFT frame carrying `m`."""
    return encode_frame(Kind.RAFT, encode_message(m))


# ---- peer messages (real/server/peermsg.py) ----------------------------------------------------


def _put_str(parts: list[bytes], text: str) -> None:
    raw = text.encode()
    parts.append(_U16.pack(len(raw)))
    parts.append(raw)


def _take_ids(r: _Reader, what: str) -> tuple[int, int]:
    src, dst = r.take(_IDS, f"{what} src and dst")
    if src == 0 or dst == 0:
        raise WireError(f"node id 0 in a {what} (src {src}, dst {dst})")
    return src, dst


def _take_str(r: _Reader, what: str) -> str:
    (length,) = r.take(_U16, f"{what} length")
    raw = r.bytes(length, what)
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise WireError(f"{what} is not UTF-8: {exc}") from None


def _check_signed(what: str, **fields: int) -> None:
    """Offsets and epochs are >= 0, or -1 for "none"."""
    for name, value in fields.items():
        if value < -1:
            raise WireError(f"{what} {name} {value} (at least -1 expected)")


def _check_end(r: _Reader, what: str) -> None:
    if r.pos != len(r.data):
        raise WireError(f"{len(r.data) - r.pos} trailing bytes after the {what}")



def encode_shard_fetch(m: ShardFetch) -> bytes:
    parts = [_IDS.pack(m.src, m.dst)]
    _put_str(parts, m.topic)
    parts.append(_FETCH_BODY.pack(m.partition, m.epoch, m.offset, m.last_epoch, m.acked, m.seq,
                                  m.bytes_max))
    return b"".join(parts)


def decode_shard_fetch(payload: bytes) -> ShardFetch:
    """The `ShardFetch` a SHARD_FETCH frame carries; `WireError` for anything malformed."""
    what = "ShardFetch"
    r = _Reader(payload)
    src, dst = _take_ids(r, what)
    topic = _take_str(r, f"{what} topic")
    (partition, epoch, offset, last_epoch, acked, seq,
     bytes_max) = r.take(_FETCH_BODY, f"{what} fields")
    _check_signed(what, epoch=epoch, offset=offset, last_epoch=last_epoch, acked=acked)
    _check_end(r, what)
    return ShardFetch(src, dst, topic, partition, epoch, offset, last_epoch, acked, seq,
                      bytes_max)


def encode_shard_reply(m: ShardFetchReply) -> bytes:
    return b"".join(encode_shard_reply_parts(m)[0])


def encode_shard_reply_parts(m: ShardFetchReply) -> tuple[list[bytes], int]:
    """`encode_shard_reply` as (parts, total length), the records' large payloads uncopied
    (`encode_records_parts`): the frame goes out with one join instead of a copy per layer."""
    parts = [_IDS.pack(m.src, m.dst)]
    _put_str(parts, m.topic)
    parts.append(_REPLY_BODY.pack(m.partition, m.epoch, m.seq, m.error, m.high_watermark,
                                  m.log_start, m.diverging_epoch, m.diverging_end))
    batch, length = encode_records_parts(m.records) if m.records else ([], 0)
    parts.append(_U32.pack(length))
    head = sum(len(p) for p in parts)
    parts += batch
    return parts, head + length


def decode_shard_reply(payload: bytes) -> ShardFetchReply:
    """The `ShardFetchReply` a SHARD_REPLY frame carries; `WireError` for anything malformed
    (a corrupt record batch included)."""
    what = "ShardFetchReply"
    r = _Reader(payload)
    src, dst = _take_ids(r, what)
    topic = _take_str(r, f"{what} topic")
    (partition, epoch, seq, error, high_watermark, log_start, diverging_epoch,
     diverging_end) = r.take(_REPLY_BODY, f"{what} fields")
    if error not in FETCH_ERRORS:
        raise WireError(f"{what} error code {error} unknown")
    _check_signed(what, epoch=epoch, high_watermark=high_watermark, log_start=log_start,
                  diverging_epoch=diverging_epoch, diverging_end=diverging_end)
    (length,) = r.take(_U32, f"{what} records length")
    batch = r.bytes(length, f"{what} records")
    _check_end(r, what)
    records: tuple[Record, ...] = ()
    if length:
        try:
            records = tuple(decode_records(batch))
        except StorageError as exc:
            raise WireError(f"{what} records: {exc}") from None
        first = records[0].offset if records else 0
        if first < 0 or any(rec.offset != first + i for i, rec in enumerate(records)):
            raise WireError(f"{what} records: offsets {[rec.offset for rec in records[:8]]} "
                            "are negative or not contiguous")
    return ShardFetchReply(src, dst, topic, partition, epoch, seq, error, high_watermark,
                           log_start, diverging_epoch, diverging_end, records)


def encode_broker_heartbeat(m: BrokerHeartbeat) -> bytes:
    return _HEARTBEAT.pack(m.src, m.dst, m.broker_epoch)


def decode_broker_heartbeat(payload: bytes) -> BrokerHeartbeat:
    """The `BrokerHeartbeat` a BROKER_HEARTBEAT frame carries; `WireError` if malformed."""
    what = "BrokerHeartbeat"
    r = _Reader(payload)
    src, dst, broker_epoch = r.take(_HEARTBEAT, what)
    if src == 0 or dst == 0:
        raise WireError(f"node id 0 in a {what} (src {src}, dst {dst})")
    _check_signed(what, broker_epoch=broker_epoch)
    _check_end(r, what)
    return BrokerHeartbeat(src, dst, broker_epoch)


def encode_log_append(m: LogAppend) -> bytes:
    return b"".join((_IDS.pack(m.src, m.dst), _APPEND_BODY.pack(m.partition, m.seq),
                     _U32.pack(len(m.batch)), m.batch))


def decode_log_append(payload: bytes) -> LogAppend:
    """The `LogAppend` a LOG_APPEND frame carries; `WireError` if malformed (the batch itself
    is the receiving log's to check)."""
    what = "LogAppend"
    r = _Reader(payload)
    src, dst = _take_ids(r, what)
    partition, seq = r.take(_APPEND_BODY, f"{what} fields")
    (length,) = r.take(_U32, f"{what} batch length")
    batch = r.bytes(length, f"{what} batch")
    _check_end(r, what)
    return LogAppend(src, dst, partition, seq, bytes(batch))


def encode_log_append_reply(m: LogAppendReply) -> bytes:
    parts = [_IDS.pack(m.src, m.dst), _APPEND_REPLY_BODY.pack(m.partition, m.seq, m.error)]
    _put_str(parts, m.detail[:1000])
    return b"".join(parts)


def decode_log_append_reply(payload: bytes) -> LogAppendReply:
    """The `LogAppendReply` a LOG_APPEND_REPLY frame carries; `WireError` if malformed."""
    what = "LogAppendReply"
    r = _Reader(payload)
    src, dst = _take_ids(r, what)
    partition, seq, error = r.take(_APPEND_REPLY_BODY, f"{what} fields")
    if error not in APPEND_ERRORS:
        raise WireError(f"{what} error code {error} unknown")
    detail = _take_str(r, f"{what} detail")
    _check_end(r, what)
    return LogAppendReply(src, dst, partition, seq, error, detail)


def peer_frame(msg: Message | PeerMessage) -> bytes:
    """One frame carrying any node-to-node message (its kind by the message's type)."""
    if isinstance(msg, ShardFetchReply):
        return b"".join(peer_frame_parts(msg))
    if isinstance(msg, Message):
        return encode_frame(Kind.RAFT, encode_message(msg))
    if isinstance(msg, ShardFetch):
        return encode_frame(Kind.SHARD_FETCH, encode_shard_fetch(msg))
    if isinstance(msg, BrokerHeartbeat):
        return encode_frame(Kind.BROKER_HEARTBEAT, encode_broker_heartbeat(msg))
    if isinstance(msg, LogAppend):
        return encode_frame(Kind.LOG_APPEND, encode_log_append(msg))
    if isinstance(msg, LogAppendReply):
        return encode_frame(Kind.LOG_APPEND_REPLY, encode_log_append_reply(msg))
    raise TypeError(f"not a node-to-node message: {type(msg).__name__}")


def peer_frame_parts(msg: Message | PeerMessage) -> list[bytes]:
    """`peer_frame` as parts to write in order (a shard reply's record payloads are not copied
    into one frame first)."""
    if isinstance(msg, ShardFetchReply):
        parts, length = encode_shard_reply_parts(msg)
        return [_FRAME_HEAD.pack(length + 2, VERSION, Kind.SHARD_REPLY), *parts]
    return [peer_frame(msg)]


def decode_peer(frame: Frame) -> Message | PeerMessage:
    """The message a peer-message frame carries; `WireError` for a handshake (or any other) kind
    or a malformed payload. The frame's version is the caller's to check."""
    if frame.kind == Kind.RAFT:
        return decode_message(frame.payload)
    if frame.kind == Kind.SHARD_FETCH:
        return decode_shard_fetch(frame.payload)
    if frame.kind == Kind.SHARD_REPLY:
        return decode_shard_reply(frame.payload)
    if frame.kind == Kind.BROKER_HEARTBEAT:
        return decode_broker_heartbeat(frame.payload)
    if frame.kind == Kind.LOG_APPEND:
        return decode_log_append(frame.payload)
    if frame.kind == Kind.LOG_APPEND_REPLY:
        return decode_log_append_reply(frame.payload)
    raise WireError(f"frame kind {frame.kind} carries no peer message")


def describe(msg: Message | PeerMessage) -> str:
    """A short name of a node-to-node message for log lines ("Raft append", "ShardFetch")."""
    if isinstance(msg, Message):
        return f"Raft {msg.type.value}"
    return type(msg).__name__
