"""`ProtocolCore`: the one interface both sans-I/O brokers satisfy (MQTT `Broker`, `KafkaBroker`).

A host (the asyncio shell in real/node/, the SimPy host in model/) drives a protocol core with
connection events and time, and pulls what the core wants written:

    core.open(conn_id, peer=..., listener=..., anonymous_ok=...)  a transport connected
    core.receive(conn_id, data)            bytes arrived on it
    core.closed(conn_id)                   the transport is gone (by the peer, or after a drain
                                           asked to close it)
    core.set_congested(conn_id, flag)      its write buffer went over / back under high water
    core.durable_progress()                a storage engine's durable end may have moved
    core.tick()                            time passed: the core reads its injected clock
    core.next_deadline_ms()                when `tick` next has timed work, or None
    for conn_id, data, close in core.drain(): write data, then close if asked
    core.invariants()                      cheap structural checks (asserts); hosts and test
                                           harnesses call it after every input

Time: every core takes an injected clock, `Callable[[], int]`, in integer milliseconds, and never
reads a system clock. `next_deadline_ms` is absolute, in that clock (it may lie in the past: tick
now). A host may tick more often than asked; ticking early does no harm.

The interface is structural (`typing.Protocol`): the brokers do not inherit from it.
tests/server/test_protocol.py checks that both match it, signature by signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Clock = Callable[[], int]
"""An injected clock: integer milliseconds (monotonic or wall, as the core documents)."""


class ProtocolCore(Protocol):
    """A sans-I/O protocol server: connections in, bytes out, time injected."""

    def open(self, conn_id: int, *, peer: str = "", listener: str = "tcp",
             anonymous_ok: bool = False) -> None:
        """A transport connected. `listener` names the listener kind ("tcp", "tls", "ws",
        "wss"); `anonymous_ok`: whether a login without credentials may succeed on it."""
        ...

    def receive(self, conn_id: int, data: bytes) -> None:
        """Bytes arrived on `conn_id` (any split: the core frames them)."""
        ...

    def closed(self, conn_id: int) -> None:
        """The transport of `conn_id` is gone; unknown ids are ignored."""
        ...

    def set_congested(self, conn_id: int, congested: bool) -> None:
        """The transport's write buffer is over (True) or back under (False) its high water."""
        ...

    def tick(self) -> None:
        """Time passed: run the timed work that is due at the injected clock's now."""
        ...

    def drain(self) -> list[tuple[int, bytes, bool]]:
        """(conn id, bytes to write, close after writing), in order, since the last drain."""
        ...

    def durable_progress(self) -> None:
        """A storage engine's durable end may have moved: release what waited for it."""
        ...

    def next_deadline_ms(self) -> int | None:
        """When `tick` next has timed work (absolute ms in the core's clock); None: nothing."""
        ...

    def invariants(self) -> None:
        """Cheap structural checks with asserts (never under `python -O`)."""
        ...
