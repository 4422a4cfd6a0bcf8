"""Free TCP ports for servers started on this machine (test clusters, brokers under test, the
embedded SeaweedFS), picked outside the kernel's ephemeral range.

A port picked with bind(port 0) comes from the ephemeral range (Linux: 32768-60999), the same
pool the kernel draws from for every outgoing connection's local port. Between picking a port
and the server binding it (or binding it again after a restart), any connection on the machine
may take it: a test cluster's node then failed with "Address already in use" (CI, and the
fresh-clone suite here, twice in one day). Ports below the ephemeral range are never handed out
that way, so `free_ports` picks random ones there, checks each by binding it, and releases them
together. Only another process picking the same random port at the same moment can collide
(`twinmq cluster up` starts again on fresh ports if one does). If the ephemeral range leaves too
little room below it, bind(port 0) is used as before.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 10_000
"""The lowest port picked (well-known and registered services below it stay out of the way)."""
ROOM_MIN = 2_000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
TRIES_MAX = 500


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux default if it cannot be read)."""
    try:
        low, high = (int(x) for x in EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return 32_768, 60_999
    return low, high


def free_ports(host: str = "127.0.0.1", count: int = 1) -> list[int]:
    """`count` distinct ports free on `host` now, outside the ephemeral range when possible."""
    low, _high = ephemeral_range()
    rng = random.Random()  # noqa: S311 - seeded from the OS; not secret, only spread apart
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        if low - LOWEST < ROOM_MIN:
            for _ in range(count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind((host, 0))
                ports.append(int(sock.getsockname()[1]))
        else:
            for _ in range(TRIES_MAX):
                if len(ports) == count:
                    break
                port = rng.randrange(LOWEST, low)
                if port in ports:
                    continue
                sock = socket.socket()
                try:
                    sock.bind((host, port))
                except OSError:
                    sock.close()
                    continue
                socks.append(sock)
                ports.append(port)
            if len(ports) < count:
                raise OSError(f"no {count} free ports in {LOWEST}-{low - 1} on {host} after "
                              f"{TRIES_MAX} tries")
    finally:
        for sock in socks:
            sock.close()
    assert len(set(ports)) == count, ports
    return ports


def free_port(host: str = "127.0.0.1") -> int:
    (port,) = free_ports(host, 1)
    return port
