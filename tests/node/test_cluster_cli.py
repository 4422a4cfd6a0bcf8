"""`twinmq cluster up|status|down` against real processes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from real.node import cluster

ROOT = Path(__file__).resolve().parents[2]


def twinmq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "real", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_status_and_down_without_a_cluster_are_usage_errors(tmp_path: Path) -> None:
    assert cluster.main(["status", "--dir", str(tmp_path)]) == 2
    assert cluster.main(["down", "--dir", str(tmp_path)]) == 2
    assert cluster.main(["up", "--nodes", "0", "--dir", str(tmp_path)]) == 2
    assert cluster.main(["join", "--dir", str(tmp_path)]) == 2
    assert cluster.main(["leave", "--dir", str(tmp_path), "2"]) == 2


@pytest.mark.integration
def test_up_status_down(tmp_path: Path) -> None:
    work = tmp_path / "c"
    done = twinmq("cluster", "up", "--nodes", "3", "--dir", str(work))
    assert done.returncode == 0, done.stderr + done.stdout
    try:
        assert "leader" in done.stdout and done.stdout.count("follower") == 2
        info = json.loads((work / "cluster.json").read_text())
        assert [n["id"] for n in info["nodes"]] == [1, 2, 3]
        assert oct((work / "secret").stat().st_mode)[-3:] == "600"
        out = io.StringIO()
        assert cluster.status(work, as_json=True, out=out) == 0
        nodes = json.loads(out.getvalue())["nodes"]
        assert [n["role"] for n in nodes].count("leader") == 1
        assert all(n["alive"] and n["registered"] == [1, 2, 3] for n in nodes)
        assert len({(n["leader"], n["term"]) for n in nodes}) == 1
        again = twinmq("cluster", "up", "--nodes", "3", "--dir", str(work))
        assert again.returncode == 2 and "already" in again.stderr
    finally:
        stopped = twinmq("cluster", "down", "--dir", str(work))
    assert stopped.returncode == 0 and "stopped 3 node(s)" in stopped.stdout
    deadline = time.monotonic() + 10
    pids = [n["pid"] for n in info["nodes"]]
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.integration
def test_kill_stop_cont_restart(tmp_path: Path) -> None:
    """The fault commands on a real cluster: a frozen leader is replaced by the others (check
    quorum deposes it), it comes back as a follower; a killed node restarts on its data and
    catches up; faults that do not apply are usage errors."""
    work = tmp_path / "c"
    assert twinmq("cluster", "up", "--nodes", "3", "--dir", str(work)).returncode == 0
    try:
        info = json.loads((work / "cluster.json").read_text())
        nodes = info["nodes"]
        first = cluster.settled(nodes)
        assert first
        assert twinmq("cluster", "stop", "--dir", str(work), str(first)).returncode == 0
        others = [n for n in nodes if n["id"] != first]
        new = _wait(lambda: cluster.settled(others), "a new leader while one node is stopped")
        assert new != first
        assert twinmq("cluster", "cont", "--dir", str(work), str(first)).returncode == 0
        assert _wait(lambda: cluster.settled(nodes), "all three again") == new
        # restart refuses a node that runs; kill refuses one that does not
        assert twinmq("cluster", "restart", "--dir", str(work), str(new)).returncode == 2
        assert twinmq("cluster", "kill", "--dir", str(work), str(new)).returncode == 0
        assert twinmq("cluster", "kill", "--dir", str(work), str(new)).returncode == 2
        assert twinmq("cluster", "restart", "--dir", str(work), str(new)).returncode == 0
        nodes = json.loads((work / "cluster.json").read_text())["nodes"]
        assert _wait(lambda: cluster.settled(nodes), "the restarted node back in step")
        assert twinmq("cluster", "kill", "--dir", str(work), "9").returncode == 2
    finally:
        twinmq("cluster", "down", "--dir", str(work))


def _wait(pred: Any, what: str, seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {seconds} s")
