"""Kafka partitions on shared storage (S3) across three in-process `NodeCore`s: replication
factor 1 with the object store as the replica, acknowledged only once meta confirmed the
leader still leads, leadership handed to a live node when the leader dies, and a replaced
leader that keeps running (cut off, not dead) never acknowledging or spoiling anything. The
deterministic harness of test_replication.py, with one shared `SimObjectStore`."""

from __future__ import annotations

from real.kafka import errors as E
from real.storage.s3engine import parse_data_key
from tests.server.test_replication import IDS, Cluster, ok_base


def shared_cluster() -> Cluster:
    c = Cluster(engine="s3")
    c.create(2, "s", partitions=1, rf=3, storage_engine="s3")  # shared: RF 1
    c.settle()
    return c


def test_an_s3_topic_is_shared_with_one_replica_and_acks_after_meta_confirms() -> None:
    c = shared_cluster()
    topic = c.cores[1].replica.sm.topic("s")
    assert topic is not None and topic.shared(0)
    shard = c.shard("s", 0)
    assert (shard.leader, shard.epoch, shard.replicas) == (2, 1, ())
    corr = c.produce(2, "s", 0, [b"a", b"b"])
    c.run_until(lambda: c.pending_result(2, corr), 500)
    assert ok_base(c.pending.pop(corr)["responses"][0]["partition_responses"][0]) == 0
    assert c.fetch(2, "s", 0) == (0, 2, [b"a", b"b"])
    err, _hw, _values = c.fetch(1, "s", 0)
    assert err == E.NOT_LEADER_OR_FOLLOWER
    keys = [k for k in c.store.keys() if k.startswith("shared/")]
    assert any(parse_data_key(k.rsplit("/", 1)[0], k) == (0, 1) for k in keys)


def test_shared_and_node_local_s3_shards_have_their_own_prefixes() -> None:
    import random

    from model.devices.objstore import SimObjectStore
    from real.server.storage import StorageSettings, open_engine

    store = SimObjectStore(random.Random(1))
    local = open_engine("s3", "kafka:t:0", StorageSettings(s3_local_prefix="n3"), lambda: 0,
                        store=lambda: store)
    shared = open_engine("s3", "kafka:t:0", StorageSettings(s3_local_prefix="n3"), lambda: 0,
                         store=lambda: store, epoch=2)
    alone = open_engine("s3", "kafka:t:0", StorageSettings(), lambda: 0, store=lambda: store)
    prefixes = [e.prefix for e in (local, shared, alone)]  # type: ignore[attr-defined]
    assert prefixes[0].startswith("n3/") and prefixes[1].startswith("shared/")
    assert prefixes[2] == prefixes[0].removeprefix("n3/")
    try:
        open_engine("file", "x", StorageSettings(), lambda: 0, epoch=1)
    except ValueError as exc:
        assert "only S3 shards" in str(exc)
    else:
        raise AssertionError("a file shard on shared storage")


def test_the_leader_dies_and_a_live_node_takes_over_the_shared_log() -> None:
    c = shared_cluster()
    corr = c.produce(2, "s", 0, [b"a"])
    c.run_until(lambda: c.pending_result(2, corr), 500)
    c.crash(2)
    c.run_until(lambda: c.shard("s", 0).leader not in (0, 2), 5_000)
    new = c.shard("s", 0).leader
    assert c.shard("s", 0).epoch == 2
    corr = c.produce(new, "s", 0, [b"b"])
    c.run_until(lambda: c.pending_result(new, corr), 2_000)
    assert ok_base(c.pending.pop(corr)["responses"][0]["partition_responses"][0]) == 1
    assert c.fetch(new, "s", 0) == (0, 2, [b"a", b"b"])
    c.start(2)  # the old leader comes back: it does not take the partition back
    c.run_until(lambda: c.cores[2].registered, 2_000)
    c.advance(200)
    assert c.shard("s", 0).leader == new
    assert c.fetch(2, "s", 0)[0] == E.NOT_LEADER_OR_FOLLOWER


def test_a_replaced_leader_that_keeps_running_acknowledges_nothing() -> None:
    c = shared_cluster()
    corr = c.produce(2, "s", 0, [b"before"])
    c.run_until(lambda: c.pending_result(2, corr), 500)
    c.cut = {frozenset((2, n)) for n in IDS if n != 2}  # node 2 runs on, cut off
    zombie = c.produce(2, "s", 0, [b"zombie"], timeout_ms=60_000)
    c.run_until(lambda: c.shard("s", 0).leader not in (0, 2), 5_000)
    new = c.shard("s", 0).leader
    corr = c.produce(new, "s", 0, [b"after"])
    c.run_until(lambda: c.pending_result(new, corr), 2_000)
    # the zombie's PUT landed before the takeover's LIST here: adopted (never acknowledged)
    after = ok_base(c.pending.pop(corr)["responses"][0]["partition_responses"][0])
    late = c.produce(2, "s", 0, [b"late"], timeout_ms=60_000)  # PUT after the takeover
    c.advance(500)
    assert not c.pending_result(2, zombie) and not c.pending_result(2, late), \
        "a leader cut off from meta acknowledged a write"
    c.cut = set()
    c.run_until(lambda: c.pending_result(2, zombie) and c.pending_result(2, late), 5_000)
    for corr in (zombie, late):
        body = c.pending.pop(corr)["responses"][0]["partition_responses"][0]
        assert body["error_code"] == E.NOT_LEADER_OR_FOLLOWER, body
    err, _hw, values = c.fetch(new, "s", 0)
    assert err == 0 and values[after] == b"after", values
    assert values[:after] in ([b"before"], [b"before", b"zombie"]), values
    assert b"late" not in values, "a replaced leader's late write entered the log"
