"""Small scenarios and spies shared by the model tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from model.scenario import Scenario, from_dict

ROOT = Path(__file__).resolve().parents[2]


def trace_hash_in_process(scenario: Path, seed: int, hashseed: str) -> str:
    """`twinmq sim run SCENARIO --seed SEED` in a fresh process under PYTHONHASHSEED=hashseed:
    its trace-hash (the determinism tests compare it across processes and hash seeds)."""
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    proc = subprocess.run([sys.executable, "-m", "model", "run", str(scenario), "--seed",
                           str(seed)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("trace-hash: ")]
    return line.split()[1]


def small_scenario(**top: Any) -> Scenario:
    """3 nodes, a few simulated seconds, every fault kind, heal at 3 s."""
    raw: dict[str, Any] = {
        "name": "small",
        "duration_ms": 8_000,
        "liveness_budget_ms": 4_000,
        "cluster": {"nodes": 3, "tick_ms": 10, "election_tick_min": 10, "election_tick_max": 20,
                    "heartbeat_tick": 2, "snapshot_every": 20},
        "network": {"latency": {"dist": "uniform", "low_ms": 0.5, "high_ms": 3}, "loss": 0.01,
                    "duplicate": 0.01, "reorder": 0.05},
        "disk": {"fsync": {"dist": "uniform", "low_ms": 0.2, "high_ms": 2}},
        "clock": {"drift_ppm": 300},
        "meta": {"rate_per_s": 30, "proposal_timeout_ms": 400, "retry_ms": 30},
        "faults": {"enabled": True, "start_ms": 300, "heal_ms": 3_000,
                   "interval_ms": [100, 400],
                   "weights": {"crash_leader": 2, "crash_random": 1, "pause": 2, "partition": 2,
                               "partition_asym": 1, "loss": 1, "delay": 1, "skew": 2},
                   "downtime_ms": [50, 800], "pause_ms": [50, 600], "skew_ms": [100, 800]},
    }
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return from_dict(raw)
