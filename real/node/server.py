"""The asyncio shell of one all-in-one node: a single-member meta Raft, its disk, the admin HTTP.

Ticks come from `loop.call_at` (every `tick_ms`); the callback only counts ticks and wakes the
driver task, which runs `MetaReplica.process_ready` (persist -> send -> apply -> advance), so any
exception propagates through the TaskGroup instead of the loop's exception handler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from real.meta import MetaResult, encode_command, node_json
from real.mqtt.metrics import render as render_metrics
from real.node.admin import AdminServer, Text
from real.node.config import ConfigError, NodeConfig
from real.node.disk import RaftDisk
from real.node.engines import Devices, settings_from_config
from real.node.kafka import KafkaService, open_kafka, start_kafka_listeners
from real.node.mqtt import STATE_SHARD, MqttService, open_mqtt, start_mqtt_listeners
from real.node.replica import MetaReplica, ProposalLost
from real.node.storedriver import StoreDriver
from real.raft.types import Message, ProposalDropped, RaftConfig
from real.storage import ShardStore

REGISTER_SECONDS_MAX = 30.0
TICKS_PER_WAKE_MAX = 64
"""If the loop stalls, at most this many ticks are delivered at once (the rest are dropped)."""


class MetaService:
    """Owns the replica; the admin server reads it through `AdminView` methods."""

    def __init__(self, cfg: NodeConfig, replica: MetaReplica, log: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.log = log
        self.replica = replica
        self.wake = asyncio.Event()
        self.stop = asyncio.Event()
        self._ticks = 0
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0.0
        self._seen: tuple[str, int, int] = ("", 0, 0)
        self.devices: Devices | None = None
        self.shards: ShardStore | None = None
        self.mqtt: MqttService | None = None
        self.kafka: KafkaService | None = None
        self.started = time.monotonic()

    # ---- clock ---------------------------------------------------------------------------------

    def start_ticking(self) -> None:
        loop = asyncio.get_running_loop()
        self._next = loop.time() + self.cfg.tick_ms / 1000
        self._handle = loop.call_at(self._next, self._on_tick)

    def _on_tick(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.cfg.tick_ms / 1000
        self._ticks = min(self._ticks + 1, TICKS_PER_WAKE_MAX)
        self._next = max(self._next + interval, loop.time())
        self._handle = loop.call_at(self._next, self._on_tick)
        self.wake.set()

    def stop_ticking(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    # ---- driver --------------------------------------------------------------------------------

    async def drive(self) -> None:
        """The only task that steps Raft. Exits when `stop` is set."""
        while not self.stop.is_set():
            await self.wake.wait()
            self.wake.clear()
            ticks, self._ticks = self._ticks, 0
            if ticks:
                self.replica.tick(ticks)
            self.replica.process_ready()
            self._log_role()
        self.replica.fail_pending("node shutting down")

    def _log_role(self) -> None:
        raft = self.replica.raft
        now = (raft.role.value, raft.term, raft.leader)
        if now != self._seen:
            self._seen = now
            self.log(f"meta raft: node {raft.id} is {now[0]} in term {now[1]} (leader {now[2]})")

    async def propose(self, data: bytes) -> MetaResult:
        """Propose and wait until applied. Raises ProposalDropped / ProposalLost."""
        fut: asyncio.Future[MetaResult | Exception] = asyncio.get_running_loop().create_future()

        def done(result: MetaResult | Exception) -> None:
            if not fut.done():
                fut.set_result(result)

        self.replica.propose(data, done)
        self.wake.set()
        result = await fut
        if isinstance(result, Exception):
            raise result
        return result

    async def register(self, admin_addr: str) -> None:
        """Propose node.register until it applies (bounded by REGISTER_SECONDS_MAX)."""
        cfg = self.cfg
        data = encode_command("node.register", node_id=cfg.node_id, addr=admin_addr,
                              admin_addr=admin_addr)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REGISTER_SECONDS_MAX
        while not self.stop.is_set():
            try:
                result = await self.propose(data)
            except (ProposalDropped, ProposalLost) as exc:
                if loop.time() > deadline:
                    raise RuntimeError(f"node {cfg.node_id}: could not register in meta within "
                                       f"{REGISTER_SECONDS_MAX}s: {exc}") from exc
                await asyncio.sleep(cfg.tick_ms * cfg.election_tick_min / 1000)
                continue
            assert result.ok, result.error
            self.log(f"meta: node {cfg.node_id} registered ({result.value}) at index "
                f"{self.replica.sm.applied_index}")
            return

    # ---- AdminView -----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        raft, sm = self.replica.raft, self.replica.sm
        return {
            "status": "ok",
            "node_id": self.cfg.node_id,
            "raft": {"role": raft.role.value, "term": raft.term, "leader": raft.leader,
                     "commit": raft.commit, "applied": raft.applied},
            "meta": {"applied_index": sm.applied_index, "digest": sm.digest()},
        }

    def meta_nodes(self) -> list[dict[str, Any]]:
        return [node_json(n) for n in self.replica.sm.nodes()]

    def meta_config(self) -> dict[str, Any]:
        return self.replica.sm.config()

    def storage(self) -> dict[str, Any]:
        if self.shards is None or self.devices is None:
            return {"status": "not open"}
        shards = [dataclasses.asdict(self.shards.describe(n)) for n in self.shards.list()]
        return {**self.devices.describe(), "shards": shards}

    def node_info(self) -> dict[str, Any]:
        cfg = self.cfg
        listeners = [] if self.mqtt is None else [
            {"kind": lst.kind, "port": lst.port} for lst in self.mqtt.listeners]
        return {"node_id": cfg.node_id, "bind": cfg.bind, "data_dir": str(cfg.data_dir),
                "admin_port": cfg.admin_port, "kafka_port": cfg.kafka_port,
                "mqtt_listeners": listeners, "storage_engine": cfg.storage_engine,
                "uptime_s": round(time.monotonic() - self.started, 1),
                "mqtt": None if self.mqtt is None else self.mqtt.broker.gauges()}

    def _broker(self) -> Any:
        if self.mqtt is None:
            raise RuntimeError("the MQTT broker is not running")
        return self.mqtt.broker

    def mqtt_clients(self) -> list[dict[str, Any]]:
        return self._broker().clients()

    def mqtt_sessions(self) -> list[dict[str, Any]]:
        return self._broker().session_list()

    def mqtt_subscriptions(self) -> list[dict[str, Any]]:
        return self._broker().subscription_list()

    def mqtt_topics(self) -> list[dict[str, Any]]:
        return self._broker().topic_list()

    def mqtt_retained(self) -> list[dict[str, Any]]:
        return self._broker().retained_list()

    def metrics(self) -> Text:
        return Text(render_metrics(self._broker()))

    def mqtt_disconnect(self, client_id: str) -> bool:
        return self.mqtt is not None and self.mqtt.disconnect(client_id)


def raft_config(cfg: NodeConfig) -> RaftConfig:
    return RaftConfig(election_tick_min=cfg.election_tick_min,
                      election_tick_max=cfg.election_tick_max,
                      heartbeat_tick=cfg.heartbeat_tick)


def open_replica(cfg: NodeConfig, disk: RaftDisk, send: Callable[[Message], None]) -> MetaReplica:
    from real.raft import RaftNode  # here, so config/CLI tests do not need the Raft core

    rng = random.Random(cfg.raft_seed or cfg.node_id)  # noqa: S311 - seeded by design (STYLE 7)
    raft = RaftNode(cfg.node_id, raft_config(cfg), rng, disk.durable(), peers=(cfg.node_id,))
    return MetaReplica(raft, disk, send, compact_entries=cfg.snapshot_entries)


async def serve(cfg: NodeConfig, out: TextIO | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; return the exit status. Logs to `out` (stdout)."""

    def log(line: str) -> None:
        print(line, file=out or sys.stdout, flush=True)

    disk = RaftDisk(cfg.data_dir / "meta")
    devices = Devices(cfg.data_dir / "storage", settings_from_config(cfg))
    try:
        return await _serve_with(cfg, disk, devices, log)
    finally:
        devices.close()
        disk.close()


