"""MQTT clients in the one simulated world (model/world.py, model/workloads/mqtt.py): delivery,
crash durability, the checkers themselves, determinism across processes, scenario errors, and a
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
from model.checkers.mqtt import MqttChecker, PubRecord, Receipt
from model.scenario import Scenario, ScenarioError, from_dict, load
from model.workloads.mqtt import MqttWorkload
from model.world import RunResult, World

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "sim" / "mqtt-sim.toml"
# The sweep is the only simulator test that catches an acknowledgement sent before the
# durable point across crashes; its first seeds (about 1 s each) run in the default suite.
SMOKE_SEEDS = 3


def scenario(**overrides: Any) -> dict[str, Any]:
    """A small world: one QoS 1 publisher (v3.1.1), one QoS 2 publisher (v5), a persistent
    QoS 1 subscriber (v3.1.1) and a persistent QoS 2 subscriber (v5); no faults (publishing
    stops at [faults] heal_ms all the same)."""
    raw: dict[str, Any] = {
        "name": "test", "duration_ms": 1200, "seed": 7, "warmup_ms": 50,
        "clients": {"latency": {"dist": "uniform", "low_ms": 1.0, "high_ms": 2.0}},
        "publishers": [
            {"count": 1, "rate_per_s": 200, "qos": 1, "topic": "s/{p}/{k}", "topics": 3},
            {"count": 1, "rate_per_s": 50, "qos": 2, "topic": "o/{p}", "protocol": 5},
        ],
        "subscribers": [
            {"count": 1, "filter": "s/#", "qos": 1, "persistent": True},
            {"count": 1, "filter": "#", "qos": 2, "persistent": True, "protocol": 5},
        ],
        "faults": {"heal_ms": 700},
    }
    raw.update(overrides)
    return raw


def faults(heal_ms: float, **keys: Any) -> dict[str, Any]:
    """An enabled [faults] table whose scheduled faults may start right away."""
    return {"enabled": True, "start_ms": 0, "heal_ms": heal_ms, **keys}


def crash_scenario(state_log: str = "journal", seed: int = 3) -> dict[str, Any]:
    """Subscribers are dropped at 400 ms (offline for 60-80 ms, so messages queue for them) and
    the node loses power at 420 ms and 800 ms, restarting 30-60 ms later."""
    return scenario(
        seed=seed, state_log=state_log, duration_ms=1600,
        clients={"latency": {"dist": "uniform", "low_ms": 1.0, "high_ms": 2.0},
                 "reconnect": {"dist": "uniform", "low_ms": 60, "high_ms": 80}},
        faults=faults(1000, crash_at_ms=[420, 800],
                      restart={"dist": "uniform", "low_ms": 30, "high_ms": 60},
                      client_drop_at_ms=[400, 400.5], client_drop_targets="subscribers"))


def run(s: Scenario, seed: int | None = None) -> RunResult:
    return World(s, s.seed if seed is None else seed).run()


def mqtt_of(world: World) -> MqttWorkload:
    (workload,) = [w for w in world.workloads if isinstance(w, MqttWorkload)]
    return workload


def test_no_faults_every_message_delivered_with_plausible_latency() -> None:
    result = run(from_dict(scenario()))
    assert result.outcome == "ok", result.detail
    r = result.stats["mqtt"]
    assert r["published"] > 150
    assert r["acked"] == r["published"]
    # sub0 (s/#) gets pub0's messages, sub1 (#) gets everyone's: all of them are required
    assert r["required"] == r["delivered"] > r["published"]
    assert r["lost"] == 0 and r["receipts"] == r["delivered"]
    assert r["duplicates_qos1"] == r["duplicates_qos2_without_crash"] == 0
    # two one-way hops of 1..2 ms each, plus a few µs of simulated syscalls; a QoS 2 copy to a
    # persistent session also waits for its packet id to be durable (group commit, 2 ms + sync)
    assert 2.0 <= r["latency_p50_ms"] <= 4.1
    assert r["latency_p99_ms"] <= 4.1 + 2.0 + 1.0
    assert result.stats["faults"] == 0 and "faults_by_kind" not in result.stats
    assert result.stats["nodes"]["crashes"] == 0


def test_bandwidth_limit_shows_in_latency() -> None:
    raw = scenario(clients={"latency": {"dist": "fixed", "ms": 1.0}, "bandwidth_mb_s": 0.1})
    raw["publishers"] = [{"count": 1, "rate_per_s": 20, "qos": 1, "payload_bytes": 1000}]
    raw["subscribers"] = [{"count": 1, "filter": "#", "qos": 1}]
    result = run(from_dict(raw))
    assert result.outcome == "ok", result.detail
    # 1000+ bytes at 100 bytes/ms: 10 ms per hop on top of 1 ms latency, two hops
    assert 22.0 <= result.stats["mqtt"]["latency_p50_ms"] <= 23.0


def test_slow_subscriber_connection_is_bounded_by_high_water() -> None:
    """Two publishers (75 KB/s each) into links of 100 KB/s: the subscribers' connections back
    up; the node is told they are congested, the broker drops QoS 0 for the QoS 0 subscriber
    and queues QoS 1 for the persistent one, so the backlog stays near the high-water mark
    (without the signal it would grow by 50 KB/s)."""
    raw = scenario(clients={"latency": {"dist": "fixed", "ms": 1.0}, "bandwidth_mb_s": 0.1,
                            "write_high_water_bytes": 5000},
                   faults={"heal_ms": 500}, duration_ms=2500, mqtt={"max_inflight": 8})
    raw["publishers"] = [{"count": 2, "rate_per_s": 150, "qos": 1, "payload_bytes": 500}]
    raw["subscribers"] = [{"count": 1, "filter": "#", "qos": 0, "persistent": False},
                          {"count": 1, "filter": "#", "qos": 1}]
    world = World(from_dict(raw), 7)
    result = world.run()
    assert result.outcome == "ok", result.detail
    r = result.stats["mqtt"]
    assert world.trace.kinds["congested"] >= 2
    # at most the high-water mark plus what one un-congesting pump writes (a window of 8)
    assert 5000 < result.stats["clients_net"]["backlog_max"] <= 5000 + 8 * 600
    firsts = {(x.subscriber, x.publisher, x.seq) for x in mqtt_of(world).history.receipts}
    qos0_got = sum(1 for key in firsts if key[0] == 0)
    qos1_got = sum(1 for key in firsts if key[0] == 1)
    assert qos1_got == r["published"] == r["required"]
    assert 0 < qos0_got < r["published"]


def test_node_crashes_lose_no_acknowledged_message() -> None:
    world = World(from_dict(crash_scenario("journal")), 3)
    result = world.run()
    assert result.outcome == "ok", result.detail
    r = result.stats["mqtt"]
    assert result.stats["faults_by_kind"]["crash"] == 2
    assert result.stats["nodes"]["crashes"] == 2 and world.nodes[1].fs.stats.crashes == 2
    assert result.stats["faults_by_kind"]["client_drop"] == 2
    assert r["recovered_records"] > 0
    assert r["required"] > 300 and r["lost"] == 0
    assert r["acked"] == r["published"]
    assert r["duplicates_qos2_without_crash"] == 0


def test_checker_catches_a_broker_that_loses_state_on_crash() -> None:
    """The same run with the state log swapped for a MemoryEngine that a crash wipes."""
    result = run(from_dict(crash_scenario("memory")))
    assert result.outcome == "safety", result.detail
    assert result.stats["mqtt"]["outcome"] == "safety"
    assert result.stats["mqtt"]["lost"] > 0
    assert result.detail.startswith("mqtt: ")
    assert "never reached a persistent subscriber" in result.detail


def qos2_crash_scenario(seed: int = 1) -> dict[str, Any]:
    """QoS 2 at 400/s into a persistent QoS 2 subscriber, the node crashing every 150 ms."""
    return scenario(
        seed=seed, duration_ms=1000, warmup_ms=20,
        clients={"latency": {"dist": "uniform", "low_ms": 1.0, "high_ms": 2.0},
                 "reconnect": {"dist": "uniform", "low_ms": 5, "high_ms": 20}},
        publishers=[{"count": 1, "rate_per_s": 400, "qos": 2, "topic": "o/{p}", "protocol": 5}],
        subscribers=[{"count": 1, "filter": "o/#", "qos": 2, "persistent": True, "protocol": 5}],
        faults=faults(700, crash_at_ms=[150, 300, 450, 600],
                      restart={"dist": "uniform", "low_ms": 20, "high_ms": 40}))


def test_qos2_persistent_subscriber_loses_nothing_across_crashes() -> None:
    """Found by this simulator: recovery used to forget QoS 2 packet ids the subscriber still
    held (PUBREC sent, PUBREL not yet received), reuse one for a new message, and the subscriber
    swallowed it as a repeat (MQTT-4.3.3). Now the ids are logged (snd/rel/cmp, persist.py): a
    held id only ever comes back as the DUP re-send of the same message."""
    world = World(from_dict(qos2_crash_scenario()), 1, keep_trace=True)
    result = world.run()
    assert world.trace.lines is not None
    repeats = [json.loads(line) for line in world.trace.lines if '"kind":"repeat"' in line]
    swallowed = [r for r in repeats if r["held"] != r["payload"] or not r["dup"]]
    assert swallowed == [], swallowed
    assert result.outcome == "ok", result.detail
    assert result.stats["mqtt"]["lost"] == 0
    assert result.stats["faults_by_kind"]["crash"] == 4


def _tiny_workload() -> MqttWorkload:
    """The workload of a world that never runs: its history is filled by hand."""
    return mqtt_of(World(from_dict(scenario()), 7))


def _pub(w: MqttWorkload, p: int, seq: int, qos: int, sent: int, acked: int) -> None:
    w.history.pubs[(p, seq)] = PubRecord(p, seq, qos, f"s/{p}/0", sent, sent, acked)


def test_checker_flags_qos2_duplicates_and_reordering_without_crashes() -> None:
    w = _tiny_workload()
    h = w.history
    h.sub_events[0] = [(0, "connack", False), (10, "subscribed", False)]
    h.sub_events[1] = [(0, "connack", False), (10, "subscribed", False)]
    for seq in range(3):
        _pub(w, 0, seq, 2, 100 + seq, 110 + seq)
    for sub in (0, 1):
        h.receipts += [Receipt(sub, 0, 0, 2, False, 120), Receipt(sub, 0, 2, 2, False, 121),
                       Receipt(sub, 0, 1, 2, False, 122)]
    h.receipts.append(Receipt(1, 0, 0, 2, True, 130))
    report = MqttChecker(w).check()
    assert report["duplicates_qos2_without_crash"] == 1
    assert report["order_violations"] == 2 and report["lost"] == 0
    assert report["outcome"] == "safety"
    h.crashes.append(125)  # a crash between the first send and the repeat excuses the duplicate
    report = MqttChecker(w).check()
    assert report["duplicates_qos2_after_crash"] == 1
    assert report["duplicates_qos2_without_crash"] == 0
    assert report["order_violations"] == 0 and report["outcome"] == "ok"


def test_checker_windows_follow_lost_sessions() -> None:
    """A publish acknowledged after the subscriber lost its session (CONNACK present=false
    after a close) is not required; one acknowledged while subscribed is."""
    w = _tiny_workload()
    h = w.history
    h.sub_events[0] = [(0, "connack", False), (10, "subscribed", False), (50, "closed", False),
                       (90, "connack", False), (95, "subscribed", False)]
    _pub(w, 0, 0, 1, 20, 30)  # inside the first window: required, not delivered -> lost
    _pub(w, 0, 1, 1, 40, 60)  # acked after the close that ended the window: not required
    _pub(w, 0, 2, 1, 100, 105)  # second window, delivered
    h.receipts.append(Receipt(0, 0, 2, 1, False, 106))
    report = MqttChecker(w).check()
    assert report["lost"] == 1 and report["outcome"] == "safety"
    assert report["required"] == 2
    assert "pub0 seq 0 -> sub0" in report["detail"]


def test_same_seed_same_trace_and_a_different_seed_differs() -> None:
    s = from_dict(crash_scenario("journal", seed=5))
    a, b = World(s, 5, keep_trace=True), World(s, 5, keep_trace=True)
    ra, rb = a.run(), b.run()
    assert a.trace.lines and a.trace.lines == b.trace.lines
    assert ra.trace_hash == rb.trace_hash and ra.stats == rb.stats
    assert run(s, seed=6).trace_hash != ra.trace_hash


def _cli_hash(path: Path, hashseed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    proc = subprocess.run([sys.executable, "-m", "model", "mqtt", str(path), "--seed", "11"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("trace-hash: ")]
    assert len(lines) == 1, proc.stdout
    assert "outcome: ok" in proc.stdout.splitlines()
    assert f"reproduce: twinmq sim run {path} --seed 11" in proc.stdout
    return lines[0].split()[1]


def test_trace_hash_does_not_depend_on_pythonhashseed(tmp_path: Path) -> None:
    text = SCENARIO.read_text()
    for old, new in [("duration_ms = 4000", "duration_ms = 1000"),
                     ("heal_ms = 2500", "heal_ms = 600"),
                     ("crash_at_ms = [900]", "crash_at_ms = [300]"),
                     ("client_drop_rate_per_s = 4",
                      "client_drop_at_ms = [200]\nclient_drop_rate_per_s = 4")]:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "short.toml"
    path.write_text(text)
    h1, h2 = _cli_hash(path, "1"), _cli_hash(path, "2")
    assert h1 == h2
    s = load(path)
    assert s.duration_ms == 1000 and s.faults.crash_at_ms == (300.0,)
    result = run(s, seed=11)
    assert result.trace_hash == h1
    kinds = result.stats["faults_by_kind"]
    assert kinds["crash"] >= 1 and kinds["client_drop"] >= 1


@pytest.mark.parametrize(("patch", "message"), [
    ({"colour": 1}, "unknown key 'colour' in scenario.toml"),
    ({"clients": {"latency": 1, "jitter": 2}}, "unknown key 'jitter' in [clients]"),
    ({"network": {"latency": 1, "jitter": 2}}, "unknown key 'jitter' in [network]"),
    ({"publishers": [{"count": 1, "qos": 1, "rate": 5}]},
     "unknown key 'rate' in [[publishers]] #1"),
    ({"mqtt": {"max_inflight": 0}}, "[mqtt] of scenario.toml: invalid value"),
    ({"mqtt": {"port": 1883}}, "'port' in [mqtt] of scenario.toml: set by the simulator"),
    ({"faults": {"heal_ms": 700, "restart": {"dist": "pareto"}}}, "unknown dist 'pareto'"),
    ({"clients": {"reconnect": {"dist": "pareto"}}}, "unknown dist 'pareto'"),
    ({"publishers": [{"count": 1, "inflight_max": 5000}]}, "inflight_max must be in"),
    ({"subscribers": [{"count": 1, "filter": "a/#/b"}]}, "[[subscribers]] #1 filter"),
    ({"state_log": "tape"}, "state_log must be one of"),
    ({"faults": {"heal_ms": 5000}}, "warmup_ms <= [faults] heal_ms <= duration_ms"),
    ({"faults": {"heal_ms": 700, "client_drop_targets": "producerz"}},
     "[faults] client_drop_targets must be one of"),
    ({"seed": "x"}, "'seed' in scenario.toml: expected int"),
    # the old MQTT world's keys are gone: [network] (now [clients] for client connections),
    # [broker] (now [mqtt]), top-level heal_ms and [faults] broker_* (now crash_at_ms, restart)
    ({"broker": {"max_inflight": 8}}, "unknown key 'broker' in scenario.toml"),
    ({"heal_ms": 700}, "unknown key 'heal_ms' in scenario.toml"),
    ({"faults": {"broker_crash_at_ms": [1]}}, "unknown key 'broker_crash_at_ms' in [faults]"),
    ({"faults": {"client_reconnect": {"dist": "fixed", "ms": 1}}},
     "unknown key 'client_reconnect' in [faults]"),
])
def test_scenario_errors_name_the_key(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        from_dict(scenario(**patch))
    assert message in str(info.value)


def test_scenario_file_loads_and_cli_reports(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    s = load(SCENARIO)
    assert len(s.publishers) == 2 and len(s.subscribers) == 3
    assert s.has_mqtt and not s.has_kafka and s.faults.heal_ms == 2500
    assert main(["mqtt", str(tmp_path / "missing.toml")]) == 4
    assert "scenario file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\nspeed = 3\n")
    assert main(["mqtt", str(bad)]) == 4
    assert "unknown key 'speed' in bad.toml" in capsys.readouterr().err
    assert main(["mqtt", str(SCENARIO), "--state-log", "tape"]) == 4


@pytest.mark.slow
@pytest.mark.parametrize("seed", [
    pytest.param(seed, marks=pytest.mark.smoke) if seed <= SMOKE_SEEDS else seed
    for seed in range(1, 21)])
def test_seed_sweep_of_the_scenario(seed: int) -> None:
    s = load(SCENARIO)
    result = World(s, seed).run()
    r = result.stats["mqtt"]
    assert result.outcome == "ok", (result.detail,
                                    f"twinmq sim run {SCENARIO} --seed {seed}")
    assert r["lost"] == 0 and r["required"] > 0
    assert r["duplicates_qos2_without_crash"] == 0
    assert result.stats["faults_by_kind"]["crash"] >= 1


def test_memory_state_log_of_the_scenario_is_caught() -> None:
    """The scenario file itself with a broker that loses its state on a crash (the demo its
    `state_log` comment promises): some seed of the first few loses acknowledged messages that
    were queued for an offline persistent subscriber, and the checker says so."""
    s = dataclasses.replace(load(SCENARIO), state_log="memory")
    seen: dict[int, str] = {}
    for seed in range(1, 7):
        result = World(s, seed).run()
        seen[seed] = result.outcome
        if result.outcome != "ok":
            break
    else:
        pytest.fail(f"no seed caught the broken broker: {seen}")
    assert result.outcome == "safety" and result.stats["mqtt"]["lost"] > 0, result.detail
    assert "never reached a persistent subscriber" in result.detail
    assert run(load(SCENARIO), seed=seed).outcome == "ok"  # the journal keeps them
