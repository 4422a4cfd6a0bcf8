"""`Replicator`: shard replication for one node (Kafka's follower-pull design), sans-I/O.

Every replicated shard (a Kafka partition whose `ShardInfo.replicas` is set in meta) has one
leader and followers, all named by meta; this object plays whichever role meta gives this node,
for every such shard, and changes role when meta changes (`refresh()` after each meta apply).

- **Followers pull.** A follower sends `ShardFetch(offset = its log end, last_epoch, acked)` to
  the leader; the leader answers with the records from `offset`, or parks the fetch for up to
  `fetch_wait_ms` when it has nothing new (a long poll: a local append answers it at once). A
  follower's `acked` is its own `ack_end` (durable, or written under fsync never): a follower
  whose group commit moved sends a fresh fetch at once, so the leader learns it.
- **High watermark** (shard offsets) = max(old, min `acked` over the leader and the in-sync set
  as meta records it plus any expansion the leader has proposed, KIP-497's "maximal ISR"). Only
  acks=all produce waits for it; consumers read up to it; it never moves back while one leader
  holds one epoch.
- **Leader epochs and truncation.** Batches carry the epoch they were written in. A fetch
  carries the epoch of the follower's last batch; if the leader's log ends that epoch earlier (or
  never had it), the reply names the diverging epoch and its end, and the follower truncates to
  it and fetches again (KIP-595). A new leader keeps its whole log; a follower of a new epoch
  sheds whatever it holds past what the new leader has.
- **In-sync set.** The leader shrinks a follower that has not caught up to its log end for
  `replica_lag_ms`, and adds back one that has reached the high watermark, each through meta
  (`shard.set_isr`, fenced on epoch and version); one change in flight per shard.
- Role changes: a node that stops leading fails what waited on it (the broker answers
  NOT_LEADER_OR_FOLLOWER, `on_lost`), answers parked fetches, and follows the new leader.

Time comes from `clock()` (monotonic ms), messages leave through `send(msg)`, meta changes through
`propose(data, done)`. The same object runs in `twinmq serve` and in the simulator.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from real.kafka.log import CorruptPartition, PartitionLog
from real.meta import MetaResult, MetaStateMachine, encode_command
from real.meta.machine import ShardInfo
from real.server.peermsg import FetchError, PeerMessage, ShardFetch, ShardFetchReply
from real.storage.errors import StorageError

ISR_RETRY_MS = 100
"""Pause after a failed in-sync set change before the next attempt."""
SEQ_CLOCK_SHIFT = 20
"""A follower's fetch numbers start at its clock (ms) shifted by this: 2^20 fetches per ms of
headroom, 2^44 ms of clock in a u64."""
REPLICATION_BUGS = ("no-epoch-truncate", "hw-before-isr", "isr-not-recorded", "unclean-election",
                    "acks-downgrade")
"""Test-only deviations, each a guarded line or two (grep the bug's name), for the simulator's
bug hunt:
- `no-epoch-truncate`: a follower never names its last epoch, so a divergent tail is never
  truncated (Kafka before KIP-101);
- `hw-before-isr`: the leader's high watermark ignores its followers (acks=all acknowledged
  once the leader alone has the records);
- `isr-not-recorded`: the leader drops a lagging follower from the set its high watermark
  counts without recording the shrink in meta (the controller may still elect that follower);
- `unclean-election` (real/server/controller.py): a dead leader is replaced by any live
  replica, in sync or not;
