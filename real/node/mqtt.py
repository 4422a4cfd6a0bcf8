"""The asyncio shell of the MQTT broker: transports in, `Broker` in the middle, bytes out.

`MqttService` implements the transport `Handler` (real/node/transport.py): every callback feeds
the pure `Broker` and then writes what it produced (`drain`). A timer task ticks the broker
(keep-alive, expiry, wills, $SYS) and polls the state log's group commit, so PUBACKs held for
durability go out as soon as the log's `durable_end` passes them.

Clock: wall-clock integer milliseconds (`time.time()`), because message and session expiry times are
written to the state log and must mean the same after a restart. (The storage engines keep their own
monotonic clock for group commit.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Callable
from typing import Any

from real.mqtt.broker import Broker, BrokerConfig
from real.storage import ShardStore

STATE_SHARD = "mqtt-state"
TICK_S = 0.05


def wall_ms() -> int:
    return int(time.time() * 1000)


def broker_config(cfg: Any) -> BrokerConfig:
    """BrokerConfig from a NodeConfig (keys under [mqtt]; missing ones keep their defaults)."""
    def get(name: str, default: Any) -> Any:
        return getattr(cfg, name, default)

    d = BrokerConfig()
    return BrokerConfig(
        node_id=cfg.node_id,
        max_packet_size=get("mqtt_max_packet_size", d.max_packet_size),
        max_connections=get("mqtt_max_connections", d.max_connections),
        receive_maximum=get("mqtt_receive_maximum", d.receive_maximum),
        max_inflight=get("mqtt_max_inflight", d.max_inflight),
        max_queued=get("mqtt_max_queued", d.max_queued),
        queue_policy=get("mqtt_queue_policy", d.queue_policy),
        queue_qos0=get("mqtt_queue_qos0", d.queue_qos0),
        topic_alias_max=get("mqtt_topic_alias_max", d.topic_alias_max),
        keep_alive_max=get("mqtt_keep_alive_max", d.keep_alive_max),
        session_expiry_max=get("mqtt_session_expiry_max", d.session_expiry_max),
        sys_interval_ms=get("mqtt_sys_interval_s", d.sys_interval_ms // 1000) * 1000,
        retain_available=get("mqtt_retain_available", d.retain_available),
        max_topic_levels=get("mqtt_max_topic_levels", d.max_topic_levels),
    )


class MqttService:
    """One broker behind any number of listeners."""

    def __init__(self, broker: Broker, shards: ShardStore | None, log: Callable[[str], None]
                 ) -> None:
        self.broker = broker
        self.shards = shards
        self.log = log
        self.store: Any = None  # the node's StoreDriver: group commit, durable progress
        self.conns: dict[int, Any] = {}
        self.listeners: list[Any] = []
        self.internal_errors = 0
        self.allow_anonymous: str | bool = "auto"
        # Called after every flush (the Kafka service, when a bridge connects the two cores).
        self.after_flush: Callable[[], None] | None = None
        self._in_after = False

    # ---- transport Handler ---------------------------------------------------------------------

    def connection_made(self, conn: Any) -> None:
        self.conns[conn.id] = conn
        self.broker.open(conn.id, peer=conn.peer, listener=conn.listener,
                         anonymous_ok=self.anonymous_ok(conn))
        self._flush()

    def data_received(self, conn: Any, data: bytes) -> None:
        try:
            self.broker.receive(conn.id, data)
        except Exception:  # noqa: BLE001 - a core bug must cost one connection, not the node
            self.internal_errors += 1
            self.log(f"mqtt: internal error on connection {conn.id} ({conn.peer}), closing it:\n"
                     f"{traceback.format_exc()}")
            conn.abort()
        self._flush()

    def connection_lost(self, conn: Any, exc: Exception | None) -> None:
        self.conns.pop(conn.id, None)
        self.broker.closed(conn.id)
        self._flush()

    def writable(self, conn: Any) -> None:
        self.broker.set_congested(conn.id, False)
        self._flush()

    def anonymous_ok(self, conn: Any) -> bool:
        """`allow_anonymous`: true/false as configured; "auto" = only on loopback listeners."""
        setting = self.allow_anonymous
        return conn.loopback if setting == "auto" else bool(setting)

    # ---- output --------------------------------------------------------------------------------

    def _flush(self) -> None:
        broker = self.broker
        while True:
            batch = broker.drain()
            if not batch:
                break
            for conn_id, data, close in batch:
                conn = self.conns.get(conn_id)
                if conn is None or conn.closed:
                    if close:
                        self.conns.pop(conn_id, None)
                        broker.closed(conn_id)
                    continue
                if data:
                    conn.write(data)
                if close:
                    conn.close()
                elif conn.write_buffer_size() > WRITE_HIGH_WATER:
                    broker.set_congested(conn_id, True)
        if self.store is not None:
            self.store.kick()
        if self.after_flush is not None and not self._in_after:
            self._in_after = True
            try:
                self.after_flush()
            finally:
                self._in_after = False

    def on_store_progress(self) -> None:
        """A StoreDriver listener: some shard's durable_end may have moved."""
        self.broker.durable_progress()
        self._flush()

    # ---- timers --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Tick the broker until `stop` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_S)
            self.broker.tick()
            self._flush()

    async def close(self) -> None:
        from real.node.transport import stop_serving

        await stop_serving(self.listeners, self.conns)
        if self.shards is not None:
            with contextlib.suppress(Exception):
                self.shards.sync(STATE_SHARD)

    # ---- admin ---------------------------------------------------------------------------------

    def disconnect(self, client_id: str) -> bool:
        session = self.broker.sessions.get(client_id)
        if session is None or session.conn_id is None:
            return False
        conn = self.conns.get(session.conn_id)
        if conn is None:
            return False
        self.broker.kick(session.conn_id)
        self._flush()
        return True


