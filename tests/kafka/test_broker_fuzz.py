"""Hostile input against the Kafka broker core (real/kafka/broker.py), no sockets.

Hypothesis drives `KafkaBroker.receive` with the live fuzzer's inputs (scenarios/fuzz/kafka.py:
mutated and hostile-valued requests of every API and version, lying size prefixes, garbage,
pipelined frames split at random points) on several connections at once, over an in-memory
ShardStore and a synchronous MetaPort that applies each command to a `MetaStateMachine` on the
spot. Asserted:

- no exception escapes `receive`, `closed` or `tick`;
- a connection that is closed gets no output after its close, and only hostile connections are
  ever closed: a canary connection interleaved with them keeps getting correct replies and reads
  back the record it produced;
- every reply answers a request of its connection, in request order, and decodes as that
  request's response (`fuzz_kafka.check_replies`);
- nothing is stuck: once the clock has passed every timeout, a probe request on each surviving
  connection is answered.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from real.kafka import api
from real.kafka import errors as E
from real.kafka.broker import KafkaBroker, KafkaConfig
from real.kafka.codec import decode_response
from real.kafka.records import KRecord, build_batch, decode_batches
from real.meta import MetaResult, MetaStateMachine
from real.meta.commands import ENGINES
from real.storage.memory import MemoryEngine
from real.storage.shards import ShardStore
from scenarios.fuzz import kafka as fk

MAX_REQUEST = 1 << 20
CANARY = 1
CANARY_TOPIC = "canary"
FOREVER_MS = 1 << 34  # later than any timeout a request can ask for (int32 milliseconds)


class SyncMeta:
    """MetaPort that applies every proposal at once, inside `propose`."""

    def __init__(self) -> None:
        self.sm = MetaStateMachine()
        self.index = 0

    def machine(self) -> MetaStateMachine:
        return self.sm

    def barrier(self, done: Callable[[], None]) -> Callable[[], None] | None:
        done()  # one node: its applied state is the latest
        return lambda: None

    def propose(self, data: bytes, done: Callable[[MetaResult | Exception], None]) -> None:
        self.index += 1
        done(self.sm.apply(self.index, data))


class Harness:
    """One broker, its clock, and per-connection output (bytes received, closed or not)."""

    def __init__(self, factories: dict | None = None) -> None:
        self.now = 0
        self.shards = ShardStore(factories or {k: (lambda _n: MemoryEngine()) for k in ENGINES},
                                 default_engine="memory")
        self.broker = KafkaBroker(
            KafkaConfig(default_engine="memory", max_request_bytes=MAX_REQUEST,
                        group_min_session_timeout_ms=10),
            lambda: self.now, self.shards, SyncMeta(), member_prefix="t")
        self.got: dict[int, bytearray] = {}
        self.closed: set[int] = set()
        self.next_conn = 100

    def open(self, conn: int) -> None:
        self.broker.open(conn, peer=f"peer-{conn}")
        self.got[conn] = bytearray()
        self.broker.invariants()

    def feed(self, conn: int, data: bytes) -> None:
        self.broker.receive(conn, data)
        self.collect()

    def advance(self, ms: int) -> None:
        self.now += ms
        self.broker.tick()
        self.broker.durable_progress()
        self.collect()

    def disconnect(self, conn: int) -> None:
        self.broker.closed(conn)
        self.closed.add(conn)
        self.collect()

    def collect(self) -> None:
        for conn, data, close in self.broker.drain():
            assert conn not in self.closed, f"output for connection {conn} after its close"
            self.got[conn] += data
            if close:
                assert conn != CANARY, "the canary connection was closed"
                self.closed.add(conn)
        self.broker.invariants()  # after every input: each one ends with a collect

    def call(self, key: int, version: int, body: dict, cid: int) -> dict:
        """A request on the canary connection; its reply must come at once."""
        before = len(self.got[CANARY])
        self.feed(CANARY, fk.request(key, version, body, cid))
        reply = bytes(self.got[CANARY][before:])
        size = struct.unpack_from(">i", reply)[0]
        assert len(reply) == 4 + size, f"canary: no single reply to {api.NAMES[key]}"
        got_cid, body = decode_response(key, version, reply[4:])
        assert got_cid == cid
        return body


def canary_roundtrip(h: Harness, n: int) -> None:
    value = b"alive-%d" % n
    batch = build_batch([KRecord(0, 1000 + n, b"k", value)])
    reply = h.call(api.PRODUCE, 8, {"acks": -1, "timeout_ms": 100, "topic_data": [
        {"name": CANARY_TOPIC, "partition_data": [{"index": 0, "records": batch}]}]}, 10 * n)
    part = reply["responses"][0]["partition_responses"][0]
    assert part["error_code"] == E.NONE, part
    reply = h.call(api.FETCH, 11, {"max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20,
                                   "topics": [{"topic": CANARY_TOPIC, "partitions": [
                                       {"partition": 0, "fetch_offset": part["base_offset"],
                                        "partition_max_bytes": 1 << 20}]}]}, 10 * n + 1)
    records = decode_batches(reply["responses"][0]["partitions"][0]["records"])
    assert [(r.offset, r.value) for r in records][:1] == [(part["base_offset"], value)]


def start(h: Harness) -> None:
    h.open(CANARY)
    reply = h.call(api.CREATE_TOPICS, 4, {"topics": [
        {"name": CANARY_TOPIC, "num_partitions": 1, "replication_factor": 1}]}, 1)
    assert reply["topics"][0]["error_code"] == E.NONE
    canary_roundtrip(h, 1)


def finish(h: Harness, streams: dict[int, bytes]) -> None:
    """Release every held reply, probe the survivors, check every connection's replies."""
    for _ in range(3):
        h.advance(FOREVER_MS)
    for conn, data in sorted(streams.items()):
        expect = fk.frame_stream(data, MAX_REQUEST)
        requests = list(expect.requests)
        if conn not in h.closed and expect.tail == "clean":
            h.feed(conn, fk.PROBE)
            requests.append((fk.PROBE_CORRELATION_ID, api.API_VERSIONS, 0))
            h.advance(FOREVER_MS)
            assert conn in h.closed or fk._ends_with_probe(h.got[conn]), \
                f"connection {conn}: the probe got no reply (a request is stuck)"
        replies, problems = fk.check_replies(requests, bytes(h.got[conn]))
        assert not problems, (conn, problems)
    canary_roundtrip(h, 2)


