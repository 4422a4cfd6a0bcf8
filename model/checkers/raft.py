"""Oracles that judge a run while it happens (after each node step), VOPR-style.

Each checker is a separate class fed by the shell with what a node durably did: role changes,
persisted entries and snapshots, restarts, applied entries. A violated safety property raises
`SafetyViolation` at once (the world stops and reports `safety`); liveness is judged at a deadline
after heal (`liveness`). None of them reads RaftNode internals: they see the Ready stream only.

Log matching is checked incrementally with per-node chain hashes: chain(i) = H(chain(i-1), term(i),
data(i)). Two logs agree on a prefix ending at i iff their chains at i are equal, so a global map
(index, term) -> chain catches any divergence in O(1) per persisted entry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from real.raft.types import DurableState, Entry, Ready, Role, Snapshot

GENESIS = b"\x00" * 16
OUTCOME_CODES = {"ok": 0, "safety": 1, "liveness": 2, "crash": 3}


class SafetyViolation(Exception):
    """args stay (checker, detail): SimPy re-raises a process's exception as type(e)(*e.args)."""

    def __init__(self, checker: str, detail: str) -> None:
        super().__init__(checker, detail)
        self.checker = checker
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.checker}: {self.detail}"


def chain_next(prev: bytes, entry: Entry) -> bytes:
    h = hashlib.blake2b(prev, digest_size=16)
    h.update(entry.term.to_bytes(8, "little"))
    h.update(entry.kind.value.encode())
    h.update(entry.data)
    return h.digest()


def snapshot_chain(index: int, term: int) -> bytes:
    """Stand-in chain for a snapshot point whose entries no checker saw (should not happen)."""
    return hashlib.blake2b(f"snap:{index}:{term}".encode(), digest_size=16).digest()


class ElectionSafety:
    """At most one leader per term."""

    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}

    def on_role(self, node: int, term: int, role: Role) -> None:
        if role is not Role.LEADER:
            return
        other = self.leaders.setdefault(term, node)
        if other != node:
            raise SafetyViolation("election-safety",
                                  f"nodes {other} and {node} both leader in term {term}")


@dataclass(slots=True)
class NodeChain:
    base_index: int = 0
    base_term: int = 0
    base_chain: bytes = GENESIS
    terms: list[int] = field(default_factory=list)
    chains: list[bytes] = field(default_factory=list)

    def last_index(self) -> int:
        return self.base_index + len(self.chains)

    def chain_at(self, index: int) -> bytes | None:
        if index == self.base_index:
            return self.base_chain
        k = index - self.base_index - 1
        if 0 <= k < len(self.chains):
            return self.chains[k]
        return None


class LogMatching:
    """Same index and term => same entry and same prefix (via chain hashes)."""

    def __init__(self) -> None:
        self.nodes: dict[int, NodeChain] = {}
        self.by_index_term: dict[tuple[int, int], bytes] = {}

    def chain(self, node: int) -> NodeChain:
        return self.nodes.setdefault(node, NodeChain())

    def on_reset(self, node: int, snapshot: Snapshot | None) -> None:
        """A node restarted: its chain is rebuilt from durable state (snapshot, then entries)."""
        self.nodes[node] = NodeChain()
        if snapshot is not None:
            self.on_snapshot(node, snapshot, keep_suffix=False)

    def on_snapshot(self, node: int, snapshot: Snapshot, keep_suffix: bool) -> None:
        nc = self.chain(node)
        idx, term = snapshot.meta.index, snapshot.meta.term
        if idx <= nc.base_index:
            return
        known = self.by_index_term.get((idx, term))
        mine = nc.chain_at(idx) if keep_suffix else None
        base = known or mine or snapshot_chain(idx, term)
        if keep_suffix:
            k = idx - nc.base_index
            nc.terms, nc.chains = nc.terms[k:], nc.chains[k:]
        else:
            nc.terms, nc.chains = [], []
        nc.base_index, nc.base_term, nc.base_chain = idx, term, base

    def on_entries(self, node: int, entries: tuple[Entry, ...]) -> None:
        if not entries:
            return
        nc = self.chain(node)
        first = entries[0].index
        if first <= nc.base_index:
            entries = tuple(e for e in entries if e.index > nc.base_index)
            if not entries:
                return
            first = entries[0].index
        if first > nc.last_index() + 1:
            raise SafetyViolation("log-matching", f"node {node} persisted entry {first} after "
                                  f"last index {nc.last_index()} (gap)")
        k = first - nc.base_index - 1
        del nc.terms[k:], nc.chains[k:]
        prev = nc.chain_at(first - 1)
        assert prev is not None
        for expected, entry in enumerate(entries, start=first):
            if entry.index != expected:
                raise SafetyViolation("log-matching", f"node {node} persisted non-contiguous "
                                      f"entries: {entry.index} where {expected} expected")
            prev = chain_next(prev, entry)
            key = (entry.index, entry.term)
            seen = self.by_index_term.setdefault(key, prev)
            if seen != prev:
                raise SafetyViolation("log-matching", f"node {node} holds entry index "
                                      f"{entry.index} term {entry.term} whose prefix or data "
                                      "differs from another node's entry at that index and term")
            nc.terms.append(entry.term)
            nc.chains.append(prev)


