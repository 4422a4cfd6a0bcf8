"""The asyncio shell of the Kafka broker: TCP listener in, `KafkaBroker` in the middle, bytes out.

`KafkaService` implements the transport `Handler` (real/node/transport.py) like the MQTT shell:
every callback feeds the pure `KafkaBroker` and writes what it produced. One timer follows the
broker's next deadline (long-poll waits, group session and rebalance timeouts); another follows the
storage engines' group commit so held produce replies go out as soon as `durable_end` passes them.

Meta: the broker reads the applied meta state machine and proposes commands through the node's
single-member Raft (`MetaPortAdapter`); the proposal callbacks run inside the Raft driver task, so
each one is followed by a flush of the broker's output.

Clock: the event loop's monotonic clock in integer milliseconds (group timeouts and long polls are
durations; record timestamps come from the clients).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

from real.kafka.broker import KafkaBroker, KafkaConfig
from real.meta import MetaResult, MetaStateMachine

TICK_S = 0.1


class MetaPortAdapter:
    """`MetaPort` over the node's `MetaService` (real/node/server.py)."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.after: Callable[[], None] = lambda: None
        self.on_error: Callable[[str], None] = lambda _tb: None

    def machine(self) -> MetaStateMachine:
        return self.service.replica.sm

    def propose(self, data: bytes, done: Callable[[MetaResult | Exception], None]) -> None:
        def finished(result: MetaResult | Exception) -> None:
            try:
                done(result)
            except Exception:  # noqa: BLE001 - a core bug must cost one request, not the node
                self.on_error(traceback.format_exc())
            finally:
                self.after()

        try:
            self.service.replica.propose(data, finished)
        except Exception as exc:  # noqa: BLE001 - e.g. ProposalDropped: reported to the caller
            finished(exc)
            return
        self.service.wake.set()


def kafka_config(cfg: Any, advertised_port: int) -> KafkaConfig:
    d = KafkaConfig()

    def get(name: str, default: Any) -> Any:
        return getattr(cfg, name, default)

    return KafkaConfig(
        node_id=cfg.node_id,
        host=get("kafka_advertised_host", "") or ("127.0.0.1" if cfg.bind in ("0.0.0.0", "::")
                                                  else cfg.bind),
        port=get("kafka_advertised_port", 0) or advertised_port,
        cluster_id=get("kafka_cluster_id", d.cluster_id),
        auto_create_topics=get("kafka_auto_create_topics", d.auto_create_topics),
        default_partitions=get("kafka_default_partitions", d.default_partitions),
        default_engine=get("storage_engine", d.default_engine),
        max_request_bytes=get("kafka_max_request_bytes", d.max_request_bytes),
        max_message_bytes=get("kafka_max_message_bytes", d.max_message_bytes),
        group_initial_rebalance_delay_ms=get("kafka_group_initial_rebalance_delay_ms",
                                             d.group_initial_rebalance_delay_ms),
        group_min_session_timeout_ms=get("kafka_group_min_session_timeout_ms",
                                         d.group_min_session_timeout_ms),
        group_max_session_timeout_ms=get("kafka_group_max_session_timeout_ms",
                                         d.group_max_session_timeout_ms),
        retention_check_ms=get("kafka_retention_check_ms", d.retention_check_ms),
        sasl=get("kafka_sasl", d.sasl),
    )