def run_streams(h: Harness, inputs: list[list[bytes]], rng: random.Random,
                drop: bool) -> dict[int, bytes]:
    """Interleave the chunks of every input on its own connection, with canary calls between."""
    streams = {}
    queues = {}
    for chunks in inputs:
        conn = h.next_conn
        h.next_conn += 1
        h.open(conn)
        streams[conn] = b"".join(chunks)
        queues[conn] = list(chunks)
    n = 3
    while queues:
        conn = rng.choice(sorted(queues))
        chunk = queues[conn].pop(0)
        if conn not in h.closed:
            h.feed(conn, chunk)
        if not queues[conn]:
            del queues[conn]
        if rng.random() < 0.2:
            h.advance(rng.choice((1, 50, 6000)))
        if rng.random() < 0.1:
            canary_roundtrip(h, n)
            n += 1
    if drop:  # a client that goes away with requests pending
        victim = rng.choice(sorted(streams))
        if victim not in h.closed:
            h.disconnect(victim)
    return streams


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), conns=st.integers(1, 6), drop=st.booleans())
def test_fuzz_inputs_never_escape_and_spare_other_connections(seed: int, conns: int,
                                                              drop: bool) -> None:
    rng = random.Random(seed)
    h = Harness()
    start(h)
    inputs = [fk.make_input(rng) for _ in range(conns)]
    streams = run_streams(h, inputs, rng, drop)
    finish(h, streams)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 8))
def test_pipelined_valid_seeds_are_all_answered_in_order(seed: int, count: int) -> None:
    """Unmutated seeds of every API, pipelined and split at random points: nothing is closed
    except by a SASL failure (SASL is not configured), and replies keep request order."""
    rng = random.Random(seed)
    h = Harness()
    start(h)
    frames = [rng.choice(fk.SEEDS) for _ in range(count)]
    data = b"".join(frames)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, 5)))
    bounds = [0, *cuts, len(data)]
    streams = run_streams(h, [[data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]],
                          rng, False)
    sasl = any(struct.unpack_from(">h", f, 4)[0] in (api.SASL_HANDSHAKE, api.SASL_AUTHENTICATE)
               for f in frames)
    if not sasl:
        assert 100 not in h.closed
    finish(h, streams)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300), chunk=st.integers(1, 50))
def test_random_bytes_after_a_valid_request(data: bytes, chunk: int) -> None:
    h = Harness()
    start(h)
    stream = fk.request(api.API_VERSIONS, 3, {"client_software_name": "x",
                                              "client_software_version": "1"}, 5) + data
    h.open(100)
    for pos in range(0, len(stream), chunk):
        if 100 not in h.closed:
            h.feed(100, stream[pos:pos + chunk])
    finish(h, {100: stream})


