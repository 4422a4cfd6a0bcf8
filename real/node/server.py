"""`twinmq serve`: config -> devices -> `NodeCore` -> `AsyncHost`, plus the admin HTTP server.

Start-up order: recover the meta Raft log and open the storage devices; bind the admin port and
the Kafka port (bound, not yet accepting, so the advertised port is known to the spec); build the
node (`NodeCore` recovers meta, shards and both brokers, and registers itself in meta); start the
MQTT listeners; accept Kafka connections once the node is registered and the bridge's topics
exist (`core.kafka_ready`), so Kafka clients see every topic created before a restart. SIGINT and
SIGTERM stop the node: listeners close, running fdatasyncs finish, every shard is synced.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from real.meta import node_json, topic_json
from real.node.admin import AdminServer, Text
from real.node.config import ConfigError, NodeConfig, load_acl, load_passwords, node_spec
from real.node.disk import RaftDisk
from real.node.engines import Devices, monotonic_ms, settings_from_config
from real.node.host import AsyncHost
from real.node.metrics import NodeMetrics
from real.node.transport import Listener, make_ssl_context, start_listener
from real.raft.types import ProposalDropped
from real.server.node import STATE_SHARD, NodeCore, NodeEnv, Proto

READ_BARRIER_S = 2.0
"""How long a linearizable admin read waits for the meta leader's read index."""


