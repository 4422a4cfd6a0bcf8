"""Opt-in long fuzz run of the Kafka listener: `python -m scenarios.fuzz.kafka --inputs 100000`.

Starts `python -m real serve` (all ports 0; the Kafka and admin ports are read from the node's
log), then sends `--inputs` hostile byte streams, each on its own TCP connection
(`--concurrency` at a time). One input is one to six request frames, most of them mutated, written
in chunks split at random points. A canary checks, every `--canary-every` inputs and while the
fuzz traffic keeps flowing, that a record produced on a long-lived connection and on a fresh one
comes back byte for byte from a Fetch; at the end kafka-python produces and consumes one record
too. Writes `reports/fuzz-kafka.json` (or `--out`) and exits non-zero unless the node is still
running, every canary passed, the node log holds no traceback and no "internal error" line, and
no reply broke the protocol (see "Oracles").

Seeds. A valid request of every API and version in `real.kafka.api.VERSIONS` (bodies built from
the schema tables with plausible values: topics "fz"/"fz-b", group "fz-g", small timeouts), plus
Produce v3-v8 carrying real RecordBatch v2 data (every codec, idempotent and plain producers,
several batches per request), Fetch/ListOffsets at offsets that exist, a JoinGroup/SyncGroup pair
with consumer-protocol metadata, ApiVersions v3 (flexible) and unsupported versions, SaslHandshake
v0 followed by a raw PLAIN token and SaslHandshake v1 + SaslAuthenticate.

Mutations (seeded: input i of seed S is always the same bytes, see `make_input`). A quarter of the
frames are well formed but hostile (`odd_body`: extreme integers, illegal topic names, nulls,
damaged record batches, negative partitions, huge partition counts); the rest are byte-level
mutations of seeds: bit flips,
truncation, trailing garbage, byte insertion/deletion, "interesting" integers (0, -1, 0x7fff,
0x7fffffff, -2**31, ...) written at random offsets (array counts, string/bytes lengths and varints
that lie), splices of two frames, a retargeted header (another api key or version, unknown ones
included), and size prefixes that lie (a few bytes off, zero, negative, larger than the broker's
`max_request_bytes`, or huge but allowed so the broker waits for bytes that never come). About 5%
of inputs are plain garbage, with or without a plausible size prefix.

Oracles, per connection. The stream is framed exactly as the broker frames it, which gives the
list of (correlation id, api key, version) of every complete request and whether the stream ends
in a bad size prefix or an incomplete frame. When it ends cleanly, a probe (ApiVersions v0 with
correlation id `PROBE_CORRELATION_ID`) follows: its reply means the connection survived and every
earlier reply has arrived (Kafka answers in request order). Every reply must carry the correlation
id of a request sent on that connection, in request order (skips allowed: acks=0 Produce and the
request that closed the connection get none), and must decode as the response to that request.
Outcomes counted: `survived` (probe answered), `closed` (the broker closed the connection),
`incomplete` (the stream ended inside a frame; closed after our EOF), `timeout` (no probe reply
within `--timeout` seconds: a long-poll Fetch or a JoinGroup held the queue; not a failure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from real.kafka import api
from real.kafka.codec import RequestHeader, decode_response, encode_request
from real.kafka.errors import KafkaCodecError
from real.kafka.records import KRecord, build_batch, decode_batches
from real.kafka.schemas import MESSAGES, Field
from scenarios.provenance import provenance

MAX_REQUEST_BYTES = 100 * 1024 * 1024  # KafkaConfig.max_request_bytes (node default)
PROBE_CORRELATION_ID = 0x7EADBEEF
TOPICS = ("fz", "fz-b")
GROUP = "fz-g"
CANARY_TOPIC = "canary-kafka-fuzz-7q"  # never named by a seed, so no fuzz input deletes it
BASE_TS = 1_700_000_000_000
CODECS = (0, 1, 2, 3, 4)  # none, gzip, snappy, lz4, zstd
INTERESTING = {
    1: (0x00, 0x01, 0x7F, 0x80, 0xFF),
    2: (0, 1, 0x7FFF, 0x8000, 0xFFFF, 0xFFFE, 0x0100),
    4: (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE, 0x00010000, 0x00100000, 1000),
    8: (0, 1, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF),
}


# ------------------------------------------------------------------------------------ seeds

def consumer_metadata(topics: list[str]) -> bytes:
    """ConsumerProtocolSubscription v0: int16 version, topic array, null user data."""
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


def consumer_assignment(topic: str, partitions: list[int]) -> bytes:
    """ConsumerProtocolAssignment v0: int16 version, [topic, [int32 partition]], null user data."""
    out = struct.pack(">hih", 0, 1, len(topic)) + topic.encode()
    out += struct.pack(">i", len(partitions)) + b"".join(struct.pack(">i", p) for p in partitions)
    return out + struct.pack(">i", -1)


def record_batch(rng: random.Random) -> bytes:
    """One to three real RecordBatch v2 batches (random codec, sometimes idempotent)."""
    out = b""
    for _ in range(rng.randint(1, 3)):
        records = [KRecord(0, BASE_TS + rng.randrange(1000),
                           None if rng.random() < 0.3 else b"k%d" % rng.randrange(100),
                           None if rng.random() < 0.1 else bytes(rng.randrange(256)
                                                                 for _ in range(rng.randrange(40))),
                           (("h", b"v"),) if rng.random() < 0.3 else ())
                   for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.3:
            out += build_batch(records, compression=rng.choice(CODECS),
                               producer_id=rng.randrange(5), producer_epoch=0,
                               base_sequence=rng.randrange(3))
        else:
            out += build_batch(records, compression=rng.choice(CODECS))
    return out


_STRINGS = {
    "name": TOPICS, "topic": TOPICS, "topic_names": TOPICS, "resource_name": TOPICS,
    "group_id": (GROUP,), "groups": (GROUP, "fz-h"), "groups_names": (GROUP,),
    "group_names": (GROUP,), "key": (GROUP,), "member_id": ("",),
    "protocol_type": ("consumer",), "mechanism": ("PLAIN", "SCRAM-SHA-256", "GSSAPI"),
    "client_software_name": ("fz",), "client_software_version": ("1.0",),
    "configuration_keys": ("retention.ms",), "value": ("1000",),
}
_INTS = {
    "acks": (-1, 1, 0), "session_timeout_ms": (6000, 10000), "rebalance_timeout_ms": (0, 100),
    "timeout_ms": (0, 1000), "max_wait_ms": (0, 5, 20), "min_bytes": (0, 1),
    "max_bytes": (1 << 20,), "partition_max_bytes": (1 << 20,), "partition": (0, 1),
    "index": (0, 1), "partition_index": (0, 1), "partition_indexes": (0, 1), "count": (2, 3),
    "num_partitions": (1, 2, -1), "replication_factor": (1, -1), "resource_type": (2, 4),
    "key_type": (0, 1), "timestamp": (-1, -2, BASE_TS), "fetch_offset": (0, 1, 3),
    "committed_offset": (0, 2, -1), "generation_id": (-1, 1), "producer_id": (-1,),
    "producer_epoch": (-1,), "isolation_level": (0, 1), "replica_id": (-1,),
    "session_epoch": (-1,), "transaction_timeout_ms": (60000,),
}


def _scalar(rng: random.Random, f: Field, type_: str, nullable: bool) -> Any:
    name = f.name
    if nullable and rng.random() < 0.15:
        return None
    if type_ == "string":
        if name in ("transactional_id", "group_instance_id") and nullable:
            return None
        return rng.choice(_STRINGS.get(name, ("fz",)))
    if type_ == "records":
        return record_batch(rng)
    if type_ == "bytes":
        if name == "auth_bytes":
            return b"\x00fz\x00secret"
        if name == "assignment":
            return consumer_assignment(TOPICS[0], [0])
        return consumer_metadata([TOPICS[0]])
    if type_ == "bool":
        return rng.random() < 0.5
    if type_ == "uuid":
        return bytes(16)
    if type_ == "float64":
        return 0.0
    return rng.choice(_INTS.get(name, (0, 1, -1)))


def sample_body(rng: random.Random, fields: tuple[Field, ...], version: int) -> dict:
    """A plausible, schema-valid body for `version` (tagged fields sometimes set)."""
    body: dict[str, Any] = {}
    for f in fields:
        if not f.present(version) or (f.tag is not None and rng.random() < 0.5):
            continue
        nullable = f.nullable_in(version)
        if f.type == "{}":
            body[f.name] = sample_body(rng, f.fields, version)
        elif f.type == "[]":
            if nullable and rng.random() < 0.1:
                body[f.name] = None
            else:
                body[f.name] = [sample_body(rng, f.fields, version)
                                for _ in range(rng.choice((0, 1, 1, 2)))]
        elif f.type.startswith("[]"):
            body[f.name] = [_scalar(rng, f, f.type[2:], False)
                            for _ in range(rng.choice((0, 1, 2)))]
        else:
            body[f.name] = _scalar(rng, f, f.type, nullable)
    return body


def request(api_key: int, version: int, body: dict, cid: int, client_id: str | None = "fz"
            ) -> bytes:
    """A framed request (size prefix included)."""
    return encode_request(RequestHeader(api_key, version, cid, client_id), body)


def _hand_made(rng: random.Random) -> list[bytes]:
    """Seeds that reach deep paths: real produce/fetch, a group round, SASL, version probes."""
    out = []
    for v in range(3, 9):
        for acks in (-1, 1, 0):
            out.append(request(api.PRODUCE, v, {"acks": acks, "timeout_ms": 1000, "topic_data": [
                {"name": rng.choice(TOPICS), "partition_data": [
                    {"index": 0, "records": record_batch(rng)}]}]}, rng.randrange(1 << 31)))
    for v in range(4, 12):
        out.append(request(api.FETCH, v, {"max_wait_ms": 0, "min_bytes": 1, "topics": [
            {"topic": t, "partitions": [{"partition": 0, "fetch_offset": rng.randrange(4),
                                         "partition_max_bytes": 1 << 16}]} for t in TOPICS]},
            rng.randrange(1 << 31)))
    meta = consumer_metadata(list(TOPICS))
    for v in range(0, 6):
        out.append(request(api.JOIN_GROUP, v, {
            "group_id": GROUP, "session_timeout_ms": 6000, "rebalance_timeout_ms": 50,
            "member_id": "", "protocol_type": "consumer",
            "protocols": [{"name": "range", "metadata": meta}]}, rng.randrange(1 << 31)))
    for v in range(0, 4):
        out.append(request(api.SYNC_GROUP, v, {
            "group_id": GROUP, "generation_id": 1, "member_id": "m", "assignments": [
                {"member_id": "m", "assignment": consumer_assignment("fz", [0])}]},
            rng.randrange(1 << 31)))
    for v in range(0, 5):  # v4 is above our range: answered with the v0-layout error 35
        out.append(request(api.API_VERSIONS, v, {"client_software_name": "fz",
                                                 "client_software_version": "9"}, v + 1))
    plain = b"\x00fz\x00secret"
    out.append(request(api.SASL_HANDSHAKE, 0, {"mechanism": "PLAIN"}, 7)
               + struct.pack(">i", len(plain)) + plain)
    out.append(request(api.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"}, 8)
               + request(api.SASL_AUTHENTICATE, 1, {"auth_bytes": plain}, 9))
    out.append(request(api.SASL_AUTHENTICATE, 0, {"auth_bytes": b"n,,n=fz,r=abc"}, 10))
    return out


def build_seeds(seed: int = 0) -> list[bytes]:
    """Valid framed requests: two per API and version in `api.VERSIONS`, plus `_hand_made`."""
    rng = random.Random(seed)  # noqa: S311 - seeded, reproducible corpus
    out = []
    for key, (lo, hi) in sorted(api.VERSIONS.items()):
        for v in range(lo, hi + 1):
            for _ in range(2):
                out.append(request(key, v, sample_body(rng, MESSAGES[key].request, v),
                                   rng.randrange(1 << 31), rng.choice(("fz", None, ""))))
    return out + _hand_made(rng)


SEEDS = build_seeds()

_ODD_STRINGS = ("", ".", "..", "fz", "fz-b", "x" * 249, "y" * 250, "ünï/cødé", "__consumer_offsets",
                "a b", "fz\x00", GROUP)
_EXTREMES = {"int8": 7, "int16": 15, "int32": 31, "int64": 63}


def _odd_scalar(rng: random.Random, type_: str, nullable: bool) -> Any:
    if nullable and rng.random() < 0.3:
        return None
    if type_ in _EXTREMES:
        bits = _EXTREMES[type_]
        return rng.choice([0, -1, 1, -2, 1024, 1025, (1 << bits) - 1, -(1 << bits),
                           rng.randint(-(1 << bits), (1 << bits) - 1)])
    if type_ == "uint16":
        return rng.choice([0, 0xFFFF])
    if type_ == "string":
        return rng.choice(_ODD_STRINGS)
    if type_ == "records":
        batch = record_batch(rng)
        return rng.choice([batch, batch[:rng.randrange(len(batch))], b"\x00" * 70,
                           batch[:16] + b"\x01" + batch[17:], batch + batch[:30]])
    if type_ == "bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    if type_ == "bool":
        return rng.random() < 0.5
    if type_ == "uuid":
        return bytes(rng.randrange(256) for _ in range(16))
    return rng.choice([0.0, -1.0, 1e308])


def odd_body(rng: random.Random, fields: tuple[Field, ...], version: int) -> dict:
    """A schema-valid body full of hostile values: extreme ints, odd or illegal names, nulls,
    damaged record batches, arrays of up to 5 entries. It decodes; the handlers must cope."""
    body: dict[str, Any] = {}
    for f in fields:
        if not f.present(version):
            continue
        nullable = f.nullable_in(version)
        if f.type == "{}":
            body[f.name] = odd_body(rng, f.fields, version)
        elif f.type.startswith("[]"):
            if nullable and rng.random() < 0.3:
                body[f.name] = None
            elif f.type == "[]":
                body[f.name] = [odd_body(rng, f.fields, version) for _ in range(rng.randint(0, 5))]
            else:
                body[f.name] = [_odd_scalar(rng, f.type[2:], False)
                                for _ in range(rng.randint(0, 5))]
        else:
            body[f.name] = _odd_scalar(rng, f.type, nullable)
    return body


def odd_request(rng: random.Random) -> bytes:
    """A well-framed request of a random advertised API and version with an `odd_body`."""
    key = rng.choice(sorted(api.VERSIONS))
    lo, hi = api.VERSIONS[key]
    version = rng.randint(lo, hi)
    for _ in range(5):
        try:
            return request(key, version, odd_body(rng, MESSAGES[key].request, version),
                           rng.randrange(1 << 31), rng.choice(("fz", None, "ü" * 10)))
        except KafkaCodecError:
            continue  # e.g. a null where this version forbids it: draw again
    return request(key, version, sample_body(rng, MESSAGES[key].request, version), 1)


# ------------------------------------------------------------------------------- mutations

def _put_int(buf: bytearray, pos: int, width: int, value: int) -> None:
    buf[pos:pos + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "big")


def mutate_body(rng: random.Random, body: bytes, donors: list[bytes]) -> bytes:
    """One random edit of a request body (the frame without its size prefix)."""
    buf = bytearray(body)
    op = rng.randrange(10)
    if op == 0 and buf:                                   # bit flips
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif op == 1 and buf:                                 # truncation
        del buf[rng.randrange(len(buf)):]
    elif op == 2:                                         # trailing garbage
        buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif op in (3, 4):                                    # lying counts / lengths / varints
        width = rng.choice((1, 2, 2, 4, 4, 4, 8))
        if len(buf) >= width:
            pos = rng.randrange(len(buf) - width + 1)
            _put_int(buf, pos, width, rng.choice(INTERESTING[width]))
    elif op == 5:                                         # splice with another frame
        other = rng.choice(donors)[4:]
        buf = buf[:rng.randrange(len(buf) + 1)] + bytearray(other[rng.randrange(len(other)):])
    elif op == 6 and buf:                                 # delete a run of bytes
        a = rng.randrange(len(buf))
        del buf[a:a + rng.randint(1, 8)]
    elif op == 7:                                         # insert random bytes
        pos = rng.randrange(len(buf) + 1)
        buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif op == 8 and len(buf) >= 4:                       # retarget the header
        key = rng.choice([*api.VERSIONS, 4, 21, 60, 1000, -1, 0x7FFF])
        lo, hi = api.VERSIONS.get(key, (0, 3))
        version = rng.choice([lo, hi, hi + 1, lo - 1, rng.randrange(-2, 20), 0x7FFF])
        _put_int(buf, 0, 2, key)
        _put_int(buf, 2, 2, version)
    elif len(buf) > 8:                                    # boundary bytes in a run
        pos = rng.randrange(8, len(buf))
        for i in range(pos, min(len(buf), pos + rng.randint(1, 4))):
            buf[i] = rng.choice(INTERESTING[1])
    return bytes(buf)


def frame_with_size(rng: random.Random, body: bytes, lie: bool) -> bytes:
    """`body` with its int32 size prefix: the true size, or (if `lie`) a wrong one."""
    size = len(body)
    if lie:
        size = rng.choice([size + rng.randint(1, 8), max(0, size - rng.randint(1, 8)), 0, -1,
                           -(1 << 31), 0x7FFFFFFF, MAX_REQUEST_BYTES + 1,
                           rng.randint(size + 9, 1 << 20)])
    return struct.pack(">i", size) + body


def make_input(rng: random.Random) -> list[bytes]:
    """One hostile stream for one connection, as the chunks to write (all non-empty)."""
    roll = rng.random()
    if roll < 0.03:
        data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
    elif roll < 0.05:
        data = frame_with_size(rng, bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))),
                               False)
    else:
        frames = []
        count = 1 if rng.random() < 0.6 else rng.randint(2, 6)
        for _ in range(count):
            frame = rng.choice(SEEDS)
            if rng.random() < 0.25:
                frame = odd_request(rng)
            elif count == 1 or rng.random() < 0.5:
                body = frame[4:]
                for _ in range(rng.choice((1, 1, 1, 2, 3))):
                    body = mutate_body(rng, body, SEEDS)
                frame = frame_with_size(rng, body, rng.random() < 0.1)
            frames.append(frame)
        data = b"".join(frames)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 4))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def input_rng(seed: int, index: int) -> random.Random:
    """The generator of input `index` of a run with `seed` (reproduce one input on its own)."""
    return random.Random(f"fuzz-kafka:{seed}:{index}")  # noqa: S311 - seeded fuzz inputs


# ------------------------------------------------------------------------------- oracles

@dataclass(slots=True)
class Expectation:
    """What the broker's framing makes of a stream: the requests it will see, and its end."""

    requests: list[tuple[int, int, int]]  # (correlation_id, api_key, api_version)
    tail: str  # "clean" | "incomplete" | "bad_size"


