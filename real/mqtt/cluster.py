"""`ClusterLog`: MQTT across a cluster through one replicated log, sans-I/O.

Every message an MQTT client publishes on any node goes through the internal Kafka topic
`__mqtt` (`TOPIC`), replicated on every node of the cluster (replication factor = the node
count, `min.insync.replicas` a majority):

- **Writing.** A message goes to partition crc32c(topic) mod `partitions`, so one MQTT topic
  lives in one partition. Its leader stores it: this node if it leads the partition, else the
  node forwards it (`LogAppend`, answered by `LogAppendReply`). Each node writes to each
  partition one batch at a time, the next once the previous is committed, as an idempotent Kafka
  producer (a producer id per node life, a sequence per partition): a batch re-sent after a lost
  reply or a leader change is stored once, in place. So a publisher's messages to one topic are
  stored in the order it sent them.
- **Acknowledging.** A QoS 1/2 PUBLISH is acknowledged (PUBACK / PUBREC) once its record is
  committed: below the partition's high watermark, on every in-sync replica, with at least
  `min.insync.replicas` of them. A cluster of three keeps every acknowledged message through the
  loss of any one node.
- **Delivering.** Every node reads the committed records of every partition from its own replica
  (a follower learns the high watermark from its fetch replies) and routes them to its own
  subscribers, in offset order. Nothing is delivered at publish time, on the publisher's node
  either: every subscriber sees a message the same way, only once it is committed, and retained
  messages change in the same order on every node.

The `ClusterLog` is driven by its node (`NodeCore`): `publish` from the MQTT broker, `receive`
for the two peer messages, `pump` after every input, `next_deadline_ms` for its timers. Time
comes from `clock()` (monotonic ms), messages leave through `send(msg)`.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from real.kafka import errors as kafka_errors
from real.kafka.records import KRecord, RecordsError, build_batch, decode_batch, split_batches
from real.mqtt.claims import Place, Release, decode_release, is_control
from real.mqtt.properties import Properties, PropertyId, PropertyValue
from real.mqtt.session import EXPIRY_NEVER, Message
from real.server.peermsg import AppendError, LogAppend, LogAppendReply
from real.storage.crc32c import crc32c

TOPIC = "__mqtt"
"""The internal Kafka topic that carries every MQTT message of a cluster."""
MQTT_CLUSTER_BUGS = ("mqtt-ack-on-append", "mqtt-forget-position", "mqtt-no-idempotence",
                     "mqtt-claim-no-wait", "mqtt-handover-no-gap")
"""Test-only deviations (grep the name), for the simulator's bug hunt:
- `mqtt-ack-on-append`: the leader answers a write once it stored it, not once it is committed
  (a PUBACK before replication: the leader's loss loses it);
- `mqtt-forget-position`: a restarted node ignores how far its state log says it routed and
  resumes at its replica's end (what it had stored but not routed is never queued);
- `mqtt-no-idempotence`: writes carry no producer id, so a batch re-sent after a leader change
  or a lost reply is stored twice (RobustMQ's plain forwarded write);
- `mqtt-claim-no-wait`: a claimant answers CONNACK once meta applied its claim, without
  waiting for the previous owner's release (a take-over that does not fence the old node: both
  serve the client id until the old node applies the claim, and the session it hands over
  comes too late);
- `mqtt-handover-no-gap`: a claimant installs a handed-over session without the old node's
  positions (it neither reads again what it routed past them nor skips what lies before
  them: messages published during the move are lost or repeated)."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    partitions: int = 3
    """Partitions of `__mqtt` (fixed when the first node creates it)."""
    replication: int = 3
    """Replicas of each partition: the node count, so every node holds every message."""
    request_timeout_ms: int = 2_000
    """A forwarded batch unanswered this long is sent again (to the leader meta names then)."""
    retry_ms: int = 50
    """Pause before re-sending a batch the leader refused (no leader yet, too few in sync)."""
    batch_bytes_max: int = 1 << 20
    """A node's batch to one partition carries at most this many payload bytes (one message
    at least)."""
    read_bytes_max: int = 1 << 20
    """Delivery reads at most this much of a partition per step."""
    claim_wait_ms: int = 5_000
    """How long a CONNECT waits for another node to hand over the client id's session before
    it goes on without it (real/mqtt/claims.py); at least twice the controller's session
    timeout."""
    queue_bytes_max: int = 16 << 20
    """Messages waiting to be written, all partitions: past it, new QoS 0 messages are dropped
    (counted, as a broker drops QoS 0 it cannot forward); QoS 1/2 are bounded by each client's
    Receive Maximum instead."""
    bugs: tuple[str, ...] = ()
    """Planted bugs (`MQTT_CLUSTER_BUGS`), for the simulator's bug hunt only."""

    def __post_init__(self) -> None:
        for bug in self.bugs:
            if bug not in MQTT_CLUSTER_BUGS:
                raise ValueError(f"unknown MQTT cluster bug {bug!r} (expected one of "
                                 f"{', '.join(MQTT_CLUSTER_BUGS)})")
        for name in ("partitions", "replication", "request_timeout_ms", "retry_ms", "claim_wait_ms",
                     "batch_bytes_max", "read_bytes_max", "queue_bytes_max"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"mqtt cluster {name} must be an int >= 1, got {value!r}")


class Ticket:
    """One publish's progress: `done` once its record is committed."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


class LogHost(Protocol):
    """What the cluster log uses of its node: the Kafka broker (partition logs, producer ids,
    topic metadata) and the replicator (leadership, high watermarks)."""

    def partition_count(self) -> int: ...

    def leadership(self, partition: int) -> tuple[int, int]:
        """(leader, leader epoch) of `partition` as meta has it; leader 0: none."""
        ...

    def replica_log(self, partition: int) -> Any: ...

    def leads(self, partition: int) -> bool: ...

    def commit_state(self, partition: int) -> tuple[int, int] | None: ...

    def committed_end(self, partition: int) -> int | None: ...

    def min_insync(self) -> int: ...


    def appended(self, partition: int) -> None: ...

    def allocate_producer_id(self, give: Callable[[int], None]) -> None: ...


class Router(Protocol):
    """What the cluster log uses of the MQTT broker."""

    cluster_positions: dict[int, tuple[int, int]]
    """What the state log says this node routed before a restart (partition -> (shard offset,
    index of the first message not routed in that batch))."""

    def route_committed(self, msg: Message, partition: int, offset: int, index: int) -> None: ...

    def anchor_cluster_position(self, partition: int, offset: int) -> None: ...

    def durable_progress(self) -> None: ...

    def release_committed(self, release: Release, partition: int, offset: int,
                          index: int) -> None:
        """A session hand-over (real/mqtt/claims.py) is committed at message `index` of the
        batch at shard `offset` of `partition`."""
        ...


@dataclass(slots=True)
class _Batch:
    seq: int
    """The request number it was last sent under."""
    base_sequence: int
    data: bytes
    tickets: list[Ticket]
    dst: int = 0
    epoch: int = 0
    """The leader epoch of `dst`'s leadership it was sent in."""
    sent_ms: int = 0
    retry_at: int = 0
    waiting: bool = False
    """Sent and unanswered."""


@dataclass(slots=True)
class _Writer:
    """This node's writes to one partition: what waits, and the one batch in flight."""

    queue: deque[tuple[KRecord, Ticket]] = field(default_factory=deque)
    queued_bytes: int = 0
    inflight: _Batch | None = None
    next_sequence: int = 0


@dataclass(slots=True)
class _Held:
    """A batch this node stored as leader, answered once committed."""

    src: int
    seq: int
    partition: int
    end: int


@dataclass(slots=True)
class ClusterStats:
    published: int = 0
    batches_sent: int = 0
    batches_forwarded: int = 0
    batches_resent: int = 0
    batches_lost_with_peer: int = 0
    """Batches sent to a node that then refused a connection: sent again without waiting."""
    batches_stored: int = 0
    batches_duplicate: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    undecodable: int = 0
    releases: int = 0
    """Session hand-overs written (real/mqtt/claims.py)."""
    dropped_qos0: int = 0
    """QoS 0 messages dropped because `queue_bytes_max` was reached."""


_HEAD = struct.Struct(">BBq")
_LEN = struct.Struct(">H")
_FORMAT = 1
_RETAIN, _EXPIRES = 0x04, 0x08
_TAGS = {PropertyId.CONTENT_TYPE: 1, PropertyId.RESPONSE_TOPIC: 2,
         PropertyId.CORRELATION_DATA: 3, PropertyId.PAYLOAD_FORMAT_INDICATOR: 4}
_PROPS = {tag: pid for pid, tag in _TAGS.items()}


def encode_message(msg: Message) -> KRecord:
    """`msg` as a Kafka record. The key is binary: format:u8 (1) | flags:u8 (QoS in bits 0-1,
    retain 0x04, expires 0x08) | expiry_at:i64 (ms, 0 if none) | topic | origin (each
    len:u16 + UTF-8) | then tag:u8 + len:u16 + bytes for each of content type (1), response
    topic (2), correlation data (3) and payload format indicator (4) present. The value is the
    payload, the headers the User Properties in order, the timestamp when the broker took it."""
    flags = msg.qos | (_RETAIN if msg.retain else 0)
    expires = msg.expiry_at != EXPIRY_NEVER
    if expires:
        flags |= _EXPIRES
    topic, origin = msg.topic.encode(), msg.origin.encode()
    parts = [_HEAD.pack(_FORMAT, flags, msg.expiry_at if expires else 0),
             _LEN.pack(len(topic)), topic, _LEN.pack(len(origin)), origin]
    headers: list[tuple[str, bytes | None]] = []
    for pid, value in msg.props.items:
        if pid == PropertyId.USER_PROPERTY:
            assert isinstance(value, tuple), value
            headers.append((value[0], value[1].encode()))
            continue
        tag = _TAGS.get(pid)
        if tag is None:
            continue
        if isinstance(value, str):
            raw = value.encode()
        elif isinstance(value, bytes):
            raw = value
        else:
            raw = bytes([int(value)])  # type: ignore[arg-type]
        parts += [bytes([tag]), _LEN.pack(len(raw)), raw]
    return KRecord(-1, max(0, int(msg.created_ms)), b"".join(parts), bytes(msg.payload),
                   tuple(headers))


def decode_message(krec: KRecord) -> Message:
    """The message `encode_message` stored; ValueError if the record is not one."""
    key = krec.key or b""
    try:
        version, flags, expiry_at = _HEAD.unpack_from(key, 0)
        if version != _FORMAT or flags & 0xF0 or flags & 0x03 == 3:
            raise ValueError(f"format {version}, flags {flags:#x}")
        pos = _HEAD.size
        (n,) = _LEN.unpack_from(key, pos)
        topic = key[pos + 2:pos + 2 + n].decode()
        pos += 2 + n
        (n,) = _LEN.unpack_from(key, pos)
        origin = key[pos + 2:pos + 2 + n].decode()
        pos += 2 + n
        props: list[tuple[PropertyId, PropertyValue]] = []
        while pos < len(key):
            tag = key[pos]
            (n,) = _LEN.unpack_from(key, pos + 1)
            raw = key[pos + 3:pos + 3 + n]
            pos += 3 + n
            pid = _PROPS.get(tag)
            if pid is None or len(raw) != n:
                raise ValueError(f"property tag {tag} of {n} bytes")
            if pid == PropertyId.CORRELATION_DATA:
                props.append((pid, bytes(raw)))
            elif pid == PropertyId.PAYLOAD_FORMAT_INDICATOR:
                props.append((pid, raw[0] if raw else 0))
            else:
                props.append((pid, raw.decode()))
        if pos != len(key) or not topic:
            raise ValueError("truncated key")
        for name, value in krec.headers:
            props.append((PropertyId.USER_PROPERTY, (name, (value or b"").decode())))
    except (struct.error, UnicodeDecodeError, IndexError, ValueError) as exc:
        raise ValueError(f"not an MQTT message record: {exc}") from None
    return Message(topic, krec.value or b"", flags & 0x03, bool(flags & _RETAIN),
                   Properties(tuple(props)), expiry_at if flags & _EXPIRES else EXPIRY_NEVER,
                   origin, krec.timestamp_ms)


class ClusterLog:
    def __init__(self, node_id: int, config: ClusterConfig, host: LogHost, router: Router,
                 clock: Callable[[], int], send: Callable[[Any], None],
                 log: Callable[[str], None] = lambda _line: None) -> None:
        self.node_id = node_id
        self.config = config
        self.host = host
        self.router = router
        self.clock = clock
        self.send = send
        self.log = log
        self.stats = ClusterStats()
        self.producer_id = -1
        self._asking_pid = False
        self._pid_retry_at = 0
        self._writers: dict[int, _Writer] = {}
        self._queued_bytes = 0
        self._seq = 0
        self._held: list[_Held] = []
        recovered = ({} if "mqtt-forget-position" in config.bugs
                     else dict(router.cluster_positions))
        self._read_at: dict[int, int] = {p: o for p, (o, _i) in recovered.items()}
        """Per partition: the shard offset up to which this node has routed committed records
        (from the state log after a restart, else the replica's end when first seen)."""
        self._skip: dict[int, int] = {p: i for p, (_o, i) in recovered.items() if i}
        """Per partition: messages of the batch at `_read_at` already routed (after a restart)."""
        self._anchored: set[int] = set(self._read_at)
        """Partitions whose position is a routed (so committed) place, never past what the
        replica will hold: the others start at the replica's end, which may be an uncommitted
        tail a new leader cuts."""
        self._finished = False

    # ---- writing -------------------------------------------------------------------------------

    def partition_of(self, topic: str) -> int:
        return crc32c(topic.encode()) % self.host.partition_count()

    def publish(self, msg: Message) -> Ticket:
        """Write `msg` to the cluster; the ticket is done once it is committed (then, and not
        before, every node routes it to its subscribers)."""
        if msg.qos == 0 and self._queued_bytes >= self.config.queue_bytes_max:
            self.stats.dropped_qos0 += 1
            ticket = Ticket()
            ticket.done = True  # (nobody waits on a QoS 0 message)
            return ticket
        self.stats.published += 1
        return self._write(self.partition_of(msg.topic), encode_message(msg))

    def release(self, client: str, record: KRecord) -> Ticket:
        """Write a hand-over of `client`'s session (`claims.release_record`) to the partition
        of the client id; the ticket is done once it is committed."""
        self.stats.releases += 1
        return self._write(self.partition_of(client), record)

    def _write(self, partition: int, record: KRecord) -> Ticket:
        ticket = Ticket()
        writer = self._writers.get(partition)
        if writer is None:
            writer = self._writers[partition] = _Writer()
        writer.queue.append((record, ticket))
        size = len(record.value or b"") + len(record.key or b"")
        writer.queued_bytes += size
        self._queued_bytes += size
        return ticket

    def _start(self, partition: int, writer: _Writer, now: int) -> None:
        """Send the next batch of `partition` (nothing is in flight)."""
        records: list[KRecord] = []
        tickets: list[Ticket] = []
        size = 0
        while writer.queue and (not records or size < self.config.batch_bytes_max):
            record, ticket = writer.queue.popleft()
            grown = len(record.value or b"") + len(record.key or b"")
            writer.queued_bytes -= grown
            self._queued_bytes -= grown
            size += grown
            records.append(record)
            tickets.append(ticket)
        if "mqtt-no-idempotence" in self.config.bugs:
            data = build_batch(records)
        else:
            data = build_batch(records, producer_id=self.producer_id, producer_epoch=0,
                               base_sequence=writer.next_sequence)
        batch = _Batch(0, writer.next_sequence, data, tickets)
        writer.next_sequence = (writer.next_sequence + len(records)) % (1 << 31)
        writer.inflight = batch
        self._send_batch(partition, batch, now)

    def _send_batch(self, partition: int, batch: _Batch, now: int) -> None:
        leader, epoch = self.host.leadership(partition)
        if leader == 0:
            batch.waiting, batch.retry_at = False, now + self.config.retry_ms
            return
        self._seq += 1
        batch.seq, batch.dst, batch.sent_ms, batch.waiting = self._seq, leader, now, True
        batch.epoch = epoch
        self.stats.batches_sent += 1
        if leader == self.node_id:
            self._store(self.node_id, batch.seq, partition, batch.data)
        else:
            self.stats.batches_forwarded += 1
            self.send(LogAppend(self.node_id, leader, partition, batch.seq, batch.data))

    def _answered(self, partition: int, seq: int, error: int, detail: str) -> None:
        writer = self._writers.get(partition)
        batch = writer.inflight if writer is not None else None
        if batch is None or batch.seq != seq or not batch.waiting:
            return  # an answer to an earlier sending of the batch
        batch.waiting = False
        if error == AppendError.NONE:
            assert writer is not None
            writer.inflight = None
            for ticket in batch.tickets:
                ticket.done = True
            self._finished = True
            return
        name = {AppendError.NOT_LEADER: "not_leader",
                AppendError.NOT_ENOUGH_REPLICAS: "not_enough_replicas"}.get(error, "refused")
        self.stats.refusals[name] = self.stats.refusals.get(name, 0) + 1
        if error == AppendError.REFUSED:
            self.log(f"mqtt cluster: partition {partition} refused a batch: {detail}")
        batch.retry_at = self.clock() + self.config.retry_ms

    # ---- storing (as a partition's leader) -----------------------------------------------------

    def _store(self, src: int, seq: int, partition: int, data: bytes) -> None:
        host = self.host
        if not host.leads(partition):
            self._reply(src, partition, seq, AppendError.NOT_LEADER, "")
            return
        state = host.commit_state(partition)
        if state is None:
            self._reply(src, partition, seq, AppendError.NOT_LEADER, "")
            return
        if state[1] < host.min_insync():
            self._reply(src, partition, seq, AppendError.NOT_ENOUGH_REPLICAS,
                        f"in-sync replicas {state[1]} < {host.min_insync()}")
            return
        try:
            infos = split_batches(data)
        except RecordsError as exc:
            self._reply(src, partition, seq, AppendError.REFUSED, exc.message)
            return
        log = host.replica_log(partition)
        result = log.append(data, infos, self.clock())
        if result.error_code != kafka_errors.NONE:
            self._reply(src, partition, seq, AppendError.REFUSED,
                        f"error {result.error_code}: {result.error_message}")
            return
        if result.duplicate:
            self.stats.batches_duplicate += 1
        else:
            self.stats.batches_stored += 1
            host.appended(partition)
        if "mqtt-ack-on-append" in self.config.bugs:
            self._reply(src, partition, seq, AppendError.NONE, "")
            return
        self._held.append(_Held(src, seq, partition, result.shard_end))

    def _reply(self, dst: int, partition: int, seq: int, error: int, detail: str) -> None:
        if dst == self.node_id:
            self._answered(partition, seq, error, detail)
        else:
            self.send(LogAppendReply(self.node_id, dst, partition, seq, error, detail))

    def _release_held(self) -> None:
        if not self._held:
            return
        keep: list[_Held] = []
        for held in self._held:
            state = self.host.commit_state(held.partition)
            if state is None:
                self._reply(held.src, held.partition, held.seq, AppendError.NOT_LEADER, "")
            elif state[0] >= held.end:
                self._reply(held.src, held.partition, held.seq, AppendError.NONE, "")
            else:
                keep.append(held)
        self._held = keep

    # ---- inputs --------------------------------------------------------------------------------

    def receive(self, msg: LogAppend | LogAppendReply) -> None:
        if isinstance(msg, LogAppend):
            self._store(msg.src, msg.seq, msg.partition, msg.batch)
        else:
            self._answered(msg.partition, msg.seq, msg.error, msg.detail)

    def _leader_replaced(self, partition: int, batch: _Batch) -> bool:
        """Whether the leadership `batch` was sent to is over: another node leads, or the same
        one in a later epoch (it lost the partition and won it back: the request may have
        died with its old process; comparing ids alone waited out the request timeout)."""
        leader, epoch = self.host.leadership(partition)
        return leader != 0 and (leader, epoch) != (batch.dst, batch.epoch)

    def peer_gone(self, node_id: int) -> None:
        """Node `node_id` refused a connection (its process is gone): a batch sent to it is lost
        with it, so send it again after `retry_ms` (to the leader meta names then) instead of
        waiting out the request timeout. Sending twice is harmless: the leader stores a
        batch once (producer id and sequence)."""
        now = self.clock()
        for writer in self._writers.values():
            batch = writer.inflight
            if batch is not None and batch.waiting and batch.dst == node_id:
                batch.waiting, batch.retry_at = False, now + self.config.retry_ms
                self.stats.batches_lost_with_peer += 1

    def pump(self) -> None:
        """After every input: answer committed batches, send what waits, deliver what is
        committed, release the publishers' acknowledgements."""
        now = self.clock()
        self._release_held()
        if self.producer_id < 0:
            self._ask_producer_id()
        else:
            for partition in sorted(self._writers):
                writer = self._writers[partition]
                batch = writer.inflight
                if batch is None:
                    if writer.queue:
                        self._start(partition, writer, now)
                elif not batch.waiting:
                    if now >= batch.retry_at:
                        self.stats.batches_resent += 1
                        self._send_batch(partition, batch, now)
                elif (now - batch.sent_ms >= self.config.request_timeout_ms
                      or self._leader_replaced(partition, batch)):
                    self.stats.batches_resent += 1
                    self._send_batch(partition, batch, now)
            self._release_held()  # what this node just stored as the only in-sync replica
        self._deliver()
        if self._finished:
            self._finished = False
            self.router.durable_progress()

    def _ask_producer_id(self) -> None:
        """Producer ids come from meta (the Kafka broker's blocks), so none repeats across
        restarts: a repeat would meet an earlier life's sequence state in the logs."""
        if self._asking_pid or self.clock() < self._pid_retry_at:
            return
        self._asking_pid = True

        def give(pid: int) -> None:
            self._asking_pid = False
            if pid >= 0:
                self.producer_id = pid
                self.log(f"mqtt cluster: node {self.node_id} writes as producer {pid}")
            else:  # meta could not take the reservation yet
                self._pid_retry_at = self.clock() + self.config.retry_ms

        self.host.allocate_producer_id(give)

    def _deliver(self) -> None:
        host = self.host
        for partition in range(host.partition_count()):
            committed = host.committed_end(partition)
            if committed is None:
                continue
            log = host.replica_log(partition)
            at = self._read_at.get(partition)
            if at is None:  # first sight, nothing in the state log: what the replica held
                at = log.shard_end  # is history
                self.router.anchor_cluster_position(partition, at)
            if partition not in self._anchored:
                at = min(at, log.shard_end)  # an uncommitted tail it held was cut since
            budget = self.config.read_bytes_max
            while at < committed and budget > 0:
                records = log.read_shard(at, budget)
                if not records:
                    break
                for rec in records:
                    if rec.offset >= committed:
                        break
                    budget -= len(rec.payload)
                    self._route_batch(partition, rec.offset, rec.payload,
                                      self._skip.pop(partition, 0))
                    at = rec.offset + 1
                    self._anchored.add(partition)
            self._read_at[partition] = at

    def _route_batch(self, partition: int, offset: int, data: bytes, skip: int) -> None:
        try:
            krecs = decode_batch(data)
        except RecordsError:
            self.stats.undecodable += 1
            return
        for index, krec in enumerate(krecs):
            if index < skip:
                continue  # routed before a restart (the state log says so)
            if is_control(krec):
                try:
                    release = decode_release(krec)
                except ValueError:
                    self.stats.undecodable += 1
                    continue
                self.router.release_committed(release, partition, offset, index)
                continue
            try:
                msg = decode_message(krec)
            except ValueError:
                self.stats.undecodable += 1
                continue
            self.stats.delivered += 1
            self.router.route_committed(msg, partition, offset, index)

    def read_messages(self, partition: int, start: Place, end: Place
                      ) -> list[tuple[Message, int, int]]:
        """The messages of `partition` from place `start` up to place `end` (not included), as
        (message, batch offset, index), read from this node's replica (committed places)."""
        log = self.host.replica_log(partition)
        out: list[tuple[Message, int, int]] = []
        at = start[0]
        while at <= end[0]:
            records = log.read_shard(at, self.config.read_bytes_max)
            if not records:
                break
            for rec in records:
                if rec.offset > end[0]:
                    return out
                try:
                    krecs = decode_batch(rec.payload)
                except RecordsError:
                    continue
                for index, krec in enumerate(krecs):
                    place = (rec.offset, index)
                    if place < start or place >= end or is_control(krec):
                        continue
                    try:
                        out.append((decode_message(krec), rec.offset, index))
                    except ValueError:
                        continue
                at = rec.offset + 1
        return out

    def positions(self) -> dict[int, tuple[int, int]]:
        """Partition -> (shard offset, index) of the first message not routed yet (what a
        checkpoint of the state log records)."""
        return {p: (at, self._skip.get(p, 0)) for p, at in sorted(self._read_at.items())}

    def next_deadline_ms(self) -> int | None:
        due: int | None = None
        if self.producer_id < 0 and not self._asking_pid and self._writers:
            due = self._pid_retry_at
        for writer in self._writers.values():
            batch = writer.inflight
            if batch is None:
                continue
            at = batch.sent_ms + self.config.request_timeout_ms if batch.waiting \
                else batch.retry_at
            due = at if due is None else min(due, at)
        return due

    def pending(self) -> int:
        """Messages written and not yet committed."""
        return sum(len(w.queue) + (len(w.inflight.tickets) if w.inflight else 0)
                   for w in self._writers.values())

    def view(self) -> dict[str, Any]:
        s = self.stats
        return {"producer_id": self.producer_id, "pending": self.pending(),
                "held": len(self._held), "published": s.published,
                "batches_sent": s.batches_sent, "batches_forwarded": s.batches_forwarded,
                "batches_resent": s.batches_resent,
                "batches_lost_with_peer": s.batches_lost_with_peer,
                "batches_stored": s.batches_stored,
                "batches_duplicate": s.batches_duplicate, "refusals": dict(s.refusals),
                "delivered": s.delivered, "undecodable": s.undecodable,
                "dropped_qos0": s.dropped_qos0, "releases": s.releases,
                "queued_bytes": self._queued_bytes,
                "read_at": {str(p): at for p, at in sorted(self._read_at.items())}}