async def _serve_with(cfg: NodeConfig, disk: RaftDisk, devices: Devices,
                      log: Callable[[str], None]) -> int:
    rec = disk.recovery
    durable = rec.durable
    log(f"meta: recovered term {durable.hard_state.term} commit {durable.hard_state.commit} "
        f"entries {len(durable.entries)} snapshot "
        f"{durable.snapshot.meta.index if durable.snapshot else 0} "
        f"(torn tail dropped: {rec.truncated_bytes} bytes)")
    replica = open_replica(cfg, disk, _no_peers)
    service = MetaService(cfg, replica, log)
    if cfg.storage_engine == "s3":
        await asyncio.to_thread(devices.store)  # starts the embedded SeaweedFS unless configured
    service.devices, service.shards = devices, devices.shard_store()
    mqtt = open_mqtt(cfg, service.shards, devices, log)
    service.mqtt = mqtt
    kafka = open_kafka(cfg, service, service.shards, devices, log, _sasl_factory(cfg, log))
    service.kafka = kafka
    store = StoreDriver(service.shards, devices.clock, log)
    store.listeners += [mqtt.on_store_progress, kafka.on_store_progress]
    mqtt.store = kafka.store = store
    if cfg.bridges:
        from real.kafka.bridge import Bridge

        kafka.bridge = Bridge(cfg.bridges, kafka.broker, mqtt.broker,
                              lambda: int(time.time() * 1000))
        kafka.after_flush = mqtt._flush
        mqtt.after_flush = kafka.flush
    admin = AdminServer(service, cfg.bind, cfg.admin_port,
                        request_bytes_max=cfg.admin_request_bytes_max,
                        connections_max=cfg.admin_connections_max)
    port = await admin.start()  # bind errors surface here, before anything else starts
    try:
        await start_mqtt_listeners(cfg, mqtt, log)
    except BaseException:
        await mqtt.close()
        raise
    _startup_lines(cfg, port, log, devices)
    if replica.raft.conf.voters == (cfg.node_id,):
        replica.raft.campaign()  # the only voter: no need to wait an election timeout
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _stopper(service, log, sig))
    try:
        service.start_ticking()
        service.wake.set()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.drive(), name="meta-raft")
            tg.create_task(admin.serve_until(service.stop), name="admin")
            tg.create_task(_register_then_kafka(service, cfg, port, kafka, log), name="register")
            tg.create_task(mqtt.run(service.stop), name="mqtt")
            tg.create_task(kafka.run(service.stop), name="kafka")
    finally:
        service.stop_ticking()
        await kafka.close()
        await mqtt.close()
        await store.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log("twinmq stopped")
    return 0


