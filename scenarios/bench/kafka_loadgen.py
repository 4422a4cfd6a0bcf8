"""A Kafka load generator on confluent-kafka (librdkafka): producer and consumer worker processes.

Used by `scenarios/bench/kafka.py`, which starts every worker as a separate process (`spawn`, so
no librdkafka thread of the parent is inherited) and talks to it over a `multiprocessing` pipe:

    worker -> bench   ("ready", None)          client created, metadata fetched (connection warm)
    bench  -> worker  ("go", t0)               start at time.monotonic() == t0
    worker -> bench   ("done", ProduceStats | ConsumeStats)
    worker -> bench   ("error", "traceback")   anything raised in the worker

`time.monotonic()` is CLOCK_MONOTONIC, one clock for every process of the machine, so the bench
can combine the windows of several producers: first send of any of them to last delivery report.

Records
-------
Every record has no key and a value of `record_bytes` bytes (default 1024): a 12-byte id
(`RECORD_ID`: producer index as big-endian u32, sequence number as big-endian u64) followed by a
fixed filler. Producer `i` of `n` sends sequences `0 .. count-1` with partition = sequence % P
(explicit round robin, so every partition gets the same share even in a tiny run and every
produce request carries batches for several partitions). The consumer reads the id of every value
and keeps one flag per (producer, sequence), so it can tell records that arrived once, twice
(duplicates) or never (lost).

Producer settings: the librdkafka defaults the benchmark is about (`linger.ms` 5, `batch.size`
1000000, `compression.type` none, idempotence off), `acks` from the job, and a bounded
`message.timeout.ms` so a broker that stops answering fails the run instead of hanging it.
The producer measures from just before its first `produce()` to its last successful delivery
report; with `max_s` set it stops sending new records after that long (`capped`).
`produce()` raises BufferError when librdkafka's queue is full (100000 messages by default);
the worker then serves delivery reports with `poll()` and retries that record.

Consumer: `assign()` of every partition at OFFSET_BEGINNING (no group join, no committed-offset
lookup; a `group.id` is still set, librdkafka wants one), `isolation.level` at its default
(read_committed). It stops when every expected record arrived, when nothing new arrived for
`idle_s` seconds, or at `deadline_s`, and measures from `assign()` to the last new record.
"""

from __future__ import annotations

import struct
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

RECORD_ID = struct.Struct(">IQ")  # producer index, sequence number: the first 12 value bytes
POLL_EVERY = 1000  # produce() calls between two poll(0) (serve delivery reports)
CONSUME_BATCH = 1000  # Consumer.consume(num_messages=...)
ERRORS_KEPT = 5  # distinct error strings kept in the stats


@dataclass(frozen=True, slots=True)
class ProduceJob:
    """What one producer process sends: `count` records of `record_bytes` to `topic`."""

    bootstrap: str
    topic: str
    partitions: int
    index: int  # this producer's index (the first 4 bytes of every value)
    count: int
    record_bytes: int = 1024
    acks: str = "all"  # "all" (= -1), "1" or "0"
    linger_ms: float = 5.0
    max_s: float | None = None  # stop sending new records after this long (None: never)
    timeout_s: float = 120.0  # message.timeout.ms and the flush deadline

    def __post_init__(self) -> None:
        if self.record_bytes < RECORD_ID.size:
            raise ValueError(f"ProduceJob.record_bytes: {self.record_bytes} < {RECORD_ID.size}")
        if self.acks not in ("all", "-1", "1", "0"):
            raise ValueError(f"ProduceJob.acks: {self.acks!r}, expected all, -1, 1 or 0")
        if self.partitions < 1 or self.count < 0:
            raise ValueError(f"ProduceJob: partitions {self.partitions}, count {self.count}")


@dataclass(frozen=True, slots=True)
class ConsumeJob:
    """What the consumer process reads: every partition of `topic` from the beginning, expecting
    `counts[i]` records from producer `i`."""

    bootstrap: str
    topic: str
    partitions: int
    counts: tuple[int, ...]
    group_id: str = "bench-consumer"
    idle_s: float = 10.0
    deadline_s: float = 300.0


