"""The metadata state machine: applied from committed Raft entries, in index order.

Pure and deterministic: no I/O, no clock, no randomness. `apply` never raises on bad input from the
log (it returns `MetaResult(ok=False, error=...)` and still consumes the index); it asserts on
programming errors (an index that does not move forward).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from real.meta.commands import Command, MetaError, Scalar, canonical_json, decode_command

SNAPSHOT_FORMAT = 1
NODES_MAX = 4096
TOPICS_MAX = 100_000
GROUP_OFFSETS_MAX = 100_000
CONFIG_KEYS_MAX = 10_000


@dataclass(frozen=True, slots=True)
class MetaResult:
    ok: bool
    value: Any = None
    error: str = ""

    def __post_init__(self) -> None:
        assert self.ok == (self.error == ""), self
        assert self.ok or self.value is None, self


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: int
    addr: str
    mqtt_addr: str = ""
    kafka_addr: str = ""
    admin_addr: str = ""


@dataclass(frozen=True, slots=True)
class ShardInfo:
    leader: int = 0
    """0 means no leader."""
    epoch: int = 0
    """Bumped on every leader change; a fencing token for the shard's leader."""


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    engine: str
    shards: tuple[ShardInfo, ...]
    config: tuple[tuple[str, Scalar], ...] = ()
    """Sorted by key."""


def _fail(error: str) -> MetaResult:
    return MetaResult(ok=False, value=None, error=error)


