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
from real.mqtt.persist import message_from_record, publish_record
from real.mqtt.session import Message
from real.server.peermsg import AppendError, LogAppend, LogAppendReply
from real.storage.crc32c import crc32c
from real.storage.record import Record

TOPIC = "__mqtt"
"""The internal Kafka topic that carries every MQTT message of a cluster."""
MQTT_CLUSTER_BUGS = ("mqtt-ack-on-append", "mqtt-forget-position", "mqtt-no-idempotence")
"""Test-only deviations (grep the name), for the simulator's bug hunt:
- `mqtt-ack-on-append`: the leader answers a write once it stored it, not once it is committed
  (a PUBACK before replication: the leader's loss loses it);
- `mqtt-forget-position`: a restarted node ignores how far its state log says it routed and
  resumes at its replica's end (what it had stored but not routed is never queued);
- `mqtt-no-idempotence`: writes carry no producer id, so a batch re-sent after a leader change
  or a lost reply is stored twice (RobustMQ's plain forwarded write)."""


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
    bugs: tuple[str, ...] = ()
    """Planted bugs (`MQTT_CLUSTER_BUGS`), for the simulator's bug hunt only."""

    def __post_init__(self) -> None:
        for bug in self.bugs:
            if bug not in MQTT_CLUSTER_BUGS:
                raise ValueError(f"unknown MQTT cluster bug {bug!r} (expected one of "
                                 f"{', '.join(MQTT_CLUSTER_BUGS)})")
        for name in ("partitions", "replication", "request_timeout_ms", "retry_ms",
                     "batch_bytes_max", "read_bytes_max"):
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

    def leader(self, partition: int) -> int: ...

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


@dataclass(slots=True)
class _Batch:
    seq: int
    """The request number it was last sent under."""
    base_sequence: int
    data: bytes
    tickets: list[Ticket]
    dst: int = 0
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
    batches_stored: int = 0
    batches_duplicate: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    undecodable: int = 0


_META = struct.Struct(">HI")


def encode_message(msg: Message) -> KRecord:
    """`msg` as a Kafka record: the key holds the state log's `pub` fields (topic, QoS, retain,
    expiry, origin, content type, ...), the value the payload, the headers the User Properties
    in order, the timestamp the time the broker took it."""
    rec = publish_record(msg, (), msg.created_ms, msg.retain)
    parts = []
    for name, value in rec.meta:
        raw_name, raw_value = name.encode(), value.encode()
        parts.append(_META.pack(len(raw_name), len(raw_value)))
        parts.append(raw_name)
        parts.append(raw_value)
    return KRecord(-1, max(0, int(msg.created_ms)), b"".join(parts), bytes(msg.payload),
                   tuple((name, value) for name, value in rec.headers))


def decode_message(krec: KRecord) -> Message:
    """The message `encode_message` stored; ValueError if the record is not one."""
    key = krec.key or b""
    meta: list[tuple[str, str]] = []
    pos = 0
    try:
        while pos < len(key):
            name_len, value_len = _META.unpack_from(key, pos)
            pos += _META.size
            name = key[pos:pos + name_len].decode()
            pos += name_len
            value = key[pos:pos + value_len].decode()
            pos += value_len
            meta.append((name, value))
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"not an MQTT message record: {exc}") from None
    if pos != len(key):
        raise ValueError("not an MQTT message record: truncated key")
    headers = tuple((name, value or b"") for name, value in krec.headers)
    rec = Record(-1, krec.timestamp_ms, b"pub", krec.value or b"", headers=headers,
                 meta=tuple(meta))
    try:
        msg = message_from_record(rec)
    except Exception as exc:  # noqa: BLE001 - CorruptState and friends: one bad record
        raise ValueError(f"not an MQTT message record: {exc}") from None
    msg.log_id = -1
    return msg


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
        ticket = Ticket()
        record = encode_message(msg)
        writer = self._writers.get(partition := self.partition_of(msg.topic))
        if writer is None:
            writer = self._writers[partition] = _Writer()
        writer.queue.append((record, ticket))
        writer.queued_bytes += len(record.value or b"") + len(record.key or b"")
        self.stats.published += 1
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
        leader = self.host.leader(partition)
        if leader == 0:
            batch.waiting, batch.retry_at = False, now + self.config.retry_ms
            return
        self._seq += 1
        batch.seq, batch.dst, batch.sent_ms, batch.waiting = self._seq, leader, now, True
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
                      or self.host.leader(partition) not in (0, batch.dst)):
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
            try:
                msg = decode_message(krec)
            except ValueError:
                self.stats.undecodable += 1
                continue
            self.stats.delivered += 1
            self.router.route_committed(msg, partition, offset, index)

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
                "batches_resent": s.batches_resent, "batches_stored": s.batches_stored,
                "batches_duplicate": s.batches_duplicate, "refusals": dict(s.refusals),
                "delivered": s.delivered, "undecodable": s.undecodable,
                "read_at": {str(p): at for p, at in sorted(self._read_at.items())}}

