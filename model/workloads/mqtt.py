"""MQTT clients against the simulated cluster: publishers and subscribers on the clients' node,
the history they observe, and the checker that judges it.

The clients speak MQTT through the real codec (`real.mqtt.encode` / `Decoder`) over `SimConn`s
(model/conn.py). Publishers send at a fixed rate with a bounded window and a bounded local queue
(overflow is counted as `rejected`, never silently dropped); on reconnect they re-send
unacknowledged PUBLISHes with DUP and pending PUBRELs under the same packet ids. Subscribers
acknowledge QoS 1 (PUBACK) and QoS 2 (PUBREC, then PUBCOMP on PUBREL; a QoS 2 packet id is
delivered once until its PUBREL), keep that state across reconnects when persistent
(clean_start false), and re-subscribe whenever CONNACK says the session is not present.
Publishing starts at `warmup_ms` and stops at heal; the run then drains until `duration_ms`.

**Checker** (`MqttChecker`): only the client-observed history, plus the crash times of the
clients' node:

- loss: every QoS >= 1 publish acknowledged (PUBACK, or PUBREC for QoS 2: the point the broker
  took ownership) must reach every persistent subscriber (QoS >= 1) whose subscription was in
  place (SUBACK received) before the publish was first sent and still in place when it was
  acknowledged. A subscription ends when a CONNACK says the session is gone: at the first crash
  after the last proof the session existed (SUBACK, or CONNACK with session present), or at the
  last close if no crash came in between. A session that may have expired (v5, offline longer
  than its expiry) is exempt. `lost` must be 0. (A SUBACK is not held for durability, so a crash
  right after one may legitimately lose the subscription; but any publish acknowledged after
  being routed to it was logged after the session record, so its durability implies the
  session's.)
- duplicates: QoS 1 duplicates are counted (allowed); QoS 2 duplicates are split into those with a
  crash between the first send and the repeat (allowed) and those without (a violation).
- order: without crashes, each subscriber sees each publisher's QoS >= 1 messages (first
  receipts) in publish order.
- liveness: after the drain, no publisher still holds unacknowledged or unsent messages.

**Trace kinds** (node: the client's id, 100 and up): `broker-up` (node: the clients' node; gen,
records and sessions recovered), `congested`; per client `dial`, `connack` (present, code),
`closed`, `suback`; publishers `pub` (seq, qos, pid, dup), `ack` (PUBACK / first PUBREC),
`comp`, `refused`, `reject` (local queue full); subscribers `recv` (p, seq, qos, dup) and
`repeat` (a QoS 2 PUBLISH under a packet id still awaiting PUBREL: acknowledged, not delivered;
`held` and `payload` show both messages' first bytes).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import simpy

from model.conn import FIN, SimConn
from model.scenario import PublisherSpec, SubscriberSpec
from model.trace import Trace
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
from real.mqtt.topics import matches
from real.server.node import NodeCore, Proto

if TYPE_CHECKING:
    from model.world import World

US_PER_MS = 1000
CLIENT_PACKET_MAX = 1 << 28
LOST_IDS_MAX = 100  # (subscriber, publisher, seq) of lost messages listed in the result


# ================================================================================ history


@dataclass(slots=True)
class PubRecord:
    """One application message of a publisher, as the publisher saw it (times in sim µs)."""

    publisher: int
    seq: int
    qos: int
    topic: str
    created_us: int
    first_sent_us: int = -1
    acked_us: int = -1  # PUBACK (QoS 1) or the first PUBREC (QoS 2): the broker owns it
    completed_us: int = -1  # PUBCOMP (QoS 2)
    sends: int = 0
    rejected: bool = False  # never queued: the publisher's local queue was full
    refused: bool = False  # PUBACK/PUBREC with a failure reason code


@dataclass(slots=True)
class Receipt:
    subscriber: int
    publisher: int
    seq: int
    qos: int
    dup: bool
    t_us: int


class History:
    """What clients observed, plus the crash times of the clients' node; every entry is also a
    trace line."""

    def __init__(self, trace: Trace, env: simpy.Environment) -> None:
        self.trace = trace
        self.env = env
        self.pubs: dict[tuple[int, int], PubRecord] = {}
        self.receipts: list[Receipt] = []
        self.sub_events: dict[int, list[tuple[int, str, bool]]] = {}  # sub -> (t, kind, present)
        self.crashes: list[int] = []

    def emit(self, node: int, kind: str, **fields: Any) -> None:
        self.trace.emit(int(self.env.now), node, kind, **fields)

    def sub_event(self, sub: int, node: int, kind: str, present: bool = False) -> None:
        self.sub_events.setdefault(sub, []).append((int(self.env.now), kind, present))

    def receipt(self, node: int, r: Receipt) -> None:
        self.receipts.append(r)
        self.emit(node, "recv", p=r.publisher, seq=r.seq, qos=r.qos, dup=r.dup)


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
        self.conn: SimConn | None = None
        self.decoder: Decoder | None = None
        self.online = False  # CONNACK accepted on the current connection
        self.connects = 0

    def dial(self) -> None:
        assert self.conn is None
        self.connects += 1
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
                          int(self.env.now))
        self.world.history.receipt(self.node, receipt)
        if qos == 1:
            self.send(Puback(p.packet_id))  # type: ignore[arg-type]
        elif qos == 2:
            self.send(Pubrec(p.packet_id))  # type: ignore[arg-type]

    def on_closed(self) -> None:
        self.world.history.sub_event(self.index, self.node, "closed")
        self.world.history.emit(self.node, "closed")


# ================================================================================ the workload


class MqttWorkload:
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
        for spec in self.scenario.subscribers:
            for _ in range(spec.count):
                index = len(self.subscribers)
                rng = seeds.derive(f"mqtt-sub{index}")
                self.subscribers.append(Subscriber(self, world.client_id(), index, spec, rng))
        for pspec in self.scenario.publishers:
            for _ in range(pspec.count):
                index = len(self.publishers)
                rng = seeds.derive(f"mqtt-pub{index}")
                self.publishers.append(Publisher(self, world.client_id(), index, pspec, rng))
        self.stop_us = self.scenario.produce_until_us

    # ---- what the clients use

    def dial(self, client: SimClient) -> SimConn:
        return self.world.dial(client, Proto.MQTT)

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

    def on_up(self, nid: int, core: NodeCore) -> None:
        if nid != self.world.clients_node:
            return
        broker = core.mqtt
        self.recovered_records += broker.recovered_records
        self.history.emit(nid, "broker-up", gen=self.world.nodes[nid].gen,
                          records=broker.recovered_records, sessions=len(broker.sessions))

    def on_crash(self, nid: int) -> None:
        if nid == self.world.clients_node:
            self.history.crashes.append(int(self.env.now))

    def filter_input(self, conn: SimConn, data: bytes) -> bytes:
        return data

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

    def pause_consumer(self, rng: Any, length_us: int) -> str | None:
        return None

    def heal(self) -> None:
        """Publishers stop at `produce_until_us` by themselves."""

    def check(self) -> dict[str, Any]:
        report = MqttChecker(self).check()
        report["recovered_records"] = self.recovered_records
        return report


# ================================================================================ checker


class MqttChecker:
    """The oracles, over `world.history` (client-observed events and the fault log) only."""

    def __init__(self, world: MqttWorkload) -> None:
        self.world = world
        self.history = world.history
        self.subs: list[Subscriber] = world.subscribers
        self._match_cache: dict[tuple[str, str], bool] = {}

    def check(self) -> dict[str, Any]:
        h = self.history
        pubs = [r for r in h.pubs.values() if not r.rejected]
        firsts, dup1, dup2_crash, dup2_clean = self._receipts()
        lost, required, exempt = self._loss(firsts)
        order = self._order() if not h.crashes else []
        latencies = sorted(t - h.pubs[(p, seq)].first_sent_us
                           for (_s, p, seq), t in firsts.items())
        unfinished = sum(len(p.outstanding) + len(p.queue) for p in self.world.publishers)
        report: dict[str, Any] = {
            "published": len(pubs),
            "rejected": sum(1 for r in h.pubs.values() if r.rejected),
            "acked": sum(1 for r in pubs if r.acked_us >= 0),
            "refused": sum(1 for r in pubs if r.refused),
            "delivered": len(firsts),
            "receipts": len(h.receipts),
            "duplicates_qos1": dup1,
            "duplicates_qos2_after_crash": dup2_crash,
            "duplicates_qos2_without_crash": dup2_clean,
            "required": required,
            "exempt_expired": exempt,
            "lost": len(lost),
            "lost_ids": [list(key) for key in lost[:LOST_IDS_MAX]],
            "order_violations": len(order),
            "unfinished_at_end": unfinished,
            "latency_p50_ms": _percentile_ms(latencies, 0.50),
            "latency_p99_ms": _percentile_ms(latencies, 0.99),
        }
        report["outcome"], report["detail"] = self._verdict(lost, dup2_clean, order, unfinished)
        return report

    def _verdict(self, lost: list[tuple[int, int, int]], dup2_clean: int, order: list[str],
                 unfinished: int) -> tuple[str, str]:
        if lost:
            s, p, seq = lost[0]
            return "safety", (f"{len(lost)} acknowledged message(s) never reached a "
                                   f"persistent subscriber (first: pub{p} seq {seq} -> sub{s})")
        if dup2_clean:
            return "safety", (f"{dup2_clean} QoS 2 duplicate(s) with no broker crash "
                                   "in between")
        if order:
            return "safety", f"{len(order)} order violation(s) (first: {order[0]})"
        if unfinished:
            return "liveness", (f"{unfinished} message(s) still unacknowledged or unsent at the "
                                "end of the drain period")
        return "ok", ""

    def _receipts(self) -> tuple[dict[tuple[int, int, int], int], int, int, int]:
        """First receipt time per (sub, pub, seq), and the duplicate counts."""
        firsts: dict[tuple[int, int, int], int] = {}
        dup1 = dup2_crash = dup2_clean = 0
        crashes = self.history.crashes
        for r in self.history.receipts:
            key = (r.subscriber, r.publisher, r.seq)
            if key not in firsts:
                firsts[key] = r.t_us
                continue
            if r.qos < 2:
                dup1 += 1
                continue
            sent = self.history.pubs[(r.publisher, r.seq)].first_sent_us
            if any(sent <= c <= r.t_us for c in crashes):
                dup2_crash += 1
            else:
                dup2_clean += 1
        return firsts, dup1, dup2_crash, dup2_clean

    def _windows(self, sub: Subscriber) -> list[tuple[int, int, bool]]:
        """(start, end, exempt) spans in which `sub`'s subscription was in place.

        A span starts at a SUBACK. It ends when a CONNACK says the session is gone: at the first
        broker crash after the last proof that the session existed (a SUBACK or a CONNACK with
        session present), or, with no crash in between, at the last close. `exempt`: the
        session may simply have expired (v5, offline longer than its expiry)."""
        out: list[tuple[int, int, bool]] = []
        start = last_closed = last_alive = -1
        limit_us = sub.spec.expiry_s * 1_000_000 if sub.protocol == MQTT_5 else None
        crashes = self.history.crashes
        for t, kind, present in self.history.sub_events.get(sub.index, []):
            if kind == "closed":
                last_closed = t
            elif kind == "connack" and present:
                last_alive = t
            elif kind == "connack" and start >= 0:
                crash = next((c for c in crashes if last_alive <= c <= t), None)
                end = crash if crash is not None else max(last_closed, start)
                exempt = crash is None and limit_us is not None and t - last_closed > limit_us
                out.append((start, end, exempt))
                start = -1
            elif kind == "subscribed":
                last_alive = t
                if start < 0:
                    start = t
        if start >= 0:
            out.append((start, 1 << 62, False))
        return out

    def _loss(self, firsts: dict[tuple[int, int, int], int]
              ) -> tuple[list[tuple[int, int, int]], int, int]:
        lost: list[tuple[int, int, int]] = []
        required = exempt = 0
        acked = [r for r in self.history.pubs.values() if r.qos >= 1 and r.acked_us >= 0]
        for sub in self.subs:
            if not sub.persistent or sub.spec.qos == 0:
                continue
            windows = self._windows(sub)
            for rec in acked:
                if not self._matches(sub.spec.filter, rec.topic):
                    continue
                window = next((w for w in windows
                               if w[0] < rec.first_sent_us and rec.acked_us < w[1]), None)
                if window is None:
                    continue
                if window[2]:
                    exempt += 1
                    continue
                required += 1
                if (sub.index, rec.publisher, rec.seq) not in firsts:
                    lost.append((sub.index, rec.publisher, rec.seq))
        return lost, required, exempt

    def _order(self) -> list[str]:
        """First receipts per (subscriber, publisher) at QoS >= 1 must come in seq order."""
        last: dict[tuple[int, int], int] = {}
        seen: set[tuple[int, int, int]] = set()
        problems: list[str] = []
        for r in self.history.receipts:
            key = (r.subscriber, r.publisher, r.seq)
            if r.qos == 0 or key in seen:
                continue
            seen.add(key)
            pair = (r.subscriber, r.publisher)
            prev = last.get(pair, -1)
            if r.seq < prev:
                problems.append(f"sub{r.subscriber} got pub{r.publisher} seq {r.seq} after "
                                f"seq {prev}")
            last[pair] = max(prev, r.seq)
        return problems

    def _matches(self, topic_filter: str, topic: str) -> bool:
        key = (topic_filter, topic)
        hit = self._match_cache.get(key)
        if hit is None:
            hit = self._match_cache[key] = matches(topic_filter, topic)
        return hit


def _percentile_ms(sorted_us: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted µs values, in ms (0.0 when empty)."""
    if not sorted_us:
        return 0.0
    index = min(len(sorted_us) - 1, max(0, math.ceil(q * len(sorted_us)) - 1))
    return round(sorted_us[index] / US_PER_MS, 3)


