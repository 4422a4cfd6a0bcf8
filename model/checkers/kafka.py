"""The Kafka checkers: the history Kafka clients observed (model/workloads/kafka.py records
it) and the oracles that judge it at the end of a run.

`KafkaChecker` reads only the client-observed history plus the fault log and, for replicated
partitions, their leader epochs in meta (`History.leaders`, followed by the workload):
- *lost*: every acknowledged record must be consumed by every reader and by every group (any
  member). Not consumed while the consumer read past its offset on that partition is `lost`
  (safety); not consumed and never passed is `unconsumed` (liveness). What an acknowledgement
  promises: on an unreplicated partition, acks=1 and acks=-1 alike, a batch durable on its node
  (a power loss of any node keeps it); on a replicated one, acks=-1 a batch durable on
  min.insync.replicas in-sync replicas (no crash of one node at a time, nor a leader change,
  may lose it), acks=1 a batch durable on its leader alone. So an acks=1 record of a replicated
  partition whose leader epoch moved past the one its producer sent it under (`at_risk`) may be
  lost in the failover (Kafka's contract): if no consumer set received it, it is counted as
  `acks1_lost`, and its acknowledged offset held by another record as `acks1_overwritten`, not
  violations. Every other record is held to the rules above and below.
- *offset conflicts*: one (partition, offset) must never hold two different records, across
  acknowledgements and every consumer's receipts (catches offsets reused after lost data).
- *gaps*: the offsets consumers saw on a partition must be contiguous from 0 to the highest seen.
- *skips*: each consumer, per partition, must receive offsets one after another from the position
  it sought (a `seek`); a receipt past the expected offset, or a reset forward, is a skip.
- *duplicates*: a record at two offsets is a duplicate; for idempotent producers it is a
  violation (Jepsen-style), for the others it is counted.
- *order*: per producer and partition, records (first occurrences) appear in sequence order
  (checked for idempotent producers and for producers with `inflight_max = 1`).
- *commits*: within one generation (a coordinator incarnation, named by the member ids it hands
  out, and the generation id) acknowledged committed offsets per partition never go backwards.
- *owners*: within one generation, at most one member is assigned each partition. (The
  incarnation once came from the time of the event and the coordinator node's crashes: a
  consumer paused across a crash acted on the old incarnation's assignment after it, which
  node3-rf3 seed 380 reported as two owners.)
- *liveness*: after the drain, no producer still holds unacknowledged or unsent records.

The report also counts, for replicated partitions, `leader_changes` (leader epochs after the
first), `replicas_min` (the fewest replicas a partition was created with: the broker caps an
auto-created topic's replication factor by the nodes registered at that moment),
`acks1_at_risk`, `acks1_lost` and `acks1_overwritten`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import simpy

from model.checkers.mqtt import _percentile_ms
from model.sim.trace import Trace

if TYPE_CHECKING:
    from model.workloads.kafka import KafkaWorkload

IDS_MAX = 20  # example ids listed per problem in the result


# ================================================================================ history


@dataclass(slots=True)
class ProdRecord:
    """One record of a producer, as the producer saw it (times in sim µs)."""

    producer: int
    seq: int
    created_us: int
    partition: int = -1  # set when it goes into a batch
    first_sent_us: int = -1
    acked_us: int = -1
    offset: int = -1  # the base offset of its acknowledged batch + its index in the batch
    sends: int = 0
    rejected: bool = False
    acks: int = -1  # the producer's acks setting: -1 (all) or 1 (the leader alone)
    epoch: int = -1
    """The partition's leader epoch as the producer knew it when it sent the acknowledged
    attempt (-1: an unreplicated partition)."""
    node: int = 0  # the node that acknowledged it


@dataclass(frozen=True, slots=True)
class CEvent:
    """A consumer's position event on one partition: `seek` (position set: why = committed,
    earliest or reset) or `recv` (a record delivered at `offset`)."""

    t_us: int
    consumer: str
    partition: int
    kind: str
    offset: int
    producer: int = -1
    seq: int = -1
    why: str = ""


def coordinator_of(member: str) -> str:
    """The coordinator incarnation that handed out `member` ("<client>-<incarnation>-<n>": the
    broker's `member_prefix`, drawn anew by every `NodeCore`). Generations restart at 1 in a
    new incarnation, so ownership is judged per (incarnation, generation): the time of an event
    cannot tell, as a paused consumer may act on an old incarnation's answer after a crash."""
    parts = member.rsplit("-", 2)
    return parts[1] if len(parts) == 3 else member


@dataclass(frozen=True, slots=True)
class Assignment:
    t_us: int
    group: str
    member: str
    generation: int
    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Commit:
    """An OffsetCommit the broker acknowledged (error NONE) for one partition; `t_us` is when
    the acknowledgement arrived, `join_us` when the member's generation began."""

    t_us: int
    group: str
    member: str
    generation: int
    join_us: int
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class LeaderEvent:
    """A replicated partition's placement in meta, as the first node applied it: a new leader
    epoch (a leader change, or the topic's creation) or a new in-sync set (`version`)."""

    t_us: int
    topic: str
    partition: int
    leader: int
    epoch: int
    version: int
    isr: tuple[int, ...]
    replicas: int


class History:
    """What clients observed, plus the fault log; every entry is also a trace line."""

    def __init__(self, trace: Trace, env: simpy.Environment) -> None:
        self.trace = trace
        self.env = env
        self.records: dict[tuple[int, int], ProdRecord] = {}
        self.cevents: list[CEvent] = []
        self.assignments: list[Assignment] = []
        self.commits: list[Commit] = []
        self.crashes: list[int] = []
        """Crashes of the clients' node, whose group coordinator keeps generations in memory."""
        self.leaders: dict[tuple[str, int], list[LeaderEvent]] = {}
        """Per replicated partition of the clients' topics: its placements in meta, in order."""

    def now(self) -> int:
        return int(self.env.now)

    def emit(self, node: int, kind: str, **fields: Any) -> None:
        self.trace.emit(int(self.env.now), node, kind, **fields)


# ================================================================================ checker


class KafkaChecker:
    """The oracles, over `world.history` (client-observed events and the fault log) only."""

    def __init__(self, world: KafkaWorkload) -> None:
        self.world = world
        self.history = world.history
        bridged = world.bridge_readers()
        self.cevents = [e for e in world.history.cevents if e.consumer not in bridged]
        """Readers of topics the bridge writes are judged by the bridge checker instead."""
        self.readers = [r.name for r in world.readers if r.name not in bridged]
        self.groups: dict[str, list[str]] = {}
        for c in world.consumers:
            self.groups.setdefault(c.spec.group, []).append(c.name)
        self.idempotent = {p.index: p.spec.idempotent for p in world.producers}
        self.ordered = {p.index: p.spec.idempotent or p.spec.inflight_max == 1
                        for p in world.producers}
        self.topic_of = {p.index: p.spec.topic for p in world.producers}

    def at_risk(self, r: ProdRecord) -> bool:
        """An acks=1 record of a replicated partition whose leader epoch moved past the one
        its producer sent it under: its leader acknowledged it alone, so a failover may lose it
        (Kafka's acks=1 contract)."""
        if r.acks != 1:
            return False
        log = self.history.leaders.get((self.topic_of.get(r.producer, ""), r.partition))
        return log is not None and bool(log) and log[-1].replicas > 1 and log[-1].epoch > r.epoch

    def check(self) -> dict[str, Any]:
        h = self.history
        recs = [r for r in h.records.values() if not r.rejected]
        acked = [r for r in recs if r.acked_us >= 0]
        risky = [r for r in acked if self.at_risk(r)]
        strict = [r for r in acked if not self.at_risk(r)]
        recvs = [e for e in self.cevents if e.kind == "recv"]
        conflicts, overwritten = self._conflicts(strict, risky, recvs)
        dup_bad, dup_ok = self._duplicates(strict, recvs)
        lost, unconsumed, acks1_lost = self._loss(strict, risky, recvs)
        gaps = self._gaps(recvs)
        skips = self._skips()
        order = self._order(recvs)
        regressions = self._commit_regressions()
        owners = self._owner_conflicts()
        unfinished = sum(p.unfinished() for p in self.world.producers)
        latencies = sorted(r.acked_us - r.first_sent_us for r in acked)
        report: dict[str, Any] = {
            "produced": len(recs), "rejected": len(h.records) - len(recs), "acked": len(acked),
            "received": len(recvs), "commits": len(h.commits),
            "generations": len({(coordinator_of(a.member), a.group, a.generation)
                                for a in h.assignments}),
            "lost": len(lost), "lost_ids": lost[:IDS_MAX], "unconsumed": len(unconsumed),
            "offset_conflicts": len(conflicts), "conflict_ids": conflicts[:IDS_MAX],
            "gaps": len(gaps), "skips": len(skips), "skip_ids": skips[:IDS_MAX],
            "duplicates_idempotent": len(dup_bad), "duplicates_allowed": len(dup_ok),
            "order_violations": len(order), "commit_regressions": len(regressions),
            "owner_conflicts": len(owners), "unfinished_at_end": unfinished,
            "leader_changes": sum(max(0, len({e.epoch for e in log}) - 1)
                                  for log in h.leaders.values()),
            "replicas_min": min((log[0].replicas for log in h.leaders.values() if log),
                                default=0),
            "acks1_at_risk": len(risky), "acks1_lost": len(acks1_lost),
            "acks1_lost_ids": acks1_lost[:IDS_MAX], "acks1_overwritten": len(overwritten),
            "ack_latency_p50_ms": _percentile_ms(latencies, 0.50),
            "ack_latency_p99_ms": _percentile_ms(latencies, 0.99),
        }
        problems = [(lost, "acknowledged record(s) lost"),
                    (conflicts, "offset(s) holding two different records"),
                    (gaps, "gap(s) in the offsets consumers saw"),
                    (skips, "consumer skip(s) over unread offsets"),
                    (dup_bad, "duplicate(s) from idempotent producers"),
                    (order, "per-producer order violation(s)"),
                    (regressions, "committed offset(s) going backwards within a generation"),
                    (owners, "partition(s) with two owners in one generation")]
        report["outcome"], report["detail"] = "ok", ""
        for items, what in problems:
            if items:
                report["outcome"] = "safety"
                report["detail"] = f"{len(items)} {what} (first: {items[0]})"
                return report
        if unfinished or unconsumed:
            report["outcome"] = "liveness"
            report["detail"] = (f"{unfinished} record(s) unacknowledged or unsent, "
                                f"{len(unconsumed)} acknowledged record(s) not yet consumed "
                                f"at the end of the drain (first: {unconsumed[:1]})")
        return report

    def _conflicts(self, acked: list[ProdRecord], risky: list[ProdRecord],
                   recvs: list[CEvent]) -> tuple[list[str], list[str]]:
        """(partition, offset) that more than one record claims (acks and receipts); and the
        at-risk acks=1 records whose offset another record holds (a failover overwrote them:
        counted, not a violation)."""
        holder: dict[tuple[int, int], tuple[int, int]] = {}
        out: list[str] = []
        claims = [(r.partition, r.offset, r.producer, r.seq, "ack") for r in acked]
        claims += [(e.partition, e.offset, e.producer, e.seq, e.consumer) for e in recvs]
        for p, off, prod, seq, who in claims:
            first = holder.setdefault((p, off), (prod, seq))
            if first != (prod, seq):
                out.append(f"p{p}@{off}: prod{first[0]}#{first[1]} vs prod{prod}#{seq} ({who})")
        overwritten = []
        for r in risky:
            held = holder.get((r.partition, r.offset))
            if held is not None and held != (r.producer, r.seq):
                overwritten.append(f"p{r.partition}@{r.offset}: acks=1 prod{r.producer}#{r.seq} "
                                   f"(epoch {r.epoch}) overwritten by prod{held[0]}#{held[1]}")
        return out, overwritten

    def _duplicates(self, acked: list[ProdRecord], recvs: list[CEvent]
                    ) -> tuple[list[str], list[str]]:
        offsets: dict[tuple[int, int], dict[int, None]] = {}
        for r in acked:
            offsets.setdefault((r.producer, r.seq), {})[r.offset] = None
        for e in recvs:
            offsets.setdefault((e.producer, e.seq), {})[e.offset] = None
        bad: list[str] = []
        ok: list[str] = []
        for (prod, seq), offs in offsets.items():
            if len(offs) > 1:
                item = f"prod{prod}#{seq} at offsets {sorted(offs)}"
                (bad if self.idempotent.get(prod, False) else ok).append(item)
        return bad, ok

    def _loss(self, acked: list[ProdRecord], risky: list[ProdRecord], recvs: list[CEvent]
              ) -> tuple[list[str], list[str], list[str]]:
        """Per consumer set (each reader, each group): acked records it never received. An
        at-risk acks=1 record that no consumer set received is `acks1_lost` (allowed); one
        that some set received is judged like any other for the sets that missed it."""
        got: dict[str, dict[tuple[int, int], None]] = {}
        reach: dict[tuple[str, int], int] = {}  # (consumer set, partition) -> highest offset
        member_of = {m: g for g, ms in self.groups.items() for m in ms}
        for e in recvs:
            who = member_of.get(e.consumer, e.consumer)
            got.setdefault(who, {})[(e.producer, e.seq)] = None
            key = (who, e.partition)
            reach[key] = max(reach.get(key, -1), e.offset)
        lost, unconsumed, acks1_lost = [], [], []
        sets = [*self.readers, *self.groups]
        judged = list(acked)
        for r in risky:
            if any((r.producer, r.seq) in got.get(who, {}) for who in sets):
                judged.append(r)
            else:
                acks1_lost.append(f"prod{r.producer}#{r.seq} (p{r.partition}@{r.offset}, "
                                  f"epoch {r.epoch}, node {r.node})")
        for who in sets:
            seen = got.get(who, {})
            for r in judged:
                if (r.producer, r.seq) in seen:
                    continue
                item = f"prod{r.producer}#{r.seq} (p{r.partition}@{r.offset}) -> {who}"
                if reach.get((who, r.partition), -1) > r.offset:
                    lost.append(item)
                else:
                    unconsumed.append(item)
        return lost, unconsumed, acks1_lost

    def _gaps(self, recvs: list[CEvent]) -> list[str]:
        seen: dict[int, dict[int, None]] = {}
        for e in recvs:
            seen.setdefault(e.partition, {})[e.offset] = None
        out = []
        for p in sorted(seen):
            offs = seen[p]
            for off in range(max(offs) + 1):
                if off not in offs:
                    out.append(f"p{p}@{off}")
        return out

    def _skips(self) -> list[str]:
        """Replay each consumer's seeks and receipts per partition: a receipt must be the next
        offset; a reset seek may only move back."""
        expect: dict[tuple[str, int], int] = {}
        out = []
        for e in self.cevents:
            key = (e.consumer, e.partition)
            want = expect.get(key)
            if e.kind == "seek":
                if e.why == "reset" and want is not None and e.offset > want:
                    out.append(f"{e.consumer} p{e.partition} reset {want} -> {e.offset}")
                expect[key] = e.offset
                continue
            if want is None or e.offset != want:
                out.append(f"{e.consumer} p{e.partition} got {e.offset}, expected {want}")
            expect[key] = e.offset + 1
        return out

    def _order(self, recvs: list[CEvent]) -> list[str]:
        first: dict[tuple[int, int], tuple[int, int]] = {}  # (prod, seq) -> (partition, offset)
        for e in recvs:
            first.setdefault((e.producer, e.seq), (e.partition, e.offset))
        runs: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for (prod, seq), (p, off) in first.items():
            if self.ordered.get(prod, True):
                runs.setdefault((prod, p), []).append((off, seq))
        out = []
        for (prod, p), items in runs.items():
            items.sort()
            for (o1, s1), (o2, s2) in zip(items, items[1:], strict=False):
                if s2 < s1:
                    out.append(f"prod{prod} p{p}: seq {s2}@{o2} after seq {s1}@{o1}")
        return out

    def _commit_regressions(self) -> list[str]:
        last: dict[tuple[str, str, int, int], int] = {}
        out = []
        for c in self.history.commits:
            key = (c.group, coordinator_of(c.member), c.generation, c.partition)
            prev = last.get(key, -1)
            if c.offset < prev:
                out.append(f"{c.group} gen {c.generation} p{c.partition}: {prev} -> {c.offset}")
            last[key] = max(prev, c.offset)
        return out

    def _owner_conflicts(self) -> list[str]:
        owner: dict[tuple[str, str, int, int], str] = {}
        out = []
        for a in self.history.assignments:
            for p in a.partitions:
                key = (a.group, coordinator_of(a.member), a.generation, p)
                prev = owner.setdefault(key, a.member)
                if prev != a.member:
                    out.append(f"{a.group} gen {a.generation} p{p}: {prev} and {a.member}")
        return out
