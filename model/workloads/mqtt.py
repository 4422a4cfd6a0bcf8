"""MQTT clients against the simulated cluster: publishers and subscribers on the clients' node,
and the history they observe.

The clients speak MQTT through the real codec (`real.mqtt.encode` / `Decoder`) over `SimConn`s
(model/devices/conn.py). Publishers send at a fixed rate with a bounded window and a bounded local
queue (overflow is counted as `rejected`, never silently dropped); on reconnect they re-send
unacknowledged PUBLISHes with DUP and pending PUBRELs under the same packet ids. Subscribers
acknowledge QoS 1 (PUBACK) and QoS 2 (PUBREC, then PUBCOMP on PUBREL; a QoS 2 packet id is delivered
once until its PUBREL), keep that state across reconnects when persistent (clean_start false), and
re-subscribe whenever CONNACK says the session is not present. Publishing starts at `warmup_ms` and
stops at heal; the run then drains until `duration_ms`.

The checker that judges their history is model/checkers/mqtt.py.

**Trace kinds** (node: the client's id, 100 and up): `broker-up` (node: the clients' node; gen,
records and sessions recovered), `congested`; per client `dial`, `connack` (present, code),
`closed`, `suback`; publishers `pub` (seq, qos, pid, dup), `ack` (PUBACK / first PUBREC),
`comp`, `refused`, `reject` (local queue full); subscribers `recv` (p, seq, qos, dup) and
`repeat` (a QoS 2 PUBLISH under a packet id still awaiting PUBREL: acknowledged, not delivered;
`held` and `payload` show both messages' first bytes).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

from model.checkers.mqtt import History, MqttChecker, PubRecord, Receipt
from model.devices.conn import FIN, SimConn
from model.scenario import PublisherSpec, SubscriberSpec
from model.workloads import Workload
from real.mqtt import (
    MQTT_5,
    Connack,
    Connect,
    Decoder,
    Properties,
    PropertyId,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    encode,
)
from real.mqtt.session import next_packet_id
from real.server.node import NodeCore, Proto

if TYPE_CHECKING:
    from model.world import World

US_PER_MS = 1000
CLIENT_PACKET_MAX = 1 << 28


# ================================================================================ clients


class SimClient:
    """Connection management shared by publishers and subscribers: dial, CONNECT, reconnect."""

    def __init__(self, world: MqttWorkload, node: int, name: str, protocol: int, persistent: bool,
                 expiry_s: int, rng: Any) -> None:
        self.world = world
        self.env = world.env
        self.node = node  # trace node id (1-based, unique per client)
        self.name = name
        self.protocol = protocol
        self.persistent = persistent
        self.expiry_s = expiry_s
        self.rng = rng
        self.target = 0  # the node it connects to (0: the clients' node)
        self.conn: SimConn | None = None
        self.decoder: Decoder | None = None
        self.online = False  # CONNACK accepted on the current connection
        self.connects = 0
        self.roam = False  # reconnect to another node each time (cluster)
        self.twin = False  # one of two clients sharing a client id (cluster)
        self.twin_no = 0  # which of the two

    def dial(self) -> None:
        assert self.conn is None
        self.connects += 1
        if self.roam and self.connects > 1:  # another node each time
            others = [n for n in self.world.world.node_ids if n != self.target]
            if others:
                self.target = others[self.rng.randrange(len(others))]
        self.decoder = Decoder(version=self.protocol, max_packet_size=CLIENT_PACKET_MAX)
        self.conn = self.world.dial(self)
        props = Properties()
        if self.protocol == MQTT_5 and self.persistent:
            props = Properties.of((PropertyId.SESSION_EXPIRY_INTERVAL, self.expiry_s))
        self.send(Connect(self.name, protocol_version=self.protocol,
                          clean_start=not self.persistent, properties=props))
        self.world.history.emit(self.node, "dial", attempt=self.connects)

    def send(self, packet: Any) -> None:
        if self.conn is not None:
            self.conn.up.send(encode(packet, self.protocol))

    def arrive(self, conn: SimConn, item: bytes | None) -> None:
        if conn is not self.conn:
            return
        if item is FIN:
            self.closed(conn)
            return
        assert self.decoder is not None
        for packet in self.decoder.feed(item):
            if self.conn is not conn:
                return
            if self.twin and type(packet) in (Connack, Publish):
                self.world.history.served(self.name, conn.sent_us, (self.target, conn.id),
                                          packet)
            self.on_packet(packet)

    def closed(self, conn: SimConn) -> None:
        """The connection is gone (FIN, reset, refused): reconnect after a delay."""
        if conn is not self.conn:
            return
        self.conn = None
        self.online = False
        self.on_closed()
        self.world.world.later(self.world.reconnect_us(self.rng), self._redial)

    def _redial(self) -> None:
        if self.conn is None:
            self.dial()

    def on_packet(self, packet: Any) -> None:
        raise NotImplementedError

    def on_closed(self) -> None:
        raise NotImplementedError


class _Out:
    """A publisher's message on its way: packet id and stage (0 sent, 1 PUBREC seen)."""

    __slots__ = ("rec", "payload", "pid", "stage")

    def __init__(self, rec: PubRecord, payload: bytes) -> None:
        self.rec = rec
        self.payload = payload
        self.pid = 0
        self.stage = 0


