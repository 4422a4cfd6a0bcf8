"""The `S3Engine` manifest: opening costs one LIST page and one GET plus the footers of objects
written since the last manifest; a stale, corrupt or missing manifest is never trusted and only
costs time; crashes at every step of truncate / delete_before / destroy open consistently."""

from __future__ import annotations

import random
from typing import Any

import pytest

from model.devices.objstore import SimObjectStore
from real.storage import Record
from real.storage.devices import DeviceError
from real.storage.s3engine import (
    FOOTER_ENTRY,
    FOOTER_HEAD,
    MANIFEST_ENTRY,
    MANIFEST_HEAD,
    EnginePoisoned,
    ManifestUse,
    S3Engine,
    S3EngineConfig,
    S3LogCorrupt,
    decode_manifest,
    encode_start,
)

PREFIX = "topic/0"
MANIFEST = f"{PREFIX}/manifest"
ALL = 1 << 30
MUTATING = ("put", "delete")


def recs(n: int, ts: int = 0, payload: bytes = b"x" * 40) -> list[Record]:
    return [Record(-1, ts + i, None, payload) for i in range(n)]


class Recording:
    """Passes every request to a `SimObjectStore` and logs `(op, key)`. Once `budget` is set,
    the mutating request after `budget` more raises `DeviceError` without reaching the store,
    and so does every later one (the machine is about to crash). PUTs of keys in `refuse_puts`
    always fail."""

    def __init__(self, store: SimObjectStore) -> None:
        self.store = store
        self.log: list[tuple[str, str]] = []
        self.budget: int | None = None
        self.refuse_puts: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if name not in ("put", "get", "list", "delete"):
            return attr

        def call(key: str, *args: Any) -> Any:
            self.log.append((name, key))
            if name == "put" and key in self.refuse_puts:
                raise DeviceError(name, key, "refused")
            if name in MUTATING and self.budget is not None:
                if self.budget == 0:
                    raise DeviceError(name, key, "crash point")
                self.budget -= 1
            return attr(key, *args)

        return call

    def mutations(self) -> list[tuple[str, str]]:
        return [(op, key.rsplit("/", 1)[1]) for op, key in self.log if op in MUTATING]

    def gets(self) -> list[str]:
        return [key.rsplit("/", 1)[1] for op, key in self.log if op == "get"]


def make(every: int = 4, seed: int = 7, **kw: Any) -> tuple[SimObjectStore, Recording, S3Engine]:
    store = SimObjectStore(random.Random(seed))
    rec = Recording(store)
    config = S3EngineConfig(manifest_every_objects=every, **kw)
    return store, rec, S3Engine(rec, PREFIX, config=config)


def open_again(rec: Recording | SimObjectStore, every: int = 4) -> S3Engine:
    return S3Engine(rec, PREFIX, config=S3EngineConfig(manifest_every_objects=every))


def snapshot(engine: S3Engine) -> tuple[int, int, list[Record]]:
    start, end = engine.start_offset(), engine.end_offset()
    return start, end, engine.read(start, ALL, ALL) if end > start else []


def requests(store: SimObjectStore) -> dict[str, int]:
    return dict(store.stats.requests)


def delta(store: SimObjectStore, before: dict[str, int]) -> dict[str, int]:
    return {op: n - before[op] for op, n in store.stats.requests.items()}


# ---------------------------------------------------------------------------------- format


