"""The power-loss layer: a process reads its own unsynced writes; only synced ones reach the OS,
so a new instance over the same directory (a node restarted after SIGKILL) sees only those."""

from __future__ import annotations

from pathlib import Path

from real.node.holdfs import HoldingFileSystem
from real.node.osfs import OsFileSystem
from real.server.raftlog import RaftLog


def test_unsynced_appends_are_read_back_but_lost_by_a_restart(tmp_path: Path) -> None:
    fs = HoldingFileSystem(str(tmp_path))
    fs.make_dirs("d")
    assert fs.append("d/f", b"abc") == 3
    fs.sync("d/f")
    assert fs.append("d/f", b"defg") == 7
    assert fs.size("d/f") == 7
    assert fs.read("d/f", 1, 10) == b"bcdefg"
    assert fs.read("d/f", 4, 2) == b"ef"
    assert OsFileSystem(str(tmp_path)).read("d/f", 0, 10) == b"abc"  # what a SIGKILL keeps
    fs.truncate("d/f", 5)
    assert fs.read("d/f", 0, 10) == b"abcde"
    job = fs.sync_handle("d/f")
    job()
    assert OsFileSystem(str(tmp_path)).read("d/f", 0, 10) == b"abcde"
    fs.append("d/f", b"XY")
    fs.truncate("d/f", 2)  # below the synced size: the OS file is cut, the held bytes go
    assert fs.read("d/f", 0, 10) == b"ab"
    fs.append("d/g", b"held")
    fs.rename("d/g", "d/h")
    assert fs.read("d/h", 0, 10) == b"held" and not fs.exists("d/g")
    restarted = HoldingFileSystem(str(tmp_path))
    assert restarted.size("d/h") == 0, "renamed, never synced: its contents are gone"
    fs.remove("d/h")
    assert not fs.exists("d/h")


def test_the_raft_log_over_it_keeps_what_it_synced(tmp_path: Path) -> None:
    fs = HoldingFileSystem(str(tmp_path))
    log = RaftLog(fs, "")
    durable = log.durable()
    assert durable is not None
    again = RaftLog(HoldingFileSystem(str(tmp_path)), "")
    assert again.durable() == durable
