"""`python -m real serve` as a real process: ready, SIGKILL, restart on the same data dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from real.meta import decode_command
from real.node.disk import RaftDisk

ROOT = Path(__file__).resolve().parents[2]
READY_SECONDS_MAX = 20.0


def free_port() -> int:
    from real.node.ports import free_port as pick

    return pick()


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def start(data_dir: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "real", "serve", "--admin-port", str(port), "--mqtt-port", "0",
           "--ws-port", "0", "--kafka-port", "0",
           "--data-dir", str(data_dir), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_ready(proc: subprocess.Popen[str], port: int) -> dict[str, Any]:
    """Poll /health until this node leads and has applied its own node.register."""
    deadline = time.monotonic() + READY_SECONDS_MAX
    last: Any = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited {proc.returncode}: {proc.stdout.read()}"
        try:
            health = get(port, "/health")
            nodes = get(port, "/meta/nodes")
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
        else:
            last = health
            if health["raft"]["role"] == "leader" and [n["node_id"] for n in nodes] == [1]:
                return health
        time.sleep(0.05)
    raise AssertionError(f"not ready within {READY_SECONDS_MAX}s; last: {last}")


def stop(proc: subprocess.Popen[str], sig: int) -> str:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=10)
    return out


@pytest.mark.integration
@pytest.mark.smoke
def test_serve_survives_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    proc = start(data, port)
    try:
        before = wait_ready(proc, port)
    finally:
        out = stop(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert f"twinmq serving: admin http://127.0.0.1:{port} data-dir {data}" in out
    # (the Kafka listener starts after registration, so it may not have logged before the kill;
    # tests/kafka_clients and tests/node/test_kafka_bridge.py wait for it)
    assert before["node_id"] == 1 and before["meta"]["applied_index"] == before["raft"]["applied"]

    disk = RaftDisk(data / "meta")  # what the kill left on disk: the register entry is durable
    commands = [decode_command(e.data) for e in disk.durable().entries if e.data]
    disk.close()
    assert any(c.op == "node.register" and c.args["node_id"] == 1 for c in commands), commands

    port2 = free_port()
    proc = start(data, port2)
    try:
        after = wait_ready(proc, port2)
        nodes = get(port2, "/meta/nodes")
    finally:
        out = stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, out
    assert "SIGTERM received, shutting down" in out and "twinmq stopped" in out
    assert after["raft"]["term"] > before["raft"]["term"]
    assert after["raft"]["commit"] > before["raft"]["commit"]
    assert after["meta"]["applied_index"] > before["meta"]["applied_index"]
    assert nodes[0]["admin_addr"] == f"127.0.0.1:{port2}"


@pytest.mark.integration
def test_sigint_is_graceful(tmp_path: Path) -> None:
    port = free_port()
    proc = start(tmp_path / "data", port)
    try:
        wait_ready(proc, port)
    finally:
        out = stop(proc, signal.SIGINT)
    assert proc.returncode == 0, out
    assert "SIGINT received, shutting down" in out and "twinmq stopped" in out


def _weed_children(parent: int) -> set[int]:
    """Pids of the `weed` processes whose parent is `parent` (other tests and other checkouts on
    the machine run their own SeaweedFS: only the node's own child counts)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while listed
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm)": state, then ppid
        if ppid == parent and cmdline.split(b"\0", 1)[0].endswith(b"/weed"):
            pids.add(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    """`pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.integration
def test_serve_with_s3_starts_and_stops_seaweedfs(tmp_path: Path) -> None:
    """`twinmq serve --storage s3` with no endpoint runs an embedded SeaweedFS, and stops it."""
    port = free_port()
    proc = start(tmp_path / "data", port, "--storage", "s3")
    try:
        wait_ready(proc, port)
        storage = get(port, "/storage")
        assert storage["default_engine"] == "s3"
        endpoint = storage["s3_endpoint"]
        assert endpoint.startswith("http://127.0.0.1:"), storage
        started = _weed_children(proc.pid)
        assert len(started) == 1, started
        from real.node.s3 import S3ObjectStore
        from real.node.seaweed import DUMMY_KEY

        store = S3ObjectStore("probe", endpoint, access_key=DUMMY_KEY, secret_key=DUMMY_KEY)
        store.put("k", b"v")
        assert store.get("k") == b"v"
    finally:
        out = stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, out
    assert "S3 endpoint http://127.0.0.1:" in out
    assert not [pid for pid in started if _alive(pid)], "the embedded SeaweedFS outlived the node"
