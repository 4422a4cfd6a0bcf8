"""Real devices and engines for a node: one place that turns storage settings into a `ShardStore`.

`StorageSettings` is the protocol-neutral slice of the node config (`[storage]` in TOML). `Devices`
opens the real devices lazily (a directory tree for the file journal, one RocksDB for every
`rocksdb` shard, one S3 bucket — an embedded SeaweedFS on loopback unless an endpoint is given) and
`Devices.factories()` gives `ShardStore` one factory per engine kind, so a topic can pick its
engine and the node default applies otherwise (the hybrid storage of the design).

Shard names become directory names and key prefixes through `shard_key`, a reversible escape that
keeps them filesystem- and S3-safe ("a/b" -> "a%2Fb").
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from real.storage import EngineFactory, MemoryEngine, ShardStore
from real.storage.devices import Clock
from real.storage.port import DurableEngine

if TYPE_CHECKING:  # imported lazily below: each pulls in its device library
    from real.node.config import NodeConfig
    from real.node.osfs import OsFileSystem
    from real.node.rocks import RocksKeyValue
    from real.node.s3 import S3ObjectStore
    from real.node.seaweed import SeaweedServer

FSYNC_POLICIES = ("always", "group", "never")
SHARD_KEY_MAX = 200  # longer keys end in "~" + a hash of the full shard name
SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True, slots=True)
class StorageSettings:
    engine: str = "file"
    fsync: str = "group"
    group_commit_ms: int = 2
    group_commit_bytes: int = 1 << 20
    sync_thread: bool = True  # file engine, fsync "group": fdatasync off the event loop
    segment_bytes: int = 64 << 20
    s3_endpoint: str = ""  # empty: start an embedded SeaweedFS on loopback
    s3_bucket: str = "twinmq"
    s3_linger_ms: int = 0
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # engine kind -> its kwargs


def settings_from_config(cfg: NodeConfig) -> StorageSettings:
    """The `[storage]` slice of a `NodeConfig`."""
    return StorageSettings(
        engine=cfg.storage_engine, fsync=cfg.storage_fsync,
        group_commit_ms=cfg.storage_group_commit_ms, segment_bytes=cfg.storage_segment_bytes,
        sync_thread=cfg.storage_sync_thread,
        s3_endpoint=cfg.storage_s3_endpoint, s3_bucket=cfg.storage_s3_bucket,
        s3_linger_ms=cfg.storage_s3_linger_ms,
    )


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


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class Devices:
    """The node's real storage devices, opened on first use and closed together."""

    def __init__(self, root: Path, settings: StorageSettings, clock: Clock = monotonic_ms) -> None:
        self.root = Path(root)
        self.settings = settings
        self.clock = clock
        self._fs: OsFileSystem | None = None
        self._kv: RocksKeyValue | None = None
        self._store: S3ObjectStore | None = None
        self._seaweed: SeaweedServer | None = None

    # ----------------------------------------------------------------------------- devices

    def fs(self) -> OsFileSystem:
        if self._fs is None:
            from real.node.osfs import OsFileSystem

            self._fs = OsFileSystem(str(self.root / "journal"))
        return self._fs

    def kv(self) -> RocksKeyValue:
        if self._kv is None:
            from real.node.rocks import RocksKeyValue

            os.makedirs(self.root, exist_ok=True)
            self._kv = RocksKeyValue(str(self.root / "rocksdb"))
        return self._kv

    def store(self) -> S3ObjectStore:
        if self._store is None:
            from real.node.s3 import S3ObjectStore
            from real.node.seaweed import DUMMY_KEY, SeaweedServer

            endpoint = self.settings.s3_endpoint
            if not endpoint:
                seaweed = self._seaweed = SeaweedServer(data_dir=str(self.root / "seaweedfs"))
                seaweed.start()
                endpoint = seaweed.endpoint_url
            # A loopback endpoint (the embedded or a test SeaweedFS) takes any credentials; any
            # other endpoint gets boto3's usual chain (AWS_ACCESS_KEY_ID, profiles, roles), so no
            # secret ever sits in TwinMQ's config.
            key = DUMMY_KEY if _is_loopback(endpoint) else None
            self._store = S3ObjectStore(self.settings.s3_bucket, endpoint, access_key=key,
                                        secret_key=key)
        return self._store

    @property
    def s3_endpoint(self) -> str | None:
        return None if self._seaweed is None else self._seaweed.endpoint_url

    # ----------------------------------------------------------------------------- engines

    def open(self, kind: str, shard: str) -> DurableEngine:
        s = self.settings
        key = shard_key(shard)
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
            return JournalEngine(self.fs(), key, self.clock, config)
        if kind == "rocksdb":
            from real.storage.kvengine import KvEngine, KvEngineConfig

            kv_config = KvEngineConfig(
                fsync=s.fsync, group_commit_ms=s.group_commit_ms,
                group_commit_bytes=s.group_commit_bytes, **s.extra.get("rocksdb", {}),
            )
            return KvEngine(self.kv(), shard, self.clock, kv_config)
        if kind == "s3":
            from real.storage.s3engine import S3Engine, S3EngineConfig

            s3_config = S3EngineConfig(linger_ms=s.s3_linger_ms, **s.extra.get("s3", {}))
            return S3Engine(self.store(), key, self.clock, s3_config)
        raise ValueError(f"unknown engine kind {kind!r}")

    def factories(self) -> dict[str, EngineFactory]:
        kinds = ("memory", "file", "rocksdb", "s3")
        return {kind: functools.partial(self.open, kind) for kind in kinds}

    def shard_store(self) -> ShardStore:
        return ShardStore(self.factories(), default_engine=self.settings.engine)

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {"default_engine": s.engine, "fsync": s.fsync, "group_commit_ms": s.group_commit_ms,
                "sync_thread": s.sync_thread,
                "segment_bytes": s.segment_bytes, "s3_bucket": s.s3_bucket,
                "s3_endpoint": s.s3_endpoint or self.s3_endpoint, "root": str(self.root)}

    def close(self) -> None:
        if self._fs is not None:
            self._fs.close_all()
        if self._kv is not None:
            self._kv.close()
            self._kv = None
        if self._seaweed is not None:
            self._seaweed.stop()
            self._seaweed = None
