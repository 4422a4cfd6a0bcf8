"""`S3Engine` (kind "s3"): one shard log stored as immutable objects in an `ObjectStore`.

Layout under `prefix` (no other writer may use it; keys under it that match none of the patterns are
ignored):

- `{prefix}/{base:020d}.tmqs`: a data object holding the records [base, end). The zero-padded base
  makes lexical key order the offset order. Content:

      batch_0 | batch_1 | ... | batch_{n-1} | footer | trailer

  Each batch is a TMQB batch (`real.storage.record.encode_records`, CRC-32C protected). A flush
  cuts a new batch whenever about `index_interval_bytes` (by `Record.size()`) have gone into the
  current one, so a batch is the unit of a ranged GET. Footer (big-endian):

      magic "TMQF" (4) | version u8 | base_offset i64 | end_offset i64 | record_count u32 |
      bytes_total u64 (sum of Record.size()) | data_length u64 (bytes of batches) |
      batch_count u32 |
      batch_count x (batch base offset i64 | byte position u64 | size_before u64 | ts_max i64)

  Each entry is one point of the sparse offset index (the batch starting at `byte position`,
  holding offsets from `batch base offset`, with `size_before` bytes of `Record.size()` before it
  in this object) and of the time-index summary: `ts_max` is the running maximum timestamp of every
  record of the object up to the end of that batch. Trailer (the last 12 bytes of the object):

      footer_length u32 | magic "TMQS" (4) | crc32c u32 over footer + footer_length + magic

  Without a usable manifest, opening reads only footers, with one suffix-ranged GET of
  `footer_read_bytes` per object (a second GET only if the footer is larger); with one, only the
  footers of objects written after it. `read` GETs just the byte range of the batches needed.

- `{prefix}/start`: the log start offset (retention may cut inside an object):

      magic "TMQL" (4) | version u8 | start i64 | crc32c u32 over the preceding 13 bytes

  Missing means 0. If objects exist, the first one starts at or below `start`.

- `{prefix}/manifest`: a summary of the log so that opening need not GET every footer (see
  Manifest below). Big-endian:

      magic "TMQM" (4) | version u8 | start i64 | start_skip_bytes u64 | covers_end i64 |
      object_count u32 |
      object_count x (base i64 | end i64 | bytes_total u64 | data_length u64 | ts_max i64 |
                      batch_count u32) |
      crc32c u32 over everything before it

  One entry per data object of the log when it was written, in offset order (the key is
  `{prefix}/{base:020d}.tmqs`; `batch_count` gives the footer length, `FOOTER_HEAD.size +
  batch_count * FOOTER_ENTRY.size`). `start` is the log start, `start_skip_bytes` the
  `Record.size()` total of the first object's records below `start`, and `covers_end` the end of
  the last entry (`start` if none): the manifest describes every data object below `covers_end`.

- `{prefix}/destroyed`: a tombstone ("TMQD"), present only while `destroy()` runs or after it
  was cut short (see Destroy below).

Durability point: the completed PUT of the object holding a record (S3 PUTs are durable and
atomic on return). With `linger_ms == 0` every `append` PUTs one object before returning, so
`durable_end() == end_offset()` after it. With `linger_ms > 0` appends are buffered in memory (and
visible to reads) until `poll(now_ms)` sees the oldest buffered append is `linger_ms` old, the
buffer reaches `flush_bytes`, or `sync()`/`close()`; `durable_end()` is the end of the last PUT
object. A crash loses the buffer and nothing else. `truncate` (delete whole objects above the cut,
highest first, then rewrite the straddling object under its own key) and `delete_before` (PUT the
start object, then delete whole objects below it, lowest first) are durable when they return, and
a crash part-way leaves a state that opens to the old or the new log (never a gap).

Manifest: the manifest is a cache, never the durability point; losing it (or finding it corrupt)
only makes opening slower. It is PUT (one fixed key, replaced whole by the PUT) whenever
`manifest_every_objects` data objects have been PUT since the last one, at `close()` if objects
changed since, by `truncate`/`delete_before` if one existed before them, and by an open that
found it missing-but-due, unusable or out of date. A failed manifest PUT is counted in
`manifest_put_failures` and otherwise ignored (the data is durable already). Opening:

1. LIST the prefix (one request per 1,000 keys). It finds the objects PUT after the manifest and
   shows which objects still exist.
2. If the manifest key is listed, GET it. It is used only if its CRC, magic, version and
   internal consistency check out, `start > 0` exactly when the start object is listed (then the
   start object is not fetched: the manifest's `start` is the same, see below), and every listed
   data object below `covers_end` is one of its entries. Its entries whose keys are no longer
   listed are dropped; entries still listed are trusted without a GET.
3. GET the footers of the listed objects at or above `covers_end` (written after the manifest).
4. If any of this fails (or the result has a gap or overlap), fall back to the full open: GET the
   start object if listed and every footer. So a bad manifest never makes opening fail; only a
   bad log does. A manifest that was unusable, or had entries dropped, is DELETEd (a failure
   aborts the open) and rewritten before the open returns.

Trusted summaries are cross-checked lazily: when a read fetches a footer (one suffix GET of exactly
the footer length the summary implies), every field (base, end, bytes_total, data_length,
ts_max, batch count) must match, or the read raises `S3LogCorrupt`.

Why a listed key can be trusted: data objects are immutable except under `truncate`, which may
rewrite the straddling object under its own key and, afterwards, appends may PUT new objects
under keys the manifest listed before the truncate. So every operation other than appending
(`truncate`, `delete_before`, `destroy`, an open that drops entries) first DELETEs the manifest
(if one may exist) and only then changes objects or the start object; if that DELETE fails the
engine is poisoned and changes nothing. Hence a manifest in the store was written after the last
completed non-append change, from the in-memory view of an unpoisoned engine, which matched the
store: since it was written only appends happened, which add keys at or above `covers_end` and
never touch a key below it, and S3 PUT/DELETE are atomic. A crash at any point therefore leaves
either the manifest that describes the log (plus newer objects, found by LIST) or no manifest
(the full open, with its own crash argument above: old or new log, never a gap). The same
ordering covers the start object: the manifest is deleted before `delete_before` PUTs a new
start, so a present manifest's `start` equals the start object's. Assumed, as for data objects:
a request that failed does not take effect after a later request has returned.

Cost: the manifest holds 44 bytes per object, so its PUTs upload O(objects^2 /
manifest_every_objects) bytes over a log's life; with `linger_ms > 0` and MiB-sized objects that
is negligible, with `linger_ms == 0` a 10,000-object log has a 440 KB manifest.

Destroy (`destroy()`, the port's): drop the buffer, LIST, PUT the tombstone (the commit point,
durable on return), DELETE the manifest, the data objects highest first, then the start object,
then the tombstone. Opening a prefix that holds the tombstone first finishes the destroy (the
same steps from the DELETEs on) and opens an empty log. So a crash or failure part-way leaves
either the old log (before the tombstone PUT returned) or, once reopened, an empty log at offset
0; never the prefix of the log a highest-first deletion alone would expose, nor a gap a
lowest-first one would (deleting data while `start` still points into it). The manifest goes
first after the tombstone, so it is gone before the tombstone is; an open that sees the
tombstone never reads it. Only keys of the layout above are deleted;
other keys under the prefix stay, as they are ignored by opening.

Fenced (shared) mode: `epoch >= 1` makes the log one that several nodes may open over time,
one leader at a time, each under a higher leader epoch that meta hands out (a Kafka partition on
shared storage: the object store is the replica). Data objects carry the epoch of the leader
that wrote them, `{prefix}/{base:020d}.e{epoch:010d}.tmqs`, so two leaders never PUT the same
key, and each leader's takeover is recorded in an epoch marker:

    {prefix}/epoch-{E:010d}:  magic "TMQE" (4) | version u8 | epoch i64 | start i64 |
                              crc32c u32 over the preceding 21 bytes

`start` is where epoch E's writes begin: the end of the log as E's leader found it. Opening at
epoch E: LIST, GET every marker (a marker above E raises `EngineFenced`: a newer leader took
over), then keep only the objects written by the epoch that owns their base offset, the largest
marker epoch whose `start` is at or below it. A zombie (an old leader still running) can only
PUT at its own end, which is at or past the `start` of the epoch that replaced it, so what it
writes after the takeover is ignored by every reader, and it never overwrites a valid object.
Without a marker of E the open PUTs one (the takeover) with the end of the valid log; with one
(the same leader reopening) it is reused. No manifest is read or written in this mode.

What the object store cannot say is whether a PUT that completed was still ours: the zombie's
PUT may complete after the takeover. So in fenced mode `ack_end()` (what a broker may
acknowledge, and the high watermark readers see) is `confirmed`, which moves only by
`confirm(end)`: the node calls it after a linearizable meta read, started after the PUT
completed, showed that this epoch still leads the shard (real/server/shared.py). A PUT that
completed before that read is listed by any later takeover, which happens only after meta moved
the shard; a PUT completing later is never confirmed.

Failures: a `TransientDeviceError` is retried up to `retries` times at once (the engine never
sleeps; the adapter and botocore may back off). Any other failure, or retries exhausted, poisons
the engine: the error propagates and every later call raises `EnginePoisoned`; reopen to recover.
Open raises `S3LogCorrupt` naming the keys if objects overlap, leave a gap or fail their checks.
Only object summaries (key, offsets, sizes, max timestamp) stay in memory; footers are kept in a
bounded LRU of `footer_cache_max` entries and records are never cached once PUT.
"""