def frame_stream(data: bytes, max_request_bytes: int = MAX_REQUEST_BYTES) -> Expectation:
    """Split `data` into request frames the way `KafkaBroker.receive` does."""
    pos, reqs = 0, []
    while len(data) - pos >= 4:
        size = int.from_bytes(data[pos:pos + 4], "big", signed=True)
        if size < 0 or size > max_request_bytes:
            return Expectation(reqs, "bad_size")
        if len(data) - pos - 4 < size:
            return Expectation(reqs, "incomplete")
        frame = data[pos + 4:pos + 4 + size]
        pos += 4 + size
        if len(frame) >= 8:
            key, version, cid = struct.unpack_from(">hhi", frame)
            reqs.append((cid, key, version))
    return Expectation(reqs, "clean" if pos == len(data) else "incomplete")


def _decodable(key: int, version: int, frame: bytes) -> bool:
    if key == api.API_VERSIONS:
        lo, hi = api.VERSIONS[key]
        version = version if lo <= version <= hi else 0
    elif key not in api.VERSIONS or not api.VERSIONS[key][0] <= version <= api.VERSIONS[key][1]:
        return False
    try:
        decode_response(key, version, frame)
    except KafkaCodecError:
        return False
    return True


def check_replies(requests: list[tuple[int, int, int]], data: bytes) -> tuple[int, list[str]]:
    """(complete reply frames, problems): each reply must answer a request of `requests` by
    correlation id, in request order, and decode as that request's response."""
    problems: list[str] = []
    pos = nxt = count = 0
    while len(data) - pos >= 4:
        size = int.from_bytes(data[pos:pos + 4], "big", signed=True)
        if size < 4 or len(data) - pos - 4 < size:
            problems.append(f"reply at byte {pos}: bad or truncated frame (size {size})")
            return count, problems
        frame = data[pos + 4:pos + 4 + size]
        pos += 4 + size
        count += 1
        cid = int.from_bytes(frame[:4], "big", signed=True)
        for j in range(nxt, len(requests)):
            c, key, version = requests[j]
            if c == cid and _decodable(key, version, frame):
                nxt = j + 1
                break
        else:
            problems.append(f"reply #{count} (correlation id {cid}) answers no later request "
                            "or does not decode as its response")
            return count, problems
    if pos != len(data):
        problems.append(f"{len(data) - pos} stray bytes after the last reply")
    return count, problems


