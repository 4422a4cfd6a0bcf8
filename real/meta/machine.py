"""The metadata state machine: applied from committed Raft entries, in index order.

Pure and deterministic: no I/O, no clock, no randomness. `apply` never raises on bad input from the
log (it returns `MetaResult(ok=False, error=...)` and still consumes the index); it asserts on
programming errors (an index that does not move forward).
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from real.meta.commands import (
    REPLICAS_MAX,
    Command,
    MetaError,
    Scalar,
    canonical_json,
    decode_command,
)

SNAPSHOT_FORMAT = 1
NODES_MAX = 4096
TOPICS_MAX = 100_000
GROUP_OFFSETS_MAX = 100_000
CONFIG_KEYS_MAX = 10_000
OWNERS_MAX = 10_000_000
CLAIMS_KEPT = 4096


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
    broker_epoch: int = 0
    """The Raft index of the node's latest registration: its heartbeats carry it, so a restarted
    node's old self (an older epoch) is told apart from the new one."""


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """Where one shard lives.

    Unreplicated shards (`replicas` empty): `leader` is the node holding it, or 0 for a shard
    every node keeps its own copy of (the bridge's topics). Replicated shards: `replicas` in
    preference order (the first is the preferred leader), `isr` the in-sync subset (in replica
    order) that the leader's high watermark counts, `leader` a member of `isr` or 0 (offline:
    no in-sync replica is alive). `epoch` is the leader epoch, bumped on every leader change (a
    fencing token); `version` is bumped on every change of leader or ISR (what ISR and election
    commands are fenced on, like KRaft's partition epoch)."""

    leader: int = 0
    epoch: int = 0
    replicas: tuple[int, ...] = ()
    isr: tuple[int, ...] = ()
    version: int = 0

    @property
    def replicated(self) -> bool:
        return bool(self.replicas)


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    engine: str
    shards: tuple[ShardInfo, ...]
    config: tuple[tuple[str, Scalar], ...] = ()
    """Sorted by key."""

    def shared(self, shard: int) -> bool:
        """Whether shard `shard` lives on shared storage: an S3 shard placed on a node (epoch
        >= 1; the bridge's unplaced shards, epoch 0, are each node's own). Replication factor
        1, the object store is the replica: any live node can lead it, under a new epoch."""
        s = self.shards[shard]
        return self.engine == "s3" and not s.replicated and s.epoch > 0


@dataclass(frozen=True, slots=True)
class Owner:
    """The node connection that holds an MQTT client id: node id, the node's process life (a
    random number drawn at start), the connection's number in that life."""

    node: int
    life: int
    conn: int

    def __str__(self) -> str:
        return f"{self.node}:{self.life}:{self.conn}"


@dataclass(frozen=True, slots=True)
class Claim:
    """An applied `mqtt.claim`: at meta index `index`, `owner` took `client` from `prev`."""

    index: int
    client: str
    owner: Owner
    prev: Owner | None


def _fail(error: str) -> MetaResult:
    return MetaResult(ok=False, value=None, error=error)