from __future__ import annotations

import enum
import struct
from bisect import bisect_left, bisect_right
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from real.storage.crc32c import crc32c
from real.storage.devices import (
    Clock,
    DeviceError,
    NotFound,
    ObjectStore,
    TransientDeviceError,
    zero_clock,
)
from real.storage.errors import (
    BatchTooLarge,
    CorruptBatch,
    EngineClosed,
    InvalidArgument,
    OffsetOutOfRange,
    StorageError,
)
from real.storage.record import Record, appendable_size, decode_batch_at, encode_records

_T = TypeVar("_T")

FOOTER_MAGIC = b"TMQF"
TRAILER_MAGIC = b"TMQS"
START_MAGIC = b"TMQL"
FORMAT_VERSION = 1
FOOTER_HEAD = struct.Struct(">4sBqqIQQI")
FOOTER_ENTRY = struct.Struct(">qQQq")
TRAILER = struct.Struct(">I4sI")
START_BODY = struct.Struct(">4sBq")
DATA_SUFFIX = ".tmqs"
TOMBSTONE_NAME = "destroyed"
TOMBSTONE_BODY = b"TMQD"  # only the key's existence matters
MANIFEST_NAME = "manifest"
MANIFEST_MAGIC = b"TMQM"
MANIFEST_HEAD = struct.Struct(">4sBqQqI")
MANIFEST_ENTRY = struct.Struct(">qqQQqI")
EPOCH_MAGIC = b"TMQE"
EPOCH_BODY = struct.Struct(">4sBqq")
EPOCH_PREFIX = "epoch-"
EPOCH_DIGITS = 10
MANIFEST_ENTRY_FENCED = struct.Struct(">qqQQqIq")
FENCED_MANIFEST_VERSION = 2
BASE_DIGITS = 20
MiB = 1 << 20


class EnginePoisoned(StorageError):
    """An earlier device failure left the engine's view of the store unknown; reopen it."""


class S3LogCorrupt(StorageError):
    """The objects under the prefix do not form a valid log; the message names the keys."""


class EngineFenced(StorageError):
    """A fenced-mode open found a newer leader epoch's marker: this leader was replaced."""


@dataclass(frozen=True, slots=True)
class S3EngineConfig:
    """Knobs of `S3Engine`; every value is validated and errors name the key."""

    linger_ms: int = 0
    flush_bytes: int = 4 * MiB
    index_interval_bytes: int = 64 * 1024
    records_max_per_append: int = 10_000
    retries: int = 3
    footer_cache_max: int = 64
    footer_read_bytes: int = 4 * 1024  # a 4 MiB object of 64 KiB batches has a ~2.1 KiB footer
    manifest_every_objects: int = 256  # data objects PUT between two manifest PUTs
    tail_cache_bytes: int = 0  # records of the newest PUT objects kept for reads (0: none)
    read_objects_max: int = 0  # objects one read GETs from at most (0: no limit); the read
    # returns what it has then (at least one record), bounding how long a caller waits

    def __post_init__(self) -> None:
        lows = {
            "linger_ms": 0,
            "flush_bytes": 1,
            "index_interval_bytes": 1,
            "records_max_per_append": 1,
            "retries": 0,
            "footer_cache_max": 1,
            "footer_read_bytes": TRAILER.size,
            "manifest_every_objects": 1,
            "tail_cache_bytes": 0,
            "read_objects_max": 0,
        }
        for key, low in lows.items():
            value = getattr(self, key)
            if type(value) is not int or value < low:
                raise InvalidArgument(f"S3EngineConfig.{key} must be an int >= {low}, "
                                      f"got {value!r}")


@dataclass(frozen=True, slots=True)
class BatchEntry:
    base: int  # offset of the first record of the batch
    position: int  # byte position of the batch in the object
    size_before: int  # sum of Record.size() of the object's records before this batch
    ts_max: int  # running max timestamp of the object's records through this batch


@dataclass(frozen=True, slots=True)
class Footer:
    base: int
    end: int
    bytes_total: int
    data_length: int
    entries: tuple[BatchEntry, ...]

    @property
    def ts_max(self) -> int:
        return self.entries[-1].ts_max

    def batch_end(self, index: int) -> int:
        """Byte position just after batch `index`."""
        nxt = index + 1
        return self.entries[nxt].position if nxt < len(self.entries) else self.data_length

    def batch_last(self, index: int) -> int:
        """Offset just after the records of batch `index`."""
        nxt = index + 1
        return self.entries[nxt].base if nxt < len(self.entries) else self.end

    def size_after(self, index: int) -> int:
        """`size_before` of the batch after `index` (bytes_total after the last)."""
        nxt = index + 1
        return self.entries[nxt].size_before if nxt < len(self.entries) else self.bytes_total


@dataclass(frozen=True, slots=True)
class ObjectSummary:
    """What stays in memory per data object (footers live in the LRU) and goes in the manifest."""

    key: str
    base: int
    end: int
    bytes_total: int
    ts_max: int
    data_length: int
    batch_count: int

    @staticmethod
    def of(key: str, footer: Footer) -> ObjectSummary:
        return ObjectSummary(key, footer.base, footer.end, footer.bytes_total, footer.ts_max,
                             footer.data_length, len(footer.entries))

    @property
    def footer_length(self) -> int:
        """Bytes of the footer before the trailer."""
        return FOOTER_HEAD.size + self.batch_count * FOOTER_ENTRY.size


@dataclass(frozen=True, slots=True)
class Manifest:
    start: int
    start_skip_bytes: int
    objects: tuple[ObjectSummary, ...]

    @property
    def covers_end(self) -> int:
        return self.objects[-1].end if self.objects else self.start


class ManifestUse(enum.Enum):
    """What the last open did with the manifest (`S3Engine.manifest_use`)."""

    ABSENT = "absent"  # not listed: full open
    USED = "used"  # trusted for the objects it lists
    CORRUPT = "corrupt"  # failed its own checks: full open
    REJECTED = "rejected"  # well-formed but disagreeing with the LIST: full open


# ------------------------------------------------------------------------------ object codec


def data_key(prefix: str, base: int, epoch: int = 0) -> str:
    """The key of the data object starting at `base` (written under leader `epoch`, if any)."""
    if epoch:
        return f"{prefix}/{base:0{BASE_DIGITS}d}.e{epoch:0{EPOCH_DIGITS}d}{DATA_SUFFIX}"
    return f"{prefix}/{base:0{BASE_DIGITS}d}{DATA_SUFFIX}"


