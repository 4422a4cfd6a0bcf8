"""The storage benchmark runs end to end and both worlds report in one format (a short smoke)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scenarios.bench.storage import main


@pytest.mark.bench
@pytest.mark.smoke
def test_bench_storage_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench-storage"
    assert main(["--seconds", "0.1", "--engines", "memory,file,rocksdb", "--sizes", "1024,65536",
                 "--tmp", str(tmp_path), "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    rows = result["rows"]
    cells = {(r["engine"], r["policy"], r["batch_bytes"]) for r in rows}
    assert len(cells) == (1 + 3 + 3) * 2
    for world in ("real", "sim"):
        mine = [r for r in rows if r["world"] == world]
        assert {(r["engine"], r["policy"], r["batch_bytes"]) for r in mine} == cells
        assert all(r["batches"] > 0 and r["mb_s"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"]
                   for r in mine), mine
    assert sorted(result["raw"]) == ["raw-1MiB", "raw-64KiB"]
    assert 0 < result["target"]["ratio"]
    assert result["calibration"]["sync_fixed_ms"] > 0
    table = out.with_suffix(".md").read_text()
    assert "## Real devices" in table and "## Simulator" in table


def test_sim_half_is_deterministic(tmp_path: Path) -> None:
    """Same seed and calibration => the simulated rows are identical."""
    from scenarios.bench.storage import calibrate, drive, open_sim

    raw = {"raw-64KiB": {"fdatasync_p50_ms": 0.5, "fdatasync_p99_ms": 0.9},
           "raw-1MiB": {"fdatasync_p50_ms": 2.5, "fdatasync_p99_ms": 3.0}}
    runs = []
    for _ in range(2):
        calib = calibrate(raw, {1024: 20})
        eng, env, _meter = open_sim("file", "group", 7, calib)
        runs.append(drive(eng, env, 1024, 0.05, False, 20))
    assert runs[0] == runs[1] and runs[0][0] > 0