def _sasl_factory(cfg: NodeConfig, log: Callable[[str], None]) -> Callable[[], Any] | None:
    """Per-connection SASL servers over the MQTT user store (PLAIN: the password file; SCRAM:
    its `.scram` sidecar); None when no password file is configured."""
    import base64
    import os

    from real.kafka.sasl import SaslServer
    from real.node.config import load_sasl_users

    users = load_sasl_users(cfg)
    if users is None:
        if cfg.kafka_sasl:
            raise ConfigError("key 'kafka.sasl' is true but 'mqtt.password_file' is not set")
        return None
    secret = os.urandom(32)
    log(f"kafka: SASL PLAIN and SCRAM-SHA-256 against {cfg.mqtt_password_file}"
        f"{' (required)' if cfg.kafka_sasl else ' (optional)'}")
    return lambda: SaslServer(users, lambda: base64.b64encode(os.urandom(18)).decode(),
                              mock_secret=secret)


async def _register_then_kafka(service: MetaService, cfg: NodeConfig, admin_port: int,
                               kafka: KafkaService, log: Callable[[str], None]) -> None:
    """Register in meta, then listen for Kafka: by then the meta log is applied, so the broker
    sees every topic created before a restart."""
    await service.register(f"{cfg.bind}:{admin_port}")
    if kafka.bridge is not None:
        await kafka.ensure_topics(kafka.bridge.kafka_topics())
        log(f"bridge: {len(kafka.bridge.rules)} MQTT <-> Kafka rules over Kafka topics "
            f"{', '.join(kafka.bridge.kafka_topics())}")
    await start_kafka_listeners(cfg, kafka, log)


def _no_peers(msg: Message) -> None:
    # Single-member group: there is nobody to send to. Inter-node RPC comes later.
    raise AssertionError(f"single-member meta group produced a message: {msg}")


def _stopper(service: MetaService, log: Callable[[str], None], sig: int) -> Callable[[], None]:
    def stop() -> None:
        log(f"twinmq: {signal.Signals(sig).name} received, shutting down")
        service.stop.set()
        service.wake.set()

    return stop


def _startup_lines(cfg: NodeConfig, admin_port: int, log: Callable[[str], None],
                   devices: Devices) -> None:
    log(f"twinmq serving: admin http://{cfg.bind}:{admin_port} data-dir {cfg.data_dir}")
    if cfg.storage_engine == "s3":
        log(f"node {cfg.node_id}: S3 endpoint {devices.describe()['s3_endpoint']}")
    log(f"node {cfg.node_id}: storage engine {cfg.storage_engine!r} (fsync {cfg.storage_fsync}); "
        f"MQTT state in shard {STATE_SHARD!r}")