class MetaStateMachine:
    def __init__(self) -> None:
        self.applied_index = 0
        self._nodes: dict[int, NodeInfo] = {}
        self._topics: dict[str, TopicInfo] = {}
        self._config: dict[str, Scalar] = {}
        self._members: dict[int, str] = {}
        """Meta Raft members added at run time -> their peer (raft) address. The initial
        members' addresses come from each node's configuration; Raft's configuration (not
        this table) says who is a member."""
        # Consumer-group committed offsets: group -> {(topic, partition): (offset, metadata)}.
        self._groups: dict[str, dict[tuple[str, int], tuple[int, str]]] = {}
        self._owners: dict[str, Owner] = {}
        """MQTT client id -> the node connection that holds it (`mqtt.claim`; see
        real/mqtt/claims.py)."""
        self.claims: deque[Claim] = deque()
        """The latest applied claims, oldest first (at most `CLAIMS_KEPT`): each node reads
        the ones it has not seen. Not in snapshots: a node whose machine starts from one (or
        that fell more than `CLAIMS_KEPT` behind) compares its sessions with `owner()` instead;
        `claims_from` is the first index whose claims are all here."""
        self.claims_from = 0
        self._handlers: dict[str, Callable[[dict[str, Any]], MetaResult]] = {
            "node.register": self._node_register,
            "node.unregister": self._node_unregister,
            "member.add": self._member_add,
            "member.remove": self._member_remove,
            "topic.create": self._topic_create,
            "topic.delete": self._topic_delete,
            "shard.set_leader": self._shard_set_leader,
            "shard.set_isr": self._shard_set_isr,
            "shard.elect": self._shard_elect,
            "topic.add_shards": self._topic_add_shards,
            "group.commit": self._group_commit,
            "group.delete": self._group_delete,
            "config.put": self._config_put,
            "config.add": self._config_add,
            "config.delete": self._config_delete,
            "mqtt.claim": self._mqtt_claim,
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
        """Registers (or re-registers, after a restart) a node under a new broker epoch (this
        index). A re-registration fences the node's old self: the replicated shards it led move
        to another in-sync replica (or, if it was the last one, stay with it under a new epoch),
        and it leaves the in-sync sets it shared with others: what it held may have lost an
        unsynced tail, so it rejoins once it has caught up again."""
        info = NodeInfo(**args, broker_epoch=self.applied_index)
        created = info.node_id not in self._nodes
        if created and len(self._nodes) >= NODES_MAX:
            return _fail(f"node.register: node limit reached ({NODES_MAX})")
        self._nodes[info.node_id] = info
        if not created:
            self._fence_restarted(info.node_id)
        return MetaResult(ok=True, value="created" if created else "updated")

    def _fence_restarted(self, node_id: int, leaving: bool = False) -> None:
        """A restarted (or `leaving`) node gives up the replicated shards it leads to another
        in-sync replica and leaves the in-sync sets it shares. A shard it is the last in-sync
        replica of keeps it: under a new epoch after a restart; offline (leader 0) when it
        leaves (the node unregister loop does that)."""
        for name, topic in list(self._topics.items()):
            shards = list(topic.shards)
            changed = False
            for i, s in enumerate(shards):
                if not s.replicated or node_id not in s.isr:
                    continue
                others = tuple(n for n in s.isr if n != node_id and n in self._nodes)
                if s.leader == node_id:
                    if others:
                        shards[i] = replace(s, leader=others[0], epoch=s.epoch + 1, isr=others,
                                            version=s.version + 1)
                    else:
                        shards[i] = replace(s, epoch=s.epoch + 1, version=s.version + 1)
                elif others:
                    shards[i] = replace(s, isr=others, version=s.version + 1)
                else:
                    continue
                changed = True
            if changed:
                self._topics[name] = replace(topic, shards=tuple(shards))

    def _node_unregister(self, args: dict[str, Any]) -> MetaResult:
        node_id = args["node_id"]
        if node_id not in self._nodes:
            return _fail(f"node.unregister: node {node_id} is not registered")
        del self._nodes[node_id]
        orphaned = 0
        self._fence_restarted(node_id, leaving=True)
        for name, topic in self._topics.items():
            if any(s.leader == node_id for s in topic.shards):
                shards = tuple(
                    ShardInfo(0, s.epoch + 1) if s.leader == node_id and not s.replicated
                    else replace(s, leader=0, epoch=s.epoch + 1, version=s.version + 1)
                    if s.leader == node_id else s for s in topic.shards
                )
                orphaned += sum(1 for s in topic.shards if s.leader == node_id)
                self._topics[name] = replace(topic, shards=shards)
        return MetaResult(ok=True, value=orphaned)

    def _member_add(self, args: dict[str, Any]) -> MetaResult:
        """Record the peer address of a node about to join the meta Raft group (before the
        configuration change, so every node can dial it by the time it is a member)."""
        node_id, addr = args["node_id"], args["raft_addr"]
        if self._members.get(node_id) == addr:
            return MetaResult(ok=True, value="unchanged")
        if node_id not in self._members and len(self._members) >= NODES_MAX:
            return _fail(f"member.add: member limit reached ({NODES_MAX})")
        self._members[node_id] = addr
        return MetaResult(ok=True, value="recorded")

    def _member_remove(self, args: dict[str, Any]) -> MetaResult:
        node_id = args["node_id"]
        if self._members.pop(node_id, None) is None:
            return MetaResult(ok=True, value="unknown")
        return MetaResult(ok=True, value="removed")

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
        replication = args.get("replication")
        if replication is not None:
            if leader:
                return _fail("topic.create: 'leader' and 'replication' exclude each other")
            if replication > REPLICAS_MAX:
                return _fail(f"topic.create: replication factor {replication} is over the "
                             f"maximum {REPLICAS_MAX}")
            if replication > len(self._nodes):
                return _fail(f"topic.create: replication factor {replication} is larger than "
                             f"the {len(self._nodes)} registered nodes")
            shards = self._place(args["shards"], replication)
        else:
            shards = tuple(ShardInfo(leader, 1 if leader else 0) for _ in range(args["shards"]))
        self._topics[name] = TopicInfo(name, args["engine"], shards, config)
        return MetaResult(ok=True, value=len(shards))

    def _place(self, count: int, replication: int) -> tuple[ShardInfo, ...]:
        """`count` new replicated shards: each on the `replication` registered nodes holding the
        fewest replicas, led by the one of them leading the fewest shards (ties: lower node id,
        so placement is deterministic). Leader first, the rest in id order."""
        replicas: dict[int, int] = {n: 0 for n in self._nodes}
        leads: dict[int, int] = {n: 0 for n in self._nodes}
        for topic in self._topics.values():
            for s in topic.shards:
                for n in s.replicas:
                    if n in replicas:
                        replicas[n] += 1
                if s.replicated and s.leader in leads:
                    leads[s.leader] += 1
        out = []
        for _ in range(count):
            chosen = sorted(replicas, key=lambda n: (replicas[n], n))[:replication]
            leader = min(chosen, key=lambda n: (leads[n], n))
            order = (leader, *sorted(n for n in chosen if n != leader))
            for n in chosen:
                replicas[n] += 1
            leads[leader] += 1
            out.append(ShardInfo(leader, 1, order, order, 1))
        return tuple(out)

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
        first = topic.shards[0]
        if first.replicated:
            replication = len(first.replicas)
            if replication > len(self._nodes):
                return _fail(f"topic.add_shards: replication factor {replication} is larger "
                             f"than the {len(self._nodes)} registered nodes")
            added = self._place(count - len(topic.shards), replication)
        else:
            leader = first.leader  # an unreplicated topic lives on one node
            added = tuple(ShardInfo(leader, 1 if leader else 0)
                          for _ in range(count - len(topic.shards)))
        shards = topic.shards + added
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
        if current.replicated:
            return _fail(f"shard.set_leader: {name!r}/{shard} is replicated; use shard.elect")
        shards = list(topic.shards)
        shards[shard] = ShardInfo(node_id, epoch)
        self._topics[name] = replace(topic, shards=tuple(shards))
        return MetaResult(ok=True, value=epoch)

    def _replicated_shard(self, op: str, args: dict[str, Any]) -> ShardInfo | str:
        """The replicated shard `args` names, fenced on its epoch and version; or an error."""
        name, shard = args["topic"], args["shard"]
        topic = self._topics.get(name)
        if topic is None:
            return f"{op}: topic {name!r} does not exist"
        if shard >= len(topic.shards):
            return (f"{op}: shard {shard} out of range for topic {name!r} "
                    f"({len(topic.shards)} shards)")
        current = topic.shards[shard]
        if not current.replicated:
            return f"{op}: {name!r}/{shard} is not replicated"
        if (args["epoch"], args["version"]) != (current.epoch, current.version):
            return (f"{op}: stale {name!r}/{shard} at epoch {args['epoch']} version "
                    f"{args['version']} (current {current.epoch}/{current.version})")
        bad = [n for n in args["isr"] if n not in current.replicas]
        if bad:
            return f"{op}: node {bad[0]} in the isr is not a replica of {name!r}/{shard}"
        if op == "shard.set_isr":
            gone = [n for n in args["isr"] if n not in self._nodes]
            if gone:
                return f"{op}: node {gone[0]} in the isr is not registered"
        return current

    def _put_shard(self, name: str, shard: int, info: ShardInfo) -> None:
        topic = self._topics[name]
        shards = list(topic.shards)
        shards[shard] = info
        self._topics[name] = replace(topic, shards=tuple(shards))

    def _shard_set_isr(self, args: dict[str, Any]) -> MetaResult:
        """The shard's leader changes its in-sync set (shrink a lagging follower, add one that
        caught up); fenced on (leader, epoch, version)."""
        current = self._replicated_shard("shard.set_isr", args)
        if isinstance(current, str):
            return _fail(current)
        if args["leader"] != current.leader:
            return _fail(f"shard.set_isr: node {args['leader']} does not lead "
                         f"{args['topic']!r}/{args['shard']} (leader {current.leader})")
        if current.leader not in args["isr"]:
            return _fail(f"shard.set_isr: the isr must hold the leader {current.leader}")
        isr = tuple(n for n in current.replicas if n in args["isr"])
        info = replace(current, isr=isr, version=current.version + 1)
        self._put_shard(args["topic"], args["shard"], info)
        return MetaResult(ok=True, value=info.version)

    def _shard_elect(self, args: dict[str, Any]) -> MetaResult:
        """The controller moves leadership: `leader` must be in the new `isr`, which must be a
        subset of the current one (a clean election), unless `unclean` (any replica, its data
        wins: acknowledged records can be lost). `leader` 0 marks the shard offline, keeping the
        isr (its last members wait to come back). Bumps the leader epoch."""
        current = self._replicated_shard("shard.elect", args)
        if isinstance(current, str):
            return _fail(current)
        leader, isr = args["leader"], tuple(n for n in current.replicas if n in args["isr"])
        if leader and leader not in isr:
            return _fail(f"shard.elect: leader {leader} is not in the isr {list(isr)}")
        if not args.get("unclean", False) or not leader:
            outside = [n for n in isr if n not in current.isr]
            if outside:
                return _fail(f"shard.elect: node {outside[0]} is not in the current isr "
                             f"{list(current.isr)} (an unclean election must say so)")
        elif leader and isr != (leader,):
            return _fail("shard.elect: an unclean election restarts the isr at the leader")
        if leader and leader not in self._nodes:
            return _fail(f"shard.elect: node {leader} is not registered")
        info = replace(current, leader=leader, epoch=current.epoch + 1, isr=isr,
                       version=current.version + 1)
        self._put_shard(args["topic"], args["shard"], info)
        return MetaResult(ok=True, value=info.epoch)

    def _config_put(self, args: dict[str, Any]) -> MetaResult:
        key = args["key"]
        created = key not in self._config
        if created and len(self._config) >= CONFIG_KEYS_MAX:
            return _fail(f"config.put: config key limit reached ({CONFIG_KEYS_MAX})")
        self._config[key] = args["value"]
        return MetaResult(ok=True, value="created" if created else "updated")

    def _config_add(self, args: dict[str, Any]) -> MetaResult:
        """Add `delta` to an integer key (absent: 0); the value is the sum. Atomic, so nodes
        that reserve ranges from one counter at once (Kafka producer ids) get disjoint ones."""
        key = args["key"]
        current = self._config.get(key, 0)
        if type(current) is not int:
            return _fail(f"config.add: config key {key!r} holds {current!r}, not an integer")
        if key not in self._config and len(self._config) >= CONFIG_KEYS_MAX:
            return _fail(f"config.add: config key limit reached ({CONFIG_KEYS_MAX})")
        total = current + args["delta"]
        self._config[key] = total
        return MetaResult(ok=True, value=total)

    def _config_delete(self, args: dict[str, Any]) -> MetaResult:
        key = args["key"]
        if key not in self._config:
            return _fail(f"config.delete: config key {key!r} does not exist")
        del self._config[key]
        return MetaResult(ok=True)

    def _mqtt_claim(self, args: dict[str, Any]) -> MetaResult:
        """Node `node` takes MQTT client id `client` for its connection `conn` (in its process
        life `life`). The value is the previous owner as "node:life:conn" ("" if none): the
        claimant waits for that node to hand the session over (real/mqtt/claims.py)."""
        owner = Owner(args["node"], args["life"], args["conn"])
        client = args["client"]
        prev = self._owners.get(client)
        if prev is None and len(self._owners) >= OWNERS_MAX:
            return _fail(f"mqtt.claim: client id limit reached ({OWNERS_MAX})")
        self._owners[client] = owner
        self.claims.append(Claim(self.applied_index, client, owner, prev))
        if len(self.claims) > CLAIMS_KEPT:
            self.claims.popleft()
            self.claims_from = self.claims[0].index
        return MetaResult(ok=True, value=str(prev) if prev is not None else "")

    # ---- queries -------------------------------------------------------------------------------

    def owner(self, client: str) -> Owner | None:
        """The node connection that last claimed MQTT client id `client`."""
        return self._owners.get(client)

    def get_config(self, key: str) -> Scalar | None:
        return self._config.get(key)

    def config(self) -> dict[str, Scalar]:
        return {k: self._config[k] for k in sorted(self._config)}

    def members(self) -> dict[int, str]:
        """Peer addresses of the meta members added at run time (`member.add`), by node id."""
        return dict(sorted(self._members.items()))

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
                if shard.replicated:
                    assert len(set(shard.replicas)) == len(shard.replicas), (name, shard)
                    assert all(n >= 1 for n in shard.replicas) and shard.version >= 1, shard
                    assert shard.isr, (name, shard)
                    assert list(shard.isr) == [n for n in shard.replicas if n in shard.isr]
                    assert shard.leader == 0 or shard.leader in shard.isr, (name, shard)
                else:
                    assert not shard.isr and shard.version == 0, (name, shard)

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
        if self._members:  # absent when empty, as "groups"
            image["members"] = {str(n): a for n, a in sorted(self._members.items())}
        if self._owners:  # absent when empty, as "groups"
            image["mqtt_owners"] = [[c, o.node, o.life, o.conn]
                                    for c, o in sorted(self._owners.items())]
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
    out = {"addr": n.addr, "admin_addr": n.admin_addr, "kafka_addr": n.kafka_addr,
           "mqtt_addr": n.mqtt_addr, "node_id": n.node_id}
    if n.broker_epoch:  # absent when 0, so snapshots from before broker epochs stay canonical
        out["broker_epoch"] = n.broker_epoch
    return out


def _shard_json(s: ShardInfo) -> list[Any]:
    if not s.replicated:  # the short form, as before replication
        return [s.leader, s.epoch]
    return [s.leader, s.epoch, list(s.replicas), list(s.isr), s.version]


def _topic_json(t: TopicInfo) -> dict[str, Any]:
    return {"config": dict(t.config), "engine": t.engine, "name": t.name,
            "shards": [_shard_json(s) for s in t.shards]}


def _shard_from_json(item: Any) -> ShardInfo:
    assert type(item) is list and len(item) in (2, 5), f"shard {item!r}"
    if len(item) == 2:
        return ShardInfo(int(item[0]), int(item[1]))
    leader, epoch, replicas, isr, version = item
    return ShardInfo(int(leader), int(epoch), tuple(int(n) for n in replicas),
                     tuple(int(n) for n in isr), int(version))


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
        shards = tuple(_shard_from_json(item) for item in t["shards"])
        config = tuple(sorted(t["config"].items()))
        sm._topics[t["name"]] = TopicInfo(t["name"], t["engine"], shards, config)
    for group, entries in image.get("groups", {}).items():
        assert type(group) is str and entries, f"group {group!r}"
        sm._groups[group] = {(str(t), int(p)): (int(o), str(m)) for t, p, o, m in entries}
    members = image.get("members", {})
    assert type(members) is dict and all(type(a) is str for a in members.values()), "members"
    sm._members = {int(n): a for n, a in members.items()}
    for client, node, life, conn in image.get("mqtt_owners", []):
        assert type(client) is str and client and all(type(v) is int and v >= 0
                                                      for v in (node, life, conn)), "owners"
        sm._owners[client] = Owner(node, life, conn)
    sm.claims_from = sm.applied_index + 1
    assert all(n >= 1 for n in sm._members), "members"
    return sm
