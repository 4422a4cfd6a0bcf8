"""The Kafka broker in the simulator (model/kafka.py): delivery, crash durability, group
rebalances, the checkers themselves (planted bugs and synthetic histories), determinism across
processes, config errors, and a seed sweep (slow)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from model.kafka import (
    Assignment,
    CEvent,
    Commit,
    ConfigError,
    FaultSpec,
    KafkaChecker,
    KafkaWorld,
    ProdRecord,
    config_from_dict,
    decode_assignment,
    encode_assignment,
    load_config,
    main,
    range_assign,
    run,
)

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "kafka-sim.toml"
# The sweep is the only simulator test that catches an acknowledgement sent before the
# durable point across crashes; its first seeds (about 1 s each) run in the default suite.
SMOKE_SEEDS = 3


def scenario(**overrides: Any) -> dict[str, Any]:
    """A small world: one idempotent producer (5 in flight), one plain producer, a group of two
    consumers and one reader on a 3-partition topic; no faults."""
    raw: dict[str, Any] = {
        "name": "test", "duration_ms": 900, "seed": 7, "warmup_ms": 50, "heal_ms": 500,
        "network": {"latency": {"dist": "uniform", "low_ms": 0.5, "high_ms": 1.5}},
        "producers": [
            {"count": 1, "rate_per_s": 200, "idempotent": True, "inflight_max": 5,
             "batch_records_max": 4},
            {"count": 1, "rate_per_s": 100, "idempotent": False, "acks": 1},
        ],
        "groups": [{"count": 2, "session_timeout_ms": 200, "heartbeat_interval_ms": 40,
                    "commit_interval_ms": 50}],
        "readers": [{"count": 1}],
    }
    raw.update(overrides)
    return raw


def crash_scenario(state_log: str = "journal", seed: int = 3) -> dict[str, Any]:
    """The broker loses power at 250 ms and 600 ms (back 30-60 ms later); clients are dropped
    at 150 and 420 ms."""
    return scenario(
        seed=seed, state_log=state_log, duration_ms=1300, heal_ms=800,
        faults={"broker_crash_at_ms": [250, 600],
                "broker_restart": {"dist": "uniform", "low_ms": 30, "high_ms": 60},
                "client_drop_at_ms": [150, 420],
                "client_reconnect": {"dist": "uniform", "low_ms": 5, "high_ms": 30}})


def assert_clean(result: dict[str, Any]) -> None:
    for key in ("lost", "offset_conflicts", "gaps", "skips", "duplicates_idempotent",
                "order_violations", "commit_regressions", "owner_conflicts",
                "unfinished_at_end", "unconsumed"):
        assert result[key] == 0, (key, result["detail"], result["reproduce"])
    assert result["outcome"] == "ok", result["detail"]


def test_no_faults_every_record_reaches_the_group_and_the_reader() -> None:
    result = run(config_from_dict(scenario()))
    assert_clean(result)
    assert result["produced"] > 100 and result["acked"] == result["produced"]
    # each record once to the group (some member) and once to the reader, nothing more
    assert result["received"] == 2 * result["acked"]
    assert result["duplicates_allowed"] == 0
    assert result["commits"] > 0 and result["generations"] >= 1
    # produce: one hop each way (0.5-1.5 ms) plus the group commit (2 ms) and an fsync
    assert 2.0 <= result["ack_latency_p50_ms"] <= 8.0
    assert result["faults"] == {"broker_crash": 0, "client_drop": 0, "delay_spike": 0,
                                "consumer_pause": 0}


def test_broker_crashes_pass_every_checker() -> None:
    result = run(config_from_dict(crash_scenario("journal")))
    assert_clean(result)
    assert result["faults"]["broker_crash"] == 2 and result["fs_crashes"] == 2
    assert result["faults"]["client_drop"] == 2
    assert result["recovered_batches"] > 0
    assert result["acked"] == result["produced"] > 150
    # the group lost its coordinator state twice: at least one generation per incarnation
    assert result["generations"] >= 3


def test_checker_catches_a_broker_that_loses_partitions_on_crash() -> None:
    """The same run with MemoryEngine shards that a crash wipes: offsets get reused."""
    result = run(config_from_dict(crash_scenario("memory")))
    assert result["outcome"] == "safety", result
    assert result["offset_conflicts"] > 0
    assert "holding two different records" in result["detail"]


def test_checker_catches_an_acknowledged_batch_that_was_dropped() -> None:
    world = KafkaWorld(config_from_dict(scenario(bugs=["drop-acked-batch"], bug_at_ms=200)),
                       keep_trace=True)
    result = world.run()
    assert world.trace.kinds["bug"] >= 1
    assert result["outcome"] == "safety", result
    assert result["lost"] > 0 or result["offset_conflicts"] > 0
    assert result["lost"] + result["offset_conflicts"] > 0


def dedupe_scenario(bugs: list[str]) -> dict[str, Any]:
    """An idempotent producer whose connection is dropped 25 times a second: requests the broker
    appended get re-sent, and only the broker's dedupe keeps them single."""
    return scenario(
        bugs=bugs, seed=5, duration_ms=900, heal_ms=550,
        producers=[{"count": 1, "rate_per_s": 400, "idempotent": True, "inflight_max": 5,
                    "batch_records_max": 2}],
        groups=[], readers=[{"count": 1}],
        faults={"client_drop_rate_per_s": 25, "client_drop_targets": "producers",
                "client_reconnect": {"dist": "uniform", "low_ms": 1, "high_ms": 3}})