# ------------------------------------------------------------------------------- network

PROBE = request(api.API_VERSIONS, 0, {}, PROBE_CORRELATION_ID)


@dataclass(slots=True)
class Outcome:
    kind: str  # survived | closed | incomplete | timeout | connect_error
    replies: int = 0
    problems: list[str] = field(default_factory=list)


async def send_one(port: int, chunks: list[bytes], timeout: float = 3.0) -> Outcome:
    """Write one hostile stream on a fresh connection and judge the replies (see module doc)."""
    data = b"".join(chunks)
    expect = frame_stream(data)
    clean = expect.tail == "clean"
    requests = expect.requests + ([(PROBE_CORRELATION_ID, api.API_VERSIONS, 0)] if clean else [])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        return Outcome("connect_error", problems=[f"connect: {exc}"])
    got = bytearray()
    kind = "timeout"
    try:
        try:
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
            if clean:
                writer.write(PROBE)
            else:
                writer.write_eof()
            await writer.drain()
        except OSError:
            pass  # the broker closed early; read what it sent
        async with asyncio.timeout(timeout):
            while True:
                part = await reader.read(65536)
                if not part:
                    kind = "closed" if clean or expect.tail == "bad_size" else "incomplete"
                    break
                got += part
                if clean and _ends_with_probe(got):
                    kind = "survived"
                    break
    except (OSError, TimeoutError):
        if kind == "timeout" and reader.at_eof():
            kind = "closed"
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    replies, problems = check_replies(requests, bytes(got))
    if kind == "timeout":  # a held reply (long poll) may be cut short: only order is judged
        problems = [p for p in problems if "bad or truncated" not in p]
    return Outcome(kind, replies, problems)