@dataclass(slots=True)
class ProduceStats:
    sent: int = 0  # produce() calls accepted by librdkafka: sequences 0 .. sent-1
    capped: bool = False  # stopped early at ProduceJob.max_s
    delivered: int = 0  # successful delivery reports
    failed: int = 0  # failed delivery reports
    buffer_full: int = 0  # BufferError retries (librdkafka queue full)
    first_send: float = 0.0  # time.monotonic()
    last_delivery: float = 0.0
    cpu_s: float = 0.0  # process CPU (all threads, librdkafka's included) over the window
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ConsumeStats:
    received: int = 0  # records handed to the application
    unique: int = 0  # distinct (producer, sequence) ids among them
    duplicates: int = 0
    unknown: int = 0  # values whose id names no expected record
    lost: int = 0  # expected ids never received
    bytes: int = 0  # value bytes received
    start: float = 0.0  # time.monotonic() just before assign()
    first_record: float = 0.0  # when the first record arrived (0.0: none did)
    last_new: float = 0.0  # when the last new id arrived
    ended_by: str = ""  # complete | idle | deadline
    per_partition: list[int] = field(default_factory=list)
    cpu_s: float = 0.0
    errors: list[str] = field(default_factory=list)


def record_value(index: int, seq: int, filler: bytes) -> bytes:
    """The value of record `seq` of producer `index`: its 12-byte id, then `filler`."""
    return RECORD_ID.pack(index, seq) + filler


def filler_for(record_bytes: int) -> bytes:
    """The fixed tail of every value (a repeating pattern; no compression is configured)."""
    n = record_bytes - RECORD_ID.size
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def producer_config(job: ProduceJob) -> dict[str, Any]:
    return {"bootstrap.servers": job.bootstrap, "acks": job.acks, "linger.ms": job.linger_ms,
            "compression.type": "none", "enable.idempotence": False,
            "message.timeout.ms": int(job.timeout_s * 1000), "client.id": f"bench-p{job.index}"}


def consumer_config(job: ConsumeJob) -> dict[str, Any]:
    return {"bootstrap.servers": job.bootstrap, "group.id": job.group_id,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "enable.partition.eof": False, "client.id": "bench-consumer"}


def _note(errors: list[str], text: str) -> None:
    if text not in errors and len(errors) < ERRORS_KEPT:
        errors.append(text)


def _await_go(conn: Any) -> float:
    kind, t0 = conn.recv()
    if kind != "go":
        raise RuntimeError(f"expected 'go', got {kind!r}")
    delay = t0 - time.monotonic()
    if delay > 0:
        time.sleep(delay)  # the bench's common start time, not a synchronisation stand-in
    return float(t0)


def _warm_up(client: Any, topic: str, partitions: int, timeout_s: float) -> None:
    """Fetch the topic's metadata so the connection is up before the measured window."""
    meta = client.list_topics(topic, timeout=timeout_s)
    info = meta.topics.get(topic)
    if info is None or info.error is not None or len(info.partitions) != partitions:
        got = None if info is None else (info.error, len(info.partitions))
        raise RuntimeError(f"topic {topic!r} metadata: {got}, expected {partitions} partitions")


def produce(producer: Any, job: ProduceJob, stats: ProduceStats) -> None:
    """Send the job's records (see the module docstring), then flush."""
    filler = filler_for(job.record_bytes)

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is None:
            stats.delivered += 1
            stats.last_delivery = time.monotonic()
        else:
            stats.failed += 1
            _note(stats.errors, str(err))

    send = producer.produce
    topic, parts, index = job.topic, job.partitions, job.index
    stats.first_send = time.monotonic()
    stop_at = stats.first_send + job.max_s if job.max_s is not None else float("inf")
    sent = 0
    for seq in range(job.count):
        value = RECORD_ID.pack(index, seq) + filler
        while True:
            try:
                send(topic, value, partition=seq % parts, on_delivery=on_delivery)
                break
            except BufferError:
                stats.buffer_full += 1
                producer.poll(0.005)  # librdkafka's queue is full: serve delivery reports
        sent += 1
        if seq % POLL_EVERY == 0:
            producer.poll(0)
            if time.monotonic() >= stop_at:
                stats.capped = sent < job.count
                break
    stats.sent = sent
    left = producer.flush(job.timeout_s)
    if left:
        _note(stats.errors, f"{left} records still undelivered after {job.timeout_s} s flush")