class Publisher(SimClient):
    def __init__(self, world: MqttWorkload, node: int, index: int, spec: PublisherSpec,
                 rng: Any) -> None:
        super().__init__(world, node, f"pub{index}", spec.protocol, spec.persistent,
                         spec.expiry_s, rng)
        self.index = index
        self.spec = spec
        self.next_seq = 0
        self.next_pid = 1
        self.queue: deque[_Out] = deque()
        self.outstanding: dict[int, _Out] = {}  # packet id -> message, in send order

    def run(self) -> Generator[simpy.Event, Any, None]:
        scenario = self.world.scenario
        self.dial()
        interval = max(1, round(1e6 / self.spec.rate_per_s))
        start = round(scenario.warmup_ms * US_PER_MS) + self.rng.randrange(interval)
        yield self.env.timeout(max(0, start - int(self.env.now)))
        stop = self.world.stop_us
        while self.env.now < stop:
            self._new_message()
            yield self.env.timeout(interval)

    def _new_message(self) -> None:
        spec, seq = self.spec, self.next_seq
        self.next_seq += 1
        topic = spec.topic.format(p=self.index, k=seq % spec.topics)
        rec = PubRecord(self.index, seq, spec.qos, topic, int(self.env.now))
        history = self.world.history
        history.pubs[(self.index, seq)] = rec
        if len(self.queue) >= spec.queue_max:
            rec.rejected = True
            history.emit(self.node, "reject", seq=seq)
            return
        header = f"{self.index}:{seq}:".encode()
        self.queue.append(_Out(rec, header.ljust(spec.payload_bytes, b".")))
        self._pump()

    def _pump(self) -> None:
        spec = self.spec
        while self.online and self.queue and (spec.qos == 0
                                              or len(self.outstanding) < spec.inflight_max):
            out = self.queue.popleft()
            if spec.qos:
                out.pid = self._allocate_pid()
                self.outstanding[out.pid] = out
            self._send_publish(out, dup=False)

    def _allocate_pid(self) -> int:
        pid, self.next_pid = next_packet_id(self.outstanding, self.next_pid)
        return pid

    def _send_publish(self, out: _Out, dup: bool) -> None:
        rec = out.rec
        now = int(self.env.now)
        if rec.first_sent_us < 0:
            rec.first_sent_us = now
        rec.sends += 1
        self.send(Publish(rec.topic, out.payload, rec.qos, dup=dup,
                          packet_id=out.pid if rec.qos else None))
        self.world.history.emit(self.node, "pub", seq=rec.seq, qos=rec.qos, pid=out.pid, dup=dup)

    def on_packet(self, packet: Any) -> None:
        kind = type(packet)
        if kind is Connack:
            self._on_connack(packet)
        elif kind is Puback:
            self._on_puback(packet)
        elif kind is Pubrec:
            self._on_pubrec(packet)
        elif kind is Pubcomp:
            self._on_pubcomp(packet)
        else:
            self.world.history.emit(self.node, "unexpected", packet=kind.__name__)

    def _on_connack(self, p: Connack) -> None:
        self.world.history.emit(self.node, "connack", present=p.session_present,
                                code=p.reason_code)
        if p.reason_code:
            return  # refused: the broker closes; we reconnect
        self.online = True
        for out in list(self.outstanding.values()):  # MQTT-4.4.0-1: re-send, same ids
            if out.stage == 1:
                self.send(Pubrel(out.pid))
            else:
                self._send_publish(out, dup=True)
        self._pump()

    def _on_puback(self, p: Puback) -> None:
        out = self.outstanding.get(p.packet_id)
        if out is None or out.rec.qos != 1:
            return
        del self.outstanding[p.packet_id]
        self._owned(out, p.reason_code)
        self._pump()

    def _on_pubrec(self, p: Pubrec) -> None:
        out = self.outstanding.get(p.packet_id)
        if out is None or out.rec.qos != 2:
            return
        if out.stage == 0:
            self._owned(out, p.reason_code)
            if p.reason_code >= 0x80:
                del self.outstanding[p.packet_id]
                self._pump()
                return
            out.stage = 1
        self.send(Pubrel(p.packet_id))

    def _on_pubcomp(self, p: Pubcomp) -> None:
        out = self.outstanding.get(p.packet_id)
        if out is None or out.stage != 1:
            return
        del self.outstanding[p.packet_id]
        out.rec.completed_us = int(self.env.now)
        self.world.history.emit(self.node, "comp", seq=out.rec.seq)
        self._pump()

    def _owned(self, out: _Out, reason: int) -> None:
        rec = out.rec
        if reason >= 0x80:
            rec.refused = True
            self.world.history.emit(self.node, "refused", seq=rec.seq, code=reason)
            return
        rec.acked_us = int(self.env.now)
        self.world.history.emit(self.node, "ack", seq=rec.seq)

    def on_closed(self) -> None:
        self.world.history.emit(self.node, "closed", outstanding=len(self.outstanding),
                                queued=len(self.queue))


