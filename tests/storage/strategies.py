"""Hypothesis strategies for storage records, shared by the codec and engine tests."""

from __future__ import annotations

from hypothesis import strategies as st

from real.storage import Record

I64 = st.integers(-(1 << 63), (1 << 63) - 1)
OFFSETS = st.integers(-1, (1 << 63) - 1)
NAMES = st.text(max_size=6)


def records(
    timestamps: st.SearchStrategy[int] = I64,
    offsets: st.SearchStrategy[int] = OFFSETS,
    payload_max: int = 16,
) -> st.SearchStrategy[Record]:
    return st.builds(
        Record,
        offset=offsets,
        timestamp_ms=timestamps,
        key=st.none() | st.binary(max_size=8),
        payload=st.binary(max_size=payload_max),
        headers=st.lists(st.tuples(NAMES, st.binary(max_size=4)), max_size=2).map(tuple),
        producer_id=I64,
        producer_epoch=st.integers(-1, 1 << 15),
        sequence=st.integers(-1, (1 << 31) - 1),
        meta=st.lists(st.tuples(NAMES, NAMES), max_size=2).map(tuple),
    )


def fresh_records(payload_max: int = 24) -> st.SearchStrategy[Record]:
    """Records as a producer hands them to `append`: no offset, small non-monotonic timestamps."""
    return st.builds(
        Record,
        offset=st.just(-1),
        timestamp_ms=st.integers(0, 50),
        key=st.none() | st.binary(max_size=4),
        payload=st.binary(max_size=payload_max),
        meta=st.sampled_from(sorted([(), (("mqtt.qos", "1"),), (("kafka.partition", "0"),)])),
    )
