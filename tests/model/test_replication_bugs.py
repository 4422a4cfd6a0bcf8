"""Planted replication bugs are caught by the simulator's checkers on node3-rf3 (the full hunt,
with seeds needed, is `make bughunt`); the same seeds pass without the bug."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.scenario import load, with_bugs
from model.world import World

ROOT = Path(__file__).resolve().parents[2]
RF3 = ROOT / "scenarios" / "sim" / "node3-rf3.toml"


@pytest.mark.parametrize(("bug", "seed", "needle"), [
    ("hw-before-isr", 1, "replication"),
    ("acks-downgrade", 1, "acknowledged record(s) lost"),
])
def test_a_planted_replication_bug_is_caught(bug: str, seed: int, needle: str) -> None:
    result = World(with_bugs(load(RF3), [bug]), seed).run()
    assert result.outcome == "safety", result.detail
    assert needle in result.detail
    assert World(load(RF3), seed).run().outcome == "ok"


def test_an_unknown_replication_bug_is_refused() -> None:
    from model.scenario import ScenarioError, from_dict, read_toml

    raw = read_toml(RF3)
    raw["cluster"]["replication_bugs"] = ["no-such-bug"]
    with pytest.raises(ScenarioError, match="replication_bugs"):
        from_dict(raw, source=str(RF3))