def test_manifest_is_put_every_n_objects_and_lists_each_object() -> None:
    store, rec, engine = make(every=4)
    for i in range(3):
        engine.append(recs(2, ts=10 * i))
    assert MANIFEST not in store.keys()
    engine.append(recs(2, ts=30))
    assert MANIFEST in store.keys()
    raw = store.raw(MANIFEST)
    assert raw[:4] == b"TMQM"
    assert len(raw) == MANIFEST_HEAD.size + 4 * MANIFEST_ENTRY.size + 4
    manifest = decode_manifest(PREFIX, MANIFEST, raw)
    assert (manifest.start, manifest.start_skip_bytes, manifest.covers_end) == (0, 0, 8)
    assert [o.key for o in manifest.objects] == [f"{PREFIX}/{b:020d}.tmqs" for b in (0, 2, 4, 6)]
    assert tuple(manifest.objects) == tuple(engine._objects)
    assert manifest.objects[3].ts_max == 31
    assert manifest.objects[0].footer_length == FOOTER_HEAD.size + FOOTER_ENTRY.size
    for _ in range(3):
        engine.append(recs(1))
    assert decode_manifest(PREFIX, MANIFEST, store.raw(MANIFEST)).covers_end == 8  # not yet due
    engine.append(recs(1))
    assert decode_manifest(PREFIX, MANIFEST, store.raw(MANIFEST)).covers_end == 12
    engine.invariants()


def test_open_after_close_is_one_list_one_get_and_no_footer_get() -> None:
    store, rec, engine = make(every=256)
    for i in range(300):
        engine.append(recs(1, ts=i))
    engine.close()  # 300 objects: a manifest at 256, another at close
    before = requests(store)
    reopened = open_again(store, every=256)
    assert delta(store, before) == {"put": 0, "get": 1, "list": 1, "delete": 0}
    assert reopened.manifest_use is ManifestUse.USED
    assert (reopened.start_offset(), reopened.end_offset()) == (0, 300)
    assert reopened.bytes_total() == 300 * recs(1)[0].size()
    assert reopened.offset_for_time(250) == 250
    before = requests(store)
    got = reopened.read(123, 2, ALL)
    assert [r.offset for r in got] == [123, 124]
    assert delta(store, before)["get"] == 2  # per small object: one GET of all of it


def test_open_after_retention_inside_an_object_skips_the_start_get_too() -> None:
    store, rec, engine = make(every=2)
    for _ in range(6):
        engine.append(recs(3))
    engine.delete_before(7)  # inside the object [6, 9)
    total = engine.bytes_total()
    engine.close()
    before = requests(store)
    reopened = open_again(store, every=2)
    assert delta(store, before) == {"put": 0, "get": 1, "list": 1, "delete": 0}
    assert (reopened.start_offset(), reopened.end_offset()) == (7, 18)
    assert reopened.bytes_total() == total
    assert reopened.read(7, 1, 0)[0].offset == 7
    reopened.invariants()


def test_crash_opens_with_footer_gets_only_for_objects_after_the_last_manifest() -> None:
    store, rec, engine = make(every=4)
    for _ in range(10):
        engine.append(recs(1))  # manifests after objects 4 and 8; no close
    rec.log.clear()
    recovered = S3Engine(rec, PREFIX, config=engine.config)
    assert recovered.manifest_use is ManifestUse.USED
    assert rec.gets() == ["manifest", f"{8:020d}.tmqs", f"{9:020d}.tmqs"]
    assert [op for op, _ in rec.log].count("list") == 1
    assert rec.mutations() == []  # 2 uncovered objects: no manifest due yet
    assert snapshot(recovered)[:2] == (0, 10)


def test_open_of_a_log_without_manifest_writes_one_when_due() -> None:
    store, rec, engine = make(every=1000)
    for _ in range(5):
        engine.append(recs(1))
    first = open_again(store, every=3)  # crash: no manifest yet; 5 footers read
    assert first.manifest_use is ManifestUse.ABSENT
    assert decode_manifest(PREFIX, MANIFEST, store.raw(MANIFEST)).covers_end == 5
    before = requests(store)
    assert open_again(store, every=3).end_offset() == 5
    assert delta(store, before)["get"] == 1


# ---------------------------------------------------------------------- corrupt and stale


