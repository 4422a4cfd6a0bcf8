"""Host parity (turmoil's parity.rs in spirit): one datadriven script, two hosts, the same bytes.

testdata/parity.txt opens MQTT and Kafka connections, sends bytes, waits for whole frames,
closes, crashes the node's process and restarts it. The script runs against the asyncio host
(`AsyncHost`: real sockets on loopback, real files, fdatasync on worker threads) and against the
SimPy host (`SimHost`: zero-latency pipes, one simulated disk, a process crash without power loss),
both hosting a `NodeCore` of the same spec and seed. Every connection must receive the same bytes
in both worlds, frame by frame.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import simpy

from model.devices.conn import FIN, NetSpec, SimNet, Switchboard
from model.devices.fs import SimFileSystem
from model.host import SimHost
from model.sim.dist import Dist
from real.kafka import api
from real.kafka.codec import RequestHeader, encode_request
from real.kafka.records import KRecord, build_batch
from real.mqtt import MQTT_3_1_1, Properties, PropertyId, encode
from real.mqtt.packets import Connect, Disconnect, Puback, Publish, Subscribe, Subscription
from real.node.config import NodeConfig, load_config, node_spec
from real.node.disk import RaftDisk
from real.node.engines import Devices, monotonic_ms, settings_from_config
from real.node.host import AsyncHost
from real.node.transport import start_listener
from real.server.node import NodeCore, NodeEnv, NodeSpec, Proto

SCRIPT = Path(__file__).parent / "testdata" / "parity.txt"
SEED = 7
TS = 1_700_000_000_000


def expiry(seconds: int) -> Properties:
    return Properties(((PropertyId.SESSION_EXPIRY_INTERVAL, seconds),))


def batch(*values: bytes) -> bytes:
    return build_batch([KRecord(-1, TS, None, v, ()) for v in values])


def metadata(topic: str) -> dict:
    return {"topics": [{"name": topic}], "allow_auto_topic_creation": True,
            "include_cluster_authorized_operations": False,
            "include_topic_authorized_operations": False}


def produce_body(topic: str, data: bytes, acks: int = -1) -> dict:
    return {"transactional_id": None, "acks": acks, "timeout_ms": 30_000, "topic_data": [
        {"name": topic, "partition_data": [{"index": 0, "records": data}]}]}


def fetch_body(topic: str) -> dict:
    return {"replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20,
            "isolation_level": 0, "session_id": 0, "session_epoch": -1, "topics": [
                {"topic": topic, "partitions": [
                    {"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20,
                     "log_start_offset": -1, "current_leader_epoch": -1}]}],
            "forgotten_topics_data": [], "rack_id": ""}


def list_offsets(topic: str, ts: int) -> dict:
    return {"replica_id": -1, "isolation_level": 0, "topics": [
        {"name": topic, "partitions": [{"partition_index": 0, "timestamp": ts,
                                        "current_leader_epoch": -1}]}]}


NAMES: dict[str, Any] = {
    "Connect": Connect, "Disconnect": Disconnect, "Puback": Puback, "Publish": Publish,
    "Subscribe": Subscribe, "Subscription": Subscription, "expiry": expiry, "batch": batch,
    "metadata": metadata, "produce_body": produce_body, "fetch_body": fetch_body,
    "list_offsets": list_offsets,
}


def parse(path: Path) -> list[list[str]]:
    steps = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            steps.append(line.split(" ", 1 if line.startswith("mqtt") else 4))
    return steps


def frames(buf: bytearray, proto: str) -> list[bytes]:
    """Split whole frames off `buf` (MQTT fixed header + length, or Kafka's size prefix)."""
    out = []
    while buf:
        if proto == "kafka":
            if len(buf) < 4:
                break
            size = 4 + struct.unpack(">i", buf[:4])[0]
        else:
            length, mult, i = 0, 1, 1
            while True:
                if i >= len(buf):
                    return out
                length += (buf[i] & 0x7F) * mult
                mult *= 128
                i += 1
                if not buf[i - 1] & 0x80:
                    break
            size = i + length
        if len(buf) < size:
            break
        out.append(bytes(buf[:size]))
        del buf[:size]
    return out


class Driver:
    """What a script needs from a host: connect, send, receive whole frames, close, crash."""

    def __init__(self) -> None:
        self.protos: dict[str, str] = {}
        self.versions: dict[str, int] = {}
        self.received: dict[str, list[bytes]] = {}
        self.buffers: dict[str, bytearray] = {}
        self.correlation = 0
        self.consumed: dict[str, int] = {}

    def encode(self, step: list[str]) -> tuple[str, bytes]:
        if step[0] == "mqtt":
            name, expr = step[1].split(" ", 1)
            packet = eval(expr, dict(NAMES))  # noqa: S307 - the test's own script
            if isinstance(packet, Connect):
                self.versions[name] = packet.protocol_version
            return name, encode(packet, self.versions.get(name, MQTT_3_1_1))
        _, name, api_name, version, expr = step
        self.correlation += 1
        header = RequestHeader(getattr(api, api_name), int(version), self.correlation, "parity")
        return name, encode_request(header, eval(expr, dict(NAMES)))  # noqa: S307

    def expect(self, name: str, n: int) -> int:
        """`recv NAME N`: N frames past those earlier `recv`s waited for (some may be here)."""
        self.consumed[name] = self.consumed.get(name, 0) + n
        return self.consumed[name]

    def got(self, name: str, data: bytes) -> None:
        self.buffers[name] += data
        self.received[name] += frames(self.buffers[name], self.protos[name])


def the_spec(tmp: Path) -> tuple[NodeConfig, NodeSpec]:
    cfg = load_config(overrides={"data_dir": str(tmp), "mqtt_sys_interval_s": 0,
                                 "kafka_advertised_port": 9092, "raft_seed": SEED})
    return cfg, node_spec(cfg, kafka_port=9092, register_addr="parity:1")


# ---- the asyncio host -----------------------------------------------------------------------


class RealNode:
    def __init__(self, tmp: Path) -> None:
        self.cfg, self.spec = the_spec(tmp)
        self.disk = RaftDisk(tmp / "meta")
        self.devices = Devices(tmp / "storage", settings_from_config(self.cfg), clock=monotonic_ms)
        env = NodeEnv(raft_storage=self.disk, engines=self.devices.factories(),
                      clock=monotonic_ms, wall_clock=monotonic_ms, rng=random.Random(SEED))
        self.host = AsyncHost(NodeCore(self.spec, env), monotonic_ms, print)
        self.ports: dict[str, int] = {}

    async def start(self) -> None:
        for proto in (Proto.MQTT, Proto.KAFKA):
            lst = await start_listener("tcp", "127.0.0.1", 0, self.host.handlers[proto])
            self.host.listeners[proto].append(lst)
            self.ports[proto.value] = lst.port
        self.host.start()

    async def crash(self) -> None:
        """The process dies: connections drop, no shutdown work (the OS keeps written data)."""
        await self.host.close()
        self.devices.close()
        self.disk.close()


async def run_real(tmp: Path, steps: list[list[str]]) -> dict[str, list[bytes]]:
    d = Driver()
    node = RealNode(tmp)
    await node.start()
    streams: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
    async with asyncio.timeout(60):
        for step in steps:
            cmd = step[0]
            if cmd == "open":
                name, proto = step[1].split() if len(step) == 2 else step[1:3]
                d.protos[name], d.received[name], d.buffers[name] = proto, [], bytearray()
                streams[name] = await asyncio.open_connection("127.0.0.1", node.ports[proto])
            elif cmd in ("mqtt", "kafka"):
                name, data = d.encode(step)
                streams[name][1].write(data)
            elif cmd == "recv":
                name, n = step[1].split() if len(step) == 2 else step[1:3]
                want = d.expect(name, int(n))
                while len(d.received[name]) < want:
                    data = await streams[name][0].read(65536)
                    assert data, f"{name}: closed while waiting for frames"
                    d.got(name, data)
            elif cmd == "close":
                writer = streams.pop(step[1])[1]
                writer.close()
            elif cmd == "crash":
                core, host = node.host.core, node.host
                while not (core.quiescent() and core.connections() == len(streams)):
                    host.changed.clear()
                    await host.changed.wait()
                await node.crash()
            else:
                assert cmd == "restart", cmd
                node = RealNode(tmp)
                await node.start()
    await node.crash()
    return d.received


# ---- the SimPy host -------------------------------------------------------------------------


class SimClient:
    def __init__(self, driver: Driver, name: str) -> None:
        self.driver = driver
        self.name = name
        self.is_closed = False

    def arrive(self, _conn: Any, item: bytes | None) -> None:
        if item:
            self.driver.got(self.name, item)

    def closed(self, _conn: Any) -> None:
        self.is_closed = True


def run_sim(steps: list[list[str]]) -> dict[str, list[bytes]]:
    d = Driver()
    env = simpy.Environment()
    _, spec = the_spec(Path("/nonexistent"))
    net = SimNet(env, NetSpec(latency=Dist("fixed", 0.0)), random.Random(1))
    fs = SimFileSystem(random.Random(2))
    host = SimHost(env, spec, _storage(spec), fs, random.Random(3))
    board = Switchboard(net, host)
    env.process(host.start())
    conns: dict[str, Any] = {}

    def run_until(cond: Callable[[], bool], what: str) -> None:
        while not cond():
            assert env.peek() < 60_000_000, f"sim: {what} never happened"
            env.step()

    run_until(lambda: host.up, "node up")
    for step in steps:
        cmd = step[0]
        if cmd == "open":
            name, proto = step[1].split() if len(step) == 2 else step[1:3]
            d.protos[name], d.received[name], d.buffers[name] = proto, [], bytearray()
            conns[name] = board.dial(SimClient(d, name), Proto(proto))
        elif cmd in ("mqtt", "kafka"):
            name, data = d.encode(step)
            conns[name].up.send(data)
        elif cmd == "recv":
            name, n = step[1].split() if len(step) == 2 else step[1:3]
            want = d.expect(name, int(n))
            run_until(lambda name=name, want=want: len(d.received[name]) >= want,
                      f"{want} frames on {name}")
        elif cmd == "close":
            conns.pop(step[1]).up.send(FIN)
        elif cmd == "crash":
            run_until(lambda: (host.core is not None and host.core.quiescent()
                               and host.core.connections() == len(conns)), "a quiescent node")
            host.crash(power_loss=False)
        else:
            assert cmd == "restart", cmd
            env.process(host.start())
            run_until(lambda: host.up, "node up again")
    return d.received


def _storage(spec: NodeSpec) -> Any:
    from real.server.storage import StorageSettings

    return StorageSettings(engine=spec.default_engine)


# ---- the test --------------------------------------------------------------------------------


def test_both_hosts_write_the_same_bytes_on_every_connection(tmp_path: Path) -> None:
    steps = parse(SCRIPT)
    real = asyncio.run(run_real(tmp_path, steps))
    sim = run_sim(steps)
    assert sorted(real) == sorted(sim) == ["k", "k2", "p", "r", "s", "s2"]
    for name in real:
        assert real[name] == sim[name], f"connection {name}: hosts differ"
    # and the script did what it says: acknowledged data survived the crash in both
    connack = real["s2"][0]
    assert connack[0] == 0x20 and connack[2:4] == b"\x01\x00"  # CONNACK: session present, 0
    assert real["s2"][1][0] & 0xF0 == 0x30 and b"retained" in real["s2"][1]  # the redelivery
    assert b"two" in real["k2"][0]  # the produced batch, fetched after the restart
