"""Kafka clients in the one simulated world (model/world.py, model/workloads/kafka.py): delivery,
crash durability, group rebalances, the checkers themselves (planted bugs and synthetic
histories), determinism across processes, scenario errors, three nodes with meta Raft, and a
seed sweep (slow)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from model.__main__ import main
from model.checkers.kafka import Assignment, CEvent, Commit, KafkaChecker, ProdRecord
from model.scenario import FaultConfig, Scenario, ScenarioError, from_dict, load
from model.workloads.kafka import (
    KafkaWorkload,
    decode_assignment,
    encode_assignment,
    range_assign,
)
from model.world import RunResult, World

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "sim" / "kafka-sim.toml"
NODE3 = ROOT / "scenarios" / "sim" / "node3-kafka.toml"
# The sweep is the only simulator test that catches an acknowledgement sent before the
# durable point across crashes; its first seeds (about 1 s each) run in the default suite.
SMOKE_SEEDS = 3
CLEAN_KEYS = ("lost", "offset_conflicts", "gaps", "skips", "duplicates_idempotent",
              "order_violations", "commit_regressions", "owner_conflicts", "unfinished_at_end",
              "unconsumed")


def scenario(**overrides: Any) -> dict[str, Any]:
    """A small world: one idempotent producer (5 in flight), one plain producer, a group of two
    consumers and one reader on a 3-partition topic; no faults (producing stops at [faults]
    heal_ms all the same)."""
    raw: dict[str, Any] = {
        "name": "test", "duration_ms": 900, "seed": 7, "warmup_ms": 50,
        "clients": {"latency": {"dist": "uniform", "low_ms": 0.5, "high_ms": 1.5}},
        "producers": [
            {"count": 1, "rate_per_s": 200, "idempotent": True, "inflight_max": 5,
             "batch_records_max": 4},
            {"count": 1, "rate_per_s": 100, "idempotent": False, "acks": 1},
        ],
        "groups": [{"count": 2, "session_timeout_ms": 200, "heartbeat_interval_ms": 40,
                    "commit_interval_ms": 50}],
        "readers": [{"count": 1}],
        "faults": {"heal_ms": 500},
    }
    raw.update(overrides)
    return raw


def faults(heal_ms: float, **keys: Any) -> dict[str, Any]:
    """An enabled [faults] table whose scheduled faults may start right away."""
    return {"enabled": True, "start_ms": 0, "heal_ms": heal_ms, **keys}


def clients(reconnect: tuple[float, float]) -> dict[str, Any]:
    return {"latency": {"dist": "uniform", "low_ms": 0.5, "high_ms": 1.5},
            "reconnect": {"dist": "uniform", "low_ms": reconnect[0], "high_ms": reconnect[1]}}


def crash_scenario(state_log: str = "journal", seed: int = 3) -> dict[str, Any]:
    """The node loses power at 250 ms and 600 ms (back 30-60 ms later); clients are dropped
    at 150 and 420 ms."""
    return scenario(
        seed=seed, state_log=state_log, duration_ms=1300, clients=clients((5, 30)),
        faults=faults(800, crash_at_ms=[250, 600],
                      restart={"dist": "uniform", "low_ms": 30, "high_ms": 60},
                      client_drop_at_ms=[150, 420]))


def run(s: Scenario, seed: int | None = None) -> RunResult:
    return World(s, s.seed if seed is None else seed).run()


def kafka_of(world: World) -> KafkaWorkload:
    (workload,) = [w for w in world.workloads if isinstance(w, KafkaWorkload)]
    return workload


def assert_clean(result: RunResult) -> dict[str, Any]:
    r = result.stats["kafka"]
    for key in CLEAN_KEYS:
        assert r[key] == 0, (key, result.detail)
    assert result.outcome == "ok", result.detail
    return r


def test_no_faults_every_record_reaches_the_group_and_the_reader() -> None:
    result = run(from_dict(scenario()))
    r = assert_clean(result)
    assert r["produced"] > 100 and r["acked"] == r["produced"]
    # each record once to the group (some member) and once to the reader, nothing more
    assert r["received"] == 2 * r["acked"]
    assert r["duplicates_allowed"] == 0
    assert r["commits"] > 0 and r["generations"] >= 1
    # produce: one hop each way (0.5-1.5 ms) plus the group commit (2 ms) and an fsync
    assert 2.0 <= r["ack_latency_p50_ms"] <= 8.0
    assert result.stats["faults"] == 0 and "faults_by_kind" not in result.stats
    assert result.stats["nodes"]["crashes"] == 0


def test_node_crashes_pass_every_checker() -> None:
    world = World(from_dict(crash_scenario("journal")), 3)
    result = world.run()
    r = assert_clean(result)
    kinds = result.stats["faults_by_kind"]
    assert kinds["crash"] == 2 and result.stats["nodes"]["crashes"] == 2
    assert world.nodes[1].fs.stats.crashes == 2
    assert kinds["client_drop"] == 2
    assert r["recovered_batches"] > 0
    assert r["acked"] == r["produced"] > 150
    # the group lost its coordinator state twice: at least one generation per incarnation
    assert r["generations"] >= 3


def test_checker_catches_a_broker_that_loses_partitions_on_crash() -> None:
    """The same run with MemoryEngine shards that a crash wipes: offsets get reused."""
    result = run(from_dict(crash_scenario("memory")))
    assert result.outcome == "safety", result.detail
    assert result.stats["kafka"]["offset_conflicts"] > 0
    assert result.detail.startswith("kafka: ")
    assert "holding two different records" in result.detail


def test_checker_catches_an_acknowledged_batch_that_was_dropped() -> None:
    s = from_dict(scenario(broker_bugs=["drop-acked-batch"], broker_bug_at_ms=200))
    world = World(s, 7, keep_trace=True)
    result = world.run()
    assert world.trace.kinds["bug"] >= 1
    assert result.outcome == "safety", result.detail
    r = result.stats["kafka"]
    assert r["lost"] + r["offset_conflicts"] > 0
    # the same run without the bug is clean
    assert_clean(run(from_dict(scenario())))


def dedupe_scenario(bugs: list[str]) -> dict[str, Any]:
    """An idempotent producer whose connection is dropped 25 times a second: requests the broker
    appended get re-sent, and only the broker's dedupe keeps them single."""
    return scenario(
        broker_bugs=bugs, seed=5, duration_ms=900, clients=clients((1, 3)),
        producers=[{"count": 1, "rate_per_s": 400, "idempotent": True, "inflight_max": 5,
                    "batch_records_max": 2}],
        groups=[], readers=[{"count": 1}],
        faults=faults(550, client_drop_rate_per_s=25, client_drop_targets="producers"))