def test_disabled_dedupe_with_retries_fires_the_duplicate_checker() -> None:
    clean = run(config_from_dict(dedupe_scenario([])))
    assert_clean(clean)
    assert clean["faults"]["client_drop"] >= 5
    broken = run(config_from_dict(dedupe_scenario(["no-dedupe"])))
    assert broken["outcome"] == "safety", broken
    assert broken["duplicates_idempotent"] > 0
    assert "duplicate(s) from idempotent producers" in broken["detail"]


def test_group_rebalances_when_a_consumer_pauses_past_its_session_timeout() -> None:
    """cons0 freezes at 300 ms for 500 ms (session 200 ms): the coordinator expels it and cons1
    takes every partition; when cons0 wakes, its heartbeat fails, it rejoins and the partitions
    are split again. No record is lost or skipped on the way."""
    raw = scenario(duration_ms=1300, heal_ms=900,
                   faults={"consumer_pause_at_ms": [300],
                           "consumer_pause_ms": {"dist": "fixed", "ms": 500}})
    world = KafkaWorld(config_from_dict(raw))
    result = world.run()
    assert_clean(result)
    assert result["faults"]["consumer_pause"] == 1
    h = world.history
    during = [a for a in h.assignments if 300_000 < a.t_us < 800_000]
    assert during, h.assignments
    assert during[-1].partitions == (0, 1, 2)
    assert len({a.member for a in during}) == 1  # only the member still awake
    after = [a for a in h.assignments if a.t_us > 800_000]
    assert after, h.assignments
    latest = [a for a in after if a.generation == after[-1].generation]
    assert len({a.member for a in latest}) == 2
    assert sorted(p for a in latest for p in a.partitions) == [0, 1, 2]
    assert result["generations"] >= 3


def _empty_world() -> KafkaWorld:
    return KafkaWorld(config_from_dict(scenario(producers=[], groups=[], readers=[])))


def test_checker_flags_skips_order_commit_regressions_and_double_owners() -> None:
    world = _empty_world()
    h = world.history
    for seq, off in [(0, 0), (1, 1), (2, 2)]:
        h.records[(0, seq)] = ProdRecord(0, seq, 0, partition=0, first_sent_us=1,
                                         acked_us=2, offset=off)
    # a reader that sought 0, got 0, then 2 (skipped 1), and saw seq 2 before seq 1
    h.cevents += [CEvent(10, "r", 0, "seek", 0, why="earliest"),
                  CEvent(11, "r", 0, "recv", 0, 0, 0), CEvent(12, "r", 0, "recv", 2, 0, 1),
                  CEvent(13, "r", 0, "recv", 1, 0, 2)]
    h.commits += [Commit(20, "g", "m1", 1, 5, 0, 10), Commit(21, "g", "m1", 1, 5, 0, 7),
                  Commit(22, "g", "m1", 2, 15, 0, 3)]  # a new generation may start lower
    h.assignments += [Assignment(5, "g", "m1", 1, (0, 1)), Assignment(6, "g", "m2", 1, (1,)),
                      Assignment(15, "g", "m2", 2, (0, 1))]
    checker = KafkaChecker(world)
    assert checker._skips() == ["r p0 got 2, expected 1", "r p0 got 1, expected 3"]
    assert checker._order([e for e in h.cevents if e.kind == "recv"]) != []
    assert checker._commit_regressions() == ["g gen 1 p0: 10 -> 7"]
    assert checker._owner_conflicts() == ["g gen 1 p1: m1 and m2"]
    report = checker.check()
    assert report["outcome"] == "safety"
    assert report["offset_conflicts"] == 2  # offsets 1 and 2 claimed by two records each