def _ends_with_probe(got: bytearray) -> bool:
    """The probe reply is ApiVersions v0: its correlation id follows the last size prefix."""
    pos = 0
    last = -1
    while len(got) - pos >= 8:
        size = int.from_bytes(got[pos:pos + 4], "big", signed=True)
        if size < 4 or len(got) - pos - 4 < size:
            return False
        last = int.from_bytes(got[pos + 4:pos + 8], "big", signed=True)
        pos += 4 + size
    return pos == len(got) and last == PROBE_CORRELATION_ID


class RawClient:
    """A minimal Kafka client over the codec: one request at a time, checked correlation ids."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.cid = 0

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def call(self, key: int, version: int, body: dict) -> dict:
        self.cid += 1
        self.writer.write(request(key, version, body, self.cid, "canary"))
        size = int.from_bytes(await self.reader.readexactly(4), "big", signed=True)
        cid, reply = decode_response(key, version, await self.reader.readexactly(size))
        if cid != self.cid:
            raise AssertionError(f"canary: reply correlation id {cid}, expected {self.cid}")
        return reply

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


async def ensure_canary_topic(client: RawClient) -> None:
    reply = await client.call(api.CREATE_TOPICS, 4, {"topics": [
        {"name": CANARY_TOPIC, "num_partitions": 1, "replication_factor": 1}],
        "timeout_ms": 5000})
    code = reply["topics"][0]["error_code"]
    if code not in (0, 36):  # NONE, TOPIC_ALREADY_EXISTS
        raise AssertionError(f"canary: CreateTopics {CANARY_TOPIC} failed with error {code}")


async def roundtrip(client: RawClient, n: int) -> None:
    """Produce one record (acks=-1) and fetch it back; raises AssertionError on any difference."""
    key, value = b"canary-%d" % n, b"value-%d-" % n + bytes(range(256))
    batch = build_batch([KRecord(0, BASE_TS + n, key, value, (("n", b"%d" % n),))])
    reply = await client.call(api.PRODUCE, 8, {"acks": -1, "timeout_ms": 5000, "topic_data": [
        {"name": CANARY_TOPIC, "partition_data": [{"index": 0, "records": batch}]}]})
    part = reply["responses"][0]["partition_responses"][0]
    if part["error_code"] != 0:
        raise AssertionError(f"canary {n}: produce error {part['error_code']} "
                             f"({part['error_message']})")
    offset = part["base_offset"]
    reply = await client.call(api.FETCH, 11, {
        "max_wait_ms": 1000, "min_bytes": 1, "max_bytes": 1 << 20, "topics": [
            {"topic": CANARY_TOPIC, "partitions": [
                {"partition": 0, "fetch_offset": offset, "partition_max_bytes": 1 << 20}]}]})
    fpart = reply["responses"][0]["partitions"][0]
    if fpart["error_code"] != 0:
        raise AssertionError(f"canary {n}: fetch error {fpart['error_code']}")
    got = [r for r in decode_batches(fpart["records"]) if r.offset == offset]
    if [(r.key, r.value, r.headers) for r in got] != [(key, value, (("n", b"%d" % n),))]:
        raise AssertionError(f"canary {n}: fetched {got!r} at offset {offset}")


async def canary(port: int, n: int, persistent: RawClient | None = None) -> None:
    """Round trip on the long-lived connection (if given) and on a fresh one (10 s budget)."""
    async with asyncio.timeout(10):
        if persistent is not None:
            await roundtrip(persistent, n)
        client = await RawClient.connect(port)
        try:
            await client.call(api.API_VERSIONS, 3, {"client_software_name": "canary",
                                                    "client_software_version": "1"})
            await roundtrip(client, n)
        finally:
            await client.close()


def kafka_python_roundtrip(port: int) -> None:
    """kafka-python 3 produces one record (idempotent, acks=all) and reads it back."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    servers = f"127.0.0.1:{port}"
    producer = KafkaProducer(bootstrap_servers=servers, request_timeout_ms=10000)
    try:
        meta = producer.send(CANARY_TOPIC, key=b"kp", value=b"kafka-python").get(timeout=15)
    finally:
        producer.close(timeout=5)
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False,
                             consumer_timeout_ms=10000)
    try:
        tp = TopicPartition(CANARY_TOPIC, 0)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        record = next(iter(consumer))
    finally:
        consumer.close()
    if (record.key, record.value) != (b"kp", b"kafka-python"):
        raise AssertionError(f"kafka-python read back {record!r}")