def test_disabled_dedupe_with_retries_fires_the_duplicate_checker() -> None:
    clean = run(from_dict(dedupe_scenario([])))
    assert_clean(clean)
    assert clean.stats["faults_by_kind"]["client_drop"] >= 5
    broken = run(from_dict(dedupe_scenario(["no-dedupe"])))
    assert broken.outcome == "safety", broken.detail
    assert broken.stats["kafka"]["duplicates_idempotent"] > 0
    assert "duplicate(s) from idempotent producers" in broken.detail


def test_group_rebalances_when_a_consumer_pauses_past_its_session_timeout() -> None:
    """cons0 or cons1 freezes at 300 ms for 500 ms (session 200 ms): the coordinator expels it
    and the other member takes every partition; when the paused one wakes, its heartbeat fails,
    it rejoins and the partitions are split again. No record is lost or skipped on the way."""
    raw = scenario(duration_ms=1300,
                   faults=faults(900, consumer_pause_at_ms=[300],
                                 consumer_pause_ms={"dist": "fixed", "ms": 500}))
    world = World(from_dict(raw), 7)
    result = world.run()
    r = assert_clean(result)
    assert result.stats["faults_by_kind"]["consumer_pause"] == 1
    h = kafka_of(world).history
    during = [a for a in h.assignments if 300_000 < a.t_us < 800_000]
    assert during, h.assignments
    assert during[-1].partitions == (0, 1, 2)
    assert len({a.member for a in during}) == 1  # only the member still awake
    after = [a for a in h.assignments if a.t_us > 800_000]
    assert after, h.assignments
    latest = [a for a in after if a.generation == after[-1].generation]
    assert len({a.member for a in latest}) == 2
    assert sorted(p for a in latest for p in a.partitions) == [0, 1, 2]
    assert r["generations"] >= 3


def _idle_workload() -> KafkaWorkload:
    """The workload of a world that never runs (one reader, so that a Kafka workload exists;
    the tests below judge their own consumer sets): its history is filled by hand."""
    s = from_dict(scenario(producers=[], groups=[], readers=[{"count": 1}]))
    return kafka_of(World(s, 7))


