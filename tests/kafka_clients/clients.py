"""One adapter per Kafka client so every matrix cell is written once, for all four clients.

Clients: kafka-python 3.0 (`KafkaPython`), confluent-kafka 2.16 / librdkafka 2.16
(`Confluent`), aiokafka 0.14 (`AioKafka`, each call runs its own event loop) and kcat 1.7.1 /
librdkafka 2.0.2 (`Kcat`, a subprocess per call). An adapter offers:

- `produce(topic, records, compression=None, idempotent=False) -> list[(partition, offset)] |
  None`: send `records` (each names its partition) in order, wait until all are acknowledged
  (acks=all) and return each one's (partition, offset), or None where the client does not report
  them (kcat).
- `read(topic, partitions, count, passes=1) -> list[list[Rec]]`: a consumer WITHOUT a group:
  assign `partitions`, then per pass seek to the beginning and read until `count` records came
  back (kcat: a `-o beginning -e` run per pass, which reads to the end).
- `member(topic, group, watch)`: a `GroupMember`, a consumer in group `group` subscribed to
  `topic` that runs on its own thread (or process, for kcat) and publishes what it was assigned
  and what it received under the shared condition `watch`, so a test can wait for a state that
  spans several members.
- admin (`has_admin`): `create_topic(name, partitions)`, `topics() -> {name: partitions}`,
  `delete_topic(name)`. kcat has none.

Test-friendly settings everywhere: session timeout 6000 ms, heartbeat 1000 ms, metadata max age
1000-2000 ms, `auto.offset.reset=earliest`, auto commit off (except kcat, see `KcatMember`).
Codec support (`codecs`): every client here has gzip, snappy, lz4 and zstd -- kafka-python and
aiokafka through python-snappy / cramjam, lz4 and zstandard (all in the venv), both librdkafkas
are built with all four (`kcat -V`: builtin.features=gzip,snappy,...,lz4,...,zstd).
"""

from __future__ import annotations

import asyncio
import json
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import confluent_kafka as ck
import confluent_kafka.admin as ck_admin
import kafka as kp
import kafka.admin as kp_admin
import kafka.structs as kp_structs
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin import NewTopic as AioNewTopic
from aiokafka.structs import TopicPartition as AioTopicPartition

WAIT = 20.0  # seconds for anything a client must finish (produce, read, join, close)
POLL_S = 0.1  # one consumer poll; members poll in a loop, so this bounds command latency
SESSION_MS, HEARTBEAT_MS, METADATA_MS = 6000, 1000, 1000
CODECS = ("gzip", "snappy", "lz4", "zstd")
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
KCAT = "/usr/bin/kcat"

Header = tuple[str, bytes | None]


@dataclass(frozen=True, slots=True)
class Rec:
    """A record as sent or received; `offset` is -1 until the broker assigned one."""

    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()
    partition: int = 0
    offset: int = -1


def _deadline_exceeded(start: float, what: str) -> None:
    if time.monotonic() - start > WAIT:
        raise AssertionError(f"{what}: not within {WAIT}s")


# ------------------------------------------------------------------------------- group members


