"""`ShardStore` lifecycle over durable engines: delete destroys, attach re-opens after a restart,
create refuses leftover data.

The file and rocksdb kinds run over the node's real devices (`real.node.engines.Devices` in
tmp_path: real files, a real RocksDB); the s3 kind over `SimObjectStore` (a real SeaweedFS run is
in tests/storage/test_destroy.py); the file kind also over `SimFileSystem` for device faults.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.devices.fs import SimFileSystem
from model.devices.objstore import SimObjectStore
from real.node.engines import Devices, StorageSettings, shard_key
from real.storage import (
    EngineClosed,
    Record,
    ShardExists,
    ShardStore,
    StorageFull,
    UnknownEngine,
    UnknownShard,
)
from real.storage.devices import DeviceError
from real.storage.journal import JournalConfig, JournalEngine
from real.storage.s3engine import s3_factory
from real.storage.shards import EngineFactory, ShardDataExists
from tests.storage.stateful import FakeClock

ALL = 1 << 30
NAME = "mqtt/sensors/1"  # a '/' in the name: Devices escapes it into one directory / prefix
DURABLE_KINDS = ["file", "rocksdb", "s3"]


def recs(n: int, ts: int = 0) -> list[Record]:
    return [Record(-1, ts + i, None, b"payload-%d" % i) for i in range(n)]


class Node:
    """One node's devices; `restart()` closes everything and opens it again over the same data."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = SimObjectStore(random.Random(9))  # outlives restarts, like a bucket
        self.devices: Devices | None = None

    def store(self) -> ShardStore:
        assert self.devices is None
        settings = StorageSettings(engine="file", fsync="always", segment_bytes=4096)
        self.devices = Devices(self.root, settings, clock=FakeClock())
        factories: dict[str, EngineFactory] = self.devices.factories()
        factories["s3"] = s3_factory(self.objects, "bucket-root", FakeClock())
        return ShardStore(factories, default_engine="file")

    def stop(self, store: ShardStore) -> None:
        store.close()
        assert self.devices is not None
        self.devices.close()
        self.devices = None


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    made = Node(tmp_path / "node")
    yield made
    if made.devices is not None:
        made.devices.close()


@pytest.mark.parametrize("kind", DURABLE_KINDS)
def test_attach_after_a_restart_sees_the_records(node: Node, kind: str) -> None:
    store = node.store()
    store.create(NAME, kind)
    store.append(NAME, recs(5))
    store.append(NAME, recs(3, ts=50))
    store.apply_retention(NAME, before_offset=2)
    before = store.read(NAME, 2, ALL, ALL)
    node.stop(store)

    store = node.store()
    assert store.list() == []  # the catalogue lives in the meta service, not here
    info = store.attach(NAME, kind)
    assert (info.name, info.engine, info.start_offset, info.end_offset) == (NAME, kind, 2, 8)
    assert info.records == 6
    assert store.read(NAME, 2, ALL, ALL) == before
    assert store.append(NAME, recs(1, ts=99)) == 8  # and the log goes on from there
    node.stop(store)


@pytest.mark.parametrize("kind", DURABLE_KINDS)
def test_create_over_existing_data_fails_naming_shard_and_engine(node: Node, kind: str) -> None:
    store = node.store()
    store.create(NAME, kind)
    store.append(NAME, recs(4))
    node.stop(store)

    store = node.store()
    with pytest.raises(ShardDataExists) as info:
        store.create(NAME, kind)
    message = str(info.value)
    assert repr(NAME) in message and repr(kind) in message and "[0, 4)" in message
    assert isinstance(info.value, ShardExists)  # callers catching ShardExists still do
    assert (info.value.name, info.value.engine, info.value.end_offset) == (NAME, kind, 4)
    assert store.list() == []  # not adopted
    assert store.attach(NAME, kind).records == 4  # the data was left intact (and the engine
    assert len(store.read(NAME, 0, ALL, ALL)) == 4  # opened by create was closed cleanly)
    node.stop(store)


@pytest.mark.parametrize("kind", DURABLE_KINDS)
def test_delete_then_create_the_same_name_gives_an_empty_shard(node: Node, kind: str) -> None:
    store = node.store()
    store.create(NAME, kind)
    store.append(NAME, recs(6))
    store.delete(NAME)
    assert store.list() == []
    info = store.create(NAME, kind)
    assert (info.start_offset, info.end_offset, info.records, info.bytes) == (0, 0, 0, 0)
    assert store.append(NAME, recs(2)) == 0
    node.stop(store)

    store = node.store()  # and the deletion was durable: a restart sees only the new records
    assert store.attach(NAME, kind).end_offset == 2
    node.stop(store)


def test_delete_removes_the_files_and_the_directory(node: Node) -> None:
    store = node.store()
    store.create(NAME, "file")
    for i in range(20):
        store.append(NAME, recs(20, ts=i))
    store.apply_retention(NAME, before_offset=30)  # a checkpoint file too
    shard_dir = node.root / "journal" / shard_key(NAME)
    assert len(list(shard_dir.iterdir())) > 1  # several segments and their indexes
    engine = store.engine(NAME)
    store.delete(NAME)
    assert not shard_dir.exists()
    assert (node.root / "journal").is_dir()
    with pytest.raises(EngineClosed):
        engine.append(recs(1))
    with pytest.raises(UnknownShard):
        store.describe(NAME)
    node.stop(store)


def test_memory_shards_do_not_survive_a_restart(node: Node) -> None:
    store = node.store()
    store.create(NAME, "memory")
    store.append(NAME, recs(3))
    node.stop(store)
    store = node.store()
    assert store.attach(NAME, "memory").records == 0  # memory promises nothing past the process
    store.delete(NAME)
    assert store.create(NAME, "memory").records == 0
    node.stop(store)


def test_attach_of_a_name_without_data_opens_an_empty_shard(node: Node) -> None:
    store = node.store()
    info = store.attach("never-written")
    assert (info.engine, info.end_offset, info.records) == ("file", 0, 0)
    node.stop(store)


def test_attach_checks_like_create(node: Node) -> None:
    store = node.store()
    store.create(NAME)
    with pytest.raises(ShardExists, match="already exists"):
        store.attach(NAME)
    with pytest.raises(UnknownEngine, match="'tape'"):
        store.attach("other", "tape")
    node.stop(store)
    small = ShardStore(shards_max=1)
    small.attach("one")
    with pytest.raises(StorageFull, match="shards_max"):
        small.attach("two")
    assert small.list() == ["one"]


def test_a_failed_delete_keeps_the_shard_listed_and_a_retry_finishes_it() -> None:
    fs = SimFileSystem(random.Random(1))
    config = JournalConfig(fsync="always")

    def journal(name: str) -> JournalEngine:
        return JournalEngine(fs, f"j/{name}", FakeClock(), config)

    store = ShardStore({"file": journal}, default_engine="file")
    store.create("t")
    store.append("t", recs(3))
    fs.inject_eio("remove", "j/t/")
    with pytest.raises(DeviceError, match="EIO"):
        store.delete("t")
    assert store.list() == ["t"]  # still known: its data is neither here nor gone yet
    store.delete("t")
    assert store.list() == []
    assert not fs.exists("j/t")
    fs.crash()
    assert store.create("t").records == 0
