"""One inter-node connection as a pure state machine: a mutual challenge handshake over a shared
cluster secret, then node-to-node messages in frames (real/cluster/wire.py: Raft's, and the shard
fetches, fetch replies and broker heartbeats of real/server/peermsg.py). No sockets here: a host
feeds `receive(bytes)`, writes `take_output()` and closes the connection when an event says so.

    dialer                                       acceptor
      HELLO(versions, node id, nonce_d, cluster) ->
                                               <- CHALLENGE(node id, nonce_a, mac_a)
      checks mac_a (the acceptor knows the secret)
      PROOF(mac_d)                              ->
                                                  checks mac_d (the dialer knows it)
                                               <- WELCOME
      established                                 established

    mac_a = HMAC-SHA256(secret, "twinmq-accept" | cluster | dialer | acceptor | nonce_d | nonce_a)
    mac_d = HMAC-SHA256(secret, "twinmq-dial"   | cluster | dialer | acceptor | nonce_d | nonce_a)

Both sides prove they hold the secret without sending it, and fresh nonces (from the injected rng)
keep a recorded handshake from being replayed. Anything else closes the connection with a reason
(and a REJECT frame to the peer when it is worth telling): another cluster, another frame
version, an unknown or own node id, a wrong MAC, a message before the handshake, a message
whose `src` is not the authenticated peer or whose `dst` is not this node, a malformed or
oversized frame or message. A closed session ignores further bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import struct
from dataclasses import dataclass, field

from real.cluster.wire import (
    FRAME_MAX_DEFAULT,
    KIND_NAMES,
    PEER_KINDS,
    VERSION,
    Frame,
    FrameDecoder,
    Kind,
    WireError,
    decode_peer,
    encode_frame,
    peer_frame_parts,
)
from real.raft.types import Message
from real.server.peermsg import PeerMessage

NONCE_BYTES = 16
MAC_BYTES = 32
REJECT_REASON_MAX = 200
HANDSHAKE_FRAME_MAX = 4096
"""Largest frame before the handshake completes: a stranger cannot make a node buffer more
than this (after it, `PeerConfig.frame_max` applies: snapshots travel in one frame)."""
_HELLO = struct.Struct(">BBI")
_CHALLENGE = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class PeerConfig:
    cluster_id: str
    node_id: int
    secret: bytes
    members: frozenset[int] = field(default_factory=frozenset)
    """Node ids allowed to connect (empty: any id but this node's own)."""
    frame_max: int = FRAME_MAX_DEFAULT

    def __post_init__(self) -> None:
        assert self.node_id > 0, self.node_id
        assert len(self.secret) >= 16, "a cluster secret of at least 16 bytes"
        assert self.cluster_id, "a cluster id"


@dataclass(frozen=True, slots=True)
class Established:
    peer_id: int


@dataclass(frozen=True, slots=True)
class Received:
    message: Message | PeerMessage


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str


Event = Established | Received | Closed


def _mac(secret: bytes, label: bytes, cluster: str, dialer: int, acceptor: int,
         nonce_d: bytes, nonce_a: bytes) -> bytes:
    msg = b"|".join((label, cluster.encode(), str(dialer).encode(), str(acceptor).encode(),
                     nonce_d, nonce_a))
    return hmac.new(secret, msg, hashlib.sha256).digest()


class PeerSession:
    """One side of one inter-node connection. `dialer=True` with `expect` (the node id it dials)
    starts the handshake; the acceptor waits for a HELLO."""

    def __init__(self, config: PeerConfig, rng: random.Random, *, dialer: bool,
                 expect: int = 0) -> None:
        assert not dialer or expect > 0, "a dialer knows whom it dials"
        self.config = config
        self.dialer = dialer
        self.expect = expect
        self.peer_id = 0
        self.state = "hello-sent" if dialer else "awaiting-hello"
        self.closed_reason: str | None = None
        self._nonce = rng.getrandbits(NONCE_BYTES * 8).to_bytes(NONCE_BYTES, "big")
        self._peer_nonce = b""
        self._decoder = FrameDecoder(min(HANDSHAKE_FRAME_MAX, config.frame_max))
        self._out: list[bytes] = []
        """Output frames (a reply's large payloads as parts of their own), joined once when the
        host takes them."""
        self.sent = 0
        self.received = 0
        if dialer:
            cid = config.cluster_id.encode()
            hello = _HELLO.pack(VERSION, VERSION, config.node_id) + self._nonce + cid
            self._out.append(encode_frame(Kind.HELLO, hello))

    @property
    def established(self) -> bool:
        return self.state == "established"

    # ---- I/O for the host

    def take_output(self) -> bytes:
        out, self._out = b"".join(self._out), []
        return out

    def send(self, msg: Message | PeerMessage) -> None:
        """Queue a node-to-node message (Raft's or a `PeerMessage`) for the authenticated peer."""
        assert self.established, self.state
        assert msg.src == self.config.node_id and msg.dst == self.peer_id, (msg.src, msg.dst)
        self._out += peer_frame_parts(msg)
        self.sent += 1

    def receive(self, data: bytes) -> list[Event]:
        if self.closed_reason is not None:
            return []
        try:
            frames = self._decoder.feed(data)
        except WireError as exc:
            return [self._close(f"malformed frame: {exc}")]
        events: list[Event] = []
        for frame in frames:
            events += self._frame(frame)
            if self.closed_reason is not None:
                break
        return events

    # ---- the state machine

    def _frame(self, frame: Frame) -> list[Event]:
        if frame.kind == Kind.REJECT:
            reason = frame.payload[:REJECT_REASON_MAX].decode("utf-8", "replace")
            return [self._close(f"refused by the peer: {reason}", tell=False)]
        if frame.version != VERSION:
            return [self._close(f"frame version {frame.version} (this node speaks {VERSION})")]
        if self.state == "established":
            if frame.kind not in PEER_KINDS:
                return [self._close(f"unexpected frame kind {frame.kind} after the handshake")]
            return self._message(frame)
        if frame.kind in PEER_KINDS:
            return [self._close(f"a {KIND_NAMES[frame.kind]} message before the handshake")]
        if self.state == "awaiting-hello" and frame.kind == Kind.HELLO:
            return self._hello(frame.payload)
        if self.state == "hello-sent" and frame.kind == Kind.CHALLENGE:
            return self._challenge(frame.payload)
        if self.state == "challenge-sent" and frame.kind == Kind.PROOF:
            return self._proof(frame.payload)
        if self.state == "proof-sent" and frame.kind == Kind.WELCOME:
            self._establish()
            return [Established(self.peer_id)]
        return [self._close(f"unexpected frame kind {frame.kind} in state {self.state}")]

    def _hello(self, payload: bytes) -> list[Event]:
        cfg = self.config
        if len(payload) < _HELLO.size + NONCE_BYTES:
            return [self._close("HELLO truncated")]
        low, high, peer = _HELLO.unpack_from(payload)
        nonce = payload[_HELLO.size:_HELLO.size + NONCE_BYTES]
        cluster = payload[_HELLO.size + NONCE_BYTES:].decode("utf-8", "replace")
        if not low <= VERSION <= high:
            return [self._close(f"peer speaks frame versions {low}-{high}, this node {VERSION}")]
        if cluster != cfg.cluster_id:
            return [self._close(f"peer is of cluster {cluster[:64]!r}, not {cfg.cluster_id!r}")]
        if peer == 0 or peer == cfg.node_id or (cfg.members and peer not in cfg.members):
            return [self._close(f"node id {peer} is not a member of this cluster")]
        self.peer_id, self._peer_nonce = peer, nonce
        mac = _mac(cfg.secret, b"twinmq-accept", cfg.cluster_id, peer, cfg.node_id, nonce,
                   self._nonce)
        self._out.append(encode_frame(Kind.CHALLENGE,
                                      _CHALLENGE.pack(cfg.node_id) + self._nonce + mac))
        self.state = "challenge-sent"
        return []

    def _challenge(self, payload: bytes) -> list[Event]:
        cfg = self.config
        if len(payload) != _CHALLENGE.size + NONCE_BYTES + MAC_BYTES:
            return [self._close("CHALLENGE malformed")]
        (peer,) = _CHALLENGE.unpack_from(payload)
        nonce = payload[_CHALLENGE.size:_CHALLENGE.size + NONCE_BYTES]
        mac = payload[_CHALLENGE.size + NONCE_BYTES:]
        if peer != self.expect:
            return [self._close(f"dialled node {self.expect}, node {peer} answered")]
        want = _mac(cfg.secret, b"twinmq-accept", cfg.cluster_id, cfg.node_id, peer,
                    self._nonce, nonce)
        if not hmac.compare_digest(mac, want):
            return [self._close(f"node {peer} does not hold the cluster secret")]
        self.peer_id, self._peer_nonce = peer, nonce
        self._out.append(encode_frame(Kind.PROOF, _mac(cfg.secret, b"twinmq-dial",
                                                       cfg.cluster_id, cfg.node_id, peer,
                                                       self._nonce, nonce)))
        self.state = "proof-sent"
        return []

    def _proof(self, payload: bytes) -> list[Event]:
        cfg = self.config
        want = _mac(cfg.secret, b"twinmq-dial", cfg.cluster_id, self.peer_id, cfg.node_id,
                    self._peer_nonce, self._nonce)
        if len(payload) != MAC_BYTES or not hmac.compare_digest(payload, want):
            return [self._close(f"node {self.peer_id} does not hold the cluster secret")]
        self._out.append(encode_frame(Kind.WELCOME, b""))
        self._establish()
        return [Established(self.peer_id)]

    def _establish(self) -> None:
        self.state = "established"
        self._decoder.frame_max = self.config.frame_max  # the peer is authenticated now

    def _message(self, frame: Frame) -> list[Event]:
        name = KIND_NAMES[frame.kind]
        try:
            msg = decode_peer(frame)
        except WireError as exc:
            return [self._close(f"malformed {name} message: {exc}")]
        if msg.src != self.peer_id or msg.dst != self.config.node_id:
            return [self._close(f"{name} message from {msg.src} to {msg.dst} on the connection "
                                f"of node {self.peer_id} to node {self.config.node_id}")]
        self.received += 1
        return [Received(msg)]

    def _close(self, reason: str, tell: bool = True) -> Closed:
        if tell:
            self._out.append(encode_frame(Kind.REJECT, reason.encode()[:REJECT_REASON_MAX]))
        self.state = "closed"
        self.closed_reason = reason
        return Closed(reason)
