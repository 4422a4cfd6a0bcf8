"""The MQTT checker: the history MQTT clients observed (model/workloads/mqtt.py records it)
and the oracles that judge it at the end of a run.

`MqttChecker` reads only the client-observed history, plus the crash times of the nodes
MQTT clients connect to (the clients' node; in a cluster with `mqtt_cluster`, every node some
client uses: a crash of any of them counts for every client, which is conservative):

- loss: every QoS >= 1 publish acknowledged (PUBACK, or PUBREC for QoS 2: the point the broker
  took ownership) must reach every persistent subscriber (QoS >= 1) whose subscription was in
  place (SUBACK received) before the publish was first sent and still in place when it was
  acknowledged. A subscription ends when a CONNACK says the session is gone: at the first crash
  after the last proof the session existed (SUBACK, or CONNACK with session present), or at the
  last close if no crash came in between. A session that may have expired (v5, offline longer
  than its expiry) is exempt. `lost` must be 0. (A persistent session's SUBACK leaves once
  the session record holding the subscription is durable, so a session a CONNACK says is
  present has every subscription acknowledged to it: node3-mqtt-bughunt seed 70 found a
  SUBACK sent before that, and a session that came back without its subscription.)
- duplicates: QoS 1 duplicates are counted (allowed); QoS 2 duplicates are split into those with a
  crash between the first send and the repeat (allowed) and those without (a violation). Only a
  crash of the publisher's or the subscriber's node counts: in a cluster, the loss of the node
  that leads the message's log partition must not repeat it.
- order: without crashes, each subscriber sees each publisher's QoS >= 1 messages (first
  receipts) in publish order.
- liveness: after the drain, no publisher still holds unacknowledged or unsent messages.
- log amplification (MQTT across a cluster): the committed `__mqtt` log holds no message more
  often than its publisher sent it (a write re-sent after a leader change is stored once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import simpy

from model.sim.trace import Trace
from real.mqtt import MQTT_5, Connack
from real.mqtt.topics import matches

if TYPE_CHECKING:
    from model.workloads.mqtt import MqttWorkload, Subscriber

US_PER_MS = 1000
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
    twin: int = 0
    """Which of two twin subscribers (one client id) received it."""


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
        self.crashes_by_node: dict[int, list[int]] = {}
        self.serving: dict[str, list[tuple[int, int, bool, tuple[int, int]]]] = {}
        """Client id -> (sent µs at the server, arrival number, CONNACK?, (node, connection))
        for the twin subscribers: the connections that served the client id, in server time
        (a CONNACK and the deliveries behind it leave in one step, in arrival order)."""

    def emit(self, node: int, kind: str, **fields: Any) -> None:
        self.trace.emit(int(self.env.now), node, kind, **fields)

    def sub_event(self, sub: int, node: int, kind: str, present: bool = False) -> None:
        self.sub_events.setdefault(sub, []).append((int(self.env.now), kind, present))

    def served(self, client_id: str, sent_us: int, conn: tuple[int, int], packet: Any) -> None:
        connack = isinstance(packet, Connack)
        if connack and packet.reason_code:
            return
        events = self.serving.setdefault(client_id, [])
        events.append((sent_us, len(events), connack, conn))

    def receipt(self, node: int, r: Receipt) -> None:
        self.receipts.append(r)
        self.emit(node, "recv", p=r.publisher, seq=r.seq, qos=r.qos, dup=r.dup)


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
        twice = self._served_twice()
        gone = self._sessions_gone()
        amplified = self._amplified()
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
            "served_twice": len(twice),
            "sessions_gone_without_crash": len(gone),
            "log_amplified": len(amplified),
            "unfinished_at_end": unfinished,
            "latency_p50_ms": _percentile_ms(latencies, 0.50),
            "latency_p99_ms": _percentile_ms(latencies, 0.99),
        }
        report["outcome"], report["detail"] = self._verdict(lost, dup2_clean, order, unfinished)
        if report["outcome"] in ("ok", "liveness") and (twice or gone):
            report["outcome"], report["detail"] = "safety", (twice or gone)[0]
        if amplified and report["outcome"] in ("ok", "liveness"):
            (p, seq), (copies, sends) = next(iter(sorted(amplified.items())))
            report["outcome"], report["detail"] = "safety", (
                f"{len(amplified)} message(s) stored in the cluster log more often than their "
                f"publisher sent them (first: pub{p} seq {seq}: {copies} copies, {sends} sends)")
        return report

    def _amplified(self) -> dict[tuple[int, int], tuple[int, int]]:
        """MQTT across a cluster: (publisher, seq) -> (copies, sends) for every message the
        committed `__mqtt` log holds more often than its publisher sent it (a re-sent write
        stored twice). Read from each partition's leader, or any live replica, after the drain;
        empty without a cluster log."""
        from real.kafka.records import decode_batch
        from real.mqtt.cluster import TOPIC

        world = self.world.world
        cores = [world.nodes[n].core for n in sorted(world.nodes)]
        live = [c for c in cores if c is not None and c.cluster_log is not None]
        if not live:
            return {}
        copies: dict[tuple[int, int], int] = {}
        partitions = live[0].replica.sm.topic(TOPIC)
        for partition in range(len(partitions.shards) if partitions is not None else 0):
            best = max(live, key=lambda c: c.replicator.committed_end(TOPIC, partition) or -1)
            committed = best.replicator.committed_end(TOPIC, partition)
            if committed is None:
                continue
            log = best.kafka.replica_log(TOPIC, partition)
            at = log.shard_start
            while at < committed:
                records = log.read_shard(at, 1 << 20)
                for rec in records:
                    if rec.offset >= committed:
                        break
                    for krec in decode_batch(rec.payload):
                        head = (krec.value or b"").split(b":", 2)
                        if len(head) == 3 and head[0].isdigit() and head[1].isdigit():
                            key = (int(head[0]), int(head[1]))
                            copies[key] = copies.get(key, 0) + 1
                    at = rec.offset + 1
                if not records:
                    break
        out = {}
        for key, n in copies.items():
            pub = self.history.pubs.get(key)
            if pub is not None and n > pub.sends:
                out[key] = (n, pub.sends)
        return out

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

    def _served_twice(self) -> list[str]:
        """A client id served by two connections at once: in server time, a PUBLISH sent on a
        connection after another connection of the client id got its CONNACK (the twin
        subscribers: two clients with one client id, on two nodes)."""
        problems: list[str] = []
        for client_id, events in sorted(self.history.serving.items()):
            current = None
            for sent_us, _n, connack, conn in sorted(events):
                if connack:
                    current = conn
                elif current is not None and conn != current:
                    problems.append(f"{client_id}: a PUBLISH sent at {sent_us / 1000:.3f} ms "
                                    f"on connection {conn} after connection {current} took "
                                    "the client id over")
        return problems

    def _sessions_gone(self) -> list[str]:
        """A persistent session that a CONNACK says is gone although no node crashed since it
        was last known to exist and it cannot have expired (the cluster moves sessions with
        their client ids: a move must not lose one)."""
        problems: list[str] = []
        crashes = self.history.crashes
        seen: set[int] = set()
        for sub in self.subs:
            if not sub.persistent or sub.index in seen:
                continue
            seen.add(sub.index)
            limit_us = sub.spec.expiry_s * 1_000_000 if sub.protocol == MQTT_5 else None
            last_alive = last_closed = -1
            for t, kind, present in self.history.sub_events.get(sub.index, []):
                if kind == "closed":
                    last_closed = t
                elif kind in ("subscribed",) or (kind == "connack" and present):
                    last_alive = t
                elif kind == "connack" and last_alive >= 0:
                    crashed = any(last_alive <= c <= t for c in crashes)
                    expired = limit_us is not None and t - last_closed > limit_us
                    if not crashed and not expired:
                        problems.append(f"sub{sub.index}: session gone at {t / 1000:.3f} ms "
                                        f"(alive at {last_alive / 1000:.3f} ms, no crash)")
                    last_alive = -1
        return problems

    def _receipts(self) -> tuple[dict[tuple[int, int, int], int], int, int, int]:
        """First receipt time per (sub, pub, seq), and the duplicate counts."""
        firsts: dict[tuple[int, int, int], int] = {}
        dup1 = dup2_crash = dup2_clean = 0
        crashes = self.history.crashes
        twins = {s.index for s in self.subs if s.twin}
        for r in self.history.receipts:
            if r.subscriber in twins:
                continue  # (judged by `_served_twice` only)
            key = (r.subscriber, r.publisher, r.seq)
            if key not in firsts:
                firsts[key] = r.t_us
                continue
            if r.qos < 2:
                dup1 += 1
                continue
            sent = self.history.pubs[(r.publisher, r.seq)].first_sent_us
            if any(sent <= c <= r.t_us for c in self._crashes_of(r.subscriber, r.publisher,
                                                                 crashes)):
                dup2_crash += 1
            else:
                dup2_clean += 1
        return firsts, dup1, dup2_crash, dup2_clean

    def _crashes_of(self, sub: int, pub: int, every: list[int]) -> list[int]:
        """The crashes that may repeat a QoS 2 delivery from `pub` to `sub`: of the nodes they
        are connected to (where their packet-id state lives). With all clients on one node,
        that node's crashes (`every`)."""
        by_node = self.history.crashes_by_node
        if any(s.roam or s.twin for s in self.subs if s.index == sub):
            return every  # its session moves between nodes
        nodes = {self.world.node_of(self.subs[sub]), self.world.node_of(self.world.publishers[pub])}
        if len(by_node) <= 1 and len(nodes) == 1:
            return every
        return sorted(c for n in nodes for c in by_node.get(n, []))

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
            if not sub.persistent or sub.spec.qos == 0 or sub.twin:
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
        twins = {s.index for s in self.subs if s.twin}
        for r in self.history.receipts:
            if r.subscriber in twins:
                continue
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