class Subscriber(SimClient):
    def __init__(self, world: MqttWorkload, node: int, index: int, spec: SubscriberSpec,
                 rng: Any) -> None:
        super().__init__(world, node, f"sub{index}", spec.protocol, spec.persistent,
                         spec.expiry_s, rng)
        self.index = index
        self.spec = spec
        self.awaiting_rel: dict[int, str] = {}  # QoS 2 id -> message delivered, awaiting PUBREL
        self.sub_pid = 0

    def run(self) -> Generator[simpy.Event, Any, None]:
        stagger = round(self.world.scenario.warmup_ms * US_PER_MS / 2)
        yield self.env.timeout(self.rng.randrange(stagger + 1))
        self.dial()

    def on_packet(self, packet: Any) -> None:
        kind = type(packet)
        if kind is Publish:
            self._on_publish(packet)
        elif kind is Pubrel:
            self.awaiting_rel.pop(packet.packet_id, None)
            self.send(Pubcomp(packet.packet_id))
        elif kind is Connack:
            self._on_connack(packet)
        elif kind is Suback:
            self._on_suback(packet)
        else:
            self.world.history.emit(self.node, "unexpected", packet=kind.__name__)

    def _on_connack(self, p: Connack) -> None:
        history = self.world.history
        history.emit(self.node, "connack", present=p.session_present, code=p.reason_code)
        if p.reason_code:
            return
        self.online = True
        history.sub_event(self.index, self.node, "connack", p.session_present)
        if not p.session_present:  # a new session: our QoS 2 state is void; subscribe again
            self.awaiting_rel.clear()
            self.sub_pid = self.sub_pid % 65535 + 1
            self.send(Subscribe(self.sub_pid, (Subscription(self.spec.filter, self.spec.qos),)))

    def _on_suback(self, p: Suback) -> None:
        ok = all(code < 0x80 for code in p.reason_codes)
        self.world.history.emit(self.node, "suback", ok=ok, codes=list(p.reason_codes))
        if ok:
            self.world.history.sub_event(self.index, self.node, "subscribed")

    def _on_publish(self, p: Publish) -> None:
        qos = p.qos
        if qos == 2:
            pid = p.packet_id
            assert pid is not None
            if pid in self.awaiting_rel:  # already delivered under this id (MQTT-4.3.3)
                self.world.history.emit(self.node, "repeat", pid=pid, dup=p.dup,
                                        held=self.awaiting_rel[pid], payload=p.payload[:16].decode(
                                            "ascii", "replace"))
                self.send(Pubrec(pid))
                return
            self.awaiting_rel[pid] = p.payload[:16].decode("ascii", "replace")
        parts = p.payload.split(b":", 2)
        assert len(parts) == 3, p.payload[:40]
        receipt = Receipt(self.index, int(parts[0]), int(parts[1]), qos, p.dup,
                          int(self.env.now), self.twin_no)
        self.world.history.receipt(self.node, receipt)
        if qos == 1:
            self.send(Puback(p.packet_id))  # type: ignore[arg-type]
        elif qos == 2:
            self.send(Pubrec(p.packet_id))  # type: ignore[arg-type]

    def on_closed(self) -> None:
        self.world.history.sub_event(self.index, self.node, "closed")
        self.world.history.emit(self.node, "closed")


