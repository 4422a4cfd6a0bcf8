"""In-memory network of RaftNodes for tests: delivery control, partitions, crash + restart.

Each node has a `Store` that keeps only what the node handed out in a processed Ready (the
persist-before-send loop of node.py), so `crash()` + `restart()` loses exactly the unpersisted
state. Safety oracles run as entries are applied: state-machine safety (no two nodes apply
different entries at one index) and election safety (one leader per term, ever).
"""

from __future__ import annotations

import random
from dataclasses import replace

from real.raft import (
    ConfChange,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    NodeId,
    RaftConfig,
    RaftNode,
    ReadState,
    Ready,
    Role,
    Snapshot,
)


class Store:
    """Stable storage of one node (what survives a crash)."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []

    def persist(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = []
        if rd.entries:
            first = rd.entries[0].index
            self.entries = [e for e in self.entries if e.index < first]
            assert not self.entries or self.entries[-1].index == first - 1
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def compact(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.entries = [e for e in self.entries if e.index > snap.meta.index]

    def durable(self) -> DurableState:
        return DurableState(self.hard_state, self.snapshot, tuple(self.entries))


class SafetyViolation(AssertionError):
    pass


class Network:
    def __init__(self, config: RaftConfig | None = None, seed: int = 0) -> None:
        self.config = config or RaftConfig()
        self.master = random.Random(seed)
        self.nodes: dict[NodeId, RaftNode] = {}
        self.stores: dict[NodeId, Store] = {}
        self.configs: dict[NodeId, RaftConfig] = {}
        self.msgs: list[Message] = []
        """In flight, in send order."""
        self.down: set[NodeId] = set()
        self.isolated: list[set[NodeId]] = []
        """Partition: each set is cut off from every node outside it."""
        self.applied: dict[NodeId, list[bytes]] = {}
        """Per node: the application state (data of applied NORMAL entries, in order)."""
        self.applied_index: dict[NodeId, int] = {}
        self.read_states: dict[NodeId, list[ReadState]] = {}
        self.committed: dict[int, Entry] = {}
        """Oracle: the entry first applied at each index by any node."""
        self.leaders: dict[int, NodeId] = {}
        """Oracle: the leader seen for each term."""

    # ------------------------------------------------------------ membership of the harness

    def add_node(self, nid: NodeId, peers: tuple[NodeId, ...],
                 config: RaftConfig | None = None) -> RaftNode:
        assert nid not in self.nodes
        self.stores[nid] = Store()
        self.configs[nid] = config or self.config
        self.applied[nid] = []
        self.applied_index[nid] = 0
        self.read_states[nid] = []
        node = RaftNode(nid, self.configs[nid], random.Random(self.master.getrandbits(64)),
                        peers=peers)
        self.nodes[nid] = node
        return node

    def crash(self, nid: NodeId) -> None:
        """Lose everything not persisted: the node object and its in-flight inbound messages."""
        assert nid in self.nodes and nid not in self.down
        self.down.add(nid)
        self.msgs = [m for m in self.msgs if m.dst != nid]

    def restart(self, nid: NodeId) -> RaftNode:
        assert nid in self.down
        self.down.discard(nid)
        store = self.stores[nid]
        rng = random.Random(self.master.getrandbits(64))
        node = RaftNode(nid, self.configs[nid], rng, store.durable())
        self.nodes[nid] = node
        snap = store.snapshot
        self.applied[nid] = _decode_state(snap.data) if snap else []
        self.applied_index[nid] = snap.meta.index if snap else 0
        return node

    def up(self) -> list[NodeId]:
        return [nid for nid in sorted(self.nodes) if nid not in self.down]

    # ------------------------------------------------------------ partitions

    def partition(self, group: set[NodeId]) -> None:
        self.isolated.append(set(group))

    def heal(self) -> None:
        self.isolated = []

    def connected(self, a: NodeId, b: NodeId) -> bool:
        return all((a in g) == (b in g) for g in self.isolated)

    # ------------------------------------------------------------ the Ready loop

    def process_ready(self, nid: NodeId) -> list[Ready]:
        """Run the persist -> send -> apply -> advance loop until the node is quiet."""
        out: list[Ready] = []
        node = self.nodes[nid]
        while node.has_ready():
            rd = node.ready()
            out.append(rd)
            self.stores[nid].persist(rd)
            for m in rd.messages:
                assert m.src == nid
                if m.dst in self.nodes and m.dst not in self.down and self.connected(nid, m.dst):
                    self.msgs.append(m)
            self._apply(nid, rd)
            node.advance(rd)
            self._check_leader(node)
        return out

    def _apply(self, nid: NodeId, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.applied[nid] = _decode_state(rd.snapshot.data)
            self.applied_index[nid] = rd.snapshot.meta.index
        for e in rd.committed_entries:
            assert e.index == self.applied_index[nid] + 1, (nid, e, self.applied_index[nid])
            seen = self.committed.setdefault(e.index, e)
            if seen != e:
                raise SafetyViolation(f"node {nid} applies {e}, another node applied {seen}")
            self.applied_index[nid] = e.index
            if e.kind is EntryKind.NORMAL and e.data:
                self.applied[nid].append(e.data)
        self.read_states[nid].extend(rd.read_states)

    def _check_leader(self, node: RaftNode) -> None:
        if node.role is Role.LEADER:
            seen = self.leaders.setdefault(node.term, node.id)
            if seen != node.id:
                raise SafetyViolation(f"term {node.term}: leaders {seen} and {node.id}")

    def deliver(self, nid: NodeId, drop_from: frozenset[NodeId] = frozenset()) -> list[Message]:
        """Deliver every in-flight message addressed to `nid` (in send order)."""
        mine = [m for m in self.msgs if m.dst == nid]
        self.msgs = [m for m in self.msgs if m.dst != nid]
        delivered = []
        for m in mine:
            if m.src in drop_from or nid in self.down or not self.connected(m.src, m.dst):
                continue
            self.nodes[nid].step(m)
            delivered.append(m)
        return delivered

    def deliver_one(self, i: int, duplicate: bool = False) -> Message:
        m = self.msgs[i] if duplicate else self.msgs.pop(i)
        if m.dst in self.nodes and m.dst not in self.down and self.connected(m.src, m.dst):
            self.nodes[m.dst].step(m)
        return m

    def stabilize(self, max_rounds: int = 1000) -> None:
        for _ in range(max_rounds):
            for nid in self.up():
                self.process_ready(nid)
            if not self.msgs:
                return
            for nid in self.up():
                self.deliver(nid)
            self.msgs = [m for m in self.msgs if m.dst in self.nodes and m.dst not in self.down]
        raise AssertionError("network did not stabilize")

    # ------------------------------------------------------------ helpers

    def compact(self, nid: NodeId, index: int) -> None:
        node = self.nodes[nid]
        data = _encode_state(self.applied[nid][: self._count_upto(nid, index)])
        node.compact(index, data)
        assert node.snapshot is not None
        self.stores[nid].compact(node.snapshot)

    def _count_upto(self, nid: NodeId, index: int) -> int:
        """Number of applied NORMAL payloads at indexes <= index (index <= applied)."""
        node = self.nodes[nid]
        assert index <= self.applied_index[nid]
        later = sum(
            1 for e in node.entries(index + 1, self.applied_index[nid] + 1)
            if e.kind is EntryKind.NORMAL and e.data
        )
        return len(self.applied[nid]) - later

    def leader(self) -> RaftNode | None:
        """The up leader with the highest term, if any."""
        best = None
        for nid in self.up():
            n = self.nodes[nid]
            if n.role is Role.LEADER and (best is None or n.term > best.term):
                best = n
        return best

    def elect(self, nid: NodeId) -> None:
        self.nodes[nid].campaign()
        self.stabilize()
        assert self.nodes[nid].role is Role.LEADER, self.nodes[nid].role


def _encode_state(items: list[bytes]) -> bytes:
    return b"|".join(items) if items else b""


def _decode_state(data: bytes) -> list[bytes]:
    return data.split(b"|") if data else []


# ---------------------------------------------------------------- printing (golden traces)


def fmt_entry(e: Entry) -> str:
    if e.kind is EntryKind.CONF_CHANGE:
        cc = ConfChange.decode(e.data)
        return f"{e.term}/{e.index} conf {cc.type.value} {cc.node_id}"
    return f"{e.term}/{e.index} {e.data.decode(errors='replace')!r}"


def fmt_entries(ents: tuple[Entry, ...]) -> str:
    return "[" + ", ".join(fmt_entry(e) for e in ents) + "]"


def fmt_msg(m: Message) -> str:
    parts = [f"{m.src}->{m.dst} {m.type.value} term={m.term}"]
    t = m.type
    if t in (MsgType.APPEND, MsgType.VOTE, MsgType.PRE_VOTE):
        parts.append(f"log={m.log_term}/{m.index}")
    elif m.index or t is MsgType.APPEND_RESP:
        parts.append(f"index={m.index}")
    if m.commit or t in (MsgType.APPEND, MsgType.HEARTBEAT):
        parts.append(f"commit={m.commit}")
    if m.entries:
        parts.append(f"entries={fmt_entries(m.entries)}")
    if m.reject and t is MsgType.APPEND_RESP:
        parts.append(f"reject hint={m.reject_hint}/{m.log_term}")
    elif m.reject:
        parts.append("reject")
    if m.snapshot is not None:
        meta = m.snapshot.meta
        parts.append(f"snapshot={meta.term}/{meta.index} voters={list(meta.conf.voters)}")
    if m.context:
        parts.append(f"ctx={m.context.decode(errors='replace')!r}")
    return " ".join(parts)


def fmt_ready(nid: NodeId, rd: Ready) -> list[str]:
    lines = [f"> {nid} ready must_sync={str(rd.must_sync).lower()}"]
    if rd.soft_state is not None:
        lines.append(f"  soft: leader={rd.soft_state.leader} role={rd.soft_state.role.value}")
    if rd.hard_state is not None:
        hs = rd.hard_state
        lines.append(f"  hard: term={hs.term} vote={hs.vote} commit={hs.commit}")
    if rd.snapshot is not None:
        meta = rd.snapshot.meta
        lines.append(
            f"  snapshot: {meta.term}/{meta.index} voters={list(meta.conf.voters)}"
            f" learners={list(meta.conf.learners)} data={rd.snapshot.data!r}"
        )
    if rd.entries:
        lines.append(f"  entries: {fmt_entries(rd.entries)}")
    if rd.committed_entries:
        lines.append(f"  committed: {fmt_entries(rd.committed_entries)}")
    for m in rd.messages:
        lines.append(f"  send: {fmt_msg(m)}")
    for r in rd.read_states:
        lines.append(f"  read-state: index={r.index} ctx={r.context.decode()!r}")
    return lines


def fmt_status(node: RaftNode) -> str:
    conf = node.conf
    learners = f" learners={list(conf.learners)}" if conf.learners else ""
    return (
        f"{node.id}: {node.role.value} term={node.term} vote={node.vote} leader={node.leader}"
        f" commit={node.commit} applied={node.applied}"
        f" log={node.first_index()}..{node.last_index()}"
        f" voters={list(conf.voters)}{learners}"
    )


def with_bugs(config: RaftConfig, *bugs: object) -> RaftConfig:
    return replace(config, bugs=frozenset(bugs))  # type: ignore[arg-type]