def parse_data_key(prefix: str, key: str) -> tuple[int, int] | None:
    """(base, epoch) of a data object key under `prefix` (epoch 0: unfenced), else None."""
    head = prefix + "/"
    if not key.startswith(head) or not key.endswith(DATA_SUFFIX):
        return None
    name = key[len(head) : -len(DATA_SUFFIX)]
    digits, dot, tag = name.partition(".e")
    if len(digits) != BASE_DIGITS or not digits.isdigit() or not digits.isascii():
        return None
    if not dot:
        return int(digits), 0
    if len(tag) != EPOCH_DIGITS or not tag.isdigit() or not tag.isascii() or int(tag) < 1:
        return None
    return int(digits), int(tag)


def epoch_key(prefix: str, epoch: int) -> str:
    return f"{prefix}/{EPOCH_PREFIX}{epoch:0{EPOCH_DIGITS}d}"


def encode_epoch(epoch: int, start: int) -> bytes:
    body = EPOCH_BODY.pack(EPOCH_MAGIC, FORMAT_VERSION, epoch, start)
    return body + struct.pack(">I", crc32c(body))


def decode_epoch(key: str, data: bytes) -> tuple[int, int]:
    """(epoch, start) of an epoch marker; S3LogCorrupt if it fails its checks."""
    if len(data) != EPOCH_BODY.size + 4:
        raise S3LogCorrupt(f"{key}: epoch marker of {len(data)} bytes")
    body, (crc,) = data[:-4], struct.unpack(">I", data[-4:])
    if crc32c(body) != crc:
        raise S3LogCorrupt(f"{key}: epoch marker CRC mismatch")
    magic, version, epoch, start = EPOCH_BODY.unpack(body)
    if magic != EPOCH_MAGIC or version != FORMAT_VERSION or epoch < 1 or start < 0:
        raise S3LogCorrupt(f"{key}: bad epoch marker")
    return epoch, start


def encode_object(records: Sequence[Record], index_interval_bytes: int) -> tuple[bytes, Footer]:
    """Encodes records (contiguous offsets, at least one) as one data object."""
    assert records, "an object holds at least one record"
    base = records[0].offset
    parts: list[bytes] = []
    entries: list[BatchEntry] = []
    position = size = 0
    ts_max = -1
    start = 0
    batch_bytes = 0
    for i, rec in enumerate(records):
        assert rec.offset == base + i, (rec.offset, base, i)
        batch_bytes += rec.size()
        last = i == len(records) - 1
        if batch_bytes >= index_interval_bytes or last:
            chunk = records[start : i + 1]
            ts_max = max(ts_max, max(r.timestamp_ms for r in chunk))
            entries.append(BatchEntry(chunk[0].offset, position, size, ts_max))
            blob = encode_records(chunk)
            parts.append(blob)
            position += len(blob)
            size += batch_bytes
            start, batch_bytes = i + 1, 0
    footer = Footer(base, base + len(records), size, position, tuple(entries))
    data = b"".join(parts) + encode_footer(footer)
    assert footer.bytes_total == sum(r.size() for r in records)
    assert len(data) == position + len(encode_footer(footer))
    return data, footer


def encode_footer(footer: Footer) -> bytes:
    head = FOOTER_HEAD.pack(
        FOOTER_MAGIC,
        FORMAT_VERSION,
        footer.base,
        footer.end,
        footer.end - footer.base,
        footer.bytes_total,
        footer.data_length,
        len(footer.entries),
    )
    body = head + b"".join(
        FOOTER_ENTRY.pack(e.base, e.position, e.size_before, e.ts_max) for e in footer.entries
    )
    tail = struct.pack(">I4s", len(body), TRAILER_MAGIC)
    return body + tail + crc32c(body + tail).to_bytes(4, "big")


def footer_length_from_trailer(key: str, tail: bytes) -> int:
    """Footer length from the object's last `TRAILER.size` bytes (checks the magic)."""
    if len(tail) < TRAILER.size:
        raise S3LogCorrupt(f"{key}: {len(tail)} bytes, too short for a {TRAILER.size}-byte trailer")
    length, magic, _ = TRAILER.unpack_from(tail, len(tail) - TRAILER.size)
    if magic != TRAILER_MAGIC:
        raise S3LogCorrupt(f"{key}: trailer magic {magic!r}, expected {TRAILER_MAGIC!r}")
    return length


def decode_footer(key: str, tail: bytes) -> Footer:
    """Parses the footer from `tail`, which ends where the object ends and holds the footer."""
    length = footer_length_from_trailer(key, tail)
    need = length + TRAILER.size
    if len(tail) < need:
        raise S3LogCorrupt(f"{key}: footer of {length} bytes, only {len(tail)} bytes read")
    blob = tail[len(tail) - need :]
    crc = int.from_bytes(blob[-4:], "big")
    if crc32c(blob[:-4]) != crc:
        raise S3LogCorrupt(f"{key}: footer crc32c mismatch (stored {crc:#010x})")
    if length < FOOTER_HEAD.size:
        raise S3LogCorrupt(f"{key}: footer of {length} bytes is shorter than its head")
    magic, version, base, end, count, total, data_length, n = FOOTER_HEAD.unpack_from(blob, 0)
    if magic != FOOTER_MAGIC or version != FORMAT_VERSION:
        raise S3LogCorrupt(f"{key}: footer magic/version {magic!r}/{version}, expected "
                           f"{FOOTER_MAGIC!r}/{FORMAT_VERSION}")
    if length != FOOTER_HEAD.size + n * FOOTER_ENTRY.size or n < 1 or count != end - base:
        raise S3LogCorrupt(f"{key}: footer length {length}, {n} batches, count {count} for "
                           f"offsets [{base}, {end}) are inconsistent")
    entries = tuple(
        BatchEntry(*FOOTER_ENTRY.unpack_from(blob, FOOTER_HEAD.size + i * FOOTER_ENTRY.size))
        for i in range(n)
    )
    footer = Footer(base, end, total, data_length, entries)
    check_footer(key, footer)
    return footer


def check_footer(key: str, footer: Footer) -> None:
    entries = footer.entries
    if entries[0].base != footer.base or entries[0].position != 0 or entries[0].size_before:
        raise S3LogCorrupt(f"{key}: first batch entry {entries[0]} does not start the object")
    for prev, cur in zip(entries, entries[1:], strict=False):
        ordered = prev.base < cur.base and prev.position < cur.position
        if not (ordered and prev.size_before < cur.size_before and prev.ts_max <= cur.ts_max):
            raise S3LogCorrupt(f"{key}: batch entries {prev} and {cur} are out of order")
    last = entries[-1]
    if not (last.base < footer.end and last.position < footer.data_length):
        raise S3LogCorrupt(f"{key}: last batch entry {last} lies outside the object")


def encode_start(start: int) -> bytes:
    body = START_BODY.pack(START_MAGIC, FORMAT_VERSION, start)
    return body + crc32c(body).to_bytes(4, "big")


def decode_start(key: str, data: bytes) -> int:
    if len(data) != START_BODY.size + 4:
        raise S3LogCorrupt(f"{key}: {len(data)} bytes, expected {START_BODY.size + 4}")
    magic, version, start = START_BODY.unpack_from(data, 0)
    if magic != START_MAGIC or version != FORMAT_VERSION or start < 0:
        raise S3LogCorrupt(f"{key}: bad start object (magic {magic!r}, version {version})")
    if crc32c(data[:-4]) != int.from_bytes(data[-4:], "big"):
        raise S3LogCorrupt(f"{key}: start object crc32c mismatch")
    return start