class GroupMember:
    """A group consumer on its own thread; state changes are published under `watch`.

    `assigned` (partition numbers), `records` (in arrival order) and `error` are read by the test
    while holding `watch`, and waited on with `wait(predicate)`. `commit(offsets)` runs a
    synchronous commit of {partition: next offset} on the member's thread; `commit_consumed()`
    commits "everything received so far". `close()` leaves the group and joins the thread.
    Subclasses provide `_open`, `_poll` (one poll: new records and the current assignment),
    `_commit` and `_close`.
    """

    def __init__(self, topic: str, group: str, watch: threading.Condition, name: str) -> None:
        self.topic, self.group, self.watch, self.name = topic, group, watch, name
        self.assigned: frozenset[int] = frozenset()
        self.records: list[Rec] = []
        self.error: BaseException | None = None
        self.closed = False
        self._commands: queue.Queue[tuple[Callable[[], Any], threading.Event, list[Any]]] = \
            queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> GroupMember:
        self._thread.start()
        return self

    # -- member thread

    def _run(self) -> None:
        try:
            self._open()
            while not self._stop.is_set():
                self._drain_commands()
                records, assigned = self._poll()
                self._publish(records, assigned)
        except BaseException as exc:  # reported to the test through `error`
            with self.watch:
                self.error = exc
                self.watch.notify_all()
        finally:
            try:
                self._close()
            finally:
                with self.watch:
                    self.closed = True
                    self.watch.notify_all()

    def _drain_commands(self) -> None:
        while True:
            try:
                fn, done, box = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                box.append(("ok", fn()))
            except Exception as exc:  # handed back to the caller of call()
                box.append(("error", exc))
            done.set()

    def _publish(self, records: list[Rec], assigned: frozenset[int]) -> None:
        if records or assigned != self.assigned:
            with self.watch:
                self.records.extend(records)
                self.assigned = assigned
                self.watch.notify_all()

    # -- test thread

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the member's thread; return its result or raise its exception."""
        done, box = threading.Event(), []
        self._commands.put((fn, done, box))
        assert done.wait(WAIT), f"{self.name}: command not run within {WAIT}s"
        status, value = box[0]
        if status == "error":
            raise value
        return value

    def commit(self, offsets: dict[int, int]) -> None:
        self.call(lambda: self._commit(offsets))

    def commit_consumed(self) -> dict[int, int]:
        with self.watch:
            offsets: dict[int, int] = {}
            for r in self.records:
                offsets[r.partition] = max(offsets.get(r.partition, 0), r.offset + 1)
        if offsets:
            self.commit(offsets)
        return offsets

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), f"{self.name}: did not close within {WAIT}s"
        if self.error is not None:
            raise AssertionError(f"{self.name} failed: {self.error!r}") from self.error

    # -- per client

    def _open(self) -> None:
        raise NotImplementedError

    def _poll(self) -> tuple[list[Rec], frozenset[int]]:
        raise NotImplementedError

    def _commit(self, offsets: dict[int, int]) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


