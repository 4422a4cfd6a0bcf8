"""`AsyncHost`: runs one `NodeCore` (real/server/node.py) on an asyncio event loop.

The host is the node's only contact with sockets, time and threads:

- **Transports.** Every listener (MQTT over TCP/TLS/WS/WSS, Kafka over TCP) hands its connections
  to the same host through a per-protocol `Handler` (real/node/transport.py); each callback is one
  `NodeCore` input followed by `flush()`.
- **Output.** `flush()` pulls `core.ready()`: writes bytes (closing where asked; a connection whose
  write buffer passes its high-water mark is reported congested, and uncongested on `writable`),
  resets aborted connections, hands Raft messages to `send_raft` (none on a single node), and
  starts the sync jobs.
- **Time.** One timer, at `core.next_deadline_ms()` on the loop's monotonic clock; when it fires,
  `core.tick()`. Re-armed after every flush, only when the deadline moved earlier (a later one
  just wakes the core early, which costs one cheap tick).
- **Background fsync.** A `SyncRequest` whose job is `detached` runs on a worker thread (fdatasync
  releases the GIL) while the loop keeps serving; its completion comes back to the loop as
  `core.synced(token, error)`. Other jobs run inline. `close()` waits for running jobs so that no
  fdatasync outlives the devices.

A core input that raises is a bug in the node, not in one connection's input (those are handled
in the core): it propagates out of the loop callback and is logged by asyncio, and the serve task
sees it through `failed`.
"""

from __future__ import annotations

import asyncio
import functools
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from real.node.transport import Conn, Listener, stop_serving
from real.raft.types import Message
from real.server.node import NodeCore, Proto, SyncRequest
from real.server.peermsg import PeerMessage

SYNC_WORKERS_DEFAULT = 4
MQTT_WRITE_HIGH_WATER = 1 << 20
KAFKA_WRITE_HIGH_WATER = 8 << 20


class _ProtoHandler:
    """The transport `Handler` for one protocol's listeners."""

    def __init__(self, host: AsyncHost, proto: Proto, high_water: int) -> None:
        self.host = host
        self.proto = proto
        self.high_water = high_water

    def connection_made(self, conn: Conn) -> None:
        self.host.connection_made(conn, self.proto, self.high_water)

    def data_received(self, conn: Conn, data: bytes) -> None:
        self.host.data_received(conn, data)

    def connection_lost(self, conn: Conn, exc: Exception | None) -> None:
        self.host.connection_lost(conn)

    def writable(self, conn: Conn) -> None:
        self.host.writable(conn)


