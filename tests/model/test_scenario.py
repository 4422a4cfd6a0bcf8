from __future__ import annotations

from pathlib import Path

import pytest

from model.scenario import ScenarioError, from_dict, load, with_bugs

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_scenarios_load() -> None:
    s = load(ROOT / "scenarios/sim/raft-election.toml")
    assert s.cluster.nodes == 5
    assert s.faults.enabled and s.faults.heal_ms > 0
    assert load(ROOT / "scenarios/bench/bench-sim.toml").duration_ms == 3_600_000


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text("[netwrok]\nloss = 0.1\n")
    with pytest.raises(ScenarioError, match="unknown key 'netwrok' in scenario.toml"):
        load(path)


@pytest.mark.parametrize(("raw", "expected"), [
    ({"cluster": {"noddes": 3}}, "unknown key 'noddes' in \\[cluster\\]"),
    ({"network": {"latency": {"dist": "fixed", "mss": 1}}}, "unknown key 'mss'"),
    ({"cluster": {"nodes": "five"}}, "'nodes' in \\[cluster\\].*expected int"),
    ({"cluster": {"bugs": ["no-such-bug"]}}, "unknown bug 'no-such-bug'"),
    ({"faults": {"weights": {"meteor": 1}}}, "unknown fault kind 'meteor'"),
    ({"faults": {"interval_ms": [5, 1]}}, "low 5 > high 1"),
    ({"network": {"loss": 1.5}}, "network.loss must be in"),
    ({"duration_ms": 1000, "faults": {"enabled": True, "heal_ms": 900}}, "duration_ms"),
])
def test_bad_values_are_named(raw: dict, expected: str) -> None:
    with pytest.raises(ScenarioError, match=expected):
        from_dict(raw)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("x = = 1")
    with pytest.raises(ScenarioError, match="bad.toml: invalid TOML"):
        load(bad)
    with pytest.raises(ScenarioError, match="not found"):
        load(tmp_path / "nope.toml")


def test_with_bugs_merges_and_validates() -> None:
    s = with_bugs(from_dict({}), ["vote-without-log-check"])
    assert s.cluster.bugs == ("vote-without-log-check",)
    with pytest.raises(ScenarioError, match="unknown bug 'typo'"):
        with_bugs(s, ["typo"])


def test_disk_section_maps_onto_the_simulated_filesystem() -> None:
    from model.sim.dist import Dist

    s = from_dict({"disk": {"fsync": {"dist": "uniform", "low_ms": 1, "high_ms": 5},
                            "torn_writes": False}})
    fs = s.disk.fs_config()
    assert fs.sync_latency == Dist("uniform", 1.0, 5.0) and fs.torn_writes is False
    with pytest.raises(ScenarioError, match=r"unknown key 'unsynced_ops_max' in \[disk\].*"
                       r"expected one of \['fsync', 'group_commit_ms', 'torn_writes'\]"):
        from_dict({"disk": {"unsynced_ops_max": 10}})
