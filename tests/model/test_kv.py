"""`SimKeyValue`: crash semantics, the latency meter, injected errors, bounds and determinism."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from model.devices.kv import SimKeyValue, SimKvConfig
from model.sim.dist import Dist
from real.storage.devices import DeviceError

ROOT = Path(__file__).resolve().parents[2]
FIXED = SimKvConfig(
    write_latency=Dist("fixed", 0.02), sync_latency=Dist("fixed", 0.5),
    read_latency=Dist("fixed", 0.01), write_bytes_per_ms=1000, read_bytes_per_ms=2000,
)


def kv_with(seed: int = 0, config: SimKvConfig | None = None) -> SimKeyValue:
    return SimKeyValue(random.Random(seed), config)  # noqa: S311


def pairs_after(batches: int) -> list[tuple[bytes, bytes]]:
    """The state after the synced base plus the first `batches` unsynced pair-batches."""
    out = [(b"base", b"0")]
    out += [(f"k{i}{side}".encode(), b"v") for i in range(batches) for side in "ab"]
    return sorted(out)


def test_crash_keeps_synced_and_a_prefix_of_unsynced_batches() -> None:
    kept_counts = set()
    for seed in range(40):
        kv = kv_with(seed)
        kv.write(puts=[(b"base", b"0")], sync=True)
        for i in range(5):  # each batch writes a pair: a crash must never split one
            kv.write(puts=[(f"k{i}a".encode(), b"v"), (f"k{i}b".encode(), b"v")])
        kv.crash()
        items = kv.items()
        matches = [n for n in range(6) if items == pairs_after(n)]
        assert len(matches) == 1, items
        assert kv.items(durable=True) == items
        assert kv.stats.batches_kept + kv.stats.batches_lost == 5
        kept_counts.add(matches[0])
    assert {0, 5} <= kept_counts and len(kept_counts) >= 4


def test_crash_without_torn_prefix_loses_every_unsynced_batch() -> None:
    kv = kv_with(config=SimKvConfig(keep_unsynced_prefix=False))
    kv.write(puts=[(b"a", b"1")])
    kv.sync()
    kv.write(puts=[(b"b", b"2")])
    kv.write(delete_ranges=[(b"a", b"z")])
    assert kv.items() == []
    kv.crash()
    assert kv.items() == [(b"a", b"1")]
    assert (kv.stats.batches_lost, kv.stats.crashes) == (2, 1)


def test_a_synced_write_makes_every_earlier_write_durable() -> None:
    kv = kv_with()
    kv.write(puts=[(b"a", b"1")])
    kv.write(puts=[(b"b", b"2")], sync=True)
    assert kv.unsynced_batches == 0
    kv.crash()
    assert kv.items() == [(b"a", b"1"), (b"b", b"2")]


def test_crash_reopens_a_closed_store() -> None:
    kv = kv_with()
    kv.write(puts=[(b"a", b"1")], sync=True)
    kv.close()
    with pytest.raises(DeviceError, match="closed"):
        kv.get(b"a")
    kv.crash()
    assert kv.get(b"a") == b"1"


def test_latency_meter_charges_each_operation_and_resets() -> None:
    kv = kv_with(config=FIXED)
    assert kv.take_elapsed_us() == 0
    kv.write(puts=[(b"kk", bytes(98))])  # 100 bytes at 1000 bytes/ms = 100 us, plus 20 us
    assert kv.take_elapsed_us() == 120
    kv.write(puts=[(b"kk", bytes(98))], sync=True)
    assert kv.take_elapsed_us() == 120 + 500
    kv.sync()
    assert kv.take_elapsed_us() == 500
    assert kv.get(b"kk") == bytes(98)  # 98 bytes at 2000 bytes/ms = 49 us, plus 10 us
    assert kv.take_elapsed_us() == 59
    assert list(kv.scan(b"", b"\xff")) == [(b"kk", bytes(98))]
    assert kv.take_elapsed_us() == 59
    assert kv.take_elapsed_us() == 0


def test_default_calibration_is_plausible_for_nvme() -> None:
    config = SimKvConfig()
    assert 0.005 <= config.write_latency.mean_ms() <= 0.1
    assert 0.02 <= config.sync_latency.mean_ms() <= 2.0
    assert config.read_latency.mean_ms() <= config.sync_latency.mean_ms()


def test_injected_errors_fail_without_effect() -> None:
    kv = kv_with()
    kv.inject_error(count=2, op="write")
    assert kv.get(b"a") is None  # other operations are unaffected
    for _ in range(2):
        with pytest.raises(DeviceError, match="write 'sim-kv' failed: injected"):
            kv.write(puts=[(b"a", b"1")], sync=True)
    assert kv.items() == [] and kv.items(durable=True) == []
    kv.write(puts=[(b"a", b"1")])
    assert kv.stats.injected_errors == 2
    kv.inject_error()
    with pytest.raises(DeviceError, match="sync"):
        kv.sync()
    assert kv.unsynced_batches == 1
    with pytest.raises(ValueError, match="count"):
        kv.inject_error(count=0)
    with pytest.raises(ValueError, match="op must be one of"):
        kv.inject_error(op="fsync")


def test_unsynced_batches_are_bounded() -> None:
    kv = kv_with(config=SimKvConfig(unsynced_batches_max=3))
    for i in range(3):
        kv.write(puts=[(bytes([i]), b"v")])
    with pytest.raises(DeviceError, match="unsynced_batches_max=3"):
        kv.write(puts=[(b"x", b"v")])
    kv.write(puts=[(b"x", b"v")], sync=True)  # a synced write drains the queue
    assert kv.unsynced_batches == 0 and len(kv.items(durable=True)) == 4


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="SimKvConfig.write_bytes_per_ms"):
        SimKvConfig(write_bytes_per_ms=0)
    with pytest.raises(ValueError, match="SimKvConfig.sync_latency"):
        SimKvConfig(sync_latency=0.1)  # type: ignore[arg-type]


def run_workload(seed: int) -> str:
    """A fixed workload with crashes; returns a hash of every observable outcome."""
    kv = SimKeyValue(random.Random(seed))  # noqa: S311
    digest = hashlib.sha256()
    for step in range(200):
        key = (step * 7919 % 101).to_bytes(2, "big")
        if step % 13 == 0:
            kv.write(delete_ranges=[(key, key + b"\xff")], sync=step % 2 == 0)
        else:
            kv.write(puts=[(key, str(step).encode())])
        if step % 37 == 0:
            kv.crash()
        digest.update(str(kv.take_elapsed_us()).encode())
    digest.update(repr(kv.items()).encode() + repr(kv.stats).encode())
    return digest.hexdigest()


def test_same_seed_same_behaviour() -> None:
    assert run_workload(5) == run_workload(5)
    assert run_workload(5) != run_workload(6)


def test_behaviour_does_not_depend_on_hash_seed() -> None:
    code = "from tests.model.test_kv import run_workload; print(run_workload(5))"
    outs = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                              capture_output=True, text=True)
        outs.add(done.stdout.strip())
    assert outs == {run_workload(5)}
