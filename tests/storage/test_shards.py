"""ShardStore: the catalogue, the data path, retention, and its typed errors."""

from __future__ import annotations

import pytest

from real.storage import (
    InvalidArgument,
    MemoryEngine,
    Record,
    ShardExists,
    ShardInfo,
    ShardStore,
    StorageFull,
    UnknownEngine,
    UnknownShard,
)


def rec(ts: int, payload: bytes = b"p") -> Record:
    return Record(-1, ts, None, payload)


def store_with(name: str, timestamps: list[int]) -> ShardStore:
    store = ShardStore()
    store.create(name)
    store.append(name, [rec(ts) for ts in timestamps])
    return store


def test_create_describe_list_delete() -> None:
    store = ShardStore()
    assert store.create("mqtt/sensors/1") == ShardInfo("mqtt/sensors/1", "memory", 0, 0, 0, 0)
    store.create("kafka/orders/0")
    assert store.list() == ["kafka/orders/0", "mqtt/sensors/1"]
    assert store.append("kafka/orders/0", [rec(1), rec(2)]) == 0
    info = store.describe("kafka/orders/0")
    assert (info.start_offset, info.end_offset, info.records) == (0, 2, 2)
    assert info.bytes == 2 * rec(1).size()
    store.delete("mqtt/sensors/1")
    assert store.list() == ["kafka/orders/0"]


def test_unknown_and_duplicate_shards_are_named() -> None:
    store = ShardStore()
    store.create("a")
    with pytest.raises(ShardExists, match="shard 'a' already exists"):
        store.create("a")
    with pytest.raises(UnknownShard, match="unknown shard 'b'"):
        store.read("b", 0, 1, 1)
    with pytest.raises(UnknownShard, match="unknown shard 'b'"):
        store.delete("b")


def test_engine_chosen_per_shard_from_factories() -> None:
    made: list[str] = []

    def small(name: str) -> MemoryEngine:
        made.append(name)
        return MemoryEngine(records_max_per_append=1)

    store = ShardStore({"memory": lambda _n: MemoryEngine(), "small": small})
    assert store.create("x", engine="small").engine == "small"
    assert store.create("y").engine == "memory"
    assert made == ["x"]
    with pytest.raises(UnknownEngine, match=r"unknown engine kind 'rocksdb'; expected one of"):
        store.create("z", engine="rocksdb")
    with pytest.raises(UnknownEngine, match="'s3'"):
        ShardStore(default_engine="s3")


def test_shards_max_and_bad_names() -> None:
    store = ShardStore(shards_max=1)
    store.create("a")
    with pytest.raises(StorageFull, match="shards_max exceeded: requested 2, allowed 1"):
        store.create("b")
    with pytest.raises(InvalidArgument, match="non-empty str"):
        store.create("")
    assert store.list() == ["a"]


def test_offset_for_time_and_read_pass_through() -> None:
    store = store_with("s", [10, 20, 30])
    assert store.offset_for_time("s", 15) == 1
    assert [r.timestamp_ms for r in store.read("s", 1, 5, 1000)] == [20, 30]


def test_retention_by_offset_time_and_bytes() -> None:
    store = store_with("s", [10, 20, 30, 40, 50, 60])
    assert store.apply_retention("s", before_offset=1) == 1
    assert store.apply_retention("s", before_time_ms=25) == 2
    assert store.apply_retention("s", max_bytes=2 * rec(0).size() + 1) == 4
    assert store.describe("s").records == 2
    assert store.apply_retention("s", before_offset=0) == 4  # never moves backwards
    assert store.apply_retention("s", before_offset=99) == 6  # clamped to end


def test_retention_strictest_rule_wins_and_max_bytes_zero_empties() -> None:
    store = store_with("s", [5, 1, 9, 2])
    assert store.apply_retention("s", before_offset=1, before_time_ms=9) == 2
    assert store.apply_retention("s", max_bytes=0) == 4
    info = store.describe("s")
    assert (info.records, info.bytes) == (0, 0)
    with pytest.raises(InvalidArgument, match="max_bytes"):
        store.apply_retention("s", max_bytes=-1)


def test_group_commit_is_driven_through_the_store(tmp_path) -> None:
    """`append` accepts; `durable_end` moves only when the shell polls at `next_flush_ms`."""
    import random

    from model.devices.fs import SimFileSystem
    from real.storage.journal import JournalConfig, JournalEngine
    from tests.storage.stateful import FakeClock

    clock, fs = FakeClock(100), SimFileSystem(random.Random(1))
    config = JournalConfig(fsync="group", group_commit_ms=5)
    store = ShardStore({"file": lambda name: JournalEngine(fs, name, clock, config),
                        "memory": lambda _name: MemoryEngine()}, default_engine="file")
    store.create("a")
    store.create("b")
    store.create("m", engine="memory")
    assert store.next_flush_ms() is None
    store.append("a", [rec(1), rec(2)])
    clock.advance(2)
    store.append("b", [rec(3)])
    store.append("m", [rec(4)])
    assert (store.durable_end("a"), store.durable_end("b"), store.durable_end("m")) == (0, 0, 1)
    assert store.next_flush_ms() == 105
    assert store.poll(104) == []
    assert store.poll(105) == ["a"]
    assert (store.durable_end("a"), store.durable_end("b")) == (2, 0)
    assert store.next_flush_ms() == 107
    assert store.poll(110) == ["b"] and store.durable_end("b") == 1
    assert store.next_flush_ms() is None