def produce_worker(conn: Any, job: ProduceJob) -> None:
    """Process entry: one confluent-kafka Producer running `job` (protocol: module docstring)."""
    try:
        from confluent_kafka import Producer

        producer = Producer(producer_config(job))
        _warm_up(producer, job.topic, job.partitions, 30.0)
        conn.send(("ready", None))
        _await_go(conn)
        stats = ProduceStats()
        cpu0 = time.process_time()
        produce(producer, job, stats)
        stats.cpu_s = time.process_time() - cpu0
        conn.send(("done", stats))
    except Exception:  # noqa: BLE001 - everything goes back to the bench, named
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


class Tally:
    """Which (producer, sequence) ids arrived: one flag byte per expected record."""

    def __init__(self, counts: tuple[int, ...]) -> None:
        self.counts = counts
        self.seen = [bytearray(n) for n in counts]
        self.unique = 0
        self.duplicates = 0
        self.unknown = 0

    @property
    def expected(self) -> int:
        return sum(self.counts)

    def add(self, value: bytes | None) -> bool:
        """Count one value; True when it is an id not seen before."""
        if value is None or len(value) < RECORD_ID.size:
            self.unknown += 1
            return False
        index, seq = RECORD_ID.unpack_from(value)
        if index >= len(self.counts) or seq >= self.counts[index]:
            self.unknown += 1
            return False
        flags = self.seen[index]
        if flags[seq]:
            self.duplicates += 1
            return False
        flags[seq] = 1
        self.unique += 1
        return True


def consume(consumer: Any, job: ConsumeJob, stats: ConsumeStats) -> None:
    """Read every partition from the beginning until complete, idle or deadline."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    tally = Tally(job.counts)
    per_partition = [0] * job.partitions
    stats.start = last_new = time.monotonic()
    consumer.assign([TopicPartition(job.topic, p, OFFSET_BEGINNING)
                     for p in range(job.partitions)])
    ended_by = "complete"
    while tally.unique < tally.expected:
        now = time.monotonic()
        if now - stats.start > job.deadline_s:
            ended_by = "deadline"
            break
        if now - last_new > job.idle_s:
            ended_by = "idle"
            break
        batch = consumer.consume(num_messages=CONSUME_BATCH, timeout=0.2)
        if batch and not stats.first_record:
            stats.first_record = time.monotonic()
        fresh = 0
        for msg in batch:
            err = msg.error()
            if err is not None:
                _note(stats.errors, str(err))
                continue
            value = msg.value()
            stats.received += 1
            stats.bytes += len(value) if value is not None else 0
            per_partition[msg.partition()] += 1
            fresh += tally.add(value)
        if fresh:
            last_new = time.monotonic()
    stats.last_new = last_new
    stats.ended_by = ended_by
    stats.unique, stats.duplicates, stats.unknown = tally.unique, tally.duplicates, tally.unknown
    stats.lost = tally.expected - tally.unique
    stats.per_partition = per_partition


def consume_worker(conn: Any, job: ConsumeJob) -> None:
    """Process entry: one confluent-kafka Consumer running `job` (protocol: module docstring)."""
    try:
        from confluent_kafka import Consumer

        consumer = Consumer(consumer_config(job))
        try:
            _warm_up(consumer, job.topic, job.partitions, 30.0)
            conn.send(("ready", None))
            _await_go(conn)
            stats = ConsumeStats()
            cpu0 = time.process_time()
            consume(consumer, job, stats)
            stats.cpu_s = time.process_time() - cpu0
        finally:
            consumer.close()
        conn.send(("done", stats))
    except Exception:  # noqa: BLE001 - everything goes back to the bench, named
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()
