"""Figure 16 study: behavioural properties on a few trials (the full run is `make figure16`)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

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
