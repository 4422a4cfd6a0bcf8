"""Model-based test: MetaStateMachine against a trivial dict reference (STYLE 15).

The reference keeps every shard as [leader, epoch, replicas, isr, version] (unreplicated shards:
no replicas, no isr, version 0) and spells out placement, ISR changes, elections and the fencing
of restarted and leaving nodes the way the commands document them."""

from __future__ import annotations

from typing import Any

from hypothesis import event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from real.meta import MetaStateMachine, encode_command

NODES = st.integers(1, 4)
NOT_A_REPLICA = 5  # never registered, never placed
TOPICS = st.sampled_from(sorted(["a", "b", "c/d"]))
KEYS = st.sampled_from(sorted(["k", "m"]))
VALUES = st.one_of(st.integers(-5, 5), st.text("xyz", max_size=3), st.booleans())
NUDGE = st.sampled_from([0, 0, 0, 0, 0, -1, 1])

Shard = list[Any]  # [leader, epoch, replicas, isr, version]


def plain(leader: int = 0, epoch: int = 0) -> Shard:
    return [leader, epoch, (), (), 0]


class MetaVsReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sm = MetaStateMachine()
        self.nodes: dict[int, tuple[str, int]] = {}  # node -> (addr, broker epoch)
        self.topics: dict[str, list[Shard]] = {}
        self.config: dict[str, Any] = {}

    def apply(self, expect_ok: bool, op: str, **fields: Any) -> Any:
        result = self.sm.apply(self.sm.applied_index + 1, encode_command(op, **fields))
        note(f"{op} {fields} -> {result}")
        event(f"{op} {'ok' if result.ok else 'refused'}")
        assert result.ok == expect_ok, (op, fields, result)
        self.sm.invariants()
        return result.value

    # ---- the reference ---------------------------------------------------------------------

    def fence(self, node: int) -> None:
        """`node` restarted or left: it gives up the shards it leads to the next in-sync replica
        (keeping them, under a new epoch, if there is none) and leaves ISRs shared with others."""
        for shards in self.topics.values():
            for s in shards:
                if not s[2] or node not in s[3]:
                    continue
                others = tuple(n for n in s[3] if n != node and n in self.nodes)
                if s[0] == node:
                    s[1] += 1
                    s[4] += 1
                    if others:
                        s[0], s[3] = others[0], others
                elif others:
                    s[3] = others
                    s[4] += 1

    def place(self, count: int, rf: int) -> list[Shard]:
        held = {n: 0 for n in self.nodes}
        led = {n: 0 for n in self.nodes}
        for shards in self.topics.values():
            for s in shards:
                for n in s[2]:
                    if n in held:
                        held[n] += 1
                if s[2] and s[0] in led:
                    led[s[0]] += 1
        out = []
        for _ in range(count):
            chosen = sorted(self.nodes, key=lambda n: (held[n], n))[:rf]
            leader = min(chosen, key=lambda n: (led[n], n))
            replicas = (leader, *sorted(n for n in chosen if n != leader))
            for n in chosen:
                held[n] += 1
            led[leader] += 1
            out.append([leader, 1, replicas, replicas, 1])
        return out

    def fenced(self, name: str, shard: int, epoch: int, version: int, isr: list[int]
               ) -> Shard | None:
        """The replicated shard a set_isr / elect names, if it passes the common checks."""
        shards = self.topics.get(name)
        if shards is None or shard >= len(shards) or not shards[shard][2]:
            return None
        s = shards[shard]
        if (epoch, version) != (s[1], s[4]) or not set(isr) <= set(s[2]):
            return None
        return s

    def draw_target(self, data: st.DataObject) -> tuple[str, int, Shard | None]:
        replicated = [(name, i, s) for name, shards in sorted(self.topics.items())
                      for i, s in enumerate(shards) if s[2]]
        if replicated and data.draw(st.integers(0, 7), label="aimed"):
            return data.draw(st.sampled_from(replicated), label="target")
        name = data.draw(TOPICS, label="topic")
        index = data.draw(st.integers(0, 3), label="shard")
        shards = self.topics.get(name, [])
        return name, index, shards[index] if index < len(shards) else None

    def draw_isr(self, data: st.DataObject, s: Shard | None) -> list[int]:
        members = sorted(s[2]) if s is not None and s[2] else [1, 2, 3, 4]
        if data.draw(st.integers(0, 9), label="off") == 0:
            members.append(NOT_A_REPLICA)
        return data.draw(st.lists(st.sampled_from(members), min_size=1, max_size=4, unique=True),
                         label="isr")

    # ---- rules -----------------------------------------------------------------------------

    @initialize(nodes=st.integers(0, 4), rf=st.integers(1, 3), shards=st.integers(1, 3))
    def start(self, nodes: int, rf: int, shards: int) -> None:
        """Most runs start from a few nodes and a replicated topic, so that ISR changes and
        elections get past their fencing often."""
        for node in range(1, nodes + 1):
            self.register(node, 1)
        if rf <= nodes:
            self.create("a", shards, rf)

    @rule(node=NODES, port=st.integers(1, 3))
    def register(self, node: int, port: int) -> None:
        restarted = node in self.nodes
        value = self.apply(True, "node.register", node_id=node, addr=f"h:{port}")
        assert value == ("updated" if restarted else "created")
        self.nodes[node] = (f"h:{port}", self.sm.applied_index)
        if restarted:
            self.fence(node)

    @rule(node=NODES)
    def unregister(self, node: int) -> None:
        value = self.apply(node in self.nodes, "node.unregister", node_id=node)
        if self.nodes.pop(node, None) is not None:
            self.fence(node)
            orphaned = 0
            for shards in self.topics.values():
                for s in shards:
                    if s[0] == node:
                        orphaned += 1
                        s[0], s[1] = 0, s[1] + 1
                        if s[2]:
                            s[4] += 1
            assert value == orphaned

    @rule(name=TOPICS, shards=st.integers(1, 3), replication=st.none() | st.integers(1, 4))
    def create(self, name: str, shards: int, replication: int | None) -> None:
        ok = name not in self.topics and (replication is None or replication <= len(self.nodes))
        extra = {} if replication is None else {"replication": replication}
        value = self.apply(ok, "topic.create", name=name, shards=shards, engine="file", **extra)
        if ok:
            assert value == shards
            self.topics[name] = (self.place(shards, replication) if replication
                                 else [plain() for _ in range(shards)])

    @rule(name=TOPICS)
    def delete(self, name: str) -> None:
        self.apply(name in self.topics, "topic.delete", name=name)
        self.topics.pop(name, None)

    @rule(name=TOPICS, count=st.integers(1, 5))
    def add_shards(self, name: str, count: int) -> None:
        shards = self.topics.get(name)
        ok = shards is not None and count > len(shards)
        rf = len(shards[0][2]) if shards else 0
        ok = ok and rf <= len(self.nodes)
        value = self.apply(ok, "topic.add_shards", name=name, shards=count)
        if ok:
            assert shards is not None and value == count
            more = count - len(shards)
            leader = shards[0][0]
            shards += (self.place(more, rf) if rf
                       else [plain(leader, 1 if leader else 0) for _ in range(more)])

    @rule(name=TOPICS, shard=st.integers(0, 3), node=NODES, epoch=st.none() | st.integers(0, 5))
    def set_leader(self, name: str, shard: int, node: int, epoch: int | None) -> None:
        shards = self.topics.get(name)
        ok = shards is not None and shard < len(shards) and node in self.nodes
        new_epoch = None
        if ok:
            assert shards is not None
            new_epoch = shards[shard][1] + 1 if epoch is None else epoch
            ok = new_epoch > shards[shard][1] and not shards[shard][2]
        extra = {} if epoch is None else {"epoch": epoch}
        value = self.apply(ok, "shard.set_leader", topic=name, shard=shard, node_id=node, **extra)
        if ok:
            assert shards is not None and value == new_epoch
            shards[shard] = plain(node, new_epoch)

    @rule(data=st.data())
    def set_isr(self, data: st.DataObject) -> None:
        name, index, s = self.draw_target(data)
        isr = self.draw_isr(data, s)
        leader = s[0] if s is not None and s[0] else 1
        if data.draw(st.integers(0, 9), label="other leader") == 0:
            leader = data.draw(NODES, label="leader")
        if data.draw(st.integers(0, 3), label="add leader") and leader not in isr:
            isr = [leader, *isr][:4]
        epoch = max(0, (s[1] if s else 1) + data.draw(NUDGE, label="epoch nudge"))
        version = max(0, (s[4] if s else 1) + data.draw(NUDGE, label="version nudge"))
        current = self.fenced(name, index, epoch, version, isr)
        ok = current is not None and leader == current[0] and current[0] in isr
        ok = ok and set(isr) <= set(self.nodes)  # every member registered
        value = self.apply(ok, "shard.set_isr", topic=name, shard=index, leader=leader,
                           epoch=epoch, version=version, isr=isr)
        if ok:
            assert current is not None
            current[3] = tuple(n for n in current[2] if n in isr)
            current[4] += 1
            assert value == current[4]

    @rule(data=st.data())
    def elect(self, data: st.DataObject) -> None:
        name, index, s = self.draw_target(data)
        isr = self.draw_isr(data, s)
        unclean = data.draw(st.none() | st.booleans(), label="unclean")
        leader = data.draw(st.sampled_from([0, *isr, *isr, *isr, 1, 2, 3, 4, NOT_A_REPLICA]),
                           label="leader")
        if unclean and leader and data.draw(st.integers(0, 3), label="restart isr"):
            isr = [leader]
        epoch = max(0, (s[1] if s else 1) + data.draw(NUDGE, label="epoch nudge"))
        version = max(0, (s[4] if s else 1) + data.draw(NUDGE, label="version nudge"))
        current = self.fenced(name, index, epoch, version, isr)
        new_isr = tuple(n for n in current[2] if n in isr) if current is not None else ()
        ok = current is not None and (leader == 0 or leader in new_isr)
        if ok and (not unclean or not leader):  # going offline never adds members either
            assert current is not None
            ok = set(new_isr) <= set(current[3])
        elif ok and leader:
            ok = new_isr == (leader,)
        ok = ok and (leader == 0 or leader in self.nodes)
        extra = {} if unclean is None else {"unclean": unclean}
        value = self.apply(ok, "shard.elect", topic=name, shard=index, epoch=epoch,
                           version=version, leader=leader, isr=isr, **extra)
        if ok:
            assert current is not None
            current[0], current[1], current[3] = leader, current[1] + 1, new_isr
            current[4] += 1
            assert value == current[1]

    @rule(data=st.data())
    def set_isr_again(self, data: st.DataObject) -> None:
        self.set_isr(data)

    @rule(data=st.data())
    def elect_again(self, data: st.DataObject) -> None:
        self.elect(data)

    @rule(key=KEYS, value=VALUES)
    def put(self, key: str, value: Any) -> None:
        self.apply(True, "config.put", key=key, value=value)
        self.config[key] = value

    @rule(key=KEYS)
    def delete_config(self, key: str) -> None:
        self.apply(key in self.config, "config.delete", key=key)
        self.config.pop(key, None)

    # ---- invariants ------------------------------------------------------------------------

    @invariant()
    def same_as_reference(self) -> None:
        assert {n.node_id: (n.addr, n.broker_epoch) for n in self.sm.nodes()} == self.nodes
        got = {t.name: [[s.leader, s.epoch, s.replicas, s.isr, s.version] for s in t.shards]
               for t in self.sm.topics()}
        assert got == self.topics
        assert self.sm.config() == self.config

    @invariant()
    def restore_is_identity(self) -> None:
        snap = self.sm.snapshot()
        back = MetaStateMachine.restore(snap)
        assert back.snapshot() == snap and back.digest() == self.sm.digest()


MetaVsReference.TestCase.settings = settings(max_examples=100, stateful_step_count=40,
                                             deadline=None)
test_meta_against_reference = MetaVsReference.TestCase
