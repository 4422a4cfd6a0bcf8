"""The reusable engine machine (tests/storage/stateful.py) over `KvEngine`.

Real RocksDB: one `RocksKeyValue` per test class (a node has one RocksDB shared by its shards), a
fresh shard per Hypothesis example, one class per fsync policy. Simulated store: a fresh
`SimKeyValue` per example with the machine-crash hook (`SimKeyValue.crash()`, then a new engine
recovered from the same store), so durable_end and atomic-batch recovery are checked too.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import pytest

from model.devices.kv import SimKeyValue
from real.node.rocks import RocksKeyValue
from real.storage.kvengine import KvEngine, KvEngineConfig
from tests.storage.stateful import FakeClock, make_engine_machine

_ROCKS: dict[str, RocksKeyValue] = {}
_NAMES = itertools.count()


@pytest.fixture(autouse=True, scope="module")
def rocks_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    _ROCKS["kv"] = RocksKeyValue(str(tmp_path_factory.mktemp("kvengine-stateful") / "db"))
    yield
    _ROCKS.pop("kv").close()


def rocks_machine(fsync: str, clock: FakeClock | None = None, examples: int = 15,
                  **limits: int) -> type:
    config = KvEngineConfig(fsync=fsync, group_commit_ms=3, group_commit_bytes=300, **limits)

    def factory() -> KvEngine:
        return KvEngine(_ROCKS["kv"], f"{fsync}/shard-{next(_NAMES)}", clock or (lambda: 0), config)

    return make_engine_machine(factory, max_examples=examples, steps=25, clock=clock)


def sim_crash(engine: KvEngine) -> KvEngine:
    engine.kv.crash()  # type: ignore[attr-defined]
    return KvEngine(engine.kv, engine.shard, engine.clock, engine.config)


def sim_machine(fsync: str, clock: FakeClock | None = None, examples: int = 30,
                **limits: int) -> type:
    config = KvEngineConfig(fsync=fsync, group_commit_ms=3, group_commit_bytes=300, **limits)

    def factory() -> KvEngine:
        # A fixed seed: Hypothesis must replay an example exactly; the crash outcome still varies
        # with the history (every latency sample draws from the same stream).
        kv = SimKeyValue(random.Random(7))  # noqa: S311
        return KvEngine(kv, "sim/shard", clock or (lambda: 0), config)

    return make_engine_machine(factory, max_examples=examples, steps=30, crash=sim_crash,
                               clock=clock)


TestRocksAlways = rocks_machine("always")
TestRocksGroup = rocks_machine("group", clock=FakeClock())
TestRocksNeverTight = rocks_machine("never", records_max_per_append=4, bytes_max_total=400)

TestSimAlwaysTight = sim_machine("always", records_max_per_append=4, bytes_max_total=400)
TestSimGroup = sim_machine("group", clock=FakeClock())
TestSimNever = sim_machine("never")


# Longer runs for `make slow`.
TestRocksGroupLong = pytest.mark.slow(rocks_machine("group", clock=FakeClock(), examples=150))
TestSimGroupLong = pytest.mark.slow(sim_machine("group", clock=FakeClock(), examples=300))
TestSimNeverTightLong = pytest.mark.slow(
    sim_machine("never", examples=300, records_max_per_append=3, bytes_max_total=500)
)
