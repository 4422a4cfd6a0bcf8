"""Sim-only semantics of `model.devices.fs.SimFileSystem`: power loss, directory durability, torn
writes, writeback, EIO, bit flips, capacity, time accounting and determinism. The port behaviour it
shares with the real filesystem is in tests/storage/test_fs_port.py."""

from __future__ import annotations

import hashlib
import inspect
import random
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from model.devices.fs import EIO_DETAIL, SimFileSystem, SimFsConfig
from model.sim.dist import Dist
from real.storage.devices import DeviceError, NotFound, write_file_atomic
from real.storage.errors import InvalidArgument

ROOT = Path(__file__).resolve().parents[2]
ZERO = Dist("fixed", 0.0)
NO_TIME = {"write_latency": ZERO, "sync_latency": ZERO, "read_latency": ZERO, "meta_latency": ZERO}


def sim(seed: int = 1, **config: object) -> SimFileSystem:
    return SimFileSystem(random.Random(seed), SimFsConfig(**config))  # type: ignore[arg-type]


def ready(fs: SimFileSystem, directory: str = "d") -> SimFileSystem:
    """`directory` exists durably (created, parent synced)."""
    fs.make_dirs(directory)
    fs.sync_dir("")
    return fs


# ------------------------------------------------------------------------------ power loss


def test_crash_keeps_synced_content_and_whole_unsynced_ops_without_torn_writes() -> None:
    outcomes = set()
    for seed in range(60):
        fs = ready(sim(seed, torn_writes=False))
        fs.append("d/f", b"A" * 100)
        fs.sync("d/f")
        fs.sync_dir("d")
        fs.append("d/f", b"B" * 10)
        fs.append("d/f", b"C" * 10)
        fs.crash()
        got = fs.read("d/f", 0, 1000)
        assert got in (b"A" * 100, b"A" * 100 + b"B" * 10, b"A" * 100 + b"B" * 10 + b"C" * 10)
        outcomes.add(len(got))
        fs.invariants()
    assert outcomes == {100, 110, 120}  # every prefix of the op list is reachable


def test_torn_writes_keep_a_byte_prefix_of_the_first_dropped_append() -> None:
    lengths = set()
    for seed in range(200):
        fs = ready(sim(seed))
        fs.append("d/f", b"synced")
        fs.sync("d/f")
        fs.sync_dir("d")
        fs.append("d/f", bytes(range(50)))
        fs.crash()
        got = fs.read("d/f", 0, 1000)
        assert got[:6] == b"synced"
        assert got[6:] == bytes(range(50))[: len(got) - 6]
        lengths.add(len(got) - 6)
        assert fs.stats.torn_bytes_kept + fs.stats.bytes_lost == 50 or len(got) == 56
    assert 0 in lengths and 50 in lengths
    assert len([n for n in lengths if 0 < n < 50]) >= 10  # torn tails of many lengths


def test_after_recovery_everything_is_durable() -> None:
    fs = ready(sim(3))
    fs.append("d/f", b"x" * 40)
    fs.sync_dir("d")
    fs.crash()
    first = fs.read("d/f", 0, 100)
    assert fs.unsynced_ops("d/f") == 0
    fs.crash()
    assert fs.read("d/f", 0, 100) == first


def test_unsynced_truncate_may_be_undone_by_a_crash() -> None:
    outcomes = set()
    for seed in range(40):
        fs = ready(sim(seed, torn_writes=False))
        fs.append("d/f", b"0123456789")
        fs.sync("d/f")
        fs.sync_dir("d")
        fs.truncate("d/f", 4)
        fs.append("d/f", b"xy")
        fs.crash()
        outcomes.add(fs.read("d/f", 0, 100))
    assert outcomes == {b"0123456789", b"0123", b"0123xy"}


def test_stats_count_calls_and_losses() -> None:
    fs = ready(sim(5, torn_writes=False))
    fs.append("d/f", b"abc")
    fs.append("d/f", b"de")
    fs.sync("d/f")
    fs.read("d/f", 1, 3)
    fs.sync_dir("d")
    fs.append("d/f", b"lost?")
    fs.crash()
    s = fs.stats
    assert (s.appends, s.bytes_written, s.syncs, s.dir_syncs) == (3, 10, 1, 2)
    assert (s.reads, s.bytes_read, s.crashes) == (1, 3, 1)
    assert s.torn_bytes_kept == 0
    assert s.bytes_lost == (5 if fs.size("d/f") == 5 else 0)


