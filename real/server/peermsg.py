"""The node-to-node messages besides Raft's: shard replication, broker heartbeats and the MQTT
cluster log's forwarded writes.

Plain frozen values, like `real.raft.types.Message`: each has `src` and `dst` (node ids) and a
`size()` for the simulated network. `NodeCore.step` takes any of them; `NodeReady.messages`
carries them out. The real wire encodes them in `real.cluster.wire` (one frame kind each).

Offsets here are *shard* offsets (one stored record per Kafka batch; see `real.kafka.log`), and
epochs are a shard's leader epoch as recorded in meta (`ShardInfo.epoch`).
"""

from __future__ import annotations

from dataclasses import dataclass

from real.storage.record import Record


class FetchError:
    """`ShardFetchReply.error` codes (fixed numbers: they travel on the wire)."""

    NONE = 0
    NOT_LEADER = 1
    """The receiver does not lead the shard in the fetch's epoch (yet, or any more)."""
    FENCED = 2
    """The fetch names an older epoch than the receiver's: the follower must catch up on meta."""
    UNKNOWN_SHARD = 3
    OUT_OF_RANGE = 4
    """The fetch offset is below the leader's log start (retention) or past its end."""
    STORAGE = 5
    """The leader could not read its own shard."""


FETCH_ERRORS = frozenset(range(6))


@dataclass(frozen=True, slots=True)
class ShardFetch:
    """A follower asks the shard's leader for records from `offset` (its log end), and reports
    what it holds: `acked`, its own acknowledged end (`ShardStore.ack_end`: durable, or written
    under fsync never), which is what the leader's high watermark counts."""

    src: int
    dst: int
    topic: str
    partition: int
    epoch: int
    """The leader epoch the follower follows."""
    offset: int
    last_epoch: int
    """The leader epoch of the follower's last stored batch (-1 if it holds none)."""
    acked: int
    seq: int
    """Per (follower, shard) request number: a reply to an older request is ignored."""
    bytes_max: int = 1 << 20

    def size(self) -> int:
        return 64 + len(self.topic)


@dataclass(frozen=True, slots=True)
class ShardFetchReply:
    src: int
    dst: int
    topic: str
    partition: int
    epoch: int
    seq: int
    error: int = FetchError.NONE
    high_watermark: int = 0
    """The leader's high watermark (shard offset) after taking the fetch into account."""
    log_start: int = 0
    diverging_epoch: int = -1
    diverging_end: int = -1
    """If >= 0: the follower's log diverges; truncate to at most `diverging_end` (the end of
    `diverging_epoch`, the largest epoch <= the fetch's `last_epoch` on the leader) and fetch
    again (KIP-595's diverging epoch, in place of a separate OffsetsForLeaderEpoch)."""
    records: tuple[Record, ...] = ()

    def size(self) -> int:
        return 64 + len(self.topic) + sum(r.size() for r in self.records)


@dataclass(frozen=True, slots=True)
class BrokerHeartbeat:
    """A node tells the meta leader's controller it is alive, under the broker epoch meta gave
    its registration (a heartbeat from a restarted node's old self carries an older epoch and
    is ignored)."""

    src: int
    dst: int
    broker_epoch: int

    def size(self) -> int:
        return 24


class AppendError:
    """`LogAppendReply.error` codes (fixed numbers: they travel on the wire)."""

    NONE = 0
    NOT_LEADER = 1
    """The receiver does not lead the partition (any more, or yet)."""
    NOT_ENOUGH_REPLICAS = 2
    """Fewer in-sync replicas than `min.insync.replicas`: stored nowhere, ask again later."""
    REFUSED = 3
    """The leader's log refused the batch (the reply's `detail` says why)."""


APPEND_ERRORS = frozenset(range(4))


@dataclass(frozen=True, slots=True)
class LogAppend:
    """A node asks the leader of partition `partition` of the MQTT cluster log (`__mqtt`,
    real/mqtt/cluster.py) to store `batch` (one Kafka record batch, an idempotent producer's)
    and to answer once it is committed."""

    src: int
    dst: int
    partition: int
    seq: int
    """Per sender request number: the reply names it."""
    batch: bytes

    def size(self) -> int:
        return 32 + len(self.batch)


@dataclass(frozen=True, slots=True)
class LogAppendReply:
    """The leader's answer to the `LogAppend` numbered `seq`: committed, or why not."""

    src: int
    dst: int
    partition: int
    seq: int
    error: int = AppendError.NONE
    detail: str = ""

    def size(self) -> int:
        return 32 + len(self.detail)


PeerMessage = ShardFetch | ShardFetchReply | BrokerHeartbeat | LogAppend | LogAppendReply
