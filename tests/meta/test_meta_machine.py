"""MetaStateMachine: every command, invalid inputs, snapshots, digests."""

from __future__ import annotations

import json

import pytest

from real.meta import (
    MetaError,
    MetaResult,
    MetaStateMachine,
    NodeInfo,
    ShardInfo,
    decode_command,
    encode_command,
)


class Applier:
    """Applies commands at consecutive indexes and checks invariants after each."""

    def __init__(self) -> None:
        self.sm = MetaStateMachine()

    def raw(self, data: bytes) -> MetaResult:
        result = self.sm.apply(self.sm.applied_index + 1, data)
        self.sm.invariants()
        return result

    def __call__(self, op: str, **fields: object) -> MetaResult:
        return self.raw(encode_command(op, **fields))


@pytest.fixture
def a() -> Applier:
    return Applier()


def ok(result: MetaResult) -> object:
    assert result.ok, result.error
    return result.value


def err(result: MetaResult) -> str:
    assert not result.ok and result.value is None, result
    return result.error


def test_encoding_is_canonical() -> None:
    one = encode_command("config.put", value=1, key="k")
    two = encode_command("config.put", key="k", value=1)
    assert one == two == b'{"args":{"key":"k","value":1},"op":"config.put"}'
    assert decode_command(one).op == "config.put"


def test_node_register_and_unregister(a: Applier) -> None:
    assert ok(a("node.register", node_id=2, addr="h:2")) == "created"
    assert ok(a("node.register", node_id=1, addr="h:1", admin_addr="h:8080")) == "created"
    assert ok(a("node.register", node_id=2, addr="h:22")) == "updated"
    assert a.sm.nodes() == [NodeInfo(1, "h:1", admin_addr="h:8080", broker_epoch=2),
                            NodeInfo(2, "h:22", broker_epoch=3)]
    assert ok(a("node.unregister", node_id=2)) == 0
    assert [n.node_id for n in a.sm.nodes()] == [1]
    assert "node 2 is not registered" in err(a("node.unregister", node_id=2))


def test_unregister_clears_shard_leaders(a: Applier) -> None:
    ok(a("node.register", node_id=1, addr="h:1"))
    ok(a("topic.create", name="t", shards=3, engine="file"))
    ok(a("shard.set_leader", topic="t", shard=0, node_id=1))
    ok(a("shard.set_leader", topic="t", shard=2, node_id=1, epoch=7))
    assert ok(a("node.unregister", node_id=1)) == 2
    assert a.sm.topic("t").shards == (ShardInfo(0, 2), ShardInfo(0, 0), ShardInfo(0, 8))


def test_topic_create_delete(a: Applier) -> None:
    assert ok(a("topic.create", name="a/b", shards=4, engine="s3", config={"r": 3})) == 4
    topic = a.sm.topic("a/b")
    assert topic.engine == "s3" and topic.config == (("r", 3),) and len(topic.shards) == 4
    assert "already exists" in err(a("topic.create", name="a/b", shards=1, engine="file"))
    ok(a("topic.create", name="0", shards=1, engine="memory"))
    assert [t.name for t in a.sm.topics()] == ["0", "a/b"]
    assert ok(a("topic.delete", name="a/b")) is None
    assert "does not exist" in err(a("topic.delete", name="a/b"))


def test_shard_set_leader(a: Applier) -> None:
    assert "topic 't' does not exist" in err(a("shard.set_leader", topic="t", shard=0, node_id=1))
    ok(a("topic.create", name="t", shards=2, engine="file"))
    assert "node 1 is not registered" in err(a("shard.set_leader", topic="t", shard=0, node_id=1))
    ok(a("node.register", node_id=1, addr="h:1"))
    assert "out of range" in err(a("shard.set_leader", topic="t", shard=2, node_id=1))
    assert ok(a("shard.set_leader", topic="t", shard=1, node_id=1)) == 1
    assert ok(a("shard.set_leader", topic="t", shard=1, node_id=1, epoch=5)) == 5
    assert "stale epoch 5" in err(a("shard.set_leader", topic="t", shard=1, node_id=1, epoch=5))
    assert a.sm.topic("t").shards == (ShardInfo(), ShardInfo(1, 5))


def test_config_put_delete(a: Applier) -> None:
    assert ok(a("config.put", key="k", value="v")) == "created"
    assert ok(a("config.put", key="k", value=2.5)) == "updated"
    ok(a("config.put", key="b", value=True))
    assert a.sm.get_config("k") == 2.5 and a.sm.get_config("nope") is None
    assert list(a.sm.config()) == ["b", "k"]
    assert ok(a("config.delete", key="k")) is None
    assert "does not exist" in err(a("config.delete", key="k"))


