"""`python -m model run FILE --seed N` and `python -m model sweep FILE --seeds 1-1000 --jobs 2`.

One CLI for every simulated world: a scenario with MQTT clients runs in model/mqtt.py, one with
Kafka clients in model/kafka.py, any other is a Raft scenario.

`main(argv)` returns the exit code (never calls sys.exit): run -> 0 ok, 1 safety, 2 liveness,
3 crash; sweep -> 0 if every seed is ok, else the code of the worst outcome; 4 on a usage or
scenario error. `twinmq sim ...` (scenarios/cli.py) calls `main(argv)` with argv starting at
`run`/`sweep`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from model.checkers import OUTCOME_CODES
from model.scenario import Scenario, ScenarioError, load, with_bugs

USAGE_ERROR = 4
SEEDS_MAX = 1_000_000


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="twinmq sim", description="TwinMQ deterministic simulator")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one seed")
    run.add_argument("file")
    run.add_argument("--seed", type=int, required=True)
    run.add_argument("--trace", metavar="OUT.jsonl")
    run.add_argument("--bug", action="append", default=[], metavar="NAME")
    run.add_argument("--trace-messages", action="store_true", help="trace every message sent")
    run.add_argument("--tick-by-tick", action="store_true", help="disable tick skipping")
    sweep = sub.add_parser("sweep", help="run many seeds in parallel processes")
    sweep.add_argument("file")
    sweep.add_argument("--seeds", default="1-100", help="A-B (inclusive) or a comma list")
    sweep.add_argument("--jobs", type=int, default=2)
    sweep.add_argument("--bug", action="append", default=[], metavar="NAME")
    sweep.add_argument("--out", metavar="results.jsonl",
                       help="per-seed results (default: results/<scenario>-seeds-<spec>.jsonl)")
    sweep.add_argument("--stop-on-first", action="store_true")
    return p


BROKER_WORLDS = {"mqtt": ("publishers", "subscribers"),
                 "kafka": ("producers", "groups", "readers")}
"""A scenario with any of these top-level keys runs in that world (model/mqtt.py,
model/kafka.py: whole nodes hosted by SimHost); any other is a Raft scenario."""


def world_of(file: str) -> str:
    """"mqtt", "kafka" or "raft", from the scenario file's top-level keys."""
    import tomllib

    try:
        keys = tomllib.loads(Path(file).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return "raft"  # the Raft loader reports the problem with the file's name
    for world, markers in BROKER_WORLDS.items():
        if any(key in keys for key in markers):
            return world
    return "raft"


def _broker_world(world: str, args: argparse.Namespace) -> int:
    """`run`/`sweep` of an MQTT or Kafka scenario through that world's own CLI."""
    if world == "mqtt":
        from model.mqtt import main as world_main
    else:
        from model.kafka import main as world_main
    argv = [args.file]
    if args.command == "run":
        argv += ["--seed", str(args.seed)] + (["--trace", args.trace] if args.trace else [])
    else:
        argv += ["--seeds", args.seeds, "--jobs", str(args.jobs)]
    for bug in args.bug:
        if world == "mqtt":
            print("error: --bug: the MQTT world has no planted bugs", file=sys.stderr)
            return USAGE_ERROR
        argv += ["--bug", bug]
    return world_main(argv)


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(args_list)
    except SystemExit as exc:  # argparse exits on --help and on errors
        return 0 if exc.code == 0 else USAGE_ERROR
    world = world_of(args.file)
    if world != "raft":
        return _broker_world(world, args)
    try:
        scenario = with_bugs(load(args.file), args.bug)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    if args.command == "run":
        return _run(scenario, args)
    from model.sweep import parse_seeds, sweep

    try:
        seeds = parse_seeds(args.seeds, SEEDS_MAX)
    except ValueError as exc:
        print(f"error: --seeds: {exc}", file=sys.stderr)
        return USAGE_ERROR
    out = args.out or default_results_path(args.file, args.seeds, args.bug)
    return sweep(args.file, scenario, seeds, args.jobs, args.bug, out, args.stop_on_first)


def default_results_path(file: str, seeds: str, bugs: list[str]) -> str:
    """results/<scenario>-seeds-<spec>[-<bug>...].jsonl (results/ is git-ignored)."""
    name = "-".join([Path(file).stem, "seeds", seeds.replace(",", "_"), *bugs])
    return str(Path("results") / f"{name}.jsonl")


def reproduce_line(file: str, seed: int, bugs: list[str]) -> str:
    extra = "".join(f" --bug {b}" for b in bugs)
    return f"twinmq sim run {file} --seed {seed}{extra}"


def _run(scenario: Scenario, args: argparse.Namespace) -> int:
    import dataclasses

    from model.world import World

    if args.trace_messages:
        scenario = dataclasses.replace(scenario, trace_messages=True)
    if args.tick_by_tick:
        cluster = dataclasses.replace(scenario.cluster, tick_skipping=False)
        scenario = dataclasses.replace(scenario, cluster=cluster)
    out = Path(args.trace).open("w") if args.trace else None
    wall0 = time.perf_counter()
    try:
        result = World(scenario, args.seed, trace_out=out).run()
    finally:
        if out is not None:
            out.close()
    wall = time.perf_counter() - wall0
    sim_s = result.sim_us / 1e6
    print(f"scenario: {scenario.name} ({args.file}) seed {args.seed}"
          f"{' bugs ' + ','.join(scenario.cluster.bugs) if scenario.cluster.bugs else ''}")
    print(f"sim time: {sim_s:.3f} s, wall: {wall:.3f} s, ratio {sim_s / max(wall, 1e-9):.0f}x")
    print("stats: " + json.dumps(result.stats, sort_keys=True))
    if result.detail:
        print(f"detail: {result.detail}")
    print(f"trace-hash: {result.trace_hash}")
    print(f"outcome: {result.outcome}")
    print(f"reproduce: {reproduce_line(args.file, args.seed, args.bug)}")
    return OUTCOME_CODES[result.outcome]


if __name__ == "__main__":
    raise SystemExit(main())
