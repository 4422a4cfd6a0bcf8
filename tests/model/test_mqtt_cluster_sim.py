"""MQTT across a simulated cluster (`scenarios/sim/node3-mqtt.toml`): clients on all three
nodes, power loss of any node; the same seed gives the same trace in this process and in
another one with a different hash seed, and the run is judged ok."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from model.scenario import load
from model.world import World

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios/sim/node3-mqtt.toml"


def test_same_seed_same_trace_across_processes_and_hash_seeds() -> None:
    first = World(load(SCENARIO), 7).run()
    assert first.outcome == "ok", first.detail
    report = first.stats["mqtt"]
    assert report["required"] > 0 and report["lost"] == 0
    assert report["log_amplified"] == 0
    again = World(load(SCENARIO), 7).run()
    assert again.trace_hash == first.trace_hash
    out = subprocess.run([sys.executable, "-m", "model", "run", str(SCENARIO), "--seed", "7"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert f"trace-hash: {first.trace_hash}" in out.stdout, out.stdout[-500:]
