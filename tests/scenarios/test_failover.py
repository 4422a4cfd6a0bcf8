"""The meta leader failover study (scenarios/studies/failover.py): its simulated trials are
deterministic and plausible; a real trial kills a real leader and sees another one; the report
renders both distributions."""

from __future__ import annotations

from pathlib import Path

import pytest

from scenarios.studies import failover


def test_simulated_failover_is_deterministic_and_bounded_by_the_election_timeout() -> None:
    times = [failover.sim_trial(seed) for seed in range(1, 9)]
    assert times == [failover.sim_trial(seed) for seed in range(1, 9)]
    # a follower waits at least its minimum election timeout (100 ms) after the last
    # heartbeat it saw (at most one 10 ms tick before the crash), then needs vote rounds
    assert all(85 <= t < 2_000 for t in times), times
    assert len(set(times)) > 1


@pytest.mark.integration
def test_a_real_trial_kills_the_leader_and_sees_a_new_one() -> None:
    (ms,) = failover.real_trials(1, seed=3)
    assert 50 <= ms < 10_000, ms


def test_the_report_shows_both_worlds(tmp_path: Path) -> None:
    real, sim = [120.0, 150.0, 300.0], [110.0, 140.0, 200.0]
    result = {"seed": 1, "wall_s": 1.0, "real": {"ms": real, "summary": failover.summary(real)},
              "sim": {"ms": sim, "summary": failover.summary(sim)}}
    result["discussion"] = failover.discussion(result["real"]["summary"],
                                               result["sim"]["summary"])
    failover.write_report(result, tmp_path)
    md = (tmp_path / "failover.md").read_text()
    assert "| p50 | 150.0 | 140.0 | 1.07 |" in md
    assert "real cluster measured 150.0 ms" in md
