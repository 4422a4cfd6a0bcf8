"""The live-node Kafka fuzz driver (scenarios/fuzz/kafka.py): its seeds cover every advertised API
and version, its inputs are reproducible and really hostile, its oracles can fail, and a short run
against a live node passes."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct

import pytest

from real.kafka import api
from real.kafka.codec import decode_request, encode_response
from real.kafka.errors import UnsupportedVersion
from scenarios.fuzz import kafka as fk


@pytest.mark.integration
@pytest.mark.smoke
def test_short_fuzz_run_against_a_live_node(tmp_path) -> None:
    out = tmp_path / "fuzz.json"
    status = fk.main(["--inputs", "300", "--canary-every", "100", "--concurrency", "16",
                      "--out", str(out)])
    result = json.loads(out.read_text())
    assert status == 0, result
    assert result["alive"] and result["canaries"] == 3 and not result["canary_failures"]
    assert result["kafka_python"] == "ok"  # a real client still works afterwards
    assert result["tracebacks"] == 0 and result["internal_errors"] == 0
    assert result["problem_inputs"] == 0
    assert result["outcomes"]["closed"] > 50 and result["outcomes"]["survived"] > 10
    assert result["malformed_closes_logged"] > 50  # the inputs really were hostile


def test_seeds_are_valid_requests_of_every_advertised_api_and_version() -> None:
    seen = set()
    above = 0
    for frame in fk.SEEDS:
        size = struct.unpack_from(">i", frame)[0]
        body = frame[4:4 + size]
        try:
            header, _ = decode_request(body)
        except UnsupportedVersion as exc:  # the deliberate ApiVersions v4 probe
            assert (exc.api_key, exc.api_version) == (api.API_VERSIONS, 4)
            above += 1
            continue
        seen.add((header.api_key, header.api_version))
    assert above == 1
    assert seen == {(k, v) for k, (lo, hi) in api.VERSIONS.items() for v in range(lo, hi + 1)}


def test_inputs_are_seeded_and_cover_every_framing_outcome() -> None:
    a = [fk.make_input(fk.input_rng(5, i)) for i in range(3)]
    b = [fk.make_input(fk.input_rng(5, i)) for i in range(3)]
    assert a == b and all(chunks and all(chunks) for chunks in a)
    tails = [fk.frame_stream(b"".join(fk.make_input(fk.input_rng(1, i)))).tail
             for i in range(1000)]
    counts = {t: tails.count(t) for t in ("clean", "incomplete", "bad_size")}
    assert all(n >= 20 for n in counts.values()), counts


def test_frame_stream_frames_like_the_broker() -> None:
    one = fk.request(api.METADATA, 1, {"topics": None}, 7)
    assert fk.frame_stream(one + one).requests == [(7, api.METADATA, 1)] * 2
    assert fk.frame_stream(one + one[:5]).tail == "incomplete"
    assert fk.frame_stream(one + struct.pack(">i", -5) + one).tail == "bad_size"
    assert fk.frame_stream(struct.pack(">i", fk.MAX_REQUEST_BYTES + 1)).tail == "bad_size"


def test_reply_checker_catches_disorder_strangers_and_garbage() -> None:
    reqs = [(1, api.METADATA, 1), (2, api.FIND_COORDINATOR, 0)]
    meta = encode_response(api.METADATA, 1, 1, {"brokers": [], "topics": []})
    coord = encode_response(api.FIND_COORDINATOR, 0, 2, {"host": "h"})
    assert fk.check_replies(reqs, meta + coord) == (2, [])
    assert fk.check_replies(reqs, coord) == (1, [])  # a skipped reply is allowed
    assert fk.check_replies(reqs, coord + meta)[1]  # out of order
    assert fk.check_replies(reqs, encode_response(api.METADATA, 1, 9, {}))[1]  # stranger
    assert fk.check_replies(reqs, meta[:-1])[1]  # truncated
    wrong_shape = encode_response(api.FIND_COORDINATOR, 0, 1, {"host": "h"})
    assert fk.check_replies(reqs[:1], wrong_shape)[1]  # not a Metadata response


def test_canary_fails_without_a_broker() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OSError):
        asyncio.run(fk.canary(port, 1))


def test_hostile_bodies_encode_for_every_api() -> None:
    rng = random.Random(4)
    keys = set()
    for _ in range(300):
        frame = fk.odd_request(rng)
        header, _ = decode_request(frame[4:])
        keys.add(header.api_key)
    assert keys == set(api.VERSIONS)
