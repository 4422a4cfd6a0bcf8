"""`sweep`: many seeds of one scenario in parallel processes.

Results come back in seed order (`imap` over a sorted seed list), so the results file and the
printed failures do not depend on scheduling. Progress goes to stderr as one rewritten line.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from model.checkers.raft import OUTCOME_CODES
from model.scenario import Scenario

_WORKER_SCENARIO: Scenario | None = None


@dataclass(frozen=True, slots=True)
class SeedResult:
    seed: int
    outcome: str
    trace_hash: str
    sim_ms: float
    wall_s: float
    detail: str

    def to_json(self) -> str:
        return json.dumps({"seed": self.seed, "outcome": self.outcome, "hash": self.trace_hash,
                           "sim_ms": self.sim_ms, "wall_s": round(self.wall_s, 4),
                           "detail": self.detail}, sort_keys=False)


def parse_seeds(spec: str, limit: int) -> list[int]:
    """'1-1000' (inclusive) or '1,5,9' or a mix: '1-10,42'."""
    seeds: dict[int, None] = {}
    for part in spec.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"bad seed range {part!r} (expected A-B or N)")
        a, b = int(lo), int(hi) if sep else int(lo)
        if a > b:
            raise ValueError(f"empty seed range {part!r}")
        if len(seeds) + b - a + 1 > limit:
            raise ValueError(f"more than {limit} seeds")
        for s in range(a, b + 1):
            seeds[s] = None
    return sorted(seeds)


def _init_worker(scenario: Scenario) -> None:
    global _WORKER_SCENARIO
    _WORKER_SCENARIO = scenario


def run_seed(seed: int, scenario: Scenario | None = None) -> SeedResult:
    from model.world import World

    scenario = scenario or _WORKER_SCENARIO
    assert scenario is not None, "worker not initialised"
    wall0 = time.perf_counter()
    result = World(scenario, seed).run()
    wall = time.perf_counter() - wall0
    return SeedResult(seed, result.outcome, result.trace_hash, result.sim_us / 1000, wall,
                      result.detail)


def _progress(done: int, total: int, failures: int, started: float, err: IO[str]) -> None:
    width = 30
    filled = width * done // max(total, 1)
    elapsed = time.perf_counter() - started
    err.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
              f"failures {failures} {elapsed:6.1f}s")
    err.flush()


def sweep(file: str, scenario: Scenario, seeds: list[int], jobs: int, bugs: list[str],
          out_path: str | None, stop_on_first: bool) -> int:
    from model.__main__ import reproduce_line

    assert jobs >= 1, "--jobs must be >= 1"
    started = time.perf_counter()
    results: list[SeedResult] = []
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    out = open(out_path, "w") if out_path else None  # noqa: SIM115 (closed below)
    try:
        for res in _results(scenario, seeds, jobs):
            results.append(res)
            if out is not None:
                out.write(res.to_json() + "\n")
            failures = sum(1 for r in results if r.outcome != "ok")
            _progress(len(results), len(seeds), failures, started, sys.stderr)
            if stop_on_first and res.outcome != "ok":
                break
    finally:
        if out is not None:
            out.close()
        sys.stderr.write("\n")
    wall = time.perf_counter() - started
    if out_path:
        print(f"results: {out_path}")
    return _summary(file, results, len(seeds), wall, bugs, reproduce_line)


def _results(scenario: Scenario, seeds: list[int], jobs: int) -> Iterator[SeedResult]:
    if jobs == 1:
        for seed in seeds:
            yield run_seed(seed, scenario)
        return
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with ctx.Pool(jobs, initializer=_init_worker, initargs=(scenario,)) as pool:
        yield from pool.imap(run_seed, seeds, chunksize=1)


def _summary(file: str, results: list[SeedResult], planned: int, wall: float, bugs: list[str],
             reproduce: Callable[[str, int, list[str]], str]) -> int:
    totals = {name: 0 for name in OUTCOME_CODES}
    for r in results:
        totals[r.outcome] += 1
    sim_s = sum(r.sim_ms for r in results) / 1000
    print(f"seeds: {len(results)} of {planned}  " +
          "  ".join(f"{k}: {v}" for k, v in totals.items()))
    print(f"wall: {wall:.1f} s  sim: {sim_s:.0f} s  ({sim_s / max(wall, 1e-9):.0f}x overall)")
    worst = 0
    for r in results:
        if r.outcome != "ok":
            worst = max(worst, OUTCOME_CODES[r.outcome])
            print(f"FAIL seed {r.seed}: {r.outcome}: {r.detail}")
            print(f"  reproduce: {reproduce(file, r.seed, bugs)}")
    return worst