# ------------------------------------------------------------------------------ directories


def test_a_created_file_vanishes_unless_its_directory_is_synced() -> None:
    fs = ready(sim())
    fs.append("d/f", b"content")
    fs.sync("d/f")  # content durable, but the name is not
    fs.crash()
    assert not fs.exists("d/f")
    assert fs.list_dir("d") == []
    fs.append("d/f", b"content")
    fs.sync("d/f")
    fs.sync_dir("d")
    fs.crash()
    assert fs.read("d/f", 0, 100) == b"content"


def test_a_removed_file_reappears_unless_its_directory_is_synced() -> None:
    fs = ready(sim())
    fs.append("d/f", b"durable")
    fs.sync("d/f")
    fs.sync_dir("d")
    fs.append("d/f", b" and not")
    fs.remove("d/f")
    fs.crash()
    assert fs.list_dir("d") == ["f"]
    assert fs.read("d/f", 0, 100)[:7] == b"durable"
    fs.remove("d/f")
    fs.sync_dir("d")
    fs.crash()
    assert not fs.exists("d/f")


def test_a_rename_is_undone_unless_the_directory_is_synced() -> None:
    fs = ready(sim())
    for name, data in [("d/old", b"old"), ("d/new", b"new")]:
        fs.append(name, data)
        fs.sync(name)
    fs.sync_dir("d")
    fs.rename("d/new", "d/old")
    assert fs.files() == {"d/old": b"new"}
    fs.crash()
    assert fs.files() == {"d/new": b"new", "d/old": b"old"}
    fs.rename("d/new", "d/old")
    fs.sync_dir("d")
    fs.crash()
    assert fs.files() == {"d/old": b"new"}


def test_write_file_atomic_is_all_or_nothing_across_a_crash() -> None:
    for seed in range(20):
        fs = ready(sim(seed))
        write_file_atomic(fs, "d/meta", b"v1")
        fs.crash()
        assert fs.files() == {"d/meta": b"v1"}
        fs.inject_eio("sync_dir", "d")  # the final directory sync fails: the rename may be lost
        with pytest.raises(DeviceError):
            write_file_atomic(fs, "d/meta", b"version 2")
        fs.crash()
        assert fs.read("d/meta", 0, 100) == b"v1"
        write_file_atomic(fs, "d/meta", b"version 3")
        fs.crash()
        assert fs.read("d/meta", 0, 100) == b"version 3"


def test_new_directories_need_their_parent_synced() -> None:
    fs = sim()
    fs.make_dirs("a/b")
    fs.append("a/b/f", b"x")
    fs.sync("a/b/f")
    fs.sync_dir("a/b")
    fs.sync_dir("a")  # but not "": "a" itself is not durable
    fs.crash()
    assert fs.list_dir("") == []
    fs.make_dirs("a/b")
    fs.append("a/b/f", b"x")
    fs.sync("a/b/f")
    for d in ["a/b", "a", ""]:
        fs.sync_dir(d)
    fs.crash()
    assert fs.files() == {"a/b/f": b"x"}


def test_make_dirs_durable_relaxes_the_parent_rule() -> None:
    fs = sim(make_dirs_durable=True)
    fs.make_dirs("a/b")
    fs.append("a/b/f", b"x")
    fs.sync("a/b/f")
    fs.sync_dir("a/b")
    fs.crash()
    assert fs.files() == {"a/b/f": b"x"}


def test_rename_is_within_one_directory_and_respects_kinds() -> None:
    fs = ready(sim())
    fs.make_dirs("e")
    fs.append("d/f", b"x")
    with pytest.raises(DeviceError, match="within one directory"):
        fs.rename("d/f", "e/f")
    fs.make_dirs("d/sub")
    with pytest.raises(DeviceError, match="EISDIR"):
        fs.rename("d/f", "d/sub")
    with pytest.raises(DeviceError, match="ENOTDIR"):
        fs.rename("d/sub", "d/f")
    fs.rename("d/sub", "d/sub2")  # directories can be renamed
    assert fs.list_dir("d") == ["f", "sub2"]
    fs.rename("d/f", "d/f")  # same name: nothing happens
    assert fs.read("d/f", 0, 1) == b"x"


