"""AsyncHost: one NodeCore on an asyncio loop. Group commits of the file journal run on worker
threads and release what waited for them; a failed fdatasync poisons that shard and is logged;
engines without background sync are polled in place."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from real.node.config import load_config, node_spec
from real.node.disk import RaftDisk
from real.node.engines import Devices, monotonic_ms, settings_from_config
from real.node.host import AsyncHost
from real.node.osfs import OsFileSystem
from real.node.server import node_env
from real.server.node import NodeCore
from real.storage import Record
from real.storage.devices import DeviceError


def rec(i: int) -> Record:
    return Record(-1, i, None, b"x" * 100)


class Node:
    def __init__(self, tmp_path: Path, **overrides: object) -> None:
        cfg = load_config(overrides={"data_dir": str(tmp_path), "storage_group_commit_ms": 1,
                                     **overrides})
        self.disk = RaftDisk(tmp_path / "meta")
        self.devices = Devices(tmp_path / "storage", settings_from_config(cfg),
                               clock=monotonic_ms)
        self.logged: list[str] = []
        env = node_env(cfg, self.disk, self.devices, self.logged.append)
        self.core = NodeCore(node_spec(cfg, kafka_port=9092, register_addr="127.0.0.1:1"), env)
        self.host: AsyncHost | None = None

    async def start(self) -> AsyncHost:
        self.host = AsyncHost(self.core, monotonic_ms, self.logged.append)
        self.host.start()
        return self.host

    async def until(self, cond: Callable[[], bool], what: str) -> None:
        host = self.host
        assert host is not None
        async with asyncio.timeout(10):
            while not cond():
                host.changed.clear()
                await host.changed.wait()
        assert cond(), what

    async def close(self) -> None:
        assert self.host is not None
        await self.host.close()
        self.core.close()
        self.devices.close()
        self.disk.close()


def test_the_node_registers_itself_and_is_ready_for_kafka(tmp_path: Path) -> None:
    node = Node(tmp_path)
    assert node.core.registered and node.core.kafka_ready
    assert [n.node_id for n in node.core.replica.sm.nodes()] == [1]
    assert any("registered" in line for line in node.logged)
    asyncio.run(_close(node))


async def _close(node: Node) -> None:
    await node.start()
    await node.close()


def test_the_fdatasync_runs_off_the_loop_and_releases_durable_end(tmp_path: Path) -> None:
    node = Node(tmp_path)
    fs = node.devices.fs()
    threads: list[int] = []
    real_handle = OsFileSystem.sync_handle

    def spying_handle(self: OsFileSystem, path: str) -> Callable[[], None]:
        run = real_handle(self, path)

        def sync() -> None:
            threads.append(threading.get_ident())
            run()

        return sync

    fs.sync_handle = spying_handle.__get__(fs)  # type: ignore[method-assign]

    async def main() -> None:
        host = await node.start()
        shards = node.core.shards
        shards.create("t")
        assert shards.engine("t").background_sync  # type: ignore[attr-defined]
        shards.append("t", [rec(1), rec(2)])
        assert shards.durable_end("t") == 0
        host.flush()  # re-arms the timer for the group commit
        await node.until(lambda: shards.durable_end("t") == 2, "durable_end reaches 2")
        assert threads and threading.get_ident() not in threads
        assert node.core.stats.syncs_done >= 1 and node.core.stats.sync_errors == 0
        await node.close()

    asyncio.run(main())


def test_a_failed_fdatasync_poisons_that_shard_and_is_logged(tmp_path: Path) -> None:
    node = Node(tmp_path)
    fs = node.devices.fs()

    def failing_handle(path: str) -> Callable[[], None]:
        def sync() -> None:
            raise DeviceError("sync", path, "EIO: Input/output error")

        return sync

    async def main() -> None:
        host = await node.start()
        fs.sync_handle = failing_handle  # type: ignore[method-assign]
        shards = node.core.shards
        shards.create("bad")
        shards.append("bad", [rec(1)])
        host.flush()
        await node.until(lambda: node.core.stats.sync_errors == 1, "the failure is counted")
        await node.close()

    asyncio.run(main())
    assert any("fdatasync of shard 'bad' failed" in line and "EIO" in line
               for line in node.logged)
    engine = node.core.shards.engine("bad")
    try:
        engine.append([rec(2)])
    except Exception as exc:  # noqa: BLE001
        assert type(exc).__name__ == "EngineFailed"
    else:
        raise AssertionError("append on a poisoned journal should raise EngineFailed")


def test_engines_without_background_sync_are_polled_in_place(tmp_path: Path) -> None:
    node = Node(tmp_path, storage_sync_thread=False)

    async def main() -> None:
        host = await node.start()
        shards = node.core.shards
        shards.create("inline")
        assert not shards.engine("inline").background_sync  # type: ignore[attr-defined]
        shards.append("inline", [rec(1)])
        host.flush()
        await node.until(lambda: shards.durable_end("inline") == 1, "polled in place")
        assert node.core.stats.syncs_started == 0
        await node.close()

    asyncio.run(main())
