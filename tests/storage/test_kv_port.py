"""Conformance of the `KeyValue` port: the same tests over `RocksKeyValue` and `SimKeyValue`."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.devices.kv import SimKeyValue
from real.node.rocks import RocksKeyValue
from real.storage.devices import DeviceError, KeyValue


@pytest.fixture(params=["rocks", "sim"])
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyValue]:
    if request.param == "rocks":
        store: KeyValue = RocksKeyValue(str(tmp_path / "db"), scan_chunk_max=4)
    else:
        store = SimKeyValue(random.Random(3))  # noqa: S311
    yield store
    store.close()


def fill(kv: KeyValue, keys: list[bytes]) -> None:
    kv.write(puts=[(k, b"v" + k) for k in keys])


def test_implements_the_port(kv: KeyValue) -> None:
    assert isinstance(kv, KeyValue)


def test_get_put_overwrite_delete(kv: KeyValue) -> None:
    assert kv.get(b"a") is None
    kv.write(puts=[(b"a", b"1"), (b"", b"empty key"), (b"\xff\xff", b"")])
    assert (kv.get(b"a"), kv.get(b""), kv.get(b"\xff\xff")) == (b"1", b"empty key", b"")
    kv.write(puts=[(b"a", b"2")], sync=True)
    assert kv.get(b"a") == b"2"
    kv.write(deletes=[b"a", b"never-existed"])
    assert kv.get(b"a") is None


def test_scan_bounds_are_half_open_and_ordered(kv: KeyValue) -> None:
    fill(kv, [b"a", b"b", b"b\x00", b"c", b"d", b"\x00", b"\xff"])
    assert [k for k, _ in kv.scan(b"b", b"d")] == [b"b", b"b\x00", b"c"]
    assert [k for k, _ in kv.scan(b"b", b"d", reverse=True)] == [b"c", b"b\x00", b"b"]
    assert [k for k, _ in kv.scan(b"", b"\xff\xff")] == [
        b"\x00", b"a", b"b", b"b\x00", b"c", b"d", b"\xff"]
    assert list(kv.scan(b"b", b"b")) == []
    assert list(kv.scan(b"x", b"y", reverse=True)) == []
    assert list(kv.scan(b"d", b"b")) == []
    assert dict(kv.scan(b"a", b"b")) == {b"a": b"va"}
    assert [k for k, _ in kv.scan(b"a\x00", b"c\x00", reverse=True)] == [b"c", b"b\x00", b"b"]


def test_long_scans_in_both_directions(kv: KeyValue) -> None:
    keys = [i.to_bytes(2, "big") for i in range(300)]
    fill(kv, keys)
    assert [k for k, _ in kv.scan(keys[10], keys[290])] == keys[10:290]
    assert [k for k, _ in kv.scan(keys[10], keys[290], reverse=True)] == keys[289:9:-1]


def test_delete_range_is_half_open(kv: KeyValue) -> None:
    fill(kv, [b"a", b"b", b"ba", b"c", b"d"])
    kv.write(delete_ranges=[(b"b", b"c"), (b"x", b"x")])
    assert [k for k, _ in kv.scan(b"", b"\xff")] == [b"a", b"c", b"d"]


def test_batch_order_is_ranges_then_deletes_then_puts(kv: KeyValue) -> None:
    fill(kv, [b"a", b"b", b"c"])
    kv.write(puts=[(b"b", b"new"), (b"c", b"new")], deletes=[b"c"], delete_ranges=[(b"a", b"z")])
    assert list(kv.scan(b"", b"\xff")) == [(b"b", b"new"), (b"c", b"new")]


def test_a_malformed_batch_writes_nothing(kv: KeyValue) -> None:
    with pytest.raises(TypeError, match=r"puts\[1\]"):
        kv.write(puts=[(b"a", b"1"), ("b", b"2")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"delete_ranges\[0\] has lo"):
        kv.write(puts=[(b"a", b"1")], delete_ranges=[(b"z", b"a")])
    with pytest.raises(TypeError, match="keys must be bytes"):
        kv.get("a")  # type: ignore[arg-type]
    assert list(kv.scan(b"", b"\xff")) == []


def test_scan_stopped_early_pins_nothing(kv: KeyValue) -> None:
    fill(kv, [bytes([i]) for i in range(50)])
    it = kv.scan(b"", b"\xff")
    assert next(it) == (b"\x00", b"v\x00")
    kv.write(puts=[(b"\x30", b"changed")])  # writing while a scan is open is allowed
    kv.sync()
    assert kv.get(b"\x30") == b"changed"


def test_sync_and_closed_store(kv: KeyValue) -> None:
    kv.write(puts=[(b"k", b"v")])
    kv.sync()
    kv.close()
    for call in (lambda: kv.get(b"k"), kv.sync, lambda: kv.write(puts=[(b"k", b"w")]),
                 lambda: kv.scan(b"", b"\xff")):
        with pytest.raises(DeviceError, match="closed"):
            call()


def test_rocks_reopen_keeps_synced_and_unsynced_writes(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    kv = RocksKeyValue(path)
    kv.write(puts=[(b"a", b"1")], sync=True)
    kv.write(puts=[(b"b", b"2")])
    abandoned = kv.scan(b"", b"\xff")
    assert next(abandoned) == (b"a", b"1")  # a live, half-read scan must not pin the DB open
    kv.close()
    again = RocksKeyValue(path)
    assert list(again.scan(b"", b"\xff")) == [(b"a", b"1"), (b"b", b"2")]
    again.close()
    with pytest.raises(DeviceError, match="closed"):
        next(abandoned)


def test_rocks_second_open_is_a_device_error(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    kv = RocksKeyValue(path)
    with pytest.raises(DeviceError, match="open"):
        RocksKeyValue(path)
    kv.close()
    with pytest.raises(ValueError, match="write_buffer_bytes"):
        RocksKeyValue(path, write_buffer_bytes=0)
