"""Sessions moving between the nodes of a simulated cluster
(`scenarios/sim/node3-mqtt-sessions.toml`): roaming subscribers and two clients sharing a client
id; the same seed gives the same trace in another process with another hash seed, the run is
judged ok, sessions really moved; and the session checks catch broken histories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from model.checkers.mqtt import History, MqttChecker
from model.scenario import load
from model.world import World
from real.mqtt import Connack, Publish

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios/sim/node3-mqtt-sessions.toml"


def test_sessions_move_and_the_run_is_ok_and_deterministic() -> None:
    world = World(load(SCENARIO), 3)
    first = world.run()
    assert first.outcome == "ok", first.detail
    report = first.stats["mqtt"]
    assert report["required"] > 0 and report["lost"] == 0 and report["served_twice"] == 0
    moved = sum(h.core.mqtt.stats.handovers_in for h in world.nodes.values()
                if h.core is not None)
    assert moved > 5, "sessions moved between nodes"
    (mqtt,) = [w for w in world.workloads if w.name == "mqtt"]
    assert mqtt.history.serving, "the twins were served"  # type: ignore[attr-defined]
    out = subprocess.run([sys.executable, "-m", "model", "run", str(SCENARIO), "--seed", "3"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONHASHSEED": "4242"})
    assert f"trace-hash: {first.trace_hash}" in out.stdout, out.stdout[-500:]


class _Trace:
    def emit(self, *_a: object, **_k: object) -> None:
        pass


def _checker(history: History, subs: list[object] | None = None) -> MqttChecker:
    world = SimpleNamespace(history=history, subscribers=subs or [], publishers=[])
    return MqttChecker(world)  # type: ignore[arg-type]


def test_a_client_id_served_by_two_connections_at_once_is_caught() -> None:
    h = History(_Trace(), SimpleNamespace(now=0))  # type: ignore[arg-type]
    ok, late = Connack(True, 0), Publish("t", b"x", 1, packet_id=1)
    h.served("dev", 100, (1, 7), ok)
    h.served("dev", 150, (1, 7), late)
    h.served("dev", 200, (2, 3), ok)  # node 2 took it over ...
    h.served("dev", 200, (2, 3), late)  # ... and sends in the same step as its CONNACK: fine
    assert _checker(h)._served_twice() == []
    h.served("dev", 201, (1, 7), late)  # node 1 still sends after that: two at once
    (problem,) = _checker(h)._served_twice()
    assert "dev" in problem and "0.201 ms" in problem


def test_a_persistent_session_gone_without_a_crash_is_caught() -> None:
    h = History(_Trace(), SimpleNamespace(now=0))  # type: ignore[arg-type]
    spec = SimpleNamespace(expiry_s=3600)
    sub = SimpleNamespace(index=0, persistent=True, protocol=4, spec=spec, twin=False,
                          roam=True)
    for t, kind, present in ((10, "connack", False), (20, "subscribed", False),
                             (30, "closed", False), (40, "connack", True),
                             (50, "closed", False), (60, "connack", False)):
        h.sub_events.setdefault(0, []).append((t, kind, present))
    (problem,) = _checker(h, [sub])._sessions_gone()
    assert "sub0" in problem
    h.crashes.append(55)  # a crash in between explains it
    assert _checker(h, [sub])._sessions_gone() == []