@pytest.mark.parametrize("damage", ["flip", "short", "empty", "magic"])
def test_corrupt_manifest_falls_back_to_every_footer_and_is_rewritten(damage: str) -> None:
    store, rec, engine = make(every=3)
    for _ in range(7):
        engine.append(recs(2))
    engine.close()
    expected = snapshot(open_again(store))
    raw = bytearray(store.raw(MANIFEST))
    if damage == "flip":
        raw[MANIFEST_HEAD.size + 5] ^= 0x10
    elif damage == "short":
        raw = raw[:-9]
    elif damage == "empty":
        raw = bytearray()
    else:
        raw[0:4] = b"XXXX"
    store.corrupt(MANIFEST, bytes(raw))
    rec.log.clear()
    reopened = S3Engine(rec, PREFIX, config=engine.config)
    assert reopened.manifest_use is ManifestUse.CORRUPT
    assert "manifest" in reopened.manifest_detail
    assert len(rec.gets()) == 1 + 7  # the manifest, then every footer
    assert rec.mutations() == [("delete", "manifest"), ("put", "manifest")]
    assert snapshot(reopened) == expected
    again = open_again(store)
    assert again.manifest_use is ManifestUse.USED
    assert snapshot(again) == expected


def test_an_unusable_manifest_is_deleted_before_open_deletes_leftover_objects() -> None:
    """A retention cut short (start object PUT, objects below it not yet deleted) beside an
    unusable manifest: the open DELETEs the manifest before it changes any object."""
    store, rec, engine = make(every=2)
    for _ in range(4):
        engine.append(recs(3))
    engine.close()
    store.put(f"{PREFIX}/start", encode_start(7))
    store.corrupt(MANIFEST, b"garbage")
    rec.log.clear()
    reopened = S3Engine(rec, PREFIX, config=engine.config)
    assert reopened.manifest_use is ManifestUse.CORRUPT
    assert rec.mutations() == [
        ("delete", "manifest"),
        ("delete", f"{0:020d}.tmqs"),
        ("delete", f"{3:020d}.tmqs"),
        ("put", "manifest"),
    ]
    assert snapshot(reopened)[:2] == (7, 12)


def test_a_stale_manifest_that_misses_newer_objects_below_its_end_is_rejected() -> None:
    """Restores a pre-truncate manifest by hand (the engine never leaves one): the truncated log
    regrew under new keys below the manifest's covers_end, so the LIST disagrees with it."""
    store, rec, engine = make(every=4)
    for _ in range(4):
        engine.append(recs(3))  # objects 0, 3, 6, 9; manifest covers [0, 12)
    stale = store.raw(MANIFEST)
    engine.truncate(4)
    engine.append(recs(3, ts=100))  # object 4
    engine.close()
    expected = snapshot(open_again(store))
    store.corrupt(MANIFEST, stale)
    reopened = open_again(store)
    assert reopened.manifest_use is ManifestUse.REJECTED
    assert "00000000000000000004.tmqs is below covers_end 12" in reopened.manifest_detail
    assert snapshot(reopened) == expected
    assert decode_manifest(PREFIX, MANIFEST, store.raw(MANIFEST)).covers_end == 7  # rewritten


def test_a_stale_manifest_over_recycled_keys_is_caught_when_the_footer_is_read() -> None:
    """Truncate then appends recreate the same keys with the same bounds; a (hand-restored)
    stale manifest then agrees with the LIST, and the lazy footer check catches it."""
    store, rec, engine = make(every=4)
    for _ in range(4):
        engine.append(recs(3))
    stale = store.raw(MANIFEST)
    engine.truncate(6)
    engine.append(recs(3, ts=500, payload=b"longer" * 10))  # object 6 again, other sizes
    engine.append(recs(3, ts=600))  # object 9 again
    engine.close()
    store.corrupt(MANIFEST, stale)
    reopened = open_again(store)
    assert reopened.manifest_use is ManifestUse.USED  # nothing at open can tell
    assert [r.offset for r in reopened.read(0, 6, ALL)] == list(range(6))
    with pytest.raises(S3LogCorrupt, match="00000000000000000006.tmqs: changed under us"):
        reopened.read(6, 1, ALL)


