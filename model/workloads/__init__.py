"""What runs against the simulated cluster: the meta client (meta.py), MQTT publishers and
subscribers (mqtt.py), Kafka producers, group consumers and readers (kafka.py), and the bridge
audit (bridge.py). Each client workload keeps the history its clients observed and judges it at
the end of the run (model/checkers/)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.devices.conn import SimConn
    from real.server.node import NodeCore


class Workload:
    """What the world (model/world.py) calls on a client workload; the defaults do nothing."""

    name = "workload"

    def start(self) -> None:
        """Schedule the clients' processes (the run starts)."""

    def on_up(self, nid: int, core: NodeCore) -> None:
        """Node `nid` recovered and serves."""

    def on_crash(self, nid: int) -> None:
        """Node `nid` lost power."""

    def on_applied(self, nid: int) -> None:
        """Node `nid`'s meta replica applied a command (its state machine has it now)."""

    def filter_input(self, conn: SimConn, data: bytes) -> bytes:
        """Bytes from a client to any node, before the node sees them (planted bugs)."""
        return data

    def droppable(self, targets: str) -> list[tuple[Any, str]]:
        """(drop the connection, label) for each connected client among `targets`."""
        return []

    def pause_consumer(self, rng: Any, length_us: int) -> str | None:
        """Freeze one consumer for `length_us`; its label, or None if there is none."""
        return None

    def heal(self) -> None:
        """Faults stopped (producers stop by themselves at heal)."""

    def check(self) -> dict[str, Any]:
        """The checker's report: "outcome", "detail" and counts."""
        raise NotImplementedError