# ------------------------------------------------------------------ one case per hostile shape

def one_connection(stream: bytes) -> Harness:
    h = Harness()
    start(h)
    h.open(100)
    h.feed(100, stream)
    return h


VALID = fk.request(api.METADATA, 1, {"topics": None}, 77)


@pytest.mark.parametrize(("name", "stream"), [
    ("negative size", struct.pack(">i", -1) + VALID),
    ("size above max_request_bytes", struct.pack(">i", MAX_REQUEST + 1) + VALID),
    ("frame shorter than a header", struct.pack(">i", 7) + VALID[4:11]),
    ("unknown api key", struct.pack(">ihhi", 8, 1000, 0, 3)),
    ("unsupported Metadata version", struct.pack(">ihhih", 10, api.METADATA, 99, 3, -1)),
    ("trailing bytes", struct.pack(">i", len(VALID) - 3) + VALID[4:] + b"\x00"),
    ("array count larger than the frame", fk.request(api.DESCRIBE_GROUPS, 0, {"groups": []}, 4)
     [:-4] + struct.pack(">i", 0x7FFFFFFF)),
])
def test_malformed_frame_closes_only_its_connection(name: str, stream: bytes) -> None:
    h = one_connection(VALID + stream + VALID)
    assert 100 in h.closed, name
    replies, problems = fk.check_replies([(77, api.METADATA, 1)], bytes(h.got[100]))
    assert replies == 1 and not problems  # the request before the bad frame was answered
    canary_roundtrip(h, 5)


def test_unsupported_api_versions_version_gets_the_v0_error_and_stays_open() -> None:
    h = one_connection(fk.request(api.API_VERSIONS, 4, {}, 9) + VALID)
    assert 100 not in h.closed
    got = bytes(h.got[100])
    replies, problems = fk.check_replies([(9, api.API_VERSIONS, 4), (77, api.METADATA, 1)], got)
    assert replies == 2 and not problems
    size = struct.unpack_from(">i", got)[0]
    cid, body = decode_response(api.API_VERSIONS, 0, got[4:4 + size])
    assert cid == 9 and body["error_code"] == E.UNSUPPORTED_VERSION
    assert {k["api_key"] for k in body["api_keys"]} == set(api.VERSIONS)


def test_a_request_fed_byte_by_byte_is_answered() -> None:
    h = Harness()
    start(h)
    h.open(100)
    for i in range(len(VALID)):
        h.feed(100, VALID[i:i + 1])
        assert bool(h.got[100]) == (i == len(VALID) - 1)
    assert fk.check_replies([(77, api.METADATA, 1)], bytes(h.got[100])) == (1, [])


def test_huge_claimed_size_waits_for_bytes_without_allocating() -> None:
    h = one_connection(struct.pack(">i", MAX_REQUEST) + b"\x00" * 10)
    assert 100 not in h.closed and not h.got[100]
    assert len(h.broker.conns[100].buf) == 14  # buffered what came, nothing more
    h.disconnect(100)
    canary_roundtrip(h, 5)


# ------------------------------------------------------------------ findings (see the report)

class FailingEngine(Exception):
    pass


def _failing_factory(_name: str) -> MemoryEngine:
    raise FailingEngine("device error: File name too long")


def test_storage_error_on_topic_creation_fails_the_request_only() -> None:
    factories = {k: (lambda _n: MemoryEngine()) for k in ENGINES}
    factories["file"] = _failing_factory
    h = Harness(factories)
    start(h)
    body = h.call(api.CREATE_TOPICS, 4, {"topics": [
        {"name": "t", "num_partitions": 1, "replication_factor": 1,
         "configs": [{"name": "storage.engine", "value": "file"}]}]}, 3)
    assert body["topics"][0]["error_code"] != E.NONE
    canary_roundtrip(h, 5)


def test_create_topics_answers_every_topic_when_meta_completes_at_once() -> None:
    """Regression: the reply used to go out after the first topic (a dropped proposal in the
    node completes at once too)."""
    h = Harness()
    start(h)
    body = h.call(api.CREATE_TOPICS, 4, {"topics": [
        {"name": n, "num_partitions": 1, "replication_factor": 1} for n in ("a", "b")]}, 3)
    assert [t["name"] for t in body["topics"]] == ["a", "b"]