- `acks-downgrade` (real/kafka/broker.py): acks=all is answered as acks=1 (RobustMQ's
  forwarded write)."""


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    fetch_wait_ms: int = 500
    """How long a leader parks a fetch that finds nothing new (replica.fetch.wait.max.ms)."""
    fetch_timeout_ms: int = 1_000
    """A follower re-sends a fetch unanswered for this long (a lost message, a dead leader)."""
    retry_ms: int = 50
    """Pause before a follower fetches again after an error reply."""
    replica_lag_ms: int = 10_000
    """A follower not caught up for this long leaves the in-sync set (replica.lag.time.max.ms)."""
    fetch_bytes_max: int = 1 << 20
    tail_bytes: int = 0
    """Per replica, the recent appends kept in memory to answer fetches without reading the
    engine back (`PartitionLog.keep_tail`); 0: off. A real node sets it from
    `cluster.replica_tail_bytes` (4 MiB); the simulator's scenarios leave it off unless they say
    `[cluster] replica_tail_bytes` (the simulated disk charges reads, so it changes traces)."""
    bugs: tuple[str, ...] = ()
    """Planted replication bugs (REPLICATION_BUGS), for the simulator's bug hunt only."""

    def __post_init__(self) -> None:
        for bug in self.bugs:
            if bug not in REPLICATION_BUGS:
                raise ValueError(f"unknown replication bug {bug!r} (expected one of "
                                 f"{', '.join(REPLICATION_BUGS)})")
        for name in ("fetch_wait_ms", "fetch_timeout_ms", "retry_ms", "replica_lag_ms",
                     "fetch_bytes_max"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"replication {name} must be an int >= 1, got {value!r}")
        if type(self.tail_bytes) is not int or self.tail_bytes < 0:
            raise ValueError(f"replication tail_bytes must be an int >= 0, got "
                             f"{self.tail_bytes!r}")
        if self.fetch_timeout_ms <= self.fetch_wait_ms:
            raise ValueError(f"replication fetch_timeout_ms ({self.fetch_timeout_ms}) must be "
                             f"longer than fetch_wait_ms ({self.fetch_wait_ms})")


class ReplicationObserver(Protocol):
    """What a checker sees (the simulator's model/checkers/replication.py); None in a node."""

    def on_hw(self, node: int, key: tuple[str, int], epoch: int, old: int, new: int,
              log: PartitionLog) -> None: ...

    def on_lead(self, node: int, key: tuple[str, int], epoch: int, isr: tuple[int, ...],
                log: PartitionLog) -> None: ...

    def on_truncate(self, node: int, key: tuple[str, int], cut: int,
                    log: PartitionLog) -> None: ...


class LogHost(Protocol):
    """What the replicator needs from the Kafka broker (`real.kafka.broker.KafkaBroker`)."""

    def machine(self) -> MetaStateMachine: ...

    def replica_log(self, topic: str, partition: int) -> PartitionLog: ...

    def ack_end(self, topic: str, partition: int) -> int: ...

    def drop_replica_log(self, topic: str, partition: int) -> None: ...


Key = tuple[str, int]

ACK_GRACE_MS = 50
"""A follower whose last reply was (mostly) full does not supersede the fetch in flight when its
durable end moves: the leader is answering it with more records, and superseding it would make
the leader read and send them twice. If that fetch is still unanswered after this long (the
leader had nothing more after all and parked it), the follower fetches again to report."""


@dataclass(slots=True)
class _Follower:
    """The leader's view of one follower."""

    offset: int = -1
    acked: int = -1
    caught_up_ms: int = 0
    fetched: bool = False
    """Has fetched in this epoch (a precondition to join the in-sync set)."""
    parked: ShardFetch | None = None
    parked_until: int = 0
    hw_sent: int = -1
    seq_seen: int = -1
    """The newest fetch request number seen from this follower in this epoch."""
    end_at_reply: int = -1
    reply_ms: int = 0


@dataclass(slots=True)
class _Lead:
    epoch: int
    version: int
    isr: tuple[int, ...]
    hw: int
    followers: dict[int, _Follower] = field(default_factory=dict)
    pending: bool = False
    retry_at: int = 0
    """After a failed in-sync set change, not before this time (meta may have no leader)."""
    adding: int = 0
    """A follower proposed for the in-sync set, counted by the high watermark meanwhile."""


@dataclass(slots=True)
class _Follow:
    leader: int
    epoch: int
    seq: int = 0
    inflight: int = 0
    """The seq of the fetch awaiting its reply (0: none)."""
    sent_ms: int = 0
    next_ms: int = 0
    reported: int = -1
    more: bool = False
    """The last reply filled most of a fetch: the leader has more, so it answers the fetch in
    flight at once and the next fetch reports a new durable end (see `durable_progress`)."""
    hw: int = 0
    """The leader's high watermark as last heard (a new leader starts from it)."""


