"""The sans-I/O MQTT broker: connections, sessions, routing, QoS flows, retained, wills, $SYS.

`NodeCore` (real/server/node.py), hosted on sockets and in the simulator, drives one `Broker`:

    broker.open(conn_id, peer=..., listener=..., anonymous_ok=...)  a transport connected
    broker.receive(conn_id, data)                    bytes arrived
    broker.closed(conn_id)                           the transport is gone
    broker.set_congested(conn_id, flag)              its write buffer is over/under high water
    broker.tick()                                    time passed (keep-alive, session expiry,
                                                     wills, $SYS, acks waiting for durability)
    broker.next_deadline_ms()                        when tick next has timed work
    broker.durable_progress()                        the state log's durable end may have moved
    for conn_id, data, close in broker.drain(): write data, then close if asked
    broker.invariants()                              cheap structural checks (harnesses, sim)

That is `real.server.protocol.ProtocolCore`, the interface the Kafka broker satisfies too.
Time comes from the injected `clock` (integer wall-clock milliseconds); identifiers the broker
assigns come from a counter seeded by `node_id`: the broker is deterministic given its inputs.

Durability: with a state log (a `ShardEngine`), persistent sessions, the QoS >= 1 messages queued to
them and retained messages are written to it (see persist.py), and the PUBACK/PUBREC of a publish
that was logged is held until the log's `durable_end` passes it. Messages only clean sessions
receive are not logged, so QoS 0 traffic and clean-session QoS 1 never wait for a disk.

Flow control: outbound QoS 1/2 per session is limited to min(client Receive Maximum,
`max_inflight`); the rest waits in the session queue (at most `max_queued`, policy drop-new or
drop-oldest). While a connection is congested (its transport buffer is over its high-water mark)
QoS 0 messages to it are dropped and QoS 1/2 ones queue: a stalled subscriber costs a bounded
amount of memory.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any

from real.kafka.records import KRecord
from real.mqtt import codec
from real.mqtt.auth import Acl, ClientAcl, Login
from real.mqtt.claims import ClaimKey, Place, Release, release_record, snapshot_records
from real.mqtt.cluster import Ticket
from real.mqtt.errors import BridgeUnavailable, MqttError
from real.mqtt.packets import (
    MQTT_5,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
)
from real.mqtt.persist import (
    CMP,
    QI,
    QR,
    REL,
    SND,
    ack_record,
    checkpoint_record,
    claims_record,
    cursor_record,
    delete_record,
    inbound_record,
    packet_record,
    publish_record,
    read_all,
    recover,
    release_state_record,
    session_record,
)
from real.mqtt.properties import (
    NO_PROPERTIES,
    Properties,
    PropertyId,
    PropertyValue,
    encode_properties,
)
from real.mqtt.reasons import DISCONNECT_CODES
from real.mqtt.reasons import ReasonCode as RC
from real.mqtt.session import (
    EXPIRY_NEVER,
    Delivery,
    Inflight,
    Message,
    RetainedStore,
    Session,
    SubOpts,
)
from real.mqtt.topics import (
    SubscriptionTrie,
    TopicError,
    matches,
    parse_shared,
    validate_topic_filter,
    validate_topic_name,
)
from real.storage.port import ShardEngine
from real.storage.record import Record

SESSION_EXPIRY_NEVER = 0xFFFFFFFF
QUEUE_POLICIES = ("drop-new", "drop-oldest")
LATENCY_BUCKETS_MS = (0.5, 1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 2500, 5000)
KEEP_ALIVE_CHECK_MS = 250
ROUTE_CACHE_MAX = 8192

# MQTT 5 CONNACK reason -> 3.1.1 return code (section 3.2.2.3 of 3.1.1)
V3_CONNACK: dict[int, int] = {
    RC.UNSUPPORTED_PROTOCOL_VERSION: 1, RC.CLIENT_IDENTIFIER_NOT_VALID: 2,
    RC.SERVER_UNAVAILABLE: 3, RC.SERVER_BUSY: 3, RC.BAD_USER_NAME_OR_PASSWORD: 4,
    RC.NOT_AUTHORIZED: 5, RC.BANNED: 5, RC.BAD_AUTHENTICATION_METHOD: 5,
}
_FORWARDED = frozenset({PropertyId.PAYLOAD_FORMAT_INDICATOR, PropertyId.CONTENT_TYPE,
                        PropertyId.RESPONSE_TOPIC, PropertyId.CORRELATION_DATA,
                        PropertyId.USER_PROPERTY})


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    node_id: int = 1
    max_packet_size: int = 1 << 20
    max_connections: int = 100_000
    receive_maximum: int = 1024
    max_inflight: int = 64
    max_queued: int = 1000
    queue_policy: str = "drop-new"
    queue_qos0: bool = False
    topic_alias_max: int = 16
    keep_alive_max: int = 0
    session_expiry_max: int = SESSION_EXPIRY_NEVER
    sys_interval_ms: int = 10_000
    retain_available: bool = True
    max_topic_levels: int = 128
    checkpoint_bytes: int = 64 << 20
    server_name: str = "twinmq"

    def __post_init__(self) -> None:
        assert 64 <= self.max_packet_size <= codec.PACKET_SIZE_MAX, self.max_packet_size
        assert 1 <= self.receive_maximum <= 65535, self.receive_maximum
        assert 1 <= self.max_inflight <= 65535, self.max_inflight
        assert self.max_queued >= 0, self.max_queued
        assert self.queue_policy in QUEUE_POLICIES, self.queue_policy
        assert 0 <= self.topic_alias_max <= 65535, self.topic_alias_max


@dataclass
class Stats:
    """Counters for $SYS and the metrics endpoint (monotonic unless named current)."""

    connects: int = 0
    connect_refused: int = 0
    auth_failures: int = 0
    protocol_errors: int = 0
    msgs_in: list[int] = field(default_factory=lambda: [0, 0, 0])  # by QoS
    msgs_out: list[int] = field(default_factory=lambda: [0, 0, 0])
    bytes_in: int = 0
    bytes_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    latency_sum_ms: float = 0.0
    logged_publishes: int = 0
    checkpoints: int = 0
    # client ids across a cluster (real/mqtt/claims.py)
    claims: int = 0
    claims_waited: int = 0  # claims that waited for another node's hand-over
    claims_forced: int = 0  # granted without it (it did not come within claim_wait_ms)
    handovers_out: int = 0
    handovers_in: int = 0
    late_releases: int = 0  # a hand-over for a claim not waiting (yet: kept; or no longer)
    handover_read_again: int = 0  # messages routed past the old node's place, read again
    handover_floors: int = 0  # partitions the old node had routed further than this one

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def observe_latency(self, ms: float) -> None:
        self.latency_counts[bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
        self.latency_sum_ms += ms


class ConnState(Enum):
    """Where a connection is in its life. The only changes are `_NEXT`'s, made by `Conn.to`."""

    AWAITING_CONNECT = auto()  # transport open, no CONNECT yet (only CONNECT is accepted)
    CLAIMING = auto()  # CONNECT accepted, the client id's cluster claim not settled (no input)
    CONNECTED = auto()  # CONNECT accepted: attached to a session
    CLOSING = auto()  # the broker asked the shell to close, or the transport is gone: no input


# h11-style module names for the states: cheap to compare with `is` on the hot path
AWAITING_CONNECT = ConnState.AWAITING_CONNECT
CONNECTED = ConnState.CONNECTED
CLAIMING = ConnState.CLAIMING
CLOSING = ConnState.CLOSING

_NEXT: dict[ConnState, frozenset[ConnState]] = {
    AWAITING_CONNECT: frozenset({CONNECTED, CLAIMING, CLOSING}),
    CLAIMING: frozenset({CONNECTED, CLOSING}),
    CONNECTED: frozenset({CLOSING}),
    CLOSING: frozenset({CLOSING}),  # closing twice (a close, then the transport's end) is fine
}


class Conn:
    """The broker's view of one transport connection."""

    __slots__ = ("id", "peer", "listener", "anonymous_ok", "decoder", "version", "state",
                 "session", "username", "keep_alive_ms", "last_rx", "will", "will_delay_s",
                 "max_packet_out", "recv_max_out", "alias_in", "alias_out", "alias_out_max",
                 "out", "close_after", "congested", "acks_pending", "connected_ms",
                 "problem_info", "disconnect_sent", "pending", "backlog")

    def __init__(self, conn_id: int, peer: str, listener: str, anonymous_ok: bool,
                 max_packet_size: int, now: int) -> None:
        self.id = conn_id
        self.peer = peer
        self.listener = listener
        self.anonymous_ok = anonymous_ok
        self.decoder = codec.Decoder(max_packet_size=max_packet_size)
        self.version = 4
        self.state = AWAITING_CONNECT
        self.session: Session | None = None
        self.username: str | None = None
        self.keep_alive_ms = 0
        self.last_rx = now
        self.will: Will | None = None
        self.will_delay_s = 0
        self.max_packet_out = codec.PACKET_SIZE_MAX
        self.recv_max_out = 65535
        self.alias_in: dict[int, str] = {}
        self.alias_out: dict[str, int] = {}
        self.alias_out_max = 0
        self.out: list[bytes] = []
        self.close_after = False
        self.congested = False
        self.acks_pending = 0  # inbound QoS 1 acks held for durability
        self.pending = b""  # bytes of an incomplete packet (see Broker.receive)
        self.backlog: list[object] = []  # packets decoded while CLAIMING, handled after
        self.connected_ms = now
        self.problem_info = True
        self.disconnect_sent = False

    def to(self, state: ConnState) -> None:
        """Move to `state`; a change `_NEXT` does not list is a broker bug."""
        assert state in _NEXT[self.state], (self.id, self.state, state)
        self.state = state


@dataclass(slots=True)
class _Claiming:
    """A connection of this node waiting for its claim of a client id (real/mqtt/claims.py)."""

    conn_id: int
    key: ClaimKey
    attach: Callable[[], None]
    applied: bool = False
    retry_at: int | None = None
    """When to propose again (meta dropped the proposal: no leader, or it could not be
    reached); None while one is out."""


@dataclass(slots=True)
class _Step:
    """What a client id's session does next on this node, in meta order: `take` (a claim of
    this node whose previous owner is another node: wait for that node's release of it) or
    `give` (another node claimed it from this node: hand the session over)."""

    take: bool
    key: ClaimKey
    index: int
    """The claim's meta index."""
    prev_node: int
    since: int


@dataclass(slots=True)
class _Outgoing:
    """A hand-over to write once the client's accepted QoS 2 PUBLISHes are committed (the
    claimant acknowledges a re-send of one at once: it must be in the log by then)."""

    client: str
    index: int
    """The meta index of the claim it answers."""
    record: KRecord
    """The release (`claims.release_record`)."""
    tickets: list[Ticket]
    written: Ticket | None = None
    """The release's own ticket, once written: done when committed."""


CLAIM_TIMEOUT_MS = 30_000
"""A CONNECT whose claim has not settled in this long is refused (Server unavailable)."""
EARLY_RELEASES_MAX = 10_000
"""Releases kept for claim steps not reached yet (`Broker._early`)."""
CLAIM_RETRY_MS = 50
"""Pause before proposing a claim again that meta dropped."""
"""A CONNECT whose claim has not settled in this long is refused (Server unavailable)."""


class _SharedGroup:
    __slots__ = ("members", "cursor")

    def __init__(self) -> None:
        self.members: dict[str, SubOpts] = {}
        self.cursor = 0


Clock = Callable[[], int]
"""Wall-clock integer milliseconds: expiry times are written to the state log and must keep
their meaning across a restart."""
Authenticate = Callable[[str | None, bytes | None, bool], int | Login]
HeldAck = bytes | Callable[[Conn | None], None]
"""What a held acknowledgement sends when released: its bytes, or a function that sends it and
what follows it (None: the connection is gone by then)."""