# ------------------------------------------------------------------------------- the run

class Node:
    """`python -m real serve` on ports chosen by the OS, logging to a file."""

    def __init__(self, storage: str) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="twinmq-fuzz-kafka-")
        self.log_path = Path(self.dir.name) / "node.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "real", "serve", "--data-dir", str(Path(self.dir.name) / "d"),
             "--mqtt-port", "0", "--admin-port", "0", "--ws-port", "0", "--kafka-port", "0",
             "--storage", storage], stdout=self.log, stderr=subprocess.STDOUT)
        self.kafka_port = self.admin_port = 0

    async def started(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_path.read_text()
            kafka = re.search(r"kafka listening tcp [\d.]+:(\d+)", text)
            admin = re.search(r"admin http://[\d.]+:(\d+)", text)
            if kafka and admin:
                self.kafka_port, self.admin_port = int(kafka[1]), int(admin[1])
                return
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"node did not start:\n{text[-2000:]}")
            await asyncio.sleep(0.05)

    def health(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/health",
                                        timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> tuple[int, str]:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        text = self.log_path.read_text()
        self.dir.cleanup()
        return self.proc.returncode, text


async def _fuzz(args: argparse.Namespace, node: Node, result: dict) -> None:
    port = node.kafka_port
    outcomes: dict[str, int] = {}
    result["outcomes"] = outcomes
    problems: list[dict] = result["problems"]
    sem = asyncio.Semaphore(args.concurrency)
    tasks: dict[asyncio.Task, int] = {}

    async def one(index: int, chunks: list[bytes]) -> None:
        try:
            out = await send_one(port, chunks, args.timeout)
        finally:
            sem.release()
        outcomes[out.kind] = outcomes.get(out.kind, 0) + 1
        result["replies"] += out.replies
        if out.kind == "connect_error":  # the listener is gone: the node died (or hangs)
            if not result["crashed"]:
                result["crashed"] = True
                result["first_refused_input"] = index
                result["in_flight_at_crash"] = sorted(tasks.values())
                problems.append({"input": index, "kind": out.kind, "problems": out.problems})
        elif out.problems:
            result["problem_inputs"] += 1
            if len(problems) < 20:
                problems.append({"input": index, "kind": out.kind, "problems": out.problems})
        if out.kind == "timeout" and len(result["timeouts"]) < 10:
            result["timeouts"].append(index)

    persistent = await RawClient.connect(port)
    await ensure_canary_topic(persistent)
    canary_task: asyncio.Task | None = None
    for i in range(args.inputs):
        await sem.acquire()
        if result["crashed"]:
            sem.release()
            break
        task = asyncio.create_task(one(i, make_input(input_rng(args.seed, i))))
        tasks[task] = i
        task.add_done_callback(tasks.pop)
        if (i + 1) % args.canary_every == 0:
            if canary_task is not None:
                await _canary_done(canary_task, result)
            canary_task = asyncio.create_task(canary(port, i + 1, persistent))
    await asyncio.gather(*list(tasks))
    if canary_task is not None:
        await _canary_done(canary_task, result)
    await persistent.close()


async def _canary_done(task: asyncio.Task, result: dict) -> None:
    try:
        await task
        result["canaries"] += 1
    except (AssertionError, OSError, TimeoutError, asyncio.IncompleteReadError,
            KafkaCodecError) as exc:
        result["canary_failures"].append(f"{type(exc).__name__}: {exc}")


async def run(args: argparse.Namespace) -> dict:
    result: dict[str, Any] = {
        "inputs": args.inputs, "seed": args.seed, "concurrency": args.concurrency,
        "seeds": len(SEEDS), "canaries": 0, "canary_failures": [], "replies": 0,
        "problem_inputs": 0, "problems": [], "timeouts": [], "crashed": False}
    node = Node(args.storage)
    try:
        await node.started()
        started = time.monotonic()
        await _fuzz(args, node, result)
        result["seconds"] = round(time.monotonic() - started, 1)
        result["inputs_sent"] = sum(result["outcomes"].values())
        result["inputs_per_second"] = round(result["inputs_sent"] / max(result["seconds"], 0.1))
        result["alive"] = node.proc.poll() is None and node.health()
        if result["alive"] and args.client_check:
            try:
                await asyncio.to_thread(kafka_python_roundtrip, node.kafka_port)
                result["kafka_python"] = "ok"
            except Exception as exc:  # noqa: BLE001 - reported as a failed check
                result["kafka_python"] = f"{type(exc).__name__}: {exc}"
    finally:
        code, text = node.stop()
    result["exit_code"] = code
    result["tracebacks"] = text.count("Traceback")
    result["internal_errors"] = text.count("internal error")
    result["malformed_closes_logged"] = text.count("kafka: closing connection")
    if result["tracebacks"] or result["internal_errors"]:
        first = text.find("Traceback")
        result["log_excerpt"] = text[max(0, first - 500):first + 4000]
    return result


def passed(result: dict, args: argparse.Namespace) -> bool:
    return bool(result.get("alive") and not result["crashed"] and not result["tracebacks"]
                and not result["internal_errors"] and not result["canary_failures"]
                and result["canaries"] == args.inputs // args.canary_every
                and not result["problem_inputs"]
                and result.get("kafka_python", "ok") == "ok")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scenarios.fuzz.kafka",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--canary-every", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=3.0,
                        help="seconds to wait for the probe reply of one input")
    parser.add_argument("--storage", default="file", help="the node's storage engine")
    parser.add_argument("--no-client-check", dest="client_check", action="store_false",
                        help="skip the final kafka-python round trip")
    parser.add_argument("--out", default="reports/fuzz-kafka.json")
    args = parser.parse_args(argv)
    prov = provenance()  # the tree as the run starts
    result = asyncio.run(run(args))
    result["provenance"] = prov
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    ok = passed(result, args)
    print(json.dumps({k: v for k, v in result.items() if k != "log_excerpt"}))
    print("fuzz-kafka:", "OK" if ok else "FAILED", f"({args.inputs} inputs, seed {args.seed})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
