"""StoreDriver: the node's group-commit driver runs the file journal's fdatasyncs on worker threads
and tells its listeners when durable_end moved; other engines are polled in place."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from real.node.engines import Devices, StorageSettings
from real.node.osfs import OsFileSystem
from real.node.storedriver import StoreDriver
from real.storage import Record
from real.storage.devices import DeviceError


def rec(i: int) -> Record:
    return Record(-1, i, None, b"x" * 100)


def store_over(tmp_path: Path, engine: str = "file") -> tuple[Devices, object]:
    devices = Devices(tmp_path, StorageSettings(engine=engine, group_commit_ms=1))
    return devices, devices.shard_store()


async def _until(driver: StoreDriver, cond, what: str) -> None:  # type: ignore[no-untyped-def]
    """Wait for `cond`, re-checked each time the driver tells its listeners of progress."""
    progress = asyncio.Event()
    driver.listeners.append(progress.set)
    async with asyncio.timeout(10):
        while not cond():
            await progress.wait()
            progress.clear()
    driver.listeners.remove(progress.set)
    assert cond(), what


def test_the_fdatasync_runs_off_the_loop_and_listeners_hear_of_it(tmp_path: Path) -> None:
    devices, shards = store_over(tmp_path)
    fs = devices.fs()
    threads: list[int] = []
    real_handle = OsFileSystem.sync_handle

    def spying_handle(self: OsFileSystem, path: str):  # type: ignore[no-untyped-def]
        run = real_handle(self, path)

        def sync() -> None:
            threads.append(threading.get_ident())
            run()

        return sync

    fs.sync_handle = spying_handle.__get__(fs)  # type: ignore[method-assign]

    async def main() -> None:
        driver = StoreDriver(shards, devices.clock, log=print)
        heard: list[int] = []
        driver.listeners.append(lambda: heard.append(shards.durable_end("t")))  # type: ignore[attr-defined]
        shards.create("t")  # type: ignore[attr-defined]
        engine = shards.engine("t")  # type: ignore[attr-defined]
        assert engine.background_sync
        shards.append("t", [rec(1), rec(2)])  # type: ignore[attr-defined]
        assert shards.durable_end("t") == 0  # type: ignore[attr-defined]
        driver.kick()
        await _until(driver, lambda: shards.durable_end("t") == 2, "durable_end reaches 2")  # type: ignore[attr-defined]
        assert heard and heard[-1] == 2
        assert threads and threading.get_ident() not in threads
        assert driver.jobs_done == 1 and driver.errors == 0
        await driver.close()

    asyncio.run(main())
    devices.close()


def test_a_failed_fdatasync_poisons_that_shard_and_is_logged(tmp_path: Path) -> None:
    devices, shards = store_over(tmp_path)
    fs = devices.fs()

    def failing_handle(path: str):  # type: ignore[no-untyped-def]
        def sync() -> None:
            raise DeviceError("sync", path, "EIO: Input/output error")

        return sync

    fs.sync_handle = failing_handle  # type: ignore[method-assign]
    logged: list[str] = []

    async def main() -> None:
        driver = StoreDriver(shards, devices.clock, log=logged.append)
        shards.create("bad")  # type: ignore[attr-defined]
        shards.append("bad", [rec(1)])  # type: ignore[attr-defined]
        driver.kick()
        await _until(driver, lambda: driver.errors == 1, "the failure is counted")
        await driver.close()

    asyncio.run(main())
    assert any("fdatasync of shard 'bad' failed" in line and "EIO" in line for line in logged)
    engine = shards.engine("bad")  # type: ignore[attr-defined]
    try:
        engine.append([rec(2)])
    except Exception as exc:  # noqa: BLE001
        assert type(exc).__name__ == "EngineFailed"
    else:
        raise AssertionError("append on a poisoned journal should raise EngineFailed")
    devices.close()


def test_engines_without_background_sync_are_polled_in_place(tmp_path: Path) -> None:
    devices, shards = store_over(tmp_path, engine="file")
    devices.settings = StorageSettings(engine="file", group_commit_ms=1, sync_thread=False)

    async def main() -> None:
        driver = StoreDriver(shards, devices.clock, log=print)
        heard: list[bool] = []
        driver.listeners.append(lambda: heard.append(True))
        shards.create("inline")  # type: ignore[attr-defined]
        assert not shards.engine("inline").background_sync  # type: ignore[attr-defined]
        shards.append("inline", [rec(1)])  # type: ignore[attr-defined]
        driver.kick()
        await _until(driver, lambda: shards.durable_end("inline") == 1, "polled in place")  # type: ignore[attr-defined]
        assert heard and driver.jobs_done == 0
        await driver.close()

    asyncio.run(main())
    devices.close()
