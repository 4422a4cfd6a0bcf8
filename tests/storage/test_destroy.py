"""`destroy()` on every engine: the data goes, durably, and only the shard's own data.

Every engine kind runs the same behavioural tests (a fresh engine at the same location opens
empty at offset 0 and takes appends; destroy is idempotent and works after `close`; neighbours
sharing the device are untouched). On the simulated devices, crashes check durability:

- a crash right after `destroy()` returns leaves the shard destroyed;
- a crash at ANY point inside `destroy()` (swept: the k-th mutating device call fails, for every
  k, then the machine crashes) leaves, once a fresh engine recovers, EXACTLY one of two states:
  the old log (every record, same start and end; the data was durable before the destroy) or an
  empty log at offset 0. Never a prefix, a suffix, a gap or a corruption error. And the outcome
  is monotonic in k: once a crash point yields the empty log (the commit point has passed: the
  tombstone is durable, or the key-value write is), every later one does too;
- the sim devices' own fault hooks (`inject_eio`, `inject_error`, `fail_next`) failing one call
  of destroy: the shard is old-or-empty as above, and calling `destroy()` again finishes it.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from model.devices.fs import SimFileSystem
from model.devices.kv import SimKeyValue
from model.devices.objstore import SimObjectStore
from real.node.osfs import OsFileSystem
from real.node.rocks import RocksKeyValue
from real.storage import EngineClosed, MemoryEngine, Record, ShardEngine
from real.storage.devices import DeviceError
from real.storage.journal import TOMBSTONE_NAME, JournalConfig, JournalEngine
from real.storage.kvengine import KvEngine, KvEngineConfig, shard_prefix
from real.storage.port import ReopenableEngine
from real.storage.s3engine import S3Engine, S3EngineConfig
from tests.storage.stateful import FakeClock

ALL = 1 << 30
SHARD, NEIGHBOUR = "a", "ab"  # "a" is a prefix of "ab": destroy must not reach across
FS_DIR = "shards"
S3_ROOT = "root"
_BUCKETS = itertools.count()

MUTATING = {
    "fs": ("append", "truncate", "sync", "sync_dir", "rename", "remove", "remove_dir",
           "make_dirs"),
    "kv": ("write", "sync"),
    "s3": ("put", "delete"),
}


def recs(n: int, ts: int = 0, payload: bytes = b"x" * 300) -> list[Record]:
    return [Record(-1, ts + i, None, payload) for i in range(n)]


class Halting:
    """Wraps a device: once armed with a budget of k, the (k+1)-th mutating call raises
    `DeviceError` without reaching the device, like an injected EIO, and so does every later
    one (the machine is about to crash). Reads pass through."""

    def __init__(self, device: Any, mutating: tuple[str, ...]) -> None:
        self._device = device
        self._mutating = mutating
        self.budget: int | None = None
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._device, name)
        if name not in self._mutating:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.budget is not None:
                if self.calls >= self.budget:
                    raise DeviceError(name, "halting", f"crash point {self.budget}")
                self.calls += 1
            return attr(*args, **kwargs)

        return call


class Env:
    """One engine kind over one device: `open` builds a fresh engine at the shard's location."""

    kind = ""
    name = ""  # the make_env kind (set by the sim_env fixture)
    sim = False  # has a machine crash
    device: Any = None

    def open(self, name: str = SHARD, device: Any = None) -> ShardEngine:
        raise NotImplementedError

    def crash(self) -> None:
        raise NotImplementedError

    def leftovers(self, name: str = SHARD) -> list[Any]:
        """What the device still holds at the shard's location."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class MemoryEnv(Env):
    kind = "memory"

    def __init__(self) -> None:
        self._engines: dict[str, MemoryEngine] = {}

    def open(self, name: str = SHARD, device: Any = None) -> ShardEngine:
        engine = self._engines.get(name)
        if engine is None:
            engine = self._engines[name] = MemoryEngine()
            return engine
        engine.close()
        return engine.reopen()  # memory's "location" is the object itself

    def leftovers(self, name: str = SHARD) -> list[Any]:
        engine = self._engines.get(name)
        return [] if engine is None else engine._records  # noqa: SLF001 (white-box check)


class FileEnv(Env):
    kind = "file"
    config = JournalConfig(fsync="always", segment_bytes=4096, index_interval_bytes=512)

    def __init__(self, device: Any, sim: bool) -> None:
        self.device, self.sim = device, sim

    def open(self, name: str = SHARD, device: Any = None) -> ShardEngine:
        fs = self.device if device is None else device
        return JournalEngine(fs, f"{FS_DIR}/{name}", FakeClock(), self.config)

    def crash(self) -> None:
        self.device.crash()

    def leftovers(self, name: str = SHARD) -> list[Any]:
        path = f"{FS_DIR}/{name}"
        return [path] if self.device.exists(path) else []

    def close(self) -> None:
        if isinstance(self.device, OsFileSystem):
            self.device.close_all()


class KvEnv(Env):
    kind = "rocksdb"

    def __init__(self, device: Any, sim: bool) -> None:
        self.device, self.sim = device, sim

    def open(self, name: str = SHARD, device: Any = None) -> ShardEngine:
        kv = self.device if device is None else device
        return KvEngine(kv, name, FakeClock(), KvEngineConfig())

    def crash(self) -> None:
        self.device.crash()

    def leftovers(self, name: str = SHARD) -> list[Any]:
        prefix = shard_prefix(name)
        return [k for k, _ in self.device.scan(prefix, prefix + b"\xff")]

    def close(self) -> None:
        if isinstance(self.device, RocksKeyValue):
            self.device.close()


class S3Env(Env):
    kind = "s3"
    config = S3EngineConfig(flush_bytes=1000, index_interval_bytes=400)

    def __init__(self, device: Any, sim: bool, config: S3EngineConfig | None = None) -> None:
        self.device, self.sim = device, sim
        self.config = config or S3Env.config

    def open(self, name: str = SHARD, device: Any = None) -> ShardEngine:
        store = self.device if device is None else device
        return S3Engine(store, f"{S3_ROOT}/{name}", FakeClock(), self.config)

    def crash(self) -> None:
        self.device.crash()

    def leftovers(self, name: str = SHARD) -> list[Any]:
        return self.device.list(f"{S3_ROOT}/{name}/")


def _seaweed_store() -> Any:
    from real.node.s3 import S3ObjectStore
    from real.node.seaweed import shared_server

    url = shared_server().endpoint_url
    bucket = f"destroy-{next(_BUCKETS)}"
    return S3ObjectStore(bucket, url, access_key="k", secret_key="k")


def make_env(kind: str, tmp_path: Path) -> Env:
    if kind == "memory":
        return MemoryEnv()
    if kind == "file-os":
        return FileEnv(OsFileSystem(str(tmp_path / "fs")), sim=False)
    if kind == "file-sim":
        return FileEnv(SimFileSystem(random.Random(3)), sim=True)
    if kind == "rocksdb-real":
        return KvEnv(RocksKeyValue(str(tmp_path / "rocks")), sim=False)
    if kind == "rocksdb-sim":
        return KvEnv(SimKeyValue(random.Random(4)), sim=True)
    if kind == "s3-sim":
        return S3Env(SimObjectStore(random.Random(5)), sim=True)
    if kind == "s3-sim-manifest":  # manifests are written (and must be destroyed) as well
        return S3Env(SimObjectStore(random.Random(6)), sim=True, config=S3_MANIFEST)
    assert kind == "s3-seaweed", kind
    return S3Env(_seaweed_store(), sim=False)


KINDS = ["memory", "file-os", "file-sim", "rocksdb-real", "rocksdb-sim", "s3-sim",
         "s3-sim-manifest", pytest.param("s3-seaweed", marks=pytest.mark.integration)]
SIM_KINDS = ["file-sim", "rocksdb-sim", "s3-sim", "s3-sim-manifest"]
S3_MANIFEST = S3EngineConfig(flush_bytes=1000, index_interval_bytes=400, manifest_every_objects=2)


@pytest.fixture(params=KINDS)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    made = make_env(request.param, tmp_path)
    yield made
    made.close()


@pytest.fixture(params=SIM_KINDS)
def sim_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    made = make_env(request.param, tmp_path)
    made.name = request.param
    yield made
    made.close()


def fill(engine: ShardEngine) -> list[Record]:
    """Several appends (several segments / objects / batches), then retention, all durable;
    returns the records the log holds."""
    for i in range(10):
        engine.append(recs(3, ts=100 * i))
    engine.delete_before(4)  # a checkpoint / start object / moved meta start
    engine.sync()
    assert engine.start_offset() == 4
    assert engine.end_offset() == 30
    return engine.read(4, ALL, ALL)


def snapshot(engine: ShardEngine) -> tuple[int, int, list[Record]]:
    start, end = engine.start_offset(), engine.end_offset()
    return start, end, engine.read(start, ALL, ALL)


def assert_empty_and_usable(engine: ShardEngine) -> None:
    assert (engine.start_offset(), engine.end_offset(), engine.bytes_total()) == (0, 0, 0)
    assert engine.read(0, ALL, ALL) == []
    assert engine.offset_for_time(0) == 0
    assert engine.append(recs(2, ts=7)) == 0
    assert [r.offset for r in engine.read(0, ALL, ALL)] == [0, 1]
    assert engine.offset_for_time(8) == 1


# ------------------------------------------------------------------------ every engine kind


def test_a_fresh_engine_after_destroy_is_empty_at_zero_and_appendable(env: Env) -> None:
    engine = env.open()
    fill(engine)
    assert env.leftovers()
    engine.destroy()
    assert env.leftovers() == []
    with pytest.raises(EngineClosed):
        engine.append(recs(1))
    fresh = env.open()
    assert_empty_and_usable(fresh)
    fresh.close()


def test_destroy_is_idempotent_and_works_on_an_empty_engine(env: Env) -> None:
    engine = env.open()
    engine.destroy()  # nothing was ever written
    engine.destroy()
    assert env.leftovers() == []
    engine = env.open()
    fill(engine)
    engine.destroy()
    engine.destroy()
    assert env.leftovers() == []
    assert_empty_and_usable(env.open())


def test_destroy_after_close_still_removes_the_data(env: Env) -> None:
    engine = env.open()
    fill(engine)
    engine.close()
    engine.destroy()
    assert env.leftovers() == []
    assert_empty_and_usable(env.open())


def test_destroy_drops_unsynced_appends_too(env: Env) -> None:
    engine = env.open()
    fill(engine)
    engine.append(recs(5, ts=9000))  # durable or not depending on the policy: gone either way
    engine.destroy()
    assert env.leftovers() == []
    assert_empty_and_usable(env.open())


def test_reopen_after_destroy_gives_an_empty_log(env: Env) -> None:
    engine = env.open()
    fill(engine)
    engine.destroy()
    assert engine.end_offset() == 0
    assert isinstance(engine, ReopenableEngine)
    assert_empty_and_usable(engine.reopen())


def test_destroy_leaves_a_neighbour_alone(env: Env) -> None:
    neighbour = env.open(NEIGHBOUR)
    kept = fill(neighbour)
    engine = env.open()
    fill(engine)
    engine.destroy()
    assert env.leftovers() == []
    assert env.leftovers(NEIGHBOUR)
    neighbour.close()
    assert snapshot(env.open(NEIGHBOUR)) == (4, 30, kept)


# ------------------------------------------------------------------------------ sim crashes


def test_a_crash_right_after_destroy_leaves_it_destroyed(sim_env: Env) -> None:
    engine = sim_env.open()
    fill(engine)
    engine.append(recs(3, ts=5000))
    engine.destroy()
    sim_env.crash()
    assert sim_env.leftovers() == []
    assert_empty_and_usable(sim_env.open())


def test_destroy_works_on_a_poisoned_engine(sim_env: Env) -> None:
    engine = sim_env.open()
    fill(engine)
    device = sim_env.device
    if sim_env.kind == "file":
        device.inject_eio("sync")
    elif sim_env.kind == "rocksdb":
        device.inject_error(1, "write")
    else:
        device.fail_next("put", 1, transient=False)
    with pytest.raises(Exception, match="EIO|injected"):
        engine.append(recs(1))
    with pytest.raises(Exception, match="poison|failed"):
        engine.append(recs(1))  # poisoned: refuses everything until reopened ...
    engine.destroy()  # ... but destroy, which trusts only the device
    sim_env.crash()
    assert sim_env.leftovers() == []
    assert_empty_and_usable(sim_env.open())


def test_every_crash_point_inside_destroy_gives_the_old_log_or_an_empty_one(
    sim_env: Env, tmp_path: Path
) -> None:
    kind = {"file": "fs", "rocksdb": "kv", "s3": "s3"}[sim_env.kind]
    outcomes: list[str] = []
    for budget in range(200):
        env = make_env(sim_env.name, tmp_path)
        halting = Halting(env.device, MUTATING[kind])
        engine = env.open(device=halting)
        old = (4, 30, fill(engine))
        halting.budget = budget
        try:
            engine.destroy()
        except DeviceError as exc:
            assert "crash point" in str(exc)
            finished = False
        else:
            finished = True
        env.crash()
        fresh = env.open()
        state = snapshot(fresh)
        assert state in (old, (0, 0, [])), (budget, state[:2])
        outcomes.append("old" if state == old else "empty")
        if finished:
            assert outcomes[-1] == "empty"
            break
    else:
        raise AssertionError("destroy never finished within 200 device calls")
    assert outcomes[0] == "old"  # nothing done: nothing lost
    first_empty = outcomes.index("empty")
    assert outcomes[first_empty:] == ["empty"] * (len(outcomes) - first_empty), outcomes
    if kind == "kv":
        assert outcomes == ["old", "empty"]  # one atomic write
    else:
        assert len(outcomes) > 3  # the sweep did go through the removals


@pytest.mark.parametrize("writeback", [False, True])
def test_file_crash_points_with_directory_writeback(writeback: bool) -> None:
    """The sim persists a directory's entries all at once at `sync_dir`; a real filesystem may
    persist any time-ordered prefix of them earlier (a journal commit). With `writeback`, each
    crash point first persists every directory as it stands, so the removals done so far all
    survive: without the tombstone this would expose a prefix of the log."""
    outcomes: list[str] = []
    for budget in range(200):
        fs = SimFileSystem(random.Random(21))
        env = FileEnv(fs, sim=True)
        halting = Halting(fs, MUTATING["fs"])
        engine = env.open(device=halting)
        old = (4, 30, fill(engine))
        halting.budget = budget
        try:
            engine.destroy()
            finished = True
        except DeviceError:
            finished = False
        if writeback:
            for directory in ("", FS_DIR, f"{FS_DIR}/{SHARD}"):
                if fs.exists(directory):
                    fs.sync_dir(directory)
        fs.crash()
        state = snapshot(env.open())
        assert state in (old, (0, 0, [])), (budget, state[:2])
        outcomes.append("old" if state == old else "empty")
        if finished:
            break
    first_empty = outcomes.index("empty")
    assert outcomes[0] == "old"
    assert outcomes[first_empty:] == ["empty"] * (len(outcomes) - first_empty), outcomes
    assert first_empty == (1 if writeback else 2), outcomes  # after the tombstone's creation/sync


def test_file_tombstone_commit_point_and_cut_short_destroy_finished_by_recovery() -> None:
    fs = SimFileSystem(random.Random(11))
    env = FileEnv(fs, sim=True)
    engine = env.open()
    old = (4, 30, fill(engine))
    directory = f"{FS_DIR}/{SHARD}"
    segments = [n for n in fs.list_dir(directory) if n.endswith(".log")]
    assert len(segments) >= 3
    fs.inject_eio("remove", f"{directory}/{segments[1]}")  # part-way through the removals
    with pytest.raises(DeviceError, match="EIO"):
        engine.destroy()
    assert TOMBSTONE_NAME in fs.list_dir(directory)
    fs.crash()  # the tombstone was synced: recovery must finish the destroy, not open a gap
    fresh = env.open()
    assert snapshot(fresh) == (0, 0, [])
    assert fs.list_dir(directory) == [segments[0]]  # only the new empty active segment
    assert_empty_and_usable(fresh)
    assert old[1] == 30


def test_file_failure_before_the_commit_point_keeps_the_old_log() -> None:
    fs = SimFileSystem(random.Random(12))
    env = FileEnv(fs, sim=True)
    engine = env.open()
    old = (4, 30, fill(engine))
    fs.inject_eio("sync_dir", f"{FS_DIR}/{SHARD}")  # the tombstone never becomes durable
    with pytest.raises(DeviceError, match="EIO"):
        engine.destroy()
    fs.crash()
    assert snapshot(env.open()) == old
    engine.destroy()  # and a retry (here on the closed engine) finishes the job
    fs.crash()
    assert env.leftovers() == []
    assert_empty_and_usable(env.open())


def test_file_failed_destroy_retried_without_a_crash() -> None:
    fs = SimFileSystem(random.Random(13))
    env = FileEnv(fs, sim=True)
    engine = env.open()
    fill(engine)
    fs.inject_eio("remove_dir", f"{FS_DIR}/{SHARD}")
    with pytest.raises(DeviceError, match="EIO"):
        engine.destroy()
    assert fs.list_dir(f"{FS_DIR}/{SHARD}") == []  # files gone, directory left
    engine.destroy()
    assert not fs.exists(f"{FS_DIR}/{SHARD}")
    fs.crash()
    assert not fs.exists(f"{FS_DIR}/{SHARD}")
    assert fs.exists(FS_DIR)


def test_file_destroy_removes_tmp_files_and_keeps_foreign_entries(tmp_path: Path) -> None:
    fs = OsFileSystem(str(tmp_path / "fs"))
    env = FileEnv(fs, sim=False)
    engine = env.open()
    fill(engine)
    directory = f"{FS_DIR}/{SHARD}"
    fs.append(f"{directory}/log-start.checkpoint.tmp", b"cut short")
    fs.append(f"{directory}/00000000000000000000.index.tmp", b"cut short")
    fs.append(f"{directory}/NOTES.txt", b"not the journal's")
    engine.destroy()
    assert fs.list_dir(directory) == ["NOTES.txt"]  # so the directory itself stays
    fs.remove(f"{directory}/NOTES.txt")
    engine.destroy()
    assert not fs.exists(directory)
    assert (tmp_path / "fs" / FS_DIR).is_dir()
    fs.close_all()


def test_remove_dir_is_durable_only_after_the_parent_is_synced() -> None:
    fs = SimFileSystem(random.Random(14))
    fs.make_dirs("p/d")
    fs.sync_dir("")
    fs.sync_dir("p")
    fs.remove_dir("p/d")
    fs.crash()
    assert fs.list_dir("p") == ["d"]  # the removal was not synced: the directory is back
    fs.remove_dir("p/d")
    fs.sync_dir("p")
    fs.crash()
    assert fs.list_dir("p") == []


def test_kv_failed_write_keeps_the_old_shard_and_a_retry_destroys_it() -> None:
    kv = SimKeyValue(random.Random(15))
    env = KvEnv(kv, sim=True)
    engine = env.open()
    old = (4, 30, fill(engine))
    kv.inject_error(1, "write")
    with pytest.raises(DeviceError, match="injected"):
        engine.destroy()
    assert snapshot(env.open()) == old  # nothing happened, visibly
    kv.crash()
    assert snapshot(env.open()) == old  # nor durably
    engine.destroy()
    kv.crash()
    assert env.leftovers() == []
    assert kv.items(durable=True) == []
    assert_empty_and_usable(env.open())


def test_s3_failure_after_the_tombstone_is_finished_by_the_next_open() -> None:
    store = SimObjectStore(random.Random(16))
    env = S3Env(store, sim=True)
    engine = env.open()
    fill(engine)
    keys_before = env.leftovers()
    assert len(keys_before) >= 3
    store.fail_next("delete", 1, transient=False)  # the first DELETE, after the tombstone PUT
    with pytest.raises(DeviceError):
        engine.destroy()
    assert f"{S3_ROOT}/{SHARD}/destroyed" in store.keys()
    fresh = env.open()  # sees the tombstone: finishes the destroy, opens empty
    assert env.leftovers() == []
    assert_empty_and_usable(fresh)


def test_s3_failure_of_the_tombstone_put_keeps_the_old_log() -> None:
    store = SimObjectStore(random.Random(17))
    env = S3Env(store, sim=True)
    engine = env.open()
    old = (4, 30, fill(engine))
    store.fail_next("put", 1, transient=False)
    with pytest.raises(DeviceError):
        engine.destroy()
    assert snapshot(env.open()) == old
    engine.destroy()
    assert env.leftovers() == []


def test_s3_transient_errors_are_retried_by_destroy() -> None:
    store = SimObjectStore(random.Random(18))
    env = S3Env(store, sim=True)
    engine = env.open()
    fill(engine)
    store.fail_next("delete", 2, transient=True)  # within the engine's 3 retries
    engine.destroy()
    assert env.leftovers() == []
