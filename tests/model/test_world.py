"""Whole-world runs: determinism, tick skipping, outcomes, the persist/send/apply/advance order."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import small_scenario

from model.world import World
from real.raft import RaftNode

ROOT = Path(__file__).resolve().parents[2]
ELECTION = "scenarios/sim/raft-election.toml"


def run(seed: int, **kw: Any) -> Any:
    scenario = kw.pop("scenario", None) or small_scenario()
    return World(scenario, seed, **kw).run()


def test_small_scenario_is_ok_and_deterministic() -> None:
    a, b = run(3, keep_trace=True), run(3, keep_trace=True)
    assert a.outcome == "ok", a.detail
    assert a.trace_hash == b.trace_hash
    assert a.stats == b.stats
    assert a.stats["faults"] > 3
    assert a.stats["committed"] > 10
    assert run(4).trace_hash != a.trace_hash


def _skip_vs_one(seed: int, s: Any) -> None:
    by_one = dataclasses.replace(s, cluster=dataclasses.replace(s.cluster, tick_skipping=False))
    skip_world, one_world = World(s, seed, keep_trace=True), World(by_one, seed, keep_trace=True)
    skip, one = skip_world.run(), one_world.run()
    if skip.trace_hash != one.trace_hash:  # show the first differing line
        pairs = zip(skip_world.trace.lines or [], one_world.trace.lines or [], strict=False)
        first = next((p for p in pairs if p[0] != p[1]), None)
        pytest.fail(f"traces differ: {first}")
    assert skip.outcome == one.outcome == "ok"


# Seed 51 once caught a crashed incarnation's process clearing the new one's wake-up event.
@pytest.mark.parametrize("seed", [1, 2, 3, 51])
def test_tick_skipping_gives_the_same_trace_as_tick_by_tick(seed: int) -> None:
    _skip_vs_one(seed, small_scenario())


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 140))
def test_tick_skipping_same_trace_many_seeds(seed: int) -> None:
    _skip_vs_one(seed, small_scenario())


def _subprocess_hash(hashseed: str, seed: int) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    proc = subprocess.run([sys.executable, "-m", "model", "run", ELECTION, "--seed", str(seed)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("trace-hash: ")]
    assert len(lines) == 1, proc.stdout
    return lines[0].split()[1]


def test_hash_does_not_depend_on_pythonhashseed() -> None:
    h1, h2 = _subprocess_hash("1", 11), _subprocess_hash("2", 11)
    assert h1 == h2
    from model.scenario import load

    assert World(load(ROOT / ELECTION), 11).run().trace_hash == h1


def test_planted_bug_is_caught_as_safety() -> None:
    s = small_scenario(cluster={"bugs": ["vote-without-log-check"]})
    outcomes = [run(seed, scenario=s) for seed in range(1, 13)]
    caught = [r for r in outcomes if r.outcome == "safety"]
    assert caught, [r.outcome for r in outcomes]
    assert caught[0].exit_code == 1
    assert "leader-completeness" in caught[0].detail or "safety" in caught[0].detail


def test_liveness_failure_when_budget_too_small() -> None:
    # Heal while a crashed leader is down: with a 1 ms budget no new leader can be ready.
    s = small_scenario(liveness_budget_ms=1.0, faults={"weights": {"crash_leader": 1},
                                                       "downtime_ms": [5_000, 6_000]})
    res = run(1, scenario=s)
    assert res.outcome == "liveness", res.detail
    assert res.exit_code == 2
    assert "after heal" in res.detail


def test_exception_in_the_core_is_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    real_step = RaftNode.step

    def step(self: Any, msg: Any) -> None:
        if self.term >= 2:
            raise AssertionError("planted invariant failure")
        real_step(self, msg)

    monkeypatch.setattr(RaftNode, "step", step)
    res = run(1)
    assert res.outcome == "crash"
    assert res.exit_code == 3
    assert "planted invariant failure" in res.detail
    assert "tests/model/test_world.py" in res.detail


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 5])
def test_tick_skipping_same_trace_on_raft_election(seed: int) -> None:
    from model.scenario import load

    _skip_vs_one(seed, load(ROOT / ELECTION))


def test_the_real_inter_node_frames_carry_the_same_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """[network] wire = true sends every Raft message as the frame real nodes exchange
    (real/cluster/wire.py): encoded at send, decoded at arrival. The run must be the same,
    trace hash for trace hash; appends and shipped snapshots cross the codec on the way."""
    from real.cluster.wire import decode_message
    from real.raft.types import MsgType

    kinds: dict[str, int] = {}
    real_decode = decode_message

    def counting(payload: bytes) -> Any:
        msg = real_decode(payload)
        kinds[msg.type.value] = kinds.get(msg.type.value, 0) + 1
        return msg

    monkeypatch.setattr("model.world.decode_message", counting)
    base = small_scenario()
    wired = dataclasses.replace(base, network=dataclasses.replace(base.network, wire=True))
    for seed in (1, 2):
        plain, framed = World(base, seed).run(), World(wired, seed).run()
        assert plain.outcome == framed.outcome == "ok", (plain.detail, framed.detail)
        assert plain.trace_hash == framed.trace_hash
    assert kinds.get(MsgType.SNAPSHOT.value, 0) > 0 and kinds[MsgType.APPEND.value] > 100, kinds
