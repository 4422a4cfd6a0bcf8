"""SIGKILL a process appending in a tight loop, restart, check what survived.

Driven by scenarios/studies/storage_crash.py.

What each policy promises against a *process* crash (the page cache survives):
- every record below the last durable point the child reported survives (all engines, all policies);
- `always`: every accepted record survives (accept == durable);
- `group`: what is lost is only what was accepted after the last durable point (bounded by the
  group-commit window; the scenario measures it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scenarios.studies.storage_crash import run_rounds, summarize

pytestmark = pytest.mark.integration


def _check(engine: str, fsync: str, tmp_path: Path, kills: int, s3_endpoint: str = "") -> None:
    rounds = run_rounds(engine, fsync, tmp_path / "data", kills, record_bytes=100, seed=3,
                        s3_endpoint=s3_endpoint)
    summary = summarize(engine, fsync, rounds)
    assert summary["lost_durable_total"] == 0, summary
    # One append may be in flight at the kill: stored, but its `A` line never printed.
    assert all(r.durable <= r.recovered_end <= r.accepted + 1 for r in rounds), rounds
    if fsync == "always":
        assert summary["lost_accepted_max"] == 0, summary
    # The log stays appendable across kills: every round starts where the last recovery ended.
    ends = [r.recovered_end for r in rounds]
    assert ends == sorted(ends) and ends[-1] > 0, ends
    assert all(r.accepted > 0 for r in rounds)


@pytest.mark.smoke
def test_file_always_smoke(tmp_path: Path) -> None:
    _check("file", "always", tmp_path, kills=2)


@pytest.mark.parametrize("fsync", ["always", "group", "never"])
@pytest.mark.parametrize("engine", ["file", "rocksdb"])
def test_sigkill(engine: str, fsync: str, tmp_path: Path) -> None:
    _check(engine, fsync, tmp_path, kills=4)


@pytest.mark.parametrize("fsync", ["always", "group"])
def test_sigkill_s3(fsync: str, tmp_path: Path) -> None:
    """S3's promise: a record is durable once the PUT of its object completed (`D` lines)."""
    from real.node.seaweed import shared_server

    _check("s3", fsync, tmp_path, kills=3, s3_endpoint=shared_server().endpoint_url)