class AsyncHost:
    def __init__(self, core: NodeCore, clock: Callable[[], int], log: Callable[[str], None],
                 *, sync_workers: int = SYNC_WORKERS_DEFAULT,
                 send_raft: Callable[[Message | PeerMessage], None] | None = None,
                 stopped: asyncio.Event | None = None) -> None:
        self.core = core
        self.clock = clock
        self.log = log
        self.send_raft = send_raft
        self.set_peers: Callable[[tuple[tuple[int, str], ...]], None] | None = None
        """The peer transport's `set_peers` (none on a single node): the meta membership."""
        self.handlers = {Proto.MQTT: _ProtoHandler(self, Proto.MQTT, MQTT_WRITE_HIGH_WATER),
                         Proto.KAFKA: _ProtoHandler(self, Proto.KAFKA, KAFKA_WRITE_HIGH_WATER)}
        self.listeners: dict[Proto, list[Listener]] = {Proto.MQTT: [], Proto.KAFKA: []}
        self.conns: dict[int, Conn] = {}
        self._high_water: dict[int, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._workers = sync_workers
        self._running: set[asyncio.Future[None]] = set()
        self._closed = False
        self._flushing = False
        self.changed = asyncio.Event()
        """Set after every flush (what waits on the core's state re-checks it then)."""
        self.stopped = stopped or asyncio.Event()
        """Set when the node must stop (a signal, or `failure`)."""
        self.failure: BaseException | None = None

    # ---- transport callbacks -------------------------------------------------------------------

    def connection_made(self, conn: Conn, proto: Proto, high_water: int) -> None:
        self.conns[conn.id] = conn
        self._high_water[conn.id] = high_water
        self._input(functools.partial(self.core.open, conn.id, proto, peer=conn.peer,
                                      listener=conn.listener, loopback=conn.loopback))

    def data_received(self, conn: Conn, data: bytes) -> None:
        self._input(functools.partial(self.core.receive, conn.id, data))

    def connection_lost(self, conn: Conn) -> None:
        self.conns.pop(conn.id, None)
        self._high_water.pop(conn.id, None)
        self._input(functools.partial(self.core.closed, conn.id))

    def writable(self, conn: Conn) -> None:
        self._input(functools.partial(self.core.set_congested, conn.id, False))

    def raft_received(self, msg: Message | PeerMessage) -> None:
        """A Raft message from a peer (real/node/peers.py)."""
        self._input(functools.partial(self.core.step, msg))

    def peer_gone(self, node_id: int) -> None:
        """A connection to peer `node_id` was refused (real/node/peers.py)."""
        self._input(functools.partial(self.core.peer_gone, node_id))

    def run(self, step: Callable[[], object]) -> None:
        """Run `step` against the core as one input (settled and flushed after it)."""
        self._input(step)

    def raft_received_many(self, msgs: list[Message | PeerMessage]) -> None:
        """Peer messages that arrived together: stepped in one batch, settled once."""
        core = self.core

        def step() -> None:
            with core.batch():
                for msg in msgs:
                    core.step(msg)

        self._input(step)

    def _input(self, step: Callable[[], object]) -> None:
        """One core input, then flush. An exception here is a node bug (per-connection input
        errors are contained in the core): the node stops (`failure`, `stopped`)."""
        if self.failure is not None:
            return
        try:
            step()
            self.flush()
        except BaseException as exc:
            self.failure = exc
            self.stopped.set()
            self.log(f"node: internal error, stopping:\n{traceback.format_exc()}")
            raise

    # ---- output --------------------------------------------------------------------------------

    def flush(self) -> None:
        """Carry out everything the core produced; re-arm the timer."""
        if self._flushing:
            return
        self._flushing = True
        try:
            while True:
                rd = self.core.ready()
                if not rd:
                    break
                self._write(rd.writes)
                for conn_id in rd.aborts:
                    conn = self.conns.get(conn_id)
                    if conn is not None:
                        conn.abort()
                if rd.members is not None and self.set_peers is not None:
                    self.set_peers(rd.members)
                for msg in rd.messages:
                    self._send(msg)
                for request in rd.syncs:
                    self._start_sync(request)
        finally:
            self._flushing = False
        self._arm()
        self.changed.set()

    def _write(self, writes: list[tuple[int, bytes, bool]]) -> None:
        conns = self.conns
        for conn_id, data, close in writes:
            conn = conns.get(conn_id)
            if conn is None or conn.closed:
                continue
            if data:
                conn.write(data)
            if close:
                # The transport lingers a while (real/node/transport.py, Conn.close) but the
                # core is done with the connection now: its session detaches, its will runs.
                conn.close()
                self.conns.pop(conn_id, None)
                self._high_water.pop(conn_id, None)
                self.core.closed(conn_id)
            elif conn.write_buffer_size() > self._high_water[conn_id]:
                self.core.set_congested(conn_id, True)

    def _send(self, msg: Message | PeerMessage) -> None:
        if self.send_raft is None:
            raise AssertionError(f"a single-member meta group produced a message: {msg}")
        self.send_raft(msg)

    # ---- time ----------------------------------------------------------------------------------

    def _arm(self) -> None:
        if self._closed:
            return
        due = self.core.next_deadline_ms()
        if self._timer is not None:
            if self._timer_at is not None and self._timer_at <= due:
                return
            self._timer.cancel()
        self._timer_at = due
        delay = max(0, due - self.clock()) / 1000
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        if not self._closed:
            self._input(self.core.tick)

    # ---- background fsync ----------------------------------------------------------------------

    def _start_sync(self, request: SyncRequest) -> None:
        job = request.job
        if not job.detached:  # a filesystem without detached syncs: inline, same durability
            error: BaseException | None = None
            try:
                job.sync()
            except Exception as exc:  # noqa: BLE001 - handed to the engine, which poisons
                error = exc
            self.core.synced(request.token, error)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="fsync")
        fut = asyncio.get_running_loop().run_in_executor(self._pool, job.sync)
        self._running.add(fut)
        fut.add_done_callback(functools.partial(self._sync_done, request))

    def _sync_done(self, request: SyncRequest, fut: asyncio.Future[None]) -> None:
        self._running.discard(fut)
        error = None if fut.cancelled() else fut.exception()
        if self._closed:
            self.core.synced(request.token, error)  # the engine learns the outcome
        else:
            self._input(functools.partial(self.core.synced, request.token, error))

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Carry out what building the core produced and arm the timer."""
        self.flush()

    async def close(self) -> None:
        """Stop listening, drop connections, wait for running fdatasyncs."""
        listeners = self.listeners[Proto.MQTT] + self.listeners[Proto.KAFKA]
        await stop_serving(listeners, self.conns)
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        if self._running:
            await asyncio.wait(list(self._running))
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def listener_ports(self) -> dict[str, Any]:
        return {proto.value: [{"kind": lst.kind, "port": lst.port} for lst in lsts]
                for proto, lsts in self.listeners.items()}