def test_a_stale_manifest_from_before_retention_is_rejected_by_the_start_object() -> None:
    """Retention inside the first object changes only the start object; a (hand-restored)
    manifest from before it says start 0 while the start object is listed."""
    store, rec, engine = make(every=2)
    for _ in range(4):
        engine.append(recs(3))
    stale = store.raw(MANIFEST)
    engine.delete_before(1)
    engine.close()
    store.corrupt(MANIFEST, stale)
    reopened = open_again(store)
    assert reopened.manifest_use is ManifestUse.REJECTED
    assert "start 0 but topic/0/start is listed" in reopened.manifest_detail
    assert snapshot(reopened)[:2] == (1, 12)


def test_manifest_entries_gone_from_the_list_are_dropped_and_the_manifest_rewritten() -> None:
    store, rec, engine = make(every=4)
    for _ in range(4):
        engine.append(recs(3))
    engine.close()
    store.delete(f"{PREFIX}/{9:020d}.tmqs")  # as a truncate would, had it kept the manifest
    rec.log.clear()
    reopened = S3Engine(rec, PREFIX, config=engine.config)
    assert reopened.manifest_use is ManifestUse.USED
    assert "1 listed objects are gone" in reopened.manifest_detail
    assert snapshot(reopened)[:2] == (0, 9)
    assert rec.mutations() == [("delete", "manifest"), ("put", "manifest")]
    assert decode_manifest(PREFIX, MANIFEST, store.raw(MANIFEST)).covers_end == 9
    reopened.append(recs(3, ts=77))  # object 9 again: the new manifest does not claim it
    reopened.close()
    assert snapshot(open_again(store))[2][-1].timestamp_ms == 79


def test_missing_first_object_is_still_reported_as_a_gap() -> None:
    store, rec, engine = make(every=2)
    for _ in range(4):
        engine.append(recs(2))
    engine.delete_before(3)
    engine.close()
    store.delete(f"{PREFIX}/{2:020d}.tmqs")
    with pytest.raises(S3LogCorrupt, match="gap"):
        open_again(store)


# ------------------------------------------------------------------------------- ordering


def test_truncate_delete_before_and_destroy_drop_the_manifest_before_changing_objects() -> None:
    store, rec, engine = make(every=2)
    for _ in range(4):
        engine.append(recs(3))
    rec.log.clear()
    engine.truncate(7)
    assert rec.mutations() == [
        ("delete", "manifest"),
        ("delete", f"{9:020d}.tmqs"),
        ("put", f"{6:020d}.tmqs"),
        ("put", "manifest"),
    ]
    rec.log.clear()
    engine.delete_before(4)
    assert rec.mutations() == [
        ("delete", "manifest"),
        ("put", "start"),
        ("delete", f"{0:020d}.tmqs"),
        ("put", "manifest"),
    ]
    rec.log.clear()
    engine.destroy()
    assert rec.mutations() == [
        ("put", "destroyed"),
        ("delete", "manifest"),
        ("delete", f"{6:020d}.tmqs"),
        ("delete", f"{3:020d}.tmqs"),
        ("delete", "start"),
        ("delete", "destroyed"),
    ]
    assert store.keys() == []


def test_a_failed_manifest_put_neither_fails_the_append_nor_poisons() -> None:
    store, rec, engine = make(every=2, retries=1)
    rec.refuse_puts = (MANIFEST,)
    engine.append(recs(1))
    engine.append(recs(1))  # the data PUT succeeds, the manifest PUT fails
    assert engine.manifest_put_failures == 1
    assert engine.durable_end() == 2
    engine.append(recs(1))  # not retried on every append: due again after 2 more objects
    assert engine.manifest_put_failures == 1
    engine.append(recs(1))
    assert engine.manifest_put_failures == 2
    engine.invariants()
    rec.refuse_puts = ()
    engine.truncate(3)  # a manifest PUT may have landed: truncate still deletes it first
    assert rec.mutations()[-3:] == [
        ("delete", "manifest"), ("delete", f"{3:020d}.tmqs"), ("put", "manifest")
    ]
    engine.close()
    assert snapshot(open_again(store))[:2] == (0, 3)


