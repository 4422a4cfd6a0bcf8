"""Client connections in the simulator: in-order byte pipes with latency, bandwidth and resets.

A connection is two pipes (client -> server, server -> client) with a sampled one-way latency per
send, an optional per-connection bandwidth (a send occupies the pipe for len/bandwidth), and a
network-wide extra delay during delay spikes. A graceful close travels as a FIN behind the data.
An abrupt close (a client drop, a server crash, a refused connect) resets the connection: bytes
still in flight in either direction are discarded, the side that closed knows at once, the other
side learns one latency later (the world's `reset`).

`SimConn` is what both sides hold: the client (`client.arrive`, `client.closed`) and the server
host (model/host.py: `to_client`, `close_by_server`, `reset_by_server`, `backlog_bytes`,
`drain_us`). The world that dials it owns the table of open connections (`world.reset`,
`world.forget`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import simpy

from model.sim.dist import Dist
from real.server.node import Proto

FIN = None  # a graceful close travelling behind the data in a pipe


@dataclass(frozen=True, slots=True)
class NetSpec:
    latency: Dist = Dist("uniform", 0.5, 2.0)
    """One-way latency of each send (model.sim.dist table, ms)."""
    bandwidth_mb_s: float = 0.0
    """Per connection and direction, 10^6 bytes/s; 0 means unlimited."""
    write_high_water_bytes: int = 1 << 20
    """With a bandwidth: once a connection has more untransmitted bytes than this, the broker is
    told it is congested (`set_congested`), until the backlog falls to half (real shell: 1 MiB)."""



class _Pipe:
    """One direction of a connection: in-order delivery after latency (+ bandwidth, + spike)."""

    __slots__ = ("net", "conn", "deliver", "free_us", "last_us")

    def __init__(self, net: SimNet, conn: SimConn, deliver: Callable[[SimConn, bytes | None],
                                                                      None]) -> None:
        self.net = net
        self.conn = conn
        self.deliver = deliver
        self.free_us = 0  # when the pipe finishes transmitting what it was given
        self.last_us = 0  # the latest scheduled arrival (arrivals never overtake)

    def send(self, item: bytes | None) -> None:
        if self.conn.reset:
            return
        net = self.net
        now = int(net.env.now)
        start = max(now, self.free_us)
        self.free_us = start + net.transfer_us(len(item) if item else 0)
        at = max(self.free_us + net.latency_us(), self.last_us)
        self.last_us = at
        stats = net.stats
        stats["bytes"] += len(item) if item else 0
        if net.spec.bandwidth_mb_s > 0:
            stats["backlog_max"] = max(stats["backlog_max"], self.backlog_bytes())
        event = net.env.timeout(at - now)
        event.callbacks.append(lambda _e: self._arrive(item, now))

    def _arrive(self, item: bytes | None, sent_us: int) -> None:
        if not self.conn.reset:
            self.conn.sent_us = sent_us
            self.deliver(self.conn, item)

    def backlog_bytes(self) -> int:
        """Bytes handed to the pipe and not yet transmitted (0 without a bandwidth limit)."""
        bw = self.net.spec.bandwidth_mb_s
        return 0 if bw <= 0 else int(max(0, self.free_us - int(self.net.env.now)) * bw)


class SimConn:
    """A client's connection to a server. `server_gen` is the server incarnation that accepted
    it (0 until its open arrives)."""

    __slots__ = ("id", "client", "world", "proto", "reset", "server_gen", "up", "down",
                 "congested", "sent_us")

    def __init__(self, net: SimNet, conn_id: int, client: Any, world: Any,
                 to_server: Callable[[SimConn, bytes | None], None],
                 proto: Proto = Proto.MQTT) -> None:
        self.id = conn_id
        self.client = client
        self.world = world
        self.proto = proto
        self.reset = False
        self.server_gen = 0
        self.congested = False  # the server was told its write buffer is over high water
        self.sent_us = 0  # when the item arriving now was sent (for checkers of server order)
        self.up = _Pipe(net, self, to_server)
        self.down = _Pipe(net, self, client.arrive)

    @property
    def peer(self) -> str:
        return str(self.client.name)

    # ---- the server side (model/host.py) ----

    def to_client(self, data: bytes) -> None:
        self.down.send(data)

    def close_by_server(self) -> None:
        """A graceful close after the data (a later crash need not reset it)."""
        self.world.forget(self)
        self.down.send(FIN)

    def reset_by_server(self) -> None:
        self.world.reset(self, by_client=False)

    def backlog_bytes(self) -> int:
        return self.down.backlog_bytes()

    def drain_us(self, target_bytes: int) -> int:
        """How long until the server->client backlog is down to `target_bytes`."""
        bw = self.down.net.spec.bandwidth_mb_s
        excess = self.backlog_bytes() - target_bytes
        return 0 if bw <= 0 or excess <= 0 else math.ceil(excess / bw)


class SimNet:
    """Latency sampling, bandwidth and the delay-spike overlay shared by every connection."""

    def __init__(self, env: simpy.Environment, spec: NetSpec, rng: Any) -> None:
        self.env = env
        self.spec = spec
        self.rng = rng
        self.extra_us = 0
        self.stats = {"bytes": 0, "connections": 0, "resets": 0, "backlog_max": 0}

    def latency_us(self) -> int:
        return max(1, self.spec.latency.sample_us(self.rng) + self.extra_us)

    def transfer_us(self, nbytes: int) -> int:
        bw = self.spec.bandwidth_mb_s
        return 0 if bw <= 0 or nbytes == 0 else math.ceil(nbytes / bw)

    def later(self, delay_us: int, action: Callable[[], object]) -> None:
        def fire(_event: simpy.Event) -> None:
            action()

        self.env.timeout(delay_us).callbacks.append(fire)




class Switchboard:
    """A world's table of open client connections to its server hosts (model/host.py): dialing
    (the open travels first, then the bytes behind it), refusal when the host is down or not
    accepting, graceful closes, and resets (the closing side knows now, the other one latency
    later)."""

    def __init__(self, net: SimNet, host: Any) -> None:
        self.net = net
        self.host = host
        self._conns: dict[int, SimConn] = {}  # every connection not reset, by id
        self._hosts: dict[int, Any] = {}
        self._next = 1

    def dial(self, client: Any, proto: Proto = Proto.MQTT, host: Any = None) -> SimConn:
        conn = SimConn(self.net, self._next, client, self, self._to_server, proto)
        self._next += 1
        self._conns[conn.id] = conn
        self._hosts[conn.id] = self.host if host is None else host
        self.net.stats["connections"] += 1
        conn.up.send(b"")  # the open travels first, then the bytes behind it
        return conn

    def forget(self, conn: SimConn) -> None:
        """The server closed `conn` gracefully: a later crash need not reset it."""
        self._conns.pop(conn.id, None)

    def open_conns(self) -> list[SimConn]:
        return list(self._conns.values())

    def _to_server(self, conn: SimConn, item: bytes | None) -> None:
        host = self._hosts[conn.id]
        if conn.server_gen == 0 and item == b"":
            if not host.accepting(conn.proto):
                self.reset(conn, by_client=False)  # connection refused
                return
            host.accept(conn)
            return
        if item is FIN:
            self._conns.pop(conn.id, None)
        host.arrive(conn, item)

    def reset(self, conn: SimConn, by_client: bool) -> None:
        """Abrupt close: in-flight bytes vanish; the closing side knows now, the other later."""
        if conn.reset:
            return
        conn.reset = True
        self._conns.pop(conn.id, None)
        self.net.stats["resets"] += 1
        delay = self.net.latency_us()
        host = self._hosts.pop(conn.id)
        if by_client:
            conn.client.closed(conn)
            self.net.later(delay, lambda: host.peer_reset(conn))
        else:
            self.net.later(delay, lambda: conn.client.closed(conn))