def test_config_add_sums_atomically(a: Applier) -> None:
    assert ok(a("config.add", key="n", delta=1000)) == 1000  # absent counts as 0
    assert ok(a("config.add", key="n", delta=1000)) == 2000
    assert ok(a("config.add", key="n", delta=0)) == 2000
    ok(a("config.put", key="s", value="text"))
    assert "not an integer" in err(a("config.add", key="s", delta=1))
    assert "must be" in str(decode_command(b'{"op":"config.add","args":{"key":"n","delta":-1}}'))


def test_noop_entry_consumes_index(a: Applier) -> None:
    assert a.raw(b"") == MetaResult(ok=True)
    assert a.sm.applied_index == 1


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"{", "not UTF-8 JSON"),
        (b"[1]", "exactly the keys"),
        (b'{"op":"config.put"}', "exactly the keys"),
        (b'{"op":1,"args":{}}', "'op' must be a string"),
        (b'{"op":"config.put","args":[]}', "'args' must be an object"),
        (b'{"op":"nope","args":{}}', "unknown op 'nope'"),
        (b'{"op":"config.put","args":{"key":"k"}}', "missing field 'value'"),
        (b'{"op":"config.put","args":{"key":"k","value":1,"x":2}}', "unknown field 'x'"),
        (b'{"op":"config.put","args":{"key":"","value":1}}', "field 'key' must have 1"),
        (b'{"op":"config.put","args":{"key":"k","value":null}}', "got null"),
        (b'{"op":"config.put","args":{"key":"k","value":NaN}}', "non-finite"),
        (b'{"op":"config.delete","args":{"key":3}}', "field 'key' must be a string, got int"),
        (b'{"op":"node.register","args":{"node_id":true,"addr":"a"}}', "got bool"),
        (b'{"op":"node.register","args":{"node_id":0,"addr":"a"}}', "must be in [1,"),
        (b'{"op":"node.register","args":{"node_id":1,"addr":"a b"}}', "must not contain ' '"),
        (b'{"op":"topic.create","args":{"name":"a+","shards":1,"engine":"file"}}', "'+'"),
        (b'{"op":"topic.create","args":{"name":"a","shards":0,"engine":"file"}}', "'shards'"),
        (b'{"op":"topic.create","args":{"name":"a","shards":1,"engine":"tape"}}', "'engine'"),
        (b'{"op":"topic.create","args":{"name":"a","shards":1,"engine":"file","config":{"k":[]}}}',
         "field 'config' key 'k'"),
        (b'{"op":"shard.set_leader","args":{"topic":"t","shard":-1,"node_id":1}}', "'shard'"),
        (b'{"op":"topic.delete","args":{"name":"' + b"x" * 70000 + b'"}}', "bytes (max"),
        (b"[" * 60000, "not UTF-8 JSON"),
    ],
)
def test_invalid_commands_are_rejected_deterministically(data: bytes, needle: str) -> None:
    results, digests = [], []
    for _ in range(2):
        sm = MetaStateMachine()
        results.append(sm.apply(1, data))
        digests.append(sm.digest())
        assert sm.applied_index == 1
        assert sm.snapshot() == MetaStateMachine().snapshot().replace(b'"applied_index":0',
                                                                       b'"applied_index":1')
    assert results[0] == results[1] and digests[0] == digests[1]
    assert needle in err(results[0]), results[0].error


def test_encode_command_rejects_bad_commands() -> None:
    with pytest.raises(MetaError, match="unknown op 'topic.crate'"):
        encode_command("topic.crate", name="t")
    with pytest.raises(MetaError, match="topic.create: missing field 'engine'"):
        encode_command("topic.create", name="t", shards=1)
    with pytest.raises(MetaError, match="field 'shards' must be an integer, got str"):
        encode_command("topic.create", name="t", shards="1", engine="file")


def test_apply_at_or_below_applied_index_is_a_bug(a: Applier) -> None:
    ok(a("config.put", key="k", value=1))
    with pytest.raises(AssertionError):
        a.sm.apply(1, b"")
    with pytest.raises(AssertionError):
        a.sm.apply(0, b"")


def test_apply_may_skip_forward_after_restore() -> None:
    sm = MetaStateMachine()
    assert sm.apply(10, b"").ok and sm.applied_index == 10


def populated() -> MetaStateMachine:
    a = Applier()
    ok(a("node.register", node_id=10, addr="h:10"))
    ok(a("node.register", node_id=2, addr="h:2", mqtt_addr="h:1883"))
    ok(a("topic.create", name="b", shards=2, engine="rocksdb", config={"z": 1, "a": "x"}))
    ok(a("topic.create", name="a", shards=1, engine="memory"))
    ok(a("shard.set_leader", topic="b", shard=1, node_id=10))
    ok(a("config.put", key="k", value=-1.5))
    err(a.raw(b"garbage"))
    return a.sm


