"""`PartitionLog`: one Kafka partition stored in one shard (any `ShardEngine`).

Storage layout. Each stored `Record` is ONE Kafka record batch: `payload` = the batch bytes with
the base offset rewritten to its Kafka offset and the partition leader epoch set (the CRC-32C does
not cover either, so the bytes stay valid); `timestamp_ms` = the batch's max timestamp, clamped
to >= 0 (the port requires it; the batch bytes keep their own value); `key` = None. Two offset
spaces follow: the shard's (one per batch) and Kafka's (one per record). The log keeps an
in-memory index `_bases[i]` = Kafka base offset of the batch at shard offset `_shard_start + i`,
so any Kafka offset maps to its batch by bisection.

Open (the constructor) scans the engine once, reading only each stored batch's 61-byte header,
and rebuilds the index and the producer state; a stored payload that is not a batch, or bases
that are not contiguous, raise `CorruptPartition`. The cost is one pass over the shard's bytes
(Kafka avoids it with producer-state snapshots; we have none).

Idempotent producers (Kafka's ProducerStateManager rules, as of Kafka 2.5+ / KIP-360):
per producer id the log remembers the current epoch and its last `PRODUCER_BATCHES` (5) batches
(first/last sequence, Kafka base and last offset, shard offset). A batch with producer_id >= 0:
- epoch below the current one -> INVALID_PRODUCER_EPOCH (fenced);
- same epoch and the same sequence range as a remembered batch -> a duplicate: nothing stored,
  NONE with the original base offset (`duplicate=True`; `shard_end` is the end of the original's
  shard record, which is what must be durable before acknowledging);
- same epoch: first sequence must be last sequence + 1 (modulo 2**31), else
  OUT_OF_ORDER_SEQUENCE_NUMBER;
- higher epoch (a bump): first sequence must be 0, else OUT_OF_ORDER_SEQUENCE_NUMBER;
- unknown producer id: any sequence is accepted (Kafka >= 2.5 does the same, so producers survive
  retention deleting their last batches).
At most `producers_max` producer ids are remembered; the least recently appending one is
forgotten beyond that (it then counts as unknown). Retention forgets producers whose last batch
is deleted (Kafka's truncateHead).

Replication (Kafka-style followers pulling from a leader; KIP-101 / KIP-595 truncation). The
log keeps an epoch cache: run-length `_epochs[j]` = (epoch, first shard offset) of the stored
batches, by each stored header's partition_leader_epoch (an int32 taken as stored: batches written
before replication carry the log's default 0, or a producer's -1). Epochs only rise along the
cache: a batch whose epoch is below the latest run's (a `leader_epoch` set backwards) extends that
run, as Kafka's recovery ignores such batches. Retention trims the first run to the shard start,
truncation drops the runs past the new end. A follower asks the leader for
`epoch_end(follower.last_epoch())`, truncates its divergent tail with `truncate_shard`, then copies
`read_shard` pages with `append_replica`, which stores the leader's records byte for byte (shard
offsets included) and updates the index, the epoch cache and the producer state as a reopen would
(so a producer retry that reaches the follower once it leads is still a duplicate).

Tail cache (replicated partitions only: `keep_tail(bytes_max)`). A follower that keeps up asks a
leader for what it appended a moment ago; reading that back from the engine (a file read, a batch
decode and a CRC check per fetch and per follower) cost a leader more than its own appends. With
the cache on, the log keeps the `Record`s of its last appends (its own and `append_replica`'s, the
same objects the engine was given) up to `bytes_max` of `Record.size()`, and `read_shard` serves
an offset inside it from memory, with the engine's byte-limit rule, so the answer is the same
records either way (tests compare them). Truncation empties it; retention trims its head.

Limits: a batch over `batch_bytes_max` is MESSAGE_TOO_LARGE (Kafka's `max.message.bytes` default
1048588); the engine's `StorageFull` is KAFKA_STORAGE_ERROR and `BatchTooLarge` is
RECORD_LIST_TOO_LARGE. Other engine errors (closed, failed device) propagate to the caller.
Timestamps are CreateTime only (`log_append_time_ms` is always -1).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from itertools import islice
from operator import itemgetter
from typing import NamedTuple

from real.kafka import errors
from real.kafka.records import (
    HEADER,
    HEADER_BYTES,
    LOG_OVERHEAD,
    MAGIC,
    MAGIC_AT,
    PREFIX,
    SEQUENCE_MODULUS,
    BatchInfo,
    KRecord,
    RecordsError,
    build_batch,
    decode_batch,
    split_batches,
)
from real.storage.errors import BatchTooLarge, OffsetOutOfRange, StorageFull
from real.storage.port import ShardEngine
from real.storage.record import Record

PRODUCER_BATCHES = 5  # Kafka's ProducerStateEntry.NUM_BATCHES_TO_RETAIN
PRODUCERS_MAX_DEFAULT = 10_000
BATCH_BYTES_MAX_DEFAULT = 1_048_588  # Kafka's message.max.bytes / max.message.bytes default
SCAN_RECORDS = 1024
SCAN_BYTES = 4 << 20
NO_EPOCH = -1  # Kafka's UNDEFINED_EPOCH: `last_epoch` of an empty log, `epoch_end` of no epoch

_run_epoch = itemgetter(0)
_run_start = itemgetter(1)


class CorruptPartition(Exception):
    """The shard holds something that is not this log's format (names the shard offset)."""


