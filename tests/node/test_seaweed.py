"""`SeaweedServer` (integration): starts, serves S3, stops, leaves no process; fails loudly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from real.node.s3 import S3ObjectStore
from real.node.seaweed import SeaweedServer, SeaweedStartError, find_weed

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "Z"


def test_starts_serves_stops_and_leaves_no_process(tmp_path: Path) -> None:
    with SeaweedServer(data_dir=tmp_path / "weed") as server:
        assert server.process is not None
        pid = server.process.pid
        assert alive(pid)
        assert server.start_seconds < 30
        store = S3ObjectStore("itest", server.endpoint_url, access_key="k", secret_key="k")
        store.put("hello", b"world")
        assert store.get("hello") == b"world"
        assert (tmp_path / "weed" / "weed.log").stat().st_size > 0
    assert server.process is None
    assert not alive(pid)
    assert (tmp_path / "weed").is_dir()  # a given data dir is kept


def test_data_survives_a_restart_on_the_same_dir(tmp_path: Path) -> None:
    with SeaweedServer(data_dir=tmp_path) as server:
        S3ObjectStore("keep", server.endpoint_url, access_key="k", secret_key="k").put("k", b"v")
    with SeaweedServer(data_dir=tmp_path) as server:
        store = S3ObjectStore("keep", server.endpoint_url, access_key="k", secret_key="k")
        assert store.get("k") == b"v"


def test_temp_dir_is_removed() -> None:
    with SeaweedServer() as server:
        data_dir = server.data_dir
        assert Path(data_dir).is_dir()
    assert not Path(data_dir).exists()


def test_failure_to_start_reports_the_log_tail(tmp_path: Path) -> None:
    fake = tmp_path / "weed"
    fake.write_text("#!/bin/sh\necho 'fatal: cannot bind everything' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = SeaweedServer(data_dir=tmp_path / "d", weed=str(fake), start_timeout_s=10)
    with pytest.raises(SeaweedStartError, match="exited with status 3") as info:
        server.start()
    assert "fatal: cannot bind everything" in str(info.value)
    assert server.process is None


def test_timeout_stops_the_process(tmp_path: Path) -> None:
    fake = tmp_path / "weed"
    fake.write_text("#!/bin/sh\necho 'still booting'\nexec sleep 60\n")
    fake.chmod(0o755)
    server = SeaweedServer(data_dir=tmp_path / "d", weed=str(fake), start_timeout_s=0.5)
    with pytest.raises(SeaweedStartError, match="no S3 answer within 0.5 s") as info:
        server.start()
    assert "still booting" in str(info.value)
    assert server.process is None


def test_finds_the_wheel_binary() -> None:
    path = find_weed()
    assert os.access(path, os.X_OK)
    assert Path(path).name == "weed"