class KafkaService:
    """One KafkaBroker behind the Kafka listener(s)."""

    def __init__(self, broker: KafkaBroker, shards: Any, log: Callable[[str], None]) -> None:
        self.broker = broker
        self.shards = shards
        self.log = log
        self.store: Any = None  # the node's StoreDriver: group commit, durable progress
        self.conns: dict[int, Any] = {}
        self.listeners: list[Any] = []
        self.internal_errors = 0
        self._deadline_handle: asyncio.TimerHandle | None = None
        self._deadline_at: int | None = None
        self.bridge: Any = None
        self.after_flush: Callable[[], None] | None = None
        self._in_after = False

    async def ensure_topics(self, names: list[str]) -> None:
        """Create the missing topics among `names` (default partition count); waits for meta."""
        from real.kafka import errors as E

        loop = asyncio.get_running_loop()
        for name in names:
            if self.broker.meta.machine().topic(name) is not None:
                continue
            fut: asyncio.Future[tuple[int, str | None]] = loop.create_future()
            self.broker._create_topic(
                name, self.broker.config.default_partitions, None, {},
                lambda code, msg, fut=fut: fut.done() or fut.set_result((code, msg)))
            code, msg = await fut
            if code not in (E.NONE, E.TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"bridge: cannot create Kafka topic {name!r}: {msg}")

    # ---- transport Handler ---------------------------------------------------------------------

    def connection_made(self, conn: Any) -> None:
        self.conns[conn.id] = conn
        self.broker.open(conn.id, peer=conn.peer, listener=conn.listener)

    def data_received(self, conn: Any, data: bytes) -> None:
        try:
            self.broker.receive(conn.id, data)
        except Exception:  # noqa: BLE001 - a core bug must cost one connection, not the node
            self.internal_errors += 1
            self.log(f"kafka: internal error on connection {conn.id} ({conn.peer}), closing it:\n"
                     f"{traceback.format_exc()}")
            self.broker.closed(conn.id)
            conn.abort()
        self.flush()

    def connection_lost(self, conn: Any, exc: Exception | None) -> None:
        self.conns.pop(conn.id, None)
        self.broker.closed(conn.id)
        self.flush()

    def writable(self, conn: Any) -> None:
        pass

    # ---- output and timers ---------------------------------------------------------------------

    def flush(self) -> None:
        broker = self.broker
        while True:
            batch = broker.drain()
            if not batch:
                break
            for conn_id, data, close in batch:
                conn = self.conns.get(conn_id)
                if conn is None or conn.closed:
                    continue
                if data:
                    conn.write(data)
                if close:
                    conn.close()
        self._schedule_deadline()
        if self.store is not None:
            self.store.kick()
        if self.after_flush is not None and not self._in_after:
            self._in_after = True
            try:
                self.after_flush()
            finally:
                self._in_after = False

    def _now(self) -> int:
        return int(asyncio.get_running_loop().time() * 1000)

    def _schedule_deadline(self) -> None:
        due = self.broker.next_deadline_ms()
        if due is None or (self._deadline_at is not None and self._deadline_at <= due):
            return
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
        self._deadline_at = due
        delay = max(0, due - self._now()) / 1000
        self._deadline_handle = asyncio.get_running_loop().call_later(delay, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline_handle = None
        self._deadline_at = None
        self.broker.tick()
        self.flush()

    def on_store_progress(self) -> None:
        """A StoreDriver listener: some shard's durable_end may have moved."""
        self.broker.durable_progress()
        self.flush()

    async def run(self, stop: asyncio.Event) -> None:
        """A coarse tick (as a backstop to the deadline timer) until `stop` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_S)
            self.broker.tick()
            self.broker.durable_progress()
            self.flush()

    async def close(self) -> None:
        from real.node.transport import stop_serving

        await stop_serving(self.listeners, self.conns)
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
        self._deadline_handle = None
        for name in self.shards.list():
            if name.startswith("kafka:"):
                with contextlib.suppress(Exception):
                    self.shards.sync(name)


def open_kafka(cfg: Any, meta_service: Any, shards: Any, devices: Any,
               log: Callable[[str], None], sasl_factory: Callable[[], Any] | None = None
               ) -> KafkaService:
    port = MetaPortAdapter(meta_service)
    broker = KafkaBroker(kafka_config(cfg, cfg.kafka_port), lambda: 0, shards, port,
                         member_prefix=os.urandom(4).hex(), sasl_factory=sasl_factory, log=log,
                         wall_clock=lambda: int(time.time() * 1000))
    service = KafkaService(broker, shards, log)
    port.after = service.flush

    def meta_callback_failed(tb: str) -> None:
        service.internal_errors += 1
        log(f"kafka: internal error in a meta callback:\n{tb}")

    port.on_error = meta_callback_failed
    return service


async def start_kafka_listeners(cfg: Any, service: KafkaService,
                                log: Callable[[str], None]) -> None:
    from real.node.transport import start_listener

    loop = asyncio.get_running_loop()
    service.broker.clock = lambda: int(loop.time() * 1000)
    listener = await start_listener("tcp", cfg.bind, cfg.kafka_port, service,
                                    write_high_water=8 << 20)
    service.listeners.append(listener)
    if not getattr(cfg, "kafka_advertised_port", 0):
        cfg_port = listener.port
        broker_cfg = service.broker.config
        if broker_cfg.port != cfg_port:
            from dataclasses import replace
            service.broker.config = replace(broker_cfg, port=cfg_port)
    log(f"kafka listening tcp {cfg.bind}:{listener.port} (advertised "
        f"{service.broker.config.host}:{service.broker.config.port})")
