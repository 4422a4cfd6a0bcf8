"""Simulated network: one `Link` per ordered pair of nodes, each with its own rng.

A message sent on a link is (in this order) refused if the link is blocked (partition), lost with
probability `loss` (+ a nemesis loss overlay), refused if the link already has `inflight_max`
messages in flight (counted, never silent), delayed by the latency distribution (+ nemesis extra
delay, + a random extra on a `reorder` fraction), and duplicated with probability `duplicate`.
A partition that starts while a message is in flight drops it on arrival. Delivery is a SimPy
timeout callback (no process per message: speed matters).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import simpy
from simpy.events import NORMAL, Event

from model.sim.dist import Dist


@dataclass(frozen=True, slots=True)
class NetConfig:
    latency: Dist = Dist("uniform", 1.0, 5.0)
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_ms: float = 10.0
    inflight_max: int = 4096
    wire: bool = False
    """Carry each Raft message as the real inter-node frame (real/cluster/wire.py), encoded at
    send and decoded at arrival, instead of as the object: the same bytes as real nodes send,
    at some cost in speed."""
    refuse_down_ms: int = 50
    """A message to a node that is down tells its sender, this long later, that the node's
    peer port refused the connection (`NodeCore.peer_gone`), as on one machine, where a killed
    process's port answers a reconnect (50 ms after the connection dropped: real/node/peers.py
    RECONNECT_MIN_S) with a reset. 0: down nodes answer nothing, like a machine that lost
    power in a real network, and only the session timeout finds them dead."""

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            assert 0.0 <= value <= 1.0, f"network.{name} must be in [0, 1], got {value}"
        assert self.inflight_max >= 1, "network.inflight_max must be >= 1"
        assert self.refuse_down_ms >= 0, "network.refuse_down_ms must be >= 0"


@dataclass(slots=True)
class NetStats:
    sent: int = 0
    delivered: int = 0
    dropped_partition: int = 0
    dropped_loss: int = 0
    rejected_full: int = 0
    duplicated: int = 0
    dropped_dead: int = 0
    refused: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in sorted(self.__slots__)}


@dataclass(slots=True)
class Link:
    src: int
    dst: int
    rng: random.Random
    inflight: int = 0
    blocked: int = 0
    """How many active partitions block this link (they may overlap)."""
    extra_loss: float = 0.0
    extra_delay_us: int = 0


Deliver = Callable[[int, object], None]


class _Arrival(Event):
    """A message arriving at `now + delay` (a Timeout without the closure: the hot path)."""

    def __init__(self, env: simpy.Environment, delay: int, callback: Callable[[Any], None],
                 link: Link, msg: object) -> None:
        self.env = env
        self.callbacks = [callback]
        self._value = None
        self._ok = True
        self.link = link
        self.msg = msg
        env.schedule(self, NORMAL, delay)


class Network:
    """Links between every ordered pair. `deliver(dst, msg)` is called at arrival time."""

    def __init__(self, env: simpy.Environment, node_ids: list[int], config: NetConfig,
                 rngs: Callable[[str], random.Random], deliver: Deliver) -> None:
        assert node_ids == sorted(node_ids) and len(set(node_ids)) == len(node_ids), node_ids
        self.env = env
        self.config = config
        self.node_ids = list(node_ids)
        self._deliver = deliver
        self.links: dict[tuple[int, int], Link] = {}
        for src in node_ids:
            for dst in node_ids:
                if src != dst:
                    self.links[(src, dst)] = Link(src, dst, rngs(f"link-{src}-{dst}"))
        self.stats = NetStats()

    def send(self, src: int, dst: int, msg: object) -> bool:
        """Put `msg` on the link src->dst; returns False if it was refused or lost."""
        link = self.links[(src, dst)]
        stats = self.stats
        stats.sent += 1
        if link.blocked:
            stats.dropped_partition += 1
            return False
        cfg = self.config
        loss = cfg.loss + link.extra_loss
        if loss > 0.0 and link.rng.random() < loss:
            stats.dropped_loss += 1
            return False
        copies = 1
        if cfg.duplicate > 0.0 and link.rng.random() < cfg.duplicate:
            copies = 2
            stats.duplicated += 1
        for _ in range(copies):
            if link.inflight >= cfg.inflight_max:
                stats.rejected_full += 1
                return False
            link.inflight += 1
            self._schedule(link, msg, self._delay_us(link))
        return True

    def _delay_us(self, link: Link) -> int:
        cfg = self.config
        delay = cfg.latency.sample_us(link.rng) + link.extra_delay_us
        if cfg.reorder > 0.0 and link.rng.random() < cfg.reorder:
            delay += round(link.rng.uniform(0.0, cfg.reorder_ms) * 1000)
        return max(1, delay)

    def _schedule(self, link: Link, msg: object, delay_us: int) -> None:
        _Arrival(self.env, delay_us, self._arrive, link, msg)

    def _arrive(self, event: _Arrival) -> None:
        link, msg = event.link, event.msg
        link.inflight -= 1
        assert link.inflight >= 0, (link.src, link.dst)
        if link.blocked:
            self.stats.dropped_partition += 1
            return
        self.stats.delivered += 1
        self._deliver(link.dst, msg)

    # -- faults ---------------------------------------------------------------------------------

    def block(self, src: int, dst: int) -> None:
        """Asymmetric partition: messages src->dst are dropped (dst->src still flow)."""
        assert src != dst, src
        self.links[(src, dst)].blocked += 1

    def unblock(self, src: int, dst: int) -> None:
        """Undo one `block(src, dst)` (a no-op after `heal()`)."""
        link = self.links[(src, dst)]
        link.blocked = max(0, link.blocked - 1)

    def partition(self, side_a: list[int], side_b: list[int]) -> None:
        """Symmetric partition between two groups."""
        assert not set(side_a) & set(side_b), (side_a, side_b)
        for a in side_a:
            for b in side_b:
                self.block(a, b)
                self.block(b, a)

    def unpartition(self, side_a: list[int], side_b: list[int]) -> None:
        for a in side_a:
            for b in side_b:
                self.unblock(a, b)
                self.unblock(b, a)

    def set_loss(self, loss: float) -> None:
        assert 0.0 <= loss <= 1.0, loss
        for key in sorted(self.links):
            self.links[key].extra_loss = loss

    def set_extra_delay(self, src: int, dst: int, delay_us: int) -> None:
        assert delay_us >= 0, delay_us
        self.links[(src, dst)].extra_delay_us = delay_us

    def heal(self) -> None:
        """Unblock every link and clear every loss/delay overlay."""
        for key in sorted(self.links):
            link = self.links[key]
            link.blocked = 0
            link.extra_loss = 0.0
            link.extra_delay_us = 0

    def blocked_pairs(self) -> list[tuple[int, int]]:
        return [key for key in sorted(self.links) if self.links[key].blocked]