# ------------------------------------------------------------------------------ the property

NAMES = ["a", "b", "c"]
OPS = st.one_of(
    st.tuples(st.just("append"), st.sampled_from(NAMES), st.integers(1, 12)),
    st.tuples(st.just("append"), st.sampled_from(NAMES), st.integers(1, 12)),
    st.tuples(st.just("sync_dir")),
    st.tuples(st.just("truncate"), st.sampled_from(NAMES), st.integers(0, 30)),
    st.tuples(st.just("sync"), st.sampled_from(NAMES)),
    st.tuples(st.just("sync_dir")),
    st.tuples(st.just("rename"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("remove"), st.sampled_from(NAMES)),
    st.tuples(st.just("crash")),
)


@dataclass
class RefFile:
    """A naive reference inode: immutable bytes and the list of unsynced operations."""

    cur: bytes = b""
    dur: bytes = b""
    ops: list[tuple[str, bytes | int]] = field(default_factory=list)


def allowed_after_crash(ref: RefFile, got: bytes, torn: bool) -> bool:
    """`got` is durable content + the effect of a prefix of the unsynced operations, plus (with
    torn writes) a byte prefix of the first dropped append."""
    state = ref.dur
    for kind, arg in ref.ops:
        if got == state:
            return True
        if kind == "append":
            assert isinstance(arg, bytes)
            extra = got[len(state) :]
            if torn and got.startswith(state) and len(extra) < len(arg) and arg.startswith(extra):
                return True
            state += arg
        else:
            assert isinstance(arg, int)
            state = state[:arg] + bytes(max(0, arg - len(state)))
    return got == state


def payload(step: int, length: int) -> bytes:
    """Bytes that differ from step to step and within one append (so a torn tail taken from the
    wrong end, or a reordering, cannot pass for a prefix by accident)."""
    return bytes((step * 13 + i) % 251 + 1 for i in range(length))


def apply_both(fs: SimFileSystem, names: dict[str, RefFile], step: int, op: tuple) -> None:
    kind, args = op[0], op[1:]
    if kind == "append":
        data = payload(step, args[1])
        ref = names.setdefault(args[0], RefFile())
        ref.cur += data
        ref.ops.append(("append", data))
        assert fs.append(f"d/{args[0]}", data) == len(ref.cur)
    elif kind == "truncate" and args[0] in names:
        ref = names[args[0]]
        ref.cur = ref.cur[: args[1]] + bytes(max(0, args[1] - len(ref.cur)))
        ref.ops.append(("truncate", args[1]))
        fs.truncate(f"d/{args[0]}", args[1])
    elif kind == "sync" and args[0] in names:
        ref = names[args[0]]
        ref.dur, ref.ops = ref.cur, []
        fs.sync(f"d/{args[0]}")
    elif kind == "rename" and args[0] in names and args[0] != args[1]:
        names[args[1]] = names.pop(args[0])
        fs.rename(f"d/{args[0]}", f"d/{args[1]}")
    elif kind == "remove" and args[0] in names:
        del names[args[0]]
        fs.remove(f"d/{args[0]}")


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(OPS, max_size=40),
    seed=st.integers(0, 2**32),
    torn=st.booleans(),
    writeback_ops_max=st.sampled_from([2, 3, 4096]),
)
def test_recovered_files_are_durable_content_plus_a_prefix_of_unsynced_ops(
    ops: list[tuple], seed: int, torn: bool, writeback_ops_max: int
) -> None:
    fs = ready(sim(seed, torn_writes=torn, writeback_ops_max=writeback_ops_max))
    names: dict[str, RefFile] = {}
    durable_names: dict[str, RefFile] = {}
    for step, op in enumerate([*ops, ("crash",)]):  # always end with a crash
        note(repr(op))
        if op[0] == "sync_dir":
            fs.sync_dir("d")
            durable_names = dict(names)
        elif op[0] == "crash":
            fs.crash()
            assert fs.list_dir("d") == sorted(durable_names)
            for name in sorted(durable_names):
                ref = durable_names[name]
                got = fs.read(f"d/{name}", 0, 1 << 20)
                assert allowed_after_crash(ref, got, torn), (name, ref, got)
                ref.cur = ref.dur = got
                ref.ops = []
            names = dict(durable_names)
        else:
            apply_both(fs, names, step, op)
        assert fs.files() == {f"d/{n}": names[n].cur for n in sorted(names)}
        fs.invariants()