def open_state_log(shards: ShardStore) -> Any:
    """The broker's state shard: attach recovers what a previous run left (empty at first)."""
    if STATE_SHARD not in shards.list():
        shards.attach(STATE_SHARD)
    return shards.engine(STATE_SHARD)


WRITE_HIGH_WATER = 1 << 20


def open_mqtt(cfg: Any, shards: ShardStore, devices: Any, log: Callable[[str], None]
              ) -> MqttService:
    """Build the broker over the node's state shard and recover it (before any listener)."""
    from real.mqtt.auth import Authenticator
    from real.node.config import load_acl, load_passwords

    state = open_state_log(shards)
    passwords = load_passwords(cfg)
    authenticator = Authenticator(passwords, allow_anonymous=False)
    acl = load_acl(cfg) if cfg.mqtt_acl_file else None
    broker = Broker(broker_config(cfg), wall_ms, log=state, authenticate=authenticator.login,
                    acl=acl)
    started = time.monotonic()
    broker.recover()
    log(f"mqtt: recovered {len(broker.sessions)} sessions, {len(broker.retained)} retained "
        f"messages from {broker.recovered_records} state records in "
        f"{time.monotonic() - started:.2f}s")
    service = MqttService(broker, shards, log)
    service.allow_anonymous = cfg.mqtt_allow_anonymous
    if passwords is not None:
        log(f"mqtt: {len(passwords.users())} users from {cfg.mqtt_password_file}")
    if acl is not None:
        log(f"mqtt: ACL from {cfg.mqtt_acl_file}")
    return service


async def start_mqtt_listeners(cfg: Any, service: MqttService,
                               log: Callable[[str], None]) -> None:
    from real.node.transport import make_ssl_context, start_listener

    ws_path = getattr(cfg, "mqtt_ws_path", "/mqtt")
    plans = [("tcp", cfg.mqtt_port, None), ("ws", getattr(cfg, "ws_port", 0), None)]
    tls_ports = [("tls", getattr(cfg, "mqtts_port", 0)), ("wss", getattr(cfg, "wss_port", 0))]
    if any(port for _, port in tls_ports):
        context = make_ssl_context(cfg.tls_cert_file, cfg.tls_key_file)
        plans += [(kind, port, context) for kind, port in tls_ports]
    for kind, port, context in plans:
        if not port and kind != "tcp":
            continue
        listener = await start_listener(kind, cfg.bind, port, service, ssl_context=context,
                                        ws_path=ws_path, write_high_water=WRITE_HIGH_WATER)
        service.listeners.append(listener)
        where = f"{cfg.bind}:{listener.port}" + (ws_path if kind in ("ws", "wss") else "")
        log(f"mqtt listening {kind} {where}")
