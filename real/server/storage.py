"""The node's storage wiring, the same in both worlds: settings + device ports -> engine factories.

`StorageSettings` is the protocol-neutral `[storage]` slice of the node config. `engine_factories`
turns it and the node's devices (a `FileSystem` for the file journal, a `KeyValue` for RocksDB
shards, an `ObjectStore` for S3 shards; each a zero-argument getter, so a device is opened only
when a shard needs it) into one factory per engine kind for `ShardStore`: the real node passes
its OS directory, RocksDB and S3 client (real/node/engines.py), the simulator its simulated
filesystem, key-value store and object store (model/host.py).

Shard names become directory names and key prefixes through `shard_key`, a reversible escape that
keeps them filesystem- and S3-safe ("a/b" -> "a%2Fb").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from real.storage import EngineFactory, MemoryEngine
from real.storage.devices import Clock, FileSystem, KeyValue, ObjectStore
from real.storage.port import DurableEngine

ENGINE_KINDS = ("memory", "file", "rocksdb", "s3")
FSYNC_POLICIES = ("always", "group", "never")
SHARD_KEY_MAX = 200  # longer keys end in "~" + a hash of the full shard name
SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True, slots=True)
class StorageSettings:
    engine: str = "file"
    fsync: str = "group"
    group_commit_ms: int = 2
    group_commit_bytes: int = 1 << 20
    sync_thread: bool = True  # file engine, fsync "group": fdatasync off the node's thread
    segment_bytes: int = 64 << 20
    s3_endpoint: str = ""  # empty: start an embedded SeaweedFS on loopback
    s3_bucket: str = "twinmq"
    s3_linger_ms: int = 0
    s3_tail_cache_bytes: int = 4 << 20
    """Records of each S3 shard's newest objects kept in memory for reads (consumers that keep
    up read without a GET)."""
    s3_read_objects_max: int = 8
    """Objects one read of an S3 shard GETs from at most (a consumer gets the rest with its
    next fetch): S3 requests are synchronous, so this bounds how long one read holds the node."""
    s3_shared_manifest_every: int = 32
    """A shared partition's leader writes its manifest every this many objects: the next
    leader's takeover reads it plus the footers of the objects written since."""
    s3_local_prefix: str = ""
    """Key prefix of this node's own S3 shards (its MQTT state, unplaced topics): "n<id>" in
    a cluster, whose nodes share one bucket; "" for a single node. Shared partitions live
    under "shared/" (`open_engine` with an epoch)."""
    hold_unsynced: bool = False
    """Real node only: file contents stay in the process until synced (real/node/holdfs.py),
    so a SIGKILL is a power cut."""
    extra: dict[str, Any] = field(default_factory=dict)


def shard_key(name: str) -> str:
    """A filesystem- and S3-safe spelling of a shard name (percent-escapes; reversible up to
    SHARD_KEY_MAX characters, longer ones end in "~" and a hash of the name)."""
    out: list[str] = []
    for ch in name:
        if ch in SAFE and not (ch == "." and not out):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode())
    key = "".join(out)
    if len(key) > SHARD_KEY_MAX:  # a directory name must stay under NAME_MAX (255 bytes)
        digest = hashlib.sha256(name.encode()).hexdigest()[:32]
        key = f"{key[:SHARD_KEY_MAX - 33]}~{digest}"
    return key


def _missing(kind: str) -> Any:
    raise ValueError(f"this node has no device for {kind!r} shards")


def open_engine(kind: str, shard: str, settings: StorageSettings, clock: Clock, *,
                fs: Callable[[], FileSystem] | None = None,
                kv: Callable[[], KeyValue] | None = None,
                store: Callable[[], ObjectStore] | None = None,
                epoch: int = 0) -> DurableEngine:
    """One engine of `kind` for `shard` over the given devices. `epoch` >= 1: an S3 shard on
    shared storage, led by this node under that leader epoch (real/storage/s3engine.py's
    fenced mode, under the "shared/" prefix every node uses)."""
    s = settings
    key = shard_key(shard)
    if epoch and kind != "s3":
        raise ValueError(f"only S3 shards live on shared storage, not {kind!r}")
    if kind == "memory":
        return MemoryEngine()
    if kind == "file":
        from real.storage.journal import JournalConfig, JournalEngine

        config = JournalConfig(
            fsync=s.fsync, group_commit_ms=s.group_commit_ms,
            group_commit_bytes=s.group_commit_bytes, segment_bytes=s.segment_bytes,
            background_sync=s.sync_thread and s.fsync == "group",
            **s.extra.get("file", {}),
        )
        return JournalEngine(_missing("file") if fs is None else fs(), key, clock, config)
    if kind == "rocksdb":
        from real.storage.kvengine import KvEngine, KvEngineConfig

        kv_config = KvEngineConfig(
            fsync=s.fsync, group_commit_ms=s.group_commit_ms,
            group_commit_bytes=s.group_commit_bytes, **s.extra.get("rocksdb", {}),
        )
        return KvEngine(_missing("rocksdb") if kv is None else kv(), shard, clock, kv_config)
    if kind == "s3":
        from real.storage.s3engine import S3Engine, S3EngineConfig

        s3_config = S3EngineConfig(**{"linger_ms": s.s3_linger_ms,
                                      "tail_cache_bytes": s.s3_tail_cache_bytes,
                                      "read_objects_max": s.s3_read_objects_max,
                                      **({"manifest_every_objects": s.s3_shared_manifest_every}
                                         if epoch else {}),
                                      **s.extra.get("s3", {})})
        prefix = (f"shared/{key}" if epoch else
                  f"{s.s3_local_prefix}/{key}" if s.s3_local_prefix else key)
        return S3Engine(_missing("s3") if store is None else store(), prefix, clock, s3_config,
                        epoch=epoch)
    raise ValueError(f"unknown engine kind {kind!r}")


def engine_factories(settings: StorageSettings, clock: Clock, *,
                     fs: Callable[[], FileSystem] | None = None,
                     kv: Callable[[], KeyValue] | None = None,
                     store: Callable[[], ObjectStore] | None = None,
                     kinds: tuple[str, ...] = ENGINE_KINDS) -> dict[str, EngineFactory]:
    """A `ShardStore` factory per engine kind in `kinds`, over the given devices."""
    def factory(kind: str) -> EngineFactory:
        return lambda name, **kw: open_engine(kind, name, settings, clock, fs=fs, kv=kv,
                                              store=store, **kw)

    return {kind: factory(kind) for kind in kinds}