# ------------------------------------------------------------------------------ writeback


def test_writeback_bounds_unsynced_ops_and_makes_a_prefix_durable() -> None:
    fs = ready(sim(2, writeback_ops_max=4, torn_writes=False))
    fs.append("d/f", b"")  # create
    fs.sync_dir("d")
    for i in range(10):
        fs.append("d/f", bytes([65 + i]))
        assert fs.unsynced_ops("d/f") <= 4
    assert fs.stats.writebacks >= 3
    fs.crash()
    got = fs.read("d/f", 0, 100)
    assert len(got) >= 6  # at most 4 unsynced ops could be lost
    assert got == b"ABCDEFGHIJ"[: len(got)]


# ------------------------------------------------------------------------------ faults


def test_injected_eio_fails_the_next_matching_calls_and_changes_nothing() -> None:
    fs = ready(sim())
    fs.append("d/f", b"abc")
    fs.append("e", b"other")
    fs.inject_eio("append", "d/", count=2)
    for _ in range(2):
        with pytest.raises(DeviceError) as info:
            fs.append("d/f", b"zzz")
        assert info.value.detail == EIO_DETAIL
        assert (info.value.op, info.value.target) == ("append", "d/f")
        assert not isinstance(info.value, NotFound)
    assert fs.append("e", b"!") == 6  # prefix does not match: unaffected
    assert fs.read("d/f", 0, 10) == b"abc"  # other ops unaffected; nothing changed
    assert fs.append("d/f", b"d") == 4  # count exhausted
    assert fs.stats.eio_raised == 2


@pytest.mark.parametrize(
    ("op", "call"),
    [
        ("sync", lambda fs: fs.sync("d/f")),
        ("read", lambda fs: fs.read("d/f", 0, 1)),
        ("truncate", lambda fs: fs.truncate("d/f", 0)),
        ("rename", lambda fs: fs.rename("d/f", "d/g")),
        ("remove", lambda fs: fs.remove("d/f")),
        ("sync_dir", lambda fs: fs.sync_dir("d")),
        ("list_dir", lambda fs: fs.list_dir("d")),
    ],
)
def test_eio_on_each_operation(op: str, call: object) -> None:
    fs = ready(sim(torn_writes=False))
    fs.append("d/f", b"abc")
    fs.inject_eio(op)
    with pytest.raises(DeviceError, match="EIO"):
        call(fs)  # type: ignore[operator]
    assert fs.files() == {"d/f": b"abc"}
    assert fs.unsynced_ops("d/f") == 1  # a failed sync made nothing durable
    fs.crash()
    assert fs.list_dir("d") == []  # a failed sync_dir made nothing durable


def test_inject_eio_validates_its_arguments() -> None:
    fs = sim()
    with pytest.raises(InvalidArgument, match="op must be one of"):
        fs.inject_eio("fsync")
    with pytest.raises(InvalidArgument, match="count"):
        fs.inject_eio("read", count=0)


def test_flip_bit_corrupts_current_and_durable_bytes() -> None:
    fs = ready(sim(torn_writes=False))
    fs.append("d/f", b"\x00" * 8)
    fs.sync("d/f")
    fs.sync_dir("d")
    fs.truncate("d/f", 2)  # durable bytes beyond 2 are now held apart from the current ones
    fs.flip_bit("d/f", 0, 3)
    assert fs.read("d/f", 0, 8) == b"\x08\x00"
    fs.crash()
    got = fs.read("d/f", 0, 8)
    assert got[0] == 0x08  # the flip survives whichever state the crash recovers
    assert got in (b"\x08\x00", b"\x08" + b"\x00" * 7)


def test_flip_bit_hits_durable_bytes_held_apart_and_queued_appends() -> None:
    flipped = b"\x00" * 5 + b"\x80" + b"\x00" * 2
    outcomes = set()
    for seed in range(30):
        fs = ready(sim(seed, torn_writes=False))
        fs.append("d/f", b"\x00" * 8)
        fs.sync("d/f")
        fs.sync_dir("d")
        fs.truncate("d/f", 2)
        fs.append("d/f", b"\x00" * 6)  # same size again; bytes 2.. are the unsynced append's
        fs.flip_bit("d/f", 5, 7)
        assert fs.read("d/f", 0, 8) == flipped
        fs.crash()  # durable (8 bytes), truncated (2) or truncated + appended (8): all flipped
        outcomes.add(fs.read("d/f", 0, 8))
    assert outcomes == {flipped, b"\x00\x00"}


