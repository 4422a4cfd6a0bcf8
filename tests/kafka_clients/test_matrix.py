"""The Kafka client integration matrix: four clients x the scenarios of issue 5's acceptance.

Clients (clients.py): kafka-python 3.0.12, confluent-kafka 2.16 (librdkafka 2.16), aiokafka 0.14
and kcat 1.7.1 (librdkafka 2.0.2, Debian). Scenarios, one test function each, parametrized by
client:

- produce with keys and headers: binary keys/values, a null key, a null value, headers with a
  repeated name, an empty and a null value; everything round-trips exactly (names, values,
  order) and offsets are contiguous from 0;
- assign + seek-to-beginning consume: three partitions, read twice, both passes return
  everything;
- group commit: a member reads, commits offset 4 and leaves; a new member of the same group
  resumes exactly at 4;
- group rebalance: two members on a 4-partition topic split it with no overlap, each receives
  only its partitions' records; after one leaves the other owns all four and resumes at the
  leaver's committed offsets;
- admin create/delete topics (kcat has no admin: "not applicable" cell, skipped);
- idempotent producer (kcat: `-X enable.idempotence=true`): every record exactly once;
- compression per codec (gzip, snappy, lz4, zstd: all four clients support all four), also
  checking on the wire (a raw Fetch) that the stored batches carry that codec;
- auto-create on produce (a topic that does not exist yet).

Every test gets its own broker (`kafka_broker`, see conftest.py: TWINMQ_TEST_KAFKA=twinmq|tansu).
Topics are created explicitly with confluent-kafka's AdminClient (`setup_topic`) except in the
admin and auto-create cells.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from tests.kafka_clients.clients import CLIENTS, CODEC_IDS, Confluent, Rec, wait_for, with_offsets
from tests.kafka_clients.conftest import BROKER_KIND, KafkaBroker, poll_until
from tests.kafka_clients.wire import fetch_batch_attributes, fetch_batches

pytestmark = pytest.mark.integration

NAMES = list(CLIENTS)
GROUP_PARTITIONS = frozenset(range(4))
# Headers that catch order loss, de-duplication by name and null/empty confusion.
RICH_HEADERS: tuple[tuple[str, bytes | None], ...] = (
    ("trace", b"\x00\x01\xff"), ("dup", b"first"), ("dup", b"second"), ("empty", b""),
    ("null", None))
TEXT_HEADERS: tuple[tuple[str, bytes | None], ...] = (
    ("trace", b"t-1"), ("dup", b"first"), ("dup", b"second"), ("empty", b""), ("null", None))

FILLER = "the quick brown fox jumps over the lazy dog " * 4

# Tansu 0.6 answers InitProducerId v0/v1 with error -1 (its bug: it reads the producer id/epoch
# fields that exist only from v3); aiokafka 0.14 implements InitProducerId v0 only.
TANSU_INIT_PRODUCER_ID_V0 = pytest.mark.xfail(
    BROKER_KIND == "tansu", strict=True,
    reason="Tansu 0.6 fails InitProducerId v0/v1 (error -1); aiokafka only speaks v0")


def client(name: str, broker: KafkaBroker) -> Any:
    return CLIENTS[name](broker.bootstrap)


def setup_topic(broker: KafkaBroker, topic: str, partitions: int) -> None:
    """Create `topic` with confluent-kafka's AdminClient and wait until Metadata shows it."""
    admin = Confluent(broker.bootstrap)
    admin.create_topic(topic, partitions)
    poll_until(lambda: admin.topics().get(topic) == partitions, f"topic {topic} in Metadata")


def sample(name: str, count: int, partition: int = 0, tag: str = "r",
           rich: bool = True, every_header: int = 2) -> list[Rec]:
    """`count` distinct records for `partition`; binary/null variety unless the client is kcat.

    Every `every_header`-th record carries the headers, the others none (1 = all of them; kcat
    sends one run, hence one batch, per distinct header set).
    """
    headers = TEXT_HEADERS if name == "kcat" else RICH_HEADERS
    if not CLIENTS[name].null_header_values:
        headers = tuple(h for h in headers if h[1] is not None)
    if name == "kcat" or not rich:
        # text values long and repetitive enough that every codec shrinks a batch of them
        # (librdkafka sends a batch uncompressed when compressing does not make it smaller)
        return [Rec(f"{tag}-k{partition}-{i}".encode(),
                    f"{tag}-v{partition}-{i}: {FILLER}".encode(),
                    headers if i % every_header == 0 else (), partition)
                for i in range(count)]
    out = []
    for i in range(count):
        key: bytes | None = b"\x00key\xff" + bytes([i]) if i % 5 != 1 else None
        value: bytes | None = f"{tag}-{partition}-{i}".encode() + bytes(range(256)) \
            if i % 5 != 3 else None
        out.append(Rec(key, value, headers if i % every_header == 0 else (), partition))
    return out