# ================================================================================ the workload


class MqttWorkload(Workload):
    """The MQTT clients of a world: built from the scenario's [[publishers]] and
    [[subscribers]], connected to the clients' node."""

    name = "mqtt"

    def __init__(self, world: World) -> None:
        self.world = world
        self.env = world.env
        self.scenario = world.scenario
        self.history = History(world.trace, self.env)
        self.recovered_records = 0
        self.subscribers: list[Subscriber] = []
        self.publishers: list[Publisher] = []
        seeds = world.seeds
        nodes = list(world.node_ids)
        for spec in self.scenario.subscribers:
            for _ in range(spec.count):
                for twin in range(2 if spec.twin else 1):
                    index = len(self.subscribers)
                    rng = seeds.derive(f"mqtt-sub{index}")
                    sub = Subscriber(self, world.client_id(), index, spec, rng)
                    sub.roam = spec.roam
                    sub.target = spec.node
                    if spec.twin:
                        sub.twin = True
                        if twin:  # the same client id, on the next node
                            first = self.subscribers[-1]
                            sub.name, sub.index, sub.twin_no = first.name, first.index, 1
                            home = nodes.index(spec.node or world.clients_node)
                            sub.target = nodes[(home + 1) % len(nodes)]
                    self.subscribers.append(sub)
        for pspec in self.scenario.publishers:
            for _ in range(pspec.count):
                index = len(self.publishers)
                rng = seeds.derive(f"mqtt-pub{index}")
                self.publishers.append(Publisher(self, world.client_id(), index, pspec, rng))
                self.publishers[-1].target = pspec.node
        self.stop_us = self.scenario.produce_until_us

    # ---- what the clients use

    def dial(self, client: SimClient) -> SimConn:
        return self.world.dial(client, Proto.MQTT, client.target or None)

    def reset(self, conn: SimConn, by_client: bool) -> None:
        self.world.reset(conn, by_client)

    def reconnect_us(self, rng: Any) -> int:
        return max(1, self.scenario.clients.reconnect.sample_us(rng))

    # ---- what the world calls

    def start(self) -> None:
        for sub in self.subscribers:
            self.env.process(sub.run())
        for pub in self.publishers:
            self.env.process(pub.run())

    def _client_nodes(self) -> set[int]:
        home = self.world.clients_node
        return {c.target or home for c in (*self.subscribers, *self.publishers)} | {home}

    def on_up(self, nid: int, core: NodeCore) -> None:
        if nid not in self._client_nodes():
            return
        broker = core.mqtt
        self.recovered_records += broker.recovered_records
        self.history.emit(nid, "broker-up", gen=self.world.nodes[nid].gen,
                          records=broker.recovered_records, sessions=len(broker.sessions))

    def node_of(self, client: SimClient) -> int:
        return client.target or self.world.clients_node

    def on_crash(self, nid: int) -> None:
        if nid in self._client_nodes():
            self.history.crashes.append(int(self.env.now))
            self.history.crashes_by_node.setdefault(nid, []).append(int(self.env.now))

    def droppable(self, targets: str) -> list[tuple[Any, str]]:
        pool: list[SimClient] = []
        if targets in ("all", "subscribers"):
            pool.extend(self.subscribers)
        if targets in ("all", "publishers"):
            pool.extend(self.publishers)
        return [(lambda c=c: self._drop(c), c.name) for c in pool
                if c.conn is not None and c.online]

    def _drop(self, client: SimClient) -> None:
        self.history.emit(client.node, "drop")
        assert client.conn is not None
        self.reset(client.conn, by_client=True)

    def check(self) -> dict[str, Any]:
        report = MqttChecker(self).check()
        report["recovered_records"] = self.recovered_records
        return report