def test_checker_flags_skips_order_commit_regressions_and_double_owners() -> None:
    w = _idle_workload()
    h = w.history
    for seq, off in [(0, 0), (1, 1), (2, 2)]:
        h.records[(0, seq)] = ProdRecord(0, seq, 0, partition=0, first_sent_us=1,
                                         acked_us=2, offset=off)
    # a reader that sought 0, got 0, then 2 (skipped 1), and saw seq 2 before seq 1
    h.cevents += [CEvent(10, "r", 0, "seek", 0, why="earliest"),
                  CEvent(11, "r", 0, "recv", 0, 0, 0), CEvent(12, "r", 0, "recv", 2, 0, 1),
                  CEvent(13, "r", 0, "recv", 1, 0, 2)]
    m1, m2 = "c1-0a0a0a0a-1", "c2-0a0a0a0a-2"  # member ids of one coordinator incarnation
    h.commits += [Commit(20, "g", m1, 1, 5, 0, 10), Commit(21, "g", m1, 1, 5, 0, 7),
                  Commit(22, "g", m1, 2, 15, 0, 3),  # a new generation may start lower
                  Commit(23, "g", "c1-0b0b0b0b-1", 1, 16, 0, 1)]  # so may a new incarnation
    h.assignments += [Assignment(5, "g", m1, 1, (0, 1)), Assignment(6, "g", m2, 1, (1,)),
                      Assignment(15, "g", m2, 2, (0, 1)),
                      # generation 2 again, of a restarted coordinator: no conflict with m2's
                      Assignment(30, "g", "c1-0b0b0b0b-1", 2, (0,))]
    checker = KafkaChecker(w)
    checker.readers = []
    assert checker._skips() == ["r p0 got 2, expected 1", "r p0 got 1, expected 3"]
    assert checker._order([e for e in h.cevents if e.kind == "recv"]) != []
    assert checker._commit_regressions() == ["g gen 1 p0: 10 -> 7"]
    assert checker._owner_conflicts() == [f"g gen 1 p1: {m1} and {m2}"]
    report = checker.check()
    assert report["outcome"] == "safety"
    assert report["offset_conflicts"] == 2  # offsets 1 and 2 claimed by two records each


def test_checker_separates_lost_from_not_yet_consumed_and_counts_generations_per_crash() -> None:
    w = _idle_workload()
    h = w.history
    h.records[(0, 0)] = ProdRecord(0, 0, 0, partition=0, first_sent_us=1, acked_us=2, offset=0)
    h.records[(0, 1)] = ProdRecord(0, 1, 0, partition=1, first_sent_us=1, acked_us=2, offset=0)
    checker = KafkaChecker(w)
    checker.readers = ["r"]
    # the reader passed offset 0 of partition 0 (it read offset 1) without seeing seq 0
    h.cevents += [CEvent(10, "r", 0, "seek", 1, why="committed"),
                  CEvent(11, "r", 0, "recv", 1, 1, 5)]
    checker.cevents = list(h.cevents)
    acked = list(h.records.values())
    recvs = [e for e in h.cevents if e.kind == "recv"]
    lost, unconsumed, acks1_lost = checker._loss(acked, [], recvs)
    assert lost == ["prod0#0 (p0@0) -> r"]
    assert unconsumed == ["prod0#1 (p1@0) -> r"]
    assert acks1_lost == []
    report = checker.check()
    assert report["outcome"] == "safety" and report["lost"] == 1 and report["unconsumed"] == 1
    # the same generation id before and after a crash is two different generations
    h.crashes.append(100)
    h.assignments += [Assignment(50, "g", "a", 1, (0,)), Assignment(150, "g", "b", 1, (0,))]
    assert checker._owner_conflicts() == []
    assert checker.check()["generations"] == 2


def test_consumer_protocol_encodings_and_range_assignor() -> None:
    data = encode_assignment("events", [2, 0])
    assert decode_assignment(data, "events") == (0, 2)
    assert decode_assignment(data, "other") == () and decode_assignment(b"", "events") == ()
    assert range_assign(["b", "a"], 5) == {"a": [0, 1, 2], "b": [3, 4]}
    assert range_assign(["a", "b", "c"], 2) == {"a": [0], "b": [1], "c": []}


def test_same_seed_same_trace_and_a_different_seed_differs() -> None:
    s = from_dict(crash_scenario("journal", seed=5))
    a, b = World(s, 5, keep_trace=True), World(s, 5, keep_trace=True)
    ra, rb = a.run(), b.run()
    assert a.trace.lines and a.trace.lines == b.trace.lines
    assert ra.trace_hash == rb.trace_hash and ra.stats == rb.stats
    assert run(s, seed=6).trace_hash != ra.trace_hash