def expected_log(sent: Sequence[Rec]) -> dict[int, list[Rec]]:
    """Per partition, the records in send order with offsets 0, 1, 2, ..."""
    out: dict[int, list[Rec]] = {}
    for r in sent:
        log = out.setdefault(r.partition, [])
        log.append(replace(r, offset=len(log)))
    return out


def by_partition(got: Sequence[Rec]) -> dict[int, list[Rec]]:
    out: dict[int, list[Rec]] = {}
    for r in got:
        out.setdefault(r.partition, []).append(r)
    return out


def assert_round_trip(got: Sequence[Rec], sent: Sequence[Rec]) -> None:
    """`got` is exactly `sent`: same keys, values, headers (order), offsets contiguous from 0."""
    want, have = expected_log(sent), by_partition(got)
    assert sorted(have) == sorted(want), f"partitions {sorted(have)}, expected {sorted(want)}"
    for p in sorted(want):
        assert [r.offset for r in have[p]] == [r.offset for r in want[p]], f"partition {p}"
        assert have[p] == want[p], f"partition {p}"


def produce_checked(c: Any, topic: str, sent: Sequence[Rec], **kwargs: object) -> None:
    """Produce; if the client reports offsets, they are contiguous from 0 per partition."""
    offsets = c.produce(topic, sent, **kwargs)
    if offsets is not None:
        reported = with_offsets(sent, offsets)
        want = expected_log(sent)
        assert by_partition(reported) == want, "offsets reported by the producer"


# ------------------------------------------------------------------------------------ cells


@pytest.mark.parametrize("name", NAMES)
def test_produce_keys_headers(kafka_broker: KafkaBroker, name: str) -> None:
    c = client(name, kafka_broker)
    topic = "keys-headers"
    setup_topic(kafka_broker, topic, 1)
    sent = sample(name, 10)
    produce_checked(c, topic, sent)
    [got] = c.read(topic, [0], len(sent))
    assert_round_trip(got, sent)


@pytest.mark.parametrize("name", NAMES)
def test_assign_seek_to_beginning(kafka_broker: KafkaBroker, name: str) -> None:
    c = client(name, kafka_broker)
    topic = "assign-seek"
    setup_topic(kafka_broker, topic, 3)
    sent = [r for p in range(3) for r in sample(name, 4, p, rich=False)]
    produce_checked(c, topic, sent)
    first, second = c.read(topic, [0, 1, 2], len(sent), passes=2)
    assert_round_trip(first, sent)
    assert_round_trip(second, sent)


@pytest.mark.parametrize("name", NAMES)
def test_group_commit_resume(kafka_broker: KafkaBroker, name: str) -> None:
    """Commit offset 4 in group g, leave; a new member of g resumes at 4 and reads 4..12."""
    c = client(name, kafka_broker)
    topic, group = "group-commit", "g-commit"
    setup_topic(kafka_broker, topic, 1)
    first = sample(name, 10, rich=False)
    produce_checked(c, topic, first)
    watch = threading.Condition()
    if name == "kcat":  # kcat commits what it delivered: stop it after exactly 4 records
        m1 = c.member(topic, group, watch, "m1", max_records=4)
        wait_for(watch, [m1], lambda: m1.closed, "kcat -c 4 exits")
    else:
        m1 = c.member(topic, group, watch, "m1")
        wait_for(watch, [m1], lambda: len(m1.records) >= 4, "m1 receives 4 records")
        m1.commit({0: 4})
    m1.close()
    assert [r.offset for r in m1.records[:4]] == [0, 1, 2, 3]
    more = sample(name, 3, tag="more", rich=False)
    c.produce(topic, more)
    m2 = c.member(topic, group, watch, "m2")
    wait_for(watch, [m2], lambda: len(m2.records) >= 9, "m2 receives offsets 4..12")
    m2.close()
    want = [replace(r, offset=i) for i, r in enumerate(first + more)][4:]
    assert [r.offset for r in m2.records] == list(range(4, 13))
    assert m2.records == want