@dataclass(slots=True)
class ReplicationStats:
    fetches_sent: int = 0
    fetches_served: int = 0
    fetches_stale: int = 0
    """Fetches dropped unread: an older request of a follower that arrived after a newer one."""
    reads_cached: int = 0
    """Fetches answered from the leader's tail cache (`PartitionLog.keep_tail`)..."""
    reads_engine: int = 0
    """...and from its engine (a follower further behind than the cache reaches)."""
    records_replicated: int = 0
    replies_stale: int = 0
    """Fetch replies dropped unread: answers to a fetch the follower had since superseded (or
    to a role it no longer has)."""
    records_stale: int = 0
    """The records those replies carried (the leader read and sent them for nothing)."""
    truncations: int = 0
    truncated_records: int = 0
    isr_shrinks: int = 0
    isr_expands: int = 0
    errors: int = 0


class Replicator:
    def __init__(self, node_id: int, config: ReplicationConfig, host: LogHost,
                 clock: Callable[[], int], send: Callable[[PeerMessage], None],
                 propose: Callable[[bytes, Callable[[MetaResult | Exception], None]], None],
                 log: Callable[[str], None] = lambda _line: None) -> None:
        self.node_id = node_id
        self.config = config
        self.host = host
        self.clock = clock
        self.send = send
        self.propose = propose
        self.log = log
        self.stats = ReplicationStats()
        self.leads: dict[Key, _Lead] = {}
        self.follows: dict[Key, _Follow] = {}
        self.on_commit: Callable[[], None] = lambda: None
        """Called when a high watermark moved (the broker releases acks=all produce)."""
        self.on_lost: Callable[[str, int], None] = lambda _t, _p: None
        """Called when this node stops leading a shard (the broker fails what waited on it)."""
        self._applied = -1
        self.bugs = frozenset(config.bugs)
        self.observer: ReplicationObserver | None = None
        self.fenced = False
        """This node has lost touch with meta for the session timeout (NodeCore decides): it
        keeps its leader state but serves none of it until meta reaches it again."""

    # ---- queries (the broker) ----------------------------------------------------------------

    def leads_shard(self, topic: str, partition: int) -> bool:
        return not self.fenced and (topic, partition) in self.leads

    def set_fenced(self, fenced: bool) -> None:
        if fenced == self.fenced:
            return
        self.fenced = fenced
        if fenced:
            self.log(f"replication: node {self.node_id} lost touch with meta: fenced, leading "
                     f"none of {len(self.leads)} shards until it hears from meta again")
            for key in sorted(self.leads):
                self._unpark_all(key, self.leads[key], FetchError.NOT_LEADER)
                self.on_lost(*key)
        else:
            self.log(f"replication: node {self.node_id} hears meta again: unfenced")

    def high_watermark(self, topic: str, partition: int) -> int:
        """The shard offset below which records are committed (on the leader)."""
        lead = self.leads.get((topic, partition))
        return lead.hw if lead is not None else 0

    def committed_end(self, topic: str, partition: int) -> int | None:
        """The committed prefix of a shard this node holds a replica of, as far as it knows: the
        high watermark it keeps as leader or last heard as follower (fenced or not: committed
        records stay committed); None if it holds no replica in any role."""
        key = (topic, partition)
        lead = self.leads.get(key)
        if lead is not None:
            return lead.hw
        f = self.follows.get(key)
        return f.hw if f is not None else None

    def epoch(self, topic: str, partition: int) -> int | None:
        """The leader epoch this node leads `topic`/`partition` in (None: it does not lead)."""
        lead = self.leads.get((topic, partition))
        return lead.epoch if lead is not None else None

    def commit_state(self, topic: str, partition: int) -> tuple[int, int] | None:
        """(high watermark, in-sync set size) of a shard this node leads and serves; None if it
        does not (one lookup for the broker's held acks=all replies)."""
        lead = None if self.fenced else self.leads.get((topic, partition))
        return None if lead is None else (lead.hw, len(lead.isr))

    def isr_size(self, topic: str, partition: int) -> int:
        lead = self.leads.get((topic, partition))
        return len(lead.isr) if lead is not None else 0

    # ---- meta changes ------------------------------------------------------------------------

    def refresh(self) -> None:
        """Meta applied something: take up the role meta gives this node for each shard."""
        sm = self.host.machine()
        if sm.applied_index == self._applied:
            return
        self._applied = sm.applied_index
        wanted: dict[Key, ShardInfo] = {}
        for topic in sm.topics():
            for i, s in enumerate(topic.shards):
                if s.replicated and self.node_id in s.replicas:
                    wanted[(topic.name, i)] = s
        for key in sorted(set(self.leads) | set(self.follows)):
            if key not in wanted:
                self._stop(key)
                if sm.topic(key[0]) is None:
                    continue
                self.host.drop_replica_log(*key)
        for key in sorted(wanted):
            self._take_role(key, wanted[key])

    def _stop(self, key: Key) -> None:
        lead = self.leads.pop(key, None)
        if lead is not None:
            self._unpark_all(key, lead, FetchError.NOT_LEADER)
            self.on_lost(*key)
        self.follows.pop(key, None)

    def _take_role(self, key: Key, info: ShardInfo) -> None:
        me = self.node_id
        lead = self.leads.get(key)
        follow = self.follows.get(key)
        if info.leader == me:
            if lead is not None and lead.epoch == info.epoch:
                now = self.clock()
                for n in info.isr:
                    fl = lead.followers.get(n)
                    if n not in lead.isr and fl is not None:
                        # back in sync: a full lag window from now, or a follower that caught
                        # up with the high watermark but not the log end (a leader taking
                        # writes faster than it replicates) drops out again at once (flapping)
                        fl.caught_up_ms = max(fl.caught_up_ms, now)
                lead.isr, lead.version = info.isr, info.version
                if lead.adding and lead.adding in info.isr:
                    lead.adding = 0
                self._advance(key, lead)
                return
            known = max(lead.hw if lead is not None else 0,
                        follow.hw if follow is not None else 0)
            self._stop(key)
            log = self._open(key)
            log.leader_epoch = info.epoch
            hw = min(known, log.shard_end)
            lead = _Lead(info.epoch, info.version, info.isr, hw)
            now = self.clock()
            for n in info.replicas:
                if n != me:
                    lead.followers[n] = _Follower(caught_up_ms=now)
            self.leads[key] = lead
            if self.observer is not None:
                self.observer.on_lead(me, key, info.epoch, info.isr, log)
            self.log(f"replication: node {me} leads {key[0]}/{key[1]} in epoch {info.epoch} "
                     f"(isr {list(info.isr)}, log end {log.shard_end}, hw {hw})")
            self._advance(key, lead)
            return
        if lead is not None:
            self._stop(key)
        if info.leader == 0:
            self.follows.pop(key, None)
            return
        if follow is not None and (follow.leader, follow.epoch) == (info.leader, info.epoch):
            return
        self._open(key)  # open (recover) it now: fetching starts from its end
        # request numbers start from the clock, so a restarted follower's exceed its earlier
        # life's and the leader can tell an older fetch from a newer one (`_on_fetch`)
        seq = max(follow.seq if follow is not None else 0, self.clock() << SEQ_CLOCK_SHIFT)
        self.follows[key] = _Follow(info.leader, info.epoch, seq=seq,
                                    hw=follow.hw if follow is not None else 0)
        self._fetch(key, self.follows[key])

    def _open(self, key: Key) -> PartitionLog:
        log = self.host.replica_log(*key)
        if log.tail_bytes_max != self.config.tail_bytes:
            log.keep_tail(self.config.tail_bytes)
        return log

    # ---- follower ----------------------------------------------------------------------------

    def _fetch(self, key: Key, f: _Follow) -> None:
        log = self.host.replica_log(*key)
        f.seq += 1
        f.inflight = f.seq
        now = self.clock()
        f.sent_ms = now
        acked = self.host.ack_end(*key)
        f.reported = acked
        self.stats.fetches_sent += 1
        # planted bug "no-epoch-truncate": the follower never names its last epoch, so the
        # leader cannot tell it diverges (Kafka before KIP-101 truncated to its high watermark)
        last_epoch = -1 if "no-epoch-truncate" in self.bugs else log.last_epoch()
        self.send(ShardFetch(self.node_id, f.leader, key[0], key[1], f.epoch, log.shard_end,
                             last_epoch, acked, f.seq, self.config.fetch_bytes_max))

    def _on_reply(self, msg: ShardFetchReply) -> None:
        key = (msg.topic, msg.partition)
        f = self.follows.get(key)
        if f is None or msg.seq != f.inflight or msg.src != f.leader or msg.epoch != f.epoch:
            self.stats.replies_stale += 1
            self.stats.records_stale += len(msg.records)
            return  # stale: an older request, an older role
        f.inflight = 0
        if msg.error != FetchError.NONE:
            f.next_ms = self.clock() + self.config.retry_ms
            return
        log = self.host.replica_log(*key)
        try:
            if msg.diverging_end >= 0:
                _e, own_end = log.epoch_end(msg.diverging_epoch)
                cut = min(msg.diverging_end, own_end, log.shard_end)
                if cut < log.shard_end:
                    self.stats.truncations += 1
                    self.stats.truncated_records += log.shard_end - cut
                    self.log(f"replication: {key[0]}/{key[1]} truncated from {log.shard_end} to "
                             f"{cut} (epoch {msg.diverging_epoch} ends there on leader "
                             f"{msg.src})")
                    if self.observer is not None:
                        self.observer.on_truncate(self.node_id, key, cut, log)
                    log.truncate_shard(cut)
            elif msg.records:
                log.append_replica(msg.records)
                self.stats.records_replicated += len(msg.records)
            f.more = 2 * sum(rec.size() for rec in msg.records) > self.config.fetch_bytes_max
            f.hw = max(f.hw, min(msg.high_watermark, log.shard_end))
        except (CorruptPartition, StorageError, ValueError) as exc:
            self.stats.errors += 1
            self.log(f"replication: {key[0]}/{key[1]} cannot apply the reply from node "
                     f"{msg.src}: {exc}")
            f.next_ms = self.clock() + self.config.retry_ms * 10
            return
        self._fetch(key, f)

    # ---- leader ------------------------------------------------------------------------------

    def _on_fetch(self, msg: ShardFetch) -> None:
        key = (msg.topic, msg.partition)
        lead = self.leads.get(key)
        if (lead is None or self.fenced or msg.epoch > lead.epoch
                or msg.src not in lead.followers):
            self._reply(msg, FetchError.NOT_LEADER)
            return
        if msg.epoch < lead.epoch:
            self._reply(msg, FetchError.FENCED)
            return
        log = self.host.replica_log(*key)
        fl = lead.followers[msg.src]
        if msg.seq < fl.seq_seen:
            # overtaken by a newer fetch of the same follower (the simulated network reorders
            # messages; a real one may across a reconnect): taking it would supersede the
            # newer one parked here, whose reply the follower waits for, with one whose reply
            # it ignores, and stall the follower for a fetch timeout
            self.stats.fetches_stale += 1
            return
        fl.seq_seen = msg.seq
        if fl.parked is not None:
            fl.parked = None  # superseded by this one
        if msg.offset > 0 and msg.last_epoch >= 0:
            e, end = log.epoch_end(msg.last_epoch)
            if e != msg.last_epoch or end < msg.offset:
                self._reply(msg, FetchError.NONE, lead, diverging=(e, end))
                return
        start = log.shard_start
        if msg.offset < start or msg.offset > log.shard_end:
            self._reply(msg, FetchError.OUT_OF_RANGE, lead)
            return
        now = self.clock()
        fl.fetched = True
        fl.offset = msg.offset
        fl.acked = min(msg.acked, msg.offset)
        if msg.offset >= log.shard_end:
            fl.caught_up_ms = now
        elif msg.offset >= fl.end_at_reply:
            fl.caught_up_ms = max(fl.caught_up_ms, fl.reply_ms)
        self.stats.fetches_served += 1
        self._advance(key, lead)
        if msg.offset < log.shard_end or fl.hw_sent < lead.hw:
            self._serve(key, lead, fl, msg)
        else:
            fl.parked = msg
            fl.parked_until = now + self.config.fetch_wait_ms
        self._maybe_expand(key, lead, msg.src, fl)

    def _serve(self, key: Key, lead: _Lead, fl: _Follower, msg: ShardFetch) -> None:
        log = self.host.replica_log(*key)
        if msg.offset < log.shard_end:
            tail = log.tail_start
            if tail is not None and msg.offset >= tail:
                self.stats.reads_cached += 1
            else:
                self.stats.reads_engine += 1
        try:
            records = tuple(log.read_shard(msg.offset, msg.bytes_max)) \
                if msg.offset < log.shard_end else ()
        except StorageError as exc:
            self.stats.errors += 1
            self.log(f"replication: cannot read {key[0]}/{key[1]} for node {msg.src}: {exc}")
            self._reply(msg, FetchError.STORAGE, lead)
            return
        fl.parked = None
        fl.end_at_reply = log.shard_end
        fl.reply_ms = self.clock()
        self._reply(msg, FetchError.NONE, lead, records=records)

    def _reply(self, msg: ShardFetch, error: int, lead: _Lead | None = None, *,
               records: tuple[Any, ...] = (), diverging: tuple[int, int] = (-1, -1)) -> None:
        hw = lead.hw if lead is not None else 0
        start = 0
        if lead is not None:
            fl = lead.followers.get(msg.src)
            if fl is not None:
                fl.hw_sent = hw
            start = self.host.replica_log(msg.topic, msg.partition).shard_start
        self.send(ShardFetchReply(self.node_id, msg.src, msg.topic, msg.partition,
                                  msg.epoch if lead is None else lead.epoch, msg.seq, error,
                                  hw, start, diverging[0], diverging[1], records))

    def _unpark_all(self, key: Key, lead: _Lead, error: int) -> None:
        for fl in lead.followers.values():
            if fl.parked is not None:
                parked, fl.parked = fl.parked, None
                self._reply(parked, error)

    def appended(self, topic: str, partition: int) -> None:
        """The leader stored new records: answer the parked fetches at once."""
        key = (topic, partition)
        lead = self.leads.get(key)
        if lead is None:
            return
        for fl in lead.followers.values():
            if fl.parked is not None:
                self._serve(key, lead, fl, fl.parked)
        self._advance(key, lead)

    def _advance(self, key: Key, lead: _Lead) -> None:
        """Move the high watermark to the least acknowledged end over the (maximal) ISR."""
        low = self.host.ack_end(*key)
        members = lead.isr if not lead.adding else (*lead.isr, lead.adding)
        if "hw-before-isr" not in self.bugs:
            for n in members:
                if n != self.node_id:
                    fl = lead.followers.get(n)
                    low = min(low, fl.acked if fl is not None and fl.fetched else 0)
        if low > lead.hw:
            if self.observer is not None:
                self.observer.on_hw(self.node_id, key, lead.epoch, lead.hw, low,
                                    self.host.replica_log(*key))
            lead.hw = low
            for fl in lead.followers.values():
                if fl.parked is not None and fl.hw_sent < lead.hw:
                    self._serve(key, lead, fl, fl.parked)
            self.on_commit()

    def _maybe_expand(self, key: Key, lead: _Lead, nid: int, fl: _Follower) -> None:
        if (lead.pending or nid in lead.isr or not fl.fetched or fl.offset < lead.hw
                or self.clock() < lead.retry_at):
            return
        if fl.acked < lead.hw:
            return
        self._change_isr(key, lead, (*lead.isr, nid), adding=nid)

    def _shrink(self, key: Key, lead: _Lead, isr: tuple[int, ...]) -> None:
        if "isr-not-recorded" in self.bugs:
            lead.isr = isr  # planted: the high watermark stops counting them, meta never knows
            self._advance(key, lead)
            return
        self._change_isr(key, lead, isr)

    def _change_isr(self, key: Key, lead: _Lead, isr: tuple[int, ...], adding: int = 0) -> None:
        lead.pending = True
        lead.adding = adding
        epoch = lead.epoch
        data = encode_command("shard.set_isr", topic=key[0], shard=key[1], leader=self.node_id,
                              epoch=lead.epoch, version=lead.version, isr=sorted(isr))
        if adding:
            self.stats.isr_expands += 1
        else:
            self.stats.isr_shrinks += 1
        self.log(f"replication: {key[0]}/{key[1]} isr {list(lead.isr)} -> {sorted(isr)} "
                 f"proposed")

        def done(result: MetaResult | Exception) -> None:
            now = self.leads.get(key)
            if now is None or now.epoch != epoch:
                return
            now.pending = False
            if isinstance(result, Exception) or not result.ok:
                now.adding = 0
                now.retry_at = self.clock() + ISR_RETRY_MS
                self.log(f"replication: {key[0]}/{key[1]} isr change failed: "
                         f"{result if isinstance(result, Exception) else result.error}")

        try:
            self.propose(data, done)
        except Exception:  # noqa: BLE001 - a failing proposal must not stop replication
            lead.pending = False
            lead.adding = 0
            self.log(f"replication: isr proposal failed:\n{traceback.format_exc()}")

    # ---- inputs ------------------------------------------------------------------------------

    def receive(self, msg: ShardFetch | ShardFetchReply) -> None:
        if isinstance(msg, ShardFetch):
            self._on_fetch(msg)
        else:
            self._on_reply(msg)

    def durable_progress(self) -> None:
        """A shard's group commit finished: leaders may advance their high watermark, followers
        report their new acknowledged end."""
        for key in sorted(self.leads):
            self._advance(key, self.leads[key])
        for key in sorted(self.follows):
            f = self.follows[key]
            if f.inflight and not f.more and self.host.ack_end(*key) > f.reported:
                self._fetch(key, f)

    def tick(self) -> None:
        now = self.clock()
        cfg = self.config
        for key in sorted(self.follows):
            f = self.follows[key]
            if f.inflight:
                if (now - f.sent_ms >= cfg.fetch_timeout_ms
                        or (f.more and now - f.sent_ms >= ACK_GRACE_MS
                            and self.host.ack_end(*key) > f.reported)):
                    self._fetch(key, f)
            elif now >= f.next_ms:
                self._fetch(key, f)
        for key in sorted(self.leads):
            lead = self.leads[key]
            for nid in sorted(lead.followers):
                fl = lead.followers[nid]
                if fl.parked is not None and now >= fl.parked_until:
                    self._serve(key, lead, fl, fl.parked)
            if lead.pending or now < lead.retry_at:
                continue
            lagging = [n for n in lead.isr if n != self.node_id
                       and now - lead.followers[n].caught_up_ms > cfg.replica_lag_ms]
            if lagging:
                self._shrink(key, lead, tuple(n for n in lead.isr if n not in lagging))

    def next_deadline_ms(self) -> int | None:
        cfg = self.config
        due: int | None = None

        def at(t: int) -> None:
            nonlocal due
            if due is None or t < due:
                due = t

        for key, f in self.follows.items():
            if not f.inflight:
                at(f.next_ms)
            elif f.more and self.host.ack_end(*key) > f.reported:
                at(f.sent_ms + ACK_GRACE_MS)
            else:
                at(f.sent_ms + cfg.fetch_timeout_ms)
        for lead in self.leads.values():
            for n, fl in lead.followers.items():
                if fl.parked is not None:
                    at(fl.parked_until)
                if n in lead.isr and not lead.pending:
                    at(max(fl.caught_up_ms + cfg.replica_lag_ms + 1, lead.retry_at))
        return due

    def invariants(self) -> None:
        assert not set(self.leads) & set(self.follows), (self.leads, self.follows)
        for key, lead in self.leads.items():
            assert self.node_id in lead.isr or self.bugs, (key, lead.isr)
            assert lead.hw <= self.host.replica_log(*key).shard_end, (key, lead.hw)
