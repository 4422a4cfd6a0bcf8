"""Two hand-built Kafka requests the tests use to look at a broker without any client library.

- `probe_api_versions(host, port)`: ApiVersions v0 (the version every broker answers); the
  readiness probe of the `kafka_broker` fixture.
- `fetch_batches(host, port, topic, partition)`: Fetch v4 from offset 0, returning the header of
  every RecordBatch (magic 2) in the reply. The compression cells use it to prove that the stored
  batches really carry the codec the client was asked for (a client may silently fall back to no
  compression, e.g. librdkafka for zstd below Produce v7 / Fetch v10), the idempotence cells that
  they carry a producer id and gap-free sequence numbers.

Both use classic (non-flexible) versions, so the layouts are plain big-endian fields:
request header v1 = api_key i16 | api_version i16 | correlation_id i32 | client_id string
(i16 length + bytes); response header v0 = correlation_id i32. Strings are i16-length-prefixed,
arrays i32-count-prefixed, `records` i32-length-prefixed bytes.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

CLIENT_ID = b"twinmq-test-wire"
API_FETCH = 1
API_VERSIONS = 18
BATCH_HEADER_BYTES = 61  # RecordBatch v2 header; attributes are the i16 at byte 21
FETCH_MAX_BYTES = 8 * 1024 * 1024


def _request(sock: socket.socket, key: int, version: int, corr: int, body: bytes) -> bytes:
    """Send one request, return the response body after the correlation id (checked)."""
    head = struct.pack(">hhih", key, version, corr, len(CLIENT_ID)) + CLIENT_ID
    frame = head + body
    sock.sendall(struct.pack(">i", len(frame)) + frame)
    size = struct.unpack(">i", _read_exact(sock, 4))[0]
    data = _read_exact(sock, size)
    (got,) = struct.unpack_from(">i", data)
    assert got == corr, f"correlation id {got}, expected {corr}"
    return data[4:]


def _read_exact(sock: socket.socket, count: int) -> bytes:
    buf = bytearray()
    while len(buf) < count:
        data = sock.recv(count - len(buf))
        if not data:
            raise ConnectionError(f"closed after {len(buf)} of {count} bytes")
        buf += data
    return bytes(buf)


def probe_api_versions(host: str, port: int, timeout: float = 1.0) -> dict[int, tuple[int, int]]:
    """ApiVersions v0: {api_key: (min, max)}; raises if refused, closed or error_code != 0."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        body = _request(sock, API_VERSIONS, 0, 1, b"")
    (error,) = struct.unpack_from(">h", body)
    assert error == 0, f"ApiVersions v0 error_code {error}"
    (count,) = struct.unpack_from(">i", body, 2)
    ranges = {}
    for i in range(count):
        key, lo, hi = struct.unpack_from(">hhh", body, 6 + 6 * i)
        ranges[key] = (lo, hi)
    assert ranges, "ApiVersions v0 listed no API"
    return ranges


def _fetch_v4_body(topic: str, partition: int) -> bytes:
    name = topic.encode()
    return struct.pack(">iiiib", -1, 500, 1, FETCH_MAX_BYTES, 0) + \
        struct.pack(">ih", 1, len(name)) + name + \
        struct.pack(">iiqi", 1, partition, 0, FETCH_MAX_BYTES)


class BatchHead(NamedTuple):
    """The RecordBatch v2 header fields the tests look at (byte offsets in the 61-byte header)."""

    base_offset: int  # i64 @0
    attributes: int  # i16 @21: bits 0-2 codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd)
    producer_id: int  # i64 @43: -1 unless the producer is idempotent/transactional
    producer_epoch: int  # i16 @51
    base_sequence: int  # i32 @53
    record_count: int  # i32 @57


def fetch_batches(host: str, port: int, topic: str, partition: int,
                  timeout: float = 5.0) -> list[BatchHead]:
    """The header of each RecordBatch in `topic`/`partition` from offset 0 (Fetch v4).

    Only the first reply is read (up to FETCH_MAX_BYTES), plenty for the tests' few batches; a
    truncated last batch is ignored. The broker must be the partition's leader.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        body = _request(sock, API_FETCH, 4, 2, _fetch_v4_body(topic, partition))
    pos = 4  # throttle_time_ms
    (topics,) = struct.unpack_from(">i", body, pos)
    assert topics == 1, f"Fetch reply has {topics} topics"
    (nlen,) = struct.unpack_from(">h", body, pos + 4)
    pos += 6 + nlen
    (parts,) = struct.unpack_from(">i", body, pos)
    assert parts == 1, f"Fetch reply has {parts} partitions"
    index, error = struct.unpack_from(">ih", body, pos + 4)
    assert (index, error) == (partition, 0), f"Fetch partition {index} error_code {error}"
    pos += 4 + 4 + 2 + 8 + 8  # count, partition, error, high watermark, last stable offset
    (aborted,) = struct.unpack_from(">i", body, pos)
    pos += 4 + max(aborted, 0) * 16
    (size,) = struct.unpack_from(">i", body, pos)
    return parse_batch_heads(body[pos + 4: pos + 4 + max(size, 0)])


def fetch_batch_attributes(host: str, port: int, topic: str, partition: int) -> list[int]:
    """Just the `attributes` of each batch (see `fetch_batches`)."""
    return [b.attributes for b in fetch_batches(host, port, topic, partition)]


def parse_batch_heads(records: bytes) -> list[BatchHead]:
    """Headers of the whole magic-2 batches in a `records` field (a partial last one ignored)."""
    heads = []
    pos = 0
    while pos + BATCH_HEADER_BYTES <= len(records):
        (length,) = struct.unpack_from(">i", records, pos + 8)
        magic = records[pos + 16]
        assert magic == 2, f"batch at byte {pos} has magic {magic}, expected 2"
        if pos + 12 + length > len(records):
            break  # partial trailing batch
        (base_offset,) = struct.unpack_from(">q", records, pos)
        (attrs,) = struct.unpack_from(">h", records, pos + 21)
        pid, epoch, seq, count = struct.unpack_from(">qhii", records, pos + 43)
        heads.append(BatchHead(base_offset, attrs, pid, epoch, seq, count))
        pos += 12 + length
    return heads