@pytest.mark.parametrize("name", NAMES)
def test_group_rebalance(kafka_broker: KafkaBroker, name: str) -> None:
    """Two members split 4 partitions; after one leaves the other owns all four."""
    c = client(name, kafka_broker)
    topic, group = "group-rebalance", "g-rebalance"
    setup_topic(kafka_broker, topic, 4)
    watch = threading.Condition()
    a = c.member(topic, group, watch, "a")
    members = [a]
    try:
        wait_for(watch, members, lambda: a.assigned == GROUP_PARTITIONS, "a owns all four")
        b = c.member(topic, group, watch, "b")
        members.append(b)

        def split() -> bool:
            return bool(a.assigned) and bool(b.assigned) and not a.assigned & b.assigned \
                and a.assigned | b.assigned == GROUP_PARTITIONS

        wait_for(watch, members, split, "a and b split the four partitions")
        sent = [r for p in sorted(GROUP_PARTITIONS) for r in sample(name, 2, p, rich=False)]
        c.produce(topic, sent)
        wait_for(watch, members, lambda: len(a.records) + len(b.records) >= len(sent),
                 "a and b receive the 8 records")
        with watch:
            for m in members:
                stray = [r for r in m.records if r.partition not in m.assigned]
                assert not stray, f"{m.name} got records of partitions it does not own: {stray}"
            assert_round_trip(a.records + b.records, sent)
        a.commit_consumed()
        b.commit_consumed()
        b.close()
        members.remove(b)
        wait_for(watch, members, lambda: a.assigned == GROUP_PARTITIONS,
                 "a owns all four after b left")
        seen = len(a.records)
        more = [r for p in sorted(GROUP_PARTITIONS) for r in sample(name, 1, p, "more", False)]
        c.produce(topic, more)
        wait_for(watch, members, lambda: len(a.records) >= seen + len(more),
                 "a receives the 4 new records")
    finally:
        for m in members:
            m.close()
    new = by_partition(a.records[seen:])
    assert {p: [(r.offset, r.value) for r in rs] for p, rs in new.items()} == \
        {r.partition: [(2, r.value)] for r in more}, "a resumed at b's committed offsets"


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.skip(reason="kcat has no create/delete topics"),
                 id="kcat-not-applicable") if n == "kcat" else n for n in NAMES])
def test_admin_create_delete(kafka_broker: KafkaBroker, name: str) -> None:
    c = client(name, kafka_broker)
    topic = f"admin-{name}"
    c.create_topic(topic, 3)
    poll_until(lambda: c.topics().get(topic) == 3,
               f"{topic} listed with 3 partitions")
    c.delete_topic(topic)
    poll_until(lambda: topic not in c.topics(),
               f"{topic} gone from Metadata")


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=TANSU_INIT_PRODUCER_ID_V0) if n == "aiokafka" else n for n in NAMES])
def test_idempotent_producer(kafka_broker: KafkaBroker, name: str) -> None:
    c = client(name, kafka_broker)
    topic = "idempotent"
    setup_topic(kafka_broker, topic, 2)
    # one header set: kcat sends each partition in one run, i.e. one producer (id) per partition
    sent = [r for p in range(2) for r in sample(name, 15, p, every_header=1)]
    produce_checked(c, topic, sent, idempotent=True)
    [got] = c.read(topic, [0, 1], len(sent))
    assert_round_trip(got, sent)
    for p in range(2):  # idempotence was really on: a producer id, sequences without gaps
        heads = fetch_batches(kafka_broker.host, kafka_broker.port, topic, p)
        assert heads and all(h.producer_id >= 0 for h in heads), heads
        assert len({(h.producer_id, h.producer_epoch) for h in heads}) == 1, heads
        starts = [sum(h.record_count for h in heads[:i]) for i in range(len(heads))]
        assert [h.base_sequence for h in heads] == starts, heads


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
@pytest.mark.parametrize("name", NAMES)
def test_compression(kafka_broker: KafkaBroker, name: str, codec: str) -> None:
    c = client(name, kafka_broker)
    assert codec in c.codecs, f"{name} lacks {codec}"
    topic = f"compressed-{codec}"
    setup_topic(kafka_broker, topic, 1)
    # librdkafka sends a batch uncompressed when compressing does not shrink it; under load
    # linger.ms closes batches of one incompressible binary record, so confluent-kafka (like
    # kcat) gets the repetitive text records, which every codec shrinks in any batching.
    rich = name != "confluent-kafka"
    sent = sample(name, 20, rich=rich, every_header=1)  # one header set: one batch for kcat
    produce_checked(c, topic, sent, compression=codec)
    [got] = c.read(topic, [0], len(sent))
    assert_round_trip(got, sent)
    attrs = fetch_batch_attributes(kafka_broker.host, kafka_broker.port, topic, 0)
    assert attrs, "no batch on the wire"
    assert [a & 7 for a in attrs] == [CODEC_IDS[codec]] * len(attrs), attrs


@pytest.mark.parametrize("name", NAMES)
def test_auto_create_on_produce(kafka_broker: KafkaBroker, name: str) -> None:
    c = client(name, kafka_broker)
    topic = f"auto-{name}"
    sent = sample(name, 5, rich=False)
    c.produce(topic, sent)
    [got] = c.read(topic, [0], len(sent))
    assert_round_trip(got, sent)
