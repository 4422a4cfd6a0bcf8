"""The MQTT broker in the simulator (model/mqtt.py): delivery, crash durability, the checkers
themselves, determinism across processes, and a seed sweep (slow)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from model.mqtt import (
    ConfigError,
    MqttChecker,
    MqttWorld,
    PubRecord,
    Receipt,
    config_from_dict,
    load_config,
    main,
    run,
)

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "mqtt-sim.toml"
# The sweep is the only simulator test that catches an acknowledgement sent before the
# durable point across crashes; its first seeds (about 1 s each) run in the default suite.
SMOKE_SEEDS = 3


def scenario(**overrides: Any) -> dict[str, Any]:
    """A small world: one QoS 1 publisher (v3.1.1), one QoS 2 publisher (v5), a persistent
    QoS 1 subscriber (v3.1.1) and a persistent QoS 2 subscriber (v5); no faults."""
    raw: dict[str, Any] = {
        "name": "test", "duration_ms": 1200, "seed": 7, "warmup_ms": 50, "heal_ms": 700,
        "network": {"latency": {"dist": "uniform", "low_ms": 1.0, "high_ms": 2.0}},
        "publishers": [
            {"count": 1, "rate_per_s": 200, "qos": 1, "topic": "s/{p}/{k}", "topics": 3},
            {"count": 1, "rate_per_s": 50, "qos": 2, "topic": "o/{p}", "protocol": 5},
        ],
        "subscribers": [
            {"count": 1, "filter": "s/#", "qos": 1, "persistent": True},
            {"count": 1, "filter": "#", "qos": 2, "persistent": True, "protocol": 5},
        ],
    }
    raw.update(overrides)
    return raw


def crash_scenario(state_log: str = "journal", seed: int = 3) -> dict[str, Any]:
    """Subscribers are dropped at 400 ms (offline for 60-80 ms, so messages queue for them) and
    the broker loses power at 420 ms and 800 ms, restarting 30-60 ms later."""
    return scenario(
        seed=seed, state_log=state_log, duration_ms=1600, heal_ms=1000,
        faults={"broker_crash_at_ms": [420, 800],
                "broker_restart": {"dist": "uniform", "low_ms": 30, "high_ms": 60},
                "client_drop_at_ms": [400, 400.5], "client_drop_targets": "subscribers",
                "client_reconnect": {"dist": "uniform", "low_ms": 60, "high_ms": 80}})


def test_no_faults_every_message_delivered_with_plausible_latency() -> None:
    result = run(config_from_dict(scenario()))
    assert result["outcome"] == "ok", result
    assert result["published"] > 150
    assert result["acked"] == result["published"]
    # sub0 (s/#) gets pub0's messages, sub1 (#) gets everyone's: all of them are required
    assert result["required"] == result["delivered"] > result["published"]
    assert result["lost"] == 0 and result["receipts"] == result["delivered"]
    assert result["duplicates_qos1"] == result["duplicates_qos2_without_crash"] == 0
    # two one-way hops of 1..2 ms each, plus a few µs of simulated syscalls; a QoS 2 copy to a
    # persistent session also waits for its packet id to be durable (group commit, 2 ms + sync)
    assert 2.0 <= result["latency_p50_ms"] <= 4.1
    assert result["latency_p99_ms"] <= 4.1 + 2.0 + 1.0
    assert result["faults"] == {"broker_crash": 0, "client_drop": 0, "delay_spike": 0}


def test_bandwidth_limit_shows_in_latency() -> None:
    raw = scenario(network={"latency": {"dist": "fixed", "ms": 1.0}, "bandwidth_mb_s": 0.1})
    raw["publishers"] = [{"count": 1, "rate_per_s": 20, "qos": 1, "payload_bytes": 1000}]
    raw["subscribers"] = [{"count": 1, "filter": "#", "qos": 1}]
    result = run(config_from_dict(raw))
    assert result["outcome"] == "ok", result
    # 1000+ bytes at 100 bytes/ms: 10 ms per hop on top of 1 ms latency, two hops
    assert 22.0 <= result["latency_p50_ms"] <= 23.0


def test_slow_subscriber_connection_is_bounded_by_high_water() -> None:
    """Two publishers (75 KB/s each) into links of 100 KB/s: the subscribers' connections back
    up; the broker is told they are congested, drops QoS 0 for the QoS 0 subscriber and queues
    QoS 1 for the persistent one, so the backlog stays near the high-water mark (without the
    signal it would grow by 50 KB/s)."""
    raw = scenario(network={"latency": {"dist": "fixed", "ms": 1.0}, "bandwidth_mb_s": 0.1,
                            "write_high_water_bytes": 5000}, heal_ms=500, duration_ms=2500,
                   broker={"max_inflight": 8})
    raw["publishers"] = [{"count": 2, "rate_per_s": 150, "qos": 1, "payload_bytes": 500}]
    raw["subscribers"] = [{"count": 1, "filter": "#", "qos": 0, "persistent": False},
                          {"count": 1, "filter": "#", "qos": 1}]
    world = MqttWorld(config_from_dict(raw))
    result = world.run()
    assert result["outcome"] == "ok", result
    assert world.trace.kinds["congested"] >= 2
    # at most the high-water mark plus what one un-congesting pump writes (a window of 8)
    assert 5000 < result["net"]["backlog_max"] <= 5000 + 8 * 600
    firsts = {(r.subscriber, r.publisher, r.seq) for r in world.history.receipts}
    qos0_got = sum(1 for key in firsts if key[0] == 0)
    qos1_got = sum(1 for key in firsts if key[0] == 1)
    assert qos1_got == result["published"] == result["required"]
    assert 0 < qos0_got < result["published"]


def test_broker_crashes_lose_no_acknowledged_message() -> None:
    result = run(config_from_dict(crash_scenario("journal")))
    assert result["outcome"] == "ok", result
    assert result["faults"]["broker_crash"] == 2 and result["fs_crashes"] == 2
    assert result["recovered_records"] > 0
    assert result["required"] > 300 and result["lost"] == 0
    assert result["acked"] == result["published"]
    assert result["duplicates_qos2_without_crash"] == 0


def test_checker_catches_a_broker_that_loses_state_on_crash() -> None:
    """The same run with the state log swapped for a MemoryEngine that a crash wipes."""
    result = run(config_from_dict(crash_scenario("memory")))
    assert result["outcome"] == "safety", result
    assert result["lost"] > 0
    assert "never reached a persistent subscriber" in result["detail"]


def qos2_crash_scenario(seed: int = 1) -> dict[str, Any]:
    """QoS 2 at 400/s into a persistent QoS 2 subscriber, the broker crashing every 150 ms."""
    return scenario(
        seed=seed, duration_ms=1000, warmup_ms=20, heal_ms=700,
        publishers=[{"count": 1, "rate_per_s": 400, "qos": 2, "topic": "o/{p}", "protocol": 5}],
        subscribers=[{"count": 1, "filter": "o/#", "qos": 2, "persistent": True, "protocol": 5}],
        faults={"broker_crash_at_ms": [150, 300, 450, 600],
                "broker_restart": {"dist": "uniform", "low_ms": 20, "high_ms": 40},
                "client_reconnect": {"dist": "uniform", "low_ms": 5, "high_ms": 20}})


def test_qos2_persistent_subscriber_loses_nothing_across_crashes() -> None:
    """Found by this simulator: recovery used to forget QoS 2 packet ids the subscriber still
    held (PUBREC sent, PUBREL not yet received), reuse one for a new message, and the subscriber
    swallowed it as a repeat (MQTT-4.3.3). Now the ids are logged (snd/rel/cmp, persist.py): a
    held id only ever comes back as the DUP re-send of the same message."""
    world = MqttWorld(config_from_dict(qos2_crash_scenario()), keep_trace=True)
    result = world.run()
    repeats = [json.loads(line) for line in world.trace.lines if '"kind":"repeat"' in line]
    swallowed = [r for r in repeats if r["held"] != r["payload"] or not r["dup"]]
    assert swallowed == [], swallowed
    assert result["outcome"] == "ok", result["detail"]
    assert result["lost"] == 0 and result["faults"]["broker_crash"] == 4


def _tiny_world() -> MqttWorld:
    return MqttWorld(config_from_dict(scenario()))


def _pub(world: MqttWorld, p: int, seq: int, qos: int, sent: int, acked: int) -> None:
    world.history.pubs[(p, seq)] = PubRecord(p, seq, qos, f"s/{p}/0", sent, sent, acked)


def test_checker_flags_qos2_duplicates_and_reordering_without_crashes() -> None:
    world = _tiny_world()
    h = world.history
    h.sub_events[0] = [(0, "connack", False), (10, "subscribed", False)]
    h.sub_events[1] = [(0, "connack", False), (10, "subscribed", False)]
    for seq in range(3):
        _pub(world, 0, seq, 2, 100 + seq, 110 + seq)
    for sub in (0, 1):
        h.receipts += [Receipt(sub, 0, 0, 2, False, 120), Receipt(sub, 0, 2, 2, False, 121),
                       Receipt(sub, 0, 1, 2, False, 122)]
    h.receipts.append(Receipt(1, 0, 0, 2, True, 130))
    report = MqttChecker(world).check()
    assert report["duplicates_qos2_without_crash"] == 1
    assert report["order_violations"] == 2 and report["lost"] == 0
    assert report["outcome"] == "safety"
    h.crashes.append(125)  # a crash between the first send and the repeat excuses the duplicate
    report = MqttChecker(world).check()
    assert report["duplicates_qos2_after_crash"] == 1
    assert report["duplicates_qos2_without_crash"] == 0
    assert report["order_violations"] == 0 and report["outcome"] == "ok"


def test_checker_windows_follow_lost_sessions() -> None:
    """A publish acknowledged after the subscriber lost its session (CONNACK present=false
    after a close) is not required; one acknowledged while subscribed is."""
    world = _tiny_world()
    h = world.history
    h.sub_events[0] = [(0, "connack", False), (10, "subscribed", False), (50, "closed", False),
                       (90, "connack", False), (95, "subscribed", False)]
    _pub(world, 0, 0, 1, 20, 30)  # inside the first window: required, not delivered -> lost
    _pub(world, 0, 1, 1, 40, 60)  # acked after the close that ended the window: not required
    _pub(world, 0, 2, 1, 100, 105)  # second window, delivered
    h.receipts.append(Receipt(0, 0, 2, 1, False, 106))
    report = MqttChecker(world).check()
    assert report["lost"] == 1 and report["outcome"] == "safety"
    assert report["required"] == 2
    assert "pub0 seq 0 -> sub0" in report["detail"]


def test_same_seed_same_trace_and_a_different_seed_differs() -> None:
    config = config_from_dict(crash_scenario("journal", seed=5))
    a, b = MqttWorld(config, keep_trace=True), MqttWorld(config, keep_trace=True)
    ra, rb = a.run(), b.run()
    assert a.trace.lines == b.trace.lines
    assert ra["trace_hash"] == rb["trace_hash"]
    other = run(config_from_dict(crash_scenario("journal", seed=6)))
    assert other["trace_hash"] != ra["trace_hash"]


def _cli_hash(path: Path, hashseed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    proc = subprocess.run([sys.executable, "-m", "model.mqtt", str(path), "--seed", "11"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("trace-hash: ")]
    assert len(lines) == 1, proc.stdout
    assert f"reproduce: python -m model.mqtt {path} --seed 11" in proc.stdout
    return lines[0].split()[1]


def test_trace_hash_does_not_depend_on_pythonhashseed(tmp_path: Path) -> None:
    text = SCENARIO.read_text().replace("duration_ms = 4000", "duration_ms = 1000")
    text = text.replace("heal_ms = 2500", "heal_ms = 600")
    text = text.replace("broker_crash_at_ms = [900]", "broker_crash_at_ms = [300]")
    text = text.replace("client_drop_rate_per_s = 4", "client_drop_at_ms = [200]\n"
                                                      "client_drop_rate_per_s = 4")
    path = tmp_path / "short.toml"
    path.write_text(text)
    h1, h2 = _cli_hash(path, "1"), _cli_hash(path, "2")
    assert h1 == h2
    config = load_config(path)
    assert config.duration_ms == 1000 and config.faults.broker_crash_at_ms == (300.0,)
    result = run(dataclasses.replace(config, seed=11))
    assert result["trace_hash"] == h1
    assert result["faults"]["broker_crash"] >= 1 and result["faults"]["client_drop"] >= 1


@pytest.mark.parametrize(("patch", "message"), [
    ({"colour": 1}, "unknown key 'colour' in scenario.toml"),
    ({"network": {"latency": 1, "jitter": 2}}, "unknown key 'jitter' in [network]"),
    ({"publishers": [{"count": 1, "qos": 1, "rate": 5}]},
     "unknown key 'rate' in [[publishers]] #1"),
    ({"broker": {"max_inflight": 0}}, "[broker] of scenario.toml: invalid value"),
    ({"faults": {"broker_restart": {"dist": "pareto"}}}, "unknown dist 'pareto'"),
    ({"publishers": [{"count": 1, "inflight_max": 5000}]}, "inflight_max must be in"),
    ({"subscribers": [{"count": 1, "filter": "a/#/b"}]}, "[[subscribers]] #1 filter"),
    ({"state_log": "tape"}, "state_log must be one of"),
    ({"heal_ms": 5000}, "warmup_ms <= heal_ms <= duration_ms"),
    ({"seed": "x"}, "'seed' in scenario.toml: expected int"),
])
def test_config_errors_name_the_key(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(scenario(**patch))
    assert message in str(info.value)


def test_scenario_file_loads_and_cli_reports(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    config = load_config(SCENARIO)
    assert len(config.publishers) == 2 and len(config.subscribers) == 3
    assert main([str(tmp_path / "missing.toml")]) == 4
    assert "scenario file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\nspeed = 3\n")
    assert main([str(bad)]) == 4
    assert "unknown key 'speed' in bad.toml" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("seed", [
    pytest.param(seed, marks=pytest.mark.smoke) if seed <= SMOKE_SEEDS else seed
    for seed in range(1, 21)])
def test_seed_sweep_of_the_scenario(seed: int) -> None:
    config = dataclasses.replace(load_config(SCENARIO), seed=seed)
    result = MqttWorld(config).run()
    assert result["outcome"] == "ok", (result["detail"], result["reproduce"])
    assert result["lost"] == 0 and result["required"] > 0
    assert result["duplicates_qos2_without_crash"] == 0