class MetaStateMachine:
    def __init__(self) -> None:
        self.applied_index = 0
        self._nodes: dict[int, NodeInfo] = {}
        self._topics: dict[str, TopicInfo] = {}
        self._config: dict[str, Scalar] = {}
        # Consumer-group committed offsets: group -> {(topic, partition): (offset, metadata)}.
        self._groups: dict[str, dict[tuple[str, int], tuple[int, str]]] = {}
        self._handlers: dict[str, Callable[[dict[str, Any]], MetaResult]] = {
            "node.register": self._node_register,
            "node.unregister": self._node_unregister,
            "topic.create": self._topic_create,
            "topic.delete": self._topic_delete,
            "shard.set_leader": self._shard_set_leader,
            "topic.add_shards": self._topic_add_shards,
            "group.commit": self._group_commit,
            "group.delete": self._group_delete,
            "config.put": self._config_put,
            "config.delete": self._config_delete,
        }

    # ---- apply ---------------------------------------------------------------------------------

    def apply(self, index: int, data: bytes) -> MetaResult:
        """Apply the committed entry `index` carrying `data` (b"" is a no-op entry)."""
        assert type(index) is int and index >= 1, index
        assert index > self.applied_index, f"index {index} <= applied_index {self.applied_index}"
        self.applied_index = index
        if not data:
            return MetaResult(ok=True)
        cmd = decode_command(bytes(data))
        if isinstance(cmd, MetaError):
            return _fail(str(cmd))
        assert isinstance(cmd, Command)
        result = self._handlers[cmd.op](cmd.args)
        assert self.applied_index == index
        assert len(self._nodes) <= NODES_MAX and len(self._topics) <= TOPICS_MAX
        return result

    def _node_register(self, args: dict[str, Any]) -> MetaResult:
        info = NodeInfo(**args)
        created = info.node_id not in self._nodes
        if created and len(self._nodes) >= NODES_MAX:
            return _fail(f"node.register: node limit reached ({NODES_MAX})")
        self._nodes[info.node_id] = info
        return MetaResult(ok=True, value="created" if created else "updated")

    def _node_unregister(self, args: dict[str, Any]) -> MetaResult:
        node_id = args["node_id"]
        if node_id not in self._nodes:
            return _fail(f"node.unregister: node {node_id} is not registered")
        del self._nodes[node_id]
        orphaned = 0
        for name, topic in self._topics.items():
            if any(s.leader == node_id for s in topic.shards):
                shards = tuple(
                    ShardInfo(0, s.epoch + 1) if s.leader == node_id else s for s in topic.shards
                )
                orphaned += sum(1 for s in topic.shards if s.leader == node_id)
                self._topics[name] = replace(topic, shards=shards)
        return MetaResult(ok=True, value=orphaned)

    def _topic_create(self, args: dict[str, Any]) -> MetaResult:
        name = args["name"]
        if name in self._topics:
            return _fail(f"topic.create: topic {name!r} already exists")
        if len(self._topics) >= TOPICS_MAX:
            return _fail(f"topic.create: topic limit reached ({TOPICS_MAX})")
        config = tuple(sorted(args.get("config", {}).items()))
        leader = args.get("leader", 0)
        if leader and leader not in self._nodes:
            return _fail(f"topic.create: leader node {leader} is not registered")
        shards = tuple(ShardInfo(leader, 1 if leader else 0) for _ in range(args["shards"]))
        self._topics[name] = TopicInfo(name, args["engine"], shards, config)
        return MetaResult(ok=True, value=len(shards))

    def _topic_delete(self, args: dict[str, Any]) -> MetaResult:
        name = args["name"]
        if name not in self._topics:
            return _fail(f"topic.delete: topic {name!r} does not exist")
        del self._topics[name]
        for group in list(self._groups):
            offsets = self._groups[group]
            for key in [k for k in offsets if k[0] == name]:
                del offsets[key]
        return MetaResult(ok=True)

    def _topic_add_shards(self, args: dict[str, Any]) -> MetaResult:
        name, count = args["name"], args["shards"]
        topic = self._topics.get(name)
        if topic is None:
            return _fail(f"topic.add_shards: topic {name!r} does not exist")
        if count <= len(topic.shards):
            return _fail(f"topic.add_shards: topic {name!r} has {len(topic.shards)} shards; "
                         f"the new count must be larger, got {count}")
        leader = topic.shards[0].leader if topic.shards else 0  # a topic lives on one node
        shards = topic.shards + tuple(ShardInfo(leader, 1 if leader else 0)
                                      for _ in range(count - len(topic.shards)))
        self._topics[name] = replace(topic, shards=shards)
        return MetaResult(ok=True, value=count)

    def _group_commit(self, args: dict[str, Any]) -> MetaResult:
        offsets = self._groups.setdefault(args["group"], {})
        for topic, partition, offset, metadata in args["offsets"]:
            if len(offsets) >= GROUP_OFFSETS_MAX and (topic, partition) not in offsets:
                return _fail(f"group.commit: group {args['group']!r} has the maximum of "
                             f"{GROUP_OFFSETS_MAX} committed partitions")
            offsets[(topic, partition)] = (offset, metadata)
        return MetaResult(ok=True, value=len(args["offsets"]))

    def _group_delete(self, args: dict[str, Any]) -> MetaResult:
        if self._groups.pop(args["group"], None) is None:
            return _fail(f"group.delete: group {args['group']!r} has no committed offsets")
        return MetaResult(ok=True)

    def _shard_set_leader(self, args: dict[str, Any]) -> MetaResult:
        name, shard, node_id = args["topic"], args["shard"], args["node_id"]
        topic = self._topics.get(name)
        if topic is None:
            return _fail(f"shard.set_leader: topic {name!r} does not exist")
        if shard >= len(topic.shards):
            return _fail(f"shard.set_leader: shard {shard} out of range for topic {name!r} "
                         f"({len(topic.shards)} shards)")
        if node_id not in self._nodes:
            return _fail(f"shard.set_leader: node {node_id} is not registered")
        current = topic.shards[shard]
        epoch = args.get("epoch", current.epoch + 1)
        if epoch <= current.epoch:
            return _fail(f"shard.set_leader: stale epoch {epoch} for {name!r}/{shard} "
                         f"(current {current.epoch})")
        shards = list(topic.shards)
        shards[shard] = ShardInfo(node_id, epoch)
        self._topics[name] = replace(topic, shards=tuple(shards))
        return MetaResult(ok=True, value=epoch)

    def _config_put(self, args: dict[str, Any]) -> MetaResult:
        key = args["key"]
        created = key not in self._config
        if created and len(self._config) >= CONFIG_KEYS_MAX:
            return _fail(f"config.put: config key limit reached ({CONFIG_KEYS_MAX})")
        self._config[key] = args["value"]
        return MetaResult(ok=True, value="created" if created else "updated")

    def _config_delete(self, args: dict[str, Any]) -> MetaResult:
        key = args["key"]
        if key not in self._config:
            return _fail(f"config.delete: config key {key!r} does not exist")
        del self._config[key]
        return MetaResult(ok=True)

    # ---- queries -------------------------------------------------------------------------------

    def get_config(self, key: str) -> Scalar | None:
        return self._config.get(key)

    def config(self) -> dict[str, Scalar]:
        return {k: self._config[k] for k in sorted(self._config)}

    def nodes(self) -> list[NodeInfo]:
        return [self._nodes[n] for n in sorted(self._nodes)]

    def node(self, node_id: int) -> NodeInfo | None:
        return self._nodes.get(node_id)

    def topics(self) -> list[TopicInfo]:
        return [self._topics[t] for t in sorted(self._topics)]

    def topic(self, name: str) -> TopicInfo | None:
        return self._topics.get(name)

    def committed(self, group: str) -> dict[tuple[str, int], tuple[int, str]]:
        """(topic, partition) -> (offset, metadata) committed for `group` (a copy)."""
        return dict(self._groups.get(group, {}))

    def groups(self) -> list[str]:
        """Groups that have committed offsets, sorted."""
        return sorted(g for g, offsets in self._groups.items() if offsets)

    def invariants(self) -> None:
        """Full consistency check (O(state)); tests call it after every apply."""
        assert self.applied_index >= 0
        for node_id, info in self._nodes.items():
            assert info.node_id == node_id, (node_id, info)
        for name, topic in self._topics.items():
            assert topic.name == name, (name, topic)
            assert 1 <= len(topic.shards), topic
            assert list(topic.config) == sorted(dict(topic.config).items()), topic
            for shard in topic.shards:
                assert shard.leader == 0 or shard.leader in self._nodes, (name, shard)
                assert shard.epoch >= 0 and (shard.leader == 0 or shard.epoch >= 1), (name, shard)

    # ---- snapshots -----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Canonical bytes of the whole state: equal states give equal bytes."""
        image = {
            "applied_index": self.applied_index,
            "config": self.config(),
            "format": SNAPSHOT_FORMAT,
            "nodes": [_node_json(n) for n in self.nodes()],
            "topics": [_topic_json(t) for t in self.topics()],
        }
        groups = {g: _offsets_json(self._groups[g]) for g in self.groups()}
        if groups:  # absent when empty, so snapshots from before group offsets stay canonical
            image["groups"] = groups
        return canonical_json(image)

    def digest(self) -> str:
        return hashlib.sha256(self.snapshot()).hexdigest()

    @staticmethod
    def restore(data: bytes) -> MetaStateMachine:
        """Rebuild from `snapshot()` bytes. Raises MetaError (naming the part) if they are not a
        canonical snapshot."""
        try:
            image = json.loads(bytes(data).decode("utf-8"))
            sm = _from_image(image)
            sm.invariants()
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AssertionError) as exc:
            raise MetaError(f"bad meta snapshot: {type(exc).__name__}: {exc}") from exc
        if sm.snapshot() != bytes(data):
            raise MetaError("bad meta snapshot: not in canonical form")
        return sm

    @staticmethod
    def at_snapshot(index: int, data: bytes) -> MetaStateMachine:
        """The machine a Raft snapshot at `index` stands for. Empty `data` is the empty state at
        that index (Raft's bootstrap snapshot carries no application image). Both shells restore
        through this, so their digests agree."""
        if data:
            sm = MetaStateMachine.restore(data)
        else:
            sm = MetaStateMachine()
            if index > 0:
                sm.apply(index, b"")
        assert sm.applied_index == index, (sm.applied_index, index)
        return sm


