"""`StoreDriver`: the one driver of the node `ShardStore`'s group commit, for every protocol.

The storage engines are pure: they never sleep, spawn or block on their own. Some have deadlines
(`next_flush_ms()`: a group commit, an S3 linger), and appends past a byte threshold make work due
at once. The driver turns those deadlines into event-loop timers and tells the services when some
shard's `durable_end` moved, so held acknowledgements (Kafka produce replies, MQTT PUBACKs) go out:

- `kick()`: call after anything that may have appended (each service does, after every flush).
  It arms one timer for the store's earliest deadline (or runs now when it has passed).
- At the deadline, `ShardStore.start_syncs(now)` polls every due shard in place, except the file
  journal's (`background_sync`): those hand back a `SyncJob`, whose fdatasync runs on a worker
  thread (`sync_workers` of them; fdatasync releases the GIL) while the loop keeps reading,
  appending and answering. On completion, back on the loop, `engine.finish_sync(job, error)`
  moves `durable_end` (or poisons the engine on error), and the listeners are told.
- `close()`: cancels the timer and waits for running jobs, so no fdatasync outlives the node's
  devices.

Only this shell knows about threads; the same engine code runs in the simulator, which runs a job's
`sync()` inline and schedules `finish_sync` after the simulated disk time (model/kafka.py).
"""

from __future__ import annotations

import asyncio
import functools
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from real.storage.port import BackgroundSyncEngine, SyncJob
from real.storage.shards import ShardStore

SYNC_WORKERS_DEFAULT = 4


class StoreDriver:
    def __init__(self, shards: ShardStore, clock: Callable[[], int], log: Callable[[str], None],
                 sync_workers: int = SYNC_WORKERS_DEFAULT) -> None:
        self.shards = shards
        self.clock = clock
        self.log = log
        self.listeners: list[Callable[[], None]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._workers = sync_workers
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at: int | None = None
        self._running: set[asyncio.Future[None]] = set()
        self._closed = False
        self.jobs_done = 0
        self.errors = 0

    def kick(self) -> None:
        """Arm the timer for the store's earliest deadline (idempotent; cheap when idle)."""
        if self._closed:
            return
        due = self.shards.next_flush_ms()
        if due is None:
            return
        if self._handle is not None:
            if self._handle_at is not None and self._handle_at <= due:
                return
            self._handle.cancel()
        self._handle_at = due
        delay = max(0, due - self.clock()) / 1000
        self._handle = asyncio.get_running_loop().call_later(delay, self._on_due)

    def _on_due(self) -> None:
        self._handle = self._handle_at = None
        if self._closed:
            return
        try:
            jobs = self.shards.start_syncs(self.clock())
        except Exception:  # noqa: BLE001 - a poisoned engine fails its own requests later
            self.errors += 1
            self.log(f"storage: group commit failed:\n{traceback.format_exc()}")
            jobs = []
        loop = asyncio.get_running_loop()
        for name, engine, job in jobs:
            if job.detached:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="fsync")
                fut = loop.run_in_executor(self._pool, job.sync)
                self._running.add(fut)
                fut.add_done_callback(functools.partial(self._finished, name, engine, job))
            else:  # a filesystem without detached syncs: inline, same durability
                error: BaseException | None = None
                try:
                    job.sync()
                except Exception as exc:  # noqa: BLE001 - handed to the engine, which poisons
                    error = exc
                self._finish(name, engine, job, error)
        self._notify()

    def _finished(self, name: str, engine: BackgroundSyncEngine, job: SyncJob,
                  fut: asyncio.Future[None]) -> None:
        self._running.discard(fut)
        error = None if fut.cancelled() else fut.exception()
        self._finish(name, engine, job, error)
        self._notify()

    def _finish(self, name: str, engine: BackgroundSyncEngine, job: SyncJob,
                error: BaseException | None) -> None:
        self.jobs_done += 1
        try:
            engine.finish_sync(job, error)
        except Exception:  # noqa: BLE001 - the engine is poisoned; its requests fail from now on
            self.errors += 1
            self.log(f"storage: fdatasync of shard {name!r} failed:\n{traceback.format_exc()}")

    def _notify(self) -> None:
        if self._closed:
            return
        for listener in self.listeners:
            listener()
        self.kick()

    async def close(self) -> None:
        """Stop timing; wait for running fdatasyncs (their engines learn the outcome)."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = self._handle_at = None
        if self._running:
            await asyncio.wait(list(self._running))
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
