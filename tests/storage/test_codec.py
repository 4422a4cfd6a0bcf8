"""The batch codec: round trips, CRC-32C vectors, and every corruption is a named CorruptBatch."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from real.storage import CorruptBatch, InvalidRecord, Record, crc32c
from real.storage.crc32c import NATIVE, crc32c_py
from real.storage.record import HEADER_BYTES, decode_batch_at, decode_records, encode_records
from tests.storage.strategies import records

BATCHES = st.lists(records(), max_size=5)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0x00000000),
        (b"a", 0xC1D04330),
        (b"123456789", 0xE3069283),
        (bytes(32), 0x8A9136AA),  # RFC 3720 B.4: 32 bytes of zeros
        (b"\xff" * 32, 0x62A8AB43),  # RFC 3720 B.4: 32 bytes of ones
        (bytes(range(32)), 0x46DD794E),  # RFC 3720 B.4: incrementing
        (bytes(range(31, -1, -1)), 0x113FDB5C),  # RFC 3720 B.4: decrementing
    ],
)
def test_crc32c_known_vectors(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected
    assert crc32c(memoryview(data)) == expected
    assert crc32c_py(data) == expected


def test_crc32c_is_native() -> None:
    assert NATIVE, "google-crc32c's C extension should be installed (a declared dependency)"


@given(st.binary(max_size=300), st.integers(0, 0xFFFFFFFF))
def test_native_agrees_with_reference(data: bytes, crc: int) -> None:
    assert crc32c(data, crc) == crc32c_py(data, crc)


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_crc32c_continues_over_concatenation(a: bytes, b: bytes) -> None:
    assert crc32c(b, crc32c(a)) == crc32c(a + b)
    assert 0 <= crc32c(a) <= 0xFFFFFFFF


@given(BATCHES)
def test_round_trip(batch: list[Record]) -> None:
    data = encode_records(batch)
    assert decode_records(data) == batch
    assert decode_records(bytearray(data)) == batch


@given(st.lists(BATCHES, min_size=1, max_size=3))
def test_concatenated_batches_decode_in_sequence(batches: list[list[Record]]) -> None:
    data = b"".join(encode_records(b) for b in batches)
    pos, got = 0, []
    while pos < len(data):
        records_, pos = decode_batch_at(data, pos)
        got.append(records_)
    assert got == batches
    assert pos == len(data)


@settings(max_examples=200)
@given(BATCHES, st.data())
def test_any_changed_byte_is_detected(batch: list[Record], data: st.DataObject) -> None:
    encoded = bytearray(encode_records(batch))
    index = data.draw(st.integers(0, len(encoded) - 1), label="index")
    flip = data.draw(st.integers(1, 255), label="xor")
    encoded[index] ^= flip
    with pytest.raises(CorruptBatch) as info:
        decode_records(bytes(encoded))
    assert 0 <= info.value.byte_offset <= len(encoded)
    assert "expected" in str(info.value)


@given(BATCHES, st.data())
def test_truncation_and_trailing_bytes_are_detected(
    batch: list[Record], data: st.DataObject
) -> None:
    encoded = encode_records(batch)
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    with pytest.raises(CorruptBatch):
        decode_records(encoded[:cut])
    with pytest.raises(CorruptBatch, match=r"byte \d+: expected end of input"):
        decode_records(encoded + b"\x00")


def test_errors_name_the_byte_and_the_expectation() -> None:
    good = encode_records([Record(-1, 1, None, b"x")])
    with pytest.raises(CorruptBatch, match=r"at byte 0: expected magic b'TMQB'"):
        decode_records(b"XXXX" + good[4:])
    with pytest.raises(CorruptBatch, match=r"at byte 4: expected version 1"):
        decode_records(good[:4] + b"\x02" + good[5:])
    with pytest.raises(CorruptBatch, match=rf"at byte 0: expected a {HEADER_BYTES}-byte batch"):
        decode_records(good[:10])
    bad_crc = good[: HEADER_BYTES - 1] + bytes([good[HEADER_BYTES - 1] ^ 1]) + good[HEADER_BYTES:]
    with pytest.raises(CorruptBatch, match=rf"at byte {HEADER_BYTES - 4}: expected crc32c"):
        decode_records(bad_crc)


def test_record_validation_names_the_field() -> None:
    with pytest.raises(InvalidRecord, match="Record.payload must be bytes"):
        Record(-1, 0, None, "text")  # type: ignore[arg-type]
    with pytest.raises(InvalidRecord, match="Record.offset must be >= -1"):
        Record(-2, 0, None, b"")
    with pytest.raises(InvalidRecord, match=r"Record.headers\[0\] must be \(str, bytes\)"):
        Record(-1, 0, None, b"", headers=(("k", "v"),))  # type: ignore[arg-type]
    with pytest.raises(InvalidRecord, match="Record.timestamp_ms must be an int64"):
        Record(-1, 1 << 63, None, b"")


def test_size_counts_every_variable_field() -> None:
    bare = Record(-1, 0, None, b"")
    full = Record(-1, 0, b"kk", b"ppp", (("h", b"vv"),), meta=(("mqtt.qos", "1"),))
    assert full.size() - bare.size() == 2 + 3 + (1 + 2) + (8 + 1)
    assert bare.size() > 0
