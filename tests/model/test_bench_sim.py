from __future__ import annotations

import json
from pathlib import Path

import pytest

from scenarios.bench.sim import main


def _run(tmp_path: Path, seconds: str, *extra: str) -> dict:
    assert main(["--duration-s", seconds, "--out-dir", str(tmp_path), *extra]) == 0
    report = json.loads((tmp_path / "bench-sim.json").read_text())
    assert report["outcome"] == "ok"
    assert report["sim_s"] == float(seconds)
    assert "sim/wall ratio" in (tmp_path / "bench-sim.md").read_text()
    return report


@pytest.mark.smoke
@pytest.mark.bench
def test_bench_sim_smoke(tmp_path: Path) -> None:
    report = _run(tmp_path, "5")
    assert report["committed"] > 20
    assert report["ratio"] > 0  # measured; how fast is the profile run's business (make bench)


@pytest.mark.bench
def test_bench_sim_profile(tmp_path: Path) -> None:
    report = _run(tmp_path, "30", "--profile")
    assert "ncalls" in (tmp_path / "bench-sim.md").read_text()
    assert report["ratio"] > 1, "the simulator runs slower than real time"