class NodeView:
    """What the admin server reads (`AdminView`), over the hosted core."""

    def __init__(self, cfg: NodeConfig, devices: Devices, host: AsyncHost,
                 peers: Any = None) -> None:
        self.cfg = cfg
        self.devices = devices
        self.host = host
        self.peers = peers
        self.core = host.core
        self.started = time.monotonic()
        self._metrics = NodeMetrics(mqtt=self.core.mqtt, kafka=self.core.kafka,
                                    cluster_log=self.core.cluster_log, node_id=cfg.node_id,
                                    cluster=cfg.kafka_cluster_id)

    def health(self) -> dict[str, Any]:
        raft, sm = self.core.replica.raft, self.core.replica.sm
        return {
            "status": "ok",
            "node_id": self.cfg.node_id,
            "raft": {"role": raft.role.value, "term": raft.term, "leader": raft.leader,
                     "commit": raft.commit, "applied": raft.applied},
            "meta": {"applied_index": sm.applied_index, "digest": sm.digest()},
        }

    async def read_barrier(self, timeout_s: float = READ_BARRIER_S) -> int:
        """Wait until this node's meta state is linearizable (Raft's read index: the leader
        confirmed its leadership with a quorum, and this node applied what was committed
        then); returns that index. TimeoutError when no leader answers in time (no quorum, a
        partition), ProposalDropped when too many reads wait."""
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[int] = loop.create_future()

        def done(index: int) -> None:
            if not answered.done():
                answered.set_result(index)

        asked: list[bytes] = []
        refused: list[ProposalDropped] = []

        def ask() -> None:
            try:
                asked.append(self.core.read_index(done))
            except ProposalDropped as exc:  # no leader known: not a node failure
                refused.append(exc)

        self.host.run(ask)
        if refused:
            raise refused[0]
        try:
            return await asyncio.wait_for(answered, timeout_s)
        except TimeoutError:
            if asked:
                self.host.run(lambda: self.core.cancel_read(asked[0]))
            raise

    def meta_nodes(self) -> list[dict[str, Any]]:
        return [node_json(n) for n in self.core.replica.sm.nodes()]

    def meta_config(self) -> dict[str, Any]:
        return self.core.replica.sm.config()

    def meta_topics(self) -> list[dict[str, Any]]:
        return [topic_json(t) for t in self.core.replica.sm.topics()]

    def replication(self) -> dict[str, Any]:
        return self.core.replication_view()

    def storage(self) -> dict[str, Any]:
        shards = self.core.shards
        described = [dataclasses.asdict(shards.describe(n)) for n in shards.list()]
        return {**self.devices.describe(), "shards": described}

    def node_info(self) -> dict[str, Any]:
        cfg = self.cfg
        listeners = [{"kind": lst.kind, "port": lst.port}
                     for lst in self.host.listeners[Proto.MQTT]]
        return {"node_id": cfg.node_id, "bind": cfg.bind, "data_dir": str(cfg.data_dir),
                "admin_port": cfg.admin_port, "kafka_port": cfg.kafka_port,
                "mqtt_listeners": listeners, "storage_engine": cfg.storage_engine,
                "uptime_s": round(time.monotonic() - self.started, 1),
                "mqtt": self.core.mqtt.gauges()}

    def mqtt_clients(self) -> list[dict[str, Any]]:
        return self.core.mqtt.clients()

    def mqtt_sessions(self) -> list[dict[str, Any]]:
        return self.core.mqtt.session_list()

    def mqtt_subscriptions(self) -> list[dict[str, Any]]:
        return self.core.mqtt.subscription_list()

    def mqtt_topics(self) -> list[dict[str, Any]]:
        return self.core.mqtt.topic_list()

    def mqtt_retained(self) -> list[dict[str, Any]]:
        return self.core.mqtt.retained_list()

    def metrics(self) -> Text:
        return self._metrics.render()

    def net_faults(self, args: dict[str, Any] | None) -> dict[str, Any]:
        """The link faults of this node's peer transport: None reads them, {} heals every link,
        else sets the one `args` names (`peer` and `LinkFault` fields)."""
        from real.node.peers import LinkFault

        if self.peers is None:
            raise ValueError("this node has no peers (a single node)")
        if args == {}:
            self.peers.heal()
        elif args is not None:
            fields = {k: v for k, v in args.items() if k != "peer"}
            for flag in ("drop_out", "drop_in"):
                if flag in fields:
                    fields[flag] = bool(fields[flag])
            self.peers.set_fault(int(args["peer"]), LinkFault(**fields))
        return {str(p): dataclasses.asdict(f) for p, f in sorted(self.peers.faults.items())}

    def cluster_members(self) -> dict[str, Any]:
        return self.core.members_view()

    async def member_change(self, kind: str, node_id: int, addr: str) -> tuple[int, Any]:
        """Add (`kind` "add", peer address `addr`) or remove a meta member through this node,
        which must lead meta; waits until the change is done or failed. 200 done; 421 this node
        does not lead (the body names the leader and its admin address); 409 another change is
        in progress; 503 it failed on the way (lost leadership, timed out): ask again."""
        from real.server.membership import CHANGE_DEADLINE_MS, ChangeResult

        loop = asyncio.get_running_loop()
        answered: asyncio.Future[ChangeResult] = loop.create_future()

        def done(result: ChangeResult) -> None:
            if not answered.done():
                answered.set_result(result)

        if kind == "add":
            self.host.run(lambda: self.core.add_member(node_id, addr, done))
        else:
            self.host.run(lambda: self.core.remove_member(node_id, done))
        try:
            result = await asyncio.wait_for(answered, CHANGE_DEADLINE_MS / 1000 + 5)
        except TimeoutError:
            return 503, {"error": "the membership change did not finish in time; ask again"}
        if result.ok:
            return 200, {"message": result.message, "members": self.core.members_view()}
        leader = result.leader
        if leader != self.cfg.node_id:
            info = self.core.replica.sm.node(leader) if leader else None
            return 421, {"error": result.message, "leader": leader,
                         "leader_admin": info.admin_addr if info is not None else ""}
        return (409 if result.message.startswith("busy") else 503), {"error": result.message}

    def mqtt_disconnect(self, client_id: str) -> bool:
        kicked = self.core.disconnect_client(client_id)
        self.host.flush()
        return kicked


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def serve(cfg: NodeConfig, out: TextIO | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; return the exit status. Logs to `out` (stdout)."""

    def log(line: str) -> None:
        if cfg.log_timestamps:  # epoch seconds, as librdkafka's debug log prints them
            line = f"{time.time():.3f} {line}"
        print(line, file=out or sys.stdout, flush=True)

    disk = RaftDisk(cfg.data_dir / "meta", hold_unsynced=cfg.storage_hold_unsynced)
    devices = Devices(cfg.data_dir / "storage", settings_from_config(cfg))
    try:
        return await _serve_with(cfg, disk, devices, log)
    finally:
        devices.close()
        disk.close()


def node_env(cfg: NodeConfig, disk: RaftDisk, devices: Devices,
             log: Callable[[str], None]) -> NodeEnv:
    """The real devices, clocks, randomness and auth of a node."""
    from real.mqtt.auth import Authenticator

    passwords = load_passwords(cfg)
    if passwords is not None:
        log(f"mqtt: {len(passwords.users())} users from {cfg.mqtt_password_file}")
    acl = load_acl(cfg) if cfg.mqtt_acl_file else None
    if acl is not None:
        log(f"mqtt: ACL from {cfg.mqtt_acl_file}")
    seed = cfg.raft_seed or int.from_bytes(os.urandom(8), "big")
    return NodeEnv(raft_storage=disk, engines=devices.factories(), clock=monotonic_ms,
                   wall_clock=wall_ms, rng=random.Random(seed),  # noqa: S311 - seeded by design
                   log=log, authenticate=Authenticator(passwords, allow_anonymous=False).login,
                   acl=acl, sasl_factory=_sasl_factory(cfg, log))


async def _serve_with(cfg: NodeConfig, disk: RaftDisk, devices: Devices,
                      log: Callable[[str], None]) -> int:
    rec = disk.recovery
    durable = rec.durable
    log(f"meta: recovered term {durable.hard_state.term} commit {durable.hard_state.commit} "
        f"entries {len(durable.entries)} snapshot "
        f"{durable.snapshot.meta.index if durable.snapshot else 0} "
        f"(torn tail dropped: {rec.truncated_bytes} bytes)")
    if cfg.storage_engine == "s3":
        await asyncio.to_thread(devices.store)  # starts the embedded SeaweedFS unless configured
    env = node_env(cfg, disk, devices, log)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _stopper(stopped, log, sig))
    try:
        return await _run(cfg, env, devices, stopped, log)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run(cfg: NodeConfig, env: NodeEnv, devices: Devices, stopped: asyncio.Event,
               log: Callable[[str], None]) -> int:
    holder: list[NodeView] = []
    from real.node.config import read_admin_token

    admin = AdminServer(_LateView(holder), cfg.bind, cfg.admin_port,
                        request_bytes_max=cfg.admin_request_bytes_max,
                        connections_max=cfg.admin_connections_max,
                        token=read_admin_token(cfg), log=log)
    admin_port = await admin.start()  # bind errors surface here, before anything else starts
    kafka = await start_listener("tcp", cfg.bind, cfg.kafka_port, _Deferred(), start_serving=False,
                                 write_high_water=8 << 20)
    spec = node_spec(cfg, kafka_port=kafka.port, register_addr=f"{cfg.bind}:{admin_port}")
    core = NodeCore(spec, env)
    host = AsyncHost(core, monotonic_ms, log, stopped=stopped)
    kafka.handler = host.handlers[Proto.KAFKA]
    host.listeners[Proto.KAFKA].append(kafka)
    peers = _peer_net(cfg, host, log)
    try:
        if peers is not None:
            host.send_raft = peers.send
            host.set_peers = peers.set_peers
            await peers.start()
            what = ("joining: waits to be added by the leader" if spec.join
                    else f"meta voters {list(spec.voters)}")
            log(f"cluster: node {cfg.node_id} of {len(peers.peers)} ({what}), peers on port "
                f"{peers.port}")
        host.start()
        await _start_mqtt_listeners(cfg, host, log)
        holder.append(NodeView(cfg, devices, host, peers))  # /health answers from now on
        _startup_lines(cfg, admin_port, log, devices)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(admin.serve_until(stopped), name="admin")
            tg.create_task(_kafka_when_ready(host, kafka, cfg.bind, log), name="kafka")
    finally:
        if peers is not None:
            await peers.close()
        await host.close()
        core.close()
    if host.failure is not None:
        raise host.failure
    log("twinmq stopped")
    return 0


def _peer_net(cfg: NodeConfig, host: AsyncHost, log: Callable[[str], None]) -> Any:
    """The inter-node transport when the config names peers (None for a single node)."""
    from real.node.config import parse_peers, read_cluster_secret

    peers = parse_peers(cfg.cluster_peers)
    if len(peers) < 2:
        return None
    from real.cluster.peer import PeerConfig
    from real.node.peers import PeerNet

    config = PeerConfig(cfg.kafka_cluster_id, cfg.node_id, read_cluster_secret(cfg),
                        frozenset(peers))
    tls = None
    if cfg.cluster_tls_cert_file:
        from real.node.peers import peer_tls

        tls = peer_tls(cfg.cluster_tls_cert_file, cfg.cluster_tls_key_file,
                       cfg.cluster_tls_ca_file)
    return PeerNet(config, peers, host.raft_received, log, tls=tls,
                   deliver_many=host.raft_received_many, gone=host.peer_gone)


class _LateView:
    """The admin server is bound before the node is built (bind errors first); until the node
    serves, `ready` is False and requests are answered 503 (clients poll /health)."""

    def __init__(self, holder: list[NodeView]) -> None:
        self._holder = holder

    @property
    def ready(self) -> bool:
        return bool(self._holder)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._holder[0], name)


class _Deferred:
    """The Kafka listener's handler until the node exists (it accepts nothing before)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Kafka listener used before the node was built ({name})")


async def _kafka_when_ready(host: AsyncHost, kafka: Listener, bind: str,
                            log: Callable[[str], None]) -> None:
    core = host.core
    while not core.kafka_ready:
        if host.stopped.is_set():
            return
        host.changed.clear()
        waiters = [asyncio.ensure_future(host.changed.wait()),
                   asyncio.ensure_future(host.stopped.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
    for mqtt in host.listeners[Proto.MQTT]:
        if not mqtt.serving and core.accepting(Proto.MQTT):
            # held back until the bridge could copy every publish; never started on a node
            # that holds no replica of the MQTT cluster log (it could deliver nothing)
            await mqtt.start_serving()
    await kafka.start_serving()
    cfg = core.spec.kafka
    log(f"kafka listening tcp {bind}:{kafka.port} (advertised {cfg.host}:{cfg.port})")


def _sasl_factory(cfg: NodeConfig, log: Callable[[str], None]) -> Callable[[], Any] | None:
    """Per-connection SASL servers over the MQTT user store (PLAIN: the password file; SCRAM:
    its `.scram` sidecar); None when no password file is configured."""
    import base64

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


async def _start_mqtt_listeners(cfg: NodeConfig, host: AsyncHost,
                                log: Callable[[str], None]) -> None:
    from real.node.host import MQTT_WRITE_HIGH_WATER

    ws_path = cfg.mqtt_ws_path
    plans: list[tuple[str, int, Any]] = [("tcp", cfg.mqtt_port, None), ("ws", cfg.ws_port, None)]
    tls_ports = [("tls", cfg.mqtts_port), ("wss", cfg.wss_port)]
    if any(port for _, port in tls_ports):
        context = make_ssl_context(cfg.tls_cert_file, cfg.tls_key_file)
        plans += [(kind, port, context) for kind, port in tls_ports]
    handler = host.handlers[Proto.MQTT]
    for kind, port, context in plans:
        if not port and kind != "tcp":
            continue
        serve = host.core.accepting(Proto.MQTT)
        listener = await start_listener(kind, cfg.bind, port, handler, ssl_context=context,
                                        ws_path=ws_path, write_high_water=MQTT_WRITE_HIGH_WATER,
                                        start_serving=serve)
        host.listeners[Proto.MQTT].append(listener)
        where = f"{cfg.bind}:{listener.port}" + (ws_path if kind in ("ws", "wss") else "")
        log(f"mqtt listening {kind} {where}" + ("" if serve else " (once the bridge's Kafka "
                                                               "topics exist)"))


def _stopper(stopped: asyncio.Event, log: Callable[[str], None], sig: int
             ) -> Callable[[], None]:
    def stop() -> None:
        log(f"twinmq: {signal.Signals(sig).name} received, shutting down")
        stopped.set()

    return stop


def _startup_lines(cfg: NodeConfig, admin_port: int, log: Callable[[str], None],
                   devices: Devices) -> None:
    log(f"twinmq serving: admin http://{cfg.bind}:{admin_port} data-dir {cfg.data_dir}")
    if cfg.storage_engine == "s3":
        log(f"node {cfg.node_id}: S3 endpoint {devices.describe()['s3_endpoint']}")
    log(f"node {cfg.node_id}: storage engine {cfg.storage_engine!r} (fsync {cfg.storage_fsync}); "
        f"MQTT state in shard {STATE_SHARD!r}")
