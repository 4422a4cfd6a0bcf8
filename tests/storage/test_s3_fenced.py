"""`S3Engine` in fenced (shared) mode: leaders of successive epochs over one prefix, a replaced
leader (a zombie) that keeps writing, what is valid and what is acknowledged."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.devices.objstore import SimObjectStore
from real.storage import InvalidArgument, Record
from real.storage.s3engine import (
    EngineFenced,
    S3Engine,
    S3EngineConfig,
    decode_epoch,
    epoch_key,
    parse_data_key,
)

PREFIX = "shared/t~0"


def recs(n: int, tag: str) -> list[Record]:
    return [Record(-1, i, None, f"{tag}{i}".encode()) for i in range(n)]


def values(engine: S3Engine) -> list[bytes]:
    end = engine.end_offset()
    start = engine.start_offset()
    if end == start:
        return []
    return [r.payload for r in engine.read(start, end - start, 1 << 30)]


def test_keys_and_markers_name_the_epoch() -> None:
    store = SimObjectStore(random.Random(1))
    one = S3Engine(store, PREFIX, epoch=3)
    assert decode_epoch(epoch_key(PREFIX, 3), store.raw(epoch_key(PREFIX, 3))) == (3, 0)
    one.append(recs(2, "a"))
    (key,) = [k for k in store.keys() if k.endswith(".tmqs")]
    assert parse_data_key(PREFIX, key) == (0, 3) and ".e0000000003." in key
    assert parse_data_key(PREFIX, f"{PREFIX}/{0:020d}.tmqs") == (0, 0)
    assert parse_data_key(PREFIX, f"{PREFIX}/{0:020d}.e0000000000.tmqs") is None
    assert parse_data_key(PREFIX, "other/x.tmqs") is None
    with pytest.raises(InvalidArgument):
        S3Engine(store, PREFIX, epoch=-1)


def test_a_new_leader_adopts_the_log_and_a_zombie_cannot_spoil_it() -> None:
    store = SimObjectStore(random.Random(2))
    old = S3Engine(store, PREFIX, epoch=1)
    old.append(recs(3, "old"))
    assert old.ack_end() == 0, "durable, but not confirmed by meta yet"
    new = S3Engine(store, PREFIX, epoch=2)  # meta moved the shard; the old leader runs on
    assert new.end_offset() == 3 and new.epoch_start == 3
    assert old.end_offset() == 3
    old.append(recs(2, "zombie"))  # PUT at base 3 under epoch 1: after the takeover
    assert old.durable_end() == 5
    new.append(recs(2, "new"))  # PUT at base 3 under epoch 2: a different key
    again = S3Engine(store, PREFIX, epoch=2)
    assert values(again) == [b"old0", b"old1", b"old2", b"new0", b"new1"]
    assert again.ignored_objects == 1
    with pytest.raises(EngineFenced, match="epoch 2 took over from epoch 1"):
        S3Engine(store, PREFIX, epoch=1)
    third = S3Engine(store, PREFIX, epoch=5)
    assert values(third) == values(again) and third.epochs == {1: 0, 2: 3, 5: 5}


def test_a_write_that_landed_before_the_takeover_is_kept() -> None:
    store = SimObjectStore(random.Random(3))
    old = S3Engine(store, PREFIX, epoch=1)
    old.append(recs(2, "a"))
    old.append(recs(1, "b"))  # completed before the new leader LISTs: adopted
    new = S3Engine(store, PREFIX, epoch=2)
    assert values(new) == [b"a0", b"a1", b"b0"] and new.epoch_start == 3


def test_ack_end_moves_only_by_confirm() -> None:
    store = SimObjectStore(random.Random(4))
    engine = S3Engine(store, PREFIX, epoch=1)
    engine.append(recs(4, "x"))
    assert engine.durable_end() == 4 and engine.ack_end() == 0
    engine.confirm(2)
    assert engine.ack_end() == 2
    engine.confirm(99)  # never past what is durable
    assert engine.ack_end() == 4
    unfenced = S3Engine(store, "plain/0")
    unfenced.append(recs(2, "y"))
    assert unfenced.ack_end() == unfenced.durable_end() == 2


def test_buffered_appends_are_neither_durable_nor_acknowledged() -> None:
    store = SimObjectStore(random.Random(5))
    clock = [0]
    engine = S3Engine(store, PREFIX, lambda: clock[0], S3EngineConfig(linger_ms=10), epoch=1)
    engine.append(recs(3, "x"))
    engine.confirm(3)
    assert engine.ack_end() == 0, "a buffered append is not durable"
    clock[0] = 10
    engine.poll(10)
    engine.confirm(3)
    assert engine.ack_end() == 3


def test_reopen_at_the_same_epoch_keeps_its_marker() -> None:
    store = SimObjectStore(random.Random(6))
    one = S3Engine(store, PREFIX, epoch=4)
    one.append(recs(2, "a"))
    one.close()
    back = S3Engine(store, PREFIX, epoch=4)
    assert back.epoch_start == 0 and values(back) == [b"a0", b"a1"]
    back.append(recs(1, "b"))
    assert values(S3Engine(store, PREFIX, epoch=6)) == [b"a0", b"a1", b"b0"]


def test_a_takeover_reads_the_newest_manifest_not_every_footer() -> None:
    store = SimObjectStore(random.Random(9))
    config = S3EngineConfig(manifest_every_objects=16)
    old = S3Engine(store, PREFIX, config=config, epoch=1)
    for i in range(40):
        old.append(recs(1, f"a{i}-"))
    assert f"{PREFIX}/manifest.e0000000001" in store.keys()
    gets = store.stats.requests["get"]
    new = S3Engine(store, PREFIX, config=config, epoch=2)
    assert new.manifest_use.value == "used"
    assert store.stats.requests["get"] - gets <= 12, "markers, a manifest, the newest footers"
    assert f"{PREFIX}/manifest.e0000000002" in store.keys(), "written at the takeover"
    for i in range(20):  # the replaced leader keeps writing, and PUTs its own manifest
        old.append(recs(1, f"z{i}-"))
    new.append(recs(1, "b"))
    third = S3Engine(store, PREFIX, config=config, epoch=3)
    got = values(third)
    assert len(got) == 41 and got[-1] == b"b0" and not any(v.startswith(b"z") for v in got)
    for epoch in (2, 3):
        store.delete(f"{PREFIX}/manifest.e{epoch:010d}")
    # only the replaced leader's manifest is left, and it lists its late objects: they are
    # still ignored (the manifest is a cache; the epoch markers decide)
    zombie_manifest = store.raw(f"{PREFIX}/manifest.e0000000001")
    assert zombie_manifest
    assert values(S3Engine(store, PREFIX, config=config, epoch=4)) == got


def test_destroy_removes_the_markers_too() -> None:
    store = SimObjectStore(random.Random(7))
    engine = S3Engine(store, PREFIX, epoch=1)
    engine.append(recs(2, "a"))
    engine.destroy()
    assert [k for k in store.keys() if k.startswith(PREFIX)] == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["old", "new", "takeover"]), st.integers(1, 3)),
                max_size=20))
def test_any_interleaving_keeps_every_acknowledged_record(steps: list[tuple[str, int]]) -> None:
    """Leaders take over one after another while the replaced ones keep appending. A record
    is acknowledged when its leader confirms it before the next takeover (what the node's meta
    read does). Every acknowledged record is in the log any later leader opens, in order, and
    the log holds nothing a replaced leader wrote after it was replaced."""
    store = SimObjectStore(random.Random(8))
    epoch = 1
    leaders = {1: S3Engine(store, PREFIX, epoch=1)}
    acked: list[bytes] = []
    written_after_replaced: set[bytes] = set()
    n = 0
    for what, count in steps:
        if what == "takeover":
            epoch += 1
            leaders[epoch] = S3Engine(store, PREFIX, epoch=epoch)
            continue
        writer = epoch if what == "new" else max(1, epoch - 1)
        engine = leaders[writer]
        batch = [Record(-1, 0, None, f"r{n + i}".encode()) for i in range(count)]
        n += count
        engine.append(batch)
        if writer == epoch:
            engine.confirm(engine.durable_end())
            acked.extend(r.payload for r in batch)
        else:
            written_after_replaced.update(r.payload for r in batch)
    final = S3Engine(store, PREFIX, epoch=epoch + 1)
    got = values(final)
    assert [v for v in got if v in set(acked)] == acked
    assert not set(got) & written_after_replaced


def test_the_tail_cache_serves_recent_reads_without_a_get() -> None:
    store = SimObjectStore(random.Random(10))
    engine = S3Engine(store, "plain/0", config=S3EngineConfig(tail_cache_bytes=200))
    for i in range(10):
        engine.append(recs(1, f"r{i}-"))  # 10 objects of one ~50-byte record
    gets = store.stats.requests["get"]
    assert [r.payload for r in engine.read(7, 10, 1 << 20)] == [b"r7-0", b"r8-0", b"r9-0"]
    assert store.stats.requests["get"] == gets, "the newest records come from memory"
    assert [r.payload for r in engine.read(0, 2, 1 << 20)] == [b"r0-0", b"r1-0"]
    assert store.stats.requests["get"] > gets, "older ones from the store"
    got = engine.read(2, 100, 1 << 20)  # across the store and the cache
    assert [r.offset for r in got] == list(range(2, 10))
    engine.delete_before(8)
    assert [r.offset for r in engine.read(8, 10, 1 << 20)] == [8, 9]
    engine.truncate(9)
    assert [r.offset for r in engine.read(8, 10, 1 << 20)] == [8]
    engine.invariants()


def test_a_read_touches_at_most_read_objects_max_objects() -> None:
    store = SimObjectStore(random.Random(11))
    engine = S3Engine(store, "plain/0", config=S3EngineConfig(read_objects_max=3))
    for i in range(10):
        engine.append(recs(1, f"r{i}-"))
    assert [r.offset for r in engine.read(0, 100, 1 << 20)] == [0, 1, 2]
    assert [r.offset for r in engine.read(3, 100, 1 << 20)] == [3, 4, 5]
    one = S3Engine(store, "plain/0", config=S3EngineConfig(read_objects_max=1))
    assert [r.offset for r in one.read(9, 100, 1 << 20)] == [9], "at least one record"


def test_reopening_with_its_own_manifest_and_many_objects_keeps_the_cadence() -> None:
    """Found by the node3-s3 sweep (seed 88): a leader reopening at its own epoch with its own
    up-to-date manifest fetched no footer, PUT no manifest, and failed its invariants."""
    store = SimObjectStore(random.Random(12))
    config = S3EngineConfig(manifest_every_objects=4)
    engine = S3Engine(store, PREFIX, config=config, epoch=1)
    for i in range(10):
        engine.append(recs(1, f"r{i}-"))
    engine.close()  # the manifest lists all 10
    again = S3Engine(store, PREFIX, config=config, epoch=1)
    again.invariants()
    assert again.manifest_use.value == "used" and again.end_offset() == 10
    again.append(recs(1, "s"))
    again.invariants()