def test_snapshot_restore_round_trip() -> None:
    sm = populated()
    data = sm.snapshot()
    back = MetaStateMachine.restore(data)
    assert back.snapshot() == data and back.digest() == sm.digest()
    assert back.applied_index == sm.applied_index == 7
    assert back.nodes() == sm.nodes() and back.topics() == sm.topics()
    assert back.config() == sm.config()
    assert json.loads(data)["format"] == 1


def test_digest_is_stable() -> None:
    assert populated().digest() == populated().digest()
    # Pinned: a change here changes the on-disk snapshot format; bump SNAPSHOT_FORMAT.
    assert MetaStateMachine().snapshot() == (
        b'{"applied_index":0,"config":{},"format":1,"nodes":[],"topics":[]}'
    )
    assert MetaStateMachine().digest() == (
        "0cb46fa50c8801bf1342904877e76f049ef70874eeb6ca0f04912c156a330610"
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{}",
        b'{"applied_index":0,"config":{},"format":2,"nodes":[],"topics":[]}',
        b'{"applied_index":0, "config":{},"format":1,"nodes":[],"topics":[]}',
        b'{"applied_index":0,"config":{},"format":1,"nodes":[],"topics":[{"x":1}]}',
        b'{"applied_index":0,"config":{},"format":1,"nodes":[],'
        b'"topics":[{"config":{},"engine":"file","name":"t","shards":[[3,1]]}]}',
    ],
)
def test_restore_rejects_bad_snapshots(data: bytes) -> None:
    with pytest.raises(MetaError, match="bad meta snapshot"):
        MetaStateMachine.restore(data)


def test_topic_add_shards_only_grows(a: Applier) -> None:
    ok(a("topic.create", name="t", shards=2, engine="file"))
    assert ok(a("topic.add_shards", name="t", shards=5)) == 5
    assert len(a.sm.topic("t").shards) == 5
    assert "must be larger" in err(a("topic.add_shards", name="t", shards=5))
    assert "does not exist" in err(a("topic.add_shards", name="nope", shards=3))


def test_group_offsets_commit_overwrite_delete_and_topic_delete(a: Applier) -> None:
    ok(a("topic.create", name="t", shards=2, engine="file"))
    ok(a("topic.create", name="u", shards=1, engine="file"))
    ok(a("group.commit", group="g 1", offsets=[["t", 0, 5, ""], ["t", 1, 7, "m"]]))
    ok(a("group.commit", group="g 1", offsets=[["t", 0, 9, "x"], ["u", 0, 1, ""]]))
    assert a.sm.committed("g 1") == {("t", 0): (9, "x"), ("t", 1): (7, "m"), ("u", 0): (1, "")}
    assert a.sm.groups() == ["g 1"]
    # Restores keep committed offsets byte-for-byte.
    back = MetaStateMachine.restore(a.sm.snapshot())
    assert back.committed("g 1") == a.sm.committed("g 1") and back.digest() == a.sm.digest()
    ok(a("topic.delete", name="t"))  # offsets of a deleted topic go with it
    assert a.sm.committed("g 1") == {("u", 0): (1, "")}
    ok(a("group.delete", group="g 1"))
    assert a.sm.groups() == [] and a.sm.committed("g 1") == {}
    assert "no committed offsets" in err(a("group.delete", group="g 1"))
    # Schema: bad entries never reach the log.
    for bad in ([], [["t", 0, -2, ""]], [["t", 0, 1]], [["t#", 0, 1, ""]], [["t", -1, 1, ""]]):
        with pytest.raises(MetaError):
            encode_command("group.commit", group="g", offsets=bad)
    with pytest.raises(MetaError):
        encode_command("group.commit", group="", offsets=[["t", 0, 1, ""]])


def test_member_addresses_are_recorded_forgotten_and_snapshotted(a: Applier) -> None:
    assert ok(a("member.add", node_id=4, raft_addr="10.0.0.4:7004")) == "recorded"
    assert ok(a("member.add", node_id=4, raft_addr="10.0.0.4:7004")) == "unchanged"
    assert ok(a("member.add", node_id=4, raft_addr="10.0.0.9:7004")) == "recorded"
    assert ok(a("member.add", node_id=5, raft_addr="h5:1")) == "recorded"
    assert a.sm.members() == {4: "10.0.0.9:7004", 5: "h5:1"}
    assert "node_id" in err(a.raw(b'{"args":{"node_id":0,"raft_addr":"h:1"},"op":"member.add"}'))
    back = MetaStateMachine.restore(a.sm.snapshot())
    assert back.members() == a.sm.members() and back.digest() == a.sm.digest()
    assert ok(a("member.remove", node_id=4)) == "removed"
    assert ok(a("member.remove", node_id=4)) == "unknown"
    assert a.sm.members() == {5: "h5:1"}
    assert ok(a("member.remove", node_id=5)) == "removed"
    assert "members" not in json.loads(a.sm.snapshot()), "an empty table leaves no trace"
