"""The node's real storage devices, opened lazily: a directory tree for the file journal, one
RocksDB for every `rocksdb` shard, one S3 bucket (an embedded SeaweedFS on loopback unless an
endpoint is given). `Devices.factories()` gives `ShardStore` one factory per engine kind through
the pure wiring of real/server/storage.py, which the simulator runs over its simulated devices,
so a topic can pick its engine and the node default applies otherwise (the hybrid storage of the
design).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from real.server.storage import (  # noqa: F401 - re-exported for the shell's callers
    FSYNC_POLICIES,
    SHARD_KEY_MAX,
    StorageSettings,
    engine_factories,
    open_engine,
    shard_key,
)
from real.storage import EngineFactory, ShardStore
from real.storage.devices import Clock
from real.storage.port import DurableEngine

if TYPE_CHECKING:  # imported lazily below: each pulls in its device library
    from real.node.config import NodeConfig
    from real.node.osfs import OsFileSystem
    from real.node.rocks import RocksKeyValue
    from real.node.s3 import S3ObjectStore
    from real.node.seaweed import SeaweedServer


def settings_from_config(cfg: NodeConfig) -> StorageSettings:
    """The `[storage]` slice of a `NodeConfig`."""
    from real.node.config import parse_peers

    return StorageSettings(
        engine=cfg.storage_engine, fsync=cfg.storage_fsync,
        group_commit_ms=cfg.storage_group_commit_ms, segment_bytes=cfg.storage_segment_bytes,
        sync_thread=cfg.storage_sync_thread,
        s3_endpoint=cfg.storage_s3_endpoint, s3_bucket=cfg.storage_s3_bucket,
        s3_linger_ms=cfg.storage_s3_linger_ms, hold_unsynced=cfg.storage_hold_unsynced,
        s3_local_prefix=f"n{cfg.node_id}" if len(parse_peers(cfg.cluster_peers)) > 1 else "",
    )


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

            if self.settings.hold_unsynced:
                from real.node.holdfs import HoldingFileSystem

                self._fs = HoldingFileSystem(str(self.root / "journal"))  # type: ignore[assignment]
            else:
                self._fs = OsFileSystem(str(self.root / "journal"))
        assert self._fs is not None
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
        return open_engine(kind, shard, self.settings, self.clock, fs=self.fs, kv=self.kv,
                           store=self.store)

    def factories(self) -> dict[str, EngineFactory]:
        return engine_factories(self.settings, self.clock, fs=self.fs, kv=self.kv,
                                store=self.store)

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
