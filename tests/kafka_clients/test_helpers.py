"""Fast checks of the matrix's own tools: the Tansu relay's rewrite and the raw-Fetch parser.

These run in the default suite (no broker process): they pin down the byte layouts that the
integration tests rely on, so a failure there points at the tool rather than at a broker.
"""

from __future__ import annotations

import struct

from real.kafka.records import KRecord, build_batch
from tests.kafka_clients.tansu_proxy import strip_api_versions_tags
from tests.kafka_clients.wire import parse_batch_heads


def _uv(n: int) -> bytes:
    """Unsigned varint (values < 128 only: enough for these frames)."""
    assert 0 <= n < 128
    return bytes([n])


def api_versions_v3(entries: list[tuple[int, int, int]], tags: bytes) -> bytes:
    """An ApiVersions v3 response frame (header v0 + body) with a given top-level tag section."""
    body = struct.pack(">ih", 7, 0) + _uv(len(entries) + 1)
    for key, lo, hi in entries:
        body += struct.pack(">hhh", key, lo, hi) + _uv(0)
    return body + struct.pack(">i", 0) + tags


def test_strip_api_versions_tags_keeps_the_api_list() -> None:
    entries = [(0, 0, 11), (1, 0, 16), (18, 0, 4)]
    # Tansu's section: 4 tags (SupportedFeatures, FinalizedFeaturesEpoch=-1, FinalizedFeatures,
    # ZkMigrationReady=false)
    tansu_tags = _uv(4) + b"\x00\x01\x01" + b"\x01\x08" + b"\xff" * 8 + b"\x02\x01\x01" + \
        b"\x03\x01\x00"
    stripped = strip_api_versions_tags(api_versions_v3(entries, tansu_tags))
    assert stripped == api_versions_v3(entries, b"\x00")
    assert stripped.endswith(struct.pack(">i", 0) + b"\x00")


def test_strip_api_versions_tags_leaves_unparseable_frames_alone() -> None:
    garbage = b"\x00\x00\x00\x07\x00\x00\x7f"  # claims 126 entries, has none
    assert strip_api_versions_tags(garbage) == garbage
    empty_tags = api_versions_v3([(18, 0, 3)], b"\x00")
    assert strip_api_versions_tags(empty_tags) == empty_tags


def test_batch_attributes_reads_each_batch_codec() -> None:
    recs = [KRecord(i, 1000 + i, b"k", b"v" * 50, (("h", b"x"),)) for i in range(3)]
    data = b"".join(build_batch(recs, base_offset=3 * n, compression=codec)
                    for n, codec in enumerate([0, 1, 2, 3, 4]))
    heads = parse_batch_heads(data)
    assert [h.attributes & 7 for h in heads] == [0, 1, 2, 3, 4]
    assert [(h.base_offset, h.record_count) for h in heads] == [(3 * n, 3) for n in range(5)]
    # a truncated trailing batch (Fetch may cut the last one) is ignored
    assert [h.attributes & 7 for h in parse_batch_heads(data[:-5])] == [0, 1, 2, 3]


def test_batch_heads_carry_producer_fields() -> None:
    recs = [KRecord(i, 1000 + i, None, b"v", ()) for i in range(4)]
    data = build_batch(recs, producer_id=42, producer_epoch=3, base_sequence=7)
    [head] = parse_batch_heads(data)
    assert (head.producer_id, head.producer_epoch, head.base_sequence) == (42, 3, 7)
    assert head.record_count == 4
