"""Kafka clients against three nodes with a replicated topic (scenarios/sim/node3-rf3.toml):
clients route by metadata to each partition's leader on any node, follow leader changes after a
node's power loss, lose no acks=all record; the checker's acks=1 rule; determinism."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model.checkers.kafka import CEvent, KafkaChecker, LeaderEvent, ProdRecord
from model.scenario import Scenario, from_dict, read_toml
from model.workloads.kafka import KafkaWorkload
from model.world import RunResult, World

ROOT = Path(__file__).resolve().parents[2]
RF3 = ROOT / "scenarios" / "sim" / "node3-rf3.toml"
CLEAN_KEYS = ("lost", "offset_conflicts", "gaps", "skips", "duplicates_idempotent",
              "order_violations", "commit_regressions", "owner_conflicts", "unfinished_at_end",
              "unconsumed")
QUIET = {"weights": {}, "crash_rate_per_s": 0.0, "client_drop_rate_per_s": 0.0,
         "delay_spike_rate_per_s": 0.0, "consumer_pause_at_ms": []}
"""[faults] keys that silence every fault of node3-rf3.toml but the listed crashes."""


def rf3(**top: Any) -> Scenario:
    """node3-rf3.toml, cut to 2.6 s (heal at 1.6 s, then a 1 s drain), with `top` merged in
    (tables key by key)."""
    raw = read_toml(RF3)
    raw["duration_ms"] = 2600
    raw["faults"]["heal_ms"] = 1600
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return from_dict(raw, source=str(RF3))


def kafka_of(world: World) -> KafkaWorkload:
    (workload,) = [w for w in world.workloads if isinstance(w, KafkaWorkload)]
    return workload


def assert_clean(result: RunResult) -> dict[str, Any]:
    r = result.stats["kafka"]
    for key in CLEAN_KEYS:
        assert r[key] == 0, (key, result.detail)
    assert result.outcome == "ok", result.detail
    return r


def events(world: World) -> list[dict[str, Any]]:
    assert world.trace.lines is not None
    return [json.loads(line) for line in world.trace.lines]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_replicated_cluster_under_faults_passes_every_checker(seed: int) -> None:
    world = World(rf3(), seed, keep_trace=True)
    result = world.run()
    r = assert_clean(result)
    assert r["acked"] == r["produced"] > 300 and r["replicas_min"] == 3
    # each partition on all three nodes, first led by a different one (meta's placement)
    leaders = kafka_of(world).history.leaders
    assert sorted(leaders) == [("events", 0), ("events", 1), ("events", 2)]
    assert sorted(log[0].leader for log in leaders.values()) == [1, 2, 3]
    assert all(log[0].replicas == 3 and len(log[0].isr) == 3 for log in leaders.values())
    trace = events(world)
    # producers acknowledged by more than one node: they follow the leaders
    prod0 = kafka_of(world).producers[0].node
    assert len({e["at"] for e in trace if e["kind"] == "ack" and e["node"] == prod0}) >= 2
    # a client's view of a replicated partition's leader epoch never goes back
    seen: dict[tuple[int, int], int] = {}
    for e in trace:
        if e["kind"] == "route":
            key = (e["node"], e["p"])
            assert e["epoch"] >= seen.get(key, -1), e
            seen[key] = e["epoch"]


def test_power_loss_of_node_1_moves_its_partition_and_loses_no_acks_all_record() -> None:
    """Node 1 (leader of partition 0) loses power at 900 ms and stays down past the session
    timeout: the controller moves partition 0 to another in-sync replica, the clients follow it
    there, and every acks=all record is acknowledged and read by the reader and the group."""
    s = rf3(faults={**QUIET, "crash_at_ms": [900],
                    "restart": {"dist": "uniform", "low_ms": 600, "high_ms": 600}})
    world = World(s, 1, keep_trace=True)
    result = world.run()
    r = assert_clean(result)
    assert result.stats["faults_by_kind"] == {"crash": 1}
    assert r["leader_changes"] >= 1
    log = kafka_of(world).history.leaders[("events", 0)]
    assert log[0].leader == 1
    moved = [e for e in log if e.t_us > 900_000 and e.leader not in (0, 1)]
    assert moved, log
    # the clients followed: a producer sent partition 0 to its new leader and was acknowledged
    trace = events(world)
    assert any(e["kind"] == "route" and e["p"] == 0 and e["leader"] == moved[0].leader
               for e in trace)
    assert any(e["kind"] == "ack" and e["p"] == 0 and e["at"] == moved[0].leader
               for e in trace)
    # every acks=all record reached the reader
    w = kafka_of(world)
    got = {(e.producer, e.seq) for e in w.history.cevents
           if e.kind == "recv" and e.consumer == "reader0"}
    strict = [rec for rec in w.history.records.values() if rec.acks == -1]
    assert strict and all(rec.acked_us >= 0 and (rec.producer, rec.seq) in got
                          for rec in strict)


def test_a_down_nodes_refused_port_moves_its_partition_before_the_session_timeout() -> None:
    """On one machine a killed node's port refuses reconnects: the others learn it 50 ms after
    (`[network] refuse_down_ms`, as real/node/peers.py redials) and the controller moves its
    partition at once. With 0 (a machine that lost power answers nothing) only the session
    timeout finds it dead."""
    moved_after: dict[int, int] = {}
    for refuse in (50, 0):
        s = rf3(faults={**QUIET, "crash_at_ms": [900],
                        "restart": {"dist": "uniform", "low_ms": 600, "high_ms": 600}},
                network={"refuse_down_ms": refuse})
        world = World(s, 1, keep_trace=True)
        assert_clean(world.run())
        log = kafka_of(world).history.leaders[("events", 0)]
        assert log[0].leader == 1
        moved_after[refuse] = next(e.t_us for e in log if e.t_us > 900_000
                                   and e.leader not in (0, 1)) - 900_000
        gone = [e for e in events(world) if e["kind"] == "peer_gone"]
        # a node learns it once it sends to the dead one (a follower whose fetch is parked
        # there sends nothing until its fetch times out)
        assert (gone and {e["node"] for e in gone} <= {2, 3}
                and all(e["peer"] == 1 and e["t"] >= 950_000 for e in gone)) if refuse else not gone
    assert 50_000 <= moved_after[50] < 150_000 < moved_after[0], moved_after


def test_same_seed_same_trace_and_a_different_seed_differs() -> None:
    a = World(rf3(), 5).run()
    b = World(rf3(), 5).run()
    assert a.trace_hash == b.trace_hash and a.stats == b.stats
    assert World(rf3(), 6).run().trace_hash != a.trace_hash


def _checker_with(records: list[ProdRecord], recvs: list[tuple[int, int, int, int]],
                  epochs: list[int]) -> KafkaChecker:
    """A checker over a synthetic history of node3-rf3's clients (not run): `recvs` are
    (partition, offset, producer, seq) read by reader0 from offset 0; partition 0's leader
    epochs in meta are `epochs`."""
    w = kafka_of(World(rf3(), 1))
    h = w.history
    for rec in records:
        h.records[(rec.producer, rec.seq)] = rec
    h.cevents.append(CEvent(10, "reader0", 0, "seek", 0, why="earliest"))
    h.cevents += [CEvent(11, "reader0", p, "recv", off, prod, seq) for p, off, prod, seq in recvs]
    h.leaders[("events", 0)] = [LeaderEvent(i, "events", 0, 1 + i % 3, epoch, epoch, (1, 2, 3), 3)
                                for i, epoch in enumerate(epochs)]
    checker = KafkaChecker(w)
    checker.groups = {}
    return checker


def acked(producer: int, seq: int, offset: int, acks: int, epoch: int) -> ProdRecord:
    return ProdRecord(producer, seq, 0, partition=0, first_sent_us=1, acked_us=2, offset=offset,
                      acks=acks, epoch=epoch)


def test_checker_allows_acks_1_records_lost_in_a_failover_only() -> None:
    """prod2 (acks=1) had seq 0 acknowledged at offset 0 under epoch 1; after a failover to
    epoch 2 the new leader wrote prod0#0 (acks=all) there. Allowed: counted as acks1_lost and
    acks1_overwritten. Under the current epoch, or with acks=all, the same loss is a violation."""
    ok = _checker_with([acked(2, 0, 0, 1, 1), acked(0, 0, 0, -1, 2)], [(0, 0, 0, 0)], [1, 2])
    report = ok.check()
    assert report["outcome"] == "ok", report["detail"]
    assert (report["acks1_at_risk"], report["acks1_lost"],
            report["acks1_overwritten"]) == (1, 1, 1)
    assert report["leader_changes"] == 1
    for records in ([acked(2, 0, 0, 1, 2), acked(0, 0, 0, -1, 2)],  # sent under epoch 2
                    [acked(0, 1, 0, -1, 1), acked(0, 0, 0, -1, 2)]):  # acks=all
        report = _checker_with(records, [(0, 0, 0, 0)], [1, 2]).check()
        assert report["outcome"] == "safety", report
        assert report["offset_conflicts"] >= 1 and report["acks1_lost"] == 0