class AppendResult(NamedTuple):
    """What Produce answers for one partition, plus what the broker must wait for.

    `shard_end`: the shard offset that must be durable (`durable_end() >= shard_end`) before the
    append may be acknowledged with acks=-1/1. `base_offset` is -1 on error.
    """

    error_code: int
    base_offset: int
    log_append_time_ms: int
    log_start_offset: int
    shard_end: int
    duplicate: bool = False
    error_message: str | None = None


class _Batch(NamedTuple):
    """A remembered batch of one producer (enough to answer a retry of it)."""

    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int
    shard_offset: int


class _Producer(NamedTuple):
    epoch: int
    batches: tuple[_Batch, ...]  # oldest first, at most PRODUCER_BATCHES


class PartitionLog:
    """A Kafka partition over a `ShardEngine` (see the module docstring for layout and rules)."""

    def __init__(
        self,
        engine: ShardEngine,
        *,
        leader_epoch: int = 0,
        producers_max: int = PRODUCERS_MAX_DEFAULT,
        batch_bytes_max: int = BATCH_BYTES_MAX_DEFAULT,
    ) -> None:
        if type(producers_max) is not int or producers_max < 1:
            raise ValueError(f"producers_max must be an int >= 1, got {producers_max!r}")
        if type(batch_bytes_max) is not int or batch_bytes_max < HEADER_BYTES:
            raise ValueError(f"batch_bytes_max must be an int >= 61, got {batch_bytes_max!r}")
        self._engine = engine
        self.leader_epoch = leader_epoch
        self.producers_max = producers_max
        self.batch_bytes_max = batch_bytes_max
        self._shard_start = engine.start_offset()
        self._bases: list[int] = []
        self._log_end = 0
        self._producers: dict[int, _Producer] = {}  # insertion order = least recent first
        self._epochs: list[tuple[int, int]] = []  # (epoch, first shard offset) runs, oldest first
        self._tail: deque[Record] = deque()
        self._tail_bytes = 0
        self.tail_bytes_max = 0
        """The tail cache's budget (0: off); `keep_tail` sets it."""
        self._rebuild()
        self.invariants()

    # --------------------------------------------------------------------------------- offsets

    @property
    def log_start_offset(self) -> int:
        """Kafka offset of the first stored record (the base of the first batch)."""
        return self._bases[0] if self._bases else self._log_end

    @property
    def log_end_offset(self) -> int:
        """Kafka offset the next appended record gets."""
        return self._log_end

    @property
    def shard_start(self) -> int:
        """The shard's start offset (retention advances it)."""
        return self._shard_start

    @property
    def shard_end(self) -> int:
        """The shard's end offset (one shard record per batch)."""
        return self._shard_start + len(self._bases)

    def kafka_offset(self, shard_offset: int) -> int:
        """The Kafka offset at which shard offset `shard_offset` begins: its batch's base, or the
        Kafka log end at (or past) `shard_end`; clamped to the log start below the shard start."""
        index = shard_offset - self._shard_start
        if index >= len(self._bases):
            return self._log_end
        if index <= 0:
            return self.log_start_offset
        return self._bases[index]

    def high_watermark(self, durable_shard_end: int) -> int:
        """Kafka offset just past the durable prefix, given the engine's `durable_end()`."""
        return self.kafka_offset(durable_shard_end)

    # ---------------------------------------------------------------------------------- epochs

    def last_epoch(self) -> int:
        """Partition leader epoch of the last stored batch; `NO_EPOCH` (-1) if the log is empty.

        Not `leader_epoch`, which new batches get and may be above every stored batch's."""
        return self._epochs[-1][0] if self._epochs else NO_EPOCH

    def epoch_end(self, epoch: int) -> tuple[int, int]:
        """(e, end): e = the largest stored epoch <= `epoch`, end = the shard offset where e's run
        ends (the first shard offset of the next larger epoch, or `shard_end` if e is the latest).

        What a leader answers a follower's OffsetForLeaderEpoch; the follower truncates to
        min(end, its own shard end). `epoch` at or above the latest stored epoch gives (latest,
        shard_end): in particular `epoch_end(self.leader_epoch)`, since a new leader's epoch is
        above every stored batch's until it appends. No stored epoch <= `epoch` (or an empty log)
        gives (`NO_EPOCH`, shard start).
        """
        runs = self._epochs
        j = bisect_right(runs, epoch, key=_run_epoch) - 1
        if j < 0:
            return NO_EPOCH, self._shard_start
        end = runs[j + 1][1] if j + 1 < len(runs) else self.shard_end
        assert runs[j][0] <= epoch and runs[j][1] < end
        return runs[j][0], end

    def epoch_runs(self) -> list[tuple[int, int]]:
        """The epoch cache, (epoch, first shard offset) per run, oldest first (a copy)."""
        return list(self._epochs)

    def _note_epoch(self, epoch: int, shard_offset: int) -> None:
        """A new run at `shard_offset` if `epoch` is above the latest; else the latest goes on."""
        epochs = self._epochs
        if not epochs or epoch > epochs[-1][0]:
            epochs.append((epoch, shard_offset))

    # ---------------------------------------------------------------------------------- append

    def append(self, data: bytes | bytearray | memoryview, infos: Sequence[BatchInfo],
               now_ms: int) -> AppendResult:
        """Stores the batches `split_batches(data)` found, atomically (all or none).

        Returns NONE with the Kafka base offset of the first batch, a duplicate's original base
        offset, or an error code with nothing stored. `now_ms` is reserved for LogAppendTime.
        """
        del now_ms  # CreateTime only; kept so LogAppendTime can be added without an API change
        if not infos:
            return self._error(errors.INVALID_RECORD, "no record batch to append")
        view = data if type(data) is memoryview else memoryview(data)
        staged: dict[int, _Producer] = {}
        records: list[Record] = []
        bases: list[int] = []
        next_offset = self._log_end
        shard_next = self._shard_start + len(self._bases)
        epoch, limit, pack_prefix = self.leader_epoch, self.batch_bytes_max, PREFIX.pack
        for info in infos:
            if info.size > limit:
                return self._error(errors.MESSAGE_TOO_LARGE,
                                   f"batch of {info.size} bytes > {limit}")
            if info.producer_id >= 0:
                verdict = self._check_producer(staged, info, next_offset, shard_next)
                if verdict is not None:
                    return verdict
            # with_base_offset inlined (hot path): new offset and epoch, the rest as it came
            pos = info.pos
            payload = pack_prefix(next_offset, info.size - LOG_OVERHEAD, epoch) + view[
                pos + LOG_OVERHEAD + 4 : pos + info.size]
            ts = info.max_timestamp
            # The shard offset is set already, so engines store this Record as is (no copy).
            records.append(Record(shard_next, ts if ts >= 0 else 0, None, payload))
            bases.append(next_offset)
            next_offset += info.last_offset_delta + 1
            shard_next += 1
        return self._store(records, bases, next_offset, staged)

    def _store(self, records: list[Record], bases: list[int], next_offset: int,
               staged: dict[int, _Producer]) -> AppendResult:
        try:
            shard_base = self._engine.append(records)
        except StorageFull as exc:
            return self._error(errors.KAFKA_STORAGE_ERROR, str(exc))
        except BatchTooLarge as exc:
            return self._error(errors.RECORD_LIST_TOO_LARGE, str(exc))
        shard_end = shard_base + len(records)
        assert shard_base == records[0].offset, (shard_base, records[0].offset)
        if self.tail_bytes_max:
            self._keep(records)
        base_offset = bases[0]
        self._bases += bases
        self._log_end = next_offset
        epochs = self._epochs  # `_note_epoch` inlined (hot path)
        if not epochs or self.leader_epoch > epochs[-1][0]:
            epochs.append((self.leader_epoch, shard_base))
        if staged:
            producers = self._producers
            for pid, state in staged.items():
                producers.pop(pid, None)
                producers[pid] = state  # most recent last
            while len(producers) > self.producers_max:
                del producers[next(iter(producers))]
        assert self._log_end > base_offset
        return AppendResult(errors.NONE, base_offset, -1, self._bases[0], shard_end)

    def _check_producer(self, staged: dict[int, _Producer], info: BatchInfo, base_offset: int,
                        shard_offset: int) -> AppendResult | None:
        """Applies the idempotence rules to one batch; stages its state, or returns a verdict."""
        pid, epoch, first = info.producer_id, info.producer_epoch, info.base_sequence
        last = info.last_sequence
        entry = staged.get(pid) or self._producers.get(pid)
        kept: tuple[_Batch, ...] = ()
        if entry is not None:
            if epoch < entry.epoch:
                return self._error(errors.INVALID_PRODUCER_EPOCH,
                                   f"producer {pid} epoch {epoch} < current {entry.epoch}")
            if epoch == entry.epoch:
                for old in entry.batches:
                    if old.first_seq == first and old.last_seq == last:
                        return AppendResult(errors.NONE, old.base_offset, -1,
                                            self.log_start_offset, old.shard_offset + 1, True)
                expected = (entry.batches[-1].last_seq + 1) % SEQUENCE_MODULUS
                if first != expected:
                    return self._error(errors.OUT_OF_ORDER_SEQUENCE_NUMBER,
                                       f"producer {pid} sequence {first}, expected {expected}")
                kept = entry.batches[-(PRODUCER_BATCHES - 1):]
            elif first != 0:
                return self._error(errors.OUT_OF_ORDER_SEQUENCE_NUMBER,
                                   f"producer {pid} new epoch {epoch} starts at sequence {first}")
        batch = _Batch(first, last, base_offset, base_offset + info.last_offset_delta, shard_offset)
        staged[pid] = _Producer(epoch, (*kept, batch))
        return None

    def append_records(self, records: list[KRecord], now_ms: int,
                       compression: int = 0) -> AppendResult:
        """Bridge: stores `records` as one batch (negative timestamps become `now_ms`)."""
        if not records:
            return self._error(errors.INVALID_RECORD, "no records to append")
        fixed = [r if r.timestamp_ms >= 0 else r._replace(timestamp_ms=now_ms) for r in records]
        batch = build_batch(fixed, compression=compression)
        try:
            infos = split_batches(batch)
        except RecordsError as exc:  # pragma: no cover - build_batch makes valid batches
            return self._error(exc.error_code, exc.message)
        return self.append(batch, infos, now_ms)

    def _error(self, code: int, message: str) -> AppendResult:
        assert code != errors.NONE
        return AppendResult(code, -1, -1, self.log_start_offset, self.shard_end, False, message)

    # ----------------------------------------------------------------------------------- reads

    def fetch(self, offset: int, max_bytes: int, upto: int) -> tuple[int, bytes]:
        """(error, whole batches) from the batch holding `offset` up to Kafka offset `upto`.

        Only batches that end at or before `upto` (the high watermark) are returned; at least
        one batch even if it exceeds `max_bytes` (the engine's byte count, which adds 24 bytes
        per batch, stops the rest). A batch that starts before `offset` is returned whole: Kafka
        clients skip the records below the offset they asked for. OFFSET_OUT_OF_RANGE outside
        [log_start, log_end]; `offset >= upto` gives NONE and no bytes.
        """
        if not self.log_start_offset <= offset <= self._log_end:
            return errors.OFFSET_OUT_OF_RANGE, b""
        upto = min(upto, self._log_end)
        if offset >= upto:
            return errors.NONE, b""
        first = bisect_right(self._bases, offset) - 1
        below = len(self._bases) if upto >= self._log_end else bisect_right(self._bases, upto) - 1
        count = below - first
        if count <= 0:
            return errors.NONE, b""
        got = self._engine.read(self._shard_start + first, count, max(0, max_bytes))
        assert 1 <= len(got) <= count
        assert got[0].offset == self._shard_start + first
        if len(got) == 1:
            return errors.NONE, got[0].payload
        return errors.NONE, b"".join([rec.payload for rec in got])

    def offset_for_time(self, ts_ms: int) -> tuple[int, int]:
        """(offset, timestamp) of the first record with timestamp >= ts_ms, or (-1, -1).

        The engine's time index finds the first batch whose max timestamp is >= ts_ms; only that
        batch is decoded (and the next ones only if a clamped negative timestamp misled it).
        """
        shard_offset = self._engine.offset_for_time(max(0, ts_ms))
        while shard_offset < self.shard_end:
            (stored,) = self._engine.read(shard_offset, 1, 0)
            for rec in decode_batch(stored.payload):
                if rec.timestamp_ms >= ts_ms:
                    return rec.offset, rec.timestamp_ms
            shard_offset += 1
        return -1, -1

    # --------------------------------------------------------------------------- replication

    def read_shard(self, offset: int, bytes_max: int) -> list[Record]:
        """The stored records from shard offset `offset`, as `append_replica` takes them.

        At least one record if any exists at `offset`, then more while their `Record.size()`
        total stays within `bytes_max` (the engine's `read`). `offset == shard_end` gives [];
        outside [shard start, shard end] raises `OffsetOutOfRange`.
        """
        end = self.shard_end
        if type(offset) is not int or not self._shard_start <= offset <= end:
            raise OffsetOutOfRange(offset, self._shard_start, end, "read_shard")
        if offset == end:
            return []
        tail = self._tail
        if tail and offset >= tail[0].offset:
            return self._read_tail(offset - tail[0].offset, max(0, bytes_max))
        got = self._engine.read(offset, end - offset, max(0, bytes_max))
        assert got and got[0].offset == offset and got[-1].offset < end
        return got

    @property
    def tail_start(self) -> int | None:
        """The first shard offset `read_shard` serves from the tail cache (None: it is empty)."""
        return self._tail[0].offset if self._tail else None

    def keep_tail(self, bytes_max: int) -> None:
        """Turn the tail cache on (`bytes_max` > 0) or off (0); see the module docstring. It
        fills with the appends from now on."""
        if type(bytes_max) is not int or bytes_max < 0:
            raise ValueError(f"tail bytes_max must be an int >= 0, got {bytes_max!r}")
        self.tail_bytes_max = bytes_max
        if not bytes_max:
            self._tail.clear()
            self._tail_bytes = 0

    def _keep(self, records: Sequence[Record]) -> None:
        tail = self._tail
        if tail and tail[-1].offset + 1 != records[0].offset:
            tail.clear()  # not contiguous (cannot happen after a successful append; be safe)
            self._tail_bytes = 0
        tail.extend(records)
        self._tail_bytes += sum(rec.size() for rec in records)
        budget = self.tail_bytes_max
        while self._tail_bytes > budget and len(tail) > 1:
            self._tail_bytes -= tail.popleft().size()

    def _read_tail(self, index: int, bytes_max: int) -> list[Record]:
        """`read_shard` from the cache: the engine's rule (at least one record, then more while
        the `Record.size()` total stays within `bytes_max`)."""
        out: list[Record] = []
        used = 0
        for rec in islice(self._tail, index, None):
            size = rec.size()
            if out and used + size > bytes_max:
                break
            out.append(rec)
            used += size
        return out

    def append_replica(self, records: Sequence[Record]) -> int:
        """Stores a leader's `read_shard` records as they are; returns the new shard end.

        Checked first, nothing stored on failure (`CorruptPartition` naming the mismatch): the
        shard offsets run on from `shard_end`, each payload is a stored batch, and the Kafka
        bases run on from the log end (on an empty log the first base is free, as on reopen).
        No idempotence checks (the leader made them): the producer state, the index and the epoch
        cache are updated as a reopen would rebuild them. Engine errors propagate.
        """
        shard_next = self.shard_end
        expected: int | None = self._log_end if self._bases else None
        headers: list[tuple[int, int, int, int, int, int]] = []
        for rec in records:
            if rec.offset != shard_next:
                raise CorruptPartition(
                    f"replica record {len(headers)}: shard offset {rec.offset}, expected "
                    f"{shard_next}"
                )
            header = _stored_header(rec)
            base, delta = header[0], header[1]
            if expected is not None and base != expected:
                raise CorruptPartition(
                    f"shard offset {rec.offset}: batch base offset {base}, expected {expected}"
                )
            headers.append(header)
            expected = base + delta + 1
            shard_next += 1
        if not records:
            return shard_next
        shard_base = self._engine.append(records)
        assert shard_base == records[0].offset, (shard_base, records[0].offset)
        if self.tail_bytes_max:
            self._keep(records)
        for rec, header in zip(records, headers, strict=True):
            self._index_stored(rec.offset, header)
        assert self._log_end == expected and self.shard_end == shard_next
        return shard_next

    def truncate_shard(self, offset: int) -> None:
        """Drops the batches at shard offsets >= `offset` (a follower's divergent tail).

        shard start <= offset <= shard_end, else ValueError. The index, log end, epoch cache and
        producer state become what a fresh `PartitionLog` over the truncated engine would have
        (a rescan: truncation is rare); `leader_epoch` is unchanged. Truncating everything
        leaves an empty shard, whose Kafka log end a fresh log cannot know: it is 0 again.
        """
        if type(offset) is not int or not self._shard_start <= offset <= self.shard_end:
            raise ValueError(
                f"truncate_shard: offset {offset!r} outside [{self._shard_start}, "
                f"{self.shard_end}]"
            )
        kept = offset - self._shard_start
        bases = self._bases[:kept]
        self._tail.clear()
        self._tail_bytes = 0
        log_end = self.kafka_offset(offset) if kept else 0
        self._engine.truncate(offset)
        self._shard_start = self._engine.start_offset()
        self._bases, self._log_end, self._producers, self._epochs = [], 0, {}, []
        self._rebuild()
        assert self._bases == bases and self._log_end == log_end, (bases[-1:], log_end)
        assert self.shard_end == offset

    # ----------------------------------------------------------------------------- retention

    def delete_before(self, kafka_offset: int) -> int:
        """Retention: drops the batches wholly below `kafka_offset`; returns the new log start.

        The last batch is always kept, even if `kafka_offset` is past it: the shard is the only
        durable state, and an empty shard would lose the Kafka log end offset on reopen.
        """
        if kafka_offset >= self._log_end:
            drop = len(self._bases) - 1
        else:
            drop = bisect_right(self._bases, kafka_offset) - 1
        if drop <= 0:
            return self.log_start_offset
        self._engine.delete_before(self._shard_start + drop)
        self._shard_start += drop
        tail = self._tail
        while tail and tail[0].offset < self._shard_start:
            self._tail_bytes -= tail.popleft().size()
        del self._bases[:drop]
        epochs = self._epochs
        del epochs[: bisect_right(epochs, self._shard_start, key=_run_start) - 1]
        epochs[0] = (epochs[0][0], self._shard_start)  # the first kept run starts at the start
        start = self.log_start_offset
        for pid in [p for p, s in self._producers.items() if s.batches[-1].last_offset < start]:
            del self._producers[pid]
        assert self._engine.start_offset() == self._shard_start
        assert start <= kafka_offset or drop == 0
        return start

    def close(self) -> None:
        self._engine.close()

    # ------------------------------------------------------------------------------- recovery

    def _rebuild(self) -> None:
        """Scans every stored batch header: the index, the log end, the epoch cache and the
        producer state (all empty before: the constructor and `truncate_shard`)."""
        assert not self._bases and not self._producers and not self._epochs
        offset, end = self._shard_start, self._engine.end_offset()
        expected: int | None = None
        while offset < end:
            for rec in self._engine.read(offset, SCAN_RECORDS, SCAN_BYTES):
                header = _stored_header(rec)
                if expected is not None and header[0] != expected:
                    raise CorruptPartition(
                        f"shard offset {rec.offset}: batch base offset {header[0]}, expected "
                        f"{expected}"
                    )
                expected = self._index_stored(rec.offset, header)
                offset = rec.offset + 1
        self._log_end = 0 if expected is None else expected

    def _index_stored(self, shard_offset: int, header: tuple[int, int, int, int, int, int]) -> int:
        """Adds one stored batch (`_stored_header`) at the end of the index, the epoch cache and
        the producer state, as reopen and `append_replica` do; returns its Kafka end (the log end).
        """
        base, delta, leader_epoch, pid, epoch, first = header
        assert shard_offset == self.shard_end, (shard_offset, self.shard_end)
        self._bases.append(base)
        self._log_end = base + delta + 1
        self._note_epoch(leader_epoch, shard_offset)
        if pid >= 0:
            self._remember(pid, epoch, first, base, delta, shard_offset)
        return self._log_end

    def _remember(self, pid: int, epoch: int, first: int, base: int, delta: int,
                  shard_offset: int) -> None:
        last = (first + delta) % SEQUENCE_MODULUS
        batch = _Batch(first, last, base, base + delta, shard_offset)
        entry = self._producers.pop(pid, None)
        if entry is not None and epoch < entry.epoch:
            self._producers[pid] = entry  # a stale epoch cannot be stored; keep the newer state
            return
        kept = entry.batches[-(PRODUCER_BATCHES - 1):] if entry and entry.epoch == epoch else ()
        self._producers[pid] = _Producer(epoch, (*kept, batch))
        while len(self._producers) > self.producers_max:
            del self._producers[next(iter(self._producers))]

    # ------------------------------------------------------------------------------ checking

    def state(self) -> tuple[list[int], int, dict[int, _Producer]]:
        """(index, log end, producer state): lets tests compare a reopened log with the live one."""
        return list(self._bases), self._log_end, dict(self._producers)

    def invariants(self) -> None:
        bases = self._bases
        assert self.shard_end == self._engine.end_offset(), (self.shard_end, bases[-1:])
        assert self._shard_start == self._engine.start_offset(), self._shard_start
        assert all(a < b for a, b in zip(bases, bases[1:], strict=False)), "bases not increasing"
        assert not bases or bases[-1] < self._log_end, (bases[-1:], self._log_end)
        assert len(self._producers) <= self.producers_max
        for pid, entry in self._producers.items():
            assert 1 <= len(entry.batches) <= PRODUCER_BATCHES, (pid, entry)
        epochs = self._epochs
        assert bool(epochs) == bool(bases), (epochs[:1], bases[:1])
        assert not epochs or epochs[0][1] == self._shard_start, (epochs[0], self._shard_start)
        assert not epochs or epochs[-1][1] < self.shard_end, (epochs[-1], self.shard_end)
        for (e1, s1), (e2, s2) in zip(epochs, epochs[1:], strict=False):
            assert s1 < s2, f"epoch runs not increasing in shard offset: {(e1, s1), (e2, s2)}"
            assert e1 < e2, f"epochs not increasing: {(e1, s1), (e2, s2)}"
        tail = self._tail
        if tail:
            assert tail[-1].offset == self.shard_end - 1, (tail[-1].offset, self.shard_end)
            assert tail[0].offset >= self._shard_start, (tail[0].offset, self._shard_start)
            assert tail[-1].offset - tail[0].offset == len(tail) - 1, "tail not contiguous"
            assert self._tail_bytes == sum(rec.size() for rec in tail), self._tail_bytes


def _stored_header(rec: Record) -> tuple[int, int, int, int, int, int]:
    """(base offset, last offset delta, partition leader epoch, producer id, producer epoch, base
    sequence) of a stored batch."""
    payload = rec.payload
    if len(payload) < HEADER_BYTES or payload[MAGIC_AT] != MAGIC:
        raise CorruptPartition(f"shard offset {rec.offset}: payload is not a magic-2 batch")
    (base, length, leader_epoch, _magic, _crc, _attrs, delta, _first_ts, _max_ts, pid, epoch,
     first, count) = HEADER.unpack_from(payload)
    if LOG_OVERHEAD + length != len(payload) or delta != count - 1:
        raise CorruptPartition(
            f"shard offset {rec.offset}: batch_length {length} / record count {count} do not "
            f"match a {len(payload)}-byte payload"
        )
    return base, delta, leader_epoch, pid, epoch, first