class Broker:
    def __init__(self, config: BrokerConfig, clock: Clock, *, log: ShardEngine | None = None,
                 authenticate: Authenticate | None = None, acl: Acl | None = None) -> None:
        """`log`: a ShardEngine for durable state (None: nothing survives a restart).
        `authenticate(username, password, anonymous_ok)` returns 0 or an MQTT 5 reason code, or
        an object with `.reason` and `.user` (the identity the ACL sees; None = anonymous), as
        `real.mqtt.auth.Authenticator.login` does. `acl`: a `real.mqtt.auth.Acl` (its
        `for_client(user, client_id)` is bound once per session; None: everything allowed)."""
        self.config = config
        self.clock = clock
        self.log = log
        self._authenticate = authenticate
        self.acl = acl
        self.stats = Stats()
        self.started_ms = clock()
        self.conns: dict[int, Conn] = {}
        self.sessions: dict[str, Session] = {}
        self.retained = RetainedStore()
        self._trie: SubscriptionTrie[SubOpts] = SubscriptionTrie(max_levels=config.max_topic_levels)
        self._shared: SubscriptionTrie[_SharedGroup] = SubscriptionTrie(
            max_levels=config.max_topic_levels)
        self._groups: dict[tuple[str, str], _SharedGroup] = {}  # (filter, group) -> members
        self._routes: dict[str, tuple[list, list]] = {}  # topic -> matches; see _routes_for
        self._names: dict[bytes, str] = {}  # UTF-8 topic names known valid (inline parser)
        self._dirty: dict[int, Conn] = {}
        # (offset, conn id, ack, bridge token): an ack waits for the state log and the bridge
        self._await_durable: deque[tuple[int, int, HeldAck, Any]] = deque()
        # The MQTT -> Kafka bridge (real/kafka/bridge.py), if configured: `mqtt_published(msg)`
        # returns a token the ack must wait for (`is_durable(token)`), or None.
        self.bridge: Any = None
        # MQTT across a cluster (real/mqtt/cluster.py), if configured: every message goes
        # through the replicated log (`cluster.publish(msg)` gives a `Ticket`, done once it is
        # committed) and reaches subscribers from there (`route_committed`), on every node.
        self.cluster: Any = None
        self.cluster_positions: dict[int, tuple[int, int]] = {}
        """Recovered from the state log: cluster log partition -> (shard offset, index in the
        batch) of the first message this node has not routed (persist.py's `cur` and `cp`)."""
        self._routing_from: tuple[int, int, int] | None = None
        self._qos2_tickets: dict[tuple[str, int], Ticket] = {}
        """(client id, packet id) -> the cluster log ticket of an accepted QoS 2 PUBLISH not
        yet committed: a re-send of it is acknowledged only once it is."""
        self._await_send: deque[tuple[int, str, int]] = deque()  # (offset, client, packet id)
        # Client ids across the cluster (real/mqtt/claims.py), when the node wires
        # `propose_claim(client id, conn id, done(prev owner "" | error))`:
        self.propose_claim: Callable[[str, int, Callable[[Any], None]], None] | None = None
        self.life = 0
        """This process's life (a random number the node draws): part of every claim key."""
        self.claim_wait_ms = 5_000
        """How long a claim waits for the previous owner's hand-over before it goes on without
        it (that node is gone, or restarted without its state). Longer than the controller's
        session timeout, after which a node cut off from meta has fenced itself."""
        self.fenced = False
        """The node heard no meta quorum for its session timeout: no MQTT client is served."""
        self.log_line: Callable[[str], None] = lambda _line: None
        """Where operator-facing lines go (the node's log)."""
        self.claims_seen = 0
        """The meta index of the last claim this process looked at."""
        self._settled: dict[str, int] = {}
        """Client id -> the meta index up to which its claims are settled here (in the state
        log: a restart skips them)."""
        self._claiming: dict[str, _Claiming] = {}  # client id -> this node's newest claim
        self._steps: dict[str, deque[_Step]] = {}
        """Client id -> the session's moves still to make here, in meta order (a claim waits
        until they are done)."""
        self._early: dict[tuple[str, ClaimKey], Release] = {}
        """Releases for claims of this node that are not the next step yet (this node's meta
        lags its `__mqtt` routing, a restart replays meta after `__mqtt`, or the session has
        to come and go first): used when their step comes."""
        self._floors: dict[str, dict[int, Place]] = {}
        """Client id -> per `__mqtt` partition, the place before which a handed-over session
        takes nothing from this node's routing (the old node routed it there)."""
        self._releases: list[_Outgoing] = []  # hand-overs waiting for QoS 2 commits
        self._wills: dict[str, tuple[int, Message]] = {}  # client id -> (due, will)
        self._assigned = 0
        self._next_keepalive_check = 0
        self._next_sys = self.started_ms
        self._generation = 0
        self._log_mark = 0  # log end after the last checkpoint
        self._checkpoint_size = 0
        self.recovered_records = 0
        # packet type -> handler, for a CONNECTED connection (CONNECT is handled before)
        self._handlers: dict[type, Callable[[Conn, Any], None]] = {
            Publish: self._on_publish,
            Puback: self._on_puback,
            Pubrec: self._on_pubrec,
            Pubrel: self._on_pubrel,
            Pubcomp: self._on_pubcomp,
            Subscribe: self._on_subscribe,
            Unsubscribe: self._on_unsubscribe,
            Pingreq: self._on_pingreq,
            Disconnect: self._on_disconnect,
            Auth: self._on_auth,
        }

    # ================================================================== recovery and checkpoints

    def recover(self) -> None:
        """Load the state log (if any) and checkpoint it. Call once, before any connection."""
        log = self.log
        if log is None:
            return
        state = recover(read_all(log))
        self.recovered_records = state.records
        self._generation = state.generation
        self.cluster_positions = dict(state.cluster_positions)
        self._settled = dict(state.claims_settled)
        for client_id, index, key, value in state.releases:  # hand-overs not committed yet:
            record = KRecord(-1, max(0, self.clock()), key, value, ())  # sent again
            self._releases.append(_Outgoing(client_id, index, record, []))
            self._settled[client_id] = max(self._settled.get(client_id, 0), index)
        for msg in state.retained.values():
            self.retained.set(msg)
        now = self.clock()
        for session in state.sessions.values():
            session.disconnected_ms = now  # expiry counts from the restart
            self.sessions[session.client_id] = session
            for topic_filter, opts in session.subscriptions.items():
                self._index_subscription(session.client_id, topic_filter, opts)
        if log.end_offset() > log.start_offset():
            self.checkpoint()

    def checkpoint(self) -> None:
        """Rewrite the live state at the log's end, make it durable, drop what precedes it."""
        log = self.log
        if log is None:
            return
        now = self.clock()
        self._generation += 1
        gen = self._generation
        records: list[Record] = []
        by_message: dict[int, tuple[Message, list[tuple[str, Delivery]]]] = {}
        for session in self.sessions.values():
            if not session.persistent:
                continue
            records.append(session_record(session, now, gen))
            for d in self._pending_deliveries(session):
                if d.message.log_id >= 0:
                    entry = by_message.setdefault(id(d.message), (d.message, []))
                    entry[1].append((session.client_id, d))
        retained_ids = set()
        for msg in self.retained.all():
            if msg.topic.startswith("$SYS/"):
                continue
            retained_ids.add(id(msg))
            by_message.setdefault(id(msg), (msg, []))
        messages = list(by_message.values())
        for msg, targets in messages:
            records.append(publish_record(msg, targets, now, id(msg) in retained_ids, gen))
        begin = log.end_offset()
        for start in range(0, len(records), 1024):
            log.append(records[start:start + 1024])
        # renumber: messages now live at their checkpoint offsets
        offset = begin + sum(1 for r in records if r.key == b"ses")
        for msg, _ in messages:
            msg.log_id = offset
            offset += 1
        # QoS 2 packet-id state, now that the messages have their new offsets
        tail: list[Record] = []
        for session in self.sessions.values():
            if not session.persistent:
                continue
            for pid, inflight in session.inflight.items():
                d = inflight.delivery
                if inflight.released:
                    tail.append(packet_record(REL, session.client_id, -1, pid, now, gen))
                elif d.qos == 2 and d.message.log_id >= 0:
                    tail.append(packet_record(SND, session.client_id, d.message.log_id, pid,
                                              now, gen))
            for pid in sorted(session.inbound_qos2):
                tail.append(inbound_record(QI, session.client_id, pid, now, gen))
        # where this node resumes each cluster log partition
        positions = (self.cluster.positions() if self.cluster is not None
                     else self.cluster_positions)
        for partition, place in sorted(positions.items()):
            tail.append(cursor_record(partition, place, now, gen))
        for client_id, index in sorted(self._settled.items()):
            tail.append(claims_record(client_id, index, now, gen))
        for out in self._releases:  # (after the `clm` of their client: they are not settled)
            tail.append(release_state_record(out.client, out.index, out.record.key or b"",
                                             out.record.value or b"", now, gen))
        tail.append(checkpoint_record(gen, now))
        for start in range(0, len(tail), 1024):
            log.append(tail[start:start + 1024])
        log.sync()
        log.delete_before(begin)
        self._log_mark = log.end_offset()
        self._checkpoint_size = log.bytes_total()
        self.stats.checkpoints += 1

    @staticmethod
    def _pending_deliveries(session: Session) -> Iterator[Delivery]:
        for inflight in session.inflight.values():
            if not inflight.released:
                yield inflight.delivery
        yield from session.queue

    def _append(self, record: Record) -> int:
        log = self.log
        assert log is not None
        base = log.append([record])
        return base

    # ================================================================== shell interface

    def open(self, conn_id: int, *, peer: str = "", listener: str = "tcp",
             anonymous_ok: bool = False) -> None:
        assert conn_id not in self.conns, conn_id
        conn = Conn(conn_id, peer, listener, anonymous_ok, self.config.max_packet_size,
                    self.clock())
        self.conns[conn_id] = conn
        if len(self.conns) > self.config.max_connections:
            self.stats.drop("connection_limit")
            conn.close_after = True  # refused in CONNACK once CONNECT arrives; closed now
            conn.to(CLOSING)
            self._dirty[conn_id] = conn

    def receive(self, conn_id: int, data: bytes) -> None:
        """Bytes from the client. Complete packets are framed here; a PUBLISH in the common shape
        (a topic name seen before, no properties) is parsed inline, everything else goes
        through the full `Decoder` one complete packet at a time, so its checks and error
        reasons apply unchanged."""
        conn = self.conns.get(conn_id)
        if conn is None or conn.state is CLOSING:
            return
        conn.last_rx = self.clock()
        self.stats.bytes_in += len(data)
        if conn.state is CLAIMING:  # nothing is handled before the CONNACK
            conn.pending += data
            if len(conn.pending) > self.config.max_packet_size:
                self._refuse(conn, RC.SERVER_BUSY, "too much input before the CONNACK")
            return
        if conn.decoder.buffered():
            self._decode(conn, data)  # after an irregular frame: the decoder owns the stream
            return
        buf = conn.pending + data if conn.pending else data
        n = len(buf)
        pos = 0
        names = self._names
        limit = self.config.max_packet_size
        while pos < n and conn.state is not CLOSING and conn.state is not CLAIMING:
            # fixed header: type/flags byte, remaining length (1..4 byte varint)
            index = pos + 1
            length = 0
            shift = 0
            while True:
                if index >= n:
                    break
                byte = buf[index]
                index += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 21:
                    break
            else:  # pragma: no cover - loop always breaks
                pass
            if index >= n and (index == pos + 1 or buf[index - 1] & 0x80):
                if n - pos > 5:  # a header that cannot end: let the decoder name the error
                    self._decode(conn, buf[pos:])
                    pos = n
                break  # incomplete fixed header: wait for more
            end = index + length
            if shift > 21 or end - pos > limit or (byte == 0 and index - pos > 2):
                self._decode(conn, buf[pos:])  # oversized or not minimal: the decoder's error
                pos = n
                break
            if end > n:
                break  # incomplete body: wait for more
            byte0 = buf[pos]
            if byte0 >> 4 == 3 and conn.state is CONNECTED and byte0 & 6 != 6:
                # (the version is read per packet: a CONNECT earlier in this same buffer set it)
                v5 = conn.version == MQTT_5
                qos = byte0 >> 1 & 3
                tlen = buf[index] << 8 | buf[index + 1] if end - index >= 2 else -1
                body = index + 2 + tlen
                topic = names.get(buf[index + 2:body]) if tlen > 0 else None
                pid = None
                if qos and topic is not None:
                    pid = buf[body] << 8 | buf[body + 1] if body + 2 <= end else 0
                    body += 2
                if topic is not None and v5:
                    if body < end and buf[body] == 0:
                        body += 1
                    else:
                        topic = None
                if topic is not None and body <= end and pid != 0:
                    # a 3.1.1 QoS 0 PUBLISH without flags is byte for byte the packet every
                    # 3.1.1 QoS 0 subscriber gets: forward these very bytes
                    raw = buf[pos:end] if byte0 == 0x30 and not v5 else None
                    self._publish_in(conn, topic, buf[body:end], qos, bool(byte0 & 1), pid,
                                     NO_PROPERTIES, raw)
                    pos = end
                    continue
            self._decode(conn, buf[pos:end])
            pos = end
        conn.pending = buf[pos:] if pos < n and conn.state is not CLOSING else b""

    def _decode(self, conn: Conn, data: bytes) -> None:
        try:
            packets = conn.decoder.feed(data)
        except MqttError as exc:
            for packet in exc.decoded:
                if conn.state is CLOSING:
                    return
                self._handle(conn, packet)
            if conn.state is CLAIMING:
                conn.backlog.append(exc)  # the error, once the CONNACK is out
            elif conn.state is not CLOSING:
                self._protocol_error(conn, exc.reason_code, exc.detail)
            return
        for packet in packets:
            if conn.state is CLOSING:
                return
            self._handle(conn, packet)

    def closed(self, conn_id: int) -> None:
        """The transport closed (by the peer or after `drain` asked). Runs the will logic."""
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return
        self._dirty.pop(conn_id, None)
        self._detach(conn, abnormal=conn.will is not None)

    def set_congested(self, conn_id: int, congested: bool) -> None:
        conn = self.conns.get(conn_id)
        if conn is None:
            return
        conn.congested = congested
        if not congested and conn.session is not None and conn.state is CONNECTED:
            self._pump(conn.session, conn)

    def kick(self, conn_id: int) -> None:
        """Close a connection by administrative action (MQTT 5 clients get DISCONNECT 0x98)."""
        conn = self.conns.get(conn_id)
        if conn is not None:
            self._close(conn, RC.ADMINISTRATIVE_ACTION, "disconnected by an administrator")

    def drain(self) -> list[tuple[int, bytes, bool]]:
        """Bytes to write per connection (and whether to close it after), since the last drain."""
        if not self._dirty:
            return []
        out = []
        for conn in self._dirty.values():
            data = b"".join(conn.out) if len(conn.out) != 1 else conn.out[0]
            conn.out.clear()
            self.stats.bytes_out += len(data)
            out.append((conn.id, data, conn.close_after))
        self._dirty.clear()
        return out

    def tick(self) -> None:
        now = self.clock()
        self._release_durable()
        if now >= self._next_keepalive_check:
            self._next_keepalive_check = now + KEEP_ALIVE_CHECK_MS
            self._check_keepalives(now)
            self._expire_sessions(now)
        if self._wills:
            self._fire_wills(now)
        if self._steps or self._claiming:
            self._check_claims(now)
        if self._releases:
            self._send_releases()
        if self.config.sys_interval_ms and now >= self._next_sys:
            self._next_sys = now + self.config.sys_interval_ms
            self._publish_sys(now)
        if self.log is not None and self.config.checkpoint_bytes and self._log_is_long():
            self.checkpoint()

    def _log_is_long(self) -> bool:
        """Checkpoint when the log holds over `checkpoint_bytes` and over twice what the last
        checkpoint wrote (so a large live state does not checkpoint back to back)."""
        log = self.log
        assert log is not None
        if log.end_offset() - self._log_mark < 1024:
            return False
        size = log.bytes_total()
        return size > max(self.config.checkpoint_bytes, 2 * self._checkpoint_size)

    def next_deadline_ms(self) -> int | None:
        """When `tick` next has timed work, absolute ms in the broker's clock, never before now
        (the shell may tick more often). The keep-alive/session-expiry check runs every
        KEEP_ALIVE_CHECK_MS, so there is always a deadline."""
        now = self.clock()
        due = self._next_keepalive_check
        if self.config.sys_interval_ms:
            due = min(due, self._next_sys)
        for at, _ in self._wills.values():
            due = min(due, at)
        for steps in self._steps.values():
            due = min(due, steps[0].since + self.claim_wait_ms)
        for pending in self._claiming.values():
            if pending.retry_at is not None:
                due = min(due, pending.retry_at)
        return max(due, now)

    def durable_progress(self) -> None:
        """The state log's durable_end may have advanced (the shell polled it): release acks."""
        self._release_durable()
        if self._releases:
            self._send_releases()

    # ================================================================== packets

    def _handle(self, conn: Conn, packet: object) -> None:
        """One decoded packet: CONNECT first, then the handler `_handlers` names for its type."""
        if conn.state is CLAIMING:
            conn.backlog.append(packet)
            return
        if conn.state is AWAITING_CONNECT:
            if not isinstance(packet, Connect):
                self._close(conn, RC.PROTOCOL_ERROR, "the first packet must be CONNECT")
                return
            self._on_connect(conn, packet)
            return
        assert conn.state is CONNECTED, conn.state
        handler = self._handlers.get(type(packet))
        if handler is None:  # CONNECT again, or a packet only a server sends
            name = type(packet).__name__.upper()
            self._close(conn, RC.PROTOCOL_ERROR, f"a client may not send {name}")
            return
        handler(conn, packet)

    def _on_pingreq(self, conn: Conn, _p: Pingreq) -> None:
        self._send(conn, b"\xd0\x00")

    def _on_auth(self, conn: Conn, _p: Auth) -> None:
        self._close(conn, RC.PROTOCOL_ERROR, "AUTH without an authentication method")

    # ---------------------------------------------------------------- CONNECT

    def _on_connect(self, conn: Conn, p: Connect) -> None:
        cfg = self.config
        conn.version = p.protocol_version
        v5 = conn.version == MQTT_5
        props = p.properties
        if v5:  # known before any refusal: a refusing CONNACK must fit too (MQTT-3.1.2-24)
            conn.max_packet_out = props.get_int(PropertyId.MAXIMUM_PACKET_SIZE,
                                                codec.PACKET_SIZE_MAX)
            conn.problem_info = props.get(PropertyId.REQUEST_PROBLEM_INFORMATION, 1) == 1
        if v5 and props.get(PropertyId.AUTHENTICATION_METHOD) is not None:
            self._refuse(conn, RC.BAD_AUTHENTICATION_METHOD, "enhanced authentication is not "
                                                             "supported")
            return
        if len(self.conns) > cfg.max_connections:
            self._refuse(conn, RC.SERVER_BUSY, "connection limit reached")
            return
        if p.will is not None and p.will.retain and not cfg.retain_available:
            self._refuse(conn, RC.RETAIN_NOT_SUPPORTED, "will retain: retain is not available "
                                                        "(MQTT-3.2.2-13)")
            return
        client_id = p.client_id
        assigned = False
        if not client_id:
            if not p.clean_start and not v5:
                self._refuse(conn, RC.CLIENT_IDENTIFIER_NOT_VALID,
                             "an empty client id needs clean session (MQTT-3.1.3-8)")
                return
            while True:  # never an id a session already has (MQTT-3.1.3-6)
                self._assigned += 1
                client_id = f"auto-{cfg.node_id}-{self._assigned}"
                if client_id not in self.sessions:
                    break
            assigned = True
        user = p.username
        if self._authenticate is not None:
            result = self._authenticate(p.username, p.password, conn.anonymous_ok)
            code, user = ((result, p.username) if isinstance(result, int)
                          else (result.reason, result.user))
            if code:
                self.stats.auth_failures += 1
                self._refuse(conn, code, "authentication failed")
                return
        conn.username = user
        # session expiry: v3 clean session 0 -> never expires while offline
        if v5:
            expiry = props.get_int(PropertyId.SESSION_EXPIRY_INTERVAL, 0)
        else:
            expiry = 0 if p.clean_start else SESSION_EXPIRY_NEVER
        expiry = min(expiry, cfg.session_expiry_max)
        keep_alive = p.keep_alive
        server_keep_alive = None
        if cfg.keep_alive_max and (keep_alive == 0 or keep_alive > cfg.keep_alive_max) and v5:
            keep_alive = server_keep_alive = cfg.keep_alive_max
        conn.keep_alive_ms = keep_alive * 1000
        if v5:
            conn.recv_max_out = props.get_int(PropertyId.RECEIVE_MAXIMUM, 65535)
            conn.alias_out_max = props.get_int(PropertyId.TOPIC_ALIAS_MAXIMUM, 0)
        if p.will is not None:
            conn.will = p.will
            conn.will_delay_s = p.will.properties.get_int(PropertyId.WILL_DELAY_INTERVAL, 0)
        if self.propose_claim is not None:
            if self.fenced:
                self._refuse(conn, RC.SERVER_UNAVAILABLE, "this node is cut off from the "
                                                          "cluster's meta quorum")
                return
            if not assigned:  # (an assigned id names this node: no other node has it)
                self._claim(conn, client_id, lambda: self._attach(
                    conn, p, client_id, assigned, expiry, server_keep_alive))
                return
        self._attach(conn, p, client_id, assigned, expiry, server_keep_alive)

    def _attach(self, conn: Conn, p: Connect, client_id: str, assigned: bool, expiry: int,
                server_keep_alive: int | None) -> None:
        """The CONNECT is accepted (and the client id is this node's, in a cluster): take over
        a local connection of the same client id, attach the session, send the CONNACK."""
        cfg = self.config
        v5 = conn.version == MQTT_5
        props = p.properties
        user = conn.username
        # takeover
        old = self.sessions.get(client_id)
        if old is not None and old.conn_id is not None:
            other = self.conns.get(old.conn_id)
            if other is not None:
                self._close(other, RC.SESSION_TAKEN_OVER, "another connection took the session")
                self._detach(other, abnormal=True)
            old = self.sessions.get(client_id)
        present = False
        if old is not None and not p.clean_start:
            session = old
            present = True
            self._wills.pop(client_id, None)  # MQTT-3.1.3-9: reconnected within the will delay
        else:
            if old is not None:
                self._end_session(old)
            session = Session(client_id, expiry, conn.version, self.clock())
            self.sessions[client_id] = session
        prev_persistent = session.persistent
        session.expiry_s = expiry
        session.version = conn.version
        session.conn_id = conn.id
        if session.username != user:
            session.username = user
            session.acl = None  # re-bound for the new identity by _client_acl
        conn.session = session
        conn.to(CONNECTED)
        if self.log is not None and (session.persistent or prev_persistent):
            if session.persistent:
                self._append(session_record(session, self.clock()))
            else:
                self._append(delete_record(client_id, self.clock()))
        self.stats.connects += 1
        ack_props: list[tuple[PropertyId, PropertyValue]] = []
        if v5:
            if assigned:
                ack_props.append((PropertyId.ASSIGNED_CLIENT_IDENTIFIER, client_id))
            if expiry != props.get_int(PropertyId.SESSION_EXPIRY_INTERVAL, 0):
                ack_props.append((PropertyId.SESSION_EXPIRY_INTERVAL, expiry))
            ack_props.append((PropertyId.RECEIVE_MAXIMUM, cfg.receive_maximum))
            ack_props.append((PropertyId.MAXIMUM_PACKET_SIZE, cfg.max_packet_size))
            if cfg.topic_alias_max:
                ack_props.append((PropertyId.TOPIC_ALIAS_MAXIMUM, cfg.topic_alias_max))
            if not cfg.retain_available:
                ack_props.append((PropertyId.RETAIN_AVAILABLE, 0))
            if server_keep_alive is not None:
                ack_props.append((PropertyId.SERVER_KEEP_ALIVE, server_keep_alive))
        self._send(conn, codec.encode(
            Connack(present, 0, Properties(tuple(ack_props))), conn.version))
        # resume: re-send the inflight window in order (MQTT-4.4.0-1), no more than the new
        # connection's Receive Maximum allows (MQTT-3.3.4-9); the rest as slots free (_pump)
        session.resend.clear()
        session.resend.extend(pid for pid, inflight in session.inflight.items()
                              if not inflight.held)  # held ones go out once durable
        self._pump(session, conn)

    def _refuse(self, conn: Conn, reason: int, detail: str) -> None:
        self.stats.connect_refused += 1
        if conn.version == MQTT_5:
            self._send(conn, self._with_reason_string(
                lambda props: Connack(False, reason, props), conn, detail))
        else:
            self._send(conn, codec.encode(Connack(False, V3_CONNACK.get(reason, 5)), conn.version))
        conn.will = None
        self._finish(conn)

    # ---------------------------------------------------------------- client ids in a cluster

    def _claim(self, conn: Conn, client_id: str, attach: Callable[[], None]) -> None:
        """Hold the CONNECT of `conn` until meta applied its claim of `client_id` and any other
        node holding the client id handed its session over (real/mqtt/claims.py)."""
        assert self.propose_claim is not None
        older = self._claiming.get(client_id)
        if older is not None:  # a newer connection of the same client id on this node
            other = self.conns.get(older.conn_id)
            if other is not None:
                self._finish(other)
        key = ClaimKey(self.config.node_id, self.life, conn.id)
        self._claiming[client_id] = _Claiming(conn.id, key, attach)
        conn.to(CLAIMING)
        self.stats.claims += 1
        self._propose_claim(client_id, key)

    def _propose_claim(self, client_id: str, key: ClaimKey) -> None:
        assert self.propose_claim is not None

        def done(result: Any) -> None:
            if isinstance(result, str):
                return  # applied: `claim_applied` does the rest, in meta order
            pending = self._claiming.get(client_id)
            if pending is None or pending.key != key or pending.applied:
                return
            if isinstance(result, Exception) and not isinstance(result, ValueError):
                # dropped on the way (maybe applied after all: then it counts once applied)
                pending.retry_at = self.clock() + CLAIM_RETRY_MS
                return
            del self._claiming[client_id]
            live = self.conns.get(key.conn)
            if live is not None and live.state is CLAIMING:
                self._refuse(live, RC.SERVER_UNAVAILABLE, f"client id claim failed: {result}")

        self.propose_claim(client_id, key.conn, done)

    def claims_applied(self, claims: Any, claims_from: int,
                       owner: Callable[[str], Any]) -> None:
        """Meta applied claims (`MetaStateMachine.claims`, oldest first): act on those after
        `claims_seen`. If some were not kept (`claims_from` past the next one this node needs:
        it started from a snapshot, or fell far behind), compare this node's sessions with
        the owners meta has (`owner(client)`) first."""
        if claims_from > self.claims_seen + 1:
            self._reconcile_owners(owner, claims_from - 1)
        new = []
        for claim in reversed(claims):
            if claim.index <= self.claims_seen:
                break
            new.append(claim)
        for claim in reversed(new):
            self.claims_seen = claim.index
            self._claim_applied(claim.client, claim.owner, claim.prev, claim.index)

    def _reconcile_owners(self, owner: Callable[[str], Any], index: int) -> None:
        """Claims up to meta `index` are not known one by one: hand each session another node
        owns now to that owner (a claimant no longer waiting drops it as late). A session whose
        claims the state log settled at or past `index` is newer than what meta says here."""
        me = self.config.node_id
        for client_id in sorted(self.sessions):
            if self._settled.get(client_id, 0) >= index:
                continue
            now_owner = owner(client_id)
            if now_owner is not None and now_owner.node != me:
                self._hand_over(client_id, now_owner, index, self.cluster.positions())
        self.claims_seen = index

    def _claim_applied(self, client_id: str, owner: Any, prev: Any, index: int) -> None:
        me = self.config.node_id
        if index <= self._settled.get(client_id, 0):
            return  # settled before a restart
        key = owner  # (meta's Owner is the claim key)
        if owner.node == me:
            if owner.life != self.life:
                # An earlier life's claim, not settled in the state log: if it waited for a
                # hand-over, the session it brought was not durable when that life ended; its
                # release is in `__mqtt` after this node's durable place, so wait for it
                # again.
                if prev is not None and prev.node != me:
                    self._step(client_id, _Step(True, key, index, prev.node, self.clock()))
                return
            pending = self._claiming.get(client_id)
            if pending is not None and pending.key == key:
                pending.applied = True
            if (prev is not None and prev.node != me
                    and "mqtt-claim-no-wait" not in self.cluster.config.bugs):
                self.stats.claims_waited += 1
                self._step(client_id, _Step(True, key, index, prev.node, self.clock()))
            self._try_grant(client_id)
            return
        if prev is None or prev.node != me:
            return  # (a claim this node was not part of)
        pending = self._claiming.get(client_id)
        if pending is not None and pending.applied:  # its claim came first: taken over too
            del self._claiming[client_id]
            live = self.conns.get(pending.conn_id)
            if live is not None and live.state is CLAIMING:
                self._refuse(live, RC.SERVER_UNAVAILABLE, "the client id was claimed on "
                                                          "another node meanwhile")
        self._step(client_id, _Step(False, key, index, me, self.clock()))

    def _step(self, client_id: str, step: _Step) -> None:
        self._steps.setdefault(client_id, deque()).append(step)
        self._advance(client_id, self.cluster.positions())

    def _advance(self, client_id: str, here: dict[int, Place]) -> None:
        """Make the client id's next moves: hand the session over, or take a release that has
        come; stop at a release still to come. `here`: how far this node has routed each
        partition. With nothing left to do, a waiting CONNECT may go on."""
        steps = self._steps.get(client_id)
        while steps:
            step = steps[0]
            if not step.take:
                steps.popleft()
                self._hand_over(client_id, step.key, step.index, here)
                continue
            release = self._early.pop((client_id, step.key), None)
            if release is None:
                return
            steps.popleft()
            session = release.session()
            if session is not None:
                self._install(session, release.positions, here)
            self._settle(client_id, step.index)  # (after the session's records)
        self._steps.pop(client_id, None)
        self._try_grant(client_id)

    def _settle(self, client_id: str, index: int, force: bool = False) -> None:
        """The claims of `client_id` up to meta `index` are settled here: say so in the state
        log (after what settled them), so a restart does not act on them again. `force`: log
        it even if `_settled` says so already (a release recovered unsettled is in it)."""
        if index > self._settled.get(client_id, 0) or force:
            self._settled[client_id] = index
            if self.log is not None:
                self._append(claims_record(client_id, index, self.clock()))

    def _hand_over(self, client_id: str, to: ClaimKey, index: int,
                   positions: dict[int, Place]) -> None:
        """Another node claimed `client_id`: close its connection here (0x8E), take its session
        out of this broker and write the release for claim `to`."""
        session = self.sessions.get(client_id)
        if session is not None and session.conn_id is not None:
            conn = self.conns.get(session.conn_id)
            if conn is not None:
                self._close(conn, RC.SESSION_TAKEN_OVER, "the client connected to another node")
                self._detach(conn, abnormal=True)
            session = self.sessions.get(client_id)  # (a clean session ended with it)
        records = None
        inbound: tuple[int, ...] = ()
        tickets: list[Ticket] = []
        now = self.clock()
        if session is not None:
            self._wills.pop(client_id, None)  # a delayed will: the session goes on elsewhere
            floors = self._floors.get(client_id, {})
            positions = {p: max(place, floors.get(p, place)) for p, place in positions.items()}
            records = snapshot_records(session, now)
            inbound = tuple(sorted(session.inbound_qos2))
            tickets = [t for (cid, _pid), t in self._qos2_tickets.items() if cid == client_id]
            self._drop_session(session)
        record = release_record(client_id, to, positions, inbound, records, now)
        if self.log is not None:  # (after the `del`: a restart sends this again until settled)
            self._append(release_state_record(client_id, index, record.key or b"",
                                              record.value or b"", now))
        self.stats.handovers_out += 1
        self._releases.append(_Outgoing(client_id, index, record, tickets))
        self._send_releases()

    def _send_releases(self) -> None:
        """Write each release once the client's QoS 2 PUBLISHes are committed; once it is
        committed itself, its claim is settled here."""
        if not self._releases:
            return
        waiting = []
        for out in self._releases:
            if out.written is None and all(t.done for t in out.tickets):
                out.written = self.cluster.release(out.client, out.record)
            if out.written is not None and out.written.done:
                self._settle(out.client, out.index, force=True)
            else:
                waiting.append(out)
        self._releases = waiting

    def _drop_session(self, session: Session) -> None:
        """The session leaves this node (handed over): no will, nothing counted as dropped."""
        client_id = session.client_id
        for topic_filter, opts in session.subscriptions.items():
            self._unindex_subscription(client_id, topic_filter, opts)
        if self.sessions.get(client_id) is session:
            del self.sessions[client_id]
        if session.persistent and self.log is not None:
            self._append(delete_record(client_id, self.clock()))
        for key in [k for k in self._qos2_tickets if k[0] == client_id]:
            del self._qos2_tickets[key]
        self._floors.pop(client_id, None)
        session.queue.clear()
        session.inflight.clear()

    def release_committed(self, release: Release, partition: int, offset: int,
                          index: int) -> None:
        """A hand-over is committed in `__mqtt` (at message `index` of the batch at `offset` of
        `partition`): if it is for a claim of this node, it is kept for that claim's step, and
        taken at once if that step is next (the session moves in)."""
        if release.claim.node != self.config.node_id:
            return
        client_id = release.client
        steps = self._steps.get(client_id)
        if not steps or not any(s.take and s.key == release.claim for s in steps):
            self.stats.late_releases += 1  # (kept: its claim may be replayed after a restart)
        self._early[(client_id, release.claim)] = release
        if len(self._early) > EARLY_RELEASES_MAX:  # (late ones are never used: forget the
            del self._early[next(iter(self._early))]  # oldest)
        here = self.cluster.positions()
        here[partition] = (offset, index + 1)
        self._advance(client_id, here)

    def _install(self, session: Session, theirs: dict[int, Place],
                 here: dict[int, Place]) -> None:
        """A handed-over session joins this broker. `theirs`: how far its old node had routed
        each partition; `here`: how far this node has. What this node routed past their place
        is read again for it; before their place (where this node is behind) it takes
        nothing (the hand-over holds it)."""
        client_id = session.client_id
        old = self.sessions.get(client_id)
        if old is not None:
            self._drop_session(old)
        now = self.clock()
        session.conn_id = None
        session.disconnected_ms = now
        self.sessions[client_id] = session
        for topic_filter, opts in session.subscriptions.items():
            self._index_subscription(client_id, topic_filter, opts)
        self.stats.handovers_in += 1
        if self.log is not None and session.persistent:
            self._log_session(session)
        floors: dict[int, Place] = {}
        if "mqtt-handover-no-gap" in self.cluster.config.bugs:
            theirs = here
        for partition in sorted(theirs):
            their, mine = theirs[partition], here.get(partition)
            if mine is None or their > mine:
                floors[partition] = their
                self.stats.handover_floors += 1
            elif their < mine:
                for msg, offset, index in self.cluster.read_messages(partition, their, mine):
                    self.stats.handover_read_again += 1
                    self._catch_up(session, msg, (partition, offset, index))
        if floors:
            self._floors[client_id] = floors

    def _log_session(self, session: Session) -> None:
        """Write a session that arrived whole to the state log (as a checkpoint would)."""
        now = self.clock()
        self._append(session_record(session, now))
        for d in self._pending_deliveries(session):
            d.message.log_id = self._append(publish_record(d.message, [(session.client_id, d)],
                                                           now, retained=False))
        for pid, inflight in session.inflight.items():
            d = inflight.delivery
            if inflight.released:
                self._append(packet_record(REL, session.client_id, -1, pid, now))
            elif d.qos == 2:
                self._append(packet_record(SND, session.client_id, d.message.log_id, pid, now))
        for pid in sorted(session.inbound_qos2):
            self._append(inbound_record(QI, session.client_id, pid, now))

    def _catch_up(self, session: Session, msg: Message, place: tuple[int, int, int]) -> None:
        """Route a message this node had routed before `session` arrived, to it alone."""
        client_id = session.client_id
        subs = [opts for topic_filter, opts in session.subscriptions.items()
                if not opts.share_group and matches(topic_filter, msg.topic)
                and not (opts.no_local and msg.origin == client_id)]
        if not subs or msg.expired(self.clock()) or not self._may_receive(session, msg.topic):
            return
        qos, rap, ids = _combine(subs)
        d = Delivery(msg, min(qos, msg.qos), msg.retain and rap, ids)
        if self.log is not None and session.persistent and d.qos:
            msg.log_id = self._append(publish_record(msg, [(client_id, d)], msg.created_ms,
                                                     False, cluster_pos=place))
        self._deliver(session, d)

    def _below_floor(self, client_id: str) -> bool:
        """Whether the message being routed precedes the place where `client_id`'s handed-over
        session starts taking from this node (see `_install`)."""
        floors = self._floors.get(client_id)
        if floors is None or self._routing_from is None:
            return False
        partition, offset, index = self._routing_from
        floor = floors.get(partition)
        if floor is None:
            return False
        if (offset, index) < floor:
            return True
        del floors[partition]
        if not floors:
            del self._floors[client_id]
        return False

    def _try_grant(self, client_id: str) -> None:
        if client_id in self._steps:
            return
        pending = self._claiming.get(client_id)
        if pending is None or not pending.applied:
            return
        del self._claiming[client_id]
        conn = self.conns.get(pending.conn_id)
        if conn is None or conn.state is not CLAIMING:
            return
        pending.attach()
        backlog, conn.backlog = conn.backlog, []
        for item in backlog:
            if conn.state is not CONNECTED:
                break
            if isinstance(item, MqttError):
                self._protocol_error(conn, item.reason_code, item.detail)
            else:
                self._handle(conn, item)
        if conn.pending and conn.state is CONNECTED:
            self.receive(conn.id, b"")

    def _check_claims(self, now: int) -> None:
        """A claim waits for the previous owner's hand-over: a node that died hands it over
        once restarted (it recovers the session from its state log and replays the claim);
        one that does not come back within `claim_wait_ms`, or comes back without its state,
        never will, and the claim goes on without it. A CONNECT whose claim does not settle
        within CLAIM_TIMEOUT_MS is refused."""
        for client_id, steps in list(self._steps.items()):
            waiting = steps[0]
            if now - waiting.since < self.claim_wait_ms:
                continue
            self.log_line(f"mqtt: client id {client_id!r}: node {waiting.prev_node} did not "
                          f"hand its session over within {self.claim_wait_ms} ms; going on "
                          "without it")
            steps.popleft()
            self.stats.claims_forced += 1
            self._settle(client_id, waiting.index)
            if steps:
                steps[0].since = max(steps[0].since, now)
            self._advance(client_id, self.cluster.positions())
        for client_id, pending in list(self._claiming.items()):
            conn = self.conns.get(pending.conn_id)
            if conn is None:
                if pending.applied:
                    del self._claiming[client_id]
                continue
            if now - conn.connected_ms > CLAIM_TIMEOUT_MS and conn.state is CLAIMING:
                del self._claiming[client_id]
                self._refuse(conn, RC.SERVER_UNAVAILABLE, "the client id claim did not settle")
            elif pending.retry_at is not None and now >= pending.retry_at:
                pending.retry_at = None
                self._propose_claim(client_id, pending.key)

    def fence(self, fenced: bool) -> None:
        """The node lost (True) or regained its meta quorum: a fenced node serves no MQTT
        client (another node may have claimed any of them), so it closes every connection
        (MQTT 5: DISCONNECT 0x9C, Use another server) and refuses new ones."""
        if fenced == self.fenced:
            return
        self.fenced = fenced
        if fenced:
            for conn in list(self.conns.values()):
                if conn.state is CONNECTED:
                    self._close(conn, RC.USE_ANOTHER_SERVER, "this node is cut off from the "
                                                             "cluster")
                elif conn.state is CLAIMING:
                    self._refuse(conn, RC.SERVER_UNAVAILABLE, "this node is cut off")

    # ---------------------------------------------------------------- PUBLISH (inbound)

    def _on_publish(self, conn: Conn, p: Publish) -> None:
        self._publish_in(conn, p.topic, p.payload, p.qos, p.retain, p.packet_id, p.properties)

    def _publish_in(self, conn: Conn, topic: str, payload: bytes, qos: int, retain: bool,
                    packet_id: int | None, props: Properties, raw: bytes | None = None) -> None:
        cfg = self.config
        session = conn.session
        assert session is not None
        v5 = conn.version == MQTT_5
        if v5 and props.items:
            alias = props.get_int(PropertyId.TOPIC_ALIAS, -1)
            if alias >= 0:
                if alias == 0 or alias > cfg.topic_alias_max:
                    self._close(conn, RC.TOPIC_ALIAS_INVALID, f"topic alias {alias} out of range")
                    return
                if topic:
                    conn.alias_in[alias] = topic
                else:
                    known = conn.alias_in.get(alias)
                    if known is None:
                        self._close(conn, RC.PROTOCOL_ERROR, f"unknown topic alias {alias}")
                        return
                    topic = known
        if not topic:
            self._close(conn, RC.PROTOCOL_ERROR, "PUBLISH with an empty topic and no alias")
            return
        routes = self._routes.get(topic)
        if routes is None:
            try:
                validate_topic_name(topic, cfg.max_topic_levels)
            except TopicError as exc:
                self._close(conn, RC.TOPIC_NAME_INVALID, str(exc))
                return
            routes = self._routes_for(topic)
        if retain and not cfg.retain_available:
            self._close(conn, RC.RETAIN_NOT_SUPPORTED, "retain is not available")
            return
        self.stats.msgs_in[qos] += 1
        if self.acl is None:
            allowed = topic[0] != "$"
        else:
            allowed = topic[0] != "$" and self._may_publish(session, topic)
        if qos == 2 and packet_id is not None and packet_id in session.inbound_qos2:
            # a re-sent QoS 2 PUBLISH we already accepted (MQTT-4.3.3-10): acknowledge only,
            # once the original is committed if it went to the cluster log
            self._ack_resent_qos2(conn, _pub_ack(0x50, packet_id, 0, v5),
                                  self._qos2_tickets.get((session.client_id, packet_id)))
            return
        if qos and self._inbound_window_full(conn, session):
            self._close(conn, RC.RECEIVE_MAXIMUM_EXCEEDED, "more unacknowledged QoS 1/2 "
                        f"PUBLISHes than Receive Maximum {cfg.receive_maximum}")
            return
        offset = -1
        reason = 0
        token = None
        if not allowed:
            self.stats.drop("not_authorized")
            reason = RC.NOT_AUTHORIZED
        else:
            now = self.clock()
            expiry = EXPIRY_NEVER
            forwarded = NO_PROPERTIES
            if v5 and props.items:
                interval = props.get_int(PropertyId.MESSAGE_EXPIRY_INTERVAL, -1)
                if interval >= 0:
                    expiry = now + interval * 1000
                forwarded = Properties(tuple(item for item in props.items
                                             if item[0] in _FORWARDED))
                if props.get(PropertyId.SUBSCRIPTION_IDENTIFIER) is not None:
                    self._close(conn, RC.PROTOCOL_ERROR, "a client PUBLISH may not carry a "
                                "Subscription Identifier (MQTT-3.3.4-6)")
                    return
                response = props.get(PropertyId.RESPONSE_TOPIC)
                if response is not None:
                    assert isinstance(response, str), response  # the decoder checked it
                    try:
                        validate_topic_name(response, cfg.max_topic_levels)
                    except TopicError as exc:  # MQTT-3.3.2-14: no wildcards in it
                        self._close(conn, RC.PROTOCOL_ERROR, f"Response Topic: {exc}")
                        return
            msg = Message(topic, payload, qos, retain, forwarded, expiry,
                          session.client_id, now)
            msg.plain = raw
            bridged = refused = False
            if self.bridge is not None:
                try:
                    token = self.bridge.mqtt_published(msg)
                    bridged = token is not None
                except BridgeUnavailable as exc:
                    # No Kafka copy, so no acknowledgement as accepted: v5 says why (0x80, not
                    # routed: the client may retry), v3.1.1 has no negative ack and is closed.
                    if qos and not v5:
                        self._close(conn, RC.UNSPECIFIED_ERROR, str(exc))
                        return
                    if qos:
                        self.stats.drop("bridge_unavailable")
                        reason, refused = RC.UNSPECIFIED_ERROR, True
            if refused:
                pass
            elif self.cluster is not None:
                ticket = self.cluster.publish(msg)
                token = ticket if token is None else (token, ticket)
            else:
                offset, matched = self._route(msg, routes)
                if qos and not matched and not bridged and v5:
                    reason = RC.NO_MATCHING_SUBSCRIBERS
        if qos == 0:
            return
        assert packet_id is not None, "a QoS 1/2 PUBLISH has a packet id (codec, inline parser)"
        if not v5:
            reason = 0
        pub_ack = _pub_ack(0x40 if qos == 1 else 0x50, packet_id, reason, v5)
        ack: bytes | Callable[[Conn | None], None] = pub_ack
        if qos == 2 and reason < 0x80:
            session.inbound_qos2.add(packet_id)
            ticket = token[1] if type(token) is tuple else token
            if type(ticket) is Ticket and not ticket.done:
                self._qos2_tickets[(session.client_id, packet_id)] = ticket
            if session.persistent and self.log is not None:  # the PUBREC waits for `qi`:
                if type(ticket) is Ticket:  # written once the message is committed (a crash
                    # before must not leave the id known for a message never stored)
                    ack = self._pubrec_after_qi(session.client_id, packet_id, pub_ack)
                else:
                    offset = max(offset, self._append(inbound_record(
                        QI, session.client_id, packet_id, self.clock())))
        if conn.acks_pending or (offset >= 0 and self.log is not None
                                 and offset >= self._durable_end()) or (
                                     token is not None and not self._token_done(token)):
            conn.acks_pending += 1  # (an ack behind a held one waits too: acks stay in order)
            self._await_durable.append((max(offset, -1), conn.id, ack, token))
        elif isinstance(ack, bytes):
            self._send(conn, ack)
        else:
            ack(conn)

    def _pubrec_after_qi(self, client_id: str, packet_id: int, pubrec: bytes
                         ) -> Callable[[Conn | None], None]:
        """A held PUBREC's release in a cluster: its message is committed now, so write `qi`
        and send the PUBREC once that is durable (first in line: acks stay in order)."""
        def release(live: Conn | None) -> None:
            offset = self._append(inbound_record(QI, client_id, packet_id, self.clock()))
            if live is not None:
                live.acks_pending += 1
                self._await_durable.appendleft((offset, live.id, pubrec, None))
        return release

    def _ack_resent_qos2(self, conn: Conn, ack: bytes, ticket: Ticket | None = None) -> None:
        """PUBREC a re-sent QoS 2 PUBLISH once everything logged so far is durable (the
        original's record may still be waiting for its group commit, and its offset is not
        kept), once the original's cluster log `ticket` is done (its first PUBREC may have
        been lost with the connection before the commit), and after the acks already held for
        this connection (acks stay in order)."""
        if ticket is not None and ticket.done:
            ticket = None
        log = self.log
        end = log.end_offset() if log is not None else 0
        if not conn.acks_pending and (log is None or end <= self._durable_end()) \
                and ticket is None:
            self._send(conn, ack)
            return
        offset = end - 1
        for held, _conn_id, _ack, _token in reversed(self._await_durable):
            if held >= 0:
                if held >= offset:
                    offset = -1  # covered: released right after that ack, in order
                break
        conn.acks_pending += 1
        self._await_durable.append((offset, conn.id, ack, ticket))

    def _inbound_window_full(self, conn: Conn, session: Session) -> bool:
        return conn.acks_pending + len(session.inbound_qos2) >= self.config.receive_maximum

    def _durable_end(self) -> int:
        log = self.log
        assert log is not None
        durable = getattr(log, "ack_end", None) or getattr(log, "durable_end", None)
        return durable() if durable is not None else log.end_offset()

    def _release_durable(self) -> None:
        pending = self._await_durable
        if not pending and not self._await_send:
            return
        durable = self._durable_end() if self.log is not None else 1 << 62
        while pending and pending[0][0] < durable and (
                pending[0][3] is None or self._token_done(pending[0][3])):
            _, conn_id, ack, _token = pending.popleft()
            conn = self.conns.get(conn_id)
            if conn is not None and conn.state is CONNECTED:
                conn.acks_pending -= 1
                if isinstance(ack, bytes):
                    self._send(conn, ack)
                else:
                    ack(conn)
            elif not isinstance(ack, bytes):
                ack(None)
        held = self._await_send
        while held and held[0][0] < durable:
            _, client_id, pid = held.popleft()
            session = self.sessions.get(client_id)
            inflight = session.inflight.get(pid) if session is not None else None
            if session is None or inflight is None or not inflight.held:
                continue
            inflight.held = False
            conn = self.conns.get(session.conn_id) if session.conn_id is not None else None
            if conn is not None and conn.state is CONNECTED:
                if not self._send_publish(conn, session, inflight.delivery, pid, dup=False):
                    del session.inflight[pid]
                    self._finish_logged(session, inflight.delivery)
                    self._pump(session, conn)

    def _token_done(self, token: Any) -> bool:
        """Whether what an acknowledgement waits for besides the state log is done: the bridge's
        Kafka copy (its token), the cluster log's commit (a `Ticket`), or both (a pair)."""
        if type(token) is Ticket:
            return token.done
        if type(token) is tuple:
            return all(self._token_done(part) for part in token)
        return bool(self.bridge.is_durable(token))

    def _spread(self, msg: Message) -> None:
        """Publish a message no client is waiting on an acknowledgement for (a will, a Kafka
        record): through the cluster log if there is one, else routed here at once."""
        if self.cluster is not None:
            self.cluster.publish(msg)
        else:
            self._route(msg)

    def anchor_cluster_position(self, partition: int, offset: int) -> None:
        """The cluster log starts routing `partition` at `offset` in this life with nothing in
        the state log about it: say so there (a `cur` record). Every session and `pub` record
        logged from now on follows it, so a durable one means this place is durable too."""
        if self.log is not None:
            self._append(cursor_record(partition, (offset, 0), self.clock()))

    def route_committed(self, msg: Message, partition: int, offset: int, index: int) -> None:
        """The cluster log committed `msg` as message `index` of the batch at shard `offset` of
        `partition` (published on this node or another): route it to this node's subscribers,
        retain it if asked. What it logs names that place, so a restart resumes after it."""
        self._routing_from = (partition, offset, index)
        try:
            self._route(msg)
        finally:
            self._routing_from = None

    def _on_pubrel(self, conn: Conn, p: Pubrel) -> None:
        session = conn.session
        assert session is not None
        v5 = conn.version == MQTT_5
        if p.packet_id in session.inbound_qos2:
            session.inbound_qos2.discard(p.packet_id)
            self._qos2_tickets.pop((session.client_id, p.packet_id), None)
            comp = _pub_ack(0x70, p.packet_id, 0, v5)
            if session.persistent and self.log is not None:  # PUBCOMP once `qr` is durable:
                offset = self._append(inbound_record(  # else a crash brings the id back and
                    QR, session.client_id, p.packet_id, self.clock()))  # a new PUBLISH under
                if conn.acks_pending or offset >= self._durable_end():  # it would be taken
                    conn.acks_pending += 1  # for a re-send
                    self._await_durable.append((offset, conn.id, comp, None))
                    return
            self._send(conn, comp)
        else:
            self._send(conn, _pub_ack(0x70, p.packet_id, RC.PACKET_IDENTIFIER_NOT_FOUND, v5))

    # ---------------------------------------------------------------- routing

    def _routes_for(self, topic: str) -> tuple[list, list]:
        """The (normal, shared) subscriptions matching a valid topic name, cached until the
        next subscription change (also remembers the name as valid for the inline parser)."""
        routes = self._routes.get(topic)
        if routes is None:
            if len(self._routes) >= ROUTE_CACHE_MAX:
                self._routes.clear()
            routes = self._routes[topic] = (_aggregate(self._trie.match(topic), self.sessions),
                                            self._shared.match(topic))
            if len(self._names) >= ROUTE_CACHE_MAX:
                self._names.clear()
            self._names[topic.encode()] = topic
        return routes

    def _route(self, msg: Message, routes: tuple[list, list] | None = None) -> tuple[int, int]:
        """Deliver `msg` to every matching session; retain it if asked. Returns the state-log
        offset of its `pub` record (-1 if it was not logged) and the number of target sessions."""
        topic = msg.topic
        targets: list[tuple[Session, Delivery]] = []
        if routes is None:
            routes = self._routes_for(topic)
        matched, shared = routes
        qos = msg.qos
        retain_flag = msg.retain
        origin = msg.origin
        persistent = False
        for session, sub_qos, rap, sub_ids, own in matched:
            if own is not None and session.client_id == origin:
                if own is False:
                    continue  # every matching subscription of the publisher is no-local
                sub_qos, rap, sub_ids = own
            persistent = persistent or session.expiry_s > 0
            targets.append((session, Delivery(msg, sub_qos if sub_qos < qos else qos,
                                              retain_flag and rap, sub_ids)))
        for _filter, _group, group in shared:
            member = self._pick_member(group, topic)
            if member is None:
                continue
            client_id, opts = member
            member_session = self.sessions[client_id]
            persistent = persistent or member_session.expiry_s > 0
            targets.append((member_session,
                            Delivery(msg, min(msg.qos, opts.qos), False,
                                     (opts.sub_id,) if opts.sub_id else ())))
        if self._floors:
            targets = [t for t in targets if not self._below_floor(t[0].client_id)]
        offset = -1
        retain = retain_flag and not topic.startswith("$SYS/")
        if self.log is not None and (retain or persistent):
            logged = [(s.client_id, d) for s, d in targets
                      if s.persistent and (d.qos or (self.config.queue_qos0 and s.conn_id is None))]
            if logged or retain:
                offset = self._append(publish_record(msg, logged, msg.created_ms, retain,
                                                     cluster_pos=self._routing_from))
                msg.log_id = offset
                self.stats.logged_publishes += 1
        if msg.retain:
            self.retained.set(msg)
        acl = self.acl
        if acl is None or not acl.needs_receive_check:
            for session, delivery in targets:
                self._deliver(session, delivery)
        else:
            for session, delivery in targets:
                if self._may_receive(session, topic):
                    self._deliver(session, delivery)
        return offset, len(targets)

    def _client_acl(self, session: Session) -> ClientAcl | None:
        """The ACL bound to the session's user and client id (built once), or None."""
        acl = self.acl
        if acl is None:
            return None
        bound = session.acl
        if bound is None:
            bound = session.acl = acl.for_client(session.username, session.client_id)
        return bound

    def _may_publish(self, session: Session, topic: str) -> bool:
        acl = self._client_acl(session)
        return acl is None or acl.check_publish(topic)

    def _may_receive(self, session: Session, topic: str) -> bool:
        acl = self._client_acl(session)
        return acl is None or not acl.needs_receive_check or acl.check_receive(topic)

    def _pick_member(self, group: _SharedGroup, topic: str) -> tuple[str, SubOpts] | None:
        """Round robin over the group's members that may receive `topic` (the ACL: a wildcard
        granted in part), preferring connected, uncongested ones."""
        members = list(group.members.items())
        if not members:
            return None
        check = self.acl is not None and self.acl.needs_receive_check
        n = len(members)
        first: int | None = None
        for step in range(n):
            index = (group.cursor + step) % n
            client_id, opts = members[index]
            session = self.sessions.get(client_id)
            if check and (session is None or not self._may_receive(session, topic)):
                continue
            if first is None:
                first = index
            if session is None or session.conn_id is None:
                continue
            conn = self.conns.get(session.conn_id)
            if conn is not None and not conn.congested:
                group.cursor = (index + 1) % n
                return client_id, opts
        if first is None:
            return None  # no member may receive it
        group.cursor = (first + 1) % n
        return members[first]

    def _deliver(self, session: Session, d: Delivery) -> None:
        conn = self.conns.get(session.conn_id) if session.conn_id is not None else None
        if conn is not None and conn.state is not CONNECTED:
            conn = None
        online = conn is not None
        if d.qos == 0:
            if conn is not None and not conn.congested:
                self._send_publish(conn, session, d, None, dup=False)
                return
            if not online and self.config.queue_qos0 and session.persistent:
                self._enqueue(session, d)
                return
            self.stats.drop("qos0_offline" if not online else "qos0_congested")
            return
        if (conn is not None and not session.queue and not conn.congested
                and len(session.inflight) < self._window(conn)):
            self._start_inflight(conn, session, d)
            return
        if not online and not session.persistent:
            self.stats.drop("no_session")
            return
        self._enqueue(session, d)

    def _enqueue(self, session: Session, d: Delivery) -> None:
        queue = session.queue
        if len(queue) >= self.config.max_queued:
            session.dropped += 1
            self.stats.drop("queue_full")
            if self.config.queue_policy == "drop-new" or not queue:
                self._finish_logged(session, d)
                return
            old = queue.popleft()
            self._finish_logged(session, old)
        queue.append(d)

    def _window(self, conn: Conn) -> int:
        return min(conn.recv_max_out, self.config.max_inflight)

    def _logs_qos2(self, session: Session, d: Delivery) -> bool:
        """Is this QoS 2 delivery's packet-id state logged (see persist.py)?"""
        return (d.qos == 2 and session.persistent and self.log is not None
                and d.message.log_id >= 0)

    def _start_inflight(self, conn: Conn, session: Session, d: Delivery) -> None:
        pid = session.allocate_packet_id()
        inflight = session.inflight[pid] = Inflight(d, pid)
        if self._logs_qos2(session, d):
            offset = self._append(packet_record(SND, session.client_id, d.message.log_id, pid,
                                                self.clock()))
            if offset >= self._durable_end():
                inflight.held = True  # sent by _release_durable once the packet id is durable
                self._await_send.append((offset, session.client_id, pid))
                return
        if not self._send_publish(conn, session, d, pid, dup=False):
            del session.inflight[pid]
            self._finish_logged(session, d)

    def _pump(self, session: Session, conn: Conn) -> None:
        """Re-send what a resumed session owes, then move queued deliveries into the inflight
        window, while there is room."""
        queue = session.queue
        window = self._window(conn)
        resend = session.resend
        while resend and conn.state is CONNECTED and len(session.inflight) - len(resend) < window:
            pid = resend.popleft()
            inflight = session.inflight.get(pid)
            if inflight is None or inflight.held:
                continue
            if inflight.released:
                self._send(conn, codec.encode(Pubrel(pid), conn.version))
            elif not self._send_publish(conn, session, inflight.delivery, pid, dup=True):
                del session.inflight[pid]  # too large for this connection: dropped
                self._finish_logged(session, inflight.delivery)
        if resend:
            return
        now = self.clock()
        while queue and not conn.congested and conn.state is CONNECTED:
            d = queue[0]
            if d.qos and len(session.inflight) >= window:
                break
            queue.popleft()
            if d.message.expired(now):
                self.stats.drop("expired")
                self._finish_logged(session, d)
                continue
            if d.qos:
                self._start_inflight(conn, session, d)
            else:
                self._send_publish(conn, session, d, None, dup=False)

    def _finish_logged(self, session: Session, d: Delivery) -> None:
        """A delivery ended (acknowledged, dropped or expired): log it if it was logged."""
        if d.message.log_id >= 0 and self.log is not None and session.persistent and d.qos:
            self._append(ack_record(session.client_id, d.message.log_id, self.clock()))

    def _send_publish(self, conn: Conn, session: Session, d: Delivery, pid: int | None,
                      dup: bool) -> bool:
        """Encode and queue one outbound PUBLISH; False if it cannot be sent (expired before
        its first sending, MQTT-3.3.2-5, or over the client's Maximum Packet Size: then it is
        dropped, MQTT-3.1.2-25). A re-send (`dup`) goes out even if the message has expired
        since (MQTT-4.3.3-7: onward delivery has started)."""
        msg = d.message
        now = self.clock()
        stats = self.stats
        if conn.version != MQTT_5 and msg.expiry_at == EXPIRY_NEVER:  # the common, cheap case
            if pid is None and not d.retain:
                data = msg.plain  # the same bytes for every 3.1.1 QoS 0 copy of the message
                if data is None:
                    data = msg.plain = _publish_bytes(msg.topic_bytes(), msg.payload, 0, False,
                                                      False, None, None)
            else:
                data = _publish_bytes(msg.topic_bytes(), msg.payload, d.qos, d.retain, dup, pid,
                                      None)
            conn.out.append(data)
            if conn.id not in self._dirty:
                self._dirty[conn.id] = conn
            stats.msgs_out[d.qos] += 1
            stats.latency_counts[bisect_left(LATENCY_BUCKETS_MS, now - msg.created_ms)] += 1
            stats.latency_sum_ms += now - msg.created_ms
            return True
        v5 = conn.version == MQTT_5
        if msg.expiry_at != EXPIRY_NEVER and now >= msg.expiry_at and not dup:
            self.stats.drop("expired")
            return False
        topic_b = msg.topic_bytes()
        props_b = None
        new_alias = None
        if v5:
            items: list[tuple[PropertyId, PropertyValue]] = list(msg.props.items)
            if msg.expiry_at != EXPIRY_NEVER:
                items.append((PropertyId.MESSAGE_EXPIRY_INTERVAL, msg.remaining_s(now)))
            for sub_id in d.sub_ids:
                items.append((PropertyId.SUBSCRIPTION_IDENTIFIER, sub_id))
            if conn.alias_out_max:
                alias = conn.alias_out.get(msg.topic)
                if alias is not None:
                    topic_b = b"\x00\x00"
                elif len(conn.alias_out) < conn.alias_out_max:
                    alias = new_alias = len(conn.alias_out) + 1
                if alias is not None:
                    items.append((PropertyId.TOPIC_ALIAS, alias))
            props_b = encode_properties(Properties(tuple(items)))
        data = _publish_bytes(topic_b, msg.payload, d.qos, d.retain, dup, pid, props_b)
        if len(data) > conn.max_packet_out:
            self.stats.drop("packet_too_large")
            return False
        if new_alias is not None:
            conn.alias_out[msg.topic] = new_alias  # the client learns it from this packet
        self._send(conn, data)
        self.stats.msgs_out[d.qos] += 1
        self.stats.observe_latency(now - msg.created_ms)
        return True

    # ---------------------------------------------------------------- acks from the client

    def _on_puback(self, conn: Conn, p: Puback) -> None:
        session = conn.session
        assert session is not None
        inflight = session.inflight.get(p.packet_id)
        if inflight is None or inflight.delivery.qos != 1:
            return  # unknown id: nothing to do (v5 has no reply for PUBACK)
        del session.inflight[p.packet_id]
        self._finish_logged(session, inflight.delivery)
        self._pump(session, conn)

    def _on_pubrec(self, conn: Conn, p: Pubrec) -> None:
        session = conn.session
        assert session is not None
        v5 = conn.version == MQTT_5
        inflight = session.inflight.get(p.packet_id)
        if inflight is None or inflight.delivery.qos != 2:
            self._send(conn, _pub_ack(0x62, p.packet_id,
                                      RC.PACKET_IDENTIFIER_NOT_FOUND if v5 else 0, v5))
            return
        if p.reason_code >= 0x80:
            del session.inflight[p.packet_id]
            self._finish_logged(session, inflight.delivery)
            self._pump(session, conn)
            return
        if not inflight.released:
            inflight.released = True  # the client has the message; PUBREL owed from now on
            d = inflight.delivery
            if self._logs_qos2(session, d):
                self._append(packet_record(REL, session.client_id, d.message.log_id,
                                           p.packet_id, self.clock()))
            else:
                self._finish_logged(session, d)
        self._send(conn, _pub_ack(0x62, p.packet_id, 0, v5))

    def _on_pubcomp(self, conn: Conn, p: Pubcomp) -> None:
        session = conn.session
        assert session is not None
        inflight = session.inflight.get(p.packet_id)
        if inflight is None or not inflight.released:
            return
        del session.inflight[p.packet_id]
        if session.persistent and self.log is not None:
            d = inflight.delivery
            if self._logs_qos2(session, d) or d.message.log_id < 0 and d.message.qos == 2:
                self._append(packet_record(CMP, session.client_id, -1, p.packet_id,
                                           self.clock()))
        self._pump(session, conn)

    # ---------------------------------------------------------------- SUBSCRIBE / UNSUBSCRIBE

    def _on_subscribe(self, conn: Conn, p: Subscribe) -> None:
        session = conn.session
        assert session is not None
        v5 = conn.version == MQTT_5
        sub_id = 0
        if v5:
            ids = p.properties.get_all(PropertyId.SUBSCRIPTION_IDENTIFIER)
            if ids:
                first = ids[0]
                assert type(first) is int, first  # the decoder checked it
                sub_id = first
        codes: list[int] = []
        retained_out: list[tuple[Message, SubOpts]] = []
        changed = False
        for sub in p.subscriptions:
            topic_filter = sub.topic_filter
            try:
                share_name, inner = parse_shared(topic_filter, self.config.max_topic_levels)
            except TopicError as exc:
                codes.append(exc.reason_code if v5 else 0x80)
                continue
            group = share_name or ""
            if share_name is not None and sub.no_local:
                self._close(conn, RC.PROTOCOL_ERROR, "no local on a shared subscription "
                                                     "(MQTT-3.8.3-4)")
                return
            try:
                validate_topic_filter(inner, self.config.max_topic_levels)
                acl = self._client_acl(session)
                if acl is not None and not acl.check_subscribe(inner):
                    self.stats.drop("subscribe_not_authorized")
                    codes.append(RC.NOT_AUTHORIZED if v5 else 0x80)
                    continue
                opts = SubOpts(sub.qos, sub.no_local, sub.retain_as_published,
                               sub.retain_handling, sub_id, group)
                existed = topic_filter in session.subscriptions
                self._index_subscription(session.client_id, topic_filter, opts)
            except TopicError as exc:
                codes.append(exc.reason_code if v5 else 0x80)
                continue
            session.subscriptions[topic_filter] = opts
            changed = True
            codes.append(sub.qos)
            if share_name is None and (sub.retain_handling == 0
                                   or (sub.retain_handling == 1 and not existed)):
                for msg in self.retained.match(inner):
                    retained_out.append((msg, opts))
        suback = codec.encode(Suback(p.packet_id, tuple(codes)), conn.version)

        def finish(live: Conn | None) -> None:
            if live is not None:
                self._send(live, suback)
            elif self.sessions.get(session.client_id) is not session:
                return  # the session ended meanwhile: nothing to deliver the retained to
            now = self.clock()
            for msg, opts in retained_out:
                if msg.expired(now):
                    continue
                if not self._may_receive(session, msg.topic):
                    continue
                self._deliver(session, Delivery(msg, min(msg.qos, opts.qos), True,
                                                (opts.sub_id,) if opts.sub_id else ()))

        self._ack_session_change(conn, session, changed, finish)

    def _ack_session_change(self, conn: Conn, session: Session, changed: bool,
                            finish: Callable[[Conn | None], None]) -> None:
        """SUBACK / UNSUBACK (`finish` sends it, then what follows it) once a persistent
        session's new subscriptions are durable: logged now, held until the record is (a
        client told its subscription exists must find it after a crash), behind the acks
        already held for this connection (acks stay in order). `finish` gets None when the
        connection is gone by then."""
        if changed and session.persistent and self.log is not None:
            offset = self._append(session_record(session, self.clock()))
            if conn.acks_pending or offset >= self._durable_end():
                conn.acks_pending += 1
                self._await_durable.append((offset, conn.id, finish, None))
                return
        elif conn.acks_pending:
            conn.acks_pending += 1
            self._await_durable.append((-1, conn.id, finish, None))
            return
        finish(conn)

    def _index_subscription(self, client_id: str, topic_filter: str, opts: SubOpts) -> None:
        self._routes.clear()
        if opts.share_group:
            group_name, inner = parse_shared(topic_filter, self.config.max_topic_levels)
            assert group_name is not None
            group = self._groups.get((inner, group_name))
            if group is None:
                group = self._groups[(inner, group_name)] = _SharedGroup()
                self._shared.add(inner, group_name, group)
            group.members[client_id] = opts
        else:
            self._trie.add(topic_filter, client_id, opts)

    def _unindex_subscription(self, client_id: str, topic_filter: str, opts: SubOpts) -> None:
        self._routes.clear()
        if opts.share_group:
            group_name, inner = parse_shared(topic_filter, self.config.max_topic_levels)
            assert group_name is not None
            groups = self._groups
            group = groups.get((inner, group_name))
            if group is not None:
                group.members.pop(client_id, None)
                if not group.members:
                    del groups[(inner, group_name)]
                    self._shared.remove(inner, group_name)
        else:
            self._trie.remove(topic_filter, client_id)

    def _on_unsubscribe(self, conn: Conn, p: Unsubscribe) -> None:
        session = conn.session
        assert session is not None
        codes: list[int] = []
        changed = False
        for topic_filter in p.topic_filters:
            opts = session.subscriptions.pop(topic_filter, None)
            if opts is None:
                codes.append(RC.NO_SUBSCRIPTION_EXISTED)
                continue
            self._unindex_subscription(session.client_id, topic_filter, opts)
            codes.append(0)
            changed = True
        v5 = conn.version == MQTT_5
        unsuback = codec.encode(Unsuback(p.packet_id, tuple(codes) if v5 else ()), conn.version)

        def finish(live: Conn | None) -> None:
            if live is not None:
                self._send(live, unsuback)

        self._ack_session_change(conn, session, changed, finish)

    # ---------------------------------------------------------------- DISCONNECT and closing

    def _on_disconnect(self, conn: Conn, p: Disconnect) -> None:
        session = conn.session
        assert session is not None
        if conn.version == MQTT_5:
            new_expiry = p.properties.get_int(PropertyId.SESSION_EXPIRY_INTERVAL, -1)
            if new_expiry >= 0:
                if session.expiry_s == 0 and new_expiry != 0:
                    self._close(conn, RC.PROTOCOL_ERROR, "session expiry set at DISCONNECT after "
                                "CONNECT said 0 (section 3.14.2.2.2)")
                    return
                was = session.persistent
                session.expiry_s = min(new_expiry, self.config.session_expiry_max)
                if self.log is not None and (was or session.persistent):
                    if session.persistent:
                        self._append(session_record(session, self.clock()))
                    else:
                        self._append(delete_record(session.client_id, self.clock()))
            if p.reason_code != RC.DISCONNECT_WITH_WILL_MESSAGE:
                conn.will = None
        else:
            conn.will = None
        conn.disconnect_sent = True  # the client said goodbye: no DISCONNECT back
        self._finish(conn)

    def _protocol_error(self, conn: Conn, reason: int, detail: str) -> None:
        self.stats.protocol_errors += 1
        if conn.state is AWAITING_CONNECT:
            if reason == RC.UNSUPPORTED_PROTOCOL_VERSION or conn.decoder.version is not None:
                version = conn.decoder.version or 4
                conn.version = version if version in (3, 4, 5) else 4
                self._refuse(conn, reason, detail)
                return
            self._finish(conn)
            return
        self._close(conn, reason, detail)

    def _close(self, conn: Conn, reason: int, detail: str) -> None:
        """Close `conn` for `reason`: MQTT 5 clients get a DISCONNECT with the reason code."""
        if conn.state is CLOSING:
            return
        if reason >= 0x80:
            self.stats.protocol_errors += reason in (RC.PROTOCOL_ERROR, RC.MALFORMED_PACKET)
        if conn.version == MQTT_5 and conn.state is CONNECTED and not conn.disconnect_sent:
            if reason not in DISCONNECT_CODES:  # e.g. 0x84 from a second, odd CONNECT
                reason = RC.PROTOCOL_ERROR
            self._send(conn, self._with_reason_string(
                lambda props: Disconnect(reason, props), conn, detail))
            conn.disconnect_sent = True
        self._finish(conn)

    @staticmethod
    def _with_reason_string(build: Callable[[Properties], Packet], conn: Conn,
                            detail: str) -> bytes:
        """An MQTT 5 packet with a Reason String if the client wants problem information and
        it fits the client's Maximum Packet Size (MQTT-3.1.2-24), else without one."""
        if conn.problem_info:
            data = codec.encode(build(Properties.of((PropertyId.REASON_STRING, detail[:200]))),
                                MQTT_5)
            if len(data) <= conn.max_packet_out:
                return data
        return codec.encode(build(NO_PROPERTIES), MQTT_5)

    def _finish(self, conn: Conn) -> None:
        conn.to(CLOSING)
        conn.close_after = True
        self._dirty[conn.id] = conn

    def _detach(self, conn: Conn, abnormal: bool) -> None:
        """The connection is gone: schedule or publish its will, detach or end its session."""
        conn.to(CLOSING)
        session = conn.session
        conn.session = None
        if session is None or session.conn_id != conn.id:
            return
        session.conn_id = None
        now = self.clock()
        session.disconnected_ms = now
        will = conn.will
        conn.will = None
        if will is not None and abnormal:
            msg = self._will_message(will, session.client_id, now)
            delay_s = min(conn.will_delay_s, session.expiry_s)
            if delay_s == 0:
                self._spread(msg)
            else:
                self._wills[session.client_id] = (now + delay_s * 1000, msg)
        if not session.persistent:
            self._end_session(session)

    def _will_message(self, will: Will, client_id: str, now: int) -> Message:
        expiry = EXPIRY_NEVER
        interval = will.properties.get_int(PropertyId.MESSAGE_EXPIRY_INTERVAL, -1)
        if interval >= 0:
            expiry = now + interval * 1000
        forwarded = Properties(tuple(i for i in will.properties.items if i[0] in _FORWARDED))
        return Message(will.topic, will.payload, will.qos, will.retain, forwarded, expiry,
                       client_id, now)

    def _end_session(self, session: Session) -> None:
        """The session is over: drop its subscriptions and queue; publish a pending will."""
        for topic_filter, opts in session.subscriptions.items():
            self._unindex_subscription(session.client_id, topic_filter, opts)
        session.subscriptions.clear()
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        if session.persistent and self.log is not None:
            self._append(delete_record(session.client_id, self.clock()))
        if self._qos2_tickets:
            for key in [k for k in self._qos2_tickets if k[0] == session.client_id]:
                del self._qos2_tickets[key]
        pending = self._wills.pop(session.client_id, None)
        if pending is not None:
            self._spread(pending[1])  # session end publishes a delayed will (MQTT-3.1.3-9)
        dropped = len(session.queue)
        if dropped:
            self.stats.drop("session_ended", dropped)
        session.queue.clear()
        session.inflight.clear()

    # ---------------------------------------------------------------- timers

    def _check_keepalives(self, now: int) -> None:
        for conn in list(self.conns.values()):
            if conn.state is CONNECTED and conn.keep_alive_ms:
                if (now - conn.last_rx) * 2 > conn.keep_alive_ms * 3:  # 1.5 x, MQTT-3.1.2-22
                    self._close(conn, RC.KEEP_ALIVE_TIMEOUT, "keep alive timeout")
            elif conn.state is AWAITING_CONNECT and now - conn.connected_ms > 30_000:
                self._finish(conn)  # no CONNECT within 30 s

    def _expire_sessions(self, now: int) -> None:
        expired = []
        for session in self.sessions.values():
            due = session.expires_at()
            if due is not None and now >= due:
                expired.append(session)
        for session in expired:
            self._end_session(session)

    def _fire_wills(self, now: int) -> None:
        due = [(cid, msg) for cid, (at, msg) in self._wills.items() if now >= at]
        for client_id, msg in due:
            del self._wills[client_id]
            self._spread(msg)
            if self.bridge is not None:
                self.bridge.mqtt_published(msg)

    def publish_external(self, topic: str, payload: bytes, qos: int,
                         props: Properties = NO_PROPERTIES, retain: bool = False) -> int:
        """Publish a message that did not come from an MQTT client (the Kafka bridge): routed,
        retained and logged like any PUBLISH; returns the number of target sessions. Raises
        TopicError for an invalid topic name."""
        validate_topic_name(topic, self.config.max_topic_levels)
        now = self.clock()
        msg = Message(topic, payload, qos, retain, props, EXPIRY_NEVER, "", now)
        self.stats.msgs_in[qos] += 1
        if self.cluster is not None:
            self.cluster.publish(msg)
            return 0
        _offset, matched = self._route(msg)
        return matched

    def _publish_sys(self, now: int) -> None:
        s = self.stats
        online = sum(1 for c in self.conns.values() if c.state is CONNECTED)
        values = {
            "$SYS/broker/version": self.config.server_name,
            "$SYS/broker/uptime": f"{int((now - self.started_ms) // 1000)} seconds",
            "$SYS/broker/clients/connected": str(online),
            "$SYS/broker/clients/total": str(len(self.sessions)),
            "$SYS/broker/messages/received": str(sum(s.msgs_in)),
            "$SYS/broker/messages/sent": str(sum(s.msgs_out)),
            "$SYS/broker/bytes/received": str(s.bytes_in),
            "$SYS/broker/bytes/sent": str(s.bytes_out),
            "$SYS/broker/subscriptions/count": str(len(self._trie) + sum(
                len(g.members) for g in self._groups.values())),
            "$SYS/broker/retained messages/count": str(len(self.retained)),
            "$SYS/broker/messages/dropped": str(sum(s.dropped.values())),
        }
        for topic, text in values.items():
            old = self.retained.get(topic)
            if old is not None and old.payload == text.encode():
                continue
            self._route(Message(topic, text.encode(), 0, True, NO_PROPERTIES, EXPIRY_NEVER, "",
                                now))

    # ---------------------------------------------------------------- output

    def _send(self, conn: Conn, data: bytes) -> None:
        conn.out.append(data)
        if conn.id not in self._dirty:
            self._dirty[conn.id] = conn

    # ================================================================== invariants

    def invariants(self) -> None:
        """Cheap structural checks (asserts, O(conns + sessions + inflight windows + held
        acks)); harnesses and the simulator call it after every input, the real node does not
        (it is not on the hot path)."""
        for conn_id, conn in self.conns.items():
            assert conn.id == conn_id, (conn.id, conn_id)
            self._conn_invariants(conn)
        for conn_id in self._dirty:
            assert conn_id in self.conns, ("output for a gone conn", conn_id)
        for client_id, session in self.sessions.items():
            assert session.client_id == client_id, (session.client_id, client_id)
            self._session_invariants(session)
        for client_id in self._wills:  # a delayed will belongs to an offline, live session
            owner = self.sessions.get(client_id)
            assert owner is not None and owner.conn_id is None, client_id
        for (_inner, _name), group in self._groups.items():
            assert group.members, "an empty shared group is removed"
            for client_id in group.members:
                assert client_id in self.sessions, ("shared member without a session", client_id)
        assert len(self._routes) <= ROUTE_CACHE_MAX and len(self._names) <= ROUTE_CACHE_MAX
        self._held_invariants()

    def _conn_invariants(self, conn: Conn) -> None:
        state = conn.state
        assert isinstance(state, ConnState), (conn.id, state)
        assert conn.acks_pending >= 0, (conn.id, conn.acks_pending)
        session = conn.session
        if state is AWAITING_CONNECT:
            assert session is None and not conn.close_after, conn.id
        elif state is CONNECTED:
            assert session is not None, conn.id
            assert self.sessions.get(session.client_id) is session, session.client_id
            assert session.conn_id == conn.id, (session.client_id, session.conn_id, conn.id)
            assert not conn.close_after, conn.id
        assert len(conn.alias_out) <= conn.alias_out_max, conn.id
        assert len(conn.alias_in) <= self.config.topic_alias_max, conn.id

    def _session_invariants(self, session: Session) -> None:
        cfg = self.config
        if session.conn_id is not None:  # attached: to a live connection that points back
            conn = self.conns.get(session.conn_id)
            assert conn is not None and conn.session is session, (session.client_id,
                                                                  session.conn_id)
        else:
            assert session.persistent, ("an offline clean session lives on", session.client_id)
        assert len(session.queue) <= cfg.max_queued, (session.client_id, len(session.queue))
        assert len(session.inflight) <= cfg.max_inflight, (session.client_id,
                                                           len(session.inflight))
        assert len(session.inbound_qos2) <= cfg.receive_maximum, session.client_id
        assert 1 <= session.next_packet_id <= 65535, session.next_packet_id
        inflight = session.inflight
        if inflight:  # packet ids are the keys (unique), all within 1..65535
            assert 1 <= min(inflight) and max(inflight) <= 65535, (session.client_id,
                                                                   sorted(inflight))
        for pid, entry in inflight.items():
            qos = entry.delivery.qos
            assert entry.packet_id == pid, (session.client_id, pid, entry.packet_id)
            assert qos == 2 or (qos == 1 and not entry.released and not entry.held), pid
            assert not (entry.released and entry.held), (session.client_id, pid)
        inbound = session.inbound_qos2
        if inbound:
            assert 1 <= min(inbound) and max(inbound) <= 65535, (session.client_id,
                                                                 sorted(inbound))

    def _held_invariants(self) -> None:
        """Acks held for durability go out in order: the logged ones wait at increasing
        offsets (but the first: a cluster's PUBREC re-queued behind its `qi` record, see
        `_pubrec_after_qi`), and no connection counts more held acks than are queued."""
        last = -1
        for i, (offset, _conn_id, _ack, _token) in enumerate(self._await_durable):
            if i:
                assert offset < 0 or offset > last, (offset, last)
                last = max(last, offset)
        held = sum(c.acks_pending for c in self.conns.values() if c.state is CONNECTED)
        assert held <= len(self._await_durable), (held, len(self._await_durable))
        last = -1
        for offset, _client_id, _pid in self._await_send:
            assert offset > last, (offset, last)
            last = offset

    # ================================================================== introspection (admin)

    def clients(self) -> list[dict[str, object]]:
        out = []
        for conn in self.conns.values():
            if conn.state is not CONNECTED or conn.session is None:
                continue
            out.append({"client_id": conn.session.client_id, "peer": conn.peer,
                        "listener": conn.listener, "protocol": conn.version,
                        "username": conn.username, "keep_alive_s": conn.keep_alive_ms // 1000,
                        "connected_ms": conn.connected_ms, "congested": conn.congested})
        out.sort(key=lambda c: str(c["client_id"]))
        return out

    def session_list(self) -> list[dict[str, object]]:
        out = []
        for session in sorted(self.sessions.values(), key=lambda s: s.client_id):
            out.append({"client_id": session.client_id, "online": session.conn_id is not None,
                        "expiry_s": session.expiry_s, "persistent": session.persistent,
                        "subscriptions": len(session.subscriptions),
                        "inflight": len(session.inflight), "queued": len(session.queue),
                        "dropped": session.dropped})
        return out

    def subscription_list(self) -> list[dict[str, object]]:
        out = []
        for session in sorted(self.sessions.values(), key=lambda s: s.client_id):
            for topic_filter, opts in sorted(session.subscriptions.items()):
                out.append({"client_id": session.client_id, "filter": topic_filter,
                            "qos": opts.qos, "no_local": opts.no_local,
                            "retain_as_published": opts.retain_as_published,
                            "retain_handling": opts.retain_handling,
                            "subscription_id": opts.sub_id, "share_group": opts.share_group})
        return out

    def topic_list(self) -> list[dict[str, object]]:
        counts: dict[str, int] = {}
        for session in self.sessions.values():
            for topic_filter in session.subscriptions:
                counts[topic_filter] = counts.get(topic_filter, 0) + 1
        return [{"filter": f, "subscribers": n} for f, n in sorted(counts.items())]

    def retained_list(self) -> list[dict[str, object]]:
        return [{"topic": m.topic, "bytes": len(m.payload), "qos": m.qos,
                 "payload_preview": m.payload[:64].decode("utf-8", "replace")}
                for m in self.retained.all()]

    def gauges(self) -> dict[str, int]:
        return {
            "connections": sum(1 for c in self.conns.values() if c.state is CONNECTED),
            "sessions": len(self.sessions),
            "subscriptions": sum(len(s.subscriptions) for s in self.sessions.values()),
            "retained": len(self.retained),
            "inflight": sum(len(s.inflight) for s in self.sessions.values()),
            "queued": sum(len(s.queue) for s in self.sessions.values()),
            "acks_awaiting_durability": len(self._await_durable),
        }