def encode_manifest(manifest: Manifest, fenced: bool = False) -> bytes:
    """Version 1, or with `fenced` version 2, whose entries also carry each object's epoch."""
    objects = manifest.objects
    version = FENCED_MANIFEST_VERSION if fenced else FORMAT_VERSION
    head = MANIFEST_HEAD.pack(MANIFEST_MAGIC, version, manifest.start,
                              manifest.start_skip_bytes, manifest.covers_end, len(objects))
    if fenced:
        entries = (MANIFEST_ENTRY_FENCED.pack(o.base, o.end, o.bytes_total, o.data_length,
                                              o.ts_max, o.batch_count, _key_epoch(o.key))
                   for o in objects)
    else:
        entries = (MANIFEST_ENTRY.pack(o.base, o.end, o.bytes_total, o.data_length, o.ts_max,
                                       o.batch_count) for o in objects)
    body = head + b"".join(entries)
    return body + crc32c(body).to_bytes(4, "big")


def _key_epoch(key: str) -> int:
    name = key.rsplit("/", 1)[-1]
    _base, dot, tag = name.removesuffix(DATA_SUFFIX).partition(".e")
    return int(tag) if dot else 0


def decode_manifest(prefix: str, key: str, data: bytes) -> Manifest:
    """Parses and checks a manifest; raises `S3LogCorrupt` naming what is wrong."""
    if len(data) < MANIFEST_HEAD.size + 4:
        raise S3LogCorrupt(f"{key}: {len(data)} bytes, too short for a manifest")
    if crc32c(data[:-4]) != int.from_bytes(data[-4:], "big"):
        raise S3LogCorrupt(f"{key}: manifest crc32c mismatch")
    magic, version, start, skip, covers_end, count = MANIFEST_HEAD.unpack_from(data, 0)
    if magic != MANIFEST_MAGIC or version not in (FORMAT_VERSION, FENCED_MANIFEST_VERSION):
        raise S3LogCorrupt(f"{key}: manifest magic/version {magic!r}/{version}, expected "
                           f"{MANIFEST_MAGIC!r}/{FORMAT_VERSION} or {FENCED_MANIFEST_VERSION}")
    entry = MANIFEST_ENTRY_FENCED if version == FENCED_MANIFEST_VERSION else MANIFEST_ENTRY
    if len(data) != MANIFEST_HEAD.size + count * entry.size + 4:
        raise S3LogCorrupt(f"{key}: {len(data)} bytes for {count} manifest entries")
    objects = []
    for i in range(count):
        fields = entry.unpack_from(data, MANIFEST_HEAD.size + i * entry.size)
        base, end, total, length, ts_max, batches = fields[:6]
        epoch = fields[6] if len(fields) > 6 else 0
        if not (0 <= base < end and 0 < length and 0 < batches and ts_max >= 0
                and epoch >= 0):
            raise S3LogCorrupt(f"{key}: manifest entry {i} [{base}, {end}) is malformed")
        objects.append(ObjectSummary(data_key(prefix, base, epoch), base, end, total, ts_max,
                                     length, batches))
    manifest = Manifest(start, skip, tuple(objects))
    check_manifest(key, manifest, covers_end)
    return manifest


def check_manifest(key: str, manifest: Manifest, covers_end: int) -> None:
    objects, start, skip = manifest.objects, manifest.start, manifest.start_skip_bytes
    for prev, cur in zip(objects, objects[1:], strict=False):
        if prev.end != cur.base:
            raise S3LogCorrupt(f"{key}: manifest entries {prev.key} and {cur.key} do not meet")
    if manifest.covers_end != covers_end or start < 0:
        raise S3LogCorrupt(f"{key}: manifest covers_end {covers_end}, start {start}, "
                           f"expected covers_end {manifest.covers_end}")
    if not objects:
        if skip:
            raise S3LogCorrupt(f"{key}: manifest skips {skip} bytes of no object")
        return
    first = objects[0]
    if not first.base <= start < first.end:
        raise S3LogCorrupt(f"{key}: manifest start {start} outside its first object {first.key}")
    if (skip == 0) != (first.base == start) or skip >= first.bytes_total:
        raise S3LogCorrupt(f"{key}: manifest start_skip_bytes {skip} does not fit {first}")


def decode_range(key: str, data: bytes, first: int) -> list[Record]:
    """Decodes the whole batches in `data`; the records must run from offset `first` on."""
    out: list[Record] = []
    pos = 0
    while pos < len(data):
        try:
            records, pos = decode_batch_at(data, pos)
        except CorruptBatch as exc:
            raise S3LogCorrupt(f"{key}: {exc}") from None
        out.extend(records)
    for i, rec in enumerate(out):
        if rec.offset != first + i:
            raise S3LogCorrupt(f"{key}: record {i} of the range has offset {rec.offset}, "
                               f"expected {first + i}")
    return out


# ----------------------------------------------------------------------------------- engine


