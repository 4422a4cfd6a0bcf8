"""Conformance of the `FileSystem` port: the same assertions on the real `OsFileSystem` (a real
directory under tmp_path) and on the simulator's `SimFileSystem`, so engines tested in the
simulator meet the same behaviour on a real disk. Durability (crash) semantics are sim-only and
live in tests/model/test_fs.py."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.devices.fs import SimFileSystem
from real.node.osfs import OsFileSystem
from real.storage.devices import DeviceError, FileSystem, NotFound, write_file_atomic
from real.storage.errors import InvalidArgument

KINDS = ["os", "os-1-handle", "sim"]


@pytest.fixture(params=KINDS)
def fs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FileSystem]:
    if request.param == "sim":
        yield SimFileSystem(random.Random(7))
        return
    handles_max = 1 if request.param == "os-1-handle" else 256
    real = OsFileSystem(str(tmp_path / "root"), handles_max=handles_max)
    yield real
    real.close_all()


def test_implements_the_port(fs: FileSystem) -> None:
    assert isinstance(fs, FileSystem)
    assert fs.list_dir("") == []
    assert fs.exists("")


def test_append_creates_and_returns_the_new_size(fs: FileSystem) -> None:
    assert not fs.exists("a")
    assert fs.append("a", b"hello") == 5
    assert fs.append("a", bytearray(b" world")) == 11
    assert fs.append("a", b"") == 11
    assert fs.exists("a")
    assert fs.size("a") == 11
    assert fs.read("a", 0, 11) == b"hello world"


def test_append_of_nothing_creates_an_empty_file(fs: FileSystem) -> None:
    assert fs.append("empty", b"") == 0
    assert fs.exists("empty")
    assert fs.size("empty") == 0
    assert fs.read("empty", 0, 10) == b""


def test_read_is_short_only_at_end_of_file(fs: FileSystem) -> None:
    fs.append("a", b"0123456789")
    assert fs.read("a", 2, 3) == b"234"
    assert fs.read("a", 7, 100) == b"789"
    assert fs.read("a", 10, 5) == b""
    assert fs.read("a", 50, 5) == b""
    assert fs.read("a", 3, 0) == b""


def test_reads_see_unsynced_appends_across_files(fs: FileSystem) -> None:
    for i in range(5):  # more files than the 1-handle OsFileSystem caches
        fs.append(f"f{i}", bytes([i]) * (i + 1))
    for i in range(5):
        fs.append(f"f{i}", b"!")
    assert [fs.read(f"f{i}", 0, 100) for i in range(5)] == [
        bytes([i]) * (i + 1) + b"!" for i in range(5)
    ]


def test_truncate_shrinks_then_appends_go_to_the_new_end(fs: FileSystem) -> None:
    fs.append("a", b"0123456789")
    fs.truncate("a", 4)
    assert fs.size("a") == 4
    assert fs.read("a", 0, 100) == b"0123"
    assert fs.append("a", b"xy") == 6
    assert fs.read("a", 0, 100) == b"0123xy"
    fs.truncate("a", 0)
    assert fs.read("a", 0, 100) == b""


def test_truncate_beyond_the_end_pads_with_zeros(fs: FileSystem) -> None:
    fs.append("a", b"ab")
    fs.truncate("a", 5)
    assert fs.size("a") == 5
    assert fs.read("a", 0, 10) == b"ab\x00\x00\x00"


def test_rename_replaces_the_destination(fs: FileSystem) -> None:
    fs.append("src", b"new")
    fs.append("dst", b"old content")
    fs.rename("src", "dst")
    assert not fs.exists("src")
    assert fs.read("dst", 0, 100) == b"new"
    assert fs.size("dst") == 3
    assert fs.list_dir("") == ["dst"]
    fs.append("dst", b"!")  # a handle cached for the old dst must not be reused
    assert fs.read("dst", 0, 100) == b"new!"


def test_rename_to_a_fresh_name_and_back(fs: FileSystem) -> None:
    fs.make_dirs("d")
    fs.append("d/x", b"1")
    fs.rename("d/x", "d/y")
    assert fs.list_dir("d") == ["y"]
    fs.rename("d/y", "d/x")
    assert fs.list_dir("d") == ["x"]
    assert fs.read("d/x", 0, 1) == b"1"


def test_remove(fs: FileSystem) -> None:
    fs.append("a", b"1")
    fs.append("b", b"2")
    fs.remove("a")
    assert not fs.exists("a")
    assert fs.list_dir("") == ["b"]
    fs.append("a", b"again")  # recreated: a fresh, empty file
    assert fs.read("a", 0, 100) == b"again"


def test_list_dir_is_sorted_and_shows_directories(fs: FileSystem) -> None:
    for name in ["b", "a", "c10", "c9", "B"]:
        fs.append(name, b"x")
    fs.make_dirs("sub")
    assert fs.list_dir("") == ["B", "a", "b", "c10", "c9", "sub"]
    assert fs.list_dir("missing") == []
    assert fs.list_dir("missing/deeper") == []
    assert fs.list_dir("sub") == []


def test_make_dirs_is_nested_and_idempotent(fs: FileSystem) -> None:
    fs.make_dirs("a/b/c")
    fs.make_dirs("a/b/c")
    fs.make_dirs("a/b")
    assert fs.exists("a") and fs.exists("a/b") and fs.exists("a/b/c")
    assert fs.list_dir("a") == ["b"]
    assert fs.append("a/b/c/f", b"xyz") == 3
    assert fs.list_dir("a/b/c") == ["f"]
    fs.sync("a/b/c/f")
    fs.sync_dir("a/b/c")
    fs.sync_dir("")


def test_missing_files_raise_not_found_naming_the_operation(fs: FileSystem) -> None:
    calls = {
        "read": lambda: fs.read("nope", 0, 1),
        "size": lambda: fs.size("nope"),
        "remove": lambda: fs.remove("nope"),
        "truncate": lambda: fs.truncate("nope", 0),
        "sync": lambda: fs.sync("nope"),
        "rename": lambda: fs.rename("nope", "other"),
        "append": lambda: fs.append("no-dir/f", b"x"),
        "sync_dir": lambda: fs.sync_dir("no-dir"),
    }
    for op, call in calls.items():
        with pytest.raises(NotFound) as info:
            call()
        assert info.value.op == op, (op, info.value)
        assert "nope" in str(info.value) or "no-dir" in str(info.value)
    assert not fs.exists("nope")
    assert fs.list_dir("") == []


def test_exists_is_false_below_a_file(fs: FileSystem) -> None:
    fs.append("f", b"x")
    assert not fs.exists("f/g")
    assert not fs.exists("missing/g")


def test_directories_are_not_files(fs: FileSystem) -> None:
    fs.make_dirs("d")
    for call in [lambda: fs.read("d", 0, 1), lambda: fs.append("d", b"x"),
                 lambda: fs.remove("d")]:
        with pytest.raises(DeviceError) as info:
            call()
        assert not isinstance(info.value, NotFound)
    fs.append("f", b"x")
    with pytest.raises(DeviceError):
        fs.make_dirs("f/sub")
    with pytest.raises(DeviceError):
        fs.list_dir("f")
    assert fs.list_dir("") == ["d", "f"]


@pytest.mark.parametrize("path", ["/abs", "a/../b", ".."])
def test_paths_must_be_relative_without_dotdot(fs: FileSystem, path: str) -> None:
    with pytest.raises(DeviceError):
        fs.append(path, b"x")
    with pytest.raises(DeviceError):
        fs.exists(path)


def test_negative_offsets_and_sizes_are_invalid_arguments(fs: FileSystem) -> None:
    fs.append("a", b"abc")
    with pytest.raises(InvalidArgument, match="offset"):
        fs.read("a", -1, 1)
    with pytest.raises(InvalidArgument, match="length"):
        fs.read("a", 0, -1)
    with pytest.raises(InvalidArgument, match="size"):
        fs.truncate("a", -1)
    assert fs.read("a", 0, 3) == b"abc"


def test_close_releases_without_changing_anything(fs: FileSystem) -> None:
    fs.append("a", b"abc")
    fs.close("a")
    fs.close("a")
    fs.close("never-opened")
    assert fs.read("a", 0, 3) == b"abc"
    assert fs.append("a", b"d") == 4


def test_write_file_atomic_replaces_whole(fs: FileSystem) -> None:
    fs.make_dirs("meta")
    write_file_atomic(fs, "meta/state", b"v1")
    assert fs.read("meta/state", 0, 100) == b"v1"
    fs.append("meta/state.tmp", b"leftover from a crash")
    write_file_atomic(fs, "meta/state", b"version two")
    assert fs.read("meta/state", 0, 100) == b"version two"
    assert fs.list_dir("meta") == ["state"]
    write_file_atomic(fs, "top", b"")
    assert fs.size("top") == 0


def test_remove_dir_removes_only_empty_directories(fs: FileSystem) -> None:
    fs.make_dirs("a/b")
    fs.append("a/b/f", b"x")
    with pytest.raises(DeviceError) as info:
        fs.remove_dir("a/b")  # not empty
    assert not isinstance(info.value, NotFound)
    assert info.value.op == "remove_dir"
    with pytest.raises(DeviceError) as info:
        fs.remove_dir("a/b/f")  # a file
    assert not isinstance(info.value, NotFound)
    with pytest.raises(DeviceError):
        fs.remove_dir("")  # the root
    assert fs.read("a/b/f", 0, 1) == b"x"
    fs.remove("a/b/f")
    fs.remove_dir("a/b")
    assert not fs.exists("a/b")
    assert fs.list_dir("a") == []
    fs.sync_dir("a")
    with pytest.raises(NotFound) as missing:
        fs.remove_dir("a/b")
    assert missing.value.op == "remove_dir"
    fs.make_dirs("a/b")  # recreated: a fresh, empty directory
    assert fs.list_dir("a/b") == []
    assert fs.append("a/b/g", b"new") == 3
