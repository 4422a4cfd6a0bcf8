"""`twinmq cluster up|status|down` against real processes."""

from __future__ import annotations

import io
import json
import os
import socket
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


def test_a_zombie_is_not_alive() -> None:
    """A child that exited but is not reaped yet still answers kill(pid, 0); it runs no more."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)
    try:
        os.kill(proc.pid, 0)  # the premise: the signal test alone would call it alive
        assert not cluster._alive(proc.pid)
    finally:
        proc.wait()
    assert not cluster._alive(proc.pid)


def test_down_kills_and_reaps_what_ignores_its_signal(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that ignores SIGTERM is SIGKILLed after the stop timeout, and `down` returns only
    once it is gone (it was left a zombie of the caller before, and looked alive)."""
    monkeypatch.setattr(cluster, "STOP_TIMEOUT_S", 0.3)
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
           "print('ready', flush=True); time.sleep(60)"
    store = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert store.stdout is not None and store.stdout.readline() == "ready\n"
        (tmp_path / "cluster.json").write_text(json.dumps({"nodes": [], "store": {
            "pid": store.pid}}))
        began = time.monotonic()
        assert cluster.down(tmp_path, out=io.StringIO()) == 0
        assert time.monotonic() - began >= 0.3, "it had its stop timeout first"
        assert not cluster._alive(store.pid)
        with pytest.raises(ChildProcessError):  # down collected it: no zombie left behind
            os.waitpid(store.pid, os.WNOHANG)
    finally:
        if store.poll() is None:
            store.kill()
            store.wait()


@pytest.mark.integration
@pytest.mark.parametrize("which", [0, 1, 2, 3], ids=["admin", "mqtt", "kafka", "peer"])
def test_up_starts_again_when_a_node_finds_its_port_taken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], which: int) -> None:
    """Ports are picked free and bound later by the node; another process may take one in
    between (a test beside this one did). `up` sees the node's bind error (worded differently
    by the client listeners and the peer listener) and starts the cluster again on fresh
    ports."""
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real_free_ports = cluster._free_ports
    calls: list[int] = []

    def first_one_taken(host: str, count: int) -> list[int]:
        ports = real_free_ports(host, count)
        calls.append(count)
        if len(calls) == 1:
            ports[which] = taken  # node 1's (admin, mqtt, kafka, peer) ports
        return ports

    monkeypatch.setattr(cluster, "_free_ports", first_one_taken)
    work = tmp_path / "c"
    try:
        assert cluster.up(2, work, [], out=io.StringIO()) == 0  # two: a peer listener
        assert len(calls) == 2
        assert "address already in use" in (work / "n1.log").read_text().lower()
        assert "found a port taken" in capsys.readouterr().err
        info = json.loads((work / "cluster.json").read_text())
        assert taken not in (info["nodes"][0][k] for k in ("admin", "mqtt", "kafka", "raft"))
    finally:
        squatter.close()
        cluster.down(work, out=io.StringIO())


@pytest.mark.integration
def test_up_shows_the_end_of_a_dead_nodes_log(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A node that exits for its own reason (here an ACL file that is not there) is not started
    again, and `up` prints the end of its log, so that a failure in CI explains itself."""
    work = tmp_path / "c"
    try:
        assert cluster.up(1, work, ["--acl-file", str(tmp_path / "no-acl")], out=io.StringIO()) == 1
    finally:
        cluster.down(work, out=io.StringIO())
    err = capsys.readouterr().err
    assert "node 1 exited; the end of" in err
    assert "--acl-file" in err.split("the end of", 1)[1]
    assert "found a port taken" not in err


@pytest.mark.parametrize("line", [
    "twinmq: error: [Errno 98] error while attempting to bind on address ('127.0.0.1', 1): "
    "address already in use",
    "twinmq: error: [Errno 98] Address already in use",  # a port a connection holds (CI)
])
def test_both_wordings_of_a_taken_port_are_recognised(tmp_path: Path, line: str) -> None:
    log = tmp_path / "n1.log"
    log.write_text("meta: node 1 registered (created) at index 5\n" + line + "\n")
    assert cluster._port_taken(log)
    log.write_text("twinmq: error: command line: --acl-file 'x': cannot read\n")
    assert not cluster._port_taken(log)


@pytest.mark.integration
def test_ctl_cluster_asks_every_node(tmp_path: Path) -> None:
    """`twinmq ctl --cluster DIR`: one answer per node; `disconnect` finds the node the client is
    on; a node that does not answer is named, with the others' answers still printed."""
    from real.mqtt import MQTT_3_1_1, Connect, encode

    work = tmp_path / "c"
    assert cluster.up(2, work, [], out=io.StringIO()) == 0
    try:
        done = twinmq("ctl", "--cluster", str(work), "--json", "node")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert sorted(answer["nodes"]) == ["1", "2"] and answer["unreachable"] == {}
        done = twinmq("ctl", "--cluster", str(work), "metrics")
        assert done.returncode == 0, done.stderr
        assert "# node 1 " in done.stdout and "# node 2 " in done.stdout
        assert 'twinmq_node_info{cluster="twinmq",node="2"} 1.0' in done.stdout
        done = twinmq("ctl", "--cluster", str(work), "disconnect", "nobody")
        assert done.returncode == 1 and "not connected on any of the 2 node(s)" in done.stderr
        node2 = json.loads((work / "cluster.json").read_text())["nodes"][1]
        with socket.create_connection(("127.0.0.1", node2["mqtt"]), timeout=10) as sock:
            sock.sendall(encode(Connect("sensor-7"), MQTT_3_1_1))
            assert sock.recv(4)[:1] == b"\x20"  # CONNACK
            done = twinmq("ctl", "--cluster", str(work), "--json", "disconnect", "sensor-7")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout) == {"disconnected_on": ["2"]}
            assert sock.recv(16) == b""  # the node closed it
        assert cluster.main(["kill", "--dir", str(work), "2"]) == 0
        done = twinmq("ctl", "--cluster", str(work), "--json", "--timeout", "2", "clients")
        assert done.returncode == 1 and "1 of 2 node(s) did not answer: 2" in done.stderr
        answer = json.loads(done.stdout)
        assert list(answer["nodes"]) == ["1"] and list(answer["unreachable"]) == ["2"]
    finally:
        cluster.down(work, out=io.StringIO())
