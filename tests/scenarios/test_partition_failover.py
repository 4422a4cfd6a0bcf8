"""The partition failover study: one simulated trial measures a failover in the expected range
(the peers' refused reconnect 50 ms after the kill, a meta commit, a fetch round and a client
retry), and the report renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from scenarios.studies import partition_failover as pf
from scenarios.studies.failover import summary


@pytest.mark.slow
def test_a_simulated_trial_sees_the_controller_move_the_partition() -> None:
    ms = pf.sim_trial(5)
    assert ms is not None and 50 < ms < 1000, ms


def test_the_report_says_whether_the_targets_hold(tmp_path: Path) -> None:
    real, sim = [650.0, 700.0, 1200.0], [620.0, 640.0, 900.0]
    result = {"seed": 1, "wall_s": 1.0, "real": {"ms": real, "summary": summary(real)},
              "sim": {"ms": sim, "summary": summary(sim)}}
    pf.write_report(result, tmp_path)
    text = (tmp_path / "partition-failover.md").read_text()
    assert "| p50 | 700.0 | 640.0 |" in text and "met (p50 700.0, p99 1200.0)" in text
