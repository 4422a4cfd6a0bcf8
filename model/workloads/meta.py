"""The meta client: proposes at a rate to the current leader (`NodeCore.propose` on that node);
retries when the node reports the proposal dropped or lost, or after a timeout.

Every proposal has a unique `pid` and unique data (`config.put` of key `k<pid % 64>` to value
`p<pid>`), so a committed entry is matched back to its proposal by its data. Each submission is a
new `attempt`; replies for older attempts are ignored. With no leader known, proposals are parked
and one poll every `retry_ms` resubmits them all. Bounds: `outstanding_max` proposals in flight
(new ones are rejected and counted), `max_attempts` per proposal (then it is abandoned, traced).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from model.scenario import MetaConfig
from model.sim.clock import now_us

if TYPE_CHECKING:
    from model.world import World

US_PER_MS = 1000


@dataclass(slots=True)
class Proposal:
    pid: int
    data: bytes
    created_us: int
    attempt: int = 0
    gen: int = 0
    """Bumped whenever the proposal's next step is rescheduled: older timers are void."""
    committed_us: int = -1
    index: int = 0
    abandoned: bool = False


class Client:
    def __init__(self, world: World, config: MetaConfig, rng: random.Random,
                 encode: Callable[[int, int], bytes]) -> None:
        self.world = world
        self.env = world.env
        self.config = config
        self.rng = rng
        self.encode = encode
        self.proposals: dict[int, Proposal] = {}
        self.by_data: dict[bytes, int] = {}
        self.outstanding: dict[int, None] = {}
        self.next_pid = 1
        self.rejected_full = 0
        self.dropped_replies = 0
        self.stopped = False
        self.waiting: dict[int, Proposal] = {}
        self._polling = False

    def run(self) -> Generator[Any, Any, None]:
        rate = self.config.rate_per_s
        if rate <= 0:
            return
        mean_us = 1e6 / rate
        while not self.stopped:
            yield self.env.timeout(max(1, round(self.rng.expovariate(1.0) * mean_us)))
            if not self.stopped:
                self.new_proposal()

    def new_proposal(self) -> None:
        if len(self.outstanding) >= self.config.outstanding_max:
            self.rejected_full += 1
            return
        pid = self.next_pid
        self.next_pid += 1
        p = Proposal(pid, self.encode(pid, self.config.value_bytes), now_us(self.env))
        self.proposals[pid] = p
        self.by_data[p.data] = pid
        self.outstanding[pid] = None
        self._attempt(p)

    def _attempt(self, p: Proposal) -> None:
        if p.committed_us >= 0 or p.abandoned:
            return
        if p.attempt >= self.config.max_attempts:
            p.abandoned = True
            del self.outstanding[p.pid]
            self.world.trace.emit(now_us(self.env), 0, "abandon", pid=p.pid, attempts=p.attempt)
            return
        leader = self._pick_leader()
        if leader is None:
            self._wait_for_leader(p)
            return
        p.attempt += 1
        attempt = p.attempt
        self.world.trace.emit(now_us(self.env), leader, "propose", pid=p.pid, attempt=attempt)

        def done(result: object) -> None:
            if isinstance(result, Exception):
                self.on_dropped(p.pid, attempt, leader, str(result))

        self.world.propose(leader, p.data, done)
        self._later(p, self.config.proposal_timeout_ms)

    def _pick_leader(self) -> int | None:
        """`leader_choice = "highest"`: the leader of the highest term (a client that asked
        around); "any": any node that believes it leads, stale ones included (a client with
        outdated routing: gives deposed leaders work, which is what finds bugs)."""
        if self.config.leader_choice == "highest":
            return self.world.find_leader()
        leaders = self.world.self_declared_leaders()
        return self.rng.choice(leaders) if leaders else None

    def _wait_for_leader(self, p: Proposal) -> None:
        """No leader known: park the proposal; one poll every `retry_ms` serves all parked ones
        (polling per proposal would cost O(outstanding) timers per retry period)."""
        p.gen += 1
        self.waiting[p.pid] = p
        if not self._polling:
            self._polling = True
            timer = self.env.timeout(max(1, round(self.config.retry_ms * US_PER_MS)))
            timer.callbacks.append(self._poll)

    def _poll(self, _ev: object) -> None:
        self._polling = False
        if self._pick_leader() is None:
            if self.waiting:
                self._wait_for_leader(next(iter(self.waiting.values())))
            return
        parked, self.waiting = self.waiting, {}
        for pid in sorted(parked):
            self._attempt(parked[pid])

    def _later(self, p: Proposal, ms: float) -> None:
        p.gen += 1
        gen = p.gen
        timer = self.env.timeout(max(1, round(ms * US_PER_MS)))
        timer.callbacks.append(lambda _ev: self._attempt(p) if p.gen == gen else None)

    def on_dropped(self, pid: int, attempt: int, node: int, reason: str) -> None:
        p = self.proposals[pid]
        self.world.trace.emit(now_us(self.env), node, "dropped", pid=pid, attempt=attempt)
        if p.attempt != attempt or p.committed_us >= 0:
            self.dropped_replies += 1
            return
        self._later(p, self.config.retry_ms)

    def on_committed(self, data: bytes, index: int) -> int | None:
        """Called for every applied entry with data; returns the pid if this commits a proposal."""
        pid = self.by_data.get(data)
        if pid is None:
            return None
        p = self.proposals[pid]
        if p.committed_us >= 0:
            return None
        p.committed_us, p.index = now_us(self.env), index
        self.outstanding.pop(pid, None)
        return pid

    def pending(self) -> list[int]:
        return list(self.outstanding)
