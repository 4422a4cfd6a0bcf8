"""Figure 16 study: behavioural properties on a few trials (the full run is `make figure16`)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from model.scenario import load
from scenarios.studies import figure16 as f16

BASE = load(f16.BASE)
CAP_MS = 20_000.0


def _line(label: str) -> int:
    return [line.label for line in f16.LINES].index(label)


def _downtimes(label: str, trials: int, seed: int = 7) -> list[float]:
    li = _line(label)
    out = f16.run_lines([li], trials, seed, 1, CAP_MS, BASE)[li]
    assert len(out) == trials
    assert all(t.downtime_us > 0 for t in out), "no trial may be censored at this cap"
    return [t.downtime_us / 1000 for t in out]


def test_downtime_at_least_half_the_minimum_timeout() -> None:
    """The crash comes within one heartbeat interval (min / 2) of the last heartbeat, so no
    follower can time out sooner than about min / 2 after it (one tick of slack)."""
    for label, lo in (("150-155", 150), ("12-24", 12)):
        times = _downtimes(label, 6)
        assert min(times) >= lo / 2 - 1, (label, times)
        assert all(t >= lo / 2 + 10 for t in times), "plus a vote round trip (>= 2 x 5 ms)"


def test_short_timeouts_elect_faster_than_long_ones() -> None:
    short = _downtimes("12-24", 8)
    long = _downtimes("150-300", 8)
    assert statistics.median(short) < statistics.median(long), (short, long)
    assert max(short) < CAP_MS and max(long) < CAP_MS


def test_same_seed_same_numbers() -> None:
    picks = [_line("150-300"), _line("25-50")]
    one = f16.run_lines(picks, 3, 11, 1, CAP_MS, BASE)
    again = f16.run_lines(picks, 3, 11, 1, CAP_MS, BASE)
    assert one == again
    other = f16.run_lines(picks, 3, 12, 1, CAP_MS, BASE)
    assert one != other, "a different seed should give different trials"


def test_trial_seeds_differ_per_line_and_index() -> None:
    a, b = f16.LINES[_line("150-300")], f16.LINES[_line("150-300 pre-vote")]
    seeds = {f16.trial_seed(1, line, i) for line in (a, b) for i in range(50)}
    assert len(seeds) == 100
    assert f16.trial_seed(1, a, 0) == f16.trial_seed(1, a, 0)


def test_summary_counts_censored_trials_as_infinite() -> None:
    trials = [f16.Trial(100_000, 1, ()), f16.Trial(-1, 0, ()), f16.Trial(300_000, 2, ())]
    s = f16.summarize(trials, 1000.0)
    assert s["censored"] == 1 and s["trials"] == 3
    assert s["median"] == 300.0 and s["max"] is None
    assert s["mean"] == 200.0 and s["mean_terms"] == 1.5


@pytest.mark.bench
@pytest.mark.smoke
def test_cli_writes_report_json_and_plots(tmp_path: Path) -> None:
    rc = f16.main(["--trials", "2", "--jobs", "1", "--lines", "150-300,12-24",
                   "--out", str(tmp_path)])
    assert rc == 0
    study = json.loads((tmp_path / "figure16.json").read_text())
    assert [line["label"] for line in study["lines"]] == ["150-300", "12-24"]
    assert all(len(line["downtime_ms"]) == 2 for line in study["lines"])
    for name in ("figure16.md", "figure16-top.png", "figure16-bottom.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert f16.main(["--lines", "1-2", "--out", str(tmp_path)]) == 2


# -- the simulator twin of the real cluster, and the real mode -------------------------------------


def test_twin_lines_give_every_follower_the_whole_log() -> None:
    line = f16.LINES[_line("150-300 pre-vote+cq equal logs")]
    assert line.graph == "twin" and line.pre_vote and line.check_quorum and line.equal_logs
    trial = f16.run_trial(BASE, line, 5, 0, CAP_MS)
    assert trial.lags == (0, 0, 0, 0)
    assert 0 < trial.campaign_us < trial.downtime_us, trial
    twins = {(ln.lo, ln.hi) for ln in f16.LINES if ln.graph == "twin"}
    assert twins == set(f16.REAL_RANGES), "every real range has its simulator twin"


def test_campaign_time_is_when_the_first_timer_ran_out() -> None:
    """A follower's timer runs out >= min after the last heartbeat, which the crash follows by
    less than min / 2 (plus the heartbeat's 5-10 ms flight): so >= min / 2 after the crash."""
    li = _line("150-200")
    for t in f16.run_lines([li], 4, 3, 1, CAP_MS, BASE)[li]:
        assert 75 - 1 <= t.campaign_us / 1000 <= 200 + 10, t
        assert t.campaign_us < t.downtime_us


def test_serial_world_kills_restarts_and_is_deterministic() -> None:
    """The real protocol in the simulator: one world, each kill's crashed leader restarts and
    the next kill takes the new leader; the same seed gives the same kills."""
    kills = f16.run_serial(BASE, 150, 300, 5, 2, CAP_MS)
    assert kills == f16.run_serial(BASE, 150, 300, 5, 2, CAP_MS)
    assert len(kills) == 5
    for before, k in zip(kills, kills[1:], strict=False):
        assert k.killed == before.leader, "each kill takes the leader the previous one elected"
    for k in kills:
        assert k.killed != k.leader and k.terms >= 1
        assert 75 - 1 <= k.campaign_us / 1000 < k.downtime_us / 1000 < CAP_MS, k
    slow = f16.run_serial(BASE, 150, 300, 5, 2, CAP_MS, extra_ms=2.0)
    assert slow != kills


def test_real_config_sets_the_simulator_timings(tmp_path: Path) -> None:
    """The `--config` file the real mode hands `twinmq serve` loads with the launcher's flags on
    top, and gives the simulator's line its ticks, timeouts and heartbeat."""
    from real.node.config import load_config

    path = tmp_path / "raft.toml"
    path.write_text(f16.real_config(150, 155))
    cfg = load_config(path, {"node_id": 2, "bind": "127.0.0.1", "admin_port": 0})
    sim = f16.line_scenario(BASE, f16.LINES[_line("150-155")]).cluster
    assert (cfg.tick_ms, cfg.election_tick_min, cfg.election_tick_max, cfg.heartbeat_tick) == (
        sim.tick_ms, sim.election_tick_min, sim.election_tick_max, sim.heartbeat_tick) == (
        1, 150, 155, 75)
    assert cfg.node_id == 2


def test_real_ranges_parse_and_reject() -> None:
    assert f16._real_ranges("150-155, 150-300") == [(150, 155), (150, 300)]
    for bad in ("150", "155-150", "a-b", "2-3", ""):
        with pytest.raises(ValueError):
            f16._real_ranges(bad)


def test_real_summary_and_resolution() -> None:
    trials = [f16.RealTrial(300.0, 4.0, 2, 1, 3, 120.0), f16.RealTrial(200.0, 6.0, 1, 3, 2),
              f16.RealTrial(250.0, 5.0, 1, 2, 4, 110.0)]
    s = f16.real_summary(trials)
    assert (s["trials"], s["min"], s["median"], s["max"]) == (3, 200.0, 250.0, 300.0)
    assert s["mean_terms"] == pytest.approx(4 / 3, abs=1e-3)
    assert (s["window_mean_ms"], s["window_max_ms"]) == (5.0, 6.0)


def _fake_real() -> dict[str, Any]:
    ranges = []
    for lo, hi in f16.REAL_RANGES:
        ms = [160.0 + lo / 10, 240.0, 900.0]
        trials = [f16.RealTrial(v, 4.0, 1, 1, 2, v - 30) for v in ms]
        ranges.append({"label": f"{lo}-{hi}", "lo_ms": lo, "hi_ms": hi, "wall_s": 9.0,
                       "summary": f16.real_summary(trials), "downtime_ms": ms,
                       "window_ms": [4.0] * 3, "terms": [1] * 3,
                       "campaign_ms": [v - 30 for v in ms]})
    return {"nodes": 5, "trials": 3, "seed": 1, "delay_ms": 5.0, "jitter_ms": 5.0, "poll_ms": 2.0,
            "tick_ms": 1, "ranges": ranges,
            "run": {"wall_s": 27.0, "argv": ["--real-trials", "3"], "cpus": 2,
                    "loadavg_1m": [1.0, 2.0]}}


def test_report_puts_real_beside_sim_and_paper(tmp_path: Path) -> None:
    labels = "150-155,150-200,150-300," + ",".join(
        f"{lo}-{hi} pre-vote+cq equal logs" for lo, hi in f16.REAL_RANGES)
    assert f16.main(["--trials", "2", "--jobs", "1", "--lines", labels,
                     "--out", str(tmp_path)]) == 0
    study = json.loads((tmp_path / "figure16.json").read_text())
    assert "real" not in study
    assert "--real-trials N" in (tmp_path / "figure16.md").read_text()
    study["real"] = _fake_real()
    study["serial"] = f16.run_serial_ranges(list(f16.REAL_RANGES), 3, 1, 1, CAP_MS, BASE)
    (tmp_path / "figure16.json").write_text(json.dumps(study))
    assert f16.main(["--render", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "figure16.md").read_text()
    assert "### Real vs simulator: the systematic differences and their causes" in md
    assert "| 150-300 | sim twin serial +2 ms | " in md
    assert (tmp_path / "figure16-real.png").stat().st_size > 0
    assert "![figure16-real.png](figure16-real.png)" in md
    assert "| 150-155 | paper | no pre-vote, different log lengths | 1000 | - | 287.0 |" in md
    assert ("| 150-200 | paper | no pre-vote, different log lengths | 1000 | - | - | - | - "
            "| 513.0 |") in md
    for label in ("150-155", "150-200", "150-300"):
        for source in ("sim", "sim twin", "**real**"):
            assert f"| {label} | {source} | " in md, (label, source)
    assert "| 150-300 | **real** | 3 | " in md, "the phase table has the real rows"


def test_cli_rejects_bad_real_arguments(tmp_path: Path) -> None:
    assert f16.main(["--real-only", "--out", str(tmp_path)]) == 2
    assert f16.main(["--real-trials", "-1", "--out", str(tmp_path)]) == 2
    assert f16.main(["--real-trials", "1", "--real-ranges", "300-150",
                     "--out", str(tmp_path)]) == 2


@pytest.mark.integration
def test_a_real_range_kills_leaders_and_times_the_next(tmp_path: Path) -> None:
    """Two kills on a real 5-node cluster with short timeouts (40-60 ms, heartbeat 20 ms)."""
    import random

    lines: list[str] = []
    trials = f16.real_range(40, 60, 2, random.Random(1), 5.0, 5.0, 2.0, lines.append)
    assert len(trials) == 2 and len(lines) == 2
    for t in trials:
        # a survivor times out >= 40 ms after the last heartbeat (< 20 ms before the kill),
        # then needs a pre-vote and a vote round trip (>= 4 x 5 ms)
        assert 20 + 20 - 2 <= t.downtime_ms < 10_000, t
        assert 0 < t.window_ms < 200 and t.terms >= 1 and t.killed != t.leader
        assert 0 < t.campaign_ms < t.downtime_ms