def wait_for(watch: threading.Condition, members: Sequence[GroupMember],
             predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Wait under `watch` until `predicate()` holds; fail early if a member failed."""
    def ready() -> bool:
        return predicate() or any(m.error is not None for m in members)

    with watch:
        ok = watch.wait_for(ready, timeout)
        errors = [(m.name, m.error) for m in members if m.error is not None]
        state = {m.name: (sorted(m.assigned), len(m.records)) for m in members}
    assert not errors, f"{what}: member failed: {errors}"
    assert ok, f"{what}: not within {timeout}s; (assigned, received) per member: {state}"


# ------------------------------------------------------------------------------ kafka-python


class KafkaPython:
    name = "kafka-python"
    codecs = CODECS
    has_admin = True
    # KafkaProducer.send() rejects a header whose value is None ("All headers items must be
    # (str, bytes) tuples"), although the wire format allows it (length -1).
    null_header_values = False

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def produce(self, topic: str, records: Sequence[Rec], compression: str | None = None,
                idempotent: bool = False) -> list[tuple[int, int]]:
        producer = kp.KafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=idempotent,
            compression_type=compression, linger_ms=5, max_block_ms=int(WAIT * 1000),
            request_timeout_ms=10_000, metadata_max_age_ms=2000)
        try:
            futures = [producer.send(topic, key=r.key, value=r.value, headers=list(r.headers),
                                     partition=r.partition) for r in records]
            producer.flush(WAIT)
            metas = [f.get(timeout=WAIT) for f in futures]
        finally:
            producer.close(timeout=WAIT)
        return [(m.partition, m.offset) for m in metas]

    def read(self, topic: str, partitions: Sequence[int], count: int,
             passes: int = 1) -> list[list[Rec]]:
        consumer = kp.KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest", metadata_max_age_ms=2000,
                                    request_timeout_ms=10_000)
        tps = [kp.TopicPartition(topic, p) for p in partitions]
        out = []
        try:
            consumer.assign(tps)
            for _ in range(passes):
                consumer.seek_to_beginning(*tps)
                got: list[Rec] = []
                start = time.monotonic()
                while len(got) < count:
                    _deadline_exceeded(start, f"kafka-python read {len(got)}/{count}")
                    for batch in consumer.poll(timeout_ms=200).values():
                        got.extend(_kp_rec(m) for m in batch)
                out.append(got)
        finally:
            consumer.close()
        return out

    def member(self, topic: str, group: str, watch: threading.Condition,
               name: str = "") -> GroupMember:
        return KafkaPythonMember(self.bootstrap, topic, group, watch, name or group).start()

    def _admin(self) -> kp_admin.KafkaAdminClient:
        return kp_admin.KafkaAdminClient(bootstrap_servers=self.bootstrap,
                                         request_timeout_ms=10_000)

    def create_topic(self, name: str, partitions: int) -> None:
        admin = self._admin()
        try:
            resp = admin.create_topics([kp_admin.NewTopic(name, partitions, 1)])
        finally:
            admin.close()
        errors = [(t["name"], t["error_code"]) for t in resp["topics"]]
        assert errors == [(name, 0)], errors

    def topics(self) -> dict[str, int]:
        admin = self._admin()
        try:
            names = admin.list_topics()
            described = admin.describe_topics(names) if names else []
        finally:
            admin.close()
        return {t["name"]: len(t["partitions"]) for t in described if t["error_code"] == 0}

    def delete_topic(self, name: str) -> None:
        admin = self._admin()
        try:
            resp = admin.delete_topics([name])
        finally:
            admin.close()
        errors = [(t["name"], t["error_code"]) for t in resp["topics"]]
        assert errors == [(name, 0)], errors


def _kp_rec(m: Any) -> Rec:
    return Rec(m.key, m.value, tuple((k, v) for k, v in m.headers), m.partition, m.offset)


class KafkaPythonMember(GroupMember):
    def __init__(self, bootstrap: str, *args: Any) -> None:
        super().__init__(*args)
        self.bootstrap = bootstrap

    def _open(self) -> None:
        self.consumer = kp.KafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=SESSION_MS,
            heartbeat_interval_ms=HEARTBEAT_MS, metadata_max_age_ms=METADATA_MS,
            request_timeout_ms=10_000)
        self.consumer.subscribe([self.topic])

    def _poll(self) -> tuple[list[Rec], frozenset[int]]:
        batches = self.consumer.poll(timeout_ms=int(POLL_S * 1000))
        records = [_kp_rec(m) for batch in batches.values() for m in batch]
        return records, frozenset(tp.partition for tp in self.consumer.assignment())

    def _commit(self, offsets: dict[int, int]) -> None:
        self.consumer.commit({kp.TopicPartition(self.topic, p):
                              kp_structs.OffsetAndMetadata(o, "", -1)
                              for p, o in offsets.items()})

    def _close(self) -> None:
        consumer = getattr(self, "consumer", None)
        if consumer is not None:
            consumer.close(autocommit=False)


# --------------------------------------------------------------------------- confluent-kafka


class Confluent:
    name = "confluent-kafka"
    codecs = CODECS
    null_header_values = True
    has_admin = True

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def produce(self, topic: str, records: Sequence[Rec], compression: str | None = None,
                idempotent: bool = False) -> list[tuple[int, int]]:
        producer = ck.Producer({
            "bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 5,
            "enable.idempotence": idempotent, "compression.type": compression or "none",
            "message.timeout.ms": int(WAIT * 1000),
            "topic.metadata.refresh.interval.ms": 2000})
        results: list[tuple[int, int] | None] = [None] * len(records)
        errors: list[Any] = []

        def delivered(index: int) -> Callable[[Any, Any], None]:
            def report(err: Any, msg: Any) -> None:
                if err is not None:
                    errors.append((index, err))
                else:
                    results[index] = (msg.partition(), msg.offset())
            return report

        for i, r in enumerate(records):
            producer.produce(topic, value=r.value, key=r.key, headers=list(r.headers),
                             partition=r.partition, on_delivery=delivered(i))
        left = producer.flush(WAIT)
        assert left == 0 and not errors, f"confluent-kafka: {left} undelivered, errors {errors}"
        assert all(x is not None for x in results), results
        return [x for x in results if x is not None]

    def read(self, topic: str, partitions: Sequence[int], count: int,
             passes: int = 1) -> list[list[Rec]]:
        consumer = ck.Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": "unused-assign-only",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "topic.metadata.refresh.interval.ms": 2000})
        out = []
        try:
            consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING)
                             for p in partitions])
            for n in range(passes):
                if n:
                    for p in partitions:
                        consumer.seek(ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING))
                got: list[Rec] = []
                start = time.monotonic()
                while len(got) < count:
                    _deadline_exceeded(start, f"confluent-kafka read {len(got)}/{count}")
                    msg = consumer.poll(0.2)
                    if msg is None:
                        continue
                    assert msg.error() is None, msg.error()
                    got.append(_ck_rec(msg))
                out.append(got)
        finally:
            consumer.close()
        return out

    def member(self, topic: str, group: str, watch: threading.Condition,
               name: str = "") -> GroupMember:
        return ConfluentMember(self.bootstrap, topic, group, watch, name or group).start()

    def _admin(self) -> ck_admin.AdminClient:
        return ck_admin.AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topic(self, name: str, partitions: int) -> None:
        admin = self._admin()  # keep the handle alive until the future resolves
        futures = admin.create_topics(
            [ck_admin.NewTopic(name, num_partitions=partitions, replication_factor=1)],
            request_timeout=10)
        futures[name].result(timeout=WAIT)

    def topics(self) -> dict[str, int]:
        meta = self._admin().list_topics(timeout=10)
        return {name: len(t.partitions) for name, t in meta.topics.items() if t.error is None}

    def delete_topic(self, name: str) -> None:
        admin = self._admin()
        futures = admin.delete_topics([name], request_timeout=10)
        futures[name].result(timeout=WAIT)


def _ck_rec(msg: Any) -> Rec:
    headers = tuple((k, v) for k, v in (msg.headers() or []))
    return Rec(msg.key(), msg.value(), headers, msg.partition(), msg.offset())


class ConfluentMember(GroupMember):
    def __init__(self, bootstrap: str, *args: Any) -> None:
        super().__init__(*args)
        self.bootstrap = bootstrap

    def _open(self) -> None:
        self.consumer = ck.Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": self.group,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": HEARTBEAT_MS,
            "topic.metadata.refresh.interval.ms": METADATA_MS})
        self.consumer.subscribe([self.topic])

    def _poll(self) -> tuple[list[Rec], frozenset[int]]:
        msgs = self.consumer.consume(num_messages=100, timeout=POLL_S)
        for m in msgs:
            assert m.error() is None, m.error()
        assigned = frozenset(tp.partition for tp in self.consumer.assignment())
        return [_ck_rec(m) for m in msgs], assigned

    def _commit(self, offsets: dict[int, int]) -> None:
        self.consumer.commit(offsets=[ck.TopicPartition(self.topic, p, o)
                                      for p, o in offsets.items()], asynchronous=False)

    def _close(self) -> None:
        consumer = getattr(self, "consumer", None)
        if consumer is not None:
            consumer.close()


# ---------------------------------------------------------------------------------- aiokafka


class AioKafka:
    name = "aiokafka"
    codecs = CODECS
    null_header_values = True
    has_admin = True

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def produce(self, topic: str, records: Sequence[Rec], compression: str | None = None,
                idempotent: bool = False) -> list[tuple[int, int]]:
        async def run() -> list[tuple[int, int]]:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=idempotent,
                compression_type=compression, linger_ms=5, request_timeout_ms=10_000,
                metadata_max_age_ms=2000)
            await producer.start()
            try:
                futures = [await producer.send(topic, value=r.value, key=r.key,
                                               partition=r.partition, headers=list(r.headers))
                           for r in records]
                metas = await asyncio.wait_for(asyncio.gather(*futures), WAIT)
            finally:
                await producer.stop()
            return [(m.partition, m.offset) for m in metas]

        return asyncio.run(run())

    def read(self, topic: str, partitions: Sequence[int], count: int,
             passes: int = 1) -> list[list[Rec]]:
        async def run() -> list[list[Rec]]:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                auto_offset_reset="earliest", metadata_max_age_ms=2000,
                request_timeout_ms=10_000)
            await consumer.start()
            tps = [AioTopicPartition(topic, p) for p in partitions]
            out = []
            try:
                consumer.assign(tps)
                for _ in range(passes):
                    await consumer.seek_to_beginning(*tps)
                    got: list[Rec] = []
                    start = time.monotonic()
                    while len(got) < count:
                        _deadline_exceeded(start, f"aiokafka read {len(got)}/{count}")
                        batches = await consumer.getmany(timeout_ms=200)
                        got.extend(_kp_rec(m) for b in batches.values() for m in b)
                    out.append(got)
            finally:
                await consumer.stop()
            return out

        return asyncio.run(run())

    def member(self, topic: str, group: str, watch: threading.Condition,
               name: str = "") -> GroupMember:
        return AioKafkaMember(self.bootstrap, topic, group, watch, name or group).start()

    def _admin_call(self, fn: Callable[[AIOKafkaAdminClient], Any]) -> Any:
        async def run() -> Any:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap,
                                        request_timeout_ms=10_000)
            await admin.start()
            try:
                return await fn(admin)
            finally:
                await admin.close()

        return asyncio.run(run())

    def create_topic(self, name: str, partitions: int) -> None:
        resp = self._admin_call(lambda a: a.create_topics([AioNewTopic(name, partitions, 1)]))
        errors = [(t[0], t[1]) for t in resp.topic_errors]
        assert errors == [(name, 0)], errors

    def topics(self) -> dict[str, int]:
        async def describe(admin: AIOKafkaAdminClient) -> list[Any]:
            return await admin.describe_topics()

        described = self._admin_call(describe)
        return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}

    def delete_topic(self, name: str) -> None:
        resp = self._admin_call(lambda a: a.delete_topics([name]))
        errors = [(t[0], t[1]) for t in resp.topic_error_codes]
        assert errors == [(name, 0)], errors


class AioKafkaMember(GroupMember):
    """The member thread runs an event loop; commands are plain callables returning awaitables."""

    def __init__(self, bootstrap: str, *args: Any) -> None:
        super().__init__(*args)
        self.bootstrap = bootstrap

    def _run(self) -> None:
        asyncio.run(self._amain())

    async def _amain(self) -> None:
        consumer = None
        try:
            consumer = AIOKafkaConsumer(
                self.topic, bootstrap_servers=self.bootstrap, group_id=self.group,
                enable_auto_commit=False, auto_offset_reset="earliest",
                session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS,
                metadata_max_age_ms=METADATA_MS, request_timeout_ms=10_000)
            await consumer.start()
            while not self._stop.is_set():
                await self._adrain(consumer)
                batches = await consumer.getmany(timeout_ms=int(POLL_S * 1000))
                records = [_kp_rec(m) for b in batches.values() for m in b]
                self._publish(records, frozenset(tp.partition for tp in consumer.assignment()))
        except BaseException as exc:  # reported to the test through `error`
            with self.watch:
                self.error = exc
                self.watch.notify_all()
        finally:
            if consumer is not None:
                await consumer.stop()
            with self.watch:
                self.closed = True
                self.watch.notify_all()

    async def _adrain(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                fn, done, box = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                box.append(("ok", await fn(consumer)))
            except Exception as exc:  # handed back to the caller of call()
                box.append(("error", exc))
            done.set()

    def commit(self, offsets: dict[int, int]) -> None:
        tps = {AioTopicPartition(self.topic, p): o for p, o in offsets.items()}
        self.call(lambda consumer: consumer.commit(tps))


# -------------------------------------------------------------------------------------- kcat


def _kcat_rec(line: str) -> Rec:
    """One `kcat -J` line: {"partition", "offset", "key", "payload", "headers": [k, v, ...]}."""
    d = json.loads(line)
    flat = d.get("headers") or []
    headers = tuple((flat[i], None if flat[i + 1] is None else flat[i + 1].encode())
                    for i in range(0, len(flat), 2))
    key = None if d["key"] is None else d["key"].encode()
    value = None if d["payload"] is None else d["payload"].encode()
    return Rec(key, value, headers, d["partition"], d["offset"])


def _text(data: bytes | None) -> str:
    assert data is not None, "kcat: text keys and values only"
    return data.decode()


class Kcat:
    """kcat 1.7.1 (Debian; librdkafka 2.0.2), one process per call.

    Records: keys and values must be non-null text without tab/newline (kcat reads
    "key<TAB>value" lines with `-K '\\t'`); header values are text, or None (`-H name` with no
    '=' sends a null value). Headers apply to a whole kcat run, so records are sent in runs of
    consecutive records with equal (partition, headers). kcat reports no offsets.
    """

    name = "kcat"
    codecs = CODECS
    null_header_values = True
    has_admin = False
    COMMON: ClassVar[list[str]] = ["-X", f"topic.metadata.refresh.interval.ms={METADATA_MS}"]

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def _run(self, args: list[str], stdin: str = "") -> str:
        proc = subprocess.run([KCAT, "-b", self.bootstrap, *self.COMMON, *args], input=stdin,
                              capture_output=True, text=True, timeout=WAIT)
        assert proc.returncode == 0, f"kcat {args} exited {proc.returncode}: {proc.stderr}"
        return proc.stdout

    def produce(self, topic: str, records: Sequence[Rec], compression: str | None = None,
                idempotent: bool = False) -> None:
        runs: list[list[Rec]] = []
        for r in records:
            assert r.key is not None and r.value is not None, "kcat: text keys and values only"
            if runs and (runs[-1][0].partition, runs[-1][0].headers) == (r.partition, r.headers):
                runs[-1].append(r)
            else:
                runs.append([r])
        for run in runs:
            args = ["-P", "-t", topic, "-p", str(run[0].partition), "-K", "\t"]
            for name, value in run[0].headers:
                args += ["-H", name if value is None else f"{name}={value.decode()}"]
            if compression:
                args += ["-z", compression]
            if idempotent:
                args += ["-X", "enable.idempotence=true"]
            self._run(args, "".join(f"{_text(r.key)}\t{_text(r.value)}\n" for r in run))

    def read(self, topic: str, partitions: Sequence[int], count: int,
             passes: int = 1) -> list[list[Rec]]:
        out = []
        for _ in range(passes):  # one run reads every partition to its end; keep the asked ones
            text = self._run(["-C", "-t", topic, "-o", "beginning", "-e", "-J"])
            got = [r for r in (_kcat_rec(line) for line in text.splitlines() if line.strip())
                   if r.partition in partitions]
            assert len(got) >= count, f"kcat read {len(got)} of {count}"
            out.append(got)
        return out

    def member(self, topic: str, group: str, watch: threading.Condition, name: str = "",
               max_records: int | None = None) -> GroupMember:
        return KcatMember(self.bootstrap, max_records, topic, group, watch,
                          name or group).start()


# "% Group g rebalanced (memberid m): assigned: t [0], t [1]" (kcat's stderr, not with -q)
_REBALANCE = re.compile(r"^% Group \S+ rebalanced \(memberid [^)]*\): (assigned|revoked): ?(.*)$")
_PARTITION = re.compile(r"\[(\d+)\]")


class KcatMember(GroupMember):
    """`kcat -G group -J topic` as a group member; assignment parsed from its stderr.

    kcat commits by itself (enable.auto.commit, every 100 ms here, and on revoke and on close),
    so `commit()` is not available and `commit_consumed()` is a no-op; `max_records` makes kcat
    exit after that many records (`-c`), committing exactly those. Closing sends SIGTERM, on
    which kcat leaves the group cleanly and exits 0.
    """

    def __init__(self, bootstrap: str, max_records: int | None, *args: Any) -> None:
        super().__init__(*args)
        args_ = ["-G", self.group, "-J", "-u", "-X", f"session.timeout.ms={SESSION_MS}",
                 "-X", f"heartbeat.interval.ms={HEARTBEAT_MS}",
                 "-X", "auto.offset.reset=earliest", "-X", "auto.commit.interval.ms=100",
                 *Kcat.COMMON]
        if max_records is not None:
            args_ += ["-c", str(max_records)]
        self.argv = [KCAT, "-b", bootstrap, *args_, self.topic]
        self.stderr_lines: list[str] = []
        self.returncode: int | None = None

    def start(self) -> GroupMember:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self._err_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._err_thread.start()
        return super().start()

    def _run(self) -> None:  # stdout reader
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self._publish([_kcat_rec(line)], self.assigned)
        code = self.proc.wait()
        self._err_thread.join(WAIT)
        with self.watch:
            self.returncode = code
            if code != 0:
                self.error = AssertionError(f"kcat exited {code}: {self.stderr_lines[-10:]}")
            self.closed = True
            self.watch.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            line = line.rstrip("\n")
            self.stderr_lines.append(line)
            m = _REBALANCE.match(line)
            if m is None:
                continue
            parts = frozenset(int(p) for p in _PARTITION.findall(m.group(2)))
            with self.watch:
                self.assigned = parts if m.group(1) == "assigned" else self.assigned - parts
                self.watch.notify_all()

    def commit(self, offsets: dict[int, int]) -> None:
        raise NotImplementedError("kcat commits by itself (auto commit); see KcatMember")

    def commit_consumed(self) -> dict[int, int]:
        return {}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), f"{self.name}: kcat did not exit within {WAIT}s"
        if self.error is not None:
            raise AssertionError(f"{self.name} failed: {self.error!r}") from self.error


CLIENTS: dict[str, type[KafkaPython] | type[Confluent] | type[AioKafka] | type[Kcat]] = {
    c.name: c for c in (KafkaPython, Confluent, AioKafka, Kcat)}


def with_offsets(records: Sequence[Rec], offsets: Sequence[tuple[int, int]]) -> list[Rec]:
    """`records` with the offsets a producer reported (partitions must match)."""
    assert len(records) == len(offsets), (len(records), len(offsets))
    out = []
    for r, (p, o) in zip(records, offsets, strict=True):
        assert p == r.partition, f"record for partition {r.partition} went to {p}"
        out.append(replace(r, offset=o))
    return out