def _cli_hash(path: Path, hashseed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    proc = subprocess.run([sys.executable, "-m", "model", "kafka", str(path), "--seed", "11"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("trace-hash: ")]
    assert len(lines) == 1, proc.stdout
    (stats,) = [json.loads(ln[len("stats: "):]) for ln in proc.stdout.splitlines()
                if ln.startswith("stats: ")]
    assert stats["kafka"]["outcome"] == "ok" and stats["kafka"]["acked"] > 0
    assert stats["kafka"]["lost"] == stats["kafka"]["offset_conflicts"] == 0
    assert f"reproduce: twinmq sim run {path} --seed 11" in proc.stdout
    return lines[0].split()[1]


def test_trace_hash_does_not_depend_on_pythonhashseed(tmp_path: Path) -> None:
    text = SCENARIO.read_text()
    for old, new in [("duration_ms = 4000", "duration_ms = 700"),
                     ("heal_ms = 2500", "heal_ms = 450"),
                     ("crash_at_ms = [900]", "crash_at_ms = [250]"),
                     ("consumer_pause_at_ms = [1500]", "consumer_pause_at_ms = [200]"),
                     ("client_drop_rate_per_s = 4",
                      "client_drop_at_ms = [150]\nclient_drop_rate_per_s = 4")]:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "short.toml"
    path.write_text(text)
    h1, h2 = _cli_hash(path, "1"), _cli_hash(path, "2")
    assert h1 == h2
    s = load(path)
    assert s.duration_ms == 700 and s.faults.crash_at_ms == (250.0,)
    result = run(s, seed=11)
    assert result.trace_hash == h1
    kinds = result.stats["faults_by_kind"]
    assert kinds["crash"] >= 1 and kinds["client_drop"] >= 1


@pytest.mark.parametrize(("patch", "message"), [
    ({"colour": 1}, "unknown key 'colour' in scenario.toml"),
    ({"clients": {"latency": 1, "jitter": 2}}, "unknown key 'jitter' in [clients]"),
    ({"producers": [{"count": 1, "rate": 5}]}, "unknown key 'rate' in [[producers]] #1"),
    ({"producers": [{"count": 1, "inflight_max": 6}]}, "inflight_max must be in 1..5"),
    ({"producers": [{"count": 1, "acks": 0}]}, "acks must be 1 or -1"),
    ({"groups": [{"count": 1, "session_timeout_ms": 50}]}, "session_timeout_ms 50 outside"),
    ({"kafka": {"default_partitions": 0}}, "[kafka] default_partitions must be 1..1024"),
    ({"kafka": {"speed": 1}}, "unknown key 'speed' in [kafka]"),
    ({"kafka": {"default_engine": "memory"}}, "'default_engine' in [kafka] of scenario.toml: "
                                              "set by the simulator"),
    ({"broker_bugs": "teleport"}, "'broker_bugs' in scenario.toml: expected tuple"),
    ({"broker_bugs": ["teleport"]}, "unknown broker bug 'teleport' in broker_bugs"),
    ({"state_log": "tape"}, "state_log must be one of"),
    ({"faults": {"heal_ms": 5000}}, "warmup_ms <= [faults] heal_ms <= duration_ms"),
    ({"faults": {"heal_ms": 500, "consumer_pause_ms": {"dist": "pareto"}}},
     "unknown dist 'pareto'"),
    ({"faults": {"heal_ms": 500, "crash_targets": "brokers"}},
     "[faults] crash_targets must be one of"),
    # the old Kafka world's keys are gone: [broker] (now [kafka]), bugs / bug_at_ms (now
    # broker_bugs / broker_bug_at_ms), top-level heal_ms, [faults] broker_* (crash_*, restart)
    ({"broker": {"default_partitions": 3}}, "unknown key 'broker' in scenario.toml"),
    ({"bugs": ["no-dedupe"]}, "unknown key 'bugs' in scenario.toml"),
    ({"bug_at_ms": 200}, "unknown key 'bug_at_ms' in scenario.toml"),
    ({"heal_ms": 500}, "unknown key 'heal_ms' in scenario.toml"),
    ({"faults": {"broker_crash_rate_per_s": 1}},
     "unknown key 'broker_crash_rate_per_s' in [faults]"),
])
def test_scenario_errors_name_the_key(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        from_dict(scenario(**patch))
    assert message in str(info.value)


def test_scenario_file_loads_and_cli_reports(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    s = load(SCENARIO)
    assert [p.count for p in s.producers] == [2, 1]
    assert s.groups[0].count == 3 and s.readers[0].count == 1
    assert s.kafka.default_partitions == 3 and s.has_kafka and not s.has_mqtt
    assert main(["kafka", str(tmp_path / "missing.toml")]) == 4
    assert "scenario file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\nspeed = 3\n")
    assert main(["kafka", str(bad)]) == 4
    assert "unknown key 'speed' in bad.toml" in capsys.readouterr().err
    assert main(["kafka", str(SCENARIO), "--bug", "teleport"]) == 4
    assert "unknown bug 'teleport'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("seed", [
    pytest.param(seed, marks=pytest.mark.smoke) if seed <= SMOKE_SEEDS else seed
    for seed in range(1, 11)])
def test_seed_sweep_of_the_scenario(seed: int) -> None:
    result = World(load(SCENARIO), seed).run()
    r = assert_clean(result)
    assert r["acked"] > 0 and result.stats["faults_by_kind"]["crash"] >= 1


def test_twinmq_sim_kafka_dispatches(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from scenarios.cli import main as twinmq

    path = tmp_path / "tiny.toml"
    path.write_text("name = 'tiny'\nduration_ms = 300\n[faults]\nheal_ms = 200\n"
                    "[[groups]]\ncount = 1\n")
    assert twinmq(["sim", "kafka", str(path), "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert f"scenario: tiny ({path}) seed 4" in out and "outcome: ok" in out
    assert f"reproduce: twinmq sim run {path} --seed 4" in out
    assert twinmq(["sim", "kafka", str(path), "--seed", "4", "--bug", "no-dedupe"]) == 0
    assert f"reproduce: twinmq sim run {path} --seed 4 --bug no-dedupe" in capsys.readouterr().out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_three_nodes_meta_over_raft_and_power_loss_of_any_node(seed: int) -> None:
    """Three NodeCores: node 1 serves the clients, meta Raft spans all three (topic creation on
    node 1 is forwarded when another node leads), crashes hit any node. Every checker passes and
    every node that is up has the topic in its replicated meta state."""
    world = World(load(NODE3), seed)
    result = world.run()
    assert result.outcome == "ok", result.detail
    r = result.stats["kafka"]
    assert r["acked"] == r["produced"] > 0, r
    up = [h for h in world.nodes.values() if h.core is not None]
    assert len(world.nodes) == 3 and up
    for host in up:
        assert host.core is not None and host.core.replica.sm.topic("events") is not None, host


# a seed of node3-kafka.toml (faults off) where node 2 or 3 wins the first election, so node 1
# is a follower when its clients create the topic
FOLLOWER_SEED = 1


def test_three_node_cluster_forwards_topic_creation_from_a_follower() -> None:
    """Node 1 is a follower when its client creates the topic: the create is forwarded to the
    leader and answered on node 1 (the producers get their acks)."""
    base = load(NODE3)
    s = dataclasses.replace(base, duration_ms=1500.0, faults=FaultConfig(heal_ms=1000.0))
    world = World(s, FOLLOWER_SEED)
    result = world.run()
    assert result.outcome == "ok", result.detail
    node1 = world.nodes[1].core
    assert node1 is not None
    leader = node1.replica.raft.leader
    assert leader not in (0, 1), leader
    assert result.stats["leaders"] == 1  # no other leader ever: node 1 never led
    assert all(h.core is not None and h.core.replica.sm.topic("events") is not None
               for h in world.nodes.values())
    r = result.stats["kafka"]
    assert r["acked"] == r["produced"] > 0


# a seed where, with votes granted without the log check and frequent power loss, a leader
# missing a committed entry is elected
ORACLE_SEED = 4


def test_the_meta_raft_oracles_run_in_the_node_cluster() -> None:
    """The Raft safety checkers watch the hosted nodes' meta replicas: with votes granted without
    the log check and frequent power loss, ORACLE_SEED elects a leader missing a committed entry
    (leader completeness); the same seed without the bug is ok."""
    base = load(NODE3)
    clean = dataclasses.replace(base, faults=dataclasses.replace(base.faults,
                                                                 crash_rate_per_s=6.0))
    buggy = dataclasses.replace(clean, cluster=dataclasses.replace(
        clean.cluster, bugs=("vote-without-log-check",)))
    result = run(buggy, seed=ORACLE_SEED)
    assert result.outcome == "safety", result.detail
    assert "leader-completeness" in result.detail, result.detail
    assert run(clean, seed=ORACLE_SEED).outcome == "ok"
