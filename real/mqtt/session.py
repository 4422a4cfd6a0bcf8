"""Broker state that outlives a connection: messages, subscriptions, sessions, retained messages.

Pure data structures with no I/O; `broker.py` drives them. Time is milliseconds from the broker's
injected clock.

- `Message`: one application message as the broker routes it (topic, payload, QoS, retain, the
  MQTT 5 properties that are forwarded unchanged, an absolute expiry time, the publishing client,
  and `log_id`: its offset in the broker's state log, or -1 when it was not logged).
- `Session`: one client identifier's subscriptions, outbound inflight window (packet id ->
  `Inflight`), queue of deliveries waiting for a window slot or for the client to come back, and
  the inbound QoS 2 packet ids awaiting PUBREL.
- `RetainedStore`: topic -> retained Message, with a level tree so a subscription's filter finds its
  retained messages without scanning every retained topic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from real.mqtt.auth import ClientAcl
from real.mqtt.properties import NO_PROPERTIES, Properties

if TYPE_CHECKING:
    from real.mqtt.auth import ClientAcl

EXPIRY_NEVER = -1


class Message:
    """An application message in the broker. Immutable by convention except `log_id` (set when
    the message is written to the state log, renumbered when a checkpoint rewrites it)."""

    __slots__ = ("topic", "payload", "qos", "retain", "props", "expiry_at", "origin",
                 "created_ms", "log_id", "_wire", "plain")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool, props: Properties,
                 expiry_at: int, origin: str, created_ms: int, log_id: int = -1) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.props = props  # forwarded MQTT 5 properties, without expiry/alias/subscription ids
        self.expiry_at = expiry_at  # absolute ms, or EXPIRY_NEVER
        self.origin = origin  # publishing client id ("" for the broker itself: $SYS, wills)
        self.created_ms = created_ms
        self.log_id = log_id
        self._wire: bytes | None = None  # the UTF-8 topic, encoded once (see topic_bytes)
        self.plain: bytes | None = None  # its 3.1.1 QoS 0 PUBLISH, built by the first sender

    def topic_bytes(self) -> bytes:
        wire = self._wire
        if wire is None:
            raw = self.topic.encode()
            wire = self._wire = len(raw).to_bytes(2, "big") + raw
        return wire

    def expired(self, now: int) -> bool:
        return self.expiry_at != EXPIRY_NEVER and now >= self.expiry_at

    def remaining_s(self, now: int) -> int:
        """Seconds of the Message Expiry Interval left, rounded up (MQTT-3.3.2-6)."""
        assert self.expiry_at != EXPIRY_NEVER
        return max(1, -int((now - self.expiry_at) // 1000))

    def __repr__(self) -> str:
        return (f"Message({self.topic!r}, {len(self.payload)} B, qos={self.qos}, "
                f"retain={self.retain}, log_id={self.log_id})")


@dataclass(frozen=True, slots=True)
class SubOpts:
    """One subscription of a session: the granted QoS and the MQTT 5 options."""

    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    sub_id: int = 0  # 0: no Subscription Identifier
    share_group: str = ""  # "" for a non-shared subscription


@dataclass(slots=True)
class Delivery:
    """A message on its way to one session: QoS granted for this delivery, the retain flag to
    send, and the Subscription Identifiers that matched."""

    message: Message
    qos: int
    retain: bool
    sub_ids: tuple[int, ...] = ()


class Inflight:
    """An outbound QoS 1/2 PUBLISH sent (or to be re-sent) under `packet_id`. `released` is True
    once the client's PUBREC arrived: only PUBREL (not the PUBLISH) is re-sent from then on.
    `held` is True while a logged QoS 2 PUBLISH waits for its packet id to be durable (see
    Broker._start_inflight)."""

    __slots__ = ("delivery", "packet_id", "released", "held")

    def __init__(self, delivery: Delivery, packet_id: int, released: bool = False) -> None:
        self.delivery = delivery
        self.packet_id = packet_id
        self.released = released
        self.held = False


class Session:
    """The state of one client identifier (MQTT 5 section 4.1)."""

    def __init__(self, client_id: str, expiry_s: int, version: int, created_ms: int) -> None:
        self.client_id = client_id
        self.expiry_s = expiry_s  # 0: ends with the connection; 0xFFFFFFFF: never expires
        self.version = version
        self.created_ms = created_ms
        self.subscriptions: dict[str, SubOpts] = {}  # full filter ("$share/g/f" kept whole)
        self.inflight: dict[int, Inflight] = {}  # packet id -> outbound QoS 1/2, in send order
        self.queue: deque[Delivery] = deque()
        self.resend: deque[int] = deque()  # packet ids a resumed connection still owes
        self.inbound_qos2: set[int] = set()  # packet ids received at QoS 2, awaiting PUBREL
        self.next_packet_id = 1
        self.conn_id: int | None = None  # the connection attached, if any
        self.disconnected_ms = created_ms  # when the last connection ended (for expiry)
        self.dropped = 0  # deliveries dropped by the queue limit or expiry
        self.username: str | None = None  # the authenticated user (None: anonymous)
        self.acl: ClientAcl | None = None  # the broker's ACL bound to (username, client id)

    @property
    def persistent(self) -> bool:
        return self.expiry_s > 0

    def allocate_packet_id(self) -> int:
        """The next packet id not in the inflight window (1..65535, round robin)."""
        pid, self.next_packet_id = next_packet_id(self.inflight, self.next_packet_id)
        return pid

    def expires_at(self) -> int | None:
        """When an offline session ends (ms), or None if it never does / is online."""
        if self.conn_id is not None or self.expiry_s == 0xFFFFFFFF:
            return None
        return self.disconnected_ms + self.expiry_s * 1000

    def __repr__(self) -> str:
        return (f"Session({self.client_id!r}, expiry={self.expiry_s}, "
                f"subs={len(self.subscriptions)}, inflight={len(self.inflight)}, "
                f"queued={len(self.queue)})")


class PacketIdsInUse(Protocol):
    """What `next_packet_id` needs of the ids in use (a dict keyed by id, a set)."""

    def __len__(self) -> int: ...

    def __contains__(self, pid: object, /) -> bool: ...


def next_packet_id(in_use: PacketIdsInUse, start: int) -> tuple[int, int]:
    """(a packet id not in `in_use`, the id to start from next time): round robin over
    1..65535 from `start`. `in_use` must hold fewer than 65535 ids."""
    assert len(in_use) < 65535
    pid = start
    while pid in in_use:
        pid = pid % 65535 + 1
    return pid, pid % 65535 + 1


class _RetainedNode:
    __slots__ = ("children", "message")

    def __init__(self) -> None:
        self.children: dict[str, _RetainedNode] = {}
        self.message: Message | None = None


class RetainedStore:
    """Retained messages by topic name, in a level tree for filter lookups."""

    def __init__(self) -> None:
        self._root = _RetainedNode()
        self._count = 0
        self.bytes = 0

    def __len__(self) -> int:
        return self._count

    def get(self, topic: str) -> Message | None:
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                return None
            node = child
        return node.message

    def set(self, message: Message) -> None:
        """Retain `message` for its topic; an empty payload deletes the topic's retained message
        (MQTT-3.3.1-6/7)."""
        levels = message.topic.split("/")
        if not message.payload:
            self._delete(levels)
            return
        node = self._root
        for level in levels:
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _RetainedNode()
            node = child
        if node.message is None:
            self._count += 1
        else:
            self.bytes -= len(node.message.payload)
        node.message = message
        self.bytes += len(message.payload)

    def _delete(self, levels: list[str]) -> None:
        path: list[tuple[_RetainedNode, str]] = []
        node = self._root
        for level in levels:
            child = node.children.get(level)
            if child is None:
                return
            path.append((node, level))
            node = child
        if node.message is None:
            return
        self._count -= 1
        self.bytes -= len(node.message.payload)
        node.message = None
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.message is not None or child.children:
                break
            del parent.children[level]

    def match(self, topic_filter: str) -> list[Message]:
        """Retained messages whose topic `topic_filter` matches, sorted by topic (deterministic).
        Wildcards at the first level do not match `$` topics (MQTT-4.7.2-1)."""
        levels = topic_filter.split("/")
        out: list[Message] = []
        stack: list[tuple[_RetainedNode, int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            if depth == len(levels):
                if node.message is not None:
                    out.append(node.message)
                continue
            level = levels[depth]
            if level == "#":
                self._collect(node, out, skip_dollar=depth == 0)
                continue
            if level == "+":
                for name, child in node.children.items():
                    if depth == 0 and name.startswith("$"):
                        continue
                    stack.append((child, depth + 1))
                continue
            found = node.children.get(level)
            if found is not None:
                stack.append((found, depth + 1))
        out.sort(key=lambda m: m.topic)
        return out

    @staticmethod
    def _collect(node: _RetainedNode, out: list[Message], skip_dollar: bool) -> None:
        # '#' matches the parent level too ("a/#" matches "a")
        if node.message is not None and not skip_dollar:
            out.append(node.message)
        stack = [(name, child) for name, child in node.children.items()
                 if not (skip_dollar and name.startswith("$"))]
        while stack:
            _, child = stack.pop()
            if child.message is not None:
                out.append(child.message)
            stack.extend(child.children.items())

    def all(self) -> list[Message]:
        out: list[Message] = []
        self._collect(self._root, out, skip_dollar=False)
        out.sort(key=lambda m: m.topic)
        return out


NO_PROPS = NO_PROPERTIES