def test_checker_separates_lost_from_not_yet_consumed_and_counts_generations_per_crash() -> None:
    world = _empty_world()
    h = world.history
    h.records[(0, 0)] = ProdRecord(0, 0, 0, partition=0, first_sent_us=1, acked_us=2, offset=0)
    h.records[(0, 1)] = ProdRecord(0, 1, 0, partition=1, first_sent_us=1, acked_us=2, offset=0)
    checker = KafkaChecker(world)
    checker.readers = ["r"]
    # the reader passed offset 0 of partition 0 (it read offset 1) without seeing seq 0
    h.cevents += [CEvent(10, "r", 0, "seek", 1, why="committed"),
                  CEvent(11, "r", 0, "recv", 1, 1, 5)]
    acked = list(h.records.values())
    recvs = [e for e in h.cevents if e.kind == "recv"]
    lost, unconsumed = checker._loss(acked, recvs)
    assert lost == ["prod0#0 (p0@0) -> r"]
    assert unconsumed == ["prod0#1 (p1@0) -> r"]
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
    config = config_from_dict(crash_scenario("journal", seed=5))
    a, b = KafkaWorld(config, keep_trace=True), KafkaWorld(config, keep_trace=True)
    ra, rb = a.run(), b.run()
    assert a.trace.lines == b.trace.lines
    assert ra["trace_hash"] == rb["trace_hash"]
    other = run(dataclasses.replace(config, seed=6))
    assert other["trace_hash"] != ra["trace_hash"]


