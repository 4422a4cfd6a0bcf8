"""Replication oracles: judge the replicated shards while the run happens, from what the nodes'
`Replicator`s report (`real.server.replication.ReplicationObserver`), VOPR-style.

The committed prefix of a shard is what some leader's high watermark has covered. The oracle
remembers, per shard offset, the stored record (its bytes: a Kafka batch with its base offset
and leader epoch) at the moment it became committed, and then requires:

- **committed records never change**: a later high watermark covering the offset sees the same
  bytes there (no offset reused, no divergent committed prefixes across leaders);
- **a new leader holds the whole committed prefix** (byte for byte): otherwise an election lost
  acknowledged records (an unclean election, a high watermark advanced before the in-sync set
  had the records, a shrink not recorded through meta);
- **no replica truncates a committed record** (a follower sheds only records that differ from
  the committed ones at their offsets: an uncommitted tail of an older epoch);
- **a leader is in its shard's in-sync set** as meta records it;
- **the high watermark never moves back** while one node leads in one epoch;
- at the end (`final`), **every in-sync replica holds the committed prefix** byte for byte as
  far as its log goes, and the leader holds all of it.

A violation raises `SafetyViolation("replication", ...)` at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.checkers.raft import SafetyViolation

Key = tuple[str, int]


@dataclass(slots=True)
class ReplicationStats:
    committed: int = 0
    elections: int = 0
    truncations: int = 0


class ReplicationChecker:
    def __init__(self) -> None:
        self.committed: dict[Key, list[bytes]] = {}
        """Per shard, the committed records' bytes by shard offset (a prefix from 0)."""
        self.committed_in: dict[Key, list[int]] = {}
        """Per shard, the leader epoch in which each committed record was committed."""
        self.hw: dict[tuple[Key, int, int], int] = {}
        self.stats = ReplicationStats()

    def _fail(self, detail: str) -> None:
        raise SafetyViolation("replication", detail)

    def on_hw(self, node: int, key: Key, epoch: int, old: int, new: int, log: Any) -> None:
        """Node `node`, leading `key` in `epoch`, moved its high watermark from `old` to `new`."""
        seen = self.hw.get((key, node, epoch), 0)
        if new < seen:
            self._fail(f"{key}: high watermark of node {node} in epoch {epoch} went back "
                       f"from {seen} to {new}")
        self.hw[(key, node, epoch)] = new
        done = self.committed.setdefault(key, [])
        epochs = self.committed_in.setdefault(key, [])
        start = min(old, len(done))
        records = log.read_shard(start, 1 << 30) if start < new else []
        for rec in records:
            off = rec.offset
            if off >= new:
                break
            if off < len(done):
                if done[off] != rec.payload:
                    self._fail(f"{key}: committed offset {off} holds other bytes on leader "
                               f"{node} (epoch {epoch}) than when it was committed")
            else:
                assert off == len(done), (key, off, len(done))
                done.append(rec.payload)
                epochs.append(epoch)
                self.stats.committed += 1

    def on_lead(self, node: int, key: Key, epoch: int, isr: tuple[int, ...], log: Any) -> None:
        self.stats.elections += 1
        if node not in isr:
            self._fail(f"{key}: node {node} leads epoch {epoch} from outside the in-sync set "
                       f"{list(isr)}")
        self._holds_prefix(node, key, log, f"new leader (epoch {epoch})", whole=True,
                           before_epoch=epoch)

    def on_truncate(self, node: int, key: Key, cut: int, log: Any) -> None:
        """`node` is about to truncate `log` to `cut`."""
        self.stats.truncations += 1
        done = self.committed.get(key, [])
        if cut >= len(done):
            return
        for rec in log.read_shard(cut, 1 << 30):
            if rec.offset >= len(done):
                break
            if rec.payload == done[rec.offset]:
                self._fail(f"{key}: node {node} truncates to {cut}, dropping the committed "
                           f"record at {rec.offset}")

    def _holds_prefix(self, node: int, key: Key, log: Any, who: str, whole: bool,
                      before_epoch: int | None = None) -> None:
        """`log` holds the committed prefix (`whole`: all of it, else as far as it reaches).
        With `before_epoch` (a leader of that epoch), only the records committed in earlier
        epochs count: a leader whose epoch is already superseded (a node that applied its
        election late, while a newer leader committed more) need not hold what the newer one
        committed; it cannot commit anything itself, since the newer epoch's replicas do not
        follow it (Kafka's leader completeness is the same: epoch e's leader holds what epochs
        before e committed)."""
        done = self.committed.get(key, [])
        if before_epoch is not None:
            epochs = self.committed_in.get(key, [])
            done = done[:next((i for i, e in enumerate(epochs) if e >= before_epoch),
                              len(epochs))]
        end = log.shard_end
        if whole and end < len(done):
            self._fail(f"{key}: {who} {node} ends at {end}, before the committed end "
                       f"{len(done)}: acknowledged records lost")
        upto = min(end, len(done))
        if upto == 0:
            return
        for rec in log.read_shard(log.shard_start, 1 << 30):
            if rec.offset >= upto:
                break
            if rec.payload != done[rec.offset]:
                self._fail(f"{key}: {who} {node} holds other bytes at committed offset "
                           f"{rec.offset}: divergent committed prefixes")

    def final(self, nodes: dict[int, Any]) -> None:
        """Every live in-sync replica agrees with the committed prefix (`nodes`: id -> core)."""
        for nid in sorted(nodes):
            core = nodes[nid]
            sm = core.replica.sm
            for topic in sm.topics():
                for p, shard in enumerate(topic.shards):
                    if not shard.replicated or nid not in shard.isr:
                        continue
                    key = (topic.name, p)
                    if key not in self.committed:
                        continue
                    log = core.kafka.replica_log(*key)
                    self._holds_prefix(nid, key, log, "in-sync replica", whole=False)