# ====================================================================== helpers


def _aggregate(matched: list[tuple[str, str, SubOpts]], sessions: dict[str, Session]) -> list:
    """One entry per client from the trie's (filter, client, opts) matches: (session, max QoS,
    any retain-as-published, subscription ids, own) where `own` is None when no subscription is
    no-local, else the aggregate over the client's other subscriptions (False if none), used
    when the client is the publisher (MQTT-3.8.3-3)."""
    by_client: dict[str, list[SubOpts]] = {}
    for _filter, client_id, opts in matched:
        by_client.setdefault(client_id, []).append(opts)
    out = []
    for client_id, subs in by_client.items():
        qos, rap, ids = _combine(subs)
        own = None
        if any(o.no_local for o in subs):
            local = [o for o in subs if not o.no_local]
            own = _combine(local) if local else False
        out.append((sessions[client_id], qos, rap, ids, own))
    return out


def _combine(subs: list[SubOpts]) -> tuple[int, bool, tuple[int, ...]]:
    return (max(o.qos for o in subs), any(o.retain_as_published for o in subs),
            tuple(o.sub_id for o in subs if o.sub_id))


# ====================================================================== fast encoders


def _varint(n: int) -> bytes:
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _publish_bytes(topic_b: bytes, payload: bytes, qos: int, retain: bool, dup: bool,
                   pid: int | None, props_b: bytes | None) -> bytes:
    """A PUBLISH packet from pre-encoded parts: `props_b` is None for 3.1/3.1.1, else the whole
    property section as `encode_properties` writes it (length prefix included)."""
    header = 0x30 | (dup << 3) | (qos << 1) | retain
    if qos:
        assert pid is not None, "a QoS 1/2 PUBLISH needs a packet id"
        pid_b = pid.to_bytes(2, "big")
    else:
        pid_b = b""
    props_b = props_b or b""
    body_len = len(topic_b) + len(pid_b) + len(props_b) + len(payload)
    return b"".join((bytes((header,)), _varint(body_len), topic_b, pid_b, props_b, payload))


def _pub_ack(first: int, pid: int, reason: int, v5: bool) -> bytes:
    if v5 and reason:
        return bytes((first, 3)) + pid.to_bytes(2, "big") + bytes((reason,))
    return bytes((first, 2)) + pid.to_bytes(2, "big")