def test_flip_bit_validates_its_arguments() -> None:
    fs = ready(sim())
    fs.append("d/f", b"ab")
    with pytest.raises(InvalidArgument, match="byte_offset"):
        fs.flip_bit("d/f", 2)
    with pytest.raises(InvalidArgument, match="bit"):
        fs.flip_bit("d/f", 0, 8)
    with pytest.raises(NotFound):
        fs.flip_bit("d/g", 0)


def test_capacity_raises_enospc_and_changes_nothing() -> None:
    fs = ready(sim(capacity_bytes=10))
    fs.append("d/a", b"x" * 8)
    with pytest.raises(DeviceError, match="ENOSPC"):
        fs.append("d/b", b"yyy")
    assert fs.list_dir("d") == ["a"]  # not even created
    with pytest.raises(DeviceError, match="ENOSPC"):
        fs.truncate("d/a", 11)
    assert fs.size("d/a") == 8
    assert fs.append("d/b", b"yy") == 2
    assert fs.used_bytes() == 10
    fs.remove("d/a")
    fs.truncate("d/b", 0)
    assert fs.used_bytes() == 0
    assert fs.append("d/c", b"z" * 10) == 10
    assert fs.stats.enospc_raised == 2
    fs.invariants()


# ------------------------------------------------------------------------------ time


def test_elapsed_time_charges_latency_and_bandwidth_then_drains() -> None:
    fs = sim(
        write_latency=Dist("fixed", 0.01),  # 10 µs
        write_bandwidth_mb_s=1000.0,  # 1 ms per MB
        sync_latency=Dist("fixed", 0.5),
        sync_bandwidth_mb_s=500.0,
        read_latency=Dist("fixed", 0.002),
        read_bandwidth_mb_s=2000.0,
        meta_latency=Dist("fixed", 0.001),
    )
    assert fs.take_elapsed_us() == 0
    fs.make_dirs("d")
    assert fs.take_elapsed_us() == 1
    fs.append("d/f", b"x" * 1_000_000)
    assert fs.take_elapsed_us() == 10 + 1000
    fs.sync("d/f")
    assert fs.take_elapsed_us() == 500 + 2000
    fs.sync("d/f")  # nothing dirty: a cheap call
    assert fs.take_elapsed_us() == 1
    fs.read("d/f", 0, 10_000)
    assert fs.take_elapsed_us() == 2 + 5
    fs.sync_dir("d")
    fs.truncate("d/f", 0)
    assert fs.take_elapsed_us() == 500 + 10
    assert fs.take_elapsed_us() == 0


def test_default_latencies_are_plausible_for_nvme() -> None:
    fs = ready(sim(9))
    fs.take_elapsed_us()
    syncs = []
    for _ in range(200):
        fs.append("d/f", b"x" * 4096)
        fs.sync("d/f")
        syncs.append(fs.take_elapsed_us())
    syncs.sort()
    assert 100 <= syncs[100] <= 1000  # median fdatasync of 4 KiB: 0.1 .. 1 ms
    assert syncs[-1] <= 25_000


def test_from_measurements_fits_a_lognormal() -> None:
    config = SimFsConfig.from_measurements(0.5, 2.0, device_write_mb_s=800.0, torn_writes=False)
    assert config.sync_latency.kind == "lognormal"
    assert config.sync_latency.a == 0.5
    assert config.sync_latency.b == pytest.approx(0.596, abs=0.001)  # ln 4 / 2.326
    assert config.sync_bandwidth_mb_s == 800.0
    assert config.torn_writes is False
    samples = sorted(config.sync_latency.sample_us(random.Random(i)) for i in range(2000))
    assert 1500 <= samples[int(0.99 * len(samples))] <= 2600
    with pytest.raises(InvalidArgument, match="unknown SimFsConfig field"):
        SimFsConfig.from_measurements(0.5, 2.0, 800.0, torn=True)
    with pytest.raises(InvalidArgument, match="fdatasync_p50_ms"):
        SimFsConfig.from_measurements(2.0, 0.5, 800.0)


