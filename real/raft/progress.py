"""Leader-side replication state per member (etcd `tracker.Progress` + `Inflights`).

PROBE: one APPEND at a time until the follower's position is known (paused after each send until
an answer or a heartbeat response). REPLICATE: optimistic pipelining, bounded by
`max_inflight_msgs` APPENDs in flight. SNAPSHOT: a snapshot was sent; nothing else until it is
acknowledged (or a heartbeat response shows it was lost).
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "pending_snapshot",
        "recent_active",
        "inflights",
        "inflights_max",
    )

    def __init__(self, match: int, next_index: int, inflights_max: int) -> None:
        assert 0 <= match < next_index, (match, next_index)
        assert inflights_max >= 1
        self.match = match
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.recent_active = False
        self.inflights: deque[int] = deque()
        """Last entry index of each APPEND sent in REPLICATE state and not yet acknowledged."""
        self.inflights_max = inflights_max

    def __repr__(self) -> str:
        return f"Progress({self.state.value} match={self.match} next={self.next})"

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflights) >= self.inflights_max
        return True

    def inflights_full(self) -> bool:
        return len(self.inflights) >= self.inflights_max

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflights.clear()

    def become_snapshot(self, index: int) -> None:
        assert index > self.match
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.probe_sent = False
        self.inflights.clear()

    def sent_entries(self, last: int) -> None:
        """An APPEND carrying entries up to `last` was sent."""
        if self.state is ProgressState.REPLICATE:
            assert last >= self.next - 1
            self.next = last + 1
            self.inflights.append(last)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged entries up to `index`. True if `match` moved."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """APPEND at prev index `rejected` was refused. False if the refusal is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def free_le(self, index: int) -> None:
        inflights = self.inflights
        while inflights and inflights[0] <= index:
            inflights.popleft()

    def check(self) -> None:
        assert 0 <= self.match < self.next, (self.match, self.next)
        assert len(self.inflights) <= self.inflights_max
        assert self.state is ProgressState.REPLICATE or not self.inflights
