"""ShardStore against a dict of lists (STYLE 15): catalogue, appends and retention across shards."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from real.storage import MemoryEngine, Record, ShardExists, ShardStore, StorageFull, UnknownShard
from tests.storage.strategies import fresh_records

NAMES = st.sampled_from(sorted(["kafka/t/0", "kafka/t/1", "mqtt/a/b"]))
SHARDS_MAX = 2


class StoreVsReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = ShardStore({"memory": lambda _n: MemoryEngine()}, shards_max=SHARDS_MAX)
        self.ref: dict[str, tuple[int, list[Record]]] = {}  # name -> (start, records)

    @rule(name=NAMES)
    def create(self, name: str) -> None:
        note(f"create {name}")
        if name in self.ref:
            expected: type[Exception] | None = ShardExists
        else:
            expected = StorageFull if len(self.ref) >= SHARDS_MAX else None
        if expected is None:
            self.store.create(name)
            self.ref[name] = (0, [])
            return
        try:
            self.store.create(name)
        except expected:
            return
        raise AssertionError(f"create {name} should raise {expected.__name__}")

    @rule(name=NAMES)
    def delete(self, name: str) -> None:
        if name not in self.ref:
            try:
                self.store.delete(name)
            except UnknownShard as exc:
                assert exc.name == name
                return
            raise AssertionError(f"delete of unknown {name} should raise UnknownShard")
        self.store.delete(name)
        del self.ref[name]

    @rule(name=NAMES, batch=st.lists(fresh_records(), max_size=4))
    def append(self, name: str, batch: list[Record]) -> None:
        if name not in self.ref:
            return
        start, log = self.ref[name]
        base = self.store.append(name, batch)
        assert base == start + len(log), (base, start, len(log))
        log.extend(replace(r, offset=base + i) for i, r in enumerate(batch))

    @rule(
        name=NAMES,
        before_offset=st.none() | st.integers(0, 30),
        before_time=st.none() | st.integers(0, 55),
        max_bytes=st.none() | st.integers(0, 300),
    )
    def retention(
        self, name: str, before_offset: int | None, before_time: int | None, max_bytes: int | None
    ) -> None:
        if name not in self.ref:
            return
        start, log = self.ref[name]
        cut = self.expected_cut(start, log, before_offset, before_time, max_bytes)
        got = self.store.apply_retention(name, before_offset, before_time, max_bytes)
        assert got == cut, (got, cut)
        self.ref[name] = (cut, log[cut - start :])

    @staticmethod
    def expected_cut(
        start: int, log: list[Record], offset: int | None, ts: int | None, max_bytes: int | None
    ) -> int:
        end, cut = start + len(log), start
        if offset is not None:
            cut = max(cut, min(offset, end))
        if ts is not None:
            cut = max(cut, next((r.offset for r in log if r.timestamp_ms >= ts), end))
        if max_bytes is not None:
            drop, total = 0, sum(r.size() for r in log)
            while total > max_bytes:
                total -= log[drop].size()
                drop += 1
            cut = max(cut, start + drop)
        return cut

    @invariant()
    def catalogue_matches(self) -> None:
        assert self.store.list() == sorted(self.ref)
        for name, (start, log) in sorted(self.ref.items()):
            info = self.store.describe(name)
            assert (info.start_offset, info.end_offset) == (start, start + len(log)), info
            assert info.bytes == sum(r.size() for r in log), info
            assert self.store.read(name, start, 100, 1 << 20) == log


TestShardStore = StoreVsReference.TestCase
TestShardStore.settings = settings(max_examples=50, stateful_step_count=30, deadline=None)