def _cli_hash(path: Path, hashseed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    proc = subprocess.run([sys.executable, "-m", "model.kafka", str(path), "--seed", "11"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("trace-hash: ")]
    assert len(lines) == 1, proc.stdout
    assert "checkers: lost=ok, offset_conflicts=ok" in proc.stdout
    assert f"reproduce: python -m model.kafka {path} --seed 11" in proc.stdout
    return lines[0].split()[1]


def test_trace_hash_does_not_depend_on_pythonhashseed(tmp_path: Path) -> None:
    text = SCENARIO.read_text().replace("duration_ms = 4000", "duration_ms = 700")
    text = text.replace("heal_ms = 2500", "heal_ms = 450")
    text = text.replace("broker_crash_at_ms = [900]", "broker_crash_at_ms = [250]")
    text = text.replace("consumer_pause_at_ms = [1500]", "consumer_pause_at_ms = [200]")
    text = text.replace("client_drop_rate_per_s = 4", "client_drop_at_ms = [150]\n"
                                                      "client_drop_rate_per_s = 4")
    path = tmp_path / "short.toml"
    path.write_text(text)
    h1, h2 = _cli_hash(path, "1"), _cli_hash(path, "2")
    assert h1 == h2
    config = load_config(path)
    assert config.duration_ms == 700 and config.faults.broker_crash_at_ms == (250.0,)
    result = run(dataclasses.replace(config, seed=11))
    assert result["trace_hash"] == h1
    assert result["faults"]["broker_crash"] >= 1 and result["faults"]["client_drop"] >= 1


@pytest.mark.parametrize(("patch", "message"), [
    ({"colour": 1}, "unknown key 'colour' in scenario.toml"),
    ({"network": {"latency": 1, "jitter": 2}}, "unknown key 'jitter' in [network]"),
    ({"producers": [{"count": 1, "rate": 5}]}, "unknown key 'rate' in [[producers]] #1"),
    ({"producers": [{"count": 1, "inflight_max": 6}]}, "inflight_max must be in 1..5"),
    ({"producers": [{"count": 1, "acks": 0}]}, "acks must be 1 or -1"),
    ({"groups": [{"count": 1, "session_timeout_ms": 50}]}, "session_timeout_ms 50 outside"),
    ({"broker": {"default_partitions": 0}}, "default_partitions must be 1..1024"),
    ({"broker": {"speed": 1}}, "unknown key 'speed' in [broker]"),
    ({"bugs": ["teleport"]}, "'bugs' in scenario.toml: expected a list of"),
    ({"state_log": "tape"}, "state_log must be one of"),
    ({"heal_ms": 5000}, "warmup_ms <= heal_ms <= duration_ms"),
    ({"faults": {"consumer_pause_ms": {"dist": "pareto"}}}, "unknown dist 'pareto'"),
])
def test_config_errors_name_the_key(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(scenario(**patch))
    assert message in str(info.value)


def test_scenario_file_loads_and_cli_reports(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    config = load_config(SCENARIO)
    assert [p.count for p in config.producers] == [2, 1]
    assert config.groups[0].count == 3 and config.readers[0].count == 1
    assert config.broker.default_partitions == 3
    assert main([str(tmp_path / "missing.toml")]) == 4
    assert "scenario file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\nspeed = 3\n")
    assert main([str(bad)]) == 4
    assert "unknown key 'speed' in bad.toml" in capsys.readouterr().err
    assert main([str(SCENARIO), "--bug", "teleport"]) == 4


@pytest.mark.slow
@pytest.mark.parametrize("seed", [
    pytest.param(seed, marks=pytest.mark.smoke) if seed <= SMOKE_SEEDS else seed
    for seed in range(1, 11)])
def test_seed_sweep_of_the_scenario(seed: int) -> None:
    config = dataclasses.replace(load_config(SCENARIO), seed=seed)
    result = KafkaWorld(config).run()
    assert_clean(result)
    assert result["acked"] > 0 and result["faults"]["broker_crash"] >= 1


def test_twinmq_sim_kafka_dispatches(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from scenarios.cli import main as twinmq

    path = tmp_path / "tiny.toml"
    path.write_text("name = 'tiny'\nduration_ms = 300\nheal_ms = 200\n[[groups]]\ncount = 1\n")
    assert twinmq(["sim", "kafka", str(path), "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "scenario: tiny seed 4" in out and "outcome: ok" in out
    assert f"reproduce: python -m model.kafka {path} --seed 4" in out


NODE3 = ROOT / "scenarios" / "node3-kafka.toml"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_three_nodes_meta_over_raft_and_power_loss_of_any_node(seed: int) -> None:
    """Three NodeCores: node 1 serves the clients, meta Raft spans all three (topic creation on
    node 1 is forwarded when another node leads), crashes hit any node. Every checker passes and
    every node that is up has the topic in its replicated meta state."""
    world = KafkaWorld(dataclasses.replace(load_config(NODE3), seed=seed))
    result = world.run()
    assert result["outcome"] == "ok", result
    assert result["acked"] == result["produced"] > 0, result
    up = [h for h in world.hosts.values() if h.core is not None]
    assert len(world.hosts) == 3 and up
    for host in up:
        assert host.core is not None and host.core.replica.sm.topic("events") is not None, host.id


def test_three_node_cluster_forwards_topic_creation_from_a_follower() -> None:
    """Find a seed where node 1 is a follower when its client creates the topic: the create is
    forwarded to the leader and answered on node 1 (the producers get their acks)."""
    world = KafkaWorld(dataclasses.replace(load_config(NODE3), seed=1,
                                           faults=FaultSpec(), duration_ms=1500, heal_ms=1000))
    result = world.run()
    assert result["outcome"] == "ok", result
    node1 = world.hosts[1].core
    assert node1 is not None
    leader = node1.replica.raft.leader
    assert leader != 0
    assert all(h.core is not None and h.core.replica.sm.topic("events") is not None
               for h in world.hosts.values())
    assert result["acked"] == result["produced"] > 0


def test_the_meta_raft_oracles_run_in_the_node_cluster() -> None:
    """The Raft safety checkers watch the hosted nodes' meta replicas: with votes granted without
    the log check and frequent power loss, seed 9 elects a leader missing a committed entry
    (leader completeness); the same seed without the bug is ok."""
    config = load_config(NODE3)
    faults = dataclasses.replace(config.faults, broker_crash_rate_per_s=6.0)
    clean = dataclasses.replace(config, seed=9, faults=faults)
    buggy = dataclasses.replace(clean, cluster=dataclasses.replace(
        config.cluster, raft_bugs=("vote-without-log-check",)))
    result = run(buggy)
    assert result["outcome"] == "safety", result
    assert "leader-completeness" in result["detail"], result["detail"]
    assert run(clean)["outcome"] == "ok"