def _node_json(n: NodeInfo) -> dict[str, Any]:
    return {"addr": n.addr, "admin_addr": n.admin_addr, "kafka_addr": n.kafka_addr,
            "mqtt_addr": n.mqtt_addr, "node_id": n.node_id}


def _topic_json(t: TopicInfo) -> dict[str, Any]:
    return {"config": dict(t.config), "engine": t.engine, "name": t.name,
            "shards": [[s.leader, s.epoch] for s in t.shards]}


def _offsets_json(offsets: dict[tuple[str, int], tuple[int, str]]) -> list[list[Any]]:
    return [[t, p, o, m] for (t, p), (o, m) in sorted(offsets.items())]


def node_json(n: NodeInfo) -> dict[str, Any]:
    """JSON-ready view of a node (the admin API uses it)."""
    return _node_json(n)


def topic_json(t: TopicInfo) -> dict[str, Any]:
    return _topic_json(t)


def _from_image(image: Any) -> MetaStateMachine:
    assert type(image) is dict, "snapshot must be a JSON object"
    assert image["format"] == SNAPSHOT_FORMAT, f"unknown format {image['format']!r}"
    sm = MetaStateMachine()
    assert type(image["applied_index"]) is int and image["applied_index"] >= 0, "applied_index"
    sm.applied_index = image["applied_index"]
    assert type(image["config"]) is dict, "config"
    sm._config = dict(image["config"])
    for n in image["nodes"]:
        info = NodeInfo(**n)
        assert type(info.node_id) is int and info.node_id >= 1, f"node_id {info.node_id!r}"
        sm._nodes[info.node_id] = info
    for t in image["topics"]:
        shards = tuple(ShardInfo(int(leader), int(epoch)) for leader, epoch in t["shards"])
        config = tuple(sorted(t["config"].items()))
        sm._topics[t["name"]] = TopicInfo(t["name"], t["engine"], shards, config)
    for group, entries in image.get("groups", {}).items():
        assert type(group) is str and entries, f"group {group!r}"
        sm._groups[group] = {(str(t), int(p)): (int(o), str(m)) for t, p, o, m in entries}
    return sm