@pytest.mark.parametrize(
    ("field_name", "value"),
    [("write_bandwidth_mb_s", 0), ("capacity_bytes", -1), ("writeback_ops_max", 1),
     ("sync_latency", 0.5)],
)
def test_config_errors_name_the_field(field_name: str, value: object) -> None:
    with pytest.raises(InvalidArgument, match=field_name):
        SimFsConfig(**{field_name: value})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ determinism


def _workload(seed: int) -> str:
    """A crash-heavy run; returns a digest of every byte, stat and microsecond it produced."""
    import hashlib
    import random

    from model.devices.fs import SimFileSystem

    fs = SimFileSystem(random.Random(seed))
    work = random.Random(seed + 1)
    fs.make_dirs("j")
    fs.sync_dir("")
    trace = []
    for step in range(300):
        name = f"j/{work.randrange(4)}"
        roll = work.random()
        if roll < 0.6:
            fs.append(name, work.randbytes(work.randrange(1, 300)))
        elif roll < 0.75 and fs.exists(name):
            fs.sync(name)
        elif roll < 0.85:
            fs.sync_dir("j")
        elif roll < 0.9 and fs.exists(name):
            fs.truncate(name, work.randrange(0, 200))
        elif roll < 0.95:
            fs.crash()
        trace.append((step, fs.take_elapsed_us(), sorted(fs.files().items())))
    trace.append(repr(fs.stats))
    return hashlib.sha256(repr(trace).encode()).hexdigest()


def test_same_seed_same_bytes_errors_and_times() -> None:
    assert _workload(11) == _workload(11)
    assert _workload(11) != _workload(12)


def test_determinism_does_not_depend_on_the_hash_seed() -> None:
    source = textwrap.dedent(inspect.getsource(_workload)) + "\nprint(_workload(11))\n"
    digests = []
    for hash_seed in ["0", "12345"]:
        env = {"PYTHONHASHSEED": hash_seed, "PATH": "/usr/bin:/bin"}
        out = subprocess.run(
            [sys.executable, "-c", source], cwd=ROOT, env=env, capture_output=True, text=True,
            check=True, timeout=60,
        )
        digests.append(out.stdout.strip())
    assert digests == [_workload(11), _workload(11)]


def test_latency_config_does_not_change_crash_outcomes() -> None:
    contents = []
    for config in [SimFsConfig(), SimFsConfig(**NO_TIME)]:  # type: ignore[arg-type]
        fs = ready(SimFileSystem(random.Random(4), config))
        fs.append("d/f", b"")
        fs.sync_dir("d")
        for i in range(30):
            fs.append("d/f", bytes([i]) * 7)
        fs.crash()
        contents.append(fs.files())
    assert contents[0] == contents[1]
    assert asdict(SimFsConfig()) != asdict(SimFsConfig(**NO_TIME))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ cost


def _append_64_mib_then_crash(fs: SimFileSystem) -> bytes:
    """64 MiB through one file, synced every 8 MiB, then one unsynced MiB and a crash."""
    chunk = b"\xab" * (1 << 20)
    for i in range(64):
        fs.append("d/seg", chunk)
        if i % 8 == 7:
            fs.sync("d/seg")
    fs.sync_dir("d")
    fs.append("d/seg", chunk)
    fs.crash()
    return chunk


def test_large_appends_survive_a_crash_byte_for_byte() -> None:
    fs = ready(sim(1))
    chunk = _append_64_mib_then_crash(fs)
    assert fs.size("d/seg") >= 64 << 20
    digest = hashlib.sha256(fs.read("d/seg", 0, 64 << 20)).hexdigest()
    assert digest == hashlib.sha256(chunk * 64).hexdigest()


@pytest.mark.bench
def test_bench_large_appends_cost_o_bytes() -> None:
    """Wall time, so a benchmark: appends must not copy the whole file each time."""
    fs = ready(sim(1))
    began = time.perf_counter()
    _append_64_mib_then_crash(fs)
    elapsed = time.perf_counter() - began
    print(f"64 MiB of simulated appends + crash: {elapsed:.3f} s")
    assert elapsed < 5.0, f"64 MiB of appends took {elapsed:.2f}s; expected well under 1 s"
    assert fs.size("d/seg") >= 64 << 20