def test_a_failed_manifest_delete_poisons_before_anything_changes() -> None:
    store, rec, engine = make(every=2)
    for _ in range(4):
        engine.append(recs(3))
    old = snapshot(engine)
    store.fail_next("delete", 1, transient=False)
    with pytest.raises(DeviceError):
        engine.truncate(2)
    with pytest.raises(EnginePoisoned):
        engine.read(0, 1, 1)
    assert snapshot(open_again(store)) == old


# ------------------------------------------------------------------- crash at every step


def _crash_sweep(every: int, change: Any, check: Any, first: int = 0) -> list[int]:
    """For k = 0, 1, ...: build the same log (from `first`), let `change` make k mutating
    requests and crash at the next, recover, `check` the recovered state, then append more,
    crash again and compare with the reference (recycled keys must not be read through a stale
    manifest)."""
    mutations_done: list[int] = []
    for budget in range(100):
        store, rec, engine = make(every=every, seed=budget)
        for i in range(6):
            engine.append(recs(3, ts=10 * i))  # objects 0, 3, ..., 15
        engine.delete_before(first)
        old = snapshot(engine)
        rec.budget = budget
        try:
            change(engine)
            finished = True
        except DeviceError as exc:
            assert "crash point" in str(exc)
            finished = False
        rec.budget = None
        recovered = open_again(store, every)
        state = snapshot(recovered)
        check(old, state, finished)
        start, end, log = state
        more = [Record(end + i, 1000 + i, None, b"new" * (i + 1)) for i in range(7)]
        for i in range(0, 7, 2):
            recovered.append([r.at(-1) for r in more[i : i + 2]])
        assert snapshot(open_again(store, every)) == (start, end + 7, log + more)
        recovered.close()
        assert snapshot(open_again(store, every)) == (start, end + 7, log + more)
        mutations_done.append(budget)
        if finished:
            return mutations_done
    raise AssertionError("the change never finished within 100 requests")


@pytest.mark.parametrize("every", [1, 2, 5])
@pytest.mark.parametrize("offset", [0, 4, 9, 17])
def test_a_crash_at_every_step_of_truncate_opens_to_a_prefix(every: int, offset: int) -> None:
    def check(old: Any, state: Any, finished: bool) -> None:
        start, end, log = state
        assert start == old[0]
        assert offset <= end <= old[1], (offset, end)
        assert log == old[2][: end - start]
        if finished:
            assert end == offset

    steps = _crash_sweep(every, lambda engine: engine.truncate(offset), check)
    assert len(steps) >= 3  # the sweep went through the manifest delete and object changes


@pytest.mark.parametrize("every", [1, 2, 5])
@pytest.mark.parametrize(("first", "offset"), [(0, 3), (0, 7), (0, 18), (1, 2), (4, 5), (1, 8)])
def test_a_crash_at_every_step_of_delete_before_opens_to_old_or_new(
    every: int, first: int, offset: int
) -> None:
    """`first` > 0: the start object and a manifest with that start exist before; (1, 2) and
    (4, 5) move the start inside one object, where only the start says what changed."""

    def check(old: Any, state: Any, finished: bool) -> None:
        start, end, log = state
        assert start in (first, offset), start
        assert end == old[1]
        assert log == old[2][start - first :]
        if finished:
            assert start == offset

    steps = _crash_sweep(every, lambda engine: engine.delete_before(offset), check, first)
    assert len(steps) >= 3


@pytest.mark.parametrize("every", [1, 2, 5])
def test_a_crash_at_every_step_of_destroy_opens_to_old_or_empty(every: int) -> None:
    outcomes: list[str] = []

    def check(old: Any, state: Any, finished: bool) -> None:
        assert state in (old, (0, 0, [])), state[:2]
        outcomes.append("old" if state == old else "empty")
        if finished:
            assert outcomes[-1] == "empty"

    _crash_sweep(every, lambda engine: engine.destroy(), check)
    first_empty = outcomes.index("empty")
    assert outcomes[0] == "old"
    assert outcomes[first_empty:] == ["empty"] * (len(outcomes) - first_empty), outcomes