class StateMachineSafety:
    """No two nodes apply different entries at one index.

    Also records, per term t, the highest index some node applied while in term t: such an
    index was committed by a leader of a term <= t, so every leader of a term > t must hold it
    (what LeaderCompleteness checks; a leader of an older term that wins late need not)."""

    def __init__(self) -> None:
        self.applied: dict[int, tuple[int, bytes]] = {}
        self.max_index = 0
        self.max_index_by_term: dict[int, int] = {}

    def committed_before(self, term: int) -> int:
        """Highest index known committed in some term < `term` (0 if none)."""
        best = 0
        for t, index in self.max_index_by_term.items():
            if t < term and index > best:
                best = index
        return best

    def on_apply(self, node: int, entry: Entry, node_term: int) -> None:
        digest = (entry.term, entry.data)
        seen = self.applied.setdefault(entry.index, digest)
        if seen != digest:
            raise SafetyViolation("state-machine-safety",
                                  f"node {node} applied term {entry.term} at index {entry.index}, "
                                  f"another node applied term {seen[0]} there "
                                  f"(data equal: {seen[1] == entry.data})")
        if entry.index > self.max_index:
            self.max_index = entry.index
        if entry.index > self.max_index_by_term.get(node_term, 0):
            self.max_index_by_term[node_term] = entry.index


class LeaderCompleteness:
    """A new leader of term T holds every entry committed in a term < T (known from applies)."""

    def __init__(self, logs: LogMatching, sm: StateMachineSafety) -> None:
        self.logs = logs
        self.sm = sm

    def on_new_leader(self, node: int, term: int) -> None:
        committed = self.sm.committed_before(term)
        if committed == 0:
            return
        nc = self.logs.chain(node)
        if committed < nc.base_index:
            return  # covered by the snapshot: its chain was checked when it was taken
        if nc.last_index() < committed:
            raise SafetyViolation("leader-completeness",
                                  f"node {node} became leader of term {term} with last index "
                                  f"{nc.last_index()} < committed index {committed}")
        c_term = self.sm.applied[committed][0]
        want = self.logs.by_index_term.get((committed, c_term))
        mine = nc.chain_at(committed)
        if want is not None and mine != want:
            raise SafetyViolation("leader-completeness",
                                  f"node {node} became leader of term {term} without the entry "
                                  f"committed at index {committed} (term {c_term})")


class Checkers:
    """The hub a shell feeds; dispatches to every safety oracle."""

    def __init__(self) -> None:
        self.election = ElectionSafety()
        self.logs = LogMatching()
        self.sm = StateMachineSafety()
        self.completeness = LeaderCompleteness(self.logs, self.sm)

    def on_role(self, node: int, term: int, role: Role) -> None:
        self.election.on_role(node, term, role)

    def on_entries(self, node: int, entries: tuple[Entry, ...]) -> None:
        self.logs.on_entries(node, entries)

    def on_snapshot(self, node: int, snapshot: Snapshot, keep_suffix: bool) -> None:
        self.logs.on_snapshot(node, snapshot, keep_suffix)

    def on_restart(self, node: int, snapshot: Snapshot | None, entries: tuple[Entry, ...]) -> None:
        self.logs.on_reset(node, snapshot)
        self.logs.on_entries(node, entries)

    def on_new_leader(self, node: int, term: int) -> None:
        self.completeness.on_new_leader(node, term)

    def on_apply(self, node: int, entry: Entry, node_term: int) -> None:
        self.sm.on_apply(node, entry, node_term)


class CheckerObserver:
    """`RaftObserver` (real/server/replica.py) over `Checkers`: what a hosted `NodeCore`'s meta
    replica reports (its restarts, each Ready before it is persisted, applies, compactions)."""

    def __init__(self, checkers: Checkers) -> None:
        self.checkers = checkers

    def restarted(self, node: int, durable: DurableState) -> None:
        self.checkers.on_restart(node, durable.snapshot, durable.entries)

    def ready(self, node: int, rd: Ready, term: int) -> None:
        checkers = self.checkers
        if rd.soft_state is not None:
            role_term = rd.hard_state.term if rd.hard_state is not None else term
            checkers.on_role(node, role_term, rd.soft_state.role)
        if rd.snapshot is not None:
            checkers.on_snapshot(node, rd.snapshot, keep_suffix=False)
        if rd.entries:
            checkers.on_entries(node, rd.entries)
        if rd.soft_state is not None and rd.soft_state.role is Role.LEADER:
            checkers.on_new_leader(node, term)

    def applied(self, node: int, entry: Entry, term: int) -> None:
        self.checkers.on_apply(node, entry, term)

    def compacted(self, node: int, snapshot: Snapshot) -> None:
        self.checkers.on_snapshot(node, snapshot, keep_suffix=True)
