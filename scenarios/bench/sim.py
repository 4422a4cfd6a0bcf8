"""Simulator speed: simulated time / wall time for scenarios/bench/bench-sim.toml.

    python -m scenarios.bench.sim [--duration-s 3600] [--seed 1] [--profile]

5 nodes, 50 ms heartbeats, 10 proposals/s, one simulated hour, no faults. Prints the ratio and
writes reports/bench-sim.json and reports/bench-sim.md (with the top cProfile entries when
--profile is given; profiling slows the run, so the ratio is measured on a separate, unprofiled
run).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import json
import os
import platform
import pstats
import sys
import time
from pathlib import Path
from typing import Any

from scenarios.provenance import provenance, provenance_md

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "bench" / "bench-sim.toml"
TARGET_RATIO = 100.0


def _world(duration_s: float, seed: int) -> Any:
    from model.scenario import load
    from model.world import World

    scenario = load(SCENARIO)
    scenario = dataclasses.replace(scenario, duration_ms=duration_s * 1000.0)
    return World(scenario, seed)


def measure(duration_s: float, seed: int) -> dict[str, Any]:
    world = _world(duration_s, seed)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = world.run()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    sim_s = result.sim_us / 1e6
    net = result.stats["net"]
    return {
        "scenario": "scenarios/bench/bench-sim.toml", "seed": seed, "outcome": result.outcome,
        "sim_s": sim_s, "wall_s": round(wall, 3), "ratio": round(sim_s / wall, 1),
        "cpu_s": round(cpu, 3), "ratio_cpu": round(sim_s / cpu, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
        "target_ratio": TARGET_RATIO, "messages": net["sent"],
        "messages_per_wall_s": round(net["sent"] / wall),
        "committed": result.stats["committed"], "trace_hash": result.trace_hash,
        "python": platform.python_version(),
    }


def profile(duration_s: float, seed: int, top: int = 25) -> str:
    world = _world(duration_s, seed)
    prof = cProfile.Profile()
    prof.enable()
    world.run()
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    text = buf.getvalue()
    table = text[text.index("   ncalls"):] if "   ncalls" in text else text
    return _breakdown(stats) + "\n" + table


def _group(filename: str) -> str:
    for marker, name in (("/real/raft/", "core real/raft"), ("/real/meta/", "core real/meta"),
                         ("/model/", "shell model/"), ("/simpy/", "simpy")):
        if marker in filename:
            return name
    return ""


def _breakdown(stats: pstats.Stats) -> str:
    """Own time per layer; builtins are charged to their callers' layer."""
    totals: dict[str, float] = {}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, _fn), (_cc, _nc, tt, _ct, callers) in sorted(raw.items()):
        group = _group(filename)
        if group:
            totals[group] = totals.get(group, 0.0) + tt
            continue
        weights = {}
        for (cf, _cl, _cfn), caller in sorted(callers.items()):
            key = _group(cf) or "other"
            weights[key] = weights.get(key, 0.0) + caller[2]
        norm = sum(weights.values()) or 1.0
        for key in sorted(weights):
            totals[key] = totals.get(key, 0.0) + tt * weights[key] / norm
    whole = sum(totals.values()) or 1.0
    lines = ["own time by layer (cProfile):"]
    for key in sorted(totals, key=lambda k: -totals[k]):
        lines.append(f"  {key:16s} {totals[key]:7.2f} s  {100 * totals[key] / whole:5.1f}%")
    return "\n".join(lines) + "\n"


def write_reports(report: dict[str, Any], prof: str | None, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench-sim.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    verdict = "meets" if report["ratio"] >= TARGET_RATIO else "is below"
    md = [
        "# Simulator speed (bench-sim)", "",
        "`python -m scenarios.bench.sim`: 5 nodes, 50 ms heartbeats, 10 proposals/s, "
        f"{report['sim_s']:.0f} simulated seconds, no faults.", "",
        *provenance_md(report),
        "| metric | value |", "|---|---|",
        f"| simulated time | {report['sim_s']:.0f} s |",
        f"| wall time | {report['wall_s']:.1f} s |",
        f"| **sim/wall ratio** | **{report['ratio']:.0f}x** (target {TARGET_RATIO:.0f}x) |",
        f"| sim/CPU-time ratio | {report['ratio_cpu']:.0f}x ({report['cpu_s']:.1f} s CPU) |",
        f"| load average (1 min) during the run | {report['load_avg_1m']} on "
        f"{report['cpus']} CPUs |",
        f"| messages sent | {report['messages']} ({report['messages_per_wall_s']}/wall-s) |",
        f"| proposals committed | {report['committed']} |",
        f"| outcome | {report['outcome']} |", "",
        f"The ratio {verdict} the target.", "",
    ]
    if prof:
        md += ["## Top of the profile (cProfile, by own time)", "", "```", prof.rstrip(), "```", ""]
    (out_dir / "bench-sim.md").write_text("\n".join(md))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scenarios.bench.sim")
    p.add_argument("--duration-s", type=float, default=3600.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="also profile a 120 s run")
    p.add_argument("--out-dir", default=str(ROOT / "reports"))
    args = p.parse_args(argv)
    prov = provenance()  # the tree as the run starts
    report = measure(args.duration_s, args.seed)
    report["provenance"] = prov
    prof = profile(min(args.duration_s, 120.0), args.seed) if args.profile else None
    write_reports(report, prof, Path(args.out_dir))
    print(json.dumps(report, indent=2, sort_keys=True))
    if prof:
        print(prof)
    print(f"ratio: {report['ratio']:.0f}x (target {TARGET_RATIO:.0f}x)")
    return 0 if report["outcome"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