class S3Engine:
    """The ShardEngine port over an `ObjectStore`; see the module docstring for format."""

    kind = "s3"

    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        clock: Clock = zero_clock,
        config: S3EngineConfig | None = None,
        epoch: int = 0,
    ) -> None:
        config = S3EngineConfig() if config is None else config
        if type(epoch) is not int or epoch < 0:
            raise InvalidArgument(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = epoch
        """The leader epoch this engine writes under (0: unfenced, the single-writer layout)."""
        self.epoch_start = 0
        """Fenced mode: where this epoch's writes began (its marker's start)."""
        self.epochs: dict[int, int] = {}
        """Fenced mode: every epoch marker found at open (epoch -> start), ours included."""
        self.ignored_objects = 0
        """Fenced mode: data objects the open skipped (a replaced leader's late writes)."""
        self._confirmed = 0
        if not isinstance(config, S3EngineConfig):
            raise InvalidArgument(f"config must be an S3EngineConfig, got {config!r}")
        if type(prefix) is not str or not prefix or prefix.endswith("/"):
            raise InvalidArgument(f"prefix must be a non-empty str not ending in '/', "
                                  f"got {prefix!r}")
        if not callable(clock):
            raise InvalidArgument(f"clock must be callable, got {clock!r}")
        self.store = store
        self.prefix = prefix
        self.clock = clock
        self.config = config
        self.records_max_per_append = config.records_max_per_append
        self._start_key = f"{prefix}/start"
        self._tombstone_key = f"{prefix}/{TOMBSTONE_NAME}"
        self._manifest_key = (f"{prefix}/{MANIFEST_NAME}.e{epoch:0{EPOCH_DIGITS}d}" if epoch
                              else f"{prefix}/{MANIFEST_NAME}")
        self._manifest_maybe = False  # a manifest may exist in the store (delete it before
        # any change but an append)
        self._manifest_count: int | None = None  # _objects[:n] are what the stored one lists
        self._manifest_due = config.manifest_every_objects  # PUT one once len(_objects) >= this
        self.manifest_use = ManifestUse.ABSENT
        self.manifest_detail = ""  # why the last open did not use the manifest
        self.manifest_put_failures = 0
        self._start = 0
        self._start_skip_bytes = 0  # Record.size() of records of _objects[0] below _start
        self._objects: list[ObjectSummary] = []
        self._bases: list[int] = []  # _objects[i].base, for bisect
        self._flushed_bytes = 0  # sum of _objects[i].bytes_total
        self._footers: OrderedDict[str, Footer] = OrderedDict()  # LRU, most recent last
        self._buffer: list[Record] = []
        self._buffer_cum: list[int] = []  # running Record.size() totals of _buffer
        self._buffer_ts: list[int] = []  # running max timestamps of _buffer
        self._buffer_since_ms: int | None = None  # clock() at the oldest buffered append
        self._tail: deque[Record] = deque()  # the newest PUT records, for reads (tail cache)
        self._tail_bytes = 0
        self._poisoned: BaseException | None = None
        self._closed = False
        self._open()

    # ----------------------------------------------------------------------------- the port

    def append(self, records: Sequence[Record]) -> int:
        self._check("append")
        if len(records) > self.records_max_per_append:
            raise BatchTooLarge("records_max_per_append", len(records), self.records_max_per_append)
        base = self.end_offset()
        sizes = [appendable_size(i, rec) for i, rec in enumerate(records)]
        if not records:
            return base
        total = self._buffer_cum[-1] if self._buffer_cum else 0
        ts_max = self._buffer_ts[-1] if self._buffer_ts else -1
        for i, (rec, size) in enumerate(zip(records, sizes, strict=True)):
            self._buffer.append(rec.at(base + i))
            total += size
            ts_max = max(ts_max, rec.timestamp_ms)
            self._buffer_cum.append(total)
            self._buffer_ts.append(ts_max)
        if self._buffer_since_ms is None:
            self._buffer_since_ms = self.clock()
        if self.config.linger_ms == 0 or total >= self.config.flush_bytes:
            self._flush()
        assert self.end_offset() == base + len(records)
        assert self.durable_end() <= self.end_offset()
        return base

    def read(self, offset: int, records_max: int, bytes_max: int) -> list[Record]:
        self._check("read")
        if type(records_max) is not int or records_max < 1:
            raise InvalidArgument(f"records_max must be an int >= 1, got {records_max!r}")
        if type(bytes_max) is not int or bytes_max < 0:
            raise InvalidArgument(f"bytes_max must be an int >= 0, got {bytes_max!r}")
        self._check_range(offset, "read")
        out: list[Record] = []
        budget = [records_max, bytes_max]
        pos = offset
        touched = 0
        limit = self.config.read_objects_max
        while pos < self._flushed_end() and budget[0] > 0:
            if limit and touched >= limit and out:
                return out
            touched += 1
            if self._tail and pos >= self._tail[0].offset:  # recent records: no GET
                for i in range(pos - self._tail[0].offset, len(self._tail)):
                    if not _take(self._tail[i], out, budget):
                        return out
                pos = self._flushed_end()
                break
            obj = self._objects[bisect_right(self._bases, pos) - 1]
            done = self._read_object(obj, pos, out, budget)
            pos = out[-1].offset + 1 if out else pos
            if done:
                return out
        self._read_buffer(pos, out, budget)
        assert not out or out[0].offset == offset
        assert len(out) <= records_max
        return out

    def offset_for_time(self, ts_ms: int) -> int:
        self._check("offset_for_time")
        if type(ts_ms) is not int:
            raise InvalidArgument(f"ts_ms must be an int, got {ts_ms!r}")
        for obj in self._objects:
            if obj.ts_max >= ts_ms:
                found = self._time_in_object(obj, ts_ms)
                if found is not None:
                    return found
        index = bisect_left(self._buffer_ts, ts_ms)
        found = self._buffer_base() + index
        assert found <= self.end_offset()
        assert index == len(self._buffer) or self._buffer[index].timestamp_ms >= ts_ms
        return found

    def start_offset(self) -> int:
        return self._start

    def end_offset(self) -> int:
        return self._buffer_base() + len(self._buffer)

    def bytes_total(self) -> int:
        buffered = self._buffer_cum[-1] if self._buffer_cum else 0
        return self._flushed_bytes - self._start_skip_bytes + buffered

    def truncate(self, offset: int) -> None:
        self._check("truncate")
        self._check_range(offset, "truncate")
        base = self._buffer_base()
        if offset >= base:
            self._drop_buffer_from(offset - base)
            return
        self._drop_buffer_from(0)
        self._drop_tail()
        had_manifest = self._invalidate_manifest()
        while self._objects and self._objects[-1].end > offset:
            obj = self._objects[-1]
            if obj.base >= offset or offset <= self._start:
                self._call("delete", self.store.delete, obj.key)
                self._pop_last_object()
            else:
                self._rewrite_prefix(obj, offset)
                break
        if not self._objects:
            self._start_skip_bytes = 0
        self._after_change(had_manifest)
        assert self.end_offset() == offset
        assert self.durable_end() == offset

    def delete_before(self, offset: int) -> None:
        self._check("delete_before")
        if type(offset) is not int or offset > self.end_offset():
            raise OffsetOutOfRange(offset, self._start, self.end_offset(), "delete_before")
        if offset <= self._start:
            return
        had_manifest = self._invalidate_manifest()
        self._drop_tail()
        self._call("put", self.store.put, self._start_key, encode_start(offset))
        self._start = offset
        while self._objects and self._objects[0].end <= offset:
            self._call("delete", self.store.delete, self._objects[0].key)
            self._pop_first_object()
        base = self._buffer_base()
        if offset > base:
            self._drop_buffer_before(offset - base)
        self._start_skip_bytes = self._skip_bytes()
        self._after_change(had_manifest)
        assert self.start_offset() == offset
        assert not self._objects or self._objects[0].base <= offset < self._objects[0].end

    def sync(self) -> None:
        self._check("sync")
        self._flush()
        assert self.durable_end() == self.end_offset()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._poisoned is None:
            self._flush()
            stale = self._manifest_count != len(self._objects)
            if stale and (self._objects or self._manifest_maybe):
                self._put_manifest()

    def destroy(self) -> None:
        """Closes (the linger buffer is dropped, not PUT) and deletes the log's objects behind a
        tombstone; see the module docstring. Works closed or poisoned; idempotent. A device
        failure propagates (the engine stays closed and poisoned); call `destroy()` again."""
        self._closed = True
        self._drop_buffer_from(0)
        self._drop_tail()
        self._poisoned = None  # destroy trusts only the listing, never the cached view
        self._erase()
        self._objects, self._bases, self._footers = [], [], OrderedDict()
        self._start = self._start_skip_bytes = self._flushed_bytes = 0
        self._manifest_maybe, self._manifest_count = False, None
        assert self.end_offset() == 0
        assert self.durable_end() == 0

    # ------------------------------------------------------------------------------- Durable

    def durable_end(self) -> int:
        """End of the last PUT object (or start, if retention passed it)."""
        return max(self._start, self._flushed_end())

    def ack_end(self) -> int:
        """What may be acknowledged and read: `durable_end()`, or in fenced mode what was
        `confirm`ed (see the module docstring)."""
        if not self.epoch:
            return self.durable_end()
        return max(self._start, min(self._confirmed, self.durable_end()))

    def confirm(self, end: int) -> None:
        """Fenced mode: this epoch still led the shard after the PUTs up to `end` completed."""
        self._confirmed = max(self._confirmed, min(end, self.durable_end()))

    def next_flush_ms(self) -> int | None:
        if self._buffer_since_ms is None or self._closed or self._poisoned is not None:
            return None
        return self._buffer_since_ms + self.config.linger_ms

    def poll(self, now_ms: int) -> None:
        due = self.next_flush_ms()
        if due is not None and now_ms >= due:
            self._flush()

    # ---------------------------------------------------------------------------- test hooks

    def reopen(self) -> S3Engine:
        """A new engine over the same store and prefix (call after `close`)."""
        return S3Engine(self.store, self.prefix, self.clock, self.config, self.epoch)

    def invariants(self) -> None:
        assert self._bases == [o.base for o in self._objects], self._bases
        for prev, cur in zip(self._objects, self._objects[1:], strict=False):
            assert prev.end == cur.base, (prev.key, cur.key)
        for obj in self._objects:
            parsed = parse_data_key(self.prefix, obj.key)
            assert parsed is not None and parsed[0] == obj.base, obj.key
            assert obj.base < obj.end, obj
        if self._objects:
            assert self._objects[0].base <= self._start < self._objects[0].end, self._start
        else:
            assert self._start_skip_bytes == 0
        assert self._flushed_bytes == sum(o.bytes_total for o in self._objects)
        assert len(self._footers) <= self.config.footer_cache_max
        assert len(self._buffer) == len(self._buffer_cum) == len(self._buffer_ts)
        base = self._buffer_base()
        ts_max, total = -1, 0
        for i, rec in enumerate(self._buffer):
            ts_max, total = max(ts_max, rec.timestamp_ms), total + rec.size()
            assert rec.offset == base + i, (rec.offset, base, i)
            assert self._buffer_cum[i] == total and self._buffer_ts[i] == ts_max, i
        assert (self._buffer_since_ms is None) == (not self._buffer)
        if self._tail:
            assert self._tail[-1].offset == self._flushed_end() - 1, self._tail[-1].offset
            assert self._tail[-1].offset - self._tail[0].offset == len(self._tail) - 1
            assert self._tail[0].offset >= self._start
        assert self._start <= self.durable_end() <= self.end_offset()
        count = self._manifest_count
        assert count is None or (self._manifest_maybe and 0 <= count <= len(self._objects)), count
        assert self._poisoned is not None or len(self._objects) < self._manifest_due, (
            len(self._objects), self._manifest_due)

    # ------------------------------------------------------------------------------- opening

    def _erase(self) -> None:
        """PUT the tombstone (the commit point; skipped if there is nothing else or it exists),
        DELETE the manifest, the data objects highest first, the start object, the tombstone."""
        keys = self._list()
        doomed = [k for k in keys if k == self._manifest_key or self._fenced_manifest(k)]
        doomed += sorted((k for k in keys if self._base_of(k) is not None), reverse=True)
        doomed += sorted(k for k in keys if self._epoch_of_marker(k) is not None)
        doomed += [k for k in keys if k == self._start_key]
        if doomed and self._tombstone_key not in keys:
            self._call("put", self.store.put, self._tombstone_key, TOMBSTONE_BODY)
        for key in doomed:
            self._call("delete", self.store.delete, key)
        if doomed or self._tombstone_key in keys:
            self._call("delete", self.store.delete, self._tombstone_key)

    def _list(self) -> list[str]:
        keys = self._call("list", self.store.list, self.prefix + "/")
        assert isinstance(keys, list)
        return keys

    def _open(self) -> None:
        keys = self._list()
        if self._tombstone_key in keys:  # a destroy() cut short after its commit point
            self._erase()
            keys = self._list()
        data_keys = sorted(k for k in keys if self._base_of(k) is not None)
        if self.epoch:
            self._open_fenced(keys, data_keys)
            return
        self._manifest_maybe = self._manifest_key in keys
        manifest = self._load_manifest() if self._manifest_maybe else None
        clean = False
        if manifest is not None:
            try:
                clean = self._open_with_manifest(manifest, keys, data_keys)
            except S3LogCorrupt as exc:  # the full open below decides whether the LOG is bad
                self.manifest_use, self.manifest_detail = ManifestUse.REJECTED, str(exc)
                self._reset_view()
        # Unusable or out of date: never trust it again. DELETEd before the full open, which may
        # delete objects left below start, and rewritten below.
        if not clean and self._invalidate_manifest():
            self._manifest_due = 0
        if self.manifest_use is not ManifestUse.USED:
            self._open_full(keys, data_keys)
        if len(self._objects) >= self._manifest_due:
            self._put_manifest()
        self.invariants()

    def _open_fenced(self, keys: list[str], data_keys: list[str]) -> None:
        markers: dict[int, int] = {}
        for key in sorted(k for k in keys if self._epoch_of_marker(k) is not None):
            raw = self._call("get", self.store.get, key)
            assert isinstance(raw, bytes)
            epoch, start = decode_epoch(key, raw)
            if epoch != self._epoch_of_marker(key):
                raise S3LogCorrupt(f"{key}: holds epoch {epoch}")
            markers[epoch] = start
        newer = [e for e in markers if e > self.epoch]
        if newer:
            raise EngineFenced(f"{self.prefix}: leader epoch {max(newer)} took over from "
                               f"epoch {self.epoch}")
        owners = sorted(markers.items())  # by epoch; starts never decrease along it

        def owner(base: int) -> int:
            found = 0
            for epoch, start in owners:
                if start <= base:
                    found = epoch
            return found

        valid = []
        for key in data_keys:
            parsed = parse_data_key(self.prefix, key)
            assert parsed is not None
            if parsed[1] == owner(parsed[0]):
                valid.append(key)
            else:
                self.ignored_objects += 1
        fetched = self._open_fenced_view(keys, valid)
        self._manifest_maybe = self._manifest_key in keys
        if self.epoch not in markers:  # the takeover: this epoch writes from the end found
            markers[self.epoch] = self._flushed_end()
            self._call("put", self.store.put, epoch_key(self.prefix, self.epoch),
                       encode_epoch(self.epoch, markers[self.epoch]))
        self.epochs = markers
        self.epoch_start = markers[self.epoch]
        self._confirmed = self.durable_end()
        due = fetched or not self._manifest_maybe or len(self._objects) >= self._manifest_due
        if self._objects and due:
            self._put_manifest()  # the next takeover reads one manifest, not every footer
        else:
            self._manifest_due = len(self._objects) + self.config.manifest_every_objects
        self.invariants()

    def _open_fenced_view(self, keys: list[str], valid: list[str]) -> int:
        """Builds the view of the `valid` objects, taking their summaries from the newest
        manifest of an epoch up to ours (written by a leader of that epoch: a cache like the
        unfenced manifest, trusted only for the keys it names that are listed and valid) and
        GETting the other footers. Returns how many footers were fetched."""
        manifests = sorted((e, k) for k in keys if (e := self._fenced_manifest(k)) is not None
                           and e <= self.epoch)
        if manifests:
            key = manifests[-1][1]
            try:
                raw = self._call("get", self.store.get, key, missing_ok=True)
                assert isinstance(raw, bytes)
                manifest = decode_manifest(self.prefix, key, raw)
                known = {o.key: o for o in manifest.objects}
                self._start = 0
                if self._start_key in keys:
                    start_raw = self._call("get", self.store.get, self._start_key)
                    assert isinstance(start_raw, bytes)
                    self._start = decode_start(self._start_key, start_raw)
                fetched = 0
                for data in valid:
                    obj = known.get(data)
                    if obj is None:
                        obj = self._summary_from_footer(data)
                        fetched += 1
                    if obj.end <= self._start:
                        continue  # below a retention cut (the unfenced open deletes these)
                    self._check_follows(obj)
                    self._push_summary(obj)
                self._start_skip_bytes = self._skip_bytes()
                self.manifest_use = ManifestUse.USED
                return fetched
            except (NotFound, S3LogCorrupt) as exc:
                self.manifest_use, self.manifest_detail = ManifestUse.REJECTED, str(exc)
                self._reset_view()
        self._open_full(keys, valid)
        return len(self._objects)

    def _fenced_manifest(self, key: str) -> int | None:
        """The epoch of a fenced-mode manifest key (`manifest.e<epoch>`), else None."""
        return self._epoch_after(key, f"{self.prefix}/{MANIFEST_NAME}.e")

    def _epoch_of_marker(self, key: str) -> int | None:
        """The epoch of an epoch marker key (`epoch-<epoch>`), else None."""
        return self._epoch_after(key, f"{self.prefix}/{EPOCH_PREFIX}")

    @staticmethod
    def _epoch_after(key: str, head: str) -> int | None:
        digits = key[len(head):]
        if not key.startswith(head) or len(digits) != EPOCH_DIGITS or not digits.isdigit():
            return None
        return int(digits)

    def _load_manifest(self) -> Manifest | None:
        """The listed manifest, or None (with `manifest_use` saying why) if it is unusable."""
        try:
            raw = self._call("get", self.store.get, self._manifest_key, missing_ok=True)
            assert isinstance(raw, bytes)
            return decode_manifest(self.prefix, self._manifest_key, raw)
        except NotFound:
            self.manifest_detail = f"{self._manifest_key} listed but not found"
        except S3LogCorrupt as exc:
            self.manifest_use, self.manifest_detail = ManifestUse.CORRUPT, str(exc)
        return None

    def _open_with_manifest(
        self, manifest: Manifest, keys: list[str], data_keys: list[str]
    ) -> bool:
        """Builds the view from the manifest plus the footers of newer objects; raises
        `S3LogCorrupt` if they disagree. True if the manifest lists exactly the old objects."""
        if (manifest.start > 0) != (self._start_key in keys):
            state = "not listed" if manifest.start else "listed"
            raise S3LogCorrupt(f"{self._manifest_key}: start {manifest.start} but "
                               f"{self._start_key} is {state}")
        listed = set(data_keys)  # membership tests only
        covered = {o.key: o for o in manifest.objects}
        kept = [o for o in manifest.objects if o.key in listed]
        newer: list[ObjectSummary] = []
        for key in data_keys:
            if key in covered:
                continue
            if (self._base_of(key) or 0) < manifest.covers_end:
                raise S3LogCorrupt(f"{self._manifest_key}: {key} is below covers_end "
                                   f"{manifest.covers_end} but not listed in the manifest")
            newer.append(self._summary_from_footer(key))
        self._start = manifest.start
        for obj in kept + newer:
            self._check_follows(obj)
            self._push_summary(obj)
        first_kept = bool(kept) and kept[0] == manifest.objects[0]
        if self._objects and self._objects[0].base < self._start:
            if not first_kept:
                raise S3LogCorrupt(f"{self._manifest_key}: its first object is gone")
            self._start_skip_bytes = manifest.start_skip_bytes
        self.manifest_use = ManifestUse.USED
        if len(kept) != len(manifest.objects):
            self.manifest_detail = f"{len(manifest.objects) - len(kept)} listed objects are gone"
            return False
        self._manifest_count = len(kept)
        self._manifest_due = len(kept) + self.config.manifest_every_objects
        return True

    def _open_full(self, keys: list[str], data_keys: list[str]) -> None:
        """The open without a manifest: the start object and every footer."""
        self._start = 0
        if self._start_key in keys:
            raw = self._call("get", self.store.get, self._start_key)
            assert isinstance(raw, bytes)
            self._start = decode_start(self._start_key, raw)
        for key in data_keys:
            summary = self._summary_from_footer(key)
            if summary.end <= self._start:  # left behind by an interrupted delete_before
                self._call("delete", self.store.delete, key)
                continue
            self._check_follows(summary)
            self._push_summary(summary)
        self._start_skip_bytes = self._skip_bytes()

    def _summary_from_footer(self, key: str) -> ObjectSummary:
        footer = self._footers.get(key) or self._fetch_footer(key)
        if footer.base != self._base_of(key):
            raise S3LogCorrupt(f"{key}: footer says base {footer.base}, key says otherwise")
        self._cache_footer(key, footer)
        return ObjectSummary.of(key, footer)

    def _reset_view(self) -> None:
        """Forgets the objects (not the cached footers, which came from the store)."""
        self._objects, self._bases = [], []
        self._start = self._start_skip_bytes = self._flushed_bytes = 0
        self._manifest_count = None
        self._manifest_due = self.config.manifest_every_objects

    def _check_follows(self, obj: ObjectSummary) -> None:
        if not self._objects:
            if obj.base > self._start:
                raise S3LogCorrupt(f"gap: {self._start_key} says the log starts at "
                                   f"{self._start} but the first object {obj.key} starts at "
                                   f"{obj.base}")
            return
        prev = self._objects[-1]
        if prev.end != obj.base:
            what = "gap" if prev.end < obj.base else "overlap"
            raise S3LogCorrupt(f"{what}: {prev.key} ends at {prev.end} but {obj.key} starts at "
                               f"{obj.base}")

    def _base_of(self, key: str) -> int | None:
        """The base of a data object key of this engine's layout (an unfenced engine ignores
        fenced keys, as any key outside its layout)."""
        parsed = parse_data_key(self.prefix, key)
        if parsed is None or (parsed[1] and not self.epoch):
            return None
        return parsed[0]

    def _fetch_footer(self, key: str, length: int | None = None) -> Footer:
        """One suffix GET (two if `length` is unknown and the footer exceeds the guess)."""
        want = self.config.footer_read_bytes if length is None else length + TRAILER.size
        tail = self._call("get", self.store.get, key, -want)
        assert isinstance(tail, bytes)
        found = footer_length_from_trailer(key, tail)
        if length is not None and found != length:
            raise S3LogCorrupt(f"{key}: footer of {found} bytes, the summary says {length}")
        if found + TRAILER.size > len(tail) and len(tail) == want:
            tail = self._call("get", self.store.get, key, -(found + TRAILER.size))
            assert isinstance(tail, bytes)
        return decode_footer(key, tail)

    def _footer(self, obj: ObjectSummary) -> Footer:
        footer = self._footers.get(obj.key)
        if footer is None:
            footer = self._fetch_footer(obj.key, obj.footer_length)
            if ObjectSummary.of(obj.key, footer) != obj:  # e.g. a manifest gone stale
                raise S3LogCorrupt(f"{obj.key}: changed under us: footer says "
                                   f"{ObjectSummary.of(obj.key, footer)}, expected {obj}")
        self._cache_footer(obj.key, footer)
        return footer

    def _cache_footer(self, key: str, footer: Footer) -> None:
        self._footers[key] = footer
        self._footers.move_to_end(key)
        while len(self._footers) > self.config.footer_cache_max:
            self._footers.popitem(last=False)

    def _skip_bytes(self) -> int:
        """Record.size() total of the records of the first object below start (one GET)."""
        if not self._objects or self._objects[0].base >= self._start:
            return 0
        obj = self._objects[0]
        footer = self._footer(obj)
        i = bisect_right([e.base for e in footer.entries], self._start) - 1
        records = self._get_batches(obj, footer, i, i + 1)
        skip = footer.entries[i].size_before
        skip += sum(r.size() for r in records if r.offset < self._start)
        assert 0 < skip < obj.bytes_total
        return skip

    # ------------------------------------------------------------------------------- reading

    def _get_batches(self, obj: ObjectSummary, footer: Footer, i: int, j: int) -> list[Record]:
        """Records of batches [i, j) of `obj`, with one ranged GET."""
        lo, hi = footer.entries[i].position, footer.batch_end(j - 1)
        data = self._call("get", self.store.get, obj.key, lo, hi)
        if len(data) != hi - lo:
            raise S3LogCorrupt(f"{obj.key}: GET [{lo}, {hi}) returned {len(data)} bytes")
        records = decode_range(obj.key, data, footer.entries[i].base)
        if len(records) != footer.batch_last(j - 1) - footer.entries[i].base:
            raise S3LogCorrupt(f"{obj.key}: batches {i}..{j - 1} hold {len(records)} records")
        return records

    def _read_object(
        self, obj: ObjectSummary, pos: int, out: list[Record], budget: list[int]
    ) -> bool:
        """Appends records from `pos` within `obj` to `out`; True once the budget is spent."""
        size = obj.data_length + obj.footer_length + TRAILER.size
        if obj.key not in self._footers and size <= self.config.index_interval_bytes:
            return self._read_small_object(obj, pos, out, budget)
        footer = self._footer(obj)
        bases = [e.base for e in footer.entries]
        i = bisect_right(bases, pos) - 1
        records_left, bytes_left = budget
        end_size = footer.size_after(i)
        j = i + 1
        while j < len(bases) and bases[j] < pos + records_left:
            if footer.entries[j].size_before - end_size >= bytes_left:
                break
            j += 1
        for rec in self._get_batches(obj, footer, i, j):
            if rec.offset < pos:
                continue
            if not _take(rec, out, budget):
                return True
        return budget[0] == 0 or j < len(bases)

    def _read_small_object(
        self, obj: ObjectSummary, pos: int, out: list[Record], budget: list[int]
    ) -> bool:
        """A small object whose footer is not cached: one GET of all of it (footer and
        batches) instead of one for the footer and one for the batches."""
        data = self._call("get", self.store.get, obj.key)
        assert isinstance(data, bytes)
        footer = decode_footer(obj.key, data)
        if ObjectSummary.of(obj.key, footer) != obj:
            raise S3LogCorrupt(f"{obj.key}: changed under us: footer says "
                               f"{ObjectSummary.of(obj.key, footer)}, expected {obj}")
        self._cache_footer(obj.key, footer)
        for rec in decode_range(obj.key, data[: footer.data_length], obj.base):
            if rec.offset >= pos and not _take(rec, out, budget):
                return True
        return budget[0] == 0

    def _read_buffer(self, pos: int, out: list[Record], budget: list[int]) -> None:
        for rec in self._buffer[pos - self._buffer_base() :]:
            if not _take(rec, out, budget):
                return

    def _time_in_object(self, obj: ObjectSummary, ts_ms: int) -> int | None:
        """First offset >= start in `obj` with timestamp >= ts_ms, or None."""
        footer = self._footer(obj)
        first = max(obj.base, self._start)
        i = bisect_right([e.base for e in footer.entries], first) - 1
        i = max(i, bisect_left([e.ts_max for e in footer.entries], ts_ms))
        while i < len(footer.entries):
            for rec in self._get_batches(obj, footer, i, i + 1):
                if rec.offset >= first and rec.timestamp_ms >= ts_ms:
                    return rec.offset
            i += 1
        return None

    # ------------------------------------------------------------------------------- writing

    def _flush(self) -> None:
        """PUTs the buffer as objects of about `flush_bytes` each, lowest offsets first."""
        while self._buffer:
            limit = self.config.flush_bytes
            count = max(1, bisect_right(self._buffer_cum, limit))
            chunk = self._buffer[:count]
            data, footer = encode_object(chunk, self.config.index_interval_bytes)
            key = data_key(self.prefix, footer.base, self.epoch)
            self._call("put", self.store.put, key, data)
            self._push_object(key, footer)
            self._keep_tail(chunk)
            self._drop_buffer_before(count)
        self._buffer_since_ms = None
        if len(self._objects) >= self._manifest_due:
            self._put_manifest()
        assert self.durable_end() == self.end_offset()
        assert not self._buffer_cum

    def _keep_tail(self, records: Sequence[Record]) -> None:
        limit = self.config.tail_cache_bytes
        if not limit:
            return
        for rec in records:
            self._tail.append(rec)
            self._tail_bytes += rec.size()
        while self._tail and self._tail_bytes > limit:
            self._tail_bytes -= self._tail.popleft().size()

    def _drop_tail(self) -> None:
        self._tail.clear()
        self._tail_bytes = 0

    def _rewrite_prefix(self, obj: ObjectSummary, offset: int) -> None:
        """Replaces `obj` by an object holding only its records below `offset` (same key)."""
        footer = self._footer(obj)
        j = bisect_left([e.base for e in footer.entries], offset)
        kept = [r for r in self._get_batches(obj, footer, 0, j) if r.offset < offset]
        assert kept and kept[-1].offset == offset - 1
        data, new = encode_object(kept, self.config.index_interval_bytes)
        self._call("put", self.store.put, obj.key, data)
        self._pop_last_object()
        self._push_object(obj.key, new)

    def _push_object(self, key: str, footer: Footer) -> None:
        assert footer.base == self._flushed_end() or not self._objects
        self._push_summary(ObjectSummary.of(key, footer))
        self._cache_footer(key, footer)

    def _push_summary(self, summary: ObjectSummary) -> None:
        self._objects.append(summary)
        self._bases.append(summary.base)
        self._flushed_bytes += summary.bytes_total

    # ------------------------------------------------------------------------------ manifest

    def _invalidate_manifest(self) -> bool:
        """DELETEs the manifest before a change other than an append (a failure poisons, so the
        change never starts). True if one may have existed."""
        if not self._manifest_maybe:
            return False
        self._call("delete", self.store.delete, self._manifest_key)
        self._manifest_maybe, self._manifest_count = False, None
        return True

    def _after_change(self, had_manifest: bool) -> None:
        """After truncate/delete_before: a manifest replaces the one deleted, or is due."""
        if had_manifest or len(self._objects) >= self._manifest_due:
            self._put_manifest()

    def _put_manifest(self) -> None:
        """PUTs the manifest of the current view; a failure is counted, not raised."""
        assert self._poisoned is None
        manifest = Manifest(self._start, self._start_skip_bytes, tuple(self._objects))
        data = encode_manifest(manifest, fenced=bool(self.epoch))
        self._manifest_maybe = True  # even if the PUT fails: it may have landed
        self._manifest_due = len(self._objects) + self.config.manifest_every_objects
        try:
            self._call("put", self.store.put, self._manifest_key, data, poison=False)
        except DeviceError:
            self.manifest_put_failures += 1
            return
        self._manifest_count = len(self._objects)
        assert decode_manifest(self.prefix, self._manifest_key, data) == manifest

    def _pop_last_object(self) -> None:
        obj = self._objects.pop()
        self._bases.pop()
        self._flushed_bytes -= obj.bytes_total
        self._footers.pop(obj.key, None)

    def _pop_first_object(self) -> None:
        obj = self._objects.pop(0)
        self._bases.pop(0)
        self._flushed_bytes -= obj.bytes_total
        self._footers.pop(obj.key, None)

    def _drop_buffer_from(self, index: int) -> None:
        del self._buffer[index:], self._buffer_cum[index:], self._buffer_ts[index:]
        if not self._buffer:
            self._buffer_since_ms = None

    def _drop_buffer_before(self, index: int) -> None:
        """Removes the first `index` buffered records (flushed or below a new start)."""
        kept = self._buffer[index:]
        self._buffer, self._buffer_cum, self._buffer_ts = [], [], []
        total, ts_max = 0, -1
        for rec in kept:
            total, ts_max = total + rec.size(), max(ts_max, rec.timestamp_ms)
            self._buffer.append(rec)
            self._buffer_cum.append(total)
            self._buffer_ts.append(ts_max)
        if not self._buffer:
            self._buffer_since_ms = None

    # ------------------------------------------------------------------------------- helpers

    def _flushed_end(self) -> int:
        return self._objects[-1].end if self._objects else self._start

    def _buffer_base(self) -> int:
        return self._buffer[0].offset if self._buffer else max(self._start, self._flushed_end())

    def _check(self, op: str) -> None:
        if self._closed:
            raise EngineClosed(f"{op} on a closed {self.kind} engine")
        if self._poisoned is not None:
            raise EnginePoisoned(f"{op} on an {self.kind} engine poisoned by: "
                                 f"{self._poisoned}") from self._poisoned

    def _check_range(self, offset: int, op: str) -> None:
        if type(offset) is not int or not self._start <= offset <= self.end_offset():
            raise OffsetOutOfRange(offset, self._start, self.end_offset(), op)

    def _call(
        self,
        op: str,
        fn: Callable[..., _T],
        *args: object,
        poison: bool = True,
        missing_ok: bool = False,
    ) -> _T:
        """Runs one store request, retrying transient errors; other failures poison (unless
        `poison` is False); `NotFound` propagates without poisoning if `missing_ok`."""
        last: DeviceError | None = None
        for _ in range(self.config.retries + 1):
            try:
                return fn(*args)
            except TransientDeviceError as exc:
                last = exc
            except NotFound as exc:
                if missing_ok:
                    raise
                raise self._poison(exc) if poison else exc from None
            except DeviceError as exc:
                raise self._poison(exc) if poison else exc from None
        assert last is not None
        raise self._poison(last) if poison else last

    def _poison(self, exc: BaseException) -> BaseException:
        self._poisoned = exc
        return exc


def _take(rec: Record, out: list[Record], budget: list[int]) -> bool:
    """Adds `rec` to a read if it fits (Kafka style: the first record always does)."""
    size = rec.size()
    if budget[0] == 0 or (out and size > budget[1]):
        budget[0] = 0
        return False
    out.append(rec)
    budget[0] -= 1
    budget[1] = max(0, budget[1] - size)
    return True



def s3_factory(
    store: ObjectStore,
    root: str,
    clock: Clock = zero_clock,
    config: S3EngineConfig | None = None,
) -> Callable[[str], S3Engine]:
    """An `EngineFactory` for `ShardStore`: shard `name` lives under `{root}/{name}`."""
    if type(root) is not str or not root or root.endswith("/"):
        raise InvalidArgument(f"root must be a non-empty str not ending in '/', got {root!r}")

    def make(name: str) -> S3Engine:
        return S3Engine(store, f"{root}/{name}", clock, config)

    return make
