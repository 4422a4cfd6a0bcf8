"""Model-based test: MetaStateMachine against a trivial dict reference (STYLE 15)."""

from __future__ import annotations

from typing import Any

from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from real.meta import MetaStateMachine, encode_command

NODES = st.integers(1, 4)
TOPICS = st.sampled_from(sorted(["a", "b", "c/d"]))
KEYS = st.sampled_from(sorted(["k", "m"]))
VALUES = st.one_of(st.integers(-5, 5), st.text("xyz", max_size=3), st.booleans())


class MetaVsReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sm = MetaStateMachine()
        self.nodes: dict[int, str] = {}
        self.topics: dict[str, list[list[int]]] = {}  # name -> [[leader, epoch], ...]
        self.config: dict[str, Any] = {}

    def apply(self, expect_ok: bool, op: str, **fields: Any) -> Any:
        result = self.sm.apply(self.sm.applied_index + 1, encode_command(op, **fields))
        note(f"{op} {fields} -> {result}")
        assert result.ok == expect_ok, (op, fields, result)
        self.sm.invariants()
        return result.value

    @rule(node=NODES, port=st.integers(1, 3))
    def register(self, node: int, port: int) -> None:
        self.apply(True, "node.register", node_id=node, addr=f"h:{port}")
        self.nodes[node] = f"h:{port}"

    @rule(node=NODES)
    def unregister(self, node: int) -> None:
        self.apply(node in self.nodes, "node.unregister", node_id=node)
        if self.nodes.pop(node, None) is not None:
            for shards in self.topics.values():
                for s in shards:
                    if s[0] == node:
                        s[0], s[1] = 0, s[1] + 1

    @rule(name=TOPICS, shards=st.integers(1, 3))
    def create(self, name: str, shards: int) -> None:
        self.apply(name not in self.topics, "topic.create", name=name, shards=shards,
                   engine="file")
        self.topics.setdefault(name, [[0, 0] for _ in range(shards)])

    @rule(name=TOPICS)
    def delete(self, name: str) -> None:
        self.apply(name in self.topics, "topic.delete", name=name)
        self.topics.pop(name, None)

    @rule(name=TOPICS, shard=st.integers(0, 3), node=NODES, epoch=st.none() | st.integers(0, 5))
    def set_leader(self, name: str, shard: int, node: int, epoch: int | None) -> None:
        shards = self.topics.get(name)
        ok = shards is not None and shard < len(shards) and node in self.nodes
        new_epoch = None
        if ok:
            new_epoch = shards[shard][1] + 1 if epoch is None else epoch
            ok = new_epoch > shards[shard][1]
        extra = {} if epoch is None else {"epoch": epoch}
        value = self.apply(ok, "shard.set_leader", topic=name, shard=shard, node_id=node, **extra)
        if ok:
            assert value == new_epoch
            shards[shard] = [node, new_epoch]

    @rule(key=KEYS, value=VALUES)
    def put(self, key: str, value: Any) -> None:
        self.apply(True, "config.put", key=key, value=value)
        self.config[key] = value

    @rule(key=KEYS)
    def delete_config(self, key: str) -> None:
        self.apply(key in self.config, "config.delete", key=key)
        self.config.pop(key, None)

    @invariant()
    def same_as_reference(self) -> None:
        assert {n.node_id: n.addr for n in self.sm.nodes()} == self.nodes
        got = {t.name: [[s.leader, s.epoch] for s in t.shards] for t in self.sm.topics()}
        assert got == self.topics
        assert self.sm.config() == self.config

    @invariant()
    def restore_is_identity(self) -> None:
        assert MetaStateMachine.restore(self.sm.snapshot()).digest() == self.sm.digest()


MetaVsReference.TestCase.settings = settings(max_examples=60, stateful_step_count=30,
                                             deadline=None)
test_meta_against_reference = MetaVsReference.TestCase
